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
  /** Browser `Origin` allow-list (`*` allows any); other origins get HTTP 403 at the handshake. Default: any. */
  allowedOrigins?: readonly string[]
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
  /** How long the hub may take to accept a socket (authentication) before it is refused with `RT_002` and 4001. Default 10 000. */
  handshakeTimeoutMs?: number
}

export interface ResolvedWsOptions {
  readonly path: string
  readonly pingIntervalMs: number
  readonly allowedOrigins: ReadonlySet<string> | undefined
  readonly deflate: false | (WsDeflateOptions & { threshold: number })
  readonly maxPayload: number
  readonly closeTimeoutMs: number
  readonly handshakeTimeoutMs: number
}

export const DEFAULT_PATH = '/realtime'
export const DEFAULT_MAX_PAYLOAD = 512 * 1024

export function resolveWsOptions(o: WsTransportOptions, normalizeOrigin: (origin: string) => string, hubMaxMessageSize?: number): ResolvedWsOptions {
  const path = (o.path ?? DEFAULT_PATH).replace(/\/+$/, '') || '/'
  const deflate = o.perMessageDeflate === undefined || o.perMessageDeflate === false
    ? false
    : { ...(o.perMessageDeflate === true ? {} : o.perMessageDeflate), threshold: (o.perMessageDeflate === true ? undefined : o.perMessageDeflate.threshold) ?? 1024 }
  return {
    path: path.startsWith('/') ? path : `/${path}`,
    pingIntervalMs: positive(o.pingIntervalMs, 30_000, 'pingIntervalMs', true),
    allowedOrigins: o.allowedOrigins === undefined ? undefined : new Set(o.allowedOrigins.map(normalizeOrigin)),
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
