import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { createHub, type Hub, type HubOptions, silentLogger } from '@tidings/core'
import { createSseTransport } from '@tidings/sse'
import { createWsTransport } from '@tidings/ws'
import WebSocket from 'ws'
import { listenTracked } from './memory-network.js'

/** Tokens `user:<id>` (optionally `user:<id>;<anything>`) authenticate as that user. */
export const userTokenAuth: HubOptions['authenticate'] = async (r) => (r.token?.startsWith('user:') ? { userId: r.token.slice(5).split(';')[0]! } : null)

export type AppRoute = (req: IncomingMessage, res: ServerResponse) => boolean | Promise<boolean>

/**
 * A hub (given, or made with `options`) on a real HTTP server on loopback, with the WebSocket and
 * SSE transports and, first, the app's own routes (e.g. a channel-authorization endpoint).
 */
export async function startRealServer(setup: { hub?: Hub; options?: HubOptions; app?: AppRoute } = {}) {
  const hub = setup.hub ?? createHub({ logger: silentLogger, authenticate: userTokenAuth, ...setup.options })
  const ws = createWsTransport(hub, { pingIntervalMs: 0 })
  const sse = createSseTransport(hub, { reconnectMs: 20 })
  const server = createServer((req, res) => {
    void (async () => {
      if (setup.app && (await setup.app(req, res))) return
      if (await sse.handle(req, res)) return
      res.writeHead(404).end()
    })()
  })
  server.on('upgrade', (req, socket: Socket, head) => {
    if (!ws.handleUpgrade(req, socket, head)) socket.destroy()
  })
  const { url, cut, close } = await listenTracked(server, async () => {
    await Promise.all([ws.close({ timeoutMs: 50 }), sse.close()])
    await hub.close()
  })
  return { hub, url, cut, close }
}

export type RealServer = Awaited<ReturnType<typeof startRealServer>>

/** A bare WebSocket client (the `ws` package, no SDK) that subscribes and records every text frame it is sent. */
export async function rawSubscriber(url: string, token: string, channel: string): Promise<{ frames: string[]; close(): void }> {
  const frames: string[] = []
  const socket = new WebSocket(`${url.replace(/^http/, 'ws')}?token=${encodeURIComponent(token)}`, 'tidings.v1.json')
  socket.on('message', (data) => frames.push(String(data)))
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject)
    socket.once('open', () => resolve())
  })
  socket.send(JSON.stringify({ type: 'subscribe', id: 1, channel }))
  const start = Date.now()
  while (!frames.some((f) => f.includes('"subscribed"'))) {
    if (Date.now() - start > 3000) throw new Error(`raw subscriber: no answer to subscribe (${frames.join(' | ')})`)
    await new Promise((r) => setTimeout(r, 5))
  }
  return { frames, close: () => socket.close() }
}

/** The `ws` client with every frame it sends recorded (JSON-decoded), for asserting what went on the wire. */
export function recordingWebSocket(sent: Array<Record<string, unknown>>): typeof WebSocket {
  return class RecordingWebSocket extends WebSocket {
    override send(data: unknown, ...rest: unknown[]): void {
      if (typeof data === 'string') sent.push(JSON.parse(data) as Record<string, unknown>)
      ;(super.send as (...a: unknown[]) => void)(data, ...rest)
    }
  } as typeof WebSocket
}
