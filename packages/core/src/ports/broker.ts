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
 * does nothing); a cluster uses one per node over a shared bus (Redis pub/sub, …). Every
 * implementation passes `brokerConformance` (`@tidings/core/conformance`):
 *
 * - every other started node receives each message exactly once, in publish order per publisher;
 * - what arrives is a deep copy (plain JSON data): never the published object, and each node its own;
 * - a `deliver` that throws keeps the message from no other node, and later messages still reach it.
 */
export interface Broker {
  /**
   * Start delivering messages published by other nodes to `deliver`. Called once per hub. Once
   * it has answered, every message published later by another node MUST be delivered (whether
   * earlier ones are is the implementation's choice). MUST NOT deliver messages whose `origin`
   * is `nodeId` (the hub already delivered its own).
   */
  start(nodeId: string, deliver: (message: ClusterMessage) => void): MaybePromise<void>
  /**
   * Send a message to every other node. MUST NOT throw synchronously, even for a message that
   * is not plain data; a failure is reported by rejecting, and the hub passes it to `onError`
   * without failing the publisher. On a closed broker it MUST deliver nothing.
   */
  publish(message: ClusterMessage): MaybePromise<void>
  /** Stop delivering to this node and release connections. Idempotent; harmless before `start`. */
  close(): MaybePromise<void>
}
