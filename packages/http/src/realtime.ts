import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { type Authenticator, createHub, type Hub, type HubOptions } from '@tidings/core'
import { createLongPollTransport, type LongPollTransport, type LongPollTransportOptions } from '@tidings/long-poll'
import { createSseTransport, type SseTransport, type SseTransportOptions } from '@tidings/sse'
import { createEdgeGuard, createWsTransport, type EdgeOptions, type HandshakeDeadline, watchHandshakes, type WsTransport, type WsTransportOptions } from '@tidings/ws'
import { type ApiKeyCheck, createAdminApi } from './admin.js'
import { adminApiKeys, type ApiKeys, type ApiKeyTable } from './api-keys.js'
import { openApiDocument } from './openapi.js'
import { bearerCheck, createAnalyticsRoute, createMetricsRegistry, type MetricsOptions, serveMetrics } from './metrics.js'
import type { Registry } from 'prom-client'
import { drainBody, hasBody } from '@tidings/http-kit'
import { sendJson } from './respond.js'

export interface RealtimeOptions {
  /** The hub to serve; one is created from `hubOptions` (and `authenticate`) when absent (in memory by default). */
  readonly hub?: Hub
  readonly hubOptions?: HubOptions
  /**
   * How clients authenticate (their `token` / `Authorization: Bearer` / `apiKey`), for the hub
   * created here; the same as `hubOptions.authenticate`. Without one, clients connect anonymously
   * and a client that gives credentials is refused. Not allowed together with `hub` (give the
   * authenticator to `createHub` then).
   */
  readonly authenticate?: Authenticator
  /** Where everything is mounted. Default `/realtime`. */
  readonly prefix?: string
  /**
   * API key(s) for the REST admin API, or a check function. Without one, the admin API answers 403.
   * This is not client authentication (see `authenticate`): it guards the admin routes only.
   */
  readonly apiKey?: string | readonly string[] | ApiKeyCheck
  /** Named admin API keys with scopes (`publish`, `read`, `admin`), plaintext or `sha256:<hex>`; see `createApiKeys`. Together with `apiKey`, which is then one more key, named `apiKey`, with every scope. */
  readonly apiKeys?: ApiKeyTable | ApiKeys
  /**
   * The edge of every transport: browser origins, whether `X-Forwarded-For` is believed, and the
   * per-address connection limits. One guard is made from it and shared by WebSocket, SSE and
   * long-poll, so the limits hold across them. Defaults: same-origin only, proxies not trusted,
   * 100 open and 100 new connections per address per minute.
   */
  readonly edge?: EdgeOptions
  /** Transport options; `false` turns a transport off. Origins are set once, in `edge.allowedOrigins`. */
  readonly websocket?: Omit<WsTransportOptions, 'path' | 'allowedOrigins' | 'edge'> | false
  readonly sse?: Omit<SseTransportOptions, 'prefix' | 'edge'> | false
  readonly longPoll?: Omit<LongPollTransportOptions, 'prefix' | 'edge'> | false
  /** Largest admin request body. Default 1 MiB. */
  readonly maxBodyBytes?: number
  /**
   * `GET <prefix>/metrics` in the Prometheus text format (prom-client), read from `hub.metrics()`
   * and `hub.health()` when scraped. A scrape presents `metrics.token` (bearer), or the endpoint
   * is `metrics.open`; any other request is an admin API request (API key: a JSON snapshot, or
   * `?format=prometheus`). `false` leaves the route to the admin API alone.
   */
  readonly metrics?: MetricsOptions | false
}

type Next = (err?: unknown) => void

/** Tidings mounted under one prefix: three transports, the admin API, metrics and the OpenAPI document. */
export interface Realtime {
  readonly hub: Hub
  readonly prefix: string
  /** The Prometheus registry behind `GET <prefix>/metrics` (add your own metrics to it), undefined with `metrics: false`. */
  readonly metrics: Registry | undefined
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
  const websocket = options.websocket === false ? undefined : (options.websocket ?? {})
  const stray = [websocket, options.sse, options.longPoll].some((o) => typeof o === 'object' && ('edge' in o || 'allowedOrigins' in o))
  if (stray) {
    throw new TypeError('createRealtime: set origins and limits once, in `edge` (edge.allowedOrigins), not per transport')
  }
  if (options.hub !== undefined && (options.authenticate !== undefined || options.hubOptions !== undefined)) {
    throw new TypeError('createRealtime: `authenticate` and `hubOptions` configure the hub created here; with `hub`, give them to createHub()')
  }
  const ownHub = options.hub === undefined
  const hub = options.hub ?? createHub(options.authenticate === undefined ? options.hubOptions : { ...options.hubOptions, authenticate: options.authenticate })
  const prefix = (options.prefix ?? '/realtime').replace(/\/+$/, '')
  const checkKey = apiKeyCheck(options.apiKey)
  // ONE guard for the three transports: a client's open and new connections count across them.
  const edge = createEdgeGuard(options.edge)
  const ws: WsTransport | undefined = websocket === undefined ? undefined : createWsTransport(hub, { ...websocket, path: prefix, edge })
  const sse: SseTransport | undefined = options.sse === false ? undefined : createSseTransport(hub, { ...options.sse, prefix, edge })
  const poll: LongPollTransport | undefined = options.longPoll === false ? undefined : createLongPollTransport(hub, { ...options.longPoll, prefix, edge })
  const keys = adminApiKeys(checkKey, options.apiKeys)
  const metricsOptions = options.metrics === false ? undefined : { store: ownHub ? options.hubOptions?.store : undefined, ...options.metrics }
  const metrics = metricsOptions === undefined ? undefined : createMetricsRegistry(hub, metricsOptions)
  const admin = createAdminApi(hub, keys, options.maxBodyBytes ?? 1024 * 1024, metrics)
  const analytics = createAnalyticsRoute(hub, keys)
  const handshakeTimeoutMs = websocket?.handshakeTimeoutMs ?? 10_000
  const scraper = metricsOptions?.open === true ? () => true : metricsOptions?.token !== undefined ? bearerCheck(metricsOptions.token) : undefined

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
    if (metrics !== undefined && scraper !== undefined && rest === '/metrics' && prometheusWanted(req, url.searchParams) && scraper(req)) {
      if (hasBody(req)) await drainBody(req)
      await serveMetrics(metrics, req, res)
      return true
    }
    if (await admin(req, res, rest, url.searchParams)) return true
    // The answers below read no body: drain one first, so the answer is not lost to a reset.
    if (hasBody(req)) await drainBody(req)
    if (rest === '/analytics') {
      analytics(req, res, url.searchParams)
      return true
    }
    if (rest === '/health' && (req.method === 'GET' || req.method === 'HEAD')) {
      // For load balancers: no key, nothing private; 503 when this node should not get traffic.
      const health = hub.health()
      sendJson(res, health.ok ? 200 : 503, health)
      return true
    }
    if (rest === '/openapi.json' && req.method === 'GET') {
      sendJson(res, 200, openApiDocument(prefix))
      return true
    }
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

  /**
   * Upgrades on `server`, and the handshake deadline on its new connections: a socket that has not
   * sent a complete request within `handshakeTimeoutMs` (slow headers) is destroyed.
   */
  const upgrades = (server: Server) => {
    const deadline: HandshakeDeadline = watchHandshakes(server, handshakeTimeoutMs)
    const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      deadline.done(socket)
      if (!handleUpgrade(req, socket, head) && server.listenerCount('upgrade') === 1) socket.destroy()
    }
    server.on('upgrade', onUpgrade)
    return () => {
      server.off('upgrade', onUpgrade)
      deadline.detach()
    }
  }

  const failed = (res: ServerResponse, err: unknown) => {
    try {
      // Through the hub's report: onError and the logger hear of it, not only `error` listeners.
      hub.report(err, 'http')
    } catch {
      // a logger that throws must not leave the request unanswered
    }
    if (!res.headersSent) {
      res.statusCode = 500
      res.end()
    } else res.destroy()
  }

  return {
    hub,
    prefix,
    metrics,
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

/**
 * A scrape of `GET /metrics` rather than an admin API call: not `?format=json`, and no
 * `x-api-key` header unless `?format=prometheus` (admin callers keep their JSON snapshot).
 */
function prometheusWanted(req: IncomingMessage, query: URLSearchParams): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false
  const format = query.get('format')
  if (format === 'prometheus') return true
  return format === null && req.headers['x-api-key'] === undefined
}

/** The admin API key check: keys compared in constant time (SHA-256 digests, `timingSafeEqual`). */
function apiKeyCheck(keys: RealtimeOptions['apiKey']): ApiKeyCheck | undefined {
  if (keys === undefined || typeof keys === 'function') return keys
  const digests = (typeof keys === 'string' ? [keys] : keys).map(digest)
  return (key) => {
    const d = digest(key)
    // Every configured key is compared, so the time does not tell which one (or whether one) matched.
    let ok = false
    for (const k of digests) ok = timingSafeEqual(k, d) || ok
    return ok
  }
}

function digest(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest()
}
