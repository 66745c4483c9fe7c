import { utf8Length } from './bytes.js'

/**
 * The one table of Tidings error codes. Every rejected input is answered with one of these,
 * on the wire (`{ type: 'error', code }`) and in server-side APIs (`RealtimeError.code`).
 * `docs/errors.md` documents the same table; keep them in step.
 */
export const ErrorCode = {
  /** The connection could not be established or kept (limits per user, shutdown, transport failure). */
  ConnectionFailed: 'RT_001',
  /** Credentials were missing where required, malformed, expired or rejected. */
  AuthenticationFailed: 'RT_002',
  /** The identity may not do this on this channel (subscribe, publish, presence, room role). */
  PermissionDenied: 'RT_003',
  /** No channel pattern matches the name, or the room / live query does not exist. */
  ChannelNotFound: 'RT_004',
  /** A frame or message payload is larger than the configured limit. */
  MessageTooLarge: 'RT_005',
  /** A rate or count limit was hit (messages/s, presence updates/s, subscriptions per connection). */
  RateLimitExceeded: 'RT_006',
  /** The frame could not be decoded or does not match the protocol (or the channel's event schema). */
  InvalidMessageFormat: 'RT_007',
  /** A room or channel is at its capacity. */
  ChannelCapacityExceeded: 'RT_008',
  /** A presence update was refused (not a presence channel, not subscribed, bad state). */
  PresenceUpdateFailed: 'RT_009',
} as const

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

export const ERROR_MESSAGES: Readonly<Record<ErrorCode, string>> = {
  RT_001: 'Connection failed',
  RT_002: 'Authentication failed',
  RT_003: 'Permission denied',
  RT_004: 'Channel not found',
  RT_005: 'Message too large',
  RT_006: 'Rate limit exceeded',
  RT_007: 'Invalid message format',
  RT_008: 'Channel capacity exceeded',
  RT_009: 'Presence update failed',
}

export const ALL_ERROR_CODES = Object.keys(ERROR_MESSAGES) as ErrorCode[]

/** A typed, code-carrying error. Thrown by server-side APIs; sent as an `error` frame to clients. */
export class RealtimeError extends Error {
  override readonly name = 'RealtimeError'
  readonly code: ErrorCode
  /** Extra machine-readable facts (a limit, a retry delay); sent to the client as `details`. */
  readonly details: Readonly<Record<string, unknown>> | undefined

  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>) {
    super(message ?? ERROR_MESSAGES[code])
    this.code = code
    this.details = details
  }
}

export function isRealtimeError(err: unknown): err is RealtimeError {
  return err instanceof RealtimeError
}

/** WebSocket-compatible close codes the hub uses when it closes a session itself. */
export const CloseCode = {
  Normal: 1000,
  /** Server shutting down or draining; the client should reconnect (elsewhere). */
  GoingAway: 1001,
  /** Closed by the server on purpose (admin disconnect, user disconnected). */
  Disconnected: 4000,
  /** The client broke a rule that is not about one frame (too many frames waiting for an answer). */
  PolicyViolation: 1008,
  /** The server could not decide in time (an authenticator that did not answer): reconnect later with the same credentials. */
  TryAgainLater: 1013,
  AuthenticationFailed: 4001,
  /** The user already has the maximum number of connections. */
  TooManyConnections: 4008,
  /** The connection stayed too slow to keep up and was dropped. */
  SlowConsumer: 4009,
  /** Messages stayed unacknowledged through every redelivery attempt (`delivery.onFailure: 'disconnect'`). */
  DeliveryFailed: 4010,
} as const

export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode]

/** Close reasons are limited to 123 UTF-8 bytes by RFC 6455; clamp rather than throw. */
export function clampCloseReason(reason: string): string {
  if (utf8Length(reason) <= 123) return reason
  let out = reason.slice(0, 123)
  while (utf8Length(out) > 123) out = out.slice(0, -1)
  // Never end on the first half of a surrogate pair.
  const last = out.charCodeAt(out.length - 1)
  if (last >= 0xd800 && last <= 0xdbff) out = out.slice(0, -1)
  return out
}
