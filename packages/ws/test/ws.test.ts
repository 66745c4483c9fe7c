import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Socket as NetSocket, type Socket } from 'node:net'
import { createApiKeyAuthenticator, createHub, createTokenAuthenticator, type Hub, type HubOptions, type Identity, Outbound, silentLogger } from '@tidings/core'
import WebSocket from 'ws'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { buildFrame, Sender } from '../src/frame.js'
import { createWsTransport, JSON_SUBPROTOCOL, type WsTransport, type WsTransportOptions } from '../src/index.js'
import { WsSession } from '../src/session.js'

type Frame = Record<string, unknown> & { type: string }

const TOKENS: Record<string, Identity> = { 'tok-ada': { userId: 'ada' }, 'tok-bob': { userId: 'bob' }, 'tok-cy': { userId: 'cy' } }

interface Env {
  readonly hub: Hub
  readonly transport: WsTransport
  readonly server: Server
  /** `ws://127.0.0.1:<port>/realtime` */
  readonly url: string
  readonly port: number
  /** Connect a client and wait for its `connected` frame. */
  client(options?: ClientOptions & { query?: string }): Promise<TestClient>
  /** Start a client without waiting (for refusals). */
  raw(options?: ClientOptions & { query?: string; path?: string }): TestClient
  close(): Promise<void>
}

interface ClientOptions {
  readonly protocols?: string | string[]
  readonly headers?: Record<string, string>
  readonly perMessageDeflate?: boolean
  readonly autoPong?: boolean
  readonly origin?: string
}

interface TestClient {
  readonly ws: WebSocket
  readonly frames: Frame[]
  /** Resolves with the first frame (already received or future) matching. */
  waitFor(match: (f: Frame) => boolean, label?: string): Promise<Frame>
  /** Sends a frame with a fresh id; resolves with the reply carrying it. */
  request(frame: Record<string, unknown>): Promise<Frame>
  send(frame: Record<string, unknown> | string | Buffer): void
  readonly closed: Promise<{ code: number; reason: string }>
  /** HTTP status of a refused handshake. */
  readonly refused: Promise<number>
  readonly opened: Promise<void>
}

const envs: Env[] = []
const clients: TestClient[] = []

async function setup(hubOptions: HubOptions = {}, wsOptions: WsTransportOptions = {}, track = envs): Promise<Env> {
  const hub = createHub({ logger: silentLogger, authenticate: createTokenAuthenticator(TOKENS), ...hubOptions })
  const transport = createWsTransport(hub, wsOptions)
  const server = createServer((_req, res) => {
    res.statusCode = 404
    res.end()
  })
  const detach = transport.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  const path = wsOptions.path ?? '/realtime'
  const url = `ws://127.0.0.1:${port}${path}`
  const raw = (o: ClientOptions & { query?: string; path?: string } = {}) => {
    const c = makeClient(`ws://127.0.0.1:${port}${o.path ?? path}${o.query ? `?${o.query}` : ''}`, o)
    clients.push(c)
    return c
  }
  let closed = false
  const env: Env = {
    hub,
    transport,
    server,
    url,
    port,
    raw,
    async client(o = {}) {
      const c = raw(o)
      await c.waitFor((f) => f.type === 'connected', 'connected')
      return c
    },
    async close() {
      if (closed) return
      closed = true
      await transport.close({ timeoutMs: 200 })
      detach()
      await hub.close()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
  track.push(env)
  return env
}

function makeClient(url: string, o: ClientOptions): TestClient {
  const protocols = o.protocols ?? JSON_SUBPROTOCOL
  const ws = new WebSocket(url, protocols, {
    headers: o.headers,
    perMessageDeflate: o.perMessageDeflate ?? false,
    autoPong: o.autoPong ?? true,
    origin: o.origin,
  })
  const frames: Frame[] = []
  const waiters = new Set<{ match: (f: Frame) => boolean; resolve: (f: Frame) => void }>()
  ws.on('message', (data, isBinary) => {
    const f = JSON.parse(isBinary ? Buffer.from(data as Buffer).toString() : String(data)) as Frame
    frames.push(f)
    for (const w of [...waiters]) {
      if (w.match(f)) {
        waiters.delete(w)
        w.resolve(f)
      }
    }
  })
  ws.on('error', () => {})
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: reason.toString() })))
  const refused = new Promise<number>((r) =>
    ws.once('unexpected-response', (req, res) => {
      r(res.statusCode ?? 0)
      res.resume()
      req.destroy()
    }),
  )
  const opened = new Promise<void>((r) => ws.once('open', () => r()))
  let nextId = 0
  const client: TestClient = {
    ws,
    frames,
    closed,
    refused,
    opened,
    waitFor(match, label = 'frame') {
      const found = frames.find(match)
      if (found) return Promise.resolve(found)
      return new Promise<Frame>((resolve, reject) => {
        const w = { match, resolve }
        waiters.add(w)
        void closed.then(({ code }) => {
          if (waiters.delete(w)) reject(new Error(`closed (${code}) while waiting for ${label}`))
        })
      })
    },
    request(frame) {
      const id = `q${++nextId}`
      const reply = client.waitFor((f) => f.id === id && f.type !== 'message', `reply ${id}`)
      ws.send(JSON.stringify({ ...frame, id }))
      return reply
    },
    send(frame) {
      ws.send(typeof frame === 'string' || Buffer.isBuffer(frame) ? frame : JSON.stringify(frame))
    },
  }
  return client
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms))

async function until(check: () => boolean, timeoutMs = 5_000, label = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${label}`)
    await tick(5)
  }
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.ws.terminate()
  for (const e of envs.splice(0)) await e.close()
  vi.restoreAllMocks()
})

// ------------------------------------------------------------------------------------------
// One shared server for the plain cases.

describe('ws transport (shared server)', () => {
  const shared: Env[] = []
  let env: Env
  beforeAll(async () => {
    env = await setup({ limits: { maxMessageSize: 1024 } }, { maxPayload: 64 * 1024 }, shared)
  }, 30_000)
  afterAll(async () => {
    for (const c of clients.splice(0)) c.ws.terminate()
    for (const e of shared.splice(0)) await e.close()
  }, 30_000)

  it('connects, negotiates tidings.v1.json and sends `connected`', async () => {
    const c = await env.client({ query: 'token=tok-ada', headers: { 'user-agent': 'tidings-test/1.0' } })
    expect(c.ws.protocol).toBe('tidings.v1.json')
    const connected = c.frames[0]!
    expect(connected).toMatchObject({ type: 'connected', v: 1, userId: 'ada' })
    const info = (await env.hub.connections.get(connected.connectionId as string))
    expect(info).toMatchObject({ transport: 'ws', userId: 'ada', userAgent: 'tidings-test/1.0', ip: '127.0.0.1' })
    expect(env.transport.connections).toBeGreaterThanOrEqual(1)
  })

  it('accepts a client that offers no subprotocol (JSON)', async () => {
    const c = await env.client({ protocols: [] })
    expect(c.ws.protocol).toBe('')
    expect(c.frames[0]).toMatchObject({ type: 'connected' })
    expect(c.frames[0]!.userId).toBeUndefined()
    expect(await c.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
  })

  it('accepts tidings.v1.json among other offered subprotocols', async () => {
    const c = await env.client({ protocols: ['graphql-ws', 'tidings.v1.json'] })
    expect(c.ws.protocol).toBe('tidings.v1.json')
  })

  it('subscribes and publishes between two clients', async () => {
    const ada = await env.client({ query: 'token=tok-ada' })
    const bob = await env.client({ query: 'token=tok-bob' })
    expect(await bob.request({ type: 'subscribe', channel: 'public:news' })).toMatchObject({ type: 'subscribed', channel: 'public:news' })
    const got = bob.waitFor((f) => f.type === 'message' && f.channel === 'public:news')
    expect(await ada.request({ type: 'message', channel: 'public:news', event: 'hello', data: { text: 'hi' } })).toMatchObject({ type: 'published', offset: 1 })
    expect(await got).toMatchObject({ event: 'hello', data: { text: 'hi' }, sender: 'ada', offset: 1 })
  })

  it('passes binary frames to the hub as bytes', async () => {
    const c = await env.client()
    c.send(Buffer.from(JSON.stringify({ type: 'subscribe', id: 'bin', channel: 'public:bin' })))
    expect(await c.waitFor((f) => f.id === 'bin')).toMatchObject({ type: 'subscribed', channel: 'public:bin' })
  })

  it('authenticates with ?token= and with an Authorization header', async () => {
    const q = await env.client({ query: 'token=tok-ada' })
    expect(q.frames[0]).toMatchObject({ userId: 'ada' })
    const h = await env.client({ headers: { authorization: 'Bearer tok-bob' } })
    expect(h.frames[0]).toMatchObject({ userId: 'bob' })
  })

  it('refuses a bad token with RT_002 and close 4001', async () => {
    const c = env.raw({ query: 'token=nope' })
    const err = await c.waitFor((f) => f.type === 'error')
    expect(err).toMatchObject({ code: 'RT_002' })
    expect((await c.closed).code).toBe(4001)
    await until(() => env.transport.connections === env.hub.connections.local().length, 2_000, 'session forgotten')
  })

  it('refuses a client offering only unknown subprotocols with HTTP 400, and keeps serving others', async () => {
    const bad = env.raw({ protocols: ['mqtt', 'tidings.v9.json'] })
    expect(await bad.refused).toBe(400)
    const good = await env.client()
    expect(good.frames[0]).toMatchObject({ type: 'connected' })
  })

  it('answers malformed JSON with RT_007 and keeps the socket open', async () => {
    const c = await env.client()
    c.send('{not json')
    expect(await c.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'RT_007' })
    expect(await c.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
    expect(c.ws.readyState).toBe(WebSocket.OPEN)
  })

  it('answers a frame over maxMessageSize (under maxPayload) with RT_005 and keeps the socket open', async () => {
    const c = await env.client()
    c.send({ type: 'subscribe', id: 'big', channel: 'public:x', pad: 'x'.repeat(4_000) })
    expect(await c.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'RT_005', id: 'big' })
    expect(await c.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
  })

  it('closes with 1009 past maxPayload, without harming the server', async () => {
    const c = await env.client()
    c.send('x'.repeat(65 * 1024))
    expect((await c.closed).code).toBe(1009)
    const other = await env.client()
    expect(await other.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
  })

  it('survives protocol errors from a client (invalid UTF-8 in a text frame)', async () => {
    const c = await env.client()
    // A raw text frame with invalid UTF-8, masked as a client must.
    const socket = (c.ws as unknown as { _socket: Socket })._socket
    const payload = Buffer.from([0xff, 0xfe, 0xfd])
    socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length, 0, 0, 0, 0]), payload]))
    expect((await c.closed).code).toBe(1007)
    const other = await env.client()
    expect(await other.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
  })

  it('cleans up when a subscriber disconnects', async () => {
    const c = await env.client({ query: 'token=tok-cy' })
    await c.request({ type: 'subscribe', channel: 'public:cleanup' })
    expect(env.hub.connections.local({ channel: 'public:cleanup' })).toHaveLength(1)
    const id = c.frames[0]!.connectionId as string
    c.ws.close()
    await until(() => env.hub.connections.local({ channel: 'public:cleanup' }).length === 0, 2_000, 'hub cleanup')
    expect(await env.hub.connections.get(id)).toBeUndefined()
    expect(env.hub.connections.local({ userId: 'cy' })).toHaveLength(0)
    expect(env.hub.channels.list().find((ch) => ch.name === 'public:cleanup')?.subscribers ?? 0).toBe(0)
    // The transport forgot the socket too: it counts exactly the hub's connections once all closes settle.
    await until(() => env.transport.connections === env.hub.connections.local().length, 2_000, 'transport cleanup')
  })

  it('reports an abrupt disconnect (terminate) to the hub', async () => {
    const c = await env.client({ query: 'token=tok-cy' })
    const id = c.frames[0]!.connectionId as string
    const gone = new Promise<{ code: number }>((r) => env.hub.once('disconnect', (info, e) => info.id === id && r(e)))
    c.ws.terminate()
    expect((await gone).code).toBe(1006)
  })

  it('closes with the hub\'s code (disconnect → 4000)', async () => {
    const c = await env.client({ query: 'token=tok-ada' })
    expect(await env.hub.connections.disconnect(c.frames[0]!.connectionId as string, 'bye')).toBe(true)
    expect(await c.closed).toEqual({ code: 4000, reason: 'bye' })
  })

  it('delivers frames sent before `connected` once the hub has accepted', async () => {
    const c = env.raw({ query: 'token=tok-ada' })
    await c.opened
    c.send({ type: 'subscribe', id: 'early', channel: 'public:early' })
    expect(await c.waitFor((f) => f.id === 'early')).toMatchObject({ type: 'subscribed' })
    expect(c.frames[0]!.type).toBe('connected')
  })

  it('leaves other paths alone (handleUpgrade returns false)', async () => {
    const other = await setup({}, { path: '/elsewhere' })
    const seen: string[] = []
    other.server.on('upgrade', (req, socket) => {
      if (req.url?.startsWith('/custom')) {
        seen.push(req.url)
        socket.destroy()
      }
    })
    const c = other.raw({ path: '/custom' })
    await c.closed
    expect(seen).toEqual(['/custom'])
    expect(other.transport.handleUpgrade({ url: '/custom' } as never, null as never, Buffer.alloc(0))).toBe(false)
    const ok = await other.client()
    expect(ok.frames[0]).toMatchObject({ type: 'connected' })
  })
})

// ------------------------------------------------------------------------------------------

describe('ws transport (handshake options)', () => {
  it('checks the browser Origin against allowedOrigins (403), and lets non-browser clients in', async () => {
    const env = await setup({}, { allowedOrigins: ['https://app.example.com'] })
    const evil = env.raw({ origin: 'https://evil.example.com' })
    expect(await evil.refused).toBe(403)
    const good = await env.client({ origin: 'https://App.Example.com' })
    expect(good.frames[0]).toMatchObject({ type: 'connected' })
    const noOrigin = await env.client()
    expect(noOrigin.frames[0]).toMatchObject({ type: 'connected' })
  })

  it('passes API keys from ?apiKey= and the x-api-key header', async () => {
    const env = await setup({ authenticate: createApiKeyAuthenticator({ k1: { userId: 'svc-1' }, k2: { userId: 'svc-2' } }) })
    expect((await env.client({ query: 'apiKey=k1' })).frames[0]).toMatchObject({ userId: 'svc-1' })
    expect((await env.client({ headers: { 'x-api-key': 'k2' } })).frames[0]).toMatchObject({ userId: 'svc-2' })
    const bad = env.raw({ headers: { 'x-api-key': 'nope' } })
    expect(await bad.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'RT_002' })
    expect((await bad.closed).code).toBe(4001)
  })

  it('answers RT_001 and closes 1013 (try again later, not a bad token) when the hub takes longer than handshakeTimeoutMs', async () => {
    const env = await setup({ authenticate: () => new Promise<Identity | null>(() => {}) }, { handshakeTimeoutMs: 100 })
    const c = env.raw({ query: 'token=x' })
    expect(await c.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'RT_001', message: expect.stringContaining('authentication timed out') })
    expect((await c.closed).code).toBe(1013)
    await until(() => env.transport.connections === 0, 2_000, 'session forgotten')
  })

  it('waits for an asynchronous authenticator, holding frames sent meanwhile', async () => {
    const env = await setup({ authenticate: async (req) => (await tick(50), req.token === 'slow' ? { userId: 'slow' } : null) })
    const c = env.raw({ query: 'token=slow' })
    await c.opened
    c.send({ type: 'subscribe', id: 's1', channel: 'public:a' })
    c.send({ type: 'subscribe', id: 's2', channel: 'public:b' })
    expect(await c.waitFor((f) => f.id === 's2')).toMatchObject({ type: 'subscribed', channel: 'public:b' })
    expect(c.frames.map((f) => f.type)).toEqual(['connected', 'subscribed', 'subscribed'])
    expect(c.frames[0]).toMatchObject({ userId: 'slow' })
  })

  it('negotiates permessage-deflate when enabled, compressing frames over the threshold', async () => {
    const env = await setup({}, { perMessageDeflate: { threshold: 256 } })
    const pub = await env.client({ query: 'token=tok-ada', perMessageDeflate: true })
    const sub = await env.client({ perMessageDeflate: true })
    expect(sub.ws.extensions).toContain('permessage-deflate')
    await sub.request({ type: 'subscribe', channel: 'public:zip' })
    const socket = (sub.ws as unknown as { _socket: Socket })._socket
    const before = socket.bytesRead
    const text = 'all work and no play makes jack a dull boy. '.repeat(2_000)
    await env.hub.publish('public:zip', 'big', { text })
    await env.hub.publish('public:zip', 'small', { n: 1 })
    const small = await sub.waitFor((f) => f.event === 'small')
    expect(small).toMatchObject({ data: { n: 1 } })
    expect(sub.frames.find((f) => f.event === 'big')).toMatchObject({ data: { text } })
    expect(socket.bytesRead - before).toBeLessThan(text.length / 10)
    expect(pub.ws.extensions).toContain('permessage-deflate')
  })

  it('does not negotiate permessage-deflate by default', async () => {
    const env = await setup()
    const c = await env.client({ perMessageDeflate: true })
    expect(c.ws.extensions).toBe('')
  })
})

// ------------------------------------------------------------------------------------------

describe('ws transport (keepalive, backpressure, shutdown)', () => {
  it('terminates a client that stops answering pings, and keeps one that answers', async () => {
    const env = await setup({}, { pingIntervalMs: 100 })
    const mute = await env.client({ query: 'token=tok-ada', autoPong: false })
    const live = await env.client({ query: 'token=tok-bob' })
    let pings = 0
    live.ws.on('ping', () => pings++)
    const id = mute.frames[0]!.connectionId as string
    const gone = new Promise<number>((r) => env.hub.on('disconnect', (info, e) => info.id === id && r(e.code)))
    expect((await mute.closed).code).toBe(1006)
    expect(await gone).toBe(1006)
    await until(() => pings >= 3, 2_000, 'pings')
    expect(live.ws.readyState).toBe(WebSocket.OPEN)
    expect(await live.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
    expect(env.transport.connections).toBe(1)
  })

  // 64 KiB is above the socket's own mark (16 KiB): write()'s return tells congestion. 4 KiB is
  // below it: every write then carries a callback to notice the drain.
  for (const [deflate, mark] of [[false, 64 * 1024], [true, 64 * 1024], [false, 4 * 1024]] as const) {
    it(`applies backpressure to a client that stops reading, then delivers everything in order (mark ${mark / 1024} KiB${deflate ? ', permessage-deflate' : ''})`, async () => {
      const env = await setup(
        { limits: { highWaterMark: mark, maxQueuedBytes: 512 * 1024 * 1024, maxMessageSize: 256 * 1024 } },
        deflate ? { perMessageDeflate: true } : {},
      )
      const sub = await env.client({ perMessageDeflate: deflate })
      await sub.request({ type: 'subscribe', channel: 'public:flood' })
      const sendSpy = vi.spyOn(WsSession.prototype, 'send')
      const socket = (sub.ws as unknown as { _socket: Socket })._socket
      socket.pause()
      // Random-ish payloads so compression cannot make the flood small.
      const chunk = randomBytes(24 * 1024).toString('base64')
      let published = 0
      const falseCount = () => sendSpy.mock.results.filter((r) => r.value === false).length
      while (falseCount() === 0) {
        for (let i = 0; i < 10; i++) await env.hub.publish('public:flood', 'n', { seq: ++published, chunk })
        await tick(1)
        if (published > 5_000) throw new Error('never congested')
      }
      const sendsAtCongestion = sendSpy.mock.calls.length
      // The hub queues from now on: further publishes do not reach the session.
      for (let i = 0; i < 20; i++) await env.hub.publish('public:flood', 'n', { seq: ++published, chunk })
      expect(sendSpy.mock.calls.length).toBe(sendsAtCongestion)
      socket.resume()
      await until(() => sub.frames.filter((f) => f.type === 'message').length === published, 20_000, 'all messages')
      const seqs = sub.frames.filter((f) => f.type === 'message').map((f) => (f.data as { seq: number }).seq)
      expect(seqs).toEqual(Array.from({ length: published }, (_, i) => i + 1))
      expect(sub.ws.readyState).toBe(WebSocket.OPEN)
    })
  }

  it('sends the 101 response and `connected` in one write', async () => {
    const env = await setup()
    // Every socket write of the process goes through here; the server's are those not on the client socket.
    const writes = vi.spyOn(NetSocket.prototype as unknown as { _writeGeneric: (writev: boolean, data: unknown) => void }, '_writeGeneric')
    const socket = new NetSocket()
    const chunks: Buffer[] = []
    socket.on('data', (d: Buffer) => chunks.push(d))
    await new Promise<void>((r) => socket.connect(env.port, '127.0.0.1', r))
    socket.write(
      'GET /realtime?token=tok-ada HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ${JSON_SUBPROTOCOL}\r\n\r\n`,
    )
    await until(() => chunks.length > 0, 2_000, 'first read')
    await tick(50)
    socket.destroy()
    const first = chunks[0]!.toString('latin1')
    expect(first.startsWith('HTTP/1.1 101 ')).toBe(true)
    expect(first).toContain('"type":"connected"')
    const server = writes.mock.calls.filter((_, i) => writes.mock.contexts[i] !== socket)
    expect(server).toHaveLength(1)
    expect(server[0]![0]).toBe(true) // one writev of the two buffers
  })

  it('keeps the handshake headers for re-authentication, and lets go of them when no authenticator will read them', async () => {
    const seen: Array<string | string[] | undefined> = []
    const env = await setup({
      authenticate: (r) => {
        seen.push(r.headers['x-tenant'])
        return r.token !== undefined ? (TOKENS[r.token] ?? null) : null
      },
    })
    expect(env.hub.authenticates).toBe(true)
    const c = await env.client({ query: 'token=tok-ada', headers: { 'x-tenant': 'acme' } })
    expect(await c.request({ type: 'auth', token: 'tok-ada' })).toMatchObject({ type: 'authenticated', userId: 'ada' })
    expect(seen).toEqual(['acme', 'acme'])

    const accepted = vi.spyOn(WsSession.prototype, 'accepted')
    const open = await setup({ authenticate: undefined })
    expect(open.hub.authenticates).toBe(false)
    const anon = await open.client({ headers: { 'x-tenant': 'acme' } })
    expect(await anon.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
    const session = accepted.mock.contexts.at(-1) as WsSession
    expect(session.headers).toEqual({})
    expect(session.userAgent === undefined || typeof session.userAgent === 'string').toBe(true)
  })

  it('closes every client with 1001 `server restarting` on close(), then refuses new handshakes', async () => {
    const env = await setup()
    const a = await env.client()
    const b = await env.client({ query: 'token=tok-ada' })
    expect(env.transport.connections).toBe(2)
    await env.transport.close()
    expect(await a.closed).toEqual({ code: 1001, reason: 'server restarting' })
    expect((await b.closed).code).toBe(1001)
    expect(env.transport.connections).toBe(0)
    expect(env.hub.connections.local()).toHaveLength(0)
    const late = env.raw()
    expect(await late.refused).toBe(503)
  })

  it('terminates sockets still open after the close timeout', async () => {
    const env = await setup()
    const stuck = await env.client()
    ;(stuck.ws as unknown as { _socket: Socket })._socket.pause() // never reads the close frame
    const started = Date.now()
    await env.transport.close({ timeoutMs: 150 })
    expect(Date.now() - started).toBeGreaterThanOrEqual(140)
    expect(env.transport.connections).toBe(0)
    expect(env.hub.connections.local()).toHaveLength(0)
  })

  it('builds frames byte for byte as ws does (text and binary, every length class)', () => {
    const lengths = [0, 1, 125, 126, 127, 65535, 65536, 70000]
    for (const n of lengths) {
      for (const text of [`${'é'.repeat(Math.floor(n / 4))}${'a'.repeat(n - 2 * Math.floor(n / 4))}`, 'x'.repeat(n)]) {
        const expected = Buffer.concat(Sender.frame(Buffer.from(text), { fin: true, rsv1: false, opcode: 1, mask: false, readOnly: true }))
        expect(buildFrame(new Outbound(text, Buffer.byteLength(text))).equals(expected), `text of ${Buffer.byteLength(text)} bytes`).toBe(true)
      }
      const bytes = randomBytes(n)
      const expected = Buffer.concat(Sender.frame(bytes, { fin: true, rsv1: false, opcode: 2, mask: false, readOnly: true }))
      expect(buildFrame(new Outbound(bytes, n)).equals(expected), `binary of ${n} bytes`).toBe(true)
    }
    // A text whose stated length is too long for it is framed by ws, from its real bytes.
    const odd = buildFrame(new Outbound('héllo', 9))
    expect(odd.equals(Buffer.concat(Sender.frame(Buffer.from('héllo'), { fin: true, rsv1: false, opcode: 1, mask: false, readOnly: true })))).toBe(true)
  })

  it('frames a fan-out message once for 50 subscribers (shared frame on outbound.memo.ws)', async () => {
    const env = await setup()
    const subs = await Promise.all(Array.from({ length: 50 }, () => env.client()))
    await Promise.all(subs.map((s) => s.request({ type: 'subscribe', channel: 'public:fan' })))
    const sendSpy = vi.spyOn(WsSession.prototype, 'send')
    const writeSpy = vi.spyOn(NetSocket.prototype, 'write')
    await env.hub.publish('public:fan', 'tick', { n: 42 })
    await Promise.all(subs.map((s) => s.waitFor((f) => f.event === 'tick')))
    // Every session got the same Outbound, memoized with one frame.
    const outbounds = new Set(sendSpy.mock.calls.map(([o]) => o))
    expect(outbounds.size).toBe(1)
    const [outbound] = [...outbounds]
    const frame = outbound!.memo?.ws
    expect(Buffer.isBuffer(frame)).toBe(true)
    expect(sendSpy).toHaveBeenCalledTimes(50)
    // …and that very buffer is what went to each of the 50 sockets: framed once, written 50 times.
    expect(writeSpy.mock.calls.filter(([chunk]) => chunk === frame)).toHaveLength(50)
  })

  it('keeps order and batches a burst of frames written in one tick', async () => {
    const env = await setup()
    const pub = await env.client({ query: 'token=tok-ada' })
    const sub = await env.client()
    await sub.request({ type: 'subscribe', channel: 'public:burst' })
    const corks = vi.spyOn(NetSocket.prototype, 'cork')
    const all = Array.from({ length: 200 }, (_, i) => env.hub.publish('public:burst', 'b', { i }))
    await Promise.all(all)
    await until(() => sub.frames.filter((f) => f.event === 'b').length === 200, 5_000, 'burst')
    expect(sub.frames.filter((f) => f.event === 'b').map((f) => (f.data as { i: number }).i)).toEqual(Array.from({ length: 200 }, (_, i) => i))
    // Published in one tick: the first frame goes straight out, the rest ride one cork.
    expect(corks.mock.calls.length).toBeGreaterThanOrEqual(1)
    expect(corks.mock.calls.length).toBeLessThan(20)
    expect(pub.ws.readyState).toBe(WebSocket.OPEN)
  })
})
