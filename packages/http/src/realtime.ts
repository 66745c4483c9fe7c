import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { createHub, type Hub, type HubOptions } from '@tidings/core'
import { createLongPollTransport, type LongPollTransport, type LongPollTransportOptions } from '@tidings/long-poll'
import { createSseTransport, type SseTransport, type SseTransportOptions } from '@tidings/sse'
import { createWsTransport, type WsTransport, type WsTransportOptions } from '@tidings/ws'
import { type ApiKeyCheck, createAdminApi } from './admin.js'
import { openApiDocument } from './openapi.js'
import { sendJson } from './respond.js'

export interface RealtimeOptions {
  /** The hub to serve; one is created from `hubOptions` when absent (in memory by default). */
  readonly hub?: Hub
  readonly hubOptions?: HubOptions
  /** Where everything is mounted. Default `/realtime`. */
  readonly prefix?: string
  /** API key(s) for the admin API, or a check function. Without one, the admin API answers 403. */
  readonly apiKey?: string | readonly string[] | ApiKeyCheck
  /** Transport options; `false` turns a transport off. */
  readonly websocket?: Omit<WsTransportOptions, 'path'> | false
  readonly sse?: Omit<SseTransportOptions, 'prefix'> | false
  readonly longPoll?: Omit<LongPollTransportOptions, 'prefix'> | false
  /** Largest admin request body. Default 1 MiB. */
  readonly maxBodyBytes?: number
}

type Next = (err?: unknown) => void

/** Tidings mounted under one prefix: three transports, the admin API, metrics and the OpenAPI document. */
export interface Realtime {
  readonly hub: Hub
  readonly prefix: string
  /** Serve a request if it is ours (resolves true), else leave it alone (false). */
  handle(req: IncomingMessage, res: ServerResponse): Promise<boolean>
  /** Serve a WebSocket upgrade if it is ours (true), else leave it alone (false). */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean
  /**
   * Take over an `http.Server`: requests under the prefix and WebSocket upgrades are served
   * here, everything else goes to the server's own listeners (your app). Returns a detach function.
   */
  attach(server: Server): () => void
  /** Express (or Connect) middleware serving the prefix; pair it with `attach(server)` or `upgrades(server)` for WebSockets. */
  express(): (req: IncomingMessage, res: ServerResponse, next: Next) => void
  /** Listen for WebSocket upgrades only (when requests are already routed by `express()`). */
  upgrades(server: Server): () => void
  /** A Fastify plugin: `await app.register(realtime.fastify())`. Serves requests and upgrades. */
  fastify(): FastifyPlugin
  /** Close every transport (clients reconnect elsewhere), then the hub if it was created here. */
  close(): Promise<void>
}

interface FastifyLike {
  readonly server: Server
  addHook(name: 'onRequest', hook: (request: { raw: IncomingMessage }, reply: { raw: ServerResponse; hijack(): void }) => Promise<void>): unknown
  addHook(name: 'onClose', hook: () => Promise<void>): unknown
}
type FastifyPlugin = ((app: FastifyLike) => Promise<void>) & { [key: symbol]: unknown }

export function createRealtime(options: RealtimeOptions = {}): Realtime {
  const ownHub = options.hub === undefined
  const hub = options.hub ?? createHub(options.hubOptions)
  const prefix = (options.prefix ?? '/realtime').replace(/\/+$/, '')
  const keys = options.apiKey
  const checkKey: ApiKeyCheck | undefined =
    keys === undefined ? undefined : typeof keys === 'function' ? keys : ((k) => (typeof keys === 'string' ? [keys] : keys).includes(k))
  const ws: WsTransport | undefined = options.websocket === false ? undefined : createWsTransport(hub, { ...options.websocket, path: prefix })
  const sse: SseTransport | undefined = options.sse === false ? undefined : createSseTransport(hub, { ...options.sse, prefix })
  const poll: LongPollTransport | undefined = options.longPoll === false ? undefined : createLongPollTransport(hub, { ...options.longPoll, prefix })
  const admin = createAdminApi(hub, checkKey, options.maxBodyBytes ?? 1024 * 1024)

  const ours = (url: string | undefined) => {
    const path = (url ?? '/').split('?')[0]!
    return path === prefix || path.startsWith(`${prefix}/`)
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<boolean> => {
    if (!ours(req.url)) return false
    if (sse && (await sse.handle(req, res))) return true
    if (poll && (await poll.handle(req, res))) return true
    const url = new URL(req.url ?? '/', 'http://localhost')
    const rest = url.pathname.slice(prefix.length) || '/'
    if (rest === '/openapi.json' && req.method === 'GET') {
      sendJson(res, 200, openApiDocument(prefix))
      return true
    }
    if (await admin(req, res, rest, url.searchParams)) return true
    if (rest === '/' && req.method === 'GET') {
      // A plain GET on the WebSocket path: say how to connect.
      res.setHeader('upgrade', 'websocket')
      sendJson(res, 426, { type: 'error', code: 'RT_001', message: 'connect with a WebSocket (subprotocol tidings.v1.json), or use /sse or /poll' })
      return true
    }
    sendJson(res, 404, { type: 'error', code: 'RT_004', message: `no route ${req.method} ${url.pathname}` })
    return true
  }

  const handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => (ws ? ws.handleUpgrade(req, socket, head) : false)

  const upgrades = (server: Server) => {
    const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (!handleUpgrade(req, socket, head) && server.listenerCount('upgrade') === 1) socket.destroy()
    }
    server.on('upgrade', onUpgrade)
    return () => void server.off('upgrade', onUpgrade)
  }

  const failed = (res: ServerResponse, err: unknown) => {
    hub.emit('error', err, { stage: 'http' })
    if (!res.headersSent) {
      res.statusCode = 500
      res.end()
    } else res.destroy()
  }

  return {
    hub,
    prefix,
    handle,
    handleUpgrade,
    attach(server) {
      const others = server.listeners('request') as Array<(req: IncomingMessage, res: ServerResponse) => void>
      server.removeAllListeners('request')
      const onRequest = (req: IncomingMessage, res: ServerResponse) => {
        if (!ours(req.url)) {
          for (const l of others) l.call(server, req, res)
          if (others.length === 0) {
            res.statusCode = 404
            res.end()
          }
          return
        }
        handle(req, res).then(
          (handled) => {
            if (!handled) for (const l of others) l.call(server, req, res)
          },
          (err) => failed(res, err),
        )
      }
      server.on('request', onRequest)
      const detachUpgrades = upgrades(server)
      return () => {
        detachUpgrades()
        server.off('request', onRequest)
        for (const l of others) server.on('request', l)
      }
    },
    express() {
      return (req, res, next) => {
        // Express strips a mount path from req.url; route on the original URL.
        const original = (req as IncomingMessage & { originalUrl?: string }).originalUrl
        if (!ours(original ?? req.url)) return next()
        if (original !== undefined) req.url = original
        handle(req, res).then((handled) => (handled ? undefined : next()), next)
      }
    },
    upgrades,
    fastify() {
      const plugin = (async (app: FastifyLike) => {
        app.addHook('onRequest', async (request, reply) => {
          if (!ours(request.raw.url)) return
          reply.hijack()
          try {
            if (!(await handle(request.raw, reply.raw))) {
              reply.raw.statusCode = 404
              reply.raw.end()
            }
          } catch (err) {
            failed(reply.raw, err)
          }
        })
        const detach = upgrades(app.server)
        app.addHook('onClose', async () => {
          detach()
        })
      }) as FastifyPlugin
      // Let the hooks apply to the whole app, not just an encapsulated child context.
      plugin[Symbol.for('skip-override')] = true
      return plugin
    },
    async close() {
      await Promise.all([ws?.close(), sse?.close(), poll?.close()])
      if (ownHub) await hub.close()
    },
  }
}
