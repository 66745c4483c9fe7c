import type { Codec, MessageFrame, PresenceSnapshot, RequestId, ServerFrame, StreamPosition } from '@tidings/protocol'
import type { Clock } from '../../ports/clock.js'
import type { Outbound } from '../../ports/session.js'
import type { Channel } from '../channel.js'
import { type Connection, type Delivery, PRIORITY, type PriorityClass, type Subscription } from '../connection.js'
import type { ResolvedHubOptions } from '../options.js'
import { frameFor, REPLAY_PAGE } from '../routing.js'
import type { Acks } from './acks.js'

/** What recovery needs from the hub. */
export interface RecoveryHost {
  readonly clock: Clock
  readonly options: Pick<ResolvedHubOptions, 'store'>
  readonly acks: Acks
  encode(codec: Codec, frame: ServerFrame): Outbound
  write(conn: Connection, out: Outbound, priority: PriorityClass, volatile: boolean): Delivery
  sendFrame(conn: Connection, frame: ServerFrame): void
}

/**
 * Positions, epochs and replays: where a subscription starts, what it missed since a position
 * (replayed, or `recovered: false` with the reason, never a silent partial replay), the switch
 * to live delivery, and telling live subscribers that a channel's history was reset.
 */
export class Recovery {
  constructor(private readonly host: RecoveryHost) {}

  /**
   * The channel's stream has this epoch, and `offset` is the last offset before what follows. If
   * the epoch differs from the one subscribers are on, the store lost the history (reset,
   * eviction, a flushed Redis): offsets restarted, so every subscriber is told its new position
   * with `recovered: false` before anything else, instead of seeing low offsets as duplicates.
   */
  learnEpoch(channel: Channel, epoch: string, offset: number, except?: Subscription): void {
    const previous = channel.epoch
    channel.epoch = epoch
    if (previous === undefined || previous === epoch) return
    for (const sub of channel.fanOutList().subs) {
      if (!sub.active || sub === except || sub.replay !== null) continue
      sub.lastSent = sub.acked = offset
      sub.attempts = 0
      this.host.acks.untrack(sub)
      this.host.sendFrame(sub.connection, {
        type: 'subscribed',
        channel: channel.name,
        position: { epoch, offset },
        delivery: sub.tracked ? 'at-least-once' : 'at-most-once',
        recovered: false,
        reason: 'epoch changed: the channel history was reset',
      })
    }
  }

  /** Send the live messages that waited during subscribe (those after `after`), then deliver live. */
  goLive(sub: Subscription, after: number): void {
    const waiting = sub.replay ?? []
    sub.replay = null
    sub.connection.refreshFastPath()
    for (const [frame, out] of waiting) {
      // Offset-less messages (recipient-filtered publishes) are never in a replay: always send them.
      if (frame.offset !== undefined && frame.offset <= after) continue
      if (sub.tracked && frame.offset !== undefined) this.host.acks.sendTracked(sub, frame, out, PRIORITY.normal)
      else this.host.write(sub.connection, out, PRIORITY.normal, false)
    }
  }

  /**
   * Replay what a subscriber missed since a position, then switch it to live delivery. The
   * `subscribed` reply says where the replay starts (`position`) and whether it is complete
   * (`recovered`); a client's own resume with a stale epoch or past retention gets
   * `recovered: false` and no replay, never a silent partial one. An offline queue
   * (`partial`) delivers what the log still has and says what expired.
   */
  async recover(
    conn: Connection,
    sub: Subscription,
    since: StreamPosition,
    id: RequestId | undefined,
    extras: { presence?: PresenceSnapshot; position?: StreamPosition; delivery?: 'at-most-once' | 'at-least-once' | undefined },
    partial: boolean,
    lost?: string,
  ): Promise<void> {
    const name = sub.channel.name
    let after = since.offset
    let recovered = lost === undefined
    let reason: string | undefined = lost
    let epochChanged = false
    const replay: MessageFrame[] = []
    for (;;) {
      const page = await this.host.options.store.read(name, { after, limit: REPLAY_PAGE, now: this.host.clock.now() })
      if (page.epoch !== since.epoch) {
        recovered = false
        epochChanged = true
        reason = 'epoch changed: the channel history was reset'
        break
      }
      if (!page.complete) {
        recovered = false
        reason ??= partial
          ? 'some queued messages expired before they could be delivered'
          : 'history no longer covers the position: messages were dropped by retention'
        if (!partial) break
      }
      for (const m of page.messages) {
        after = m.offset
        const frame = frameFor(sub, m, sub.tracked)
        if (frame) replay.push(frame)
      }
      if (page.messages.length < REPLAY_PAGE || after >= page.top) break
    }
    if (conn.ended || conn.subscriptions.get(name) !== sub) return
    const replaying = recovered || (partial && !epochChanged)
    const position = replaying ? { epoch: since.epoch, offset: since.offset } : extras.position
    sub.lastSent = sub.acked = position?.offset ?? 0
    this.host.sendFrame(conn, { type: 'subscribed', id, channel: name, presence: extras.presence, position, delivery: extras.delivery, recovered, reason })
    if (replaying) {
      for (const frame of replay) {
        if (sub.tracked) this.host.acks.sendTracked(sub, frame, null, PRIORITY.normal)
        else this.host.write(conn, this.host.encode(conn.codec, frame), PRIORITY.normal, false)
        sub.lastSent = Math.max(sub.lastSent, frame.offset ?? 0)
      }
      // Offsets replayed past but not for this subscriber still count as passed.
      if (!sub.tracked) sub.lastSent = Math.max(sub.lastSent, after)
    }
    this.goLive(sub, replaying ? after : (position?.offset ?? 0))
  }
}
