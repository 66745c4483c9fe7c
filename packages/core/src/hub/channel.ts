import type { MessageFrame } from '@tidings/protocol'
import type { TimerHandle } from '../ports/clock.js'
import type { Outbound, Session } from '../ports/session.js'
import type { ChannelOptions } from './channels.js'
import type { Subscription } from './connection.js'
import type { LocalDispatch } from './routing.js'

/**
 * The fan-out view of a channel's subscribers: `subs[i]` and, when it can take the shared frame
 * with no check but exclusion (fast path, no filter), its session in `direct[i]`, else null.
 * Two dense arrays so the common case touches one object per subscriber: the session.
 */
export interface FanOutList {
  readonly subs: readonly Subscription[]
  readonly direct: ReadonlyArray<Session | null>
}

/** A live message that reached this node beyond a gap in the channel's offsets, waiting its turn. */
export interface HeldMessage {
  readonly frame: MessageFrame
  readonly out: Outbound
  /** The dispatch as this node applies it (exclusions, filter, priority); never a collector (its recipients were collected when it was held). */
  readonly dispatch: LocalDispatch
}

/** Typing state of one user in one channel. */
export interface TypingState {
  active: boolean
  lastSentAt: number
  clear: unknown
}

/**
 * A live channel on this node: its subscribers and who occupies it. Exists while it has
 * subscribers; the registry drops it when the last one leaves.
 */
export class Channel {
  /** Subscribers by connection id, in subscription order. */
  readonly subscribers = new Map<string, Subscription>()
  /**
   * The fan-out view, rebuilt after any change of membership or of a subscriber's fast-path
   * state. Fan-out iterates a snapshot, so subscriptions that end during a fan-out (a socket
   * that fails on write) do not disturb it; ended ones are skipped by their `active` flag.
   */
  private snapshot: FanOutList | null = null
  /** Authenticated occupants: user id → how many of the user's connections are subscribed. */
  private readonly users = new Map<string, number>()
  /** Anonymous occupants: each anonymous connection is an occupant of its own, so a count is enough. */
  private anonymous = 0
  typing: Map<string, TypingState> | null = null
  /** Connections subscribed here whose presence rule denies them: presence frames to the channel leave them out. */
  presenceDenied: Set<string> | null = null
  /** The newest offset fanned out here (at-most-once offline channels commit it as delivered). */
  lastOffset = 0
  /** The channel's client publish budget (`publishesPerMinute`), while it is live. */
  publishBucket: { tokens: number; refilledAt: number } | undefined = undefined
  /** The stream's epoch as last seen here (from a position or an append); undefined until known. */
  epoch: string | undefined = undefined
  /**
   * At-least-once channels (every subscriber tracked, `prev` on frames): offsets are fanned out
   * here in offset order only, each once, so a node never names in `prev` a range it has not
   * seen go by (see `sequence` below and docs/delivery.md §12).
   */
  readonly sequenced: boolean
  /**
   * Sequenced channels: every offset up to this one has gone by on this node (fanned out, or read
   * from the store to fill a gap); -1 until the first subscriber's position is known. A live
   * message at `sequence + 1` goes straight out (a single node never sees anything else).
   */
  sequence = -1
  /** Whether anything was fanned out since `sequence` was first set (until then a lower position may still lower it). */
  flowing = false
  /** The highest offset known to exist in the log (arrivals, positions); a gap while above `sequence`. */
  known = 0
  /** Live messages beyond a gap, by offset, until what precedes them has gone by; null when none. */
  held: Map<number, HeldMessage> | null = null
  /** When the gap is read from the store if the messages in it have not arrived (hub clock). */
  gapTimer: TimerHandle | undefined = undefined
  /** A store read of the gap is under way. */
  filling = false

  constructor(
    readonly name: string,
    readonly pattern: string,
    readonly options: ChannelOptions,
    readonly params: Readonly<Record<string, string>>,
    /** This hub is one node of several: messages of one channel may arrive out of offset order. */
    clustered = false,
  ) {
    // At-least-once channels always (prev must only name offsets seen here); other channels with
    // history on a cluster, so every subscriber gets a channel's messages in offset order even when
    // they were published on different nodes.
    this.sequenced = options.history !== false && (options.delivery === 'at-least-once' || clustered)
  }

  fanOutList(): FanOutList {
    if (this.snapshot === null) {
      const subs = [...this.subscribers.values()]
      this.snapshot = { subs, direct: subs.map((s) => (s.fast && s.filter === null && !s.tracked ? s.session : null)) }
    }
    return this.snapshot
  }

  /** A subscriber's fast-path state changed. */
  invalidate(): void {
    this.snapshot = null
  }

  /** Users (and anonymous connections) in the channel, however many connections each has. */
  get occupants(): number {
    return this.users.size + this.anonymous
  }

  /** Whether this connection's occupant (its user, or itself when anonymous) is already in. */
  occupiedBy(userId: string | undefined, connectionId: string): boolean {
    return userId !== undefined ? this.users.has(userId) : this.subscribers.has(connectionId)
  }

  /** Adds a subscriber; true when its occupant is new to the channel. */
  add(sub: Subscription): boolean {
    this.subscribers.set(sub.connection.id, sub)
    this.snapshot = null
    const userId = sub.connection.userId
    if (userId === undefined) {
      this.anonymous++
      return true
    }
    const n = this.users.get(userId) ?? 0
    this.users.set(userId, n + 1)
    return n === 0
  }

  /** Removes a subscriber; true when its occupant has left the channel entirely. */
  remove(sub: Subscription): boolean {
    if (this.subscribers.get(sub.connection.id) !== sub) return false
    this.subscribers.delete(sub.connection.id)
    this.snapshot = null
    sub.active = false
    const userId = sub.connection.userId
    if (userId === undefined) {
      this.anonymous--
      return true
    }
    const n = (this.users.get(userId) ?? 1) - 1
    if (n > 0) {
      this.users.set(userId, n)
      return false
    }
    this.users.delete(userId)
    return true
  }
}
