import type { FilterNode, Priority, ServerFrame } from '@tidings/protocol'
import type { MaybePromise } from '../util.js'

/** Where a dispatch goes. */
export type DispatchTarget =
  | { readonly kind: 'channel'; readonly channel: string }
  /** Every connection of these users and these connections, each once. */
  | { readonly kind: 'direct'; readonly users: readonly string[]; readonly connections: readonly string[] }
  | { readonly kind: 'all' }

/**
 * One routed frame: what a hub delivers to its local connections, and what a broker carries
 * to the other nodes so they deliver it to theirs. Plain data (JSON-serializable).
 */
export interface Dispatch {
  readonly kind: 'dispatch'
  /** Node id of the hub that published it. */
  readonly origin: string
  readonly target: DispatchTarget
  readonly frame: ServerFrame
  readonly exclude?: { readonly connections?: readonly string[]; readonly users?: readonly string[] } | undefined
  /** Only deliver to recipients that pass this filter (over `user.id`, `user.roles`, `user.claims.*`, `transport`). */
  readonly where?: FilterNode | undefined
  readonly priority?: Priority | undefined
  /** May be dropped under backpressure. */
  readonly volatile?: boolean | undefined
  /** The channel stream's epoch, for messages with an offset: a change tells subscribers their history was reset. */
  readonly epoch?: string | undefined
}

/**
 * A question or an action for every other node (list connections, disconnect, kick, deliver and
 * wait for acknowledgments): each node that takes it answers with one `Reply` to `origin`.
 * Plain data.
 */
export interface Request {
  readonly kind: 'request'
  readonly origin: string
  /** Unique per origin: replies carry it back. */
  readonly id: string
  readonly query: ClusterQuery
}

/** What a request asks of each node. Every node answers, with what it has (possibly nothing). */
export type ClusterQuery =
  /** The node's connections matching the filter (all of them without one): answers `ConnectionInfo[]`. */
  | { readonly op: 'connections'; readonly userId?: string | undefined; readonly channel?: string | undefined; readonly connectionId?: string | undefined; readonly limit?: number | undefined }
  /** Close a connection or every connection of a user: answers how many the node closed. */
  | { readonly op: 'disconnect'; readonly userId?: string | undefined; readonly connectionId?: string | undefined; readonly reason: string }
  /** Unsubscribe a user from a channel: answers how many subscriptions the node ended. */
  | { readonly op: 'kick'; readonly channel: string; readonly userId: string; readonly reason: string }
  /**
   * Deliver a dispatch (an acknowledged message) and answer once every local recipient
   * acknowledged it or `waitMs` passed: `{ acknowledged, unacknowledged }`.
   */
  | { readonly op: 'deliver'; readonly dispatch: Dispatch; readonly waitMs: number }
  /** Forget what the node remembers of a user besides its connections (analytics engagement; `hub.eraseUser`): answers whether it had any. */
  | { readonly op: 'forget'; readonly userId: string }

/** One node's answer to a request, addressed to the node that asked. Plain data. */
export interface Reply {
  readonly kind: 'reply'
  /** The node answering. */
  readonly origin: string
  /** The node that asked: the only one it is delivered to. */
  readonly to: string
  /** The request's id. */
  readonly id: string
  readonly result: unknown
}

/** What crosses the broker. */
export type ClusterMessage = Dispatch | Request | Reply

/**
 * Carries messages between hub nodes. A single node needs none (the in-memory default does
 * nothing); a cluster uses one per node over a shared bus (Redis pub/sub, …). Every
 * implementation passes `brokerConformance` (`@tidings/core/conformance`).
 *
 * Routing, by what a message is:
 * - a dispatch to a channel (`target.kind === 'channel'`) reaches the nodes that `subscribe`d to
 *   that channel (a node subscribes while it has local subscribers), so traffic grows with
 *   interest, not with the number of nodes;
 * - any other dispatch (to users, connections, everyone) and every request reach every other node;
 * - a reply reaches only the node named in `to`.
 *
 * And for every message:
 * - a node receives it at most once, and in publish order per publisher and route (a channel's
 *   dispatches, the messages to every node, the replies to one node: on a sharded bus such as a
 *   Redis Cluster these travel apart, so nothing is ordered between them);
 * - what arrives is a deep copy (plain JSON data): never the published object, and each node its own;
 * - a `deliver` that throws keeps the message from no other node, and later messages still reach it.
 */
export interface Broker {
  /**
   * Start delivering messages from other nodes to `deliver`. Called once per hub. Once it has
   * answered, every message published later by another node and routed to this node MUST be
   * delivered (whether earlier ones are is the implementation's choice). MUST NOT deliver
   * messages whose `origin` is `nodeId` (the hub already delivered its own).
   */
  start(nodeId: string, deliver: (message: ClusterMessage) => void, hooks?: BrokerHooks): MaybePromise<void>
  /**
   * Send a message to the nodes its kind routes it to. MUST NOT throw synchronously, even for a
   * message that is not plain data; a failure is reported by rejecting, and the hub passes it to
   * `onError` without failing the publisher. On a closed broker it MUST deliver nothing.
   */
  publish(message: ClusterMessage): MaybePromise<void>
  /**
   * This node wants the dispatches of `channel` (it has a subscriber for it). Once it has
   * answered, every dispatch to the channel published later by another node MUST be delivered.
   * Subscribing twice is subscribing once. Calls of `subscribe` and `unsubscribe` take effect in
   * the order they were made.
   */
  subscribe(channel: string): MaybePromise<void>
  /** This node no longer wants the dispatches of `channel`. Harmless when not subscribed. */
  unsubscribe(channel: string): MaybePromise<void>
  /** Stop delivering to this node and release connections. Idempotent; harmless before `start`. */
  close(): MaybePromise<void>
  /**
   * Whether the broker reaches its bus now, and since when (ms, the same time base as the hub's
   * clock: `Date.now()` for the system clock). Optional: a broker without it counts as up. The
   * hub's `health()` reports it, unhealthy once it has been down past `nodes.unhealthyAfterMs`.
   */
  health?(): BrokerHealth
}

/** What a broker tells the hub besides messages. */
export interface BrokerHooks {
  /**
   * The broker lost its bus and is subscribed again: messages published meanwhile may be
   * missing. The hub compares its live channels with their streams at once (live gap detection).
   */
  resumed?(): void
  /**
   * A failure inside the broker, not the answer to a call (its connection dropped, a message
   * that failed validation): the hub reports it like its own (`onError` with stage `broker`, the
   * logger, the `error` event).
   */
  error?(error: unknown): void
}

/** A broker's view of its bus. */
export interface BrokerHealth {
  readonly state: 'up' | 'down'
  /** When it entered this state. */
  readonly since: number
}
