import type { ChannelOptions } from './channels.js'
import type { Subscription } from './connection.js'

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
  /** Occupants: user id (or `#<connectionId>` for anonymous) → connection count. */
  readonly occupants = new Map<string, number>()
  typing: Map<string, TypingState> | null = null

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
  add(sub: Subscription): boolean {
    this.subscribers.set(sub.connection.id, sub)
    const key = Channel.occupantKey(sub.connection.userId, sub.connection.id)
    const n = this.occupants.get(key) ?? 0
    this.occupants.set(key, n + 1)
    return n === 0
  }

  /** Removes a subscriber; true when its occupant has left the channel entirely. */
  remove(sub: Subscription): boolean {
    if (this.subscribers.get(sub.connection.id) !== sub) return false
    this.subscribers.delete(sub.connection.id)
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
