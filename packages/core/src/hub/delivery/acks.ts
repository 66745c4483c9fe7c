import { CloseCode, type Codec, type ClientFrameOf, type MessageFrame, type ServerFrame } from '@tidings/protocol'
import type { Clock, TimerHandle } from '../../ports/clock.js'
import type { Outbound } from '../../ports/session.js'
import { type MaybePromise, andThen, isPromise } from '../../util.js'
import { type Connection, Delivery, PRIORITY, type PriorityClass, type Subscription } from '../connection.js'
import type { HubEvents } from '../events.js'
import type { Metrics } from '../metrics.js'
import type { ResolvedHubOptions } from '../options.js'
import { frameFor, REPLAY_PAGE } from '../routing.js'
import type { Receipts } from './receipts.js'
import type { Admission } from '../admission.js'
import type { Signals } from '../events.js'
import type { FanOut } from '../fanout.js'

/** A connection that received a message the publisher waited on. */
export interface AckRecipient {
  readonly connectionId: string
  readonly userId: string | undefined
}

interface AckWaiter {
  acked(sub: Subscription, upTo: number): void
  /** A recipient left: stop waiting for it (it counts as not acknowledged). */
  gone(sub: Subscription): void
}

/** What acknowledgment tracking needs from the hub. */
export interface AcksHost {
  readonly clock: Clock
  readonly options: Pick<ResolvedHubOptions, 'delivery' | 'store'>
  readonly stats: Metrics
  readonly receipts: Receipts
  /** The hub is closing: no new sweep. */
  readonly closing: boolean
  /** Writes tracked frames, redeliveries and notices to connections. */
  readonly fanout: Pick<FanOut, 'encode' | 'write' | 'sendFrame'>
  /** Closes a connection whose messages could not be delivered (`onFailure: 'disconnect'`). */
  readonly admission: Pick<Admission, 'closeConnection'>
  readonly signals: Signals
}

/**
 * At-least-once delivery: each subscription keeps its last acknowledged offset; one hub-wide
 * sweeper redelivers from the log (with backoff) what stays unacknowledged, and reports what
 * cannot be delivered. Also the publishers waiting for acknowledgments (`awaitAcks`).
 */
export class Acks {
  /** At-least-once subscriptions with messages not yet acknowledged; swept by one timer. */
  private readonly pendingAcks = new Set<Subscription>()
  private sweepTimer: TimerHandle | undefined
  private readonly ackWaiters = new Map<string, Set<AckWaiter>>()

  constructor(private readonly host: AcksHost) {}

  /** Stop tracking a subscription (it ended, was repositioned, or is fully acknowledged). */
  untrack(sub: Subscription): void {
    if (!sub.pending) return
    sub.pending = false
    this.pendingAcks.delete(sub)
  }

  /** A subscription ended: publishers waiting on it stop waiting (it counts as not acknowledged). */
  gone(sub: Subscription): void {
    const waiters = this.ackWaiters.get(sub.channel.name)
    if (waiters) for (const w of [...waiters]) w.gone(sub)
  }

  /** At-least-once subscriptions waiting for acknowledgments, and how many messages they wait for (metrics). */
  pending(): { subscriptions: number; messages: number } {
    let messages = 0
    for (const sub of this.pendingAcks) if (sub.lastSent > sub.acked) messages += sub.lastSent - sub.acked
    return { subscriptions: this.pendingAcks.size, messages }
  }

  /** Stop the sweeper (hub close). */
  stop(): void {
    if (this.sweepTimer !== undefined) this.host.clock.clearTimeout(this.sweepTimer)
    this.sweepTimer = undefined
  }

  /**
   * Send one message to an at-least-once subscriber and track it: the shared frame when it
   * follows the last one sent, else a copy that names the previous offset (`prev`), so the
   * receiver can tell a gap that is not for it from a loss.
   */
  sendTracked(sub: Subscription, frame: MessageFrame, shared: Outbound | null, priority: PriorityClass): Delivery {
    const conn = sub.connection
    const offset = frame.offset ?? 0
    // Already sent or passed: `prev` would name an offset above this one, and a receiver drops it.
    if (offset <= sub.lastSent) return Delivery.Dropped
    const contiguous = offset === sub.lastSent + 1
    const out =
      contiguous && shared !== null && conn.sharedCodec
        ? shared
        : this.host.fanout.encode(conn.codec, contiguous ? { ...frame, ack: true } : { ...frame, prev: sub.lastSent, ack: true })
    if (offset > sub.lastSent) sub.lastSent = offset
    if (!sub.pending) this.markPending(sub)
    return this.host.fanout.write(conn, out, priority, false)
  }

  /**
   * Offsets [from, to] of the subscriber's channel left the log before this node saw them go by
   * (a gap read from the store found them dropped by retention). Whether any was meant for this
   * subscriber is unknown, so they are not skipped in silence by a later `prev`: reported as
   * failed, and the subscriber is told where its stream goes on, as for a redelivery.
   */
  lostBeforeSeen(sub: Subscription, from: number, to: number): void {
    if (sub.lastSent >= to) return
    const first = Math.max(from, sub.lastSent + 1)
    sub.lastSent = to
    this.deliveryFailed(sub, first, to, 'dropped by retention')
  }

  /** Start the ack clock of a subscription that has just been sent something to acknowledge. */
  markPending(sub: Subscription): void {
    sub.pending = true
    sub.attempts = 0
    sub.deadline = this.host.clock.now() + this.host.options.delivery.ackTimeoutMs
    this.pendingAcks.add(sub)
    this.scheduleSweep()
  }

  private scheduleSweep(): void {
    if (this.sweepTimer !== undefined || this.host.closing) return
    const every = Math.max(10, Math.min(1000, Math.floor(this.host.options.delivery.ackTimeoutMs / 4)))
    this.sweepTimer = this.host.clock.setTimeout(() => {
      this.sweepTimer = undefined
      this.sweepAcks()
    }, every)
  }

  /** One timer for the whole hub: redeliver what is overdue, with backoff; give up after the last attempt. */
  private sweepAcks(): void {
    const now = this.host.clock.now()
    const d = this.host.options.delivery
    for (const sub of this.pendingAcks) {
      if (!sub.active || sub.acked >= sub.lastSent) {
        this.untrack(sub)
        continue
      }
      if (now < sub.deadline) continue
      if (sub.attempts >= d.maxAttempts) {
        this.deliveryFailed(sub, sub.acked + 1, sub.lastSent, 'not acknowledged')
        continue
      }
      sub.attempts++
      sub.deadline = now + Math.min(d.maxBackoffMs, d.ackTimeoutMs * d.backoffMultiplier ** sub.attempts)
      const r = this.redeliver(sub)
      if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'redeliver'))
    }
    if (this.pendingAcks.size > 0) this.scheduleSweep()
  }

  /** Report messages [from, to] of a subscriber as undeliverable and tell it where its stream goes on. */
  private deliveryFailed(sub: Subscription, from: number, to: number, reason: string): void {
    const conn = sub.connection
    this.host.stats.deliveryFailed++
    // Offsets that left the log before they reached the subscriber: a gap it is told about.
    if (reason !== 'not acknowledged') this.host.stats.gapsReported++
    this.host.signals.emit('delivery:failed', { connectionId: conn.id, userId: conn.userId, channel: sub.channel.name, fromOffset: from, toOffset: to, attempts: sub.attempts, reason })
    if (sub.acked < to) sub.acked = to
    if (sub.acked >= sub.lastSent) this.untrack(sub)
    if (this.host.options.delivery.onFailure === 'disconnect') {
      this.host.admission.closeConnection(conn, CloseCode.DeliveryFailed, `messages ${from}-${to} could not be delivered (${reason})`)
      return
    }
    // The client would otherwise wait for these forever: tell it where the stream goes on.
    if (sub.channel.epoch !== undefined) {
      this.host.fanout.sendFrame(conn, {
        type: 'subscribed',
        channel: sub.channel.name,
        position: { epoch: sub.channel.epoch, offset: to },
        delivery: 'at-least-once',
        recovered: false,
        reason: `messages ${from}-${to} could not be delivered (${reason})`,
      })
    }
  }

  /** Send again, from the log, everything after the subscriber's acknowledged offset. */
  private redeliver(sub: Subscription): MaybePromise<void> {
    const conn = sub.connection
    const name = sub.channel.name
    const until = sub.lastSent
    const readFrom = (after: number, prev: number): MaybePromise<void> =>
      andThen(this.host.options.store.read(name, { after, limit: Math.min(REPLAY_PAGE, until - after), now: this.host.clock.now() }), (page) => {
        if (!sub.active || conn.ended) return
        const first = page.messages[0]?.offset
        if (!page.complete && first !== undefined && first > after + 1) this.deliveryFailed(sub, after + 1, first - 1, 'dropped by retention')
        if (page.messages.length === 0) {
          if (after < until) this.deliveryFailed(sub, after + 1, until, 'dropped by retention')
          return
        }
        let last = after
        for (const m of page.messages) {
          if (m.offset > until) break
          last = m.offset
          const frame = frameFor(sub, m, true)
          if (!frame) continue
          this.host.stats.redelivered++
          this.host.fanout.write(conn, this.host.fanout.encode(conn.codec, m.offset === prev + 1 ? frame : { ...frame, prev }), PRIORITY.normal, false)
          prev = m.offset
        }
        if (last < until && last > after) return readFrom(last, prev)
      })
    return readFrom(sub.acked, sub.acked)
  }

  /** A cumulative ack: the subscription, waiting publishers, the offline cursor and delivered receipts move on. */
  onAck(conn: Connection, frame: ClientFrameOf<'ack'>): MaybePromise<void> {
    const sub = conn.subscriptions.get(frame.channel)
    if (!sub) return
    const offset = Math.min(frame.offset, sub.tracked ? sub.lastSent : Math.max(sub.lastSent, sub.channel.lastOffset))
    const waiters = this.ackWaiters.get(frame.channel)
    if (waiters) for (const w of waiters) w.acked(sub, frame.offset)
    if (offset <= sub.acked) return
    const before = sub.acked
    sub.acked = offset
    sub.attempts = 0
    if (sub.acked >= sub.lastSent) this.untrack(sub)
    else sub.deadline = this.host.clock.now() + this.host.options.delivery.ackTimeoutMs
    const options = sub.channel.options
    const jobs: Array<MaybePromise<void>> = []
    if (options.offline && conn.userId !== undefined) jobs.push(this.host.options.store.commit(frame.channel, conn.userId, offset))
    if (options.receipts && conn.userId !== undefined) jobs.push(this.host.receipts.send(frame.channel, conn.userId, 'delivered', before + 1, offset, undefined, sub))
    const pending = jobs.filter(isPromise)
    if (pending.length > 0) return Promise.all(pending).then(() => undefined)
  }

  /** Resolve once every recipient acknowledged `offset` on `channel`, or after `timeoutMs`, with who did and who did not. */
  waitFor(channel: string, offset: number, recipients: Subscription[], timeoutMs: number): Promise<{ acknowledged: AckRecipient[]; unacknowledged: AckRecipient[] }> {
    const who = (s: Subscription): AckRecipient => ({ connectionId: s.connection.id, userId: s.connection.userId })
    const remaining = new Set(recipients.filter((s) => s.acked < offset))
    const acknowledged = recipients.filter((s) => s.acked >= offset).map(who)
    if (remaining.size === 0) return Promise.resolve({ acknowledged, unacknowledged: [] })
    return new Promise((resolve) => {
      let set = this.ackWaiters.get(channel)
      if (!set) this.ackWaiters.set(channel, (set = new Set()))
      const left: AckRecipient[] = []
      const finish = () => {
        this.host.clock.clearTimeout(timer)
        set!.delete(waiter)
        if (set!.size === 0 && this.ackWaiters.get(channel) === set) this.ackWaiters.delete(channel)
        resolve({ acknowledged, unacknowledged: [...left, ...[...remaining].map(who)] })
      }
      const waiter: AckWaiter = {
        acked(sub, upTo) {
          if (upTo < offset || !remaining.delete(sub)) return
          acknowledged.push(who(sub))
          if (remaining.size === 0) finish()
        },
        gone(sub) {
          if (!remaining.delete(sub)) return
          left.push(who(sub))
          if (remaining.size === 0) finish()
        },
      }
      const timer = this.host.clock.setTimeout(finish, timeoutMs)
      set.add(waiter)
    })
  }
}
