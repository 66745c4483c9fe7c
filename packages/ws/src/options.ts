import { createEdgeGuard, type EdgeGuard, type EdgeOptions, isEdgeGuard } from '@tidings/http-kit'

/** permessage-deflate settings (ws's, with Tidings' threshold). */
export interface WsDeflateOptions {
  /** Frames smaller than this many bytes are sent uncompressed. Default 1024. */
  threshold?: number
  /** Forget the compression context between messages (far less memory per socket, worse ratio). Default false. */
  serverNoContextTakeover?: boolean
  clientNoContextTakeover?: boolean
  serverMaxWindowBits?: number
  clientMaxWindowBits?: number
  /** Concurrent zlib operations (ws's default 10). */
  concurrencyLimit?: number
}

export interface WsTransportOptions {
  /** Upgrade path. Default `/realtime`. */
  path?: string
  /** Ping every this many ms; a socket that has not answered the previous ping is terminated. Default 30 000; 0 disables. */
  pingIntervalMs?: number
  /**
   * Browser `Origin` allow-list; other origins get HTTP 403 before the upgrade. Default: same-origin
   * only (the `Origin`'s host equals the request's `Host`); upgrades without an `Origin` (not a
   * browser) always pass; `['*']` allows every origin. Feeds the edge guard the transport creates
   * when `edge` is absent or given as options; with a shared guard (`edge` is an `EdgeGuard`) the
   * guard's own `allowedOrigins` rules and this option must not be set.
   */
  allowedOrigins?: readonly string[]
  /**
   * The edge guard (origins, client address, per-address connection limits), or options to create
   * one. Pass one guard to every transport of a server so per-address limits hold across them.
   * Default: a guard of this transport with the defaults (100 open and 100 new connections per
   * address per minute, `X-Forwarded-For` not believed, same-origin only).
   */
  edge?: EdgeGuard | EdgeOptions
  /** permessage-deflate: off by default; `true` or options to enable (threshold default 1024 bytes). */
  perMessageDeflate?: boolean | WsDeflateOptions
  /**
   * Largest inbound frame ws accepts (past it ws closes with 1009). Keep it well above the hub's
   * `limits.maxMessageSize`, so frames over that get `RT_005` and the socket stays open.
   * Default 512 KiB (4 × the hub's default 128 KiB).
   */
  maxPayload?: number
  /** Graceful close: how long `close()` waits for sockets before terminating them. Also ws's closing-handshake timeout. Default 5 000. */
  closeTimeoutMs?: number
  /**
   * Deadline of the whole handshake, in ms. On a server given to `attach()` it runs from the TCP
   * connection: a socket that has not sent a complete request (upgrade or plain HTTP) by then is
   * destroyed (slow-header clients). After the upgrade, what is left of it is how long the hub may
   * take to accept the socket (authentication) before it is refused with `RT_002` and 4001.
   * Default 10 000.
   */
  handshakeTimeoutMs?: number
}

export interface ResolvedWsOptions {
  readonly path: string
  readonly pingIntervalMs: number
  readonly edge: EdgeGuard
  readonly deflate: false | (WsDeflateOptions & { threshold: number })
  readonly maxPayload: number
  readonly closeTimeoutMs: number
  readonly handshakeTimeoutMs: number
}

export const DEFAULT_PATH = '/realtime'
export const DEFAULT_MAX_PAYLOAD = 512 * 1024

function resolveEdge(o: WsTransportOptions): EdgeGuard {
  if (isEdgeGuard(o.edge)) {
    if (o.allowedOrigins !== undefined) throw new TypeError('@tidings/ws: allowedOrigins cannot be set with a shared edge guard; give it to the guard (createEdgeGuard({ allowedOrigins }))')
    return o.edge
  }
  const edge = o.edge ?? {}
  if (o.allowedOrigins !== undefined && edge.allowedOrigins !== undefined) throw new TypeError('@tidings/ws: set allowedOrigins once (the option or edge.allowedOrigins)')
  return createEdgeGuard(o.allowedOrigins === undefined ? edge : { ...edge, allowedOrigins: o.allowedOrigins })
}

export function resolveWsOptions(o: WsTransportOptions, hubMaxMessageSize?: number): ResolvedWsOptions {
  const path = (o.path ?? DEFAULT_PATH).replace(/\/+$/, '') || '/'
  const deflate = o.perMessageDeflate === undefined || o.perMessageDeflate === false
    ? false
    : { ...(o.perMessageDeflate === true ? {} : o.perMessageDeflate), threshold: (o.perMessageDeflate === true ? undefined : o.perMessageDeflate.threshold) ?? 1024 }
  return {
    path: path.startsWith('/') ? path : `/${path}`,
    pingIntervalMs: positive(o.pingIntervalMs, 30_000, 'pingIntervalMs', true),
    edge: resolveEdge(o),
    deflate,
    // Well above the hub's own limit, so an oversized frame is answered RT_005 rather than closed 1009.
    maxPayload: positive(o.maxPayload, hubMaxMessageSize !== undefined ? Math.max(DEFAULT_MAX_PAYLOAD, 4 * hubMaxMessageSize) : DEFAULT_MAX_PAYLOAD, 'maxPayload', false),
    closeTimeoutMs: positive(o.closeTimeoutMs, 5_000, 'closeTimeoutMs', true),
    handshakeTimeoutMs: positive(o.handshakeTimeoutMs, 10_000, 'handshakeTimeoutMs', false),
  }
}

function positive(value: number | undefined, fallback: number, name: string, zeroOk: boolean): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0 || (!zeroOk && value === 0)) {
    throw new TypeError(`@tidings/ws: ${name} must be a ${zeroOk ? 'non-negative' : 'positive'} number`)
  }
  return value
}
