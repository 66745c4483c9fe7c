import { createServer } from 'node:http'
import type { Socket } from 'node:net'
import { createHub, type HubOptions, silentLogger } from '@tidings/core'
import { createLongPollTransport } from '@tidings/long-poll'
import { createSseTransport } from '@tidings/sse'
import { createWsTransport } from '@tidings/ws'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'
import { Realtime, type RealtimeOptions, type TransportName } from '../src/index.js'
import { listenTracked, sleep, until } from './memory-network.js'

const tokens: HubOptions = { authenticate: async (r) => (r.token?.startsWith('user:') ? { userId: r.token.slice(5) } : null) }

/** A hub on a real HTTP server (127.0.0.1, port 0) with the three transports, and ways to break the network. */
async function startServer(options: HubOptions = {}) {
  const hub = createHub({ logger: silentLogger, ...tokens, ...options })
  const ws = createWsTransport(hub, { pingIntervalMs: 0 })
  const sse = createSseTransport(hub, { reconnectMs: 20, maxBodyBytes: 64 * 1024 })
  const lp = createLongPollTransport(hub, { pollTimeoutMs: 1000, maxBodyBytes: 64 * 1024 })
  const net = { down: false, blockWebSocket: false, requests: [] as string[] }
  const server = createServer((req, res) => {
    net.requests.push(`${req.method} ${req.url}`)
    if (net.down) return void req.socket.destroy()
    void (async () => {
      if (await sse.handle(req, res)) return
      if (await lp.handle(req, res)) return
      res.writeHead(404).end()
    })()
  })
  server.on('upgrade', (req, socket: Socket, head) => {
    if (net.down || net.blockWebSocket || !ws.handleUpgrade(req, socket, head)) socket.destroy()
  })
  const { url, cut, close } = await listenTracked(server, async () => {
    await Promise.all([ws.close({ timeoutMs: 50 }), sse.close(), lp.close()])
    await hub.close()
  })
  /** `cut()` destroys every TCP connection (sockets, event streams, polls) from the server side. */
  return { hub, net, url, cut, close }
}

type Server = Awaited<ReturnType<typeof startServer>>
let server: Server | undefined
const clients: Realtime[] = []

function client(transports: TransportName[], options: Partial<RealtimeOptions> = {}): Realtime {
  const rt = new Realtime({
    url: server!.url,
    transports,
    WebSocket,
    reconnectDelay: 20,
    maxReconnectDelay: 100,
    heartbeatIntervalMs: 0,
    ...options,
  })
  clients.push(rt)
  return rt
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.disconnect()
  await server?.close()
  server = undefined
})

const TRANSPORTS: TransportName[] = ['websocket', 'sse', 'long-poll']

describe.each(TRANSPORTS)('over %s', (transport) => {
  it('subscribes, publishes, and tracks presence', async () => {
    server = await startServer()
    const alice = client([transport], { auth: 'user:alice' })
    const bob = client([transport], { auth: async () => 'user:bob' })
    const a = alice.channel('presence:lobby', { presence: { name: 'Alice' } })
    const b = bob.channel('presence:lobby', { presence: { name: 'Bob' } })
    await a.subscribe()
    expect(alice.transport).toBe(transport)
    expect(alice.userId).toBe('alice')
    const joins: string[] = []
    const texts: unknown[] = []
    a.on('presence:join', (m) => joins.push(m.id))
    a.on('chat', (data: unknown) => texts.push(data))
    await b.subscribe()
    await until(() => joins.length === 1)
    expect(joins).toEqual(['bob'])
    const r = await b.send('chat', { text: 'hi' })
    expect(r.offset).toBe(1)
    await until(() => texts.length === 1)
    expect(texts).toEqual([{ text: 'hi' }])
    const me = await a.updatePresence({ name: 'Alice 2' }, 'away')
    expect(me).toMatchObject({ id: 'alice', state: 'away' })
    const snapshot = await b.getPresence()
    expect(snapshot.users.map((u) => [u.id, u.state]).sort()).toEqual([['alice', 'away'], ['bob', 'online']])
    await expect(bob.channel('private:user-alice').subscribe()).rejects.toMatchObject({ code: 'RT_003' })
  })

  it('a refused token is reported and not retried', async () => {
    server = await startServer()
    const rt = client([transport], { auth: 'nobody' })
    const errors: string[] = []
    rt.on('error', (e) => errors.push((e as { code?: string }).code ?? ''))
    await until(() => rt.state === 'disconnected')
    expect(errors).toEqual(['RT_002'])
  })

  it('survives connections cut by the server, and a server that is down for a while: nothing lost, nothing twice', async () => {
    server = await startServer()
    const s = server
    const rt = client([transport], { auth: 'user:alice', ackIntervalMs: 20 })
    const news = rt.channel('public:news')
    const inbox = rt.channel('private:user-alice')
    const got: number[] = []
    const gotInbox: number[] = []
    news.on('message', (m) => got.push(m.offset!))
    inbox.on('message', (m) => gotInbox.push(m.offset!))
    await news.subscribe()
    await inbox.subscribe()
    const connections: string[] = []
    rt.on('connected', (i) => connections.push(i.connectionId))

    let n = 0
    const publish = async (count: number) => {
      for (let i = 0; i < count; i++) {
        n++
        await s.hub.publish('public:news', 'tick', n)
        await s.hub.publish('private:user-alice', 'tick', n)
        await sleep(2)
      }
    }
    await publish(10)
    s.cut()
    await publish(10)
    s.cut()
    await publish(10)
    await until(() => got.length === 30 && gotInbox.length === 30, 5000, 'messages after the cuts')
    // A WebSocket reconnects (a new hub connection each time); SSE re-attaches its stream to the
    // session with Last-Event-ID and long-poll polls again with its cursor: the same hub connection.
    expect(connections).toHaveLength(transport === 'websocket' ? 2 : 0)

    // Down: every request and socket is refused until it is back; the client reconnects and resumes.
    s.net.down = true
    s.cut()
    const sends = [news.send('mine', 'a'), news.send('mine', 'b')]
    await publish(10)
    await sleep(transport === 'long-poll' ? 900 : 150)
    expect(rt.state).not.toBe('connected')
    s.net.down = false
    await publish(10)
    const results = await Promise.all(sends)
    await until(() => got.length === 50 && gotInbox.length === 50, 8000, 'messages after the outage')
    await sleep(50)
    const mine = results.map((r) => r.offset)
    expect(got).toEqual(Array.from({ length: 52 }, (_, i) => i + 1).filter((o) => !mine.includes(o)))
    expect(gotInbox).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
    expect(rt.state).toBe('connected')
    expect(connections.length).toBeGreaterThanOrEqual(1)
    const history = await s.hub.channel('public:news').history({ limit: 1000 })
    expect(history.messages.filter((m) => m.event === 'mine').map((m) => m.data)).toEqual(['a', 'b'])
    // The personal channel's cursor follows the acknowledgments.
    await sleep(50)
    expect(await s.hub.channel('private:user-alice').deliveredTo(50)).toEqual(['alice'])
  })

  it('rejects an oversized message with RT_005 and stays connected', async () => {
    server = await startServer()
    const rt = client([transport], { auth: 'user:alice' })
    const ch = rt.channel('public:big')
    await ch.subscribe()
    // Over the hub's 128 KiB frame limit (and, over HTTP, over the 64 KiB body limit: HTTP 413).
    await expect(ch.send('big', 'x'.repeat(200_000))).rejects.toMatchObject({ code: 'RT_005' })
    expect((await ch.send('small', 'ok')).offset).toBe(1)
    expect(rt.state).toBe('connected')
  })

  it('does not reconnect when the hub disconnects it on purpose', async () => {
    server = await startServer()
    const rt = client([transport], { auth: 'user:alice' })
    await until(() => rt.state === 'connected')
    const closes: number[] = []
    rt.on('disconnected', (i) => closes.push(i.code))
    await server.hub.connections.disconnect(rt.connectionId!)
    await until(() => rt.state === 'disconnected')
    expect(closes).toEqual([4000])
  })
})

describe('fallback and upgrade over real sockets', () => {
  it('falls back to SSE when WebSocket is blocked, then switches back once it works', async () => {
    server = await startServer()
    server.net.blockWebSocket = true
    const s = server
    const rt = client(['websocket', 'sse', 'long-poll'], { auth: 'user:alice', upgradeIntervalMs: 100 })
    const transports: string[] = []
    rt.on('connected', (i) => transports.push(i.transport))
    const ch = rt.channel('public:live')
    const got: number[] = []
    ch.on('message', (m) => got.push(m.offset!))
    await ch.subscribe()
    expect(rt.transport).toBe('sse')
    for (let i = 1; i <= 40; i++) {
      await s.hub.publish('public:live', 'tick', i)
      if (i === 10) s.net.blockWebSocket = false
      await sleep(8)
    }
    await until(() => rt.transport === 'websocket' && got.length === 40, 5000, 'upgrade')
    expect(transports).toEqual(['sse', 'websocket'])
    expect(got).toEqual(Array.from({ length: 40 }, (_, i) => i + 1))
    expect(s.hub.connections.local({ userId: 'alice' }).map((c) => c.transport)).toContain('ws')
  })

  it('falls back to long-poll when the others cannot open', async () => {
    server = await startServer()
    server.net.blockWebSocket = true
    const rt = client(['websocket', 'long-poll'], { auth: 'user:alice', upgradeIntervalMs: 0 })
    await rt.channel('public:x').subscribe()
    expect(rt.transport).toBe('long-poll')
  })
})

describe('SSE through EventSource (as in browsers)', () => {
  it('receives, publishes, resumes after a cut (a new session, from its offsets: an EventSource cannot carry the secret), and stops on the hub close', async () => {
    server = await startServer()
    const s = server
    const { spawn } = await import('node:child_process')
    const { fileURLToPath } = await import('node:url')
    const script = fileURLToPath(new URL('./fixtures/eventsource-client.ts', import.meta.url))
    const child = spawn(process.execPath, ['--experimental-eventsource', '--no-warnings', '--import', 'tsx', script, s.url, '9'], {
      env: { ...process.env, NODE_OPTIONS: '--conditions=source' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const lines: Record<string, unknown>[] = []
    let stderr = ''
    let buffer = ''
    child.stdout.on('data', (d: Buffer) => {
      buffer += d.toString()
      const parts = buffer.split('\n')
      buffer = parts.pop()!
      for (const p of parts) if (p) lines.push(JSON.parse(p) as Record<string, unknown>)
    })
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    try {
      await until(() => lines.some((l) => 'published' in l), 15_000, `the EventSource client (${stderr})`)
      expect(lines[0]).toEqual({ subscribed: 'public:es', eventSource: 'function' })
      for (let i = 0; i < 5; i++) await s.hub.publish('public:es', 'tick', i)
      await sleep(100)
      s.cut()
      for (let i = 0; i < 4; i++) await s.hub.publish('public:es', 'tick', i)
      await until(() => lines.some((l) => 'got' in l), 10_000, `messages (${JSON.stringify(lines)} ${stderr})`)
      // Its own publish (offset 1) is not echoed; the 9 others arrive once each, across the cut.
      expect(lines.find((l) => 'got' in l)).toEqual({ got: [2, 3, 4, 5, 6, 7, 8, 9, 10] })
      expect(lines.find((l) => 'published' in l)).toEqual({ published: 1 })
      await s.hub.connections.disconnectUser('es')
      // The cut was a 1006 (and a reconnect); the server's close is 4000.
      await until(() => lines.some((l) => l.disconnected === 4000), 5000, 'the close')
      expect(lines.filter((l) => 'disconnected' in l)).toEqual([{ disconnected: 1006 }, { disconnected: 4000 }])
    } finally {
      child.kill()
    }
  })
})
