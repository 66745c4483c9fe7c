import type { MessageFrame } from '@tidings/protocol'
import type { Revision } from './channel.js'
import type { EventSourceConstructorLike, FetchLike, TransportFactory, TransportName, WebSocketConstructorLike } from './transports/types.js'

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected'

export interface RealtimeOptions {
  /** The hub's prefix, e.g. `http://localhost:3000/realtime` (relative URLs resolve against the page in browsers). */
  readonly url: string
  /**
   * A token, or a function (sync or async) called on every (re)connect, on `auth:expiring` and by
   * `reauthenticate()` to get a fresh one. Only a function lets credentials be refreshed.
   */
  readonly auth?: string | (() => string | Promise<string>) | undefined
  readonly apiKey?: string | undefined
  /** Connect at construction. Default true. */
  readonly autoConnect?: boolean | undefined
  /** Reconnect automatically after a lost connection or a failed attempt. Default true. */
  readonly reconnect?: boolean | undefined
  /** Backoff base, ms (full jitter: attempt n waits a random time below min(max, base × 2^n)). Default 1000. */
  readonly reconnectDelay?: number | undefined
  /** Default 30 000. */
  readonly maxReconnectDelay?: number | undefined
  /** Failed attempts in a row before giving up (state `disconnected`). Default Infinity. */
  readonly maxReconnectAttempts?: number | undefined
  /** In order of preference; the next one is tried when one cannot open. Default websocket, sse, long-poll. */
  readonly transports?: ReadonlyArray<TransportName | TransportFactory> | undefined
  /** A WebSocket implementation (browsers: the global one; Node 20: the `ws` package). */
  readonly WebSocket?: WebSocketConstructorLike | undefined
  readonly fetch?: FetchLike | undefined
  readonly EventSource?: EventSourceConstructorLike | undefined
  /** Send cookies with cross-origin HTTP transports. */
  readonly withCredentials?: boolean | undefined
  /** Most sends kept while disconnected; further ones reject with RT_006. Default 100. */
  readonly outboxLimit?: number | undefined
  /** Acknowledgments are batched and sent at most this often, per channel. Default 50. */
  readonly ackIntervalMs?: number | undefined
  /** While on a fallback transport, try the preferred one again this often (0: never). Default 10 000. */
  readonly upgradeIntervalMs?: number | undefined
  /** A transport that has not produced `connected` by then counts as failed. Default 10 000. */
  readonly connectTimeoutMs?: number | undefined
  /** Send a `ping` this often while connected (0: never). Default 25 000. */
  readonly heartbeatIntervalMs?: number | undefined
  /** A `ping` unanswered for this long closes the connection (and reconnects). Default 10 000. */
  readonly heartbeatTimeoutMs?: number | undefined
  /**
   * A request (send, presence, history, subscribe, auth…) unanswered this long after it went out
   * on a connection rejects with `RT_001` (`details.timeout: true`). Time spent queued while
   * disconnected does not count. Default 10 000.
   */
  readonly requestTimeoutMs?: number | undefined
  /** HTTP transports: how long one HTTP request may take (a poll: this plus the server's hold). Default 15 000. */
  readonly httpTimeoutMs?: number | undefined
  /**
   * Browsers: on `pagehide` close the connection and release HTTP sessions (DELETE with
   * `keepalive`), so a closed tab does not hold the user's connection slots; reconnect on
   * `pageshow` when the page comes back from the back/forward cache. Default true.
   */
  readonly releaseOnPageHide?: boolean | undefined
  /** Source of randomness for the backoff jitter. Default `Math.random`. */
  readonly random?: (() => number) | undefined
}

export interface RealtimeEvents {
  state: (state: ConnectionState, previous: ConnectionState) => void
  /** A hub connection is ready (also after each reconnect and after switching transport). */
  connected: (info: { connectionId: string; userId: string | undefined; transport: string }) => void
  /** The connection was lost or closed. */
  disconnected: (info: { code: number; reason: string }) => void
  reconnecting: (info: { attempt: number; delay: number }) => void
  /** Errors that belong to no request: refused connections, errors without request id, listeners that threw. */
  error: (error: Error) => void
  /** Messages sent to this user or connection rather than to a channel (e.g. `notifications:badge`). */
  message: (message: MessageFrame) => void
  /** Revisions (edits, deletes) of a channel's messages that no channel handle took (as `message` for messages); a channel's go to its own `revision` event. */
  revision: (revision: Revision, frame: MessageFrame) => void
  /** Credentials were refreshed on the open connection (after `auth:expiring` or `reauthenticate()`). */
  authenticated: (info: { userId: string | undefined; expiresAt: number | undefined }) => void
  /** A transport could not be used and the next one is tried (e.g. no WebSocket in Node without `ws`). */
  fallback: (info: { from: string; to: string; reason: string }) => void
}

/** One of the user's channels, from `rt.channels()`. */
export interface ChannelSummary {
  readonly name: string
  /** Retained messages after the user's cursor (all retained ones when the cursor is of an earlier epoch). */
  readonly unread: number
  /** The user's cursor: the last offset acknowledged (0 when it is of an earlier epoch). */
  readonly lastSeenOffset: number
  /** The channel's newest offset. */
  readonly top: number
  /** Time of the newest message (ms since the epoch), null when none is retained or known. */
  readonly lastActivity: number | null
  /** The channel's kind (by default the first part of its name), when the hub's store keeps one. */
  readonly kind?: string | null | undefined
  /** Users with a cursor in the channel, when the store counts them. */
  readonly activeUsers?: number | undefined
}
