import type { Codec, WireData } from '../codec.js'

/**
 * One encoded server frame, shared by every recipient of a fan-out. The hub encodes a message
 * once and hands the same `Outbound` to every session.
 */
export class Outbound {
  /**
   * A transport MAY memoize one derived form of `data` here under its own name (for example a
   * pre-built WebSocket frame), so that it frames a message once for all its sockets.
   */
  memo: Record<string, unknown> | undefined = undefined

  constructor(
    readonly data: WireData,
    /** Byte length of `data` on the wire. */
    readonly bytes: number,
  ) {}
}

/**
 * What a transport gives the hub for one client connection. A transport turns a socket (or an
 * SSE stream, or a long-poll cursor) into a Session and never decides anything about channels.
 */
export interface Session {
  /** Transport name, reported in connection info: `ws`, `sse`, `long-poll`, `memory`. */
  readonly transport: string
  /** Codec negotiated with the client; the hub's default codec when absent. */
  readonly codec?: Codec | undefined
  /** Peer address for auth, limits and connection info. */
  readonly remoteAddress?: string | undefined
  /** Request headers from the handshake, lower-cased names. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  readonly userAgent?: string | undefined
  /**
   * Write one frame. MUST keep order. MUST NOT throw: a failed write closes the session and
   * the transport reports it with `ConnectionHandle.closed()`. MUST NOT mutate `frame.data`.
   */
  send(frame: Outbound): void
  /**
   * Bytes accepted by `send` and not yet handed to the network. The hub queues (and under
   * pressure drops volatile frames) above its high-water mark, and resumes on `drained()`.
   */
  bufferedAmount(): number
  /**
   * Close the connection. MUST be idempotent. The transport then calls
   * `ConnectionHandle.closed()` (or the hub treats this call as the close).
   */
  close(code: number, reason: string): void
}

/** What the hub gives back to the transport for an accepted session. */
export interface ConnectionHandle {
  readonly id: string
  /** One inbound frame, exactly as received. Never throws; bad input is answered on the wire. */
  receive(data: WireData): void
  /** The session's buffer fell below the low-water mark: the hub flushes its queue. */
  drained(): void
  /** The connection is gone (either side closed it). Idempotent. */
  closed(code?: number, reason?: string): void
}
