import { RECIPIENT_FILTER_ROOTS, compileFilter, type FilterPredicate, CloseCode } from '@tidings/protocol'
import type { ClusterMessage, Command, Dispatch } from '../ports/broker.js'
import type { Outbound } from '../ports/session.js'
import { type MaybePromise, isPromise } from '../util.js'
import type { Connection, Subscription } from './connection.js'
import type { FanOut } from './fanout.js'
import type { ResolvedHubOptions } from './options.js'

/** What the cluster side needs from the hub. */
export interface ClusterHost {
  readonly nodeId: string
  readonly options: Pick<ResolvedHubOptions, 'broker'>
  /** The hub is closing: local connections are going away. */
  readonly closing: boolean
  readonly fanout: FanOut
  readonly connections: ReadonlyMap<string, Connection>
  kickLocal(channel: string, userId: string, reason: string): number
  disconnectUserLocal(userId: string, reason: string): number
  closeConnection(conn: Connection, code: number, reason: string): void
  report(error: unknown, stage: string): void
}

/**
 * This node among others: every dispatch is delivered here and handed to the broker for the
 * other nodes; what the broker brings from them is delivered here; commands (kick, disconnect)
 * are applied to this node's connections.
 */
export class Cluster {
  /** Resolved once the broker has started (commands wait for it). */
  readonly ready: MaybePromise<void>

  constructor(private readonly host: ClusterHost) {
    this.ready = this.startBroker()
  }

  /** Deliver locally and hand to the broker for the other nodes. Returns local recipients. */
  dispatch(d: Dispatch, out?: Outbound, where?: FilterPredicate, collect: Subscription[] | null = null): number {
    // While closing, local connections are going away: only the other nodes need to hear (leaves).
    const n = this.host.closing ? 0 : this.host.fanout.deliverLocal(d, out, where, collect)
    try {
      const r = this.host.options.broker.publish(d)
      if (isPromise(r)) r.catch((err) => this.host.report(err, 'broker.publish'))
    } catch (err) {
      this.host.report(err, 'broker.publish')
    }
    return n
  }

  private fromCluster(m: ClusterMessage): void {
    if (m.origin === this.host.nodeId) return
    try {
      if (m.kind === 'command') return this.applyCommand(m)
      this.host.fanout.deliverLocal(m, undefined, m.where !== undefined ? compileFilter(m.where, RECIPIENT_FILTER_ROOTS) : undefined)
    } catch (err) {
      this.host.report(err, 'broker.deliver')
    }
  }

  private applyCommand(m: Command): void {
    const c = m.command
    if (c.op === 'kick') this.host.kickLocal(c.channel, c.userId, c.reason)
    else if (c.connectionId !== undefined) {
      const conn = this.host.connections.get(c.connectionId)
      if (conn) this.host.closeConnection(conn, CloseCode.Disconnected, c.reason)
    } else if (c.userId !== undefined) this.host.disconnectUserLocal(c.userId, c.reason)
  }

  private startBroker(): MaybePromise<void> {
    try {
      const r = this.host.options.broker.start(this.host.nodeId, (m) => this.fromCluster(m))
      return isPromise(r) ? r.catch((err) => this.host.report(err, 'broker.start')) : r
    } catch (err) {
      this.host.report(err, 'broker.start')
    }
  }

  async toCluster(m: Command): Promise<void> {
    await this.ready
    try {
      await this.host.options.broker.publish(m)
    } catch (err) {
      this.host.report(err, 'broker.publish')
    }
  }
}
