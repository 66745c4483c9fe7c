import {ALL_ERROR_CODES, type ErrorCode} from '@tidings/protocol'

/** A point-in-time view of a hub's counters. Counters only grow; gauges are current values. */
export interface MetricsSnapshot {
  readonly nodeId: string
  readonly connections: number
  readonly channels: number
  readonly subscriptions: number
  /** Subscribers per channel (this node). */
  readonly subscriptionsByChannel: Readonly<Record<string, number>>
  /** Frames received from clients. */
  readonly messagesIn: number
  /** Frames handed to sessions (queued frames count when they are flushed). */
  readonly messagesOut: number
  readonly bytesIn: number
  readonly bytesOut: number
  /** Messages published to channels (client and server). */
  readonly published: number
  /** Volatile frames dropped under backpressure. */
  readonly dropped: number
  /** Bytes waiting in every connection's outbound queue right now. */
  readonly queuedBytes: number
  /** At-least-once messages sent again after an ack timeout. */
  readonly redelivered: number
  /** Delivery ranges given up on (see the `delivery:failed` event). */
  readonly deliveryFailed: number
  readonly connectionsOpened: number
  readonly connectionsClosed: number
  /** Errors sent to clients, by code. */
  readonly errors: Readonly<Record<ErrorCode, number>>
}

export class Metrics {
  /** Bytes waiting in every connection's outbound queue (the hub-wide budget, `limits.maxTotalQueuedBytes`). */
  queuedBytes = 0
  messagesIn = 0
  messagesOut = 0
  bytesIn = 0
  bytesOut = 0
  published = 0
  dropped = 0
  redelivered = 0
  deliveryFailed = 0
  connectionsOpened = 0
  connectionsClosed = 0
  readonly errors = Object.fromEntries(ALL_ERROR_CODES.map((c) => [c, 0])) as Record<ErrorCode, number>
}
