import { type FilterPredicate, type ClientFrameOf, type PresenceSnapshot, type StreamPosition, RealtimeError, compileFilter } from '@tidings/protocol'
import type { Clock } from '../ports/clock.js'
import { type MaybePromise, isPromise } from '../util.js'
import { Channel } from './channel.js'
import type { ChannelPatterns, ResolvedChannel } from './channels.js'
import type { Connection, Subscription } from './connection.js'
import type { Acks } from './delivery/acks.js'
import type { Recovery } from './delivery/recovery.js'
import type { Signals } from './events.js'
import type { Cluster } from './cluster.js'
import type { FanOut } from './fanout.js'
import type { ResolvedHubOptions } from './options.js'
import type { PresenceService } from './presence.js'
import { retentionOf } from './publish.js'
import type { Room, RoomRegistry } from './rooms.js'

/** What subscriptions need from the hub: the registries they change and the concepts they start. */
export interface SubscriptionsHost {
  readonly clock: Clock
  readonly options: ResolvedHubOptions
  /** Live channels on this node, by name (created on the first subscribe, dropped with the last). */
  readonly live: Map<string, Channel>
  readonly patterns: ChannelPatterns
  readonly byUser: ReadonlyMap<string, ReadonlySet<Connection>>
  readonly rooms: RoomRegistry
  readonly presence: PresenceService
  readonly recovery: Recovery
  readonly acks: Acks
  readonly fanout: FanOut
  readonly cluster: Pick<Cluster, 'want' | 'unwant' | 'ask'>
  readonly signals: Signals
}

/**
 * The presence-store channel where, on a cluster, each occupant of a channel with a capacity
 * holds a seat (users once, anonymous connections each), so the capacity holds across nodes.
 */
export const seatsChannel = (channel: string): string => `$seats:${channel}`

/**
 * The subscription lifecycle: resolving a channel, the limits and the rules (with a time limit),
 * rooms and capacity, presence, the start (position, offline queue, recovery) and the end (acks,
 * cursors, presence, rooms, the live channel), kicks.
 */
export class SubscriptionService {
  constructor(private readonly host: SubscriptionsHost) {}

  /**
   * A channel's pattern and options: those it was opened with while it is live on this node
   * (whatever was registered since), else what its pattern gives now. The name must be valid.
   */
  resolve(name: string): ResolvedChannel {
    const live = this.host.live.get(name)
    if (live !== undefined) return live
    const resolved = this.host.patterns.resolve(name)
    if (!resolved) throw new RealtimeError('RT_004', `no channel pattern matches '${name}'`)
    if (resolved.options.liveQuery) throw new RealtimeError('RT_004', `'${name}' is a live query channel and no live query provider is installed`)
    return resolved
  }

  async onSubscribe(conn: Connection, frame: ClientFrameOf<'subscribe'>): Promise<void> {
    const name = frame.channel
    const existing = conn.subscriptions.get(name)
    if (existing) {
      // Subscribing again changes the filter; it is not an error.
      if (frame.filter !== undefined) {
        existing.filter = frame.filter === null ? null : this.compileMessageFilter(frame.filter)
        existing.channel.invalidate()
      }
      const extras = await this.subscribedExtras(existing.channel)
      const at = existing.tracked ? existing.lastSent : Math.max(existing.lastSent, existing.channel.lastOffset)
      this.host.fanout.sendFrame(conn, {
        type: 'subscribed',
        id: frame.id,
        channel: name,
        presence: extras.presence,
        // The subscription simply goes on where it was: no `delivery`, no `recovered` (nothing is replayed).
        ...(extras.position ? { position: { epoch: extras.position.epoch, offset: at } } : {}),
      })
      return
    }
    this.checkSubscriptionLimits(conn, name)
    const resolved = this.resolve(name)
    const options = resolved.options
    const filter = frame.filter != null ? this.compileMessageFilter(frame.filter) : null
    if (options.presence && frame.state !== undefined && !this.host.presence.validState(frame.state)) {
      throw new RealtimeError('RT_009', `unknown presence state '${frame.state}'`)
    }
    let room = this.host.rooms.rooms.get(name)
    if (!room && options.room === 'required') throw new RealtimeError('RT_004', `room '${name}' does not exist`)
    const denied = await this.authorize(conn, 'subscribe', name, resolved, room, frame.auth)
    if (denied) throw new RealtimeError('RT_003', denied)
    if (conn.ended) return
    this.checkSubscriptionLimits(conn, name)
    // The room may have been created or deleted while the rule was deciding.
    const current = this.host.rooms.rooms.get(name)
    if (room && current !== room) throw new RealtimeError('RT_004', `room '${name}' was deleted`)
    room = current
    if (!room && options.room === 'required') throw new RealtimeError('RT_004', `room '${name}' does not exist`)
    if (!room && options.room === 'auto') room = this.host.rooms.open(name, {}, true)
    let channel = this.host.live.get(name)
    const capacity = room?.capacity ?? options.capacity
    if (capacity !== undefined && !channel?.occupiedBy(conn.userId, conn.id) && (channel?.occupants ?? 0) >= capacity) {
      throw new RealtimeError('RT_008', `'${name}' is full (${capacity})`, { capacity })
    }
    if (!channel) {
      this.host.live.set(name, (channel = new Channel(name, resolved.pattern, options, resolved.params, this.host.options.clustered)))
      // Ask the broker for the channel's dispatches now; the subscription awaits it before reading its position.
      const wanted = this.host.cluster.want(name)
      if (wanted) wanted.catch(() => undefined)
      this.host.signals.emit('channel:occupied', { channel: name, nodeId: this.host.options.nodeId })
    }
    const history = retentionOf(options, this.host.options.history)
    const sub: Subscription = {
      connection: conn,
      session: conn.session,
      active: true,
      fast: false,
      channel,
      filter,
      canPublish: undefined,
      // Live messages wait until the reply (and any replay) is out, so they follow it in order.
      replay: history ? [] : null,
      tracked: options.delivery === 'at-least-once' && history !== null,
      lastSent: 0,
      acked: 0,
      attempts: 0,
      deadline: 0,
      pending: false,
      seated: false,
    }
    const entered = channel.add(sub)
    conn.subscriptions.add(sub)
    conn.refreshFastPath()
    if (entered && room) this.host.signals.emit('room:member-joined', { room: room.info(), userId: conn.userId, connectionId: conn.id })
    try {
      if (capacity !== undefined && this.host.options.clustered) await this.takeSeat(sub, capacity)
      await this.startSubscription(conn, sub, frame)
    } catch (err) {
      // A store or presence failure must not leave a half-made subscription behind.
      this.removeSubscription(sub, 'failed', false)
      throw err
    }
  }

  /** `RT_006` when the connection, or its user across connections, has all the subscriptions it may. */
  private checkSubscriptionLimits(conn: Connection, channel: string): void {
    if (conn.subscriptions.size >= conn.maxSubscriptions) {
      throw new RealtimeError('RT_006', `subscription limit of ${conn.maxSubscriptions} reached`, { limit: conn.maxSubscriptions })
    }
    const perUser = this.host.options.limits.maxSubscriptionsPerUser
    if (perUser === undefined || conn.userId === undefined) return
    let limit: number
    try {
      limit = typeof perUser === 'function' ? perUser(conn.identity) : perUser
    } catch (err) {
      this.host.signals.report(err, 'limits.maxSubscriptionsPerUser')
      throw new RealtimeError('RT_006', 'subscription limit could not be decided')
    }
    if (!Number.isFinite(limit)) {
      this.host.signals.report(new TypeError(`limits.maxSubscriptionsPerUser gave ${String(limit)}`), 'limits.maxSubscriptionsPerUser')
      throw new RealtimeError('RT_006', 'subscription limit could not be decided')
    }
    // Distinct channels: the same room open in two tabs is one subscription of the user's.
    const channels = new Set<string>()
    for (const c of this.host.byUser.get(conn.userId) ?? []) for (const sub of c.subscriptions.values()) channels.add(sub.channel.name)
    if (!channels.has(channel) && channels.size >= limit) throw new RealtimeError('RT_006', `subscription limit of ${limit} channels per user reached`, { limit, scope: 'user' })
  }

  /** On a cluster, a seat of the channel's capacity across nodes: `RT_008` when every seat is taken by others. */
  private async takeSeat(sub: Subscription, capacity: number): Promise<void> {
    const conn = sub.connection
    const store = this.host.options.presenceStore
    const channel = seatsChannel(sub.channel.name)
    const now = this.host.clock.now()
    const occupant = conn.userId ?? `~${conn.id}`
    const change = await store.join({ channel, connectionId: conn.id, userId: occupant, nodeId: this.host.options.nodeId, state: 'online', data: {}, joinedAt: now, updatedAt: now })
    sub.seated = true
    if (!change.edge) return // the user already sits here (another tab, another node)
    const members = await store.members(channel)
    if (members.length > capacity) throw new RealtimeError('RT_008', `'${sub.channel.name}' is full (${capacity})`, { capacity })
  }

  /** Presence, position, offline queue or recovery, then the reply and live delivery. */
  private async startSubscription(conn: Connection, sub: Subscription, frame: ClientFrameOf<'subscribe'>): Promise<void> {
    const name = frame.channel
    const channel = sub.channel
    const options = channel.options
    const history = retentionOf(options, this.host.options.history)
    // Interest first: once the broker brings the channel's dispatches, the position read below
    // cannot miss a message published on another node in between.
    const wanted = this.host.cluster.want(name)
    if (wanted) {
      await wanted
      if (conn.ended || conn.subscriptions.get(name) !== sub) return
    }
    if (options.presence && conn.userId !== undefined) await this.host.presence.join(conn, channel, frame.state, frame.presence)
    if (conn.ended || conn.subscriptions.get(name) !== sub) return
    const extras = await this.subscribedExtras(channel)
    if (conn.ended || conn.subscriptions.get(name) !== sub) return
    if (extras.position) this.host.recovery.learnEpoch(channel, extras.position.epoch, extras.position.offset, sub)
    const delivery = history ? (sub.tracked ? 'at-least-once' : 'at-most-once') : undefined
    let since = frame.since
    let offline = false
    let lost: string | undefined
    if (!since && history && options.offline && conn.userId !== undefined && extras.position) {
      // The user's offline queue: what was published since it last acknowledged (or all that is kept).
      const cursor = await this.host.options.store.cursor(name, conn.userId)
      if (conn.ended || conn.subscriptions.get(name) !== sub) return
      since = { epoch: extras.position.epoch, offset: cursor && cursor.epoch === extras.position.epoch ? cursor.offset : 0 }
      offline = true
      if (cursor && cursor.epoch !== extras.position.epoch) {
        // The cursor points into history that is gone: the queue up to the loss is lost. Say so
        // (`recovered: false`), deliver what the channel has kept since, and move the cursor into
        // the current epoch so the loss is reported once.
        lost = 'epoch changed: the offline queue was lost with the channel history; what the channel kept since is replayed'
        const r = this.host.options.store.commit(name, conn.userId, 0)
        if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'store.commit'))
      }
    }
    if (since && !history) {
      this.host.fanout.sendFrame(conn, { type: 'subscribed', id: frame.id, channel: name, ...extras, recovered: false, reason: 'channel keeps no history' })
    } else if (since) {
      await this.host.recovery.recover(conn, sub, since, frame.id, { ...extras, delivery }, offline, lost)
    } else {
      const start = extras.position?.offset ?? 0
      sub.lastSent = sub.acked = start
      this.host.fanout.sendFrame(conn, { type: 'subscribed', id: frame.id, channel: name, ...extras, delivery })
      this.host.recovery.goLive(sub, start)
    }
    if (conn.subscriptions.get(name) === sub) this.host.signals.emit('subscribe', { connectionId: conn.id, userId: conn.userId, channel: name })
  }

  async subscribedExtras(channel: Channel): Promise<{ presence?: PresenceSnapshot; position?: StreamPosition }> {
    const out: { presence?: PresenceSnapshot; position?: StreamPosition } = {}
    if (channel.options.presence) out.presence = this.host.presence.capSnapshot(await this.host.presence.snapshot(channel.name))
    if (retentionOf(channel.options, this.host.options.history)) out.position = await this.host.options.store.position(channel.name)
    return out
  }

  compileMessageFilter(filter: unknown): FilterPredicate {
    try {
      return compileFilter(filter)
    } catch (err) {
      throw new RealtimeError('RT_007', err instanceof Error ? err.message : 'invalid filter')
    }
  }

  /** Returns why the action is denied, or undefined when it is allowed. */
  async authorize(conn: Connection, action: 'subscribe' | 'publish', channel: string, resolved: ResolvedChannel, room: Room | undefined, auth: string | undefined): Promise<string | undefined> {
    const rule = resolved.options[action] ?? 'authenticated'
    const identity = conn.identity
    const ctx = {
      identity,
      channel,
      action,
      params: resolved.params,
      room: room ? { members: room.members, metadata: room.metadata } : undefined,
      auth,
    }
    const anonymous = identity.userId === undefined
    let allowed: boolean
    if (rule === true || rule === false) allowed = rule
    else if (rule === 'authenticated') {
      if (anonymous) return 'authentication required'
      allowed = true
    } else if (typeof rule === 'string') {
      allowed = false // TODO(rules): expressions are compiled at registration
    } else {
      try {
        const answer = await this.decideInTime(rule(ctx))
        allowed = answer === true || (typeof answer === 'object' && answer !== null)
      } catch (err) {
        this.host.options.logger.debug('channel rule threw', { channel, error: String(err) })
        allowed = false
      }
    }
    if (allowed && room && !room.allows(action, identity.userId)) allowed = false
    if (allowed && this.host.options.authorize) {
      try {
        allowed = (await this.decideInTime(this.host.options.authorize(ctx))) === true
      } catch {
        allowed = false
      }
    }
    if (allowed) return undefined
    return anonymous && rule !== false ? `authentication required to ${action} on '${channel}'` : `not allowed to ${action} on '${channel}'`
  }

  /** A rule's answer, or `false` when it takes longer than `limits.ruleTimeoutMs` (a hung rule denies). */
  private decideInTime<T>(answer: MaybePromise<T | boolean>): MaybePromise<T | boolean> {
    if (!isPromise(answer)) return answer
    const ms = this.host.options.limits.ruleTimeoutMs
    return new Promise<T | boolean>((resolve, reject) => {
      const timer = this.host.clock.setTimeout(() => {
        this.host.options.logger.warn('channel rule timed out', { ms })
        resolve(false)
      }, ms)
      answer.then(
        (v) => {
          this.host.clock.clearTimeout(timer)
          resolve(v)
        },
        (err) => {
          this.host.clock.clearTimeout(timer)
          reject(err)
        },
      )
    })
  }

  removeSubscription(sub: Subscription, reason: string, notify: boolean): void {
    const conn = sub.connection
    const channel = sub.channel
    if (conn.subscriptions.get(channel.name) !== sub) return
    conn.subscriptions.delete(channel.name)
    const left = channel.remove(sub)
    this.host.acks.untrack(sub)
    this.host.acks.gone(sub)
    const written = sub.replay === null ? Math.max(sub.lastSent, channel.lastOffset) : sub.lastSent
    // The port calls below may throw (a custom store or presence store): each is reported on its
    // own, and the channel is still let go of below.
    if (channel.options.offline && !sub.tracked && conn.userId !== undefined && written > 0) {
      // At-most-once offline channels count what was written as delivered.
      try {
        const r = this.host.options.store.commit(channel.name, conn.userId, written)
        if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'store.commit'))
      } catch (err) {
        this.host.signals.report(err, 'store.commit')
      }
    }
    const room = this.host.rooms.rooms.get(channel.name)
    if (channel.options.presence && conn.userId !== undefined) {
      try {
        this.host.presence.leave(conn, channel, left)
      } catch (err) {
        this.host.signals.report(err, 'presence.leave')
      }
    }
    if (sub.seated) {
      sub.seated = false
      try {
        const r = this.host.options.presenceStore.leave(seatsChannel(channel.name), conn.id, this.host.clock.now())
        if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'presence.leave'))
      } catch (err) {
        this.host.signals.report(err, 'presence.leave')
      }
    }
    if (left && room) this.host.signals.emit('room:member-left', { room: room.info(), userId: conn.userId, connectionId: conn.id })
    if (notify && !conn.ended) this.host.fanout.sendFrame(conn, { type: 'unsubscribed', channel: channel.name, reason })
    this.host.signals.emit('unsubscribe', { connectionId: conn.id, userId: conn.userId, channel: channel.name, reason })
    if (channel.subscribers.size === 0) {
      this.host.live.delete(channel.name)
      this.host.cluster.unwant(channel.name)
      this.host.signals.emit('channel:vacated', { channel: channel.name, nodeId: this.host.options.nodeId })
      if (room) {
        this.host.signals.emit('room:emptied', room.info())
        if (room.deleteWhenEmpty && this.host.rooms.rooms.get(room.channel) === room) this.host.rooms.delete(room.channel)
      }
    }
  }

  /** Room membership or permissions changed: publish rights are decided again on the next publish. */
  forgetPublishDecisions(channelName: string): void {
    const channel = this.host.live.get(channelName)
    if (channel) for (const sub of channel.subscribers.values()) sub.canPublish = undefined
  }

  roomDeleted(room: Room): void {
    const channel = this.host.live.get(room.channel)
    if (channel) for (const sub of [...channel.subscribers.values()]) this.removeSubscription(sub, 'room-deleted', true)
    this.host.signals.emit('room:deleted', room.info())
  }

  /** The shared store lost this node's seats: take them again (no count: they were admitted). */
  rejoinSeats(): void {
    const store = this.host.options.presenceStore
    const now = this.host.clock.now()
    for (const channel of this.host.live.values()) {
      for (const sub of channel.subscribers.values()) {
        if (!sub.seated) continue
        const conn = sub.connection
        try {
          const r = store.join({ channel: seatsChannel(channel.name), connectionId: conn.id, userId: conn.userId ?? `~${conn.id}`, nodeId: this.host.options.nodeId, state: 'online', data: {}, joinedAt: now, updatedAt: now })
          if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'presence.rejoin'))
        } catch (err) {
          this.host.signals.report(err, 'presence.rejoin')
        }
      }
    }
  }

  /** Unsubscribe a user from a channel on every node; how many subscriptions ended. */
  async kick(channelName: string, userId: string, reason = 'kicked'): Promise<number> {
    const here = this.kickLocal(channelName, userId, reason)
    const { answers } = await this.host.cluster.ask<number>({ op: 'kick', channel: channelName, userId, reason }, here)
    return answers.reduce((n, a) => n + (typeof a.result === 'number' ? a.result : 0), 0)
  }

  kickLocal(channelName: string, userId: string, reason: string): number {
    let n = 0
    for (const conn of [...(this.host.byUser.get(userId) ?? [])]) {
      const sub = conn.subscriptions.get(channelName)
      if (sub) {
        this.removeSubscription(sub, reason, true)
        n++
      }
    }
    return n
  }
}
