import { type Codec, jsonCodec, jsonWithNumber, wireLength, CloseCode, type FilterPredicate, type MessageFrame, type ServerFrame } from '@tidings/protocol'
import type { Dispatch } from '../ports/broker.js'
import { Outbound } from '../ports/session.js'
import type { StoredMessage } from '../ports/store.js'
import type { Channel, HeldMessage } from './channel.js'
import { type Connection, Delivery, PRIORITY, type PriorityClass, type QueueLimits, type Subscription } from './connection.js'
import type { Acks } from './delivery/acks.js'
import type { Recovery, SequencedFanOut } from './delivery/recovery.js'
import type { Metrics } from './metrics.js'
import type { ResolvedHubOptions } from './options.js'
import { admits, isDeletion, type LocalDispatch, NO_EXCLUSIONS, receives, storedToFrame } from './routing.js'
import type { Admission } from './admission.js'

/** What fan-out needs from the hub: its registries (read only), the delivery concepts and the way to close a connection. */
export interface FanOutHost {
  readonly codec: Codec
  readonly options: Pick<ResolvedHubOptions, 'limits'>
  readonly stats: Metrics
  readonly live: ReadonlyMap<string, Channel>
  readonly connections: ReadonlyMap<string, Connection>
  readonly byUser: ReadonlyMap<string, ReadonlySet<Connection>>
  readonly acks: Acks
  readonly recovery: Recovery
  /** Closes slow consumers (4009). */
  readonly admission: Pick<Admission, 'closeConnection'>
}

/**
 * Writing to this node's connections: one frame to one connection (replies), a dispatch to its
 * local recipients, and the hot path, a channel message to every subscriber with one shared
 * encoded frame. Owns the outbound budgets: a connection's queue (`maxQueuedBytes`, slow
 * consumers) and every queue together (`maxTotalQueuedBytes`, the largest go first).
 */
/** Frames a channel's presence rule governs. */
const PRESENCE_FRAMES: ReadonlySet<string> = new Set(['presence:join', 'presence:leave', 'presence:update', 'typing'])

export class FanOut implements SequencedFanOut {
  /** Connections with frames in their outbound queue (for the hub-wide budget). */
  private readonly backlog = new Set<Connection>()
  private readonly queueLimits: QueueLimits

  constructor(private readonly host: FanOutHost) {
    this.queueLimits = { maxQueuedBytes: host.options.limits.maxQueuedBytes }
    // What an at-least-once channel held back beyond a gap goes out through here.
    host.recovery.attach(this)
  }

  /** A connection drained: write what waited; it leaves the backlog once its queue is empty. */
  drained(conn: Connection): void {
    conn.flush(this.host.stats)
    if (conn.pendingBytes === 0) this.backlog.delete(conn)
  }

  /** A connection ended: its queue is gone. */
  forget(conn: Connection): void {
    conn.discardQueue(this.host.stats)
    this.backlog.delete(conn)
  }

  encode(codec: Codec, frame: ServerFrame): Outbound {
    const data = codec.encode(frame)
    return new Outbound(data, wireLength(data))
  }

  /** `frame` (the measured `draft` plus its offset) encoded: with JSON, the draft's text plus one field. */
  withOffset(draft: Outbound, frame: MessageFrame, offset: number): Outbound {
    if (this.host.codec !== jsonCodec || typeof draft.data !== 'string') return this.encode(this.host.codec, frame)
    const data = jsonWithNumber(draft.data, 'offset', offset)
    // What was added is ASCII: one byte per character.
    return new Outbound(data, draft.bytes + data.length - draft.data.length)
  }

  /** Send one frame to one connection (replies, errors). */
  sendFrame(conn: Connection, frame: ServerFrame, volatile = false): void {
    if (conn.ended) return
    // Every accepted client publish is answered here: its sender's engagement.
    if (frame.type === 'published') conn.sent++
    this.write(conn, this.encode(conn.codec, frame), PRIORITY.high, volatile)
  }

  write(conn: Connection, out: Outbound, priority: PriorityClass, volatile: boolean): Delivery {
    const r = conn.write(out, priority, volatile, this.queueLimits, this.host.stats)
    if (r === Delivery.Queued) {
      this.backlog.add(conn)
      if (conn.overLimit(this.queueLimits)) this.slowConsumer(conn)
      else if (this.host.stats.queuedBytes > this.host.options.limits.maxTotalQueuedBytes) this.overBudget()
    }
    return r
  }

  /** A connection's queue is over its limit even after shedding low priority. */
  private slowConsumer(conn: Connection, reason = 'slow consumer: outbound queue over its limit'): void {
    if (this.host.options.limits.slowConsumer === 'drop') {
      this.host.stats.slowConsumerDrops++
      this.host.stats.dropped += conn.queued
      conn.dropQueued(this.host.stats)
      this.backlog.delete(conn)
      return
    }
    this.host.stats.slowConsumerDisconnects++
    this.host.admission.closeConnection(conn, CloseCode.SlowConsumer, reason)
  }

  /**
   * Every connection's queue together is over `limits.maxTotalQueuedBytes`: the largest queues
   * go first (as slow consumers), until the total fits. Clients that do not read cannot hold more
   * of the server's memory than that, however many they are.
   */
  private overBudget(): void {
    const budget = this.host.options.limits.maxTotalQueuedBytes
    while (this.host.stats.queuedBytes > budget && this.backlog.size > 0) {
      let largest: Connection | undefined
      for (const c of this.backlog) if (largest === undefined || c.pendingBytes > largest.pendingBytes) largest = c
      if (largest === undefined || largest.pendingBytes === 0) {
        this.backlog.clear()
        return
      }
      this.slowConsumer(largest, 'slow consumer: the server\'s outbound budget is spent and this queue is the largest')
      this.backlog.delete(largest)
    }
  }

  deliverLocal(d: Dispatch, out: Outbound | undefined, where: FilterPredicate | undefined, collect: Subscription[] | null = null): number {
    const frame = d.frame
    if (d.target.kind === 'channel' && PRESENCE_FRAMES.has(frame.type)) {
      // Presence from any node leaves out this node's subscribers whose presence rule denies them.
      const denied = this.host.live.get(d.target.channel)?.presenceDenied
      if (denied != null && denied.size > 0) d = { ...d, exclude: { users: d.exclude?.users, connections: [...(d.exclude?.connections ?? []), ...denied] } }
    }
    const encoded = out ?? this.encode(this.host.codec, frame)
    let local = NO_EXCLUSIONS
    if (d.exclude !== undefined || where !== undefined || d.priority !== undefined || d.volatile !== undefined || collect !== null) {
      const conns = d.exclude?.connections ?? []
      const users = d.exclude?.users ?? []
      const one = conns.length === 1 ? this.host.connections.get(conns[0]!) ?? null : null
      local = {
        collect,
        excludeOne: one,
        general: conns.length > 1 || users.length > 0 || where !== undefined || collect !== null,
        // One exclusion (a publisher's own connection) is checked by identity; a set only for several.
        excludeConnections: conns.length > 1 ? new Set(conns) : null,
        excludeUsers: users.length > 0 ? new Set(users) : null,
        where: where ?? null,
        priority: d.priority !== undefined ? PRIORITY[d.priority] : PRIORITY.normal,
        volatile: d.volatile === true,
      }
    }
    const t = d.target
    if (t.kind === 'channel') {
      const channel = this.host.live.get(t.channel)
      if (!channel) return 0
      if (frame.type === 'message' && frame.offset !== undefined) {
        const offset = frame.offset
        if (d.epoch !== undefined) this.host.recovery.learnEpoch(channel, d.epoch, offset - 1, undefined, false)
        if (channel.sequenced) {
          // At-least-once: offsets go out in order, each once (a single node never sees anything but the next one).
          if (offset !== channel.sequence + 1) return this.outOfSequence(channel, frame, encoded, local)
          channel.sequence = offset
          channel.flowing = true
          const n = this.fanOut(channel, frame, encoded, local)
          if (channel.held !== null || channel.known > offset) this.host.recovery.advance(channel)
          return n
        }
      }
      return this.fanOut(channel, frame, encoded, local)
    }
    const recipients = new Set<Connection>()
    if (t.kind === 'all') for (const c of this.host.connections.values()) recipients.add(c)
    else {
      for (const u of t.users) for (const c of this.host.byUser.get(u) ?? []) recipients.add(c)
      for (const id of t.connections) {
        const c = this.host.connections.get(id)
        if (c) recipients.add(c)
      }
    }
    let n = 0
    for (const conn of recipients) {
      if (conn === local.excludeOne || !admits(conn, local, frame)) continue
      if (this.write(conn, conn.sharedCodec ? encoded : this.encode(conn.codec, frame), local.priority, local.volatile) !== Delivery.Dropped) n++
    }
    return n
  }

  /**
   * A live message of an at-least-once channel that is not the next offset: one this node has
   * already passed (read from the store while it was on its way) is not sent again; one beyond a
   * gap waits for it (`Recovery.hold`). Its recipients are counted (and collected, for
   * `awaitAcks`) now, as if it had gone out.
   */
  private outOfSequence(channel: Channel, frame: MessageFrame, out: Outbound, d: LocalDispatch): number {
    const offset = frame.offset!
    if (channel.sequence >= 0 && offset <= channel.sequence) return 0
    let n = 0
    for (const sub of channel.fanOutList().subs) {
      const conn = sub.connection
      if (!sub.active || conn === d.excludeOne || !admits(conn, d, frame)) continue
      if (sub.filter !== null && !isDeletion(frame) && !sub.filter(frame)) continue
      if (d.collect !== null) d.collect.push(sub)
      n++
    }
    this.host.recovery.hold(channel, { frame, out, dispatch: d.collect === null ? d : { ...d, collect: null } })
    return n
  }

  /** A held message's turn came: it goes out as it would have on arrival. */
  fanOutHeld(channel: Channel, held: HeldMessage): void {
    this.fanOut(channel, held.frame, held.out, held.dispatch)
  }

  /** A message of a gap, read from the store: to each subscriber live delivery would have sent it to. */
  fanOutStored(channel: Channel, m: StoredMessage): void {
    const frame = storedToFrame(m, true)
    let shared: Outbound | null = null
    for (const sub of channel.fanOutList().subs) {
      if (!sub.active || !receives(sub, m, frame)) continue
      const conn = sub.connection
      shared ??= this.encode(this.host.codec, frame)
      if (sub.tracked && sub.replay === null) {
        this.host.acks.sendTracked(sub, frame, shared, PRIORITY.normal)
        continue
      }
      const out = conn.sharedCodec ? shared : this.encode(conn.codec, frame)
      if (sub.replay !== null) sub.replay.push([frame, out])
      else this.write(conn, out, PRIORITY.normal, false)
    }
    if (m.offset > channel.lastOffset) channel.lastOffset = m.offset
  }

  /**
   * Per subscriber: exclusion and filter checks, then one write of the shared frame. No
   * allocation per subscriber; counters are added once per fan-out; slow consumers are closed
   * after the loop.
   */
  private fanOut(channel: Channel, frame: ServerFrame, out: Outbound, d: LocalDispatch): number {
    const isMessage = frame.type === 'message'
    const excludeOne = d.excludeOne?.session
    const general = d.general
    const offset = isMessage ? (frame as MessageFrame).offset : undefined
    const deletion = isMessage && isDeletion(frame as MessageFrame)
    if (offset !== undefined && offset > channel.lastOffset) channel.lastOffset = offset
    // Tracking needs an offset, and must not be skipped for a collector (awaitAcks).
    const tracked = offset !== undefined && channel.options.delivery === 'at-least-once' && d.collect === null
    const { subs, direct } = channel.fanOutList()
    let slow: Connection[] | null = null
    let sent = 0
    let n = 0
    for (let i = 0; i < subs.length; i++) {
      const session = direct[i]
      if (session != null && !general) {
        if (session === excludeOne) continue
        if (!session.send(out)) subs[i]!.connection.congest()
        sent++
        continue
      }
      const sub = subs[i]!
      if (tracked && sub.fast && !general && sub.filter === null) {
        // At-least-once, uncongested, in sequence: track and write without touching the connection.
        if (sub.connection === d.excludeOne) continue
        if (offset === sub.lastSent + 1) {
          sub.lastSent = offset
          if (!sub.pending) this.host.acks.markPending(sub)
          if (!sub.session.send(out)) sub.connection.congest()
          sent++
          continue
        }
      }
      if (!sub.active) continue
      const conn = sub.connection
      if (conn === d.excludeOne || !admits(conn, d, frame)) continue
      if (isMessage) {
        if (sub.filter !== null && !deletion && !sub.filter(frame)) continue
        if (d.collect !== null) d.collect.push(sub)
        if (sub.replay !== null) {
          sub.replay.push([frame as MessageFrame, conn.sharedCodec ? out : this.encode(conn.codec, frame)])
          n++
          continue
        }
        if (sub.tracked && (frame as MessageFrame).offset !== undefined) {
          if (this.host.acks.sendTracked(sub, frame as MessageFrame, out, d.priority) !== Delivery.Dropped) n++
          continue
        }
      }
      const r = conn.write(conn.sharedCodec ? out : this.encode(conn.codec, frame), d.priority, d.volatile, this.queueLimits, this.host.stats)
      if (r === Delivery.Queued) {
        this.backlog.add(conn)
        if (conn.overLimit(this.queueLimits)) (slow ??= []).push(conn)
      }
      if (r !== Delivery.Dropped) n++
    }
    this.host.stats.messagesOut += sent
    this.host.stats.bytesOut += sent * out.bytes
    if (slow !== null) for (const conn of slow) this.slowConsumer(conn)
    if (this.host.stats.queuedBytes > this.host.options.limits.maxTotalQueuedBytes) this.overBudget()
    return n + sent
  }
}
