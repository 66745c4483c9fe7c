/**
 * The transport switch, end to end over real sockets: a client with all three transports,
 * connected over WebSocket and subscribed to an at-least-once channel, while the server publishes
 * a numbered stream every 20 ms. Mid-stream the WebSocket is cut and blocked (the client falls back
 * to SSE), then SSE too (it falls back to long-poll), then both come back (it returns to
 * WebSocket). Across all of it the application must see every message exactly once, in order.
 */
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http'
import type { Duplex } from 'node:stream'
import { createHub, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'
import { Realtime } from '../src/index.js'
import { listenTracked, sleep } from './memory-network.js'

const CHANNEL = 'orders:stream'

/** How SSE is blocked: the server answers 503 (as a proxy or a load balancer would), or resets the connections. */
type SseBlock = 'http-503' | 'connection-reset'

async function startServer(sseBlock: SseBlock) {
  const hub = createHub({
    logger: silentLogger,
    authenticate: async (r) => (r.token?.startsWith('user:') ? { userId: r.token.slice(5) } : null),
    channels: { 'orders:*': { subscribe: 'authenticated', publish: 'authenticated', delivery: 'at-least-once' } },
    delivery: { ackTimeoutMs: 500 },
  })
  const realtime = createRealtime({
    hub,
    apiKey: 'switch-test-key',
    websocket: { pingIntervalMs: 0 },
    sse: { reconnectMs: 50 },
    longPoll: { pollTimeoutMs: 1000 },
  })
  const server = createServer()
  realtime.attach(server)

  const blocked = { websocket: false, sse: false }
  const upgraded = new Set<Duplex>()
  const streams = new Set<ServerResponse>()
  // Put a gate in front of what attach() installed.
  const onRequest = server.listeners('request') as Array<(req: IncomingMessage, res: ServerResponse) => void>
  const onUpgrade = server.listeners('upgrade') as Array<(req: IncomingMessage, socket: Duplex, head: Buffer) => void>
  server.removeAllListeners('request')
  server.removeAllListeners('upgrade')
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]!
    const sse = path === '/realtime/sse' || path.startsWith('/realtime/sse/')
    if (sse && blocked.sse) {
      if (sseBlock === 'connection-reset') return void req.socket.destroy()
      res.writeHead(503, { 'content-type': 'text/plain', connection: 'close' }).end('service unavailable')
      return
    }
    if (sse && req.method === 'GET') {
      streams.add(res)
      res.on('close', () => streams.delete(res))
    }
    for (const l of onRequest) l.call(server, req, res)
  })
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (blocked.websocket) return void socket.destroy()
    upgraded.add(socket)
    socket.on('close', () => upgraded.delete(socket))
    for (const l of onUpgrade) l.call(server, req, socket, head)
  })

  const { url, close } = await listenTracked(server, async () => {
    await realtime.close()
    await hub.close()
  })
  return {
    hub,
    url,
    /** Refuse WebSocket upgrades from now on, and cut the open WebSockets. */
    blockWebSocket() {
      blocked.websocket = true
      for (const s of upgraded) s.destroy()
    },
    /** Refuse SSE from now on (streams and posts), and cut the open event streams. */
    blockSse() {
      blocked.sse = true
      for (const res of streams) res.destroy()
    },
    unblock() {
      blocked.websocket = false
      blocked.sse = false
    },
    close,
  }
}

type Server = Awaited<ReturnType<typeof startServer>>
let server: Server | undefined
let rt: Realtime | undefined
let stopPublisher: (() => Promise<void>) | undefined

afterEach(async () => {
  await stopPublisher?.()
  stopPublisher = undefined
  rt?.disconnect()
  rt = undefined
  await server?.close()
  server = undefined
})

/** Poll until `check` holds; on timeout, fail with `describe()` as it is then. */
async function waitFor(check: () => boolean, timeoutMs: number, describe: () => string): Promise<void> {
  const start = Date.now()
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${describe()}`)
    await sleep(10)
  }
}

/** Consecutive repeats removed: [a, a, b] → [a, b]. */
const squeeze = (list: readonly string[]) => list.filter((t, i) => i === 0 || list[i - 1] !== t)

describe('transport switch under a continuous stream', () => {
  for (const sseBlock of ['http-503', 'connection-reset'] as const) {
    it(`websocket → sse → long-poll → websocket (SSE blocked by ${sseBlock}): every message once, in order`, { timeout: 40_000 }, async () => {
      server = await startServer(sseBlock)
      const s = server
      const client = (rt = new Realtime({
        url: s.url,
        auth: 'user:alice',
        WebSocket,
        upgradeIntervalMs: 150,
        reconnectDelay: 20,
        maxReconnectDelay: 100,
        heartbeatIntervalMs: 0,
        ackIntervalMs: 20,
      }))
      const transports: string[] = []
      client.on('connected', (i) => transports.push(i.transport))
      const received: number[] = []
      const ch = client.channel(CHANNEL)
      ch.on('message', (m) => received.push(m.data as number))
      const sub = await ch.subscribe()
      expect(sub.delivery).toBe('at-least-once')
      expect(client.transport).toBe('websocket')

      // The publisher: one numbered message every 20 ms until stopped.
      let published = 0
      let running = true
      const publisher = (async () => {
        while (running) {
          await s.hub.publish(CHANNEL, 'n', published + 1)
          published++
          await sleep(20)
        }
      })()
      stopPublisher = async () => {
        running = false
        await publisher
      }
      const closes: string[] = []
      client.on('disconnected', (i) => closes.push(`${i.code} ${i.reason}`))
      const status = () =>
        `now ${client.transport ?? 'none'}, state ${client.state}, connections ${transports.join(' → ')}, closes: ${closes.slice(-3).join('; ')}${closes.length > 3 ? ` (${closes.length} in all)` : ''}`
      /** Wait until the application has seen `count` more messages. */
      const moreMessages = (count: number, what: string) => {
        const target = received.length + count
        return waitFor(() => received.length >= target, 8000, () => `${count} more messages ${what} (got ${received.length}/${target}; ${status()})`)
      }
      const phase = async (transport: string, what: string) => {
        await waitFor(() => client.transport === transport && client.state === 'connected', 8000, () => `${what}: transport ${transport} (${status()})`)
        await moreMessages(10, `over ${transport}`)
      }

      await moreMessages(10, 'over websocket')

      s.blockWebSocket()
      await phase('sse', 'fallback after the WebSocket was cut and blocked')

      s.blockSse()
      await phase('long-poll', 'fallback after SSE was blocked too')

      s.unblock()
      await phase('websocket', 'switch back once both work again')

      await stopPublisher()
      stopPublisher = undefined
      await waitFor(() => received.length >= published, 8000, () => `the last messages (${received.length}/${published}; ${status()})`)
      await sleep(200) // anything repeated late would show up now

      const seen = new Set(received)
      const lost = Array.from({ length: published }, (_, i) => i + 1).filter((n) => !seen.has(n))
      const duplicates = received.length - seen.size
      const reorders = received.filter((n, i) => i > 0 && n < received[i - 1]!).length
      console.log(
        `[transport switch, SSE ${sseBlock}] published ${published}, received ${received.length}: ` +
          `${lost.length} lost, ${duplicates} duplicates, ${reorders} reorders; connections ${transports.join(' → ')}; ` +
          `hub: redelivered ${s.hub.metrics().redelivered}, alice's connections ${s.hub.connections.local({ userId: 'alice' }).map((c) => c.transport).join(', ')}`,
      )
      expect(squeeze(transports)).toEqual(['websocket', 'sse', 'long-poll', 'websocket'])
      expect(client.transport).toBe('websocket')
      expect({ lost: lost.length, duplicates, reorders }).toEqual({ lost: 0, duplicates: 0, reorders: 0 })
      expect(received).toEqual(Array.from({ length: published }, (_, i) => i + 1))
      // The client is on a WebSocket connection of the hub, subscribed.
      const live = s.hub.connections.local({ userId: 'alice' }).find((c) => c.id === client.connectionId)
      expect(live?.transport).toBe('ws')
      expect(live?.channels).toContain(CHANNEL)
    })
  }
})
