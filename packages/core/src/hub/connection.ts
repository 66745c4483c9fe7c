import type { Codec } from '../codec.js'
import type { FilterPredicate } from '../filter.js'
import type { Identity } from '../ports/auth.js'
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
  readonly channel: Channel
  filter: FilterPredicate | null
  /** Cached result of the publish rule for this connection on this channel. */
  canPublish: boolean | undefined
  /** While a resubscribe replays missed messages: live frames wait here as [offset, frame]. */
  replay: Array<[number, Outbound]> | null
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
  /** Above this many buffered bytes in the session, frames wait in the hub's queue. */
  readonly highWaterMark: number
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
  readonly recipient: RecipientView['user']
  private queues: [Outbound[], Outbound[], Outbound[]] | null = null
  private queuedBytes = 0
  private readonly messages: TokenBucket
  private readonly presence: TokenBucket

  constructor(
    readonly id: string,
    readonly session: Session,
    public identity: Identity,
    readonly codec: Codec,
    readonly nodeId: string,
    now: number,
    rates: { messagesPerSecond: number; presenceUpdatesPerSecond: number },
    public maxSubscriptions: number,
  ) {
    this.userId = identity.userId
    this.connectedAt = now
    this.lastSeen = now
    this.messages = new TokenBucket(rates.messagesPerSecond, rates.messagesPerSecond, now)
    this.presence = new TokenBucket(rates.presenceUpdatesPerSecond, rates.presenceUpdatesPerSecond, now)
    this.recipient = { id: identity.userId, roles: identity.roles ?? [], claims: identity.claims ?? {} }
  }

  takeMessageToken(now: number): boolean {
    return this.messages.take(now)
  }

  takePresenceToken(now: number): boolean {
    return this.presence.take(now)
  }

  messageRetryAfter(): number {
    return this.messages.retryAfter()
  }

  /**
   * Hand one frame to the session, or queue it while the session is over its high-water mark.
   * Volatile frames are dropped instead of queued. Returns false when the connection had to be
   * dropped as a slow consumer.
   */
  write(frame: Outbound, priority: PriorityClass, volatile: boolean, limits: QueueLimits, metrics: Metrics): Delivery {
    if (this.queues === null && this.session.bufferedAmount() < limits.highWaterMark) {
      this.session.send(frame)
      metrics.messagesOut++
      metrics.bytesOut += frame.bytes
      return Delivery.Sent
    }
    if (volatile) {
      metrics.dropped++
      return Delivery.Dropped
    }
    const queues = (this.queues ??= [[], [], []])
    queues[priority].push(frame)
    this.queuedBytes += frame.bytes
    if (this.queuedBytes > limits.maxQueuedBytes) this.shedLowPriority(metrics)
    return Delivery.Queued
  }

  /** True when queued bytes are over the limit even after shedding: the caller drops the connection. */
  overLimit(limits: QueueLimits): boolean {
    return this.queuedBytes > limits.maxQueuedBytes
  }

  get queued(): number {
    return this.queues === null ? 0 : this.queues[0].length + this.queues[1].length + this.queues[2].length
  }

  /** Write queued frames, highest priority first, while the session has room. */
  flush(limits: QueueLimits, metrics: Metrics): void {
    const queues = this.queues
    if (queues === null) return
    for (const q of queues) {
      let i = 0
      while (i < q.length && this.session.bufferedAmount() < limits.highWaterMark && !this.closed) {
        const frame = q[i++]!
        this.queuedBytes -= frame.bytes
        this.session.send(frame)
        metrics.messagesOut++
        metrics.bytesOut += frame.bytes
      }
      q.splice(0, i)
      if (q.length > 0) return
    }
    this.queues = null
    this.queuedBytes = 0
  }

  /** Under memory pressure, low priority goes first. */
  private shedLowPriority(metrics: Metrics): void {
    const low = this.queues?.[2]
    if (!low || low.length === 0) return
    for (const f of low) this.queuedBytes -= f.bytes
    metrics.dropped += low.length
    low.length = 0
  }

  discardQueue(): void {
    this.queues = null
    this.queuedBytes = 0
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
