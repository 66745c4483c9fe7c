/**
 * Hostile HTTP requests to the SSE and long-poll transports and the admin API: bad bodies, deep
 * nesting, bad percent-encoding, bogus session ids, missing or wrong secrets and keys, wrong
 * methods, oversized or lying `Content-Length`, hostile `Origin` headers. Each comes with what
 * counts as an answer: a status line, or (for a request whose body never fully arrives) the
 * server closing the connection.
 */
import type { Socket } from 'node:net'
import { connect } from 'node:net'
import { chance, deepText, DEPTHS, int, mutant, pick, type Rng } from './mutate.js'
import { httpRequest, rawHttp } from './raw.js'

export interface HttpSession {
  readonly kind: 'sse' | 'poll'
  readonly session: string
  readonly secret: string
}

export interface HttpMutant {
  readonly request: Buffer
  readonly halfClose: boolean
  /** `status`: a status line is owed; `status-or-close`: the body never fully arrives, so a close will do. */
  readonly expect: 'status' | 'status-or-close'
  readonly kind: string
}

const ORIGINS = ['https://evil.example', 'null', 'http://127.0.0.1.evil.example', 'file://', 'http://[::1]:1', 'x'.repeat(4000), '*', 'http://localhost'] as const
const BAD_IDS = ['nope', '%zz', '%', '%E0%A4%A', '%00', '..%2F..%2Fadmin', '%C0%AF', 'a'.repeat(5000), '%F0%9F%98', '__proto__', 'constructor', '%2e%2e', '0', '-1', 'é'] as const
const ADMIN_ROUTES = [
  ['POST', '/channels/:id/broadcast'], ['GET', '/channels/:id/presence'], ['POST', '/channels/:id/kick'], ['GET', '/channels/:id/history'],
  ['POST', '/broadcast'], ['GET', '/connections'], ['DELETE', '/connections/:id'], ['DELETE', '/users/:id/connections'], ['GET', '/metrics'], ['GET', '/openapi.json'],
] as const
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'TRACE', 'FOO'] as const

function adminBody(r: Rng): string {
  const base = pick(r, [
    { event: 'note', data: { n: 1 } },
    { event: 'note', data: 1, to: 'all' },
    { event: 'note', to: { channels: ['public:fuzz'], users: ['alice'] }, where: { field: 'user.id', op: 'eq', value: 'alice' } },
    { userId: 'alice', reason: 'fuzz' },
    { event: 'note', exclude: { users: ['bob'] }, priority: 'high', idempotencyKey: 'k', sender: 's' },
  ])
  const text = JSON.stringify(base)
  const op = r()
  if (op < 0.2) return text
  if (op < 0.4) return text.replace(/"data":[^,}]*|"to":"all"|"userId":"alice"/, `"data":${deepText(r, pick(r, DEPTHS))}`)
  if (op < 0.5) return text.replace(/^\{/, pick(r, ['{"__proto__":{"polluted":1},', '{"constructor":{"prototype":{"x":1}},', '{"where":{"field":"user.claims.__proto__","op":"exists"},']))
  if (op < 0.6) return text.slice(0, int(r, 0, text.length - 1))
  if (op < 0.7) return pick(r, ['', 'null', '[]', '"x"', '1e999', '{"event":1}', '{"event":"' + 'e'.repeat(200) + '"}', '{"to":{"channels":' + JSON.stringify(Array(101).fill('public:a')) + '},"event":"x"}'])
  if (op < 0.8) return text.replace(/"note"/, JSON.stringify('n'.repeat(pick(r, [129, 10_000, 2_000_000]))))
  return mutant(r, 1).data.toString('latin1')
}

function sessionBody(r: Rng): Buffer {
  const op = r()
  if (op < 0.6) return mutant(r, int(r, 0, 1e6)).data
  if (op < 0.75) return Buffer.from(`[${Array.from({ length: pick(r, [1, 2, 100, 101, 1000]) }, () => JSON.stringify({ type: 'ping', id: int(r, 0, 1e6) })).join(',')}]`)
  if (op < 0.85) return Buffer.from(deepText(r, pick(r, DEPTHS)))
  if (op < 0.9) return Buffer.from([0xff, 0xfe, 0x7b, 0x7d])
  return Buffer.from(pick(r, ['', 'null', '[]', '[[]]', '{}', '[null,1,"x"]', '{"type":"subscribe","channel":"canary:main","__proto__":{"id":1}}']))
}

/** One hostile HTTP request; `sessions` are real open sessions (so secrets and bodies reach the code behind them). */
export function httpMutant(r: Rng, port: number, prefix: string, apiKey: string, sessions: readonly HttpSession[]): HttpMutant {
  const headers: Record<string, string> = {}
  if (chance(r, 0.25)) headers.Origin = pick(r, ORIGINS)
  if (chance(r, 0.1)) headers['X-Forwarded-For'] = pick(r, ['1.2.3.4', 'garbage', '1.1.1.1, 2.2.2.2', ''])
  let method: string
  let path: string
  let body: Buffer | undefined
  const target = pick(r, ['sse-open', 'sse-send', 'poll-open', 'poll-get', 'poll-send', 'poll-delete', 'admin', 'admin', 'admin', 'other'])
  const real = sessions.filter((s) => s.kind === (target.startsWith('sse') ? 'sse' : 'poll'))
  const sessionId = () => (real.length > 0 && chance(r, 0.6) ? pick(r, real) : undefined)
  const secret = (s: HttpSession | undefined) => {
    const c = r()
    if (c < 0.5 && s) headers['x-tidings-secret'] = s.secret
    else if (c < 0.8) headers['x-tidings-secret'] = pick(r, ['wrong', '', 'x'.repeat(5000), s ? s.secret.slice(0, -1) : 'a'])
  }
  const token = () => (chance(r, 0.5) ? '' : `?token=${pick(r, ['tok-dave', 'wrong', '%zz', 'tok-alice', '', 'a'.repeat(3000)])}`)
  switch (target) {
    case 'sse-open':
      method = chance(r, 0.85) ? 'GET' : pick(r, METHODS)
      path = `${prefix}/sse${token()}`
      if (chance(r, 0.3)) headers['Last-Event-ID'] = pick(r, ['bogus:1', `${sessions[0]?.session ?? 'x'}:99999`, ':', 'a'.repeat(3000), `${sessions[0]?.session ?? 'x'}:-1`])
      break
    case 'poll-open':
      method = chance(r, 0.85) ? 'POST' : pick(r, METHODS)
      path = `${prefix}/poll${token()}`
      break
    case 'sse-send':
    case 'poll-send': {
      const s = sessionId()
      method = chance(r, 0.85) ? 'POST' : pick(r, METHODS)
      path = `${prefix}/${target.startsWith('sse') ? 'sse' : 'poll'}/${s?.session ?? pick(r, BAD_IDS)}`
      secret(s)
      headers['Content-Type'] = pick(r, ['application/json', 'application/json', 'text/plain', 'application/json; charset=latin1', 'multipart/form-data'])
      body = sessionBody(r)
      break
    }
    case 'poll-get':
    case 'poll-delete': {
      const s = sessionId()
      method = target === 'poll-get' ? 'GET' : 'DELETE'
      path = `${prefix}/poll/${s?.session ?? pick(r, BAD_IDS)}${target === 'poll-get' ? `?cursor=${pick(r, ['0', '1', '-1', '1e999', 'abc', '%zz', '99999999999999999999', ''])}` : ''}`
      // Deleting a real session with its secret would end the pool early; only bogus ones get the right secret.
      if (target === 'poll-delete' && s) headers['x-tidings-secret'] = 'wrong'
      else secret(s)
      break
    }
    case 'admin': {
      const [m, p] = pick(r, ADMIN_ROUTES)
      method = chance(r, 0.85) ? m : pick(r, METHODS)
      const id = chance(r, 0.5) ? pick(r, ['public:fuzz', 'canary:main', 'alice', 'public%3Afuzz']) : pick(r, BAD_IDS)
      path = `${prefix}${p.replace(':id', id)}`
      if (p.endsWith('history')) path += `?after=${pick(r, ['0', '-1', 'x', '1e999', '%zz'])}&limit=${pick(r, ['1', '1000', '1001', '0', 'NaN'])}`
      if (p === '/connections') path += pick(r, ['', '?userId=alice', '?channel=%zz', '?userId=__proto__'])
      const k = r()
      if (k < 0.6) headers['x-api-key'] = apiKey
      else if (k < 0.7) headers.Authorization = `Bearer ${apiKey}`
      else if (k < 0.85) headers['x-api-key'] = pick(r, ['wrong', '', `${apiKey} `, apiKey.toUpperCase()])
      if (method === 'POST' || chance(r, 0.1)) {
        headers['Content-Type'] = 'application/json'
        body = Buffer.from(adminBody(r), 'utf8')
      }
      break
    }
    default:
      method = pick(r, METHODS)
      path = pick(r, [prefix, `${prefix}/`, `${prefix}/%zz`, `${prefix}/../etc`, `${prefix}//sse`, `${prefix}/sse/`, `${prefix}/poll/`, `${prefix}?%`, `${prefix}/channels//broadcast`])
  }
  // Content-Length: truthful, short, long (then half-closed), huge, or malformed.
  const lie = body === undefined ? 0 : r()
  if (lie < 0.8) return { request: httpRequest(method, path, headers, body), halfClose: false, expect: 'status', kind: `${target}/${method}` }
  const b = body!
  if (lie < 0.85) return { request: httpRequest(method, path, headers, b, Math.max(0, b.length - int(r, 1, 10))), halfClose: false, expect: 'status', kind: `${target}/cl-short` }
  if (lie < 0.92) return { request: httpRequest(method, path, headers, b, b.length + int(r, 1, 1000)), halfClose: true, expect: 'status-or-close', kind: `${target}/cl-long` }
  if (lie < 0.97) return { request: httpRequest(method, path, headers, b.subarray(0, 100), pick(r, [2 ** 40, 2 ** 53, 50_000_000])), halfClose: false, expect: 'status', kind: `${target}/cl-huge` }
  return { request: httpRequest(method, path, headers, b, pick(r, ['abc', '-1', '1e3', '10, 20', ' '])), halfClose: false, expect: 'status', kind: `${target}/cl-bad` }
}

/** Open real SSE and long-poll sessions (token `token`) to aim secrets and bodies at; SSE streams are kept open and drained. */
export async function openSessions(port: number, prefix: string, token: string, n: number): Promise<{ sessions: HttpSession[]; sockets: Socket[] }> {
  const sessions: HttpSession[] = []
  const sockets: Socket[] = []
  for (let i = 0; i < n; i++) {
    const poll = await rawHttp(port, httpRequest('POST', `${prefix}/poll?token=${token}`, {}, Buffer.alloc(0)), { untilEnd: true })
    const body = poll.text.slice(poll.text.indexOf('\r\n\r\n') + 4)
    try {
      const j = JSON.parse(body) as { session: string; secret: string }
      sessions.push({ kind: 'poll', session: j.session, secret: j.secret })
    } catch {
      console.error(`could not open a long-poll session: ${poll.text.slice(0, 200)}`)
    }
    const sse = await new Promise<HttpSession | undefined>((resolve) => {
      const socket = connect(port, '127.0.0.1')
      sockets.push(socket)
      let text = ''
      const timer = setTimeout(() => resolve(undefined), 5000)
      socket.on('error', () => {})
      socket.on('data', (c: Buffer) => {
        if (text.length > 100_000) return
        text += c.toString('utf8')
        const m = /event: session\r?\ndata: (\{[^\n]*\})/.exec(text)
        if (m) {
          clearTimeout(timer)
          const j = JSON.parse(m[1]!) as { session: string; secret: string }
          text = 'x'.repeat(100_001)
          resolve({ kind: 'sse', session: j.session, secret: j.secret })
        }
      })
      socket.write(httpRequest('GET', `${prefix}/sse?token=${token}`, { Accept: 'text/event-stream' }))
    })
    if (sse) sessions.push(sse)
    else console.error('could not open an SSE session')
  }
  return { sessions, sockets }
}
