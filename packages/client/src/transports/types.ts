import type { ClientFrame, ServerFrame } from '@tidings/protocol'

/** The built-in transports, in the default order of preference. */
export type TransportName = 'websocket' | 'sse' | 'long-poll'

/** What a connection is opened with. */
export interface Credentials {
  readonly token?: string | undefined
  readonly apiKey?: string | undefined
}

export interface TransportCloseInfo {
  /** WebSocket-style close code (1006 when the connection was lost without one). */
  readonly code: number
  readonly reason: string
  /** The server asked to wait this long before trying again (HTTP 429/503 `Retry-After`). */
  readonly retryAfterMs?: number | undefined
}

/** What a transport reports. Called asynchronously, never from inside `connect`/`send`/`close`. */
export interface TransportHandlers {
  /** The underlying connection is open (the `connected` frame follows as a `frame`). */
  open(): void
  /** One decoded server frame, in order. */
  frame(frame: ServerFrame): void
  /** The connection is gone (or never opened). Called at most once; not after a local `close()`. */
  close(info: TransportCloseInfo): void
}

/**
 * One connection to a hub over one kind of transport. An instance is used for one connection:
 * `connect` once, `send` frames, `close` once.
 */
export interface ClientTransport {
  readonly name: string
  connect(url: string, credentials: Credentials, handlers: TransportHandlers): void
  /** Send one frame, in order. Frames sent before `open` are queued or dropped by the transport. */
  send(frame: ClientFrame): void
  /** Close it from the client side; no `close` handler call follows. Idempotent. */
  close(code?: number, reason?: string): void
}

/** A custom transport: a name (used by `rt.transport` and the upgrade probe) and a factory. */
export interface TransportFactory {
  readonly name: string
  create(options: TransportOptions): ClientTransport
}

// ---------------------------------------------------------------- platform shapes

/**
 * The part of a WebSocket this SDK uses: the browser's `WebSocket` and the `ws` package's both
 * fit. Handlers are typed loosely so that either implementation's event types are accepted.
 */
export interface WebSocketLike {
  readonly readyState: number
  readonly protocol: string
  binaryType: string
  onopen: ((event: any) => void) | null
  onmessage: ((event: any) => void) | null
  onclose: ((event: any) => void) | null
  onerror: ((event: any) => void) | null
  send(data: string): void
  close(code?: number, reason?: string): void
}

export type WebSocketConstructorLike = new (url: string, protocols?: string | string[]) => WebSocketLike

/** Header carrying an HTTP session's secret (SSE resumes, POSTs, long-poll polls and DELETEs). */
export const SECRET_HEADER = 'x-tidings-secret'

/** The part of `EventSource` this SDK uses (browsers). */
export interface EventSourceLike {
  readonly readyState: number
  onopen: ((event: any) => void) | null
  onerror: ((event: any) => void) | null
  addEventListener(type: string, listener: (event: any) => void): void
  close(): void
}

export type EventSourceConstructorLike = new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike

export interface FetchInit {
  method?: string
  headers?: Record<string, string>
  body?: string
  signal?: AbortSignal
  credentials?: 'include' | 'omit' | 'same-origin'
  /** Let the request outlive the page (browsers: used for the DELETE sent on `pagehide`). */
  keepalive?: boolean
}

export interface StreamReaderLike {
  read(): Promise<{ done: boolean; value?: Uint8Array | undefined }>
  cancel(reason?: unknown): Promise<void>
}

export interface FetchResponseLike {
  readonly status: number
  readonly ok: boolean
  readonly body: { getReader(): StreamReaderLike } | null
  /** Response headers (read for `Retry-After`); optional so minimal fetch stand-ins still fit. */
  readonly headers?: { get(name: string): string | null } | undefined
  text(): Promise<string>
}

export type FetchLike = (url: string, init?: FetchInit) => Promise<FetchResponseLike>

/** Platform pieces and timings handed to every transport. */
export interface TransportOptions {
  readonly WebSocket?: WebSocketConstructorLike | undefined
  readonly EventSource?: EventSourceConstructorLike | undefined
  readonly fetch?: FetchLike | undefined
  /** Send cookies with HTTP requests and EventSource (cross-origin). */
  readonly withCredentials?: boolean | undefined
  /**
   * Long-poll and SSE: how long a request may go unanswered before it counts as lost. The
   * long-poll read is allowed this much on top of the server's poll timeout.
   */
  readonly requestTimeoutMs?: number | undefined
  /** Where a transport reports why it could not be used (e.g. no WebSocket implementation in Node). */
  readonly warn?: ((message: string) => void) | undefined
}

// ---------------------------------------------------------------- helpers

/** Resolve `base` (absolute, or relative to the page in browsers) and append a path and query parameters. */
export function endpoint(base: string, path: string, params: Record<string, string | undefined> = {}): URL {
  const location = (globalThis as { location?: { href?: string } }).location?.href
  const url = new URL(base, location)
  if (path) url.pathname = url.pathname.replace(/\/+$/, '') + path
  for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v)
  return url
}

/** A received text as a server frame, or undefined when it is not one (never throws). */
export function parseServerFrame(text: string): ServerFrame | undefined {
  try {
    const value: unknown = JSON.parse(text)
    if (value !== null && typeof value === 'object' && typeof (value as { type?: unknown }).type === 'string') return value as ServerFrame
  } catch {
    // not JSON
  }
  return undefined
}
