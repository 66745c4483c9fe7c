import type { Codec, WireData } from '@tidings/protocol'

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
  /**
   * Request headers from the handshake, lower-cased names. The hub reads them to authenticate
   * (at connect, and on an `auth` frame when it has an authenticator). A transport MAY let go of
   * them (an empty object) once the hub accepted the session if `hub.authenticates` is false.
   */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  readonly userAgent?: string | undefined
  /**
   * Write one frame. MUST keep order. MUST NOT throw: a failed write closes the session and
   * the transport reports it with `ConnectionHandle.closed()`. MUST ignore frames after close
   * (a fan-out under way may still hold the session). MUST NOT mutate `frame.data`.
   *
   * Returns false when, after this frame, the session's buffered bytes are at or above
   * `ConnectionHandle.highWaterMark` (the frame itself was still accepted), as a Node stream's
   * `write()` does. The hub then keeps further frames in its own priority queue (dropping
   * volatile ones) until the transport calls `drained()`.
   */
  send(frame: Outbound): boolean
  /** Bytes accepted by `send` and not yet handed to the network (reported in connection info). */
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
  /** Buffered bytes at which `Session.send` should start returning false. */
  readonly highWaterMark: number
  /** One inbound frame, exactly as received. Never throws; bad input is answered on the wire. */
  receive(data: WireData): void
  /** After `send` returned false: the session's buffer has drained, so the hub flushes its queue. */
  drained(): void
  /** The connection is gone (either side closed it). Idempotent. */
  closed(code?: number, reason?: string): void
}
