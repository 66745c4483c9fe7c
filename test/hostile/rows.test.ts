/**
 * Issue #9, one auditable place: ONE test per row of the issue's two fault tables (and per bullet
 * of the "new user" list that can be tried from Node), each named after the fault as the issue
 * words it, each over real sockets against a real server (createRealtime on node:http, loopback,
 * the real `ws` client, fetch for SSE and long-poll, raw `net` sockets for slowloris), asserting
 * the fixed behaviour as the issue's "Deliver" section states it. Then a few attacks the issue
 * did not list.
 */
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { connect as netConnect } from 'node:net'
import { createHub, createMemoryStore, type Identity, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import { Realtime } from '@tidings/client'
import WebSocket from 'ws'
import { describe, expect, it } from 'vitest'
import { Client, type Frame, nested, onCleanup, serve, sleep, until } from './support.js'

// ------------------------------------------------------------------ helpers of this file

/** A tiny SSE reader over fetch. */
class Sse {
  readonly events: Array<{ id: string | undefined; event: string; data: string }> = []
  ended = false
  constructor(
    readonly res: Response,
    private readonly ctrl: AbortController,
  ) {
    void this.pump()
  }
  static async open(url: string, headers: Record<string, string> = {}): Promise<Sse> {
    const ctrl = new AbortController()
    const res = await fetch(url, { headers, signal: ctrl.signal })
    const s = new Sse(res, ctrl)
    onCleanup(() => s.abort())
    return s
  }
  private async pump(): Promise<void> {
    if (!this.res.body) return void (this.ended = true)
    const reader = this.res.body.pipeThrough(new TextDecoderStream()).getReader()
    let buf = ''
    let data: string[] = []
    let event = ''
    let id: string | undefined
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        buf += value
        let m: RegExpExecArray | null
        while ((m = /\r\n|\r|\n/.exec(buf)) !== null) {
          const l = buf.slice(0, m.index)
          buf = buf.slice(m.index + m[0].length)
          if (l === '') {
            if (data.length > 0) this.events.push({ id, event: event || 'message', data: data.join('\n') })
            data = []
            event = ''
            id = undefined
            continue
          }
          if (l.startsWith(':')) continue
          const c = l.indexOf(':')
          const field = c < 0 ? l : l.slice(0, c)
          const v = c < 0 ? '' : l.slice(c + 1).replace(/^ /, '')
          if (field === 'data') data.push(v)
          else if (field === 'event') event = v
          else if (field === 'id') id = v
        }
      }
    } catch {
      // aborted
    }
    this.ended = true
  }
  frames(): Frame[] {
    return this.events.filter((e) => e.event !== 'session' && e.event !== 'close').map((e) => JSON.parse(e.data) as Frame)
  }
  async frame(test: (f: Frame) => boolean, ms = 2_000): Promise<Frame> {
    let found: Frame | undefined
    await until(() => (found = this.frames().find(test)) !== undefined || this.ended, ms, 'sse frame')
    if (!found) throw new Error(`stream ended; frames ${JSON.stringify(this.frames())}`)
    return found
  }
  async session(): Promise<{ session: string; secret: string }> {
    await until(() => this.events.some((e) => e.event === 'session') || this.ended, 2_000, 'session event')
    const e = this.events.find((x) => x.event === 'session')
    if (!e) throw new Error(`no session event (status ${this.res.status})`)
    return JSON.parse(e.data) as { session: string; secret: string }
  }
  abort(): void {
    this.ctrl.abort()
  }
}

async function sseSession(base: string, token?: string) {
  const stream = await Sse.open(`${base}/realtime/sse${token ? `?token=${token}` : ''}`)
  expect(stream.res.status).toBe(200)
  const { session, secret } = await stream.session()
  await stream.frame((f) => f.type === 'connected')
  const post = (body: string | object, secretHeader = secret) =>
    fetch(`${base}/realtime/sse/${session}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tidings-secret': secretHeader },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    })
  return { stream, session, secret, post }
}

async function pollSession(base: string, token?: string) {
  const res = await fetch(`${base}/realtime/poll${token ? `?token=${token}` : ''}`, { method: 'POST' })
  expect(res.status).toBe(200)
  const body = (await res.json()) as { session: string; secret: string; frames: Frame[]; cursor: number }
  let cursor = body.cursor
  const received: Frame[] = [...body.frames]
  const url = `${base}/realtime/poll/${body.session}`
  return {
    ...body,
    received,
    post: (frame: string | object) =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tidings-secret': body.secret }, body: typeof frame === 'string' ? frame : JSON.stringify(frame) }),
    async poll(): Promise<Frame[]> {
      const r = await fetch(`${url}?cursor=${cursor}`, { headers: { 'x-tidings-secret': body.secret } })
      expect(r.status).toBe(200)
      const b = (await r.json()) as { frames: Frame[]; cursor: number }
      cursor = b.cursor
      received.push(...b.frames)
      return b.frames
    },
  }
}

/** A WebSocket handshake outcome: 'open' or the HTTP status of the refusal (0: cut). */
function wsAttempt(url: string, opts: WebSocket.ClientOptions = {}): { ws: WebSocket; result: Promise<number | 'open'> } {
  const ws = new WebSocket(url, 'tidings.v1.json', { perMessageDeflate: false, ...opts })
  onCleanup(() => ws.terminate())
  ws.on('error', () => {})
  const result = new Promise<number | 'open'>((resolve) => {
    ws.once('open', () => resolve('open'))
    ws.once('unexpected-response', (req, res) => {
      resolve(res.statusCode ?? 0)
      res.resume()
      req.destroy()
    })
    ws.once('close', () => resolve(0))
  })
  return { ws, result }
}

function underlying(c: Client): Socket {
  return (c.socket as unknown as { _socket: Socket })._socket
}

async function errorBody(res: Response): Promise<{ type: string; code: string; message: string }> {
  return (await res.json()) as { type: string; code: string; message: string }
}

// ==================================================================================== table 1

describe('issue #9 table: a hostile client', () => {
  it('deeply nested JSON in an SSE or long-poll POST (an array ~5,000 deep, 10 KB, anonymous session) is 400 RT_007 and the process lives', async () => {
    const s = await serve()
    const body = nested(5_000)
    expect(body.length).toBe(10_000)
    const sse = await sseSession(s.base)
    const r1 = await sse.post(body)
    expect(r1.status).toBe(400)
    expect(await errorBody(r1)).toMatchObject({ type: 'error', code: 'RT_007', message: expect.stringMatching(/deep|nest/i) })
    const poll = await pollSession(s.base)
    const r2 = await poll.post(body)
    expect(r2.status).toBe(400)
    expect(await errorBody(r2)).toMatchObject({ type: 'error', code: 'RT_007' })
    // both sessions still work
    expect((await sse.post({ type: 'ping', id: 'p' })).status).toBe(204)
    await sse.stream.frame((f) => f.type === 'pong' && f.id === 'p')
    expect((await poll.post({ type: 'ping', id: 'q' })).status).toBe(204)
    for (let i = 0; i < 5 && !poll.received.some((f) => f.type === 'pong'); i++) await poll.poll()
    expect(poll.received.some((f) => f.type === 'pong' && f.id === 'q')).toBe(true)
  })

  it('deeply nested filter in subscribe (not 5,000 deep): answered RT_007 over WS (by its id) and 400 RT_007 over SSE, not 500', async () => {
    const s = await serve()
    let filter = '{"field":"data.x","op":"eq","value":1}'
    for (let i = 0; i < 5_000; i++) filter = `{"not":${filter}}`
    const frame = `{"type":"subscribe","id":"deep","channel":"public:a","filter":${filter}}`
    const c = await Client.open(s.ws, 'tok-ada')
    c.send(frame)
    expect(await c.next((f) => f.id === 'deep')).toMatchObject({ type: 'error', code: 'RT_007' })
    expect(await c.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
    const sse = await sseSession(s.base, 'tok-bob')
    const r = await sse.post(frame)
    expect(r.status).toBe(400)
    expect(await errorBody(r)).toMatchObject({ code: 'RT_007' })
    // a filter just within the depth budget still validates (the limit is not "no filters")
    expect(await c.request({ type: 'subscribe', channel: 'public:b', filter: { not: { field: 'data.x', op: 'eq', value: 1 } } })).toMatchObject({ type: 'subscribed' })
  })

  it('deeply nested presence:update data is refused, never stored: subscribe / presence get / admin presence keep working and the user is not locked out after 10 tries', async () => {
    const s = await serve()
    const deep = JSON.parse(`{"x":${nested(40)}}`) as unknown
    for (let i = 0; i < 11; i++) {
      const c = await Client.open(s.ws, 'tok-ada')
      expect(c.of('connected')).toHaveLength(1)
      await c.request({ type: 'subscribe', channel: 'presence:room' })
      expect(await c.request({ type: 'presence:update', channel: 'presence:room', data: deep })).toMatchObject({ type: 'error', code: 'RT_007' })
      c.socket.close()
      await c.whenClosed()
      await until(() => s.hub.connections.local({ userId: 'ada' }).length === 0, 2_000, 'ada removed')
    }
    const bob = await Client.open(s.ws, 'tok-bob')
    expect(await bob.request({ type: 'subscribe', channel: 'presence:room' })).toMatchObject({ type: 'subscribed' })
    expect(await bob.request({ type: 'presence:get', channel: 'presence:room' })).toMatchObject({ type: 'presence' })
    const res = await fetch(`${s.base}/realtime/channels/presence:room/presence`, { headers: { 'x-api-key': 'admin-key' } })
    expect(res.status).toBe(200)
    const ada = await Client.open(s.ws, 'tok-ada')
    expect(ada.of('connected')).toHaveLength(1)
  })

  it('SSE resume with only Last-Event-ID: <session>:<n> and no credentials does not re-attach the victim, re-send its secret, read its private messages or post as it', async () => {
    const s = await serve()
    const victim = await sseSession(s.base, 'tok-ada')
    expect((await victim.post({ type: 'subscribe', channel: 'private:user-ada', id: 's' })).status).toBe(204)
    await victim.stream.frame((f) => f.id === 's')
    const attacker = await fetch(`${s.base}/realtime/sse`, { headers: { 'last-event-id': `${victim.session}:1` } })
    expect(attacker.status).toBe(403)
    const text = await attacker.text()
    expect(text).not.toContain(victim.secret)
    expect(JSON.parse(text)).toMatchObject({ type: 'error', code: 'RT_003' })
    // the query form an EventSource would use, too
    const viaQuery = await fetch(`${s.base}/realtime/sse?lastEventId=${victim.session}:1`)
    expect(viaQuery.status).toBe(403)
    expect(await viaQuery.text()).not.toContain(victim.secret)
    // posting as the victim with the id alone
    const forged = await fetch(`${s.base}/realtime/sse/${victim.session}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"type":"message","channel":"public:x","event":"e"}' })
    expect(forged.status).toBe(403)
    // the victim keeps its stream and its private messages
    await s.hub.publish('private:user-ada', 'plans', 'for ada')
    await victim.stream.frame((f) => f.type === 'message' && f.event === 'plans')
    expect(victim.stream.ended).toBe(false)
    // same for long-poll: a poll with the id alone learns nothing
    const lp = await pollSession(s.base, 'tok-bob')
    const stolen = await fetch(`${s.base}/realtime/poll/${lp.session}?cursor=0`)
    expect(stolen.status).toBe(403)
    expect(await stolen.text()).not.toContain(lp.secret)
  })

  it('110,000 history frames for distinct public:junk-N names (here 5,000): reads create no log, public:important keeps its history, and a lost offline queue is told recovered: false', async () => {
    const store = createMemoryStore({ maxChannels: 20 })
    const s = await serve({ store, limits: { messagesPerSecond: 100_000 } })
    await s.hub.publish('public:important', 'e', { keep: true })
    const clients = await Promise.all(Array.from({ length: 10 }, () => Client.open(s.ws)))
    await Promise.all(
      clients.map(async (c, k) => {
        for (let i = 0; i < 500; i++) c.send({ type: 'history', channel: `public:junk-${k}-${i}`, limit: 10 })
        // subscribing positions a channel: that must not create a log either
        for (let i = 0; i < 50; i++) c.send({ type: 'subscribe', channel: `public:sub-${k}-${i}` })
        await c.request({ type: 'ping' }, 10_000)
      }),
    )
    expect(clients.flatMap((c) => c.of('error'))).toEqual([])
    expect(clients.reduce((n, c) => n + c.of('history').length, 0)).toBe(5_000)
    expect(store.stats().channels).toBe(1)
    const page = await clients[0]!.request({ type: 'history', channel: 'public:important' })
    expect(page.messages).toEqual([expect.objectContaining({ data: { keep: true }, offset: 1 })])

    // an offline queue lost to eviction (here by real appends past maxChannels) is never "recovered"
    const small = createMemoryStore({ maxChannels: 2 })
    const t = await serve({ store: small })
    const first = await Client.open(t.ws, 'tok-ada')
    await first.request({ type: 'subscribe', channel: 'private:user-ada' })
    await t.hub.publish('private:user-ada', 'note', { n: 1 })
    const m = await first.next((f) => f.type === 'message')
    first.send({ type: 'ack', channel: 'private:user-ada', offset: m.offset })
    await first.request({ type: 'ping' })
    first.socket.close()
    await first.whenClosed()
    await until(() => t.hub.connections.local({ userId: 'ada' }).length === 0, 2_000, 'ada gone')
    await t.hub.publish('private:user-ada', 'note', { n: 2 }) // queued while offline
    for (const ch of ['public:a', 'public:b', 'public:c']) await t.hub.publish(ch, 'e', 1)
    const again = await Client.open(t.ws, 'tok-ada')
    const answer = await again.request({ type: 'subscribe', channel: 'private:user-ada' })
    expect(answer.recovered).toBe(false)
    expect(String(answer.reason)).toMatch(/lost/)
  })

  it('a 70-byte history frame (limit: 1000) on a channel of large messages, from sockets that never read: one reply within maxReplyBytes (complete: false), and the queue limit holds (4009)', async () => {
    const MAX_REPLY = 256 * 1024
    const s = await serve({ history: { maxCount: 1000 }, limits: { maxReplyBytes: MAX_REPLY, highWaterMark: 64 * 1024, maxQueuedBytes: 1024 * 1024 } })
    const big = 'x'.repeat(60 * 1024)
    for (let i = 0; i < 40; i++) await s.hub.publish('public:big', 'e', { big, i })
    const reader = await Client.open(s.ws)
    const frame = JSON.stringify({ type: 'history', id: 1, channel: 'public:big', limit: 1000 })
    expect(frame.length).toBeLessThanOrEqual(70)
    reader.send(frame)
    const page = await reader.next((f) => f.id === 1)
    expect(JSON.stringify(page).length).toBeLessThanOrEqual(MAX_REPLY)
    expect((page.messages as unknown[]).length).toBeGreaterThan(0)
    expect(page.complete).toBe(false)
    // a socket that never reads and keeps asking: its replies go through the queue limit
    const hog = await Client.open(s.ws)
    const hogId = hog.of('connected')[0]!.connectionId as string
    let code: number | undefined
    s.hub.on('disconnect', (info, e) => {
      if (info.id === hogId) code = e.code
    })
    underlying(hog).pause()
    for (let i = 0; i < 60; i++) hog.send(frame) // 60 × 256 KiB ≈ 15 MiB of replies asked for
    await until(() => code !== undefined, 2_500, 'the hog dropped as a slow consumer')
    expect(code).toBe(4009)
    expect(await reader.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
  })

  it('one user publishing many large messages (3,100 × 127 KB; here 200 × 100 KB): the memory store byte budget holds', async () => {
    const MAX = 2 * 1024 * 1024
    const store = createMemoryStore({ maxBytes: MAX })
    const s = await serve({ store, limits: { messagesPerSecond: 10_000 } })
    const c = await Client.open(s.ws, 'tok-ada')
    const big = 'y'.repeat(100 * 1024)
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => c.request({ type: 'message', channel: `public:flood-${i % 4}`, event: 'e', data: { big, i } }, 10_000)))
    expect(answers.filter((a) => a.type === 'published').length).toBe(200)
    const stats = store.stats()
    expect(stats.bytes).toBeLessThanOrEqual(MAX)
    expect(stats.messages).toBeLessThan(200)
    expect(stats.messages).toBeGreaterThan(0)
  })

  it('an identity whose credential has expired: keeps nothing after the grace period (WS 4001), an SSE session does not resume after expiry, and the client SDK sends an auth frame', async () => {
    let expiresIn = 400
    const s = await serve({
      authenticate: (req) => (req.token?.startsWith('short') ? { userId: req.token.slice(6) || 'ada', expiresAt: Date.now() + expiresIn } : null),
      credentials: { refreshBeforeMs: 300, graceMs: 200 },
    })
    // WS: no refresh → subscriptions end, 4001, and nothing afterwards
    const c = await Client.open(s.ws, 'short')
    await c.request({ type: 'subscribe', channel: 'private:user-ada' })
    await c.next((f) => f.type === 'auth:expiring', 1_000)
    expect((await c.whenClosed(2_000)).code).toBe(4001)
    expect(s.hub.connections.local({ userId: 'ada' })).toEqual([])

    // SSE: a session whose identity expired does not come back with its secret
    const sse = await sseSession(s.base, 'short-sse')
    sse.stream.abort()
    await sleep(750) // past expiry and grace
    expect(s.hub.connections.local({ userId: 'sse' })).toEqual([])
    // the resume is refused, or only told what happened (close 4001) and ended: no live connection
    const resumed = await Sse.open(`${s.base}/realtime/sse`, { 'last-event-id': `${sse.session}:1`, 'x-tidings-secret': sse.secret })
    if (resumed.res.status === 200) {
      await until(() => resumed.ended, 1_000, 'the resumed stream ends')
      const close = resumed.events.find((e) => e.event === 'close')
      expect(close && JSON.parse(close.data)).toMatchObject({ code: 4001 })
      expect(resumed.frames().map((f) => f.type)).not.toContain('connected')
    } else expect(resumed.res.status).toBeGreaterThanOrEqual(400)
    expect(s.hub.connections.local({ userId: 'sse' })).toEqual([])
    const late = await sse.post({ type: 'subscribe', channel: 'private:user-sse' })
    expect(late.status).not.toBe(204)
    await late.body?.cancel()

    // the client SDK refreshes through its auth function: sends `auth`, stays open past expiry + grace
    expiresIn = 600
    let calls = 0
    const rt = new Realtime({ url: `${s.base}/realtime`, auth: () => `short-sdk${++calls > 1 ? '' : ''}`, heartbeatIntervalMs: 0, reconnect: false })
    onCleanup(() => rt.close())
    const refreshed: unknown[] = []
    rt.on('authenticated', (i) => refreshed.push(i))
    await new Promise((r) => rt.once('connected', r))
    expiresIn = 60_000
    await until(() => refreshed.length > 0, 1_500, 'a refresh by the SDK')
    await sleep(500) // past the first expiry and its grace
    expect(rt.state).toBe('connected')
    expect(s.hub.connections.local({ userId: 'sdk' })).toHaveLength(1)
    expect(typeof rt.reauthenticate).toBe('function')
  })

  it('a WebSocket upgrade from Origin: https://evil.example carrying the user\'s cookie is refused by default; SSE and long-poll refuse it too, also when allowedOrigins is set', async () => {
    const s = await serve()
    const evil = { origin: 'https://evil.example', cookie: 'session=victim' }
    expect(await wsAttempt(`${s.ws}?token=tok-ada`, { origin: evil.origin, headers: { cookie: evil.cookie } }).result).toBe(403)
    const sse = await fetch(`${s.base}/realtime/sse?token=tok-ada`, { headers: evil })
    expect(sse.status).toBe(403)
    await sse.body?.cancel()
    const lp = await fetch(`${s.base}/realtime/poll?token=tok-ada`, { method: 'POST', headers: evil })
    expect(lp.status).toBe(403)
    await lp.body?.cancel()
    expect(s.hub.connections.local()).toEqual([])
    // configured: the listed origin passes, evil still does not
    const t = await serve({}, { edge: { allowedOrigins: ['https://good.example'] } })
    expect(await wsAttempt(`${t.ws}?token=tok-ada`, { origin: evil.origin }).result).toBe(403)
    const sse2 = await fetch(`${t.base}/realtime/sse?token=tok-ada`, { headers: evil })
    expect(sse2.status).toBe(403)
    await sse2.body?.cancel()
    const lp2 = await fetch(`${t.base}/realtime/poll?token=tok-ada`, { method: 'POST', headers: evil })
    expect(lp2.status).toBe(403)
    await lp2.body?.cancel()
    const good = await fetch(`${t.base}/realtime/poll?token=tok-ada`, { method: 'POST', headers: { origin: 'https://good.example' } })
    expect(good.status).toBe(200)
    expect(good.headers.get('access-control-allow-origin')).toBe('https://good.example')
    await good.body?.cancel()
  })

  it('500 connections from one IP in 0.4 s (here 101): the 101st is refused 429 before the upgrade', async () => {
    const s = await serve()
    const attempts = Array.from({ length: 100 }, () => wsAttempt(s.ws))
    const results = await Promise.all(attempts.map((a) => a.result))
    expect(results.every((r) => r === 'open')).toBe(true)
    const extra = wsAttempt(s.ws)
    expect(await extra.result).toBe(429)
    // long-poll and SSE are held to the same per-address count
    const lp = await fetch(`${s.base}/realtime/poll`, { method: 'POST' })
    expect(lp.status).toBe(429)
    expect(lp.headers.get('retry-after')).toMatch(/^\d+$/)
    await lp.body?.cancel()
  })

  it('200 slowloris upgrades (here 40): cut within the handshake deadline (headers included), not by Node\'s 81 s timeout', async () => {
    const s = await serve({}, { websocket: { handshakeTimeoutMs: 400 } })
    const port = Number(new URL(s.base).port)
    const started = Date.now()
    const lifetimes = await Promise.all(
      Array.from(
        { length: 40 },
        () =>
          new Promise<number>((resolve) => {
            const sock = netConnect(port, '127.0.0.1')
            onCleanup(() => sock.destroy())
            sock.on('error', () => {})
            const req = `GET /realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n`
            let i = 0
            const timer = setInterval(() => {
              if (i < req.length && sock.writable) sock.write(req[i++]!)
            }, 20)
            sock.once('close', () => {
              clearInterval(timer)
              resolve(Date.now() - started)
            })
            setTimeout(() => {
              clearInterval(timer)
              resolve(Infinity)
            }, 2_500)
          }),
      ),
    )
    for (const t of lifetimes) expect(t).toBeLessThan(1_500)
    // meanwhile a normal client still connects
    expect(await wsAttempt(s.ws).result).toBe('open')
  })

  it('an authenticator that never answers: WebSocket, SSE and long-poll opens are answered within handshakeTimeoutMs', async () => {
    const s = await serve(
      { authenticate: () => new Promise<Identity | null>(() => {}) },
      { websocket: { handshakeTimeoutMs: 300 }, sse: { handshakeTimeoutMs: 300 }, longPoll: { handshakeTimeoutMs: 300 } },
    )
    const t0 = Date.now()
    const ws = wsAttempt(`${s.ws}?token=x`)
    const closed = new Promise<number>((r) => ws.ws.once('close', () => r(Date.now() - t0)))
    const sse = fetch(`${s.base}/realtime/sse?token=x`).then(async (r) => ({ status: r.status, at: Date.now() - t0, body: await r.text() }))
    const lp = fetch(`${s.base}/realtime/poll?token=x`, { method: 'POST' }).then(async (r) => ({ status: r.status, at: Date.now() - t0, body: await r.text() }))
    const [wsAt, sseR, lpR] = await Promise.all([closed, sse, lp])
    expect(wsAt).toBeLessThan(1_000)
    for (const r of [sseR, lpR]) {
      expect(r.status).toBe(503)
      expect(JSON.parse(r.body)).toMatchObject({ code: 'RT_001' })
      expect(r.at).toBeLessThan(1_000)
    }
  })

  it('a slow consumer dropped with 4009: its close frame reaches it (4009, not an abnormal close)', async () => {
    const s = await serve({ limits: { highWaterMark: 64 * 1024, maxQueuedBytes: 1024 * 1024 } })
    const slow = await Client.open(s.ws)
    await slow.request({ type: 'subscribe', channel: 'public:flood' })
    const slowId = slow.of('connected')[0]!.connectionId as string
    let dropped: number | undefined
    s.hub.on('disconnect', (info, e) => {
      if (info.id === slowId) dropped = e.code
    })
    const sock = underlying(slow)
    sock.pause()
    const chunk = randomBytes(16 * 1024).toString('base64')
    let n = 0
    while (dropped === undefined && n < 5_000) {
      for (let i = 0; i < 10; i++) await s.hub.publish('public:flood', 'n', { n: ++n, chunk })
      await sleep(1)
    }
    expect(dropped).toBe(4009)
    sock.resume()
    expect((await slow.whenClosed(2_500)).code).toBe(4009)
  })

  it('ten busy at-least-once channels on one client: acks do not count against the frame budget (no RT_006, no needless redelivery)', async () => {
    const s = await serve({ limits: { messagesPerSecond: 20 }, delivery: { ackTimeoutMs: 1_000 } })
    s.hub.channels.register('busy:*', { subscribe: 'authenticated', delivery: 'at-least-once' })
    const c = await Client.open(s.ws, 'tok-ada')
    for (let i = 0; i < 10; i++) await c.request({ type: 'subscribe', channel: `busy:${i}` })
    c.socket.on('message', (data) => {
      const f = JSON.parse(String(data)) as { type: string; ack?: boolean; channel: string; offset: number }
      if (f.type === 'message' && f.ack) c.send({ type: 'ack', channel: f.channel, offset: f.offset })
    })
    await sleep(1_000) // the subscribes' tokens come back
    // 10 channels × 10 messages at once: 100 acks, five times the frame budget of 20/s
    for (let round = 0; round < 10; round++) for (let i = 0; i < 10; i++) await s.hub.publish(`busy:${i}`, 'tick', { round })
    await until(() => c.of('message').length >= 100, 3_000, '100 messages')
    await sleep(300)
    expect(c.of('error')).toEqual([])
    expect(s.hub.metrics().redelivered).toBe(0)
  })

  it('a request answered with RT_006 on a congested connection: the reply is not dropped, and the client SDK\'s requests time out instead of hanging', async () => {
    const s = await serve({ limits: { messagesPerSecond: 5, highWaterMark: 16 * 1024, maxQueuedBytes: 8 * 1024 * 1024 } })
    const c = await Client.open(s.ws)
    await c.request({ type: 'subscribe', channel: 'public:fill' })
    const sock = underlying(c)
    sock.pause()
    // congest: the session's buffer is past its high-water mark, frames wait in the hub's queue
    const chunk = 'z'.repeat(32 * 1024)
    for (let i = 0; i < 40; i++) await s.hub.publish('public:fill', 'e', { chunk })
    const ids = Array.from({ length: 15 }, (_, i) => `q${i}`)
    for (const id of ids) c.send({ type: 'ping', id })
    await sleep(200)
    sock.resume()
    await until(() => ids.every((id) => c.frames.some((f) => f.id === id)), 2_500, 'every request answered')
    const limited = c.frames.filter((f) => typeof f.id === 'string' && ids.includes(f.id) && f.type === 'error')
    expect(limited.length).toBeGreaterThan(0)
    for (const e of limited) expect(e).toMatchObject({ code: 'RT_006' })

    // the SDK: a request nobody answers rejects after requestTimeoutMs
    s.hub.channels.register('hang:*', { subscribe: () => new Promise<boolean>(() => {}) })
    const rt = new Realtime({ url: `${s.base}/realtime`, auth: 'tok-ada', requestTimeoutMs: 300, heartbeatIntervalMs: 0, reconnect: false })
    onCleanup(() => rt.close())
    await new Promise((r) => rt.once('connected', r))
    const t0 = Date.now()
    await expect(rt.channel('hang:1').subscribe()).rejects.toThrow()
    expect(Date.now() - t0).toBeLessThan(1_500)
  })

  it('several frames arriving in one TCP read: an error found after validation (RT_003 / RT_004) goes out before the answers to later frames', async () => {
    const s = await serve()
    s.hub.channels.register('slow:*', { subscribe: async () => (await sleep(30), false) })
    const c = await Client.open(s.ws, 'tok-ada')
    const ids: unknown[] = []
    c.socket.on('message', (d) => ids.push((JSON.parse(String(d)) as { id?: unknown }).id))
    const sock = underlying(c)
    sock.cork() // the three WebSocket frames leave in one write
    c.send({ type: 'subscribe', id: 'a', channel: 'slow:1' })
    c.send({ type: 'subscribe', id: 'b', channel: 'nosuch' })
    c.send({ type: 'subscribe', id: 'c', channel: 'public:ok' })
    c.send({ type: 'ping', id: 'd' })
    sock.uncork()
    await until(() => ids.includes('d'), 2_000, 'pong')
    expect(ids.filter((i) => i !== undefined)).toEqual(['a', 'b', 'c', 'd'])
    expect(['a', 'b', 'c'].map((id) => c.frames.find((f) => f.id === id)!.code ?? c.frames.find((f) => f.id === id)!.type)).toEqual(['RT_003', 'RT_004', 'subscribed'])
  })

  it('a second subscribe to a channel already subscribed: the answer carries no delivery and no recovered: true (protocol.md §4.1)', async () => {
    const s = await serve()
    const c = await Client.open(s.ws, 'tok-ada')
    await c.request({ type: 'subscribe', channel: 'public:news' })
    await s.hub.publish('public:news', 'e', 1)
    await c.next((f) => f.type === 'message')
    const second = await c.request({ type: 'subscribe', channel: 'public:news' })
    expect(second.type).toBe('subscribed')
    expect(second).not.toHaveProperty('delivery')
    expect(second).not.toHaveProperty('recovered')
    await s.hub.publish('public:news', 'e', 2)
    await until(() => c.of('message').length === 2, 1_000, 'second message, once')
    await sleep(100)
    expect(c.of('message')).toHaveLength(2)
  })

  it('admin GET …/presence and POST …/kick for a channel no pattern matches are 404 RT_004; bad percent-encoding in a path is 400, not 503', async () => {
    const s = await serve()
    const h = { 'x-api-key': 'admin-key', 'content-type': 'application/json' }
    const p = await fetch(`${s.base}/realtime/channels/nowhere/presence`, { headers: h })
    expect(p.status).toBe(404)
    expect(await errorBody(p)).toMatchObject({ code: 'RT_004' })
    const k = await fetch(`${s.base}/realtime/channels/nowhere/kick`, { method: 'POST', headers: h, body: '{"userId":"ada"}' })
    expect(k.status).toBe(404)
    expect(await errorBody(k)).toMatchObject({ code: 'RT_004' })
    const bad = await fetch(`${s.base}/realtime/channels/%E0%A4%A/presence`, { headers: h })
    expect(bad.status).toBe(400)
    expect(await errorBody(bad)).toMatchObject({ type: 'error', code: 'RT_007' })
  })

  it('a channel rule given as a string (the seeds\' "auth.uid != null && …" form) is compiled at registration: a broken one throws there with its position, never silently refusing every subscribe', async () => {
    const hub = createHub({ logger: silentLogger })
    onCleanup(() => hub.close())
    expect(() => hub.channels.register('team:{id}', { subscribe: 'auth.uid != null && (data.members.includes(auth.uid)' })).toThrow(/team:\{id\}[\s\S]*subscribe[\s\S]*\d/)
    expect(() => createHub({ channels: { 'room:{id}': { publish: 'auth.uid != null &&' } } })).toThrow(/publish/)
    expect(() => hub.channels.register('evil:{id}', { subscribe: 'auth.constructor.constructor("return process")()' })).toThrow()
    // a refused registration leaves nothing behind; a valid expression is enforced as written
    const s = await serve()
    const c = await Client.open(s.ws, 'tok-ada')
    expect(() => s.hub.channels.register('team:{id}', { subscribe: 'auth.uid ==' })).toThrow()
    expect(await c.request({ type: 'subscribe', channel: 'team:1' })).toMatchObject({ type: 'error', code: 'RT_004' })
    s.hub.channels.register('crew:{id}', { subscribe: 'auth.uid != null && params.id == "1"' })
    expect(await c.request({ type: 'subscribe', channel: 'crew:1' })).toMatchObject({ type: 'subscribed' })
    expect(await c.request({ type: 'subscribe', channel: 'crew:2' })).toMatchObject({ type: 'error', code: 'RT_003' })
  })

  it('a refused connect (bad token): a log line without the token and a connection:refused event, on WebSocket and SSE', async () => {
    const lines: Array<[string, unknown]> = []
    const logger = { debug() {}, info: (f: unknown, m?: string) => lines.push([m ?? '', f]), warn: (f: unknown, m?: string) => lines.push([m ?? '', f]), error: (f: unknown, m?: string) => lines.push([m ?? '', f]) }
    const s = await serve({ logger })
    const refused: Array<{ transport: string; code: string }> = []
    s.hub.on('connection:refused', (e) => refused.push(e as { transport: string; code: string }))
    const c = await Client.open(s.ws, 'bad-token-S3CRET')
    expect((await c.whenClosed()).code).toBe(4001)
    const r = await fetch(`${s.base}/realtime/sse?token=bad-token-S3CRET`)
    expect(r.status).toBe(401)
    await r.body?.cancel()
    expect(refused.map((e) => [e.transport, e.code])).toEqual([
      ['ws', 'RT_002'],
      ['sse', 'RT_002'],
    ])
    expect(lines.filter(([m]) => /refused/.test(m))).toHaveLength(2)
    expect(JSON.stringify(lines)).not.toContain('S3CRET')
  })

  it('ten page reloads of an SSE client: the detached sessions stop holding the user\'s 10 slots and its presence within the detached timeout', async () => {
    const s = await serve({}, { sse: { detachedTimeoutMs: 300 } })
    for (let i = 0; i < 10; i++) {
      const page = await sseSession(s.base, 'tok-ada')
      expect((await page.post({ type: 'subscribe', channel: 'presence:lobby', id: 'p' })).status).toBe(204)
      await page.stream.frame((f) => f.id === 'p')
      page.stream.abort()
    }
    expect((await s.hub.presence.get('presence:lobby')).users.map((u) => u.id)).toEqual(['ada'])
    await sleep(700)
    expect(s.hub.connections.local({ userId: 'ada' })).toEqual([])
    expect((await s.hub.presence.get('presence:lobby')).users).toEqual([])
    const eleventh = await sseSession(s.base, 'tok-ada')
    expect(eleventh.stream.res.status).toBe(200)
  })
})

// ==================================================================================== table 2

describe('issue #9: a new user\'s first hour (from Node)', () => {
  it('the README\'s server snippet (createRealtime with an authenticator) and client snippet (auth: token) work together', async () => {
    const sessions = new Map([
      ['token-ada', 'ada'],
      ['token-grace', 'grace'],
    ])
    const realtime = createRealtime({
      authenticate: ({ token }) => {
        const userId = sessions.get(token ?? '')
        return userId ? { userId } : null
      },
      apiKey: 'admin',
    })
    const server = createServer()
    realtime.attach(server)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    onCleanup(async () => {
      await realtime.close()
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    })
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/realtime`
    const unhandled: unknown[] = []
    const onUnhandled = (e: unknown) => unhandled.push(e)
    process.on('unhandledRejection', onUnhandled)
    onCleanup(() => process.off('unhandledRejection', onUnhandled))

    const grace = new Realtime({ url, auth: 'token-grace' })
    onCleanup(() => grace.close())
    const got: unknown[] = []
    const graceRoom = grace.channel('presence:room-1', { presence: { name: 'Grace' } })
    graceRoom.on('chat', (data) => got.push(data))
    await graceRoom.subscribe()

    const rt = new Realtime({ url, auth: 'token-ada' })
    onCleanup(() => rt.close())
    const room = rt.channel('presence:room-1', { presence: { name: 'Ada' } })
    const mine: unknown[] = []
    const off = room.on('chat', (data) => mine.push(data))
    expect(typeof off).toBe('function')
    await room.subscribe()
    await room.send('chat', { text: 'hello' })
    await until(() => got.length === 1, 2_000, 'grace gets the chat')
    expect(got).toEqual([{ text: 'hello' }])
    off()
    rt.close()
    // a wrong token is an error the app sees, not a process-ending unhandled rejection
    const wrong = new Realtime({ url, auth: 'nope', reconnect: false })
    onCleanup(() => wrong.close())
    const errors: Error[] = []
    wrong.on('error', (e) => errors.push(e))
    await until(() => errors.length > 0, 2_000, 'refusal reported')
    await sleep(50)
    expect(unhandled).toEqual([])
  })

  it('on Node 20 (no global WebSocket) the client uses WebSocket when `ws` is installed, not SSE silently', async () => {
    expect((globalThis as { WebSocket?: unknown }).WebSocket).toBeUndefined()
    const s = await serve()
    const rt = new Realtime({ url: `${s.base}/realtime`, auth: 'tok-ada', heartbeatIntervalMs: 0 })
    onCleanup(() => rt.close())
    const fallbacks: unknown[] = []
    rt.on('fallback', (f) => fallbacks.push(f))
    await new Promise((r) => rt.once('connected', r))
    expect(rt.transport).toBe('websocket')
    expect(s.hub.connections.local({ userId: 'ada' }).map((c) => c.transport)).toEqual(['ws'])
    expect(fallbacks).toEqual([])
  })
})

// ==================================================================================== beyond the issue

/** Write `text` on a raw TCP connection; resolve with what came back and when the socket closed (undefined: still open). */
function rawHttp(port: number, text: string, waitMs: number): Promise<{ data: string; closedAfter: number | undefined }> {
  return new Promise((resolve) => {
    const t0 = Date.now()
    const sock = netConnect(port, '127.0.0.1')
    onCleanup(() => sock.destroy())
    let data = ''
    let closedAfter: number | undefined
    sock.on('data', (d: Buffer) => (data += d.toString()))
    sock.on('error', () => {})
    sock.on('close', () => {
      closedAfter = Date.now() - t0
      resolve({ data, closedAfter })
    })
    sock.write(text)
    setTimeout(() => resolve({ data, closedAfter }), waitMs)
  })
}

describe('attacks the issue did not list', () => {
  it('prototype-pollution keys in presence data, filters and admin bodies pollute nothing and reach no prototype', async () => {
    const s = await serve()
    const ada = await Client.open(s.ws, 'tok-ada')
    const bob = await Client.open(s.ws, 'tok-bob')
    await bob.request({ type: 'subscribe', channel: 'presence:p' })
    ada.send('{"type":"subscribe","id":"s","channel":"presence:p","presence":{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}}}}')
    expect((await ada.next((f) => f.id === 's')).type).toBe('subscribed')
    ada.send('{"type":"presence:update","id":"u","channel":"presence:p","data":{"__proto__":{"isAdmin":true}}}')
    await ada.next((f) => f.id === 'u')
    for (const field of ['__proto__.polluted', 'data.constructor.name', 'data.__proto__', 'prototype']) {
      const answer = await ada.request({ type: 'subscribe', channel: 'public:f', filter: { field, op: 'eq', value: 1 } })
      expect(answer, field).toMatchObject({ type: 'error', code: 'RT_007' })
    }
    const admin = await fetch(`${s.base}/realtime/channels/public:news/broadcast`, {
      method: 'POST',
      headers: { 'x-api-key': 'admin-key', 'content-type': 'application/json' },
      body: '{"event":"x","data":{},"__proto__":{"polluted":1}}',
    })
    expect(admin.status).toBeLessThan(500)
    await admin.body?.cancel()
    const snapshot = await bob.request({ type: 'presence:get', channel: 'presence:p' })
    const adaData = (snapshot.users as Array<{ id: string; data: Record<string, unknown> }>).find((u) => u.id === 'ada')!.data
    expect(Object.getPrototypeOf(adaData)).toBe(Object.prototype)
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined()
    expect((adaData as { isAdmin?: unknown }).isAdmin).toBeUndefined()
  })

  it('3,000 tiny frames in one TCP write: every one answered (pong or RT_006) in order, the connection stays and recovers', async () => {
    const s = await serve()
    const c = await Client.open(s.ws, 'tok-eve')
    const sock = underlying(c)
    sock.cork()
    for (let i = 0; i < 3_000; i++) c.send({ type: 'ping', id: i })
    sock.uncork()
    await until(() => c.frames.filter((f) => typeof f.id === 'number').length === 3_000, 2_500, '3,000 answers')
    const answers = c.frames.filter((f) => typeof f.id === 'number')
    expect(answers.every((f, i) => f.id === i)).toBe(true)
    expect(answers.every((f) => f.type === 'pong' || f.code === 'RT_006')).toBe(true)
    expect(c.closed).toBeUndefined()
    const other = await Client.open(s.ws, 'tok-ada')
    expect(await other.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
  })

  it('Unicode edge cases in channel names (lone surrogates, NUL, bidi override, BOM, 5,000 characters, dot segments) are refused RT_007 on every path', async () => {
    const s = await serve()
    const c = await Client.open(s.ws, 'tok-ada')
    for (const name of ['public:\ud800', 'public:\u0000x', 'public:\u202eevil', 'public:\ufeff', `public:${'é'.repeat(5_000)}`, 'public:a/../b', 'public:😀\ud83d']) {
      for (const frame of [{ type: 'subscribe', channel: name }, { type: 'history', channel: name }, { type: 'message', channel: name, event: 'e', data: '\ud800' }]) {
        expect(await c.request(frame), `${frame.type} ${JSON.stringify(name.slice(0, 12))}`).toMatchObject({ type: 'error', code: 'RT_007' })
      }
    }
    const admin = await fetch(`${s.base}/realtime/channels/public:%ED%A0%80/history`, { headers: { 'x-api-key': 'admin-key' } })
    expect(admin.status).toBe(400)
    expect(await c.request({ type: 'subscribe', channel: 'public:__proto__' })).toMatchObject({ type: 'subscribed' })
  })

  it('a huge or malformed Last-Event-ID is never a 5xx and never resumes anything', async () => {
    const s = await serve()
    for (const id of ['x'.repeat(15_000), 'a:b:c', ':', 'abc:-1', 'abc:1e309', 'abc:NaN', `${'x'.repeat(200)}:99999999999999999999`]) {
      const stream = await Sse.open(`${s.base}/realtime/sse`, { 'last-event-id': id })
      expect(stream.res.status, id.slice(0, 20)).toBeLessThan(500)
      if (stream.res.status === 200) {
        // a fresh session, with its own secret: nothing of anyone else's
        const { secret } = await stream.session()
        expect(secret).toEqual(expect.any(String))
      }
      stream.abort()
    }
    const url = await fetch(`${s.base}/realtime/sse?lastEventId=${'y'.repeat(60_000)}:1`)
    expect(url.status).toBe(431)
  })

  it('a lying Content-Length: less than sent or with chunked is 400, a huge one is 413 at once, and one never completed (body slowloris) is cut within the handshake deadline, not held with its buffer for Node\'s 300 s requestTimeout', async () => {
    const s = await serve({}, { websocket: { handshakeTimeoutMs: 500 }, sse: { handshakeTimeoutMs: 500 }, longPoll: { handshakeTimeoutMs: 500 } })
    const port = Number(new URL(s.base).port)
    const sse = await sseSession(s.base)
    const head = (cl: string, extra = '') => `POST /realtime/sse/${sse.session} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-tidings-secret: ${sse.secret}\r\nContent-Length: ${cl}\r\n${extra}\r\n`
    const body = '{"type":"ping","id":"smuggled"}'
    expect((await rawHttp(port, head('5') + body, 500)).data).toMatch(/^HTTP\/1\.1 400/)
    expect((await rawHttp(port, head(String(body.length), 'Transfer-Encoding: chunked\r\n') + `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`, 500)).data).toMatch(/^HTTP\/1\.1 400/)
    expect((await rawHttp(port, head('99999999999') + body, 500)).data).toMatch(/^HTTP\/1\.1 413/)
    await sleep(100)
    expect(sse.stream.frames().some((f) => f.id === 'smuggled')).toBe(false)
    // declares 1 MiB, sends 64 KiB and stalls, on SSE and on long-poll
    const poll = await pollSession(s.base)
    const stalled = await Promise.all([
      rawHttp(port, head(String(1024 * 1024)) + ' '.repeat(64 * 1024), 2_500),
      rawHttp(port, `POST /realtime/poll/${poll.session} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-tidings-secret: ${poll.secret}\r\nContent-Length: ${1024 * 1024}\r\n\r\n${' '.repeat(64 * 1024)}`, 2_500),
    ])
    for (const r of stalled) {
      const cut = r.closedAfter !== undefined || /^HTTP\/1\.1 (408|400|413)/.test(r.data)
      expect(cut, `answered ${JSON.stringify(r.data.slice(0, 40))}, closed after ${r.closedAfter}`).toBe(true)
    }
  })
})
