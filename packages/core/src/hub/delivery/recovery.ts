import type { Codec, MessageFrame, PresenceSnapshot, RequestId, ServerFrame, StreamPosition } from '@tidings/protocol'
import type { Clock } from '../../ports/clock.js'
import type { Outbound } from '../../ports/session.js'
import type { ReadResult, StoredMessage } from '../../ports/store.js'
import { andThen, isPromise, type MaybePromise } from '../../util.js'
import type { Channel, HeldMessage } from '../channel.js'
import { type Connection, type Delivery, PRIORITY, type PriorityClass, type Subscription } from '../connection.js'
import type { ResolvedHubOptions } from '../options.js'
import { frameFor, REPLAY_PAGE } from '../routing.js'
import type { Acks } from './acks.js'
import type { Signals } from '../events.js'
import type { FanOut } from '../fanout.js'
import type { Metrics } from '../metrics.js'

/** What recovery needs from the hub. */
export interface RecoveryHost {
  readonly clock: Clock
  readonly options: Pick<ResolvedHubOptions, 'store' | 'delivery'>
  readonly acks: Acks
  /** Writes replays and notices to connections. */
  readonly fanout: Pick<FanOut, 'encode' | 'write' | 'sendFrame'>
  readonly signals: Signals
  /** Resumes and gaps reported (metrics). */
  readonly stats: Metrics
}

/** Where the sequencer of an at-least-once channel sends what may go out now (the fan-out, which attaches itself). */
export interface SequencedFanOut {
  /** A live message held beyond a gap whose turn came: to its recipients, as it would have gone on arrival. */
  fanOutHeld(channel: Channel, held: HeldMessage): void
  /** A message of a gap read from the store: to every subscriber live delivery would have sent it to (`frameFor`'s decision). */
  fanOutStored(channel: Channel, m: StoredMessage): void
}

/**
 * How long (hub clock) a gap in an at-least-once channel's offsets may wait for its messages to
 * arrive from the nodes that published them before they are read from the store. A gap only
 * exists with several nodes (a publish on another node still on the bus, or lost there); while
 * it waits, the messages after it wait here rather than in every receiver.
 */

/**
 * Positions, epochs and replays: where a subscription starts, what it missed since a position
 * (replayed, or `recovered: false` with the reason, never a silent partial replay), the switch
 * to live delivery, and telling live subscribers that a channel's history was reset.
 *
 * Also the order of an at-least-once channel on this node (`Channel.sequence`): its offsets are
 * fanned out in offset order, each once, so that the `prev` of a frame (the previous offset sent
 * to that subscriber) never names a range this node has not seen go by. A live message beyond a
 * gap is held until the gap fills (the late message arrives from another node) or, after
 * `delivery.gapWaitMs`, the gap is read from the store and fanned out from there.
 */
export class Recovery {
  private fanOut: SequencedFanOut | undefined

  constructor(private readonly host: RecoveryHost) {}

  /** The fan-out that writes what the sequencer releases (it attaches itself when made). */
  attach(fanOut: SequencedFanOut): void {
    this.fanOut = fanOut
  }

  /**
   * The channel's stream has this epoch, and `offset` is the last offset before what follows. If
   * the epoch differs from the one subscribers are on, the store lost the history (reset,
   * eviction, a flushed Redis): offsets restarted, so every subscriber is told its new position
   * with `recovered: false` before anything else, instead of seeing low offsets as duplicates.
   *
   * `position` (the default): `offset` is a position read from the store for a subscriber (its
   * start), so an at-least-once channel's sequence may start there; false for the offset before
   * a live message, which says nothing about the offsets still on their way.
   */
  learnEpoch(channel: Channel, epoch: string, offset: number, except?: Subscription, position = true): void {
    const previous = channel.epoch
    channel.epoch = epoch
    if (previous === undefined || previous === epoch) {
      if (position && channel.sequenced) this.startAt(channel, offset)
      return
    }
    this.restart(channel, offset)
    for (const sub of channel.fanOutList().subs) {
      if (!sub.active || sub === except || sub.replay !== null) continue
      sub.lastSent = sub.acked = offset
      sub.attempts = 0
      this.host.acks.untrack(sub)
      this.host.stats.gapsReported++
      this.host.fanout.sendFrame(sub.connection, {
        type: 'subscribed',
        channel: channel.name,
        position: { epoch, offset },
        delivery: sub.tracked ? 'at-least-once' : 'at-most-once',
        recovered: false,
        reason: 'epoch changed: the channel history was reset',
      })
    }
  }

  // ------------------------------------------------------------------ the order of an at-least-once channel

  /** A new epoch: offsets restart after `offset`; what was held or awaited belongs to the old one. */
  private restart(channel: Channel, offset: number): void {
    channel.lastOffset = offset
    channel.held = null
    this.unwatch(channel)
    if (!channel.sequenced) return
    channel.sequence = offset
    channel.known = offset
    channel.flowing = false
  }

  /**
   * A subscriber's start position was read from the store. The channel's sequence starts at the
   * first one (live messages that arrived before it wait until then). Positions are read after
   * the subscriber joined the channel, so whatever is fanned out later reaches it (in its replay
   * buffer); a lower position read before anything went out (answers out of order) moves the
   * start down, and the gap between is read from the store. An offset above the sequence is a
   * message still on its way from another node: a gap, awaited like any other.
   */
  private startAt(channel: Channel, offset: number): void {
    if (channel.sequence < 0 || (!channel.flowing && offset < channel.sequence)) channel.sequence = offset
    if (offset > channel.known) channel.known = offset
    this.advance(channel)
  }

  /** A live message beyond a gap (or before the channel's start is known): it waits its turn. */
  hold(channel: Channel, held: HeldMessage): void {
    const offset = held.frame.offset!
    const map = (channel.held ??= new Map())
    if (!map.has(offset)) map.set(offset, held)
    if (offset > channel.known) channel.known = offset
    if (channel.sequence >= 0) this.watch(channel)
  }

  /**
   * Fan out the held messages that now follow on, in order; then wait for what is still missing
   * (a timer), or stop waiting when nothing is.
   */
  advance(channel: Channel): void {
    if (channel.subscribers.size === 0) {
      // The channel is no longer live here: nothing to deliver.
      channel.held = null
      this.unwatch(channel)
      return
    }
    const held = channel.held
    if (held !== null && channel.sequence >= 0) {
      for (const o of held.keys()) if (o <= channel.sequence) held.delete(o)
      for (let next = held.get(channel.sequence + 1); next !== undefined; next = held.get(channel.sequence + 1)) {
        held.delete(channel.sequence + 1)
        channel.sequence++
        channel.flowing = true
        this.fanOut!.fanOutHeld(channel, next)
      }
      if (held.size === 0 && channel.held === held) channel.held = null
    }
    if (channel.sequence >= 0 && (channel.held !== null || channel.known > channel.sequence)) this.watch(channel)
    else this.unwatch(channel)
  }

  private watch(channel: Channel): void {
    if (channel.gapTimer !== undefined || channel.filling) return
    channel.gapTimer = this.host.clock.setTimeout(() => {
      channel.gapTimer = undefined
      this.fillGap(channel)
    }, this.host.options.delivery.gapWaitMs)
  }

  private unwatch(channel: Channel): void {
    if (channel.gapTimer === undefined) return
    this.host.clock.clearTimeout(channel.gapTimer)
    channel.gapTimer = undefined
  }

  /**
   * The gap did not fill in time: read it from the store (up to the first held message, or the
   * newest offset known) and fan it out from there, each message to whom it was meant for.
   * Messages of the gap that arrive live meanwhile are not sent twice.
   */
  private fillGap(channel: Channel): void {
    if (channel.subscribers.size === 0 || channel.sequence < 0 || channel.filling) return
    const after = channel.sequence
    let until = channel.known
    if (channel.held !== null) for (const o of channel.held.keys()) if (o - 1 < until) until = o - 1
    if (until <= after) return this.advance(channel)
    const limit = Math.min(REPLAY_PAGE, until - after)
    const epoch = channel.epoch
    channel.filling = true
    const failed = (err: unknown) => {
      channel.filling = false
      this.host.signals.report(err, 'gap.fill')
      // Tried again after another wait.
      this.advance(channel)
    }
    let r: MaybePromise<void>
    try {
      r = andThen(this.host.options.store.read(channel.name, { after, limit, now: this.host.clock.now() }), (page) => this.filled(channel, epoch, until, limit, page))
    } catch (err) {
      return failed(err)
    }
    if (isPromise(r)) r.catch(failed)
  }

  private filled(channel: Channel, epoch: string | undefined, until: number, limit: number, page: ReadResult): void {
    channel.filling = false
    if (channel.subscribers.size === 0) return this.advance(channel)
    // The epoch changed while the store was read: the sequence restarted, this page is history.
    if (channel.epoch !== epoch) return this.advance(channel)
    if (page.epoch !== channel.epoch) {
      // The store lost the history: subscribers learn it now, and the sequence restarts at its top.
      this.learnEpoch(channel, page.epoch, page.top, undefined, false)
      return
    }
    for (const m of page.messages) {
      // Arrived live while the store was being read.
      if (m.offset <= channel.sequence) continue
      // The log starts later than asked: what is before it was dropped by retention.
      if (m.offset > channel.sequence + 1) this.passTo(channel, Math.min(m.offset - 1, until))
      if (m.offset > until) break
      channel.sequence = m.offset
      channel.flowing = true
      const live = channel.held?.get(m.offset)
      if (live !== undefined) {
        channel.held!.delete(m.offset)
        this.fanOut!.fanOutHeld(channel, live)
      } else this.fanOut!.fanOutStored(channel, m)
      if (channel.subscribers.size === 0) return this.advance(channel)
    }
    if (channel.sequence < until) {
      // A full page: read the next one now (each page moves the sequence on).
      if (page.messages.length >= limit) return this.fillGap(channel)
      // A short page is all the log has: what it did not return was dropped by retention.
      this.passTo(channel, until)
    }
    this.advance(channel)
  }

  /**
   * The log no longer has the offsets up to `to` that this node has not seen: those that arrived
   * live while it was read go out, the others are lost.
   */
  private passTo(channel: Channel, to: number): void {
    const arrived = channel.held === null ? [] : [...channel.held.keys()].filter((o) => o > channel.sequence && o <= to).sort((x, y) => x - y)
    for (const o of arrived) {
      if (o > channel.sequence + 1) this.lost(channel, channel.sequence + 1, o - 1)
      const live = channel.held!.get(o)!
      channel.held!.delete(o)
      channel.sequence = o
      channel.flowing = true
      this.fanOut!.fanOutHeld(channel, live)
    }
    if (to > channel.sequence) this.lost(channel, channel.sequence + 1, to)
  }

  /** Offsets [from, to] left the log before this node saw them: each live subscriber is told, then the sequence goes on past them. */
  private lost(channel: Channel, from: number, to: number): void {
    channel.sequence = to
    for (const sub of channel.fanOutList().subs) {
      if (sub.active && sub.tracked && sub.replay === null) this.host.acks.lostBeforeSeen(sub, from, to)
    }
  }

  /**
   * Live gap detection: a node that missed messages on the bus (a broker reconnect, an overload)
   * notices on its live subscriptions, not only when a client reconnects. Each channel's stream
   * position is compared with what this node has seen: a new epoch is told to its subscribers
   * (`recovered: false`), and on at-least-once channels newer offsets are a gap, read from the
   * store after `delivery.gapWaitMs` like any other. The hub calls it on every node heartbeat.
   */
  checkLive(channels: Iterable<Channel>): void {
    for (const channel of channels) {
      if (channel.subscribers.size === 0 || channel.epoch === undefined) continue
      if (!channel.sequenced && !channel.options.offline) continue
      const epoch = channel.epoch
      try {
        const r = andThen(this.host.options.store.position(channel.name), (p) => this.compare(channel, epoch, p.epoch, p.offset))
        if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'gap.check'))
      } catch (err) {
        this.host.signals.report(err, 'gap.check')
      }
    }
  }

  private compare(channel: Channel, epoch: string, storeEpoch: string, top: number): void {
    if (channel.subscribers.size === 0 || channel.epoch !== epoch) return
    if (storeEpoch !== epoch) return this.learnEpoch(channel, storeEpoch, top, undefined, false)
    if (!channel.sequenced || channel.sequence < 0 || top <= channel.known) return
    channel.known = top
    this.advance(channel)
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
      else this.host.fanout.write(sub.connection, out, PRIORITY.normal, false)
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
    if (sub.rights.checking > 0) {
      // The channel's rules are being decided again for this subscription (a membership change,
      // a refreshed identity): nothing is replayed ahead of a revocation, and nothing partially.
      recovered = false
      epochChanged = true
      reason = 'the channel rules are being decided again: nothing was replayed'
    }
    const replaying = recovered || (partial && !epochChanged)
    const position = replaying ? { epoch: since.epoch, offset: since.offset } : extras.position
    sub.lastSent = sub.acked = position?.offset ?? 0
    if (!partial) this.host.stats.resumed(conn, recovered)
    this.host.fanout.sendFrame(conn, { type: 'subscribed', id, channel: name, presence: extras.presence, position, delivery: extras.delivery, recovered, reason })
    if (replaying) {
      for (const frame of replay) {
        if (sub.tracked) this.host.acks.sendTracked(sub, frame, null, PRIORITY.normal)
        else this.host.fanout.write(conn, this.host.fanout.encode(conn.codec, frame), PRIORITY.normal, false)
        sub.lastSent = Math.max(sub.lastSent, frame.offset ?? 0)
      }
      // Offsets replayed past but not for this subscriber still count as passed.
      if (!sub.tracked) sub.lastSent = Math.max(sub.lastSent, after)
    }
    this.goLive(sub, replaying ? after : (position?.offset ?? 0))
  }
}
