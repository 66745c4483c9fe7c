import { randomBytes } from 'node:crypto'
import { createServer, request, type Server } from 'node:http'
import { Agent } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { connect as netConnect } from 'node:net'
import { createHub, createTokenAuthenticator, type Hub, type HubOptions, silentLogger } from '@tidings/core'
import { createEdgeGuard } from '@tidings/http-kit'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'
import { createWsTransport, JSON_SUBPROTOCOL, type WsTransport, type WsTransportOptions } from '../src/index.js'

type Frame = Record<string, unknown> & { type: string }

interface Env {
  readonly hub: Hub
  readonly transport: WsTransport
  readonly server: Server
  readonly port: number
  readonly url: string
}

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function setup(wsOptions: WsTransportOptions = {}, hubOptions: HubOptions = {}): Promise<Env> {
  const hub = createHub({ logger: silentLogger, authenticate: createTokenAuthenticator({ 'tok-ada': { userId: 'ada' } }), ...hubOptions })
  const transport = createWsTransport(hub, wsOptions)
  const server = createServer((_req, res) => {
    res.setHeader('content-type', 'text/plain')
    res.end('app')
  })
  const detach = transport.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  cleanups.push(async () => {
    await transport.close({ timeoutMs: 200 })
    detach()
    await hub.close()
    server.closeAllConnections()
    await new Promise<void>((r) => server.close(() => r()))
  })
  return { hub, transport, server, port, url: `ws://127.0.0.1:${port}/realtime` }
}

interface Outcome {
  readonly ws: WebSocket
  readonly frames: Frame[]
  /** 'open' on a completed handshake, else the HTTP status of the refusal (0: connection lost). */
  readonly result: Promise<{ status: number | 'open'; headers: Record<string, string | string[] | undefined> }>
  readonly closed: Promise<{ code: number; reason: string }>
}

function connectWs(url: string, options: WebSocket.ClientOptions = {}): Outcome {
  const ws = new WebSocket(url, JSON_SUBPROTOCOL, { perMessageDeflate: false, ...options })
  cleanups.push(() => ws.terminate())
  const frames: Frame[] = []
  ws.on('message', (data) => frames.push(JSON.parse(String(data)) as Frame))
  ws.on('error', () => {})
  const result = new Promise<{ status: number | 'open'; headers: Record<string, string | string[] | undefined> }>((resolve) => {
    ws.once('open', () => resolve({ status: 'open', headers: {} }))
    ws.once('unexpected-response', (req, res) => {
      resolve({ status: res.statusCode ?? 0, headers: res.headers })
      res.resume()
      req.destroy()
    })
    ws.once('close', () => resolve({ status: 0, headers: {} }))
  })
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: reason.toString() })))
  return { ws, frames, result, closed }
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms))

async function until(check: () => boolean, timeoutMs = 5_000, label = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${label}`)
    await tick(5)
  }
}

// ------------------------------------------------------------------------------------------

describe('ws edge: origins', () => {
  it('refuses a cross-site upgrade carrying the user cookie (Origin https://evil.example) with 403 when allowedOrigins is not set', async () => {
    const env = await setup()
    const evil = connectWs(env.url, { origin: 'https://evil.example', headers: { cookie: 'session=victim' } })
    expect((await evil.result).status).toBe(403)
    // Same-origin pages and non-browser clients (no Origin) still connect.
    const same = connectWs(env.url, { origin: `http://127.0.0.1:${env.port}` })
    expect((await same.result).status).toBe('open')
    const none = connectWs(env.url)
    expect((await none.result).status).toBe('open')
    expect(env.hub.connections.local()).toHaveLength(2)
  })

  it("lets every origin in with allowedOrigins ['*'] (explicit opt-out), and the listed ones with a list", async () => {
    const any = await setup({ allowedOrigins: ['*'] })
    expect((await connectWs(any.url, { origin: 'https://evil.example' }).result).status).toBe('open')
    const listed = await setup({ edge: { allowedOrigins: ['https://app.example.com'] } })
    expect((await connectWs(listed.url, { origin: 'https://app.example.com' }).result).status).toBe('open')
    expect((await connectWs(listed.url, { origin: 'https://evil.example' }).result).status).toBe(403)
  })

  it('refuses allowedOrigins next to a shared guard (one place for origins)', async () => {
    const hub = createHub({ logger: silentLogger })
    cleanups.push(() => hub.close())
    expect(() => createWsTransport(hub, { edge: createEdgeGuard(), allowedOrigins: ['*'] })).toThrow(TypeError)
  })
})

// ------------------------------------------------------------------------------------------

describe('ws edge: per-address limits', () => {
  it('refuses the 101st open connection from 127.0.0.1 with 429 and Retry-After (defaults), and admits again after one closes', async () => {
    const env = await setup({ edge: { maxNewConnectionsPerIpPerMinute: 0 } })
    const open = Array.from({ length: 100 }, () => connectWs(env.url))
    expect((await Promise.all(open.map((o) => o.result))).every((r) => r.status === 'open')).toBe(true)
    const extra = connectWs(env.url)
    const refused = await extra.result
    expect(refused.status).toBe(429)
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    expect(env.hub.connections.local()).toHaveLength(100)
    // Closing one gives its place back, exactly once.
    open[0]!.ws.close()
    await open[0]!.closed
    await until(() => env.transport.connections === 99, 2_000, 'released')
    expect((await connectWs(env.url).result).status).toBe('open')
    expect((await connectWs(env.url).result).status).toBe(429)
  })

  it('refuses a burst past the default 100 new connections per minute from one address with 429', async () => {
    const env = await setup()
    let accepted = 0
    let refused = 0
    // 150 connections, each closed at once: never more than a few open, but all new.
    for (let i = 0; i < 150; i++) {
      const c = connectWs(env.url)
      const r = await c.result
      if (r.status === 'open') {
        accepted++
        c.ws.terminate()
      } else if (r.status === 429) refused++
    }
    expect(accepted).toBe(100)
    expect(refused).toBe(50)
  })

  it('applies a small configured per-minute limit (3), with Retry-After in seconds', async () => {
    const env = await setup({ edge: { maxNewConnectionsPerIpPerMinute: 3 } })
    for (let i = 0; i < 3; i++) {
      const c = connectWs(env.url)
      expect((await c.result).status).toBe('open')
      c.ws.close()
    }
    const r = await connectWs(env.url).result
    expect(r.status).toBe(429)
    // 3 per minute: a token comes back in about 20 s.
    expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(15)
    expect(Number(r.headers['retry-after'])).toBeLessThanOrEqual(20)
  })

  it('releases the admission when the handshake fails after it (bad subprotocol, authentication refused)', async () => {
    const env = await setup({ edge: { maxConnectionsPerIp: 2, maxNewConnectionsPerIpPerMinute: 0 } })
    for (let i = 0; i < 5; i++) {
      const bad = new WebSocket(env.url, ['mqtt'])
      bad.on('error', () => {})
      cleanups.push(() => bad.terminate())
      const status = await new Promise<number>((r) => bad.once('unexpected-response', (_req, res) => r(res.statusCode ?? 0)))
      expect(status).toBe(400)
      const refusedAuth = connectWs(`${env.url}?token=wrong`)
      expect((await refusedAuth.closed).code).toBe(4001)
    }
    await until(() => env.transport.connections === 0, 2_000, 'sessions gone')
    const a = connectWs(env.url)
    const b = connectWs(env.url)
    expect((await a.result).status).toBe('open')
    expect((await b.result).status).toBe('open')
    expect((await connectWs(env.url).result).status).toBe(429)
  })

  it('ignores X-Forwarded-For by default (a client cannot pick its address), and honours it with trustProxy', async () => {
    const strict = await setup({ edge: { maxConnectionsPerIp: 1, maxNewConnectionsPerIpPerMinute: 0 } })
    expect((await connectWs(strict.url, { headers: { 'x-forwarded-for': '10.0.0.1' } }).result).status).toBe('open')
    expect((await connectWs(strict.url, { headers: { 'x-forwarded-for': '10.0.0.2' } }).result).status).toBe(429)
    expect(strict.hub.connections.local()[0]).toMatchObject({ ip: '127.0.0.1' })

    const proxied = await setup({ edge: { maxConnectionsPerIp: 1, maxNewConnectionsPerIpPerMinute: 0, trustProxy: true } })
    expect((await connectWs(proxied.url, { headers: { 'x-forwarded-for': '10.0.0.1' } }).result).status).toBe('open')
    expect((await connectWs(proxied.url, { headers: { 'x-forwarded-for': '10.0.0.2' } }).result).status).toBe('open')
    expect((await connectWs(proxied.url, { headers: { 'x-forwarded-for': '10.0.0.1' } }).result).status).toBe(429)
    expect(proxied.hub.connections.local().map((c) => c.ip).sort()).toEqual(['10.0.0.1', '10.0.0.2'])
  })
})

// ------------------------------------------------------------------------------------------

/** A raw TCP client that sends an upgrade request one byte every `everyMs` and never finishes. */
function dribble(port: number, everyMs: number): { socket: Socket; closed: Promise<number> } {
  const started = Date.now()
  const socket = netConnect(port, '127.0.0.1')
  socket.on('error', () => {})
  const text =
    'GET /realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nX-Padding: ${'p'.repeat(10_000)}\r\n\r\n`
  let i = 0
  const timer = setInterval(() => {
    if (socket.destroyed || i >= text.length - 4) return
    socket.write(text[i++]!)
  }, everyMs)
  const closed = new Promise<number>((r) =>
    socket.once('close', () => {
      clearInterval(timer)
      r(Date.now() - started)
    }),
  )
  cleanups.push(() => {
    clearInterval(timer)
    socket.destroy()
  })
  return { socket, closed }
}

describe('ws edge: slowloris', () => {
  it('cuts 50 upgrades dribbling their headers a byte at a time at the handshake deadline, while a normal client connects meanwhile', async () => {
    const env = await setup({ handshakeTimeoutMs: 400 })
    const slow = Array.from({ length: 50 }, () => dribble(env.port, 20))
    await tick(100)
    const normal = connectWs(env.url)
    expect((await normal.result).status).toBe('open')
    const lifetimes = await Promise.all(slow.map((s) => s.closed))
    for (const t of lifetimes) {
      expect(t).toBeGreaterThanOrEqual(350)
      expect(t).toBeLessThan(1_500)
    }
    expect(normal.ws.readyState).toBe(WebSocket.OPEN)
  })

  it('does not cut the host app keep-alive connections that completed a request (idle past the deadline)', async () => {
    const env = await setup({ handshakeTimeoutMs: 200 })
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    cleanups.push(() => agent.destroy())
    const get = () =>
      new Promise<{ body: string; socket: Socket }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: env.port, path: '/app', agent }, (res) => {
          let body = ''
          res.on('data', (d: Buffer) => (body += d.toString()))
          res.on('end', () => resolve({ body, socket: req.socket as Socket }))
        })
        req.on('error', reject)
        req.end()
      })
    const first = await get()
    expect(first.body).toBe('app')
    await tick(450)
    const second = await get()
    expect(second.body).toBe('app')
    // The very same TCP connection served both.
    expect(second.socket).toBe(first.socket)
  })

  it('counts the headers in the handshake deadline: a slow authenticator gets only what is left of it', async () => {
    const env = await setup({ handshakeTimeoutMs: 600 }, { authenticate: () => new Promise(() => {}) })
    const socket = netConnect(env.port, '127.0.0.1')
    socket.on('error', () => {})
    cleanups.push(() => socket.destroy())
    const chunks: Buffer[] = []
    socket.on('data', (d: Buffer) => chunks.push(d))
    const started = Date.now()
    const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now() - started)))
    await new Promise((r) => socket.once('connect', r))
    await tick(400)
    socket.write(
      'GET /realtime?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ${JSON_SUBPROTOCOL}\r\n\r\n`,
    )
    await until(() => Buffer.concat(chunks).includes('RT_001'), 2_000, 'refusal')
    // Refused about 600 ms after the TCP connection, not 600 ms after the upgrade.
    expect(Date.now() - started).toBeLessThan(950)
    socket.destroy()
    await closed
  })
})

// ------------------------------------------------------------------------------------------

describe('ws edge: slow consumer', () => {
  const SMALL = { highWaterMark: 64 * 1024, maxQueuedBytes: 1024 * 1024, maxMessageSize: 64 * 1024 }

  /** A slow and a fast subscriber; the slow one stops reading and a publisher floods until the hub drops it (4009). */
  async function flooded(wsOptions: WsTransportOptions) {
    const env = await setup(wsOptions, { limits: SMALL })
    const slow = connectWs(env.url)
    const fast = connectWs(env.url)
    await Promise.all([slow.result, fast.result])
    await until(() => slow.frames.length > 0 && fast.frames.length > 0, 2_000, 'connected')
    for (const c of [slow, fast]) c.ws.send(JSON.stringify({ type: 'subscribe', id: 's', channel: 'public:flood' }))
    await until(() => slow.frames.some((f) => f.id === 's') && fast.frames.some((f) => f.id === 's'), 2_000, 'subscribed')
    const slowId = slow.frames[0]!.connectionId as string
    let dropped: number | undefined
    env.hub.on('disconnect', (info, e) => {
      if (info.id === slowId) dropped = e.code
    })
    const socket = (slow.ws as unknown as { _socket: Socket })._socket
    socket.pause()
    const chunk = randomBytes(16 * 1024).toString('base64')
    let published = 0
    while (dropped === undefined) {
      for (let i = 0; i < 10; i++) await env.hub.publish('public:flood', 'n', { seq: ++published, chunk })
      await tick(1)
      if (published > 20_000) throw new Error('never dropped')
    }
    expect(dropped).toBe(4009)
    // The fast subscriber got everything, and keeps receiving after the drop.
    await env.hub.publish('public:flood', 'n', { seq: ++published, chunk })
    await until(() => fast.frames.filter((f) => f.type === 'message').length === published, 10_000, 'fast subscriber')
    return { env, slow, fast, socket }
  }

  it('delivers close code 4009 to a slow consumer that resumes reading (not 1006): the keepalive does not kill a closing socket', async () => {
    // Two keepalive periods pass while the client is not reading: before the fix the unanswered
    // ping terminated the closing socket, and its close frame with it.
    const { slow, fast, socket } = await flooded({ pingIntervalMs: 500 })
    await tick(1_300)
    socket.resume()
    expect((await slow.closed).code).toBe(4009)
    expect(slow.frames.filter((f) => f.type === 'message').length).toBeGreaterThan(0)
    expect(fast.ws.readyState).toBe(WebSocket.OPEN)
  })

  it('delivers close code 4009 to a slow consumer that drains its backlog for longer than closeTimeoutMs while reading', async () => {
    // ws alone destroys a closing socket closeTimeoutMs after close(), backlog and close frame
    // included; the transport keeps it while the backlog keeps shrinking.
    const { slow, fast, socket } = await flooded({ closeTimeoutMs: 400 })
    // A trickle reader: one read (at most 64 KiB) every 15 ms.
    const started = Date.now()
    const trickle = setInterval(() => {
      socket.once('data', () => socket.pause())
      socket.resume()
    }, 15)
    cleanups.push(() => clearInterval(trickle))
    const closed = await slow.closed
    clearInterval(trickle)
    expect(Date.now() - started).toBeGreaterThan(400)
    expect(closed.code).toBe(4009)
    expect(fast.ws.readyState).toBe(WebSocket.OPEN)
  })

  it('still destroys a closing slow consumer that never reads again, within 6 × closeTimeoutMs', async () => {
    const { env, slow } = await flooded({ closeTimeoutMs: 100 })
    const started = Date.now()
    await until(() => env.transport.connections === 1, 3_000, 'slow socket destroyed')
    expect(Date.now() - started).toBeLessThan(2_000)
    slow.ws.terminate()
  })
})
