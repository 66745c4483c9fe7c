import type { PresenceMember } from '../protocol.js'
import type { MaybePromise } from '../util.js'

/** One connection's presence in a channel. A user is one member however many entries it has. */
export interface PresenceEntry {
  readonly channel: string
  readonly connectionId: string
  readonly userId: string
  /** The hub node that holds the connection; used to expire a dead node's entries. */
  readonly nodeId: string
  readonly state: string
  readonly data: Readonly<Record<string, unknown>>
  readonly joinedAt: number
  readonly updatedAt: number
}

export interface PresenceChange {
  readonly member: PresenceMember
  /** join: this was the user's first entry in the channel; leave: its last one. */
  readonly edge: boolean
}

/**
 * Who is in which presence channel, across nodes. Members are users: the member's state and
 * data are those of the user's most recently updated entry; `connections` counts entries.
 */
export interface PresenceStore {
  /** Add (or replace) a connection's entry. `edge` is true when the user was not yet a member. */
  join(entry: PresenceEntry): MaybePromise<PresenceChange>
  /** Change state and/or data of a connection's entry in place. Undefined when there is no entry. */
  update(channel: string, connectionId: string, patch: { state?: string | undefined; data?: Readonly<Record<string, unknown>> | undefined; now: number }): MaybePromise<PresenceMember | undefined>
  /** Remove a connection's entry. `edge` is true when it was the user's last. Undefined when there was none. */
  leave(channel: string, connectionId: string, now: number): MaybePromise<PresenceChange | undefined>
  /** Current members of a channel. */
  members(channel: string): MaybePromise<PresenceMember[]>
  /** Every connection entry of a channel (the per-tab view). */
  entries(channel: string): MaybePromise<PresenceEntry[]>
  /** When the user was last seen (left a channel or updated), if known. */
  lastSeen(userId: string): MaybePromise<number | undefined>
  /** Remove every entry held by a node (it died); returns each channel's resulting change. */
  removeNode(nodeId: string, now: number): MaybePromise<Array<{ channel: string; change: PresenceChange }>>
}
