import { RealtimeError, type ClientFrameOf } from '@tidings/protocol'
import { type MaybePromise, andThen } from '../../util.js'
import type { Connection, Subscription } from '../connection.js'
import type { Cluster } from '../cluster.js'
import type { ResolvedHubOptions } from '../options.js'
import { frameFor, REPLAY_PAGE } from '../routing.js'

/** What receipts need from the hub. */
export interface ReceiptsHost {
  readonly options: Pick<ResolvedHubOptions, 'store' | 'clock'>
  readonly clock: ResolvedHubOptions['clock']
  /** Delivers a frame here and on the other nodes. */
  readonly cluster: Pick<Cluster, 'deliver'>
  /** The user's own channel was read: its notification badge goes down. */
  readonly notifications: { read(userId: string, offsets: readonly number[]): void }
}

/**
 * Delivered and read receipts: told to a message's sender only (each sender its own offsets),
 * for what the reader was actually sent (its filter, mutes and exclusions apply).
 */
export class Receipts {
  constructor(private readonly host: ReceiptsHost) {}

  /** Tell the senders of messages in [from, to] (or of the given offsets) that `userId` got or read them. */
  send(channel: string, userId: string, status: 'delivered' | 'read', from: number, to: number, only?: ReadonlySet<number>, sub?: Subscription): MaybePromise<void> {
    if (to < from) return
    const limit = Math.min(REPLAY_PAGE, to - from + 1)
    return andThen(this.host.options.store.read(channel, { after: from - 1, limit, now: this.host.clock.now() }), (page): MaybePromise<void> => {
      const bySender = new Map<string, number[]>()
      for (const m of page.messages) {
        if (m.offset > to || (only && !only.has(m.offset))) continue
        if (m.sender === undefined || m.sender === userId) continue
        // Only what this subscriber was sent: not what its filter, its mutes or echo left out.
        if (sub && !frameFor(sub, m)) continue
        let list = bySender.get(m.sender)
        if (!list) bySender.set(m.sender, (list = []))
        list.push(m.offset)
      }
      for (const [sender, offsets] of bySender) {
        this.host.cluster.deliver({ kind: 'direct', users: [sender], connections: [] }, { type: 'receipt', channel, status, userId, offsets })
      }
      const last = page.messages.at(-1)?.offset
      if (last !== undefined && last < to && page.messages.length === limit) return this.send(channel, userId, status, last + 1, to, only, sub)
    })
  }

  onRead(conn: Connection, frame: ClientFrameOf<'read'>): MaybePromise<void> {
    const sub = conn.subscriptions.get(frame.channel)
    if (!sub) throw new RealtimeError('RT_003', `subscribe to '${frame.channel}' before sending read receipts`)
    const userId = conn.userId
    if (userId === undefined) throw new RealtimeError('RT_003', 'read receipts need an authenticated user')
    const personal = frame.channel === `private:user-${userId}`
    if (personal) this.host.notifications.read(userId, frame.offsets)
    if (!sub.channel.options.receipts) {
      if (personal) return
      throw new RealtimeError('RT_007', 'read receipts are not enabled on this channel')
    }
    if (conn.preferences?.readReceipts === false) return
    const offsets = new Set(frame.offsets)
    return this.send(frame.channel, userId, 'read', Math.min(...offsets), Math.max(...offsets), offsets)
  }
}
