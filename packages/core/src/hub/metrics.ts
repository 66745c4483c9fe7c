import { ALL_ERROR_CODES, type ErrorCode } from '@tidings/protocol'
import type { Clock } from '../ports/clock.js'
import { systemClock } from '../ports/clock.js'
import { Analytics } from './analytics.js'

/**
 * A histogram in a snapshot: upper bounds (`le`, in seconds) with the cumulative count of
 * observations at or below each, then the total count (the `+Inf` bucket) and sum (seconds).
 */
export interface HistogramSnapshot {
  readonly le: readonly number[]
  /** Cumulative: `counts[i]` observations were ≤ `le[i]`. */
  readonly counts: readonly number[]
  readonly count: number
  readonly sum: number
}

/** Connections of one transport (`websocket`, `sse`, `long-poll`, …). */
export interface TransportFigures {
  /** Open now. */
  readonly open: number
  /** Opened since the hub started. */
  readonly opened: number
}

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
  /** Connections per transport: open now and opened since start. */
  readonly transports: Readonly<Record<string, TransportFigures>>
  /** The most connections open at once on this node since it started, and when (hub clock, ms). */
  readonly peakConnections: number
  readonly peakConnectionsAt: number | undefined
  /** Connections closed, by close code (`1000`, `1001`, `1006`, `4009`, …; codes outside {@link CLOSE_CODE_LABELS} count as `other`). */
  readonly disconnects: Readonly<Record<string, number>>
  /** How long closed connections were open. */
  readonly connectionDuration: HistogramSnapshot
  /** From a publish entering the publish path to its frames handed to this node's sessions, per publish. */
  readonly publishLatency: HistogramSnapshot
  /** Subscribes that resumed from the client's position (`since`), by whether the replay was complete. */
  readonly resumes: { readonly recovered: number; readonly notRecovered: number }
  /** Connections that resumed at least one subscription: clients coming back after a disconnect. */
  readonly reconnections: number
  /** Live subscribers told that part of their stream is gone (history reset, dropped by retention). */
  readonly gapsReported: number
  /** At-least-once subscriptions waiting for an acknowledgment, and the messages they wait for. */
  readonly acksPending: { readonly subscriptions: number; readonly messages: number }
  /** Slow consumers: queues dropped (`slowConsumer: 'drop'`) and connections closed (4009). */
  readonly slowConsumers: { readonly dropped: number; readonly disconnected: number }
}

/** Close codes counted under their own label; any other counts as `other`. */
export const CLOSE_CODE_LABELS: readonly number[] = [1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1013, 4000, 4001, 4008, 4009, 4010]

/** Close codes that say a connection ended badly (lost, failed, or dropped by the server for its own health). */
export const ABNORMAL_CLOSE_CODES: readonly number[] = [1002, 1003, 1006, 1007, 1009, 1011, 4009, 4010]

/** Publish latency bounds, in microseconds (100 µs … 10 s). */
const LATENCY_BOUNDS_US = [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000]
/** Connection duration bounds, in milliseconds (1 s … 1 day). */
const DURATION_BOUNDS_MS = [1_000, 5_000, 15_000, 60_000, 300_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000, 43_200_000, 86_400_000]

/**
 * A histogram with fixed bounds in integer units: one array slot per bucket (not cumulative, so
 * an observation is one increment), the last slot for values above every bound.
 */
export class Histogram {
  readonly counts: number[]
  count = 0
  sum = 0

  constructor(
    readonly bounds: readonly number[],
    /** Units per second (1e6 for µs, 1e3 for ms). */
    private readonly perSecond: number,
  ) {
    this.counts = new Array<number>(bounds.length + 1).fill(0)
  }

  observe(v: number): void {
    const b = this.bounds
    let i = 0
    while (i < b.length && v > b[i]!) i++
    this.counts[i]!++
    this.count++
    this.sum += v
  }

  snapshot(): HistogramSnapshot {
    const counts: number[] = []
    let running = 0
    for (let i = 0; i < this.bounds.length; i++) {
      running += this.counts[i]!
      counts.push(running)
    }
    return { le: this.bounds.map((b) => b / this.perSecond), counts, count: this.count, sum: this.sum / this.perSecond }
  }
}

interface Performance {
  now(): number
}

/** What the snapshot reads from the hub's registries. */
export interface MetricsSources {
  readonly nodeId: string
  readonly connections: number
  readonly channels: Iterable<{ readonly name: string; readonly subscribers: { readonly size: number } }>
  readonly acksPending: { readonly subscriptions: number; readonly messages: number }
}

/**
 * The hub's counters. Everything the hot path touches is a plain integer field incremented in
 * place; histograms are an array increment; per-transport and per-close-code figures are small
 * objects keyed by a handful of names. Nothing here allocates per message.
 */
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
  /** Connections open now (kept here, so peaks are recorded without asking the registries). */
  open = 0
  peakConnections = 0
  peakConnectionsAt: number | undefined = undefined
  resumesRecovered = 0
  resumesNotRecovered = 0
  reconnections = 0
  gapsReported = 0
  slowConsumerDrops = 0
  slowConsumerDisconnects = 0
  readonly errors = Object.fromEntries(ALL_ERROR_CODES.map((c) => [c, 0])) as Record<ErrorCode, number>
  readonly transports: Record<string, { open: number; opened: number }> = Object.create(null) as Record<string, { open: number; opened: number }>
  readonly disconnects: Record<string, number> = Object.fromEntries([...CLOSE_CODE_LABELS.map((c) => [String(c), 0]), ['other', 0]]) as Record<string, number>
  readonly connectionDuration = new Histogram(DURATION_BOUNDS_MS, 1_000)
  readonly publishLatency = new Histogram(LATENCY_BOUNDS_US, 1_000_000)
  /** Activity, popularity, peaks by hour and engagement per user (`hub.analytics()`). */
  readonly analytics = new Analytics()
  /** A monotonic high-resolution time in ms for latencies with the system clock; the hub's clock otherwise (tests drive it). */
  private hr: () => number = highResolution()

  /** The hub's clock: latencies use it when it is not the system clock (a manual clock in tests). */
  useClock(clock: Clock): void {
    this.hr = clock === systemClock ? highResolution() : () => clock.now()
    this.analytics.since = clock.now()
  }

  /** A start time for {@link delivered}. */
  start(): number {
    return this.hr()
  }

  /**
   * A publish's frames were handed to this node's sessions: its latency, its channel's activity
   * (`now`: the hub clock's time the publish already read, so no second read of the clock).
   */
  delivered(channel: string, start: number, now: number): void {
    this.publishLatency.observe(Math.round((this.hr() - start) * 1_000))
    this.analytics.published(channel, now, this.open)
  }

  connectionOpened(transport: string, userId: string | undefined, now: number): void {
    this.connectionsOpened++
    const open = ++this.open
    if (open > this.peakConnections) {
      this.peakConnections = open
      this.peakConnectionsAt = now
    }
    let t = this.transports[transport]
    if (t === undefined) this.transports[transport] = t = { open: 0, opened: 0 }
    t.open++
    t.opened++
    this.analytics.connected(open, now, userId)
  }

  /** `sent`: publishes accepted from the connection (engagement of its user). */
  connectionClosed(transport: string, userId: string | undefined, code: number, connectedAt: number, sent: number, now: number): void {
    this.connectionsClosed++
    this.open--
    const t = this.transports[transport]
    if (t !== undefined) t.open--
    const label = CLOSE_CODE_LABELS.includes(code) ? String(code) : 'other'
    this.disconnects[label]!++
    this.connectionDuration.observe(Math.max(0, now - connectedAt))
    this.analytics.disconnected(userId, sent, connectedAt, now)
  }

  /** A subscribe with the client's own position was answered: complete replay or not. The connection's first resume is a reconnection. */
  resumed(conn: { resumed: boolean }, recovered: boolean): void {
    if (!conn.resumed) {
      conn.resumed = true
      this.reconnections++
    }
    if (recovered) this.resumesRecovered++
    else this.resumesNotRecovered++
  }

  snapshot(s: MetricsSources): MetricsSnapshot {
    const byChannel: Record<string, number> = {}
    let subscriptions = 0
    let channels = 0
    for (const c of s.channels) {
      byChannel[c.name] = c.subscribers.size
      subscriptions += c.subscribers.size
      channels++
    }
    const transports: Record<string, TransportFigures> = {}
    for (const [name, t] of Object.entries(this.transports)) transports[name] = { open: t.open, opened: t.opened }
    return {
      nodeId: s.nodeId,
      connections: s.connections,
      channels,
      subscriptions,
      subscriptionsByChannel: byChannel,
      messagesIn: this.messagesIn,
      messagesOut: this.messagesOut,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      published: this.published,
      dropped: this.dropped,
      queuedBytes: this.queuedBytes,
      redelivered: this.redelivered,
      deliveryFailed: this.deliveryFailed,
      connectionsOpened: this.connectionsOpened,
      connectionsClosed: this.connectionsClosed,
      errors: { ...this.errors },
      transports,
      peakConnections: this.peakConnections,
      peakConnectionsAt: this.peakConnectionsAt,
      disconnects: { ...this.disconnects },
      connectionDuration: this.connectionDuration.snapshot(),
      publishLatency: this.publishLatency.snapshot(),
      resumes: { recovered: this.resumesRecovered, notRecovered: this.resumesNotRecovered },
      reconnections: this.reconnections,
      gapsReported: this.gapsReported,
      acksPending: s.acksPending,
      slowConsumers: { dropped: this.slowConsumerDrops, disconnected: this.slowConsumerDisconnects },
    }
  }
}

function highResolution(): () => number {
  const p = (globalThis as { performance?: Performance }).performance
  if (p !== undefined && typeof p.now === 'function') return () => p.now()
  return () => Date.now()
}
