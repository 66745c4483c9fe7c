import type {PresenceMember} from '@tidings/protocol'
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
 * Who is in which presence channel, across nodes. Entries are per connection; **members are
 * users**. Every implementation passes `presenceConformance` (`@tidings/core/conformance`).
 *
 * - A member's `state` and `data` MUST be those of the user's most recently updated entry (ties:
 *   the one joined or updated last); `connections` MUST count its entries; `joinedAt` is its
 *   earliest entry's; `lastSeen` its latest entry's `updatedAt`.
 * - Edges are user-level: of a user's entries in a channel, only the first `join` reports
 *   `edge: true`, and only the `leave` (or `removeNode`) that removes the last one does.
 * - Time comes only from the arguments (`joinedAt`/`updatedAt`, `now`): an implementation MUST
 *   NOT read a clock of its own.
 * - Nodes heartbeat (`heartbeat`); a node that stops is found by `deadNodes` and its entries are
 *   removed by `removeNode`, whose changes are reported once in total however many nodes race
 *   to remove it (each leave is announced once).
 */
export interface PresenceStore {
  /**
   * Add (or replace) a connection's entry. `edge` MUST be true exactly when the user had no entry
   * in the channel. Joining again with the same connection replaces the entry (no new edge, one
   * connection).
   */
  join(entry: PresenceEntry): MaybePromise<PresenceChange>
  /**
   * Change state and/or data of a connection's entry in place (what is not given is kept) and set
   * its `updatedAt` to `now`; MUST record `now` as the user's last-seen time. Answers the member
   * as it now is; undefined when there is no such entry (and nothing is created).
   */
  update(channel: string, connectionId: string, patch: { state?: string | undefined; data?: Readonly<Record<string, unknown>> | undefined; now: number }): MaybePromise<PresenceMember | undefined>
  /**
   * Remove a connection's entry and record `now` as the user's last-seen time. `edge` MUST be true
   * when it was the user's last entry in the channel (the member then has `connections: 0` and
   * `lastSeen: now`). Undefined when there was none: leaving twice reports once.
   */
  leave(channel: string, connectionId: string, now: number): MaybePromise<PresenceChange | undefined>
  /** Current members of a channel (users, each once); empty for an unknown channel. */
  members(channel: string): MaybePromise<PresenceMember[]>
  /** Every connection entry of a channel (the per-tab view); empty for an unknown channel. */
  entries(channel: string): MaybePromise<PresenceEntry[]>
  /** When the user was last seen (left a channel or updated), if known. */
  lastSeen(userId: string): MaybePromise<number | undefined>
  /**
   * Remove every entry held by a node (it died) and forget its heartbeat; returns each
   * resulting change (`edge: true` where a user's last entry in a channel went), with `now` as the
   * users' last-seen time. MUST be remove-once: when several nodes call it for the same node at
   * once, each entry's removal is reported by exactly one of the calls (the others answer
   * without it), so every leave is announced once across the cluster.
   */
  removeNode(nodeId: string, now: number): MaybePromise<Array<{ channel: string; change: PresenceChange }>>
  /**
   * Node `nodeId` is alive at `now`. A node calls it periodically (well within the TTL it is
   * judged by). A node's heartbeat time never moves back (an older `now` is ignored). Answers
   * whether the store already had a heartbeat of this node: `false` the first time, and after
   * the node was removed (`removeNode`, by a node that judged it dead while it was only slow) or
   * the store lost its data (a Redis restart without persistence). A node that had beaten before
   * and hears `false` joins its entries again.
   */
  heartbeat(nodeId: string, now: number): MaybePromise<boolean>
  /**
   * Nodes that hold entries and are silent: their last heartbeat is more than `ttlMs` before
   * `now`, or, for a node that never heartbeated, the newest `joinedAt`/`updatedAt` of its
   * entries is. A node exactly `ttlMs` old is still alive; a node without entries is never
   * listed. The caller then removes each with `removeNode`.
   */
  deadNodes(now: number, ttlMs: number): MaybePromise<string[]>
  /**
   * Nodes whose last heartbeat is at most `ttlMs` before `now` (entries or not): the nodes a
   * cluster-wide question waits for. A node removed with `removeNode` is not listed until it
   * heartbeats again.
   */
  liveNodes(now: number, ttlMs: number): MaybePromise<string[]>
}
