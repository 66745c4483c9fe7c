import type { Codec, WireData, FilterPredicate, MessageFrame } from '@tidings/protocol'
import type { Identity } from '../ports/auth.js'
import type { ConnectionHandle, Outbound, Session } from '../ports/session.js'
import type { Channel } from './channel.js'
import type { Metrics } from './metrics.js'
import { type Bucket, fullBucket, retryAfterMs, takeToken } from './rate-limit.js'
import type { SubscriptionRights } from '../rules/rights.js'

/** Priority classes of the outbound queue: index 0 drains first. */
export const PRIORITY = { high: 0, normal: 1, low: 2 } as const
export type PriorityClass = (typeof PRIORITY)[keyof typeof PRIORITY]

/** What a delivery did with a frame. */
export const enum Delivery {
  Sent = 0,
  Queued = 1,
  Dropped = 2,
}

export interface Subscription {
  readonly connection: Connection
  /** The connection's session, here so the fan-out fast path touches one object per subscriber. */
  readonly session: Session
  /** False once the subscription ended (fan-out snapshots may still hold it). */
  active: boolean
  /**
   * True when a fan-out may write the shared frame straight to the session: active, the
   * connection uncongested, on the hub's codec, with no replay under way and no preferences
   * (tracked subscriptions still track, on their own fast path). Kept current by
   * `Connection.refreshFastPath()`.
   */
  fast: boolean
  readonly channel: Channel
  filter: FilterPredicate | null
  /** Cached result of the publish rule for this connection on this channel. */
  canPublish: boolean | undefined
  /** Until the `subscribed` reply (and any replay) is out: live messages wait here. */
  replay: Array<[MessageFrame, Outbound]> | null
  /** At-least-once: every message to this subscriber is tracked for acknowledgment. */
  readonly tracked: boolean
  /** Offset of the last message sent to this subscriber (its position, before any was sent). */
  lastSent: number
  /** Highest offset the subscriber acknowledged (cumulative). */
  acked: number
  /** Redelivery attempts since the last acknowledgment that made progress. */
  attempts: number
  /** When unacknowledged messages are due to be sent again (hub clock). */
  deadline: number
  /** In the hub's set of subscriptions waiting for acknowledgments. */
  pending: boolean
  /** Holds a seat of the channel's capacity in the presence store (a cluster counts occupants there). */
  seated: boolean
  /** What the rules decided for it (presence, grant, the `auth` it subscribed with, re-checks). */
  readonly rights: SubscriptionRights
}

const NONE: readonly Subscription[] = []

/**
 * A connection's subscriptions by channel name. Most connections hold one or a few; the first is
 * kept in a field and a Map is made only for a second, which saves ~180 bytes on every
 * single-channel connection. Keyed by `sub.channel.name`, so no key string is kept twice.
 */
export class Subscriptions {
  private one: Subscription | undefined = undefined
  private many: Map<string, Subscription> | undefined = undefined

  get size(): number {
    return this.many !== undefined ? this.many.size : this.one !== undefined ? 1 : 0
  }

  get(channel: string): Subscription | undefined {
    if (this.many !== undefined) return this.many.get(channel)
    const one = this.one
    return one !== undefined && one.channel.name === channel ? one : undefined
  }

  has(channel: string): boolean {
    return this.get(channel) !== undefined
  }

  /** Adds (or replaces) the subscription to `sub.channel`. */
  add(sub: Subscription): void {
    const name = sub.channel.name
    if (this.many !== undefined) this.many.set(name, sub)
    else if (this.one === undefined || this.one.channel.name === name) this.one = sub
    else {
      this.many = new Map([[this.one.channel.name, this.one], [name, sub]])
      this.one = undefined
    }
  }

  delete(channel: string): boolean {
    if (this.many !== undefined) return this.many.delete(channel)
    if (this.one === undefined || this.one.channel.name !== channel) return false
    this.one = undefined
    return true
  }

  values(): Iterable<Subscription> {
    if (this.many !== undefined) return this.many.values()
    return this.one !== undefined ? [this.one] : NONE
  }

  keys(): Iterable<string> {
    if (this.many !== undefined) return this.many.keys()
    return this.one !== undefined ? [this.one.channel.name] : []
  }
}

/** Compiled per-user preferences, applied by the hub at fan-out. */
export interface CompiledPreferences {
  readonly mutedChannels: ReadonlySet<string>
  readonly mutedEvents: ReadonlySet<string>
  readonly typing: boolean
  readonly readReceipts: boolean
}

/** The view of a recipient that broadcast filters (`where`) see. */
export interface RecipientView {
  readonly event: string
  readonly data: unknown
  readonly user: { readonly id: string | undefined; readonly roles: readonly string[]; readonly claims: Readonly<Record<string, unknown>> }
  readonly transport: string
}

export interface QueueLimits {
  /** More queued bytes than this and the connection is dropped as a slow consumer. */
  readonly maxQueuedBytes: number
}

/** Public, copyable facts about a connection. */
export interface ConnectionInfo {
  readonly id: string
  readonly userId: string | undefined
  readonly channels: string[]
  readonly connectedAt: number
  readonly lastSeen: number
  readonly userAgent: string | undefined
  readonly transport: string
  readonly ip: string | undefined
  readonly nodeId: string
}

/** What a connection needs of its hub: hub-wide settings, and where the transport's calls go. */
export interface ConnectionHost {
  readonly nodeId: string
  /** The hub's codec: a connection on it takes the shared encoded frame. */
  readonly codec: Codec
  readonly limits: { readonly messagesPerSecond: number; readonly presenceUpdatesPerSecond: number; readonly highWaterMark: number }
  handleReceive(conn: Connection, data: WireData): void
  handleDrained(conn: Connection): void
  handleClosed(conn: Connection, code: number, reason: string): void
}

/**
 * One client connection as the hub sees it: identity, subscriptions, limits and the outbound
 * queue. It is also the handle the transport holds (`ConnectionHandle`). Kept compact, as there
 * is one per socket: hub-wide settings are read from the host, the frame rate bucket is two
 * fields of its own, and the queue arrays exist only while the session is congested.
 */
export class Connection implements ConnectionHandle, Bucket {
  readonly subscriptions = new Subscriptions()
  readonly userId: string | undefined
  readonly connectedAt: number
  lastSeen: number
  /** Gone: dropped by the hub (the transport closed it, or the hub did). */
  ended = false
  /** Tail of the in-order processing chain, while an inbound frame awaits something. */
  tail: Promise<void> | null = null
  /** Frames queued behind `tail`. */
  waiting = 0
  preferences: CompiledPreferences | undefined
  /** Publishes accepted from this connection (its user's engagement, `hub.analytics()`). */
  sent = 0
  /** Resumed a subscription from its own position at least once (counted once as a reconnection). */
  resumed = false
  /** Frame rate limit: the connection is its own token bucket. */
  tokens: number
  refilledAt: number
  /** What broadcast `where` filters see of this connection; made on first use. */
  private view: RecipientView['user'] | undefined = undefined
  /** Frames waiting for the session to drain, by priority class; null while uncongested. */
  private queues: [Outbound[], Outbound[], Outbound[]] | null = null
  private queuedBytes = 0
  /** Made on the first presence update or typing frame: most connections never send one. */
  private presence: Bucket | undefined = undefined

  constructor(
    private readonly host: ConnectionHost,
    readonly id: string,
    readonly session: Session,
    public identity: Identity,
    readonly codec: Codec,
    now: number,
    public maxSubscriptions: number,
  ) {
    this.userId = identity.userId
    this.connectedAt = now
    this.lastSeen = now
    this.tokens = host.limits.messagesPerSecond
    this.refilledAt = now
  }

  // ---------------------------------------------------------------- ConnectionHandle

  get highWaterMark(): number {
    return this.host.limits.highWaterMark
  }

  receive(data: WireData): void {
    this.host.handleReceive(this, data)
  }

  drained(): void {
    this.host.handleDrained(this)
  }

  closed(code?: number, reason?: string): void {
    this.host.handleClosed(this, code ?? 1006, reason ?? '')
  }

  // ----------------------------------------------------------------

  /** The connection uses the hub's codec, so it can take the shared encoded frame. */
  get sharedCodec(): boolean {
    return this.codec === this.host.codec
  }

  get nodeId(): string {
    return this.host.nodeId
  }

  get recipient(): RecipientView['user'] {
    const i = this.identity
    return (this.view ??= { id: i.userId, roles: i.roles ?? [], claims: i.claims ?? {} })
  }

  /** The identity changed (token refresh): filters see the new one. */
  set recipient(view: RecipientView['user']) {
    this.view = view
  }

  takeMessageToken(now: number): boolean {
    return takeToken(this, this.host.limits.messagesPerSecond, now)
  }

  /** Take part of a frame token (acks); false when less than that is left. */
  takeFractionalToken(now: number, cost: number): boolean {
    return takeToken(this, this.host.limits.messagesPerSecond, now, cost)
  }

  takePresenceToken(now: number): boolean {
    const rate = this.host.limits.presenceUpdatesPerSecond
    return takeToken((this.presence ??= fullBucket(rate, now)), rate, now)
  }

  messageRetryAfter(): number {
    return retryAfterMs(this, this.host.limits.messagesPerSecond)
  }

  /**
   * Hand one frame to the session, or queue it while the session is congested (its last
   * `send` returned false and it has not drained since). Volatile frames are dropped instead
   * of queued; the caller drops the connection when `overLimit()`.
   */
  write(frame: Outbound, priority: PriorityClass, volatile: boolean, limits: QueueLimits, metrics: Metrics): Delivery {
    if (this.queues === null) {
      metrics.messagesOut++
      metrics.bytesOut += frame.bytes
      if (!this.session.send(frame)) this.congest()
      return Delivery.Sent
    }
    if (volatile) {
      metrics.dropped++
      return Delivery.Dropped
    }
    this.queues[priority].push(frame)
    this.queuedBytes += frame.bytes
    metrics.queuedBytes += frame.bytes
    if (this.queuedBytes > limits.maxQueuedBytes) this.shedLowPriority(metrics)
    return Delivery.Queued
  }

  /** The session said it is full: queue from now on until it drains. */
  congest(): void {
    if (this.queues !== null) return
    this.queues = [[], [], []]
    this.refreshFastPath()
  }

  refreshFastPath(): void {
    const open = this.queues === null && this.sharedCodec && this.preferences === undefined && !this.ended
    for (const sub of this.subscriptions.values()) {
      const fast = open && sub.active && sub.replay === null
      if (fast !== sub.fast) {
        sub.fast = fast
        sub.channel.invalidate()
      }
    }
  }

  /** True when queued bytes are over the limit even after shedding: the caller drops the connection. */
  overLimit(limits: QueueLimits): boolean {
    return this.queuedBytes > limits.maxQueuedBytes
  }

  get congested(): boolean {
    return this.queues !== null
  }

  get queued(): number {
    return this.queues === null ? 0 : this.queues[0].length + this.queues[1].length + this.queues[2].length
  }

  /** The session drained: write queued frames, highest priority first, until it is full again. */
  flush(metrics: Metrics): void {
    const queues = this.queues
    if (queues === null) return
    for (const q of queues) {
      let i = 0
      while (i < q.length && !this.ended) {
        const frame = q[i++]!
        this.queuedBytes -= frame.bytes
        metrics.queuedBytes -= frame.bytes
        metrics.messagesOut++
        metrics.bytesOut += frame.bytes
        if (!this.session.send(frame)) {
          q.splice(0, i)
          return
        }
      }
      q.length = 0
    }
    this.queues = null
    metrics.queuedBytes -= this.queuedBytes
    this.queuedBytes = 0
    this.refreshFastPath()
  }

  /** Under memory pressure, low priority goes first. */
  private shedLowPriority(metrics: Metrics): void {
    const low = this.queues?.[2]
    if (!low || low.length === 0) return
    for (const f of low) {
      this.queuedBytes -= f.bytes
      metrics.queuedBytes -= f.bytes
    }
    metrics.dropped += low.length
    low.length = 0
  }

  /** Forget queued frames but stay connected (slow consumer policy `'drop'`). */
  dropQueued(metrics: Metrics): void {
    if (this.queues === null) return
    for (const q of this.queues) q.length = 0
    metrics.queuedBytes -= this.queuedBytes
    this.queuedBytes = 0
  }

  /** Bytes waiting in this connection's queue. */
  get pendingBytes(): number {
    return this.queuedBytes
  }

  discardQueue(metrics: Metrics): void {
    this.queues = null
    metrics.queuedBytes -= this.queuedBytes
    this.queuedBytes = 0
    for (const sub of this.subscriptions.values()) {
      sub.fast = false
      sub.channel.invalidate()
    }
  }

  info(): ConnectionInfo {
    return {
      id: this.id,
      userId: this.userId,
      channels: [...this.subscriptions.keys()],
      connectedAt: this.connectedAt,
      lastSeen: this.lastSeen,
      userAgent: this.session.userAgent,
      transport: this.session.transport,
      ip: this.session.remoteAddress,
      nodeId: this.nodeId,
    }
  }
}
