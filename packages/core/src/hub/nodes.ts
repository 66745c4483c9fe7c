import type { Clock, TimerHandle } from '../ports/clock.js'
import type { PresenceChange, PresenceStore } from '../ports/presence.js'
import { type MaybePromise, andThen, isPromise } from '../util.js'
import type { Signals } from './events.js'

/** What the node watch needs from the hub. */
export interface NodeWatchHost {
  readonly nodeId: string
  readonly clock: Clock
  readonly presenceStore: PresenceStore
  readonly heartbeatMs: number
  readonly nodeTtlMs: number
  /** A dead node's presence entries were removed (this node won the removal): announce each change once. */
  nodeGone(nodeId: string, changes: ReadonlyArray<{ channel: string; change: PresenceChange }>): void
  /** Every beat: compare live channels with their streams (what the bus may have missed). */
  beat(): void
  /**
   * The store no longer knew this node (it lost its data, or another node removed this one while
   * it was only slow): join this node's entries again, quietly (nobody was told they left).
   */
  rejoin(): void
  readonly signals: Signals
}

/**
 * This node among others, seen through the presence store: it heartbeats every `heartbeatMs`,
 * and on each beat removes the nodes that stopped (silent for more than `nodeTtlMs`), so a node
 * that died without closing leaves no members behind; the store's remove-once `removeNode` makes
 * each leave announced once however many nodes notice. A store that no longer knows this node
 * (it lost its data, or this node was removed while only slow) gets its entries again.
 */
export class NodeWatch {
  private timer: TimerHandle | undefined
  private stopped = false
  /** A heartbeat of this node was stored before (so a store that does not know it lost it). */
  private beaten = false

  constructor(private readonly host: NodeWatchHost) {}

  /**
   * Start heartbeating. First, whatever the store still holds under this node's id is removed
   * (each leave announced once): a node restarted with the same id within the TTL would
   * otherwise leave its previous run's members and connection places behind for good. Resolves
   * once that is done; the hub admits no connection before.
   */
  start(): MaybePromise<void> {
    const { presenceStore: store, nodeId, clock } = this.host
    let cleared: MaybePromise<void>
    try {
      cleared = andThen(store.removeNode(nodeId, clock.now()), (changes) => {
        if (changes.length > 0) this.host.nodeGone(nodeId, changes)
      })
    } catch (err) {
      cleared = Promise.reject(err)
    }
    const go = () => this.beat()
    if (!isPromise(cleared)) return go()
    return cleared.then(go, (err) => {
      this.host.signals.report(err, 'nodes.start')
      go()
    })
  }

  stop(): void {
    this.stopped = true
    if (this.timer !== undefined) this.host.clock.clearTimeout(this.timer)
    this.timer = undefined
  }

  private beat(): void {
    if (this.stopped) return
    const { clock, presenceStore: store, nodeId, nodeTtlMs } = this.host
    const now = clock.now()
    try {
      const r = andThen(store.heartbeat(nodeId, now), (known) => {
        if (this.beaten && known === false && !this.stopped) this.host.rejoin()
        this.beaten = true
        return andThen(store.deadNodes(now, nodeTtlMs), (dead) => this.remove(dead.filter((n) => n !== nodeId), now))
      })
      if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'nodes.heartbeat'))
    } catch (err) {
      this.host.signals.report(err, 'nodes.heartbeat')
    }
    try {
      this.host.beat()
    } catch (err) {
      this.host.signals.report(err, 'nodes.beat')
    }
    this.timer = clock.setTimeout(() => this.beat(), this.host.heartbeatMs)
  }

  private remove(dead: readonly string[], now: number): MaybePromise<void> {
    const [node, ...rest] = dead
    if (node === undefined) return
    return andThen(this.host.presenceStore.removeNode(node, now), (changes) => {
      if (changes.length > 0) this.host.nodeGone(node, changes)
      return this.remove(rest, now)
    })
  }
}
