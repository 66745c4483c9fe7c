import type { FilterNode } from '../filter.js'
import type { Priority, ServerFrame } from '../protocol.js'
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

/** An administrative action every node applies to its own connections. */
export interface Command {
  readonly kind: 'command'
  readonly origin: string
  readonly command:
    | { readonly op: 'kick'; readonly channel: string; readonly userId: string; readonly reason: string }
    | { readonly op: 'disconnect'; readonly userId?: string | undefined; readonly connectionId?: string | undefined; readonly reason: string }
}

/** What crosses the broker. */
export type ClusterMessage = Dispatch | Command

/**
 * Carries dispatches between hub nodes. A single node needs none (the in-memory default
 * does nothing); a cluster uses one per node over a shared bus (Redis pub/sub, …).
 */
export interface Broker {
  /**
   * Start delivering dispatches published by other nodes to `deliver`. Called once per hub.
   * MUST NOT deliver messages whose `origin` is `nodeId` (the hub already delivered its own).
   */
  start(nodeId: string, deliver: (message: ClusterMessage) => void): MaybePromise<void>
  /**
   * Send a message to every other node. MUST NOT throw synchronously; a failure is reported
   * by rejecting, and the hub passes it to `onError` without failing the publisher.
   */
  publish(message: ClusterMessage): MaybePromise<void>
  /** Stop delivering and release connections. Idempotent. */
  close(): MaybePromise<void>
}
