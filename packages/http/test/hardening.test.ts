import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { type AddressInfo, connect as netConnect } from 'node:net'
import { createHub, createTokenAuthenticator, type Hub, silentLogger } from '@tidings/core'
import { createRealtime, type Realtime, type RealtimeOptions } from '@tidings/http'
import express from 'express'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'

const KEY = 'admin-secret'
const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const TOKENS = { 'tok-ada': { userId: 'ada' } }

function hub(): Hub {
  const h = createHub({ logger: silentLogger, authenticate: createTokenAuthenticator(TOKENS) })
  cleanups.push(() => h.close())
  return h
}

async function listen(server: Server): Promise<{ base: string; port: number }> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => {
    server.closeAllConnections()
    return new Promise((r) => server.close(() => r(undefined)))
  })
  const port = (server.address() as AddressInfo).port
  return { base: `http://127.0.0.1:${port}`, port }
}

async function serve(options: RealtimeOptions, app?: (req: unknown, res: { end(s: string): void }) => void): Promise<{ base: string; port: number; rt: Realtime }> {
  const server = createServer(app as never)
  const rt = createRealtime(options)
  cleanups.push(() => rt.close())
  rt.attach(server)
  return { ...(await listen(server)), rt }
}

const admin = (base: string, path: string, init: RequestInit = {}, key = KEY) =>
  fetch(`${base}/realtime${path}`, { ...init, headers: { 'content-type': 'application/json', 'x-api-key': key, ...(init.headers as Record<string, string> | undefined) } })

/** Opens a WebSocket; resolves with 'open' and the first frame, or the HTTP status of a refusal. */
function open(url: string, options: WebSocket.ClientOptions = {}): Promise<{ status: number | 'open'; first?: Record<string, unknown>; ws: WebSocket }> {
  const ws = new WebSocket(url, 'tidings.v1.json', options)
  cleanups.push(() => ws.terminate())
  ws.on('error', () => {})
  return new Promise((resolve) => {
    ws.once('message', (data) => resolve({ status: 'open', first: JSON.parse(String(data)) as Record<string, unknown>, ws }))
    ws.once('unexpected-response', (req, res) => {
      resolve({ status: res.statusCode ?? 0, ws })
      res.resume()
      req.destroy()
    })
    ws.once('close', (code) => resolve({ status: code, ws }))
  })
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms))

// ------------------------------------------------------------------------------------------

describe('admin API hardening', () => {
  it('answers presence and kick for a channel no pattern matches with 404 RT_004 (as broadcast and history do)', async () => {
    const { base } = await serve({ hub: hub(), apiKey: KEY })
    for (const [path, init] of [
      ['/channels/nowhere/presence', {}],
      ['/channels/nowhere/kick', { method: 'POST', body: JSON.stringify({ userId: 'ada' }) }],
      ['/channels/nowhere/broadcast', { method: 'POST', body: JSON.stringify({ event: 'x' }) }],
      ['/channels/nowhere/history', {}],
    ] as const) {
      const r = await admin(base, path, init)
      expect(r.status, path).toBe(404)
      expect(await r.json(), path).toMatchObject({ type: 'error', code: 'RT_004' })
    }
    // Matched channels still answer 200, including one that keeps no history (presence).
    const p = await admin(base, `/channels/${encodeURIComponent('presence:lobby')}/presence`)
    expect(p.status).toBe(200)
    expect(await p.json()).toMatchObject({ count: 0 })
    const k = await admin(base, `/channels/${encodeURIComponent('public:news')}/kick`, { method: 'POST', body: JSON.stringify({ userId: 'ada' }) })
    expect(await k.json()).toEqual({ removed: 0 })
  })

  it('answers bad percent-encoding in a path with 400 RT_007, not 503 internal error', async () => {
    const { base } = await serve({ hub: hub(), apiKey: KEY })
    for (const [path, method] of [
      ['/channels/%E0%A4%A/presence', 'GET'],
      ['/channels/%ZZ/history', 'GET'],
      ['/connections/%E0%A4%A', 'DELETE'],
      ['/users/%C0/connections', 'DELETE'],
    ] as const) {
      const r = await admin(base, path, { method })
      expect(r.status, path).toBe(400)
      expect(await r.json(), path).toMatchObject({ type: 'error', code: 'RT_007' })
    }
  })

  it('accepts only an exact API key (constant-time comparison of digests): prefixes, extensions and other keys are refused', async () => {
    const { base } = await serve({ hub: hub(), apiKey: [KEY, 'second-key'] })
    expect((await admin(base, '/metrics')).status).toBe(200)
    expect((await admin(base, '/metrics', {}, 'second-key')).status).toBe(200)
    for (const wrong of [KEY.slice(0, -1), `${KEY}x`, 'admin-secreT', 'x'.repeat(KEY.length), 'é']) {
      const r = await admin(base, '/metrics', {}, wrong)
      expect(r.status, wrong).toBe(401)
      expect(await r.json()).toMatchObject({ code: 'RT_002' })
    }
  })

  it('holds every admin body to the decode budget: 5,000 levels deep is 400 RT_007 before zod, and the server keeps serving', async () => {
    const { base } = await serve({ hub: hub(), apiKey: KEY })
    const deep = `${'['.repeat(5_000)}${']'.repeat(5_000)}`
    for (const [path, body] of [
      ['/channels/public%3Anews/broadcast', `{"event":"x","data":${deep}}`],
      ['/broadcast', `{"event":"x","to":"all","where":${deep}}`],
      ['/channels/public%3Anews/kick', `{"userId":${deep}}`],
    ] as const) {
      const r = await admin(base, path, { method: 'POST', body })
      expect(r.status, path).toBe(400)
      const e = (await r.json()) as { code: string; message: string }
      expect(e.code).toBe('RT_007')
      expect(e.message).toMatch(/deeper than 32/)
    }
    // 32 levels are fine.
    const ok = await admin(base, '/channels/public%3Anews/broadcast', { method: 'POST', body: `{"event":"x","data":${'['.repeat(31)}${']'.repeat(31)}}` })
    expect(ok.status).toBe(200)
  })

  it('holds a body already parsed by Express (req.body) to the decode budget too', async () => {
    const app = express()
    app.use(express.json({ limit: '1mb' }))
    const rt = createRealtime({ hub: hub(), apiKey: KEY })
    cleanups.push(() => rt.close())
    app.use(rt.express())
    const server = createServer(app)
    const { base } = await listen(server)
    const deep = `${'{"a":'.repeat(100)}1${'}'.repeat(100)}`
    const r = await admin(base, '/channels/public%3Anews/broadcast', { method: 'POST', body: `{"event":"x","data":${deep}}` })
    expect(r.status).toBe(400)
    expect(await r.json()).toMatchObject({ code: 'RT_007' })
  })
})

// ------------------------------------------------------------------------------------------

describe('createRealtime: client authentication', () => {
  it('lets a client with auth: token in when createRealtime is given `authenticate` (the admin apiKey is a separate thing)', async () => {
    const { base } = await serve({ apiKey: KEY, authenticate: createTokenAuthenticator(TOKENS), hubOptions: { logger: silentLogger } })
    const ok = await open(`${base.replace('http', 'ws')}/realtime?token=tok-ada`)
    expect(ok.first).toMatchObject({ type: 'connected', userId: 'ada' })
    const bad = await open(`${base.replace('http', 'ws')}/realtime?token=nope`)
    expect(bad.first).toMatchObject({ type: 'error', code: 'RT_002' })
    // The admin key is not a client credential.
    const adminAsClient = await open(`${base.replace('http', 'ws')}/realtime?token=${KEY}`)
    expect(adminAsClient.first).toMatchObject({ type: 'error', code: 'RT_002' })
  })

  it('refuses `authenticate` or `hubOptions` next to `hub` (they would be ignored silently)', () => {
    expect(() => createRealtime({ hub: hub(), authenticate: createTokenAuthenticator(TOKENS) })).toThrow(TypeError)
    expect(() => createRealtime({ hub: hub(), hubOptions: {} })).toThrow(TypeError)
  })
})

// ------------------------------------------------------------------------------------------

describe('createRealtime: edge', () => {
  it('refuses a cross-site WebSocket upgrade with 403 by default, and takes origins from edge.allowedOrigins', async () => {
    const { base } = await serve({ hub: hub() })
    const url = `${base.replace('http', 'ws')}/realtime`
    expect((await open(url, { origin: 'https://evil.example', headers: { cookie: 'sid=victim' } })).status).toBe(403)
    expect((await open(url)).status).toBe('open')

    const listed = await serve({ hub: hub(), edge: { allowedOrigins: ['https://app.example.com'] } })
    const url2 = `${listed.base.replace('http', 'ws')}/realtime`
    expect((await open(url2, { origin: 'https://app.example.com' })).status).toBe('open')
    expect((await open(url2, { origin: 'https://evil.example' })).status).toBe(403)
    expect(() => createRealtime({ hub: hub(), websocket: { allowedOrigins: ['*'] } as never })).toThrow(TypeError)
  })

  it('applies edge per-address limits to WebSocket upgrades: 429 with Retry-After past maxConnectionsPerIp', async () => {
    const { base } = await serve({ hub: hub(), edge: { maxConnectionsPerIp: 3 } })
    const url = `${base.replace('http', 'ws')}/realtime`
    for (let i = 0; i < 3; i++) expect((await open(url)).status).toBe('open')
    const ws = new WebSocket(url, 'tidings.v1.json')
    cleanups.push(() => ws.terminate())
    ws.on('error', () => {})
    const res = await new Promise<{ status: number; retryAfter: string | undefined }>((r) =>
      ws.once('unexpected-response', (_req, res) => r({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] as string | undefined })),
    )
    expect(res.status).toBe(429)
    expect(Number(res.retryAfter)).toBeGreaterThanOrEqual(1)
  })

  it('shares ONE guard between the transports: a WebSocket and an SSE stream count against the same per-address limit', async () => {
    const { base } = await serve({ hub: hub(), edge: { maxConnectionsPerIp: 1 } })
    expect((await open(`${base.replace('http', 'ws')}/realtime`)).status).toBe('open')
    const controller = new AbortController()
    cleanups.push(() => controller.abort())
    const sse = await fetch(`${base}/realtime/sse`, { signal: controller.signal })
    expect(sse.status).toBe(429)
  })
})

// ------------------------------------------------------------------------------------------

function dribble(port: number): Promise<number> {
  const started = Date.now()
  const socket = netConnect(port, '127.0.0.1')
  socket.on('error', () => {})
  const text = `GET /realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nX-Pad: ${'p'.repeat(5_000)}`
  let i = 0
  const timer = setInterval(() => {
    if (!socket.destroyed && i < text.length) socket.write(text[i++]!)
  }, 20)
  cleanups.push(() => {
    clearInterval(timer)
    socket.destroy()
  })
  return new Promise((r) =>
    socket.once('close', () => {
      clearInterval(timer)
      r(Date.now() - started)
    }),
  )
}

describe('createRealtime: slowloris', () => {
  it('cuts connections dribbling an upgrade request at websocket.handshakeTimeoutMs (attach), while the app and WebSockets are served meanwhile', async () => {
    const { base, port } = await serve({ hub: hub(), websocket: { handshakeTimeoutMs: 400 } }, (_req, res) => res.end('app'))
    const slow = Array.from({ length: 30 }, () => dribble(port))
    await tick(100)
    expect(await (await fetch(`${base}/app`)).text()).toBe('app')
    expect((await open(`${base.replace('http', 'ws')}/realtime`)).status).toBe('open')
    for (const t of await Promise.all(slow)) {
      expect(t).toBeGreaterThanOrEqual(350)
      expect(t).toBeLessThan(1_500)
    }
  })

  it('cuts them on the Express path too (realtime.upgrades(server))', async () => {
    const app = express()
    const rt = createRealtime({ hub: hub(), websocket: { handshakeTimeoutMs: 300 } })
    cleanups.push(() => rt.close())
    app.use(rt.express())
    const server = createServer(app)
    rt.upgrades(server)
    const { port } = await listen(server)
    const lifetimes = await Promise.all(Array.from({ length: 10 }, () => dribble(port)))
    for (const t of lifetimes) expect(t).toBeLessThan(1_200)
  })
})
