import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import { type Authenticator, type Hub, type Identity, type Logger, createHub } from '@tidings/core'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'
import { JSON_SUBPROTOCOL, createWsTransport } from '../src/index.js'

// The log test of issue #13: a real pino logger handed to createHub as it is, real sockets, every
// listed event driven once and logged once, and no token, key, JWT, message or presence data in
// any line. pino comes from the workspace's fastify (no dependency of our own).

const pino = createRequire(createRequire(import.meta.url).resolve('fastify'))('pino') as (options: { level: string }, stream: { write(line: string): void }) => Logger

type Frame = Record<string, unknown> & { type: string }
type Line = Record<string, unknown> & { level: number; msg: string }

// Secrets and data that must never reach a log line. Every one holds "S3CRET" or is JWT-shaped.
const ADA_JWT = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEiLCJub3RlIjoiUzNDUkVUIn0.QUJDREVGR0hJSktMTU5PUFMzQ1JFVA'
const BOB_TOKEN = 'tok-bob-S3CRET-0001'
const CY_TOKEN = 'tok-cy-S3CRET-0002'
const API_KEY = 'ak_live_S3CRET_KEY_42'
const BAD_JWT = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJldmUifQ.QkFEUzNDUkVU'
const BAD_REFRESH = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.UkVGUkVTSFMzQ1JFVA'
const BAD_KEY = 'ak_live_WRONG_S3CRET'
const DB_URL = 'postgres://app:DBPASS-S3CRET@db.internal/app'
const SECRETS = [ADA_JWT, BOB_TOKEN, CY_TOKEN, API_KEY, BAD_JWT, BAD_REFRESH, BAD_KEY, 'DBPASS', 'S3CRET']

const TOKENS: Record<string, Identity> = { [ADA_JWT]: { userId: 'ada' }, [BOB_TOKEN]: { userId: 'bob' }, [CY_TOKEN]: { userId: 'cy' } }
const authenticate: Authenticator = (req) => (req.token !== undefined ? TOKENS[req.token] ?? null : req.apiKey === API_KEY ? { userId: 'svc' } : null)

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

interface Client {
  readonly ws: WebSocket
  readonly frames: Frame[]
  waitFor(match: (f: Frame) => boolean): Promise<Frame>
  request(frame: Record<string, unknown>): Promise<Frame>
  readonly closed: Promise<number>
}

function client(url: string, headers: Record<string, string> = {}): Client {
  const ws = new WebSocket(url, JSON_SUBPROTOCOL, { headers, perMessageDeflate: false })
  const frames: Frame[] = []
  const waiters = new Set<{ match: (f: Frame) => boolean; resolve: (f: Frame) => void }>()
  ws.on('message', (data) => {
    const f = JSON.parse(String(data)) as Frame
    frames.push(f)
    for (const w of [...waiters]) if (w.match(f)) (waiters.delete(w), w.resolve(f))
  })
  ws.on('error', () => {})
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)))
  let id = 0
  const waitFor = (match: (f: Frame) => boolean) => {
    const found = frames.find(match)
    return found ? Promise.resolve(found) : new Promise<Frame>((resolve) => waiters.add({ match, resolve }))
  }
  return {
    ws,
    frames,
    closed,
    waitFor,
    request(frame) {
      const rid = `r${++id}`
      const answer = waitFor((f) => f.id === rid)
      const send = () => ws.send(JSON.stringify({ ...frame, id: rid }))
      if (ws.readyState === WebSocket.OPEN) send()
      else ws.once('open', send)
      return answer
    },
  }
}

async function until(check: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

async function serve(level: string): Promise<{ hub: Hub; url: string; lines: Line[]; raw: string[] }> {
  const raw: string[] = []
  const lines: Line[] = []
  const logger = pino({ level }, { write: (s: string) => (raw.push(s), lines.push(JSON.parse(s) as Line)) })
  const hub = createHub({
    logger,
    authenticate,
    allowAnonymous: false,
    channels: {
      'chat:*': { subscribe: true, publish: true },
      'readonly:*': { subscribe: true, publish: false },
      'acked:*': { subscribe: true, publish: true, delivery: 'at-least-once' },
    },
    delivery: { ackTimeoutMs: 30, maxAttempts: 1 },
    limits: { highWaterMark: 16 * 1024, maxQueuedBytes: 128 * 1024 },
    content: (c) => {
      const text = (c.data as { text?: string } | null)?.text ?? ''
      if (text.startsWith('spam')) return { refuse: 'RT_007', reason: 'looks like spam' }
      if (text.startsWith('ad')) return { flag: 'looks like an ad' }
      return undefined
    },
  })
  const transport = createWsTransport(hub)
  const server = createServer()
  const detach = transport.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(async () => {
    await transport.close({ timeoutMs: 200 })
    detach()
    await hub.close()
    server.closeAllConnections()
    await new Promise<void>((r) => server.close(() => r()))
  })
  return { hub, url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/realtime`, lines, raw }
}

const connected = (c: Client) => c.waitFor((f) => f.type === 'connected')

describe('logging over real sockets (pino)', () => {
  it('every listed event is logged exactly once, at its level, and no line holds a token, key, JWT, message or presence data', async () => {
    const { hub, url, lines, raw } = await serve('debug')
    const count = (msg: string, match: Record<string, unknown> = {}) => lines.filter((l) => l.msg === msg && Object.entries(match).every(([k, v]) => l[k] === v)).length

    // connections: a token in the query, a bearer header, an API key header
    const ada = client(`${url}?token=${ADA_JWT}`)
    const bob = client(url, { authorization: `Bearer ${BOB_TOKEN}` })
    const svc = client(url, { 'x-api-key': API_KEY })
    const [adaId, bobId, svcId] = (await Promise.all([connected(ada), connected(bob), connected(svc)])).map((f) => f.connectionId as string)

    // authentication failures at the door: a bad JWT, a bad API key
    expect(await client(`${url}?token=${BAD_JWT}`).closed).toBe(4001)
    expect(await client(url, { 'x-api-key': BAD_KEY }).closed).toBe(4001)

    // channels and presence
    expect((await ada.request({ type: 'subscribe', channel: 'chat:1' })).type).toBe('subscribed')
    expect((await ada.request({ type: 'subscribe', channel: 'presence:lobby', presence: { mood: 'PRESENCE-S3CRET' } })).type).toBe('subscribed')

    // authorization failures: a subscribe and a publish
    expect(await bob.request({ type: 'subscribe', channel: 'private:user-ada' })).toMatchObject({ type: 'error', code: 'RT_003' })
    expect((await bob.request({ type: 'subscribe', channel: 'readonly:1' })).type).toBe('subscribed')
    expect(await bob.request({ type: 'message', channel: 'readonly:1', event: 'say', data: { text: 'hello S3CRET' } })).toMatchObject({ type: 'error', code: 'RT_003' })

    // an authentication failure on an open connection (a refresh with a token that is not valid)
    expect(await ada.request({ type: 'auth', token: BAD_REFRESH })).toMatchObject({ type: 'error', code: 'RT_002' })

    // message data, a content refusal and a flag
    expect((await bob.request({ type: 'message', channel: 'chat:1', event: 'say', data: { text: 'MESSAGE-DATA-S3CRET' } })).type).toBe('published')
    await ada.waitFor((f) => f.type === 'message' && f.channel === 'chat:1')
    expect(await bob.request({ type: 'message', channel: 'chat:1', event: 'say', data: { text: 'spam SPAM-S3CRET' } })).toMatchObject({ type: 'error', code: 'RT_007' })
    expect((await bob.request({ type: 'message', channel: 'chat:1', event: 'say', data: { text: 'ad AD-S3CRET' } })).type).toBe('published')

    // a room: created, joined, left, deleted
    hub.rooms.create('private:room-r1', { members: ['ada'], metadata: { apiKey: API_KEY } })
    expect((await ada.request({ type: 'subscribe', channel: 'private:room-r1' })).type).toBe('subscribed')
    expect((await ada.request({ type: 'unsubscribe', channel: 'private:room-r1' })).type).toBe('unsubscribed')
    hub.rooms.delete('private:room-r1')

    // a kick (a server-decided unsubscribe)
    await hub.channel('chat:1').kick('ada', 'moderated')

    // a delivery failure: svc never acknowledges an at-least-once message
    expect((await svc.request({ type: 'subscribe', channel: 'acked:1' })).type).toBe('subscribed')
    await hub.publish('acked:1', 'job', { secret: 'ACKED-S3CRET' })
    await until(() => count('delivery failed') > 0, 'delivery failed')

    // an internal error (a route that throws, with a database URL in its message)
    const stop = hub.route(() => {
      throw new Error(`could not reach ${DB_URL}`)
    })
    await hub.publish('chat:2', 'noop', { text: 'ROUTED-S3CRET' })
    stop()

    // a slow consumer: cy stops reading while large messages keep coming
    const cy = client(`${url}?token=${CY_TOKEN}`)
    const cyId = (await connected(cy)).connectionId as string
    expect((await cy.request({ type: 'subscribe', channel: 'chat:big' })).type).toBe('subscribed')
    ;(cy.ws as unknown as { _socket: { pause(): void } })._socket.pause()
    const big = 'x'.repeat(60 * 1024)
    let cyCode: number | undefined
    void cy.closed.then((c) => (cyCode = c))
    for (let i = 0; i < 2000 && count('connection closed', { connectionId: cyId }) === 0; i++) {
      await hub.publish('chat:big', 'blob', { big })
      if (i % 10 === 9) await new Promise((r) => setImmediate(r))
    }
    ;(cy.ws as unknown as { _socket: { resume(): void } })._socket.resume()
    await cy.closed
    expect(cyCode).toBe(4009)

    // closes: ada and bob leave, svc is still open when the hub shuts down
    ada.ws.close(1000)
    bob.ws.close(1000)
    await Promise.all([ada.closed, bob.closed])
    await until(() => count('connection closed', { connectionId: bobId }) === 1 && count('connection closed', { connectionId: adaId }) === 1, 'closes')
    await cleanups.pop()!()
    await svc.closed

    const WARN = 40
    const INFO = 30
    const DEBUG = 20
    const expectOnce = (msg: string, match: Record<string, unknown>, level: number) => {
      const found = lines.filter((l) => l.msg === msg && Object.entries(match).every(([k, v]) => l[k] === v))
      expect(found, `${msg} ${JSON.stringify(match)}`).toHaveLength(1)
      expect(found[0]!.level, `${msg} level`).toBe(level)
      return found[0]!
    }

    // connection lifecycle (id, user, transport, close code, duration)
    for (const [id, userId] of [[adaId, 'ada'], [bobId, 'bob'], [svcId, 'svc'], [cyId, 'cy']] as const) {
      expect(expectOnce('connection opened', { connectionId: id }, INFO)).toMatchObject({ userId, transport: 'ws' })
      const closed = expectOnce('connection closed', { connectionId: id }, id === cyId ? WARN : INFO)
      expect(closed).toMatchObject({ userId, transport: 'ws', code: id === cyId ? 4009 : id === svcId ? 1001 : 1000 })
      expect(closed.durationMs).toEqual(expect.any(Number))
    }
    expect(count('connection opened')).toBe(4)
    expect(count('connection closed')).toBe(4)
    // authentication failures
    expect(count('connection refused')).toBe(2)
    expect(lines.filter((l) => l.msg === 'connection refused').every((l) => l.level === WARN && l.code === 'RT_002' && l.transport === 'ws')).toBe(true)
    expectOnce('authentication failed', { connectionId: adaId, code: 'RT_002', frameType: 'auth' }, WARN)
    // authorization failures
    expectOnce('permission denied', { connectionId: bobId, frameType: 'subscribe' }, WARN)
    expectOnce('permission denied', { connectionId: bobId, frameType: 'message' }, WARN)
    expect(count('permission denied')).toBe(2)
    // channels
    expectOnce('channel subscribed', { connectionId: adaId, channel: 'chat:1' }, DEBUG)
    expectOnce('channel subscribed', { connectionId: bobId, channel: 'readonly:1' }, DEBUG)
    expectOnce('channel unsubscribed', { connectionId: adaId, channel: 'private:room-r1', reason: 'unsubscribed' }, DEBUG)
    expectOnce('channel unsubscribed', { connectionId: adaId, channel: 'chat:1', reason: 'moderated' }, INFO)
    expectOnce('channel occupied', { channel: 'chat:1' }, DEBUG)
    // rooms
    expectOnce('room created', { room: 'private:room-r1' }, INFO)
    expectOnce('room member joined', { room: 'private:room-r1', userId: 'ada' }, DEBUG)
    expectOnce('room member left', { room: 'private:room-r1', userId: 'ada' }, DEBUG)
    expectOnce('room deleted', { room: 'private:room-r1' }, INFO)
    // presence
    expectOnce('presence join', { channel: 'presence:lobby', userId: 'ada' }, DEBUG)
    expectOnce('presence leave', { channel: 'presence:lobby', userId: 'ada' }, DEBUG)
    // delivery failures
    expectOnce('delivery failed', { connectionId: svcId, channel: 'acked:1' }, WARN)
    // content
    expectOnce('content refused', { connectionId: bobId, channel: 'chat:1', code: 'RT_007', reason: 'looks like spam' }, INFO)
    expectOnce('content flagged', { connectionId: bobId, channel: 'chat:1', reason: 'looks like an ad' }, WARN)
    // internal errors
    const internal = expectOnce('route failed', {}, 50)
    expect(String(internal.error)).toContain('postgres://app:[redacted]@db.internal/app')
    // every line carries the node id (pino child bindings)
    expect(lines.every((l) => l.nodeId === hub.nodeId)).toBe(true)

    // no secret in any line
    const text = raw.join('')
    for (const secret of SECRETS) expect(text, secret).not.toContain(secret)
    expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\./)
    for (const data of ['MESSAGE-DATA', 'PRESENCE-', 'SPAM-', 'AD-S', 'ACKED-', 'ROUTED-', big.slice(0, 100)]) expect(text).not.toContain(data)
  }, 30_000)

  it('a warn-level pino logger: no listener on the subscribe, publish, presence or connection paths, and only warn lines written', async () => {
    const { hub, url, lines } = await serve('warn')
    for (const e of ['subscribe', 'unsubscribe', 'publish', 'connection', 'presence:join', 'presence:leave', 'room:member-joined', 'channel:occupied', 'content:refused'] as const) {
      expect(hub.listenerCount(e), e).toBe(0)
    }
    const ada = client(`${url}?token=${ADA_JWT}`)
    await connected(ada)
    expect((await ada.request({ type: 'subscribe', channel: 'chat:1' })).type).toBe('subscribed')
    expect(await ada.request({ type: 'subscribe', channel: 'private:user-bob' })).toMatchObject({ type: 'error', code: 'RT_003' })
    ada.ws.close(1000)
    await ada.closed
    await new Promise((r) => setTimeout(r, 20))
    expect(lines.map((l) => [l.level, l.msg])).toEqual([[40, 'permission denied']])
  })
})
