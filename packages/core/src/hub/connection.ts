import type { Codec } from '../codec.js'
import type { FilterPredicate } from '../filter.js'
import type { Identity } from '../ports/auth.js'
import type { MessageFrame } from '../protocol.js'
import type { Outbound, Session } from '../ports/session.js'
import type { Channel } from './channel.js'
import type { Metrics } from './metrics.js'
import { TokenBucket } from './rate-limit.js'

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

/**
 * One client connection as the hub sees it: identity, subscriptions, limits and the outbound
 * queue. Kept compact: the queue arrays exist only while the session is congested.
 */
export class Connection {
  readonly subscriptions = new Map<string, Subscription>()
  readonly userId: string | undefined
  readonly connectedAt: number
  lastSeen: number
  closed = false
  /** Tail of the in-order processing chain, while an inbound frame awaits something. */
  tail: Promise<void> | null = null
  preferences: CompiledPreferences | undefined
  /** What broadcast `where` filters see of this connection; made on first use. */
  private view: RecipientView['user'] | undefined = undefined
  /** Frames waiting for the session to drain, by priority class; null while uncongested. */
  private queues: [Outbound[], Outbound[], Outbound[]] | null = null
  private queuedBytes = 0
  private readonly messages: TokenBucket
  /** Made on the first presence update or typing frame: most connections never send one. */
  private presence: TokenBucket | undefined = undefined
  private readonly presenceRate: number

  constructor(
    readonly id: string,
    readonly session: Session,
    public identity: Identity,
    readonly codec: Codec,
    /** The connection uses the hub's codec, so it can take the shared encoded frame. */
    readonly sharedCodec: boolean,
    readonly nodeId: string,
    now: number,
    rates: { messagesPerSecond: number; presenceUpdatesPerSecond: number },
    public maxSubscriptions: number,
  ) {
    this.userId = identity.userId
    this.connectedAt = now
    this.lastSeen = now
    this.messages = new TokenBucket(rates.messagesPerSecond, rates.messagesPerSecond, now)
    this.presenceRate = rates.presenceUpdatesPerSecond
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
    return this.messages.take(now)
  }

  takePresenceToken(now: number): boolean {
    return (this.presence ??= new TokenBucket(this.presenceRate, this.presenceRate, now)).take(now)
  }

  messageRetryAfter(): number {
    return this.messages.retryAfter()
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
    const open = this.queues === null && this.sharedCodec && this.preferences === undefined && !this.closed
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
      while (i < q.length && !this.closed) {
        const frame = q[i++]!
        this.queuedBytes -= frame.bytes
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
    this.queuedBytes = 0
    this.refreshFastPath()
  }

  /** Under memory pressure, low priority goes first. */
  private shedLowPriority(metrics: Metrics): void {
    const low = this.queues?.[2]
    if (!low || low.length === 0) return
    for (const f of low) this.queuedBytes -= f.bytes
    metrics.dropped += low.length
    low.length = 0
  }

  /** Forget queued frames but stay connected (slow consumer policy `'drop'`). */
  dropQueued(): void {
    if (this.queues === null) return
    for (const q of this.queues) q.length = 0
    this.queuedBytes = 0
  }

  discardQueue(): void {
    this.queues = null
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
