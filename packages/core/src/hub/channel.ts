import type { Session } from '../ports/session.js'
import type { ChannelOptions } from './channels.js'
import type { Subscription } from './connection.js'

/**
 * The fan-out view of a channel's subscribers: `subs[i]` and, when it can take the shared frame
 * with no check but exclusion (fast path, no filter), its session in `direct[i]`, else null.
 * Two dense arrays so the common case touches one object per subscriber: the session.
 */
export interface FanOutList {
  readonly subs: readonly Subscription[]
  readonly direct: ReadonlyArray<Session | null>
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
  /** Occupants: user id (or `#<connectionId>` for anonymous) → connection count. */
  readonly occupants = new Map<string, number>()
  typing: Map<string, TypingState> | null = null
  /** The newest offset fanned out here (at-most-once offline channels commit it as delivered). */
  lastOffset = 0
  /** The stream's epoch as last seen here (from a position or an append); undefined until known. */
  epoch: string | undefined = undefined

  constructor(
    readonly name: string,
    readonly pattern: string,
    readonly options: ChannelOptions,
    readonly params: Readonly<Record<string, string>>,
  ) {}

  static occupantKey(userId: string | undefined, connectionId: string): string {
    return userId ?? `#${connectionId}`
  }

  /** Adds a subscriber; true when its occupant is new to the channel. */
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

  add(sub: Subscription): boolean {
    this.subscribers.set(sub.connection.id, sub)
    this.snapshot = null
    const key = Channel.occupantKey(sub.connection.userId, sub.connection.id)
    const n = this.occupants.get(key) ?? 0
    this.occupants.set(key, n + 1)
    return n === 0
  }

  /** Removes a subscriber; true when its occupant has left the channel entirely. */
  remove(sub: Subscription): boolean {
    if (this.subscribers.get(sub.connection.id) !== sub) return false
    this.subscribers.delete(sub.connection.id)
    this.snapshot = null
    sub.active = false
    const key = Channel.occupantKey(sub.connection.userId, sub.connection.id)
    const n = (this.occupants.get(key) ?? 1) - 1
    if (n > 0) {
      this.occupants.set(key, n)
      return false
    }
    this.occupants.delete(key)
    return true
  }
}
