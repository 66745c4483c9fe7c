import { type FilterPredicate, type ClientFrameOf, type PresenceSnapshot, type StreamPosition, RealtimeError, compileFilter } from '@tidings/protocol'
import type { AuthorizeContext, ChannelAction, ChannelGrant } from '../ports/auth.js'
import type { Clock } from '../ports/clock.js'
import { type CompiledRule, roomDataOf, rulesOf, scopeOf } from '../rules/compile.js'
import { type SubscriptionRights, newRights } from '../rules/rights.js'
import { type MaybePromise, isPromise } from '../util.js'
import { Channel } from './channel.js'
import type { ChannelPatterns, ResolvedChannel } from './channels.js'
import type { Connection, Subscription } from './connection.js'
import type { Acks } from './delivery/acks.js'
import type { Recovery } from './delivery/recovery.js'
import type { Signals } from './events.js'
import type { Cluster } from './cluster.js'
import type { FanOut } from './fanout.js'
import { LiveQueries } from './live.js'
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

/** What a rule decided: why it denied, or the grant of a rule that allowed with one. */
export interface Decision {
  readonly denied?: string | undefined
  readonly grant?: ChannelGrant | undefined
}

/** Timers longer than this fire at once in some runtimes (a 32-bit signed delay). */
const LONGEST_TIMER = 2 ** 31 - 1

/** A rule's grant as the hub keeps it, or undefined when it is not one (a malformed grant denies). */
function validGrant(answer: object): ChannelGrant | undefined {
  const g = answer as { presence?: unknown; expiresAt?: unknown }
  if (g.presence !== undefined && (g.presence === null || typeof g.presence !== 'object' || Array.isArray(g.presence))) return undefined
  if (g.expiresAt !== undefined && (typeof g.expiresAt !== 'number' || !Number.isFinite(g.expiresAt))) return undefined
  const out: { presence?: Readonly<Record<string, unknown>>; expiresAt?: number } = {}
  if (g.presence !== undefined) out.presence = { ...(g.presence as Record<string, unknown>) }
  if (g.expiresAt !== undefined) out.expiresAt = g.expiresAt as number
  return out
}

/**
 * The subscription lifecycle: resolving a channel, the limits and the rules (with a time limit),
 * rooms and capacity, presence, the start (position, offline queue, recovery) and the end (acks,
 * cursors, presence, rooms, the live channel), kicks.
 */
export class SubscriptionService {
  /** Live query subscriptions (`db:collection:*`), served through `HubOptions.liveQueries`. */
  readonly liveQueries: LiveQueries

  constructor(private readonly host: SubscriptionsHost) {
    this.liveQueries = new LiveQueries(host, this)
  }

  /**
   * A channel's pattern and options: those it was opened with while it is live on this node
   * (whatever was registered since), else what its pattern gives now. The name must be valid.
   */
  resolve(name: string): ResolvedChannel {
    const live = this.host.live.get(name)
    const resolved = live ?? this.host.patterns.resolve(name)
    if (!resolved) throw new RealtimeError('RT_004', `no channel pattern matches '${name}'`)
    // Live query channels carry query results only: no publishes, no history.
    if (resolved.options.liveQuery) throw new RealtimeError('RT_004', this.host.options.liveQueries ? `'${name}' is a live query channel: only subscribe with a query` : `'${name}' is a live query channel and no live query provider is installed`)
    return resolved
  }

  /** The channel's pattern when it is a live query channel (live here or by its pattern). */
  private liveQueryChannel(name: string): ResolvedChannel | undefined {
    const resolved = this.host.live.get(name) ?? this.host.patterns.resolve(name)
    return resolved?.options.liveQuery ? resolved : undefined
  }

  async onSubscribe(conn: Connection, frame: ClientFrameOf<'subscribe'>): Promise<void> {
    const name = frame.channel
    const lq = this.liveQueryChannel(name)
    if (lq) return this.liveQueries.subscribe(conn, frame, lq)
    if (frame.query !== undefined || frame.resume !== undefined) throw new RealtimeError('RT_007', `'${name}' is not a live query channel (db:collection:<name>): query and resume do not apply`)
    const existing = conn.subscriptions.get(name)
    if (existing) {
      // Subscribing again changes the filter; it is not an error.
      if (frame.filter !== undefined) {
        existing.filter = frame.filter === null ? null : this.compileMessageFilter(frame.filter)
        existing.channel.invalidate()
      }
      const extras = await this.subscribedExtras(existing.channel, existing.rights.presence)
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
    const decidedOn = { room, revision: room?.revision, identity: conn.identity }
    const decision = await this.decide(conn, 'subscribe', name, resolved, room, frame.auth)
    if (decision.denied) throw new RealtimeError('RT_003', decision.denied)
    if (conn.ended) return
    // Presence and history have rules of their own when given (else they follow subscribe).
    const rules = rulesOf(options)
    let presenceAllowed = options.presence === true
    if (presenceAllowed && rules.presence !== undefined) {
      presenceAllowed = (await this.decide(conn, 'presence', name, resolved, room, frame.auth)).denied === undefined
      if (conn.ended) return
    }
    let historyAllowed = true
    if (rules.history !== undefined && (frame.since !== undefined || options.offline)) {
      historyAllowed = (await this.decide(conn, 'history', name, resolved, room, frame.auth)).denied === undefined
      if (conn.ended) return
    }
    this.checkSubscriptionLimits(conn, name)
    // The room may have been created or deleted while the rule was deciding.
    const current = this.host.rooms.rooms.get(name)
    // The room (or the identity) changed while the rules were deciding: the decision is stale.
    const stale = current !== decidedOn.room || current?.revision !== decidedOn.revision || conn.identity !== decidedOn.identity
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
      rights: newRights(presenceAllowed, decision.grant, frame.auth),
    }
    const rights = sub.rights
    const entered = channel.add(sub)
    conn.subscriptions.add(sub)
    conn.refreshFastPath()
    if (options.presence && !presenceAllowed) this.presenceDenied(channel, conn.id, true)
    if (decision.grant?.expiresAt !== undefined) this.expireAt(sub, rights, decision.grant.expiresAt)
    // A stale decision is made again now that the subscription is in place (a re-check that
    // denies ends it before any replay goes out; none goes out while it decides).
    if (stale) this.recheckSoon([sub])
    if (entered && room) this.host.signals.emit('room:member-joined', { room: room.info(), userId: conn.userId, connectionId: conn.id })
    try {
      if (capacity !== undefined && this.host.options.clustered) await this.takeSeat(sub, capacity)
      await this.startSubscription(conn, sub, frame, rights, historyAllowed)
    } catch (err) {
      // A store or presence failure must not leave a half-made subscription behind.
      this.removeSubscription(sub, 'failed', false)
      throw err
    }
  }

  /** `RT_006` when the connection, or its user across connections, has all the subscriptions it may. */
  checkSubscriptionLimits(conn: Connection, channel: string): void {
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
  private async startSubscription(conn: Connection, sub: Subscription, frame: ClientFrameOf<'subscribe'>, rights: SubscriptionRights, historyAllowed: boolean): Promise<void> {
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
    // A grant's presence data is the member's, whatever the client sent (it cannot forge it).
    const presenceData = rights.grant?.presence !== undefined ? { ...rights.grant.presence } : frame.presence
    if (options.presence && rights.presence && conn.userId !== undefined) await this.host.presence.join(conn, channel, frame.state, presenceData)
    if (conn.ended || conn.subscriptions.get(name) !== sub) return
    const extras = await this.subscribedExtras(channel, rights.presence)
    if (conn.ended || conn.subscriptions.get(name) !== sub) return
    if (extras.position) this.host.recovery.learnEpoch(channel, extras.position.epoch, extras.position.offset, sub)
    const delivery = history ? (sub.tracked ? 'at-least-once' : 'at-most-once') : undefined
    let since = frame.since
    let offline = false
    let lost: string | undefined
    if (since && history && !historyAllowed) {
      // Resuming needs the history rule: denied, there is no replay (never a partial one); the
      // subscription goes on from the current position.
      const start = extras.position?.offset ?? 0
      sub.lastSent = sub.acked = start
      this.host.fanout.sendFrame(conn, { type: 'subscribed', id: frame.id, channel: name, ...extras, delivery, recovered: false, reason: `not allowed to read the history of '${name}'` })
      this.host.recovery.goLive(sub, start)
      if (conn.subscriptions.get(name) === sub) this.host.signals.emit('subscribe', { connectionId: conn.id, userId: conn.userId, channel: name })
      return
    }
    if (!since && history && historyAllowed && options.offline && conn.userId !== undefined && extras.position) {
      // The user's offline queue: what was published since it last acknowledged (or all that is kept).
      const cursor = await this.host.options.store.cursor(name, conn.userId)
      if (conn.ended || conn.subscriptions.get(name) !== sub) return
      since = { epoch: extras.position.epoch, offset: cursor && cursor.epoch === extras.position.epoch ? cursor.offset : 0 }
      offline = true
      if (cursor === undefined) {
        // The user's first subscription to this queue: its cursor starts here (at 0: all that is
        // kept is unread), so the channel is on the user's channel list (`channelsOf`) from now on.
        const r = this.host.options.store.commit(name, conn.userId, 0)
        if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'store.commit'))
      } else if (cursor.epoch !== extras.position.epoch) {
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

  async subscribedExtras(channel: Channel, presence = true): Promise<{ presence?: PresenceSnapshot; position?: StreamPosition }> {
    const out: { presence?: PresenceSnapshot; position?: StreamPosition } = {}
    if (channel.options.presence && presence) out.presence = this.host.presence.capSnapshot(await this.host.presence.snapshot(channel.name))
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

  /**
   * Returns why the action is denied, or undefined when it is allowed. Without an `auth` string,
   * a subscribed connection's own (the one it subscribed with) is used.
   */
  async authorize(conn: Connection, action: ChannelAction, channel: string, resolved: ResolvedChannel, room: Room | undefined, auth: string | undefined): Promise<string | undefined> {
    return (await this.decide(conn, action, channel, resolved, room, auth ?? conn.subscriptions.get(channel)?.rights.auth)).denied
  }

  /**
   * Decide an action with the channel's compiled rule (presence and history without a rule of
   * their own follow subscribe), the room's permissions and the hub's `authorize`. Only `true`
   * or a grant allows; a rule that throws, rejects or takes longer than `limits.ruleTimeoutMs` denies.
   */
  async decide(conn: Connection, action: ChannelAction, channel: string, resolved: ResolvedChannel, room: Room | undefined, auth: string | undefined): Promise<Decision> {
    const rules = rulesOf(resolved.options)
    let rule: CompiledRule | undefined = rules[action]
    let as: ChannelAction = action
    if (rule === undefined) {
      rule = rules.subscribe
      as = 'subscribe'
    }
    const identity = conn.identity
    const ctx: AuthorizeContext = {
      identity,
      channel,
      action: as,
      params: resolved.params,
      room: room ? { members: room.members, metadata: room.metadata } : undefined,
      auth,
    }
    const anonymous = identity.userId === undefined
    let allowed = false
    let grant: ChannelGrant | undefined
    switch (rule.kind) {
      case 'constant':
        allowed = rule.value
        break
      case 'authenticated':
        if (anonymous) return { denied: 'authentication required' }
        allowed = true
        break
      case 'expression':
        try {
          allowed = rule.run(scopeOf(ctx, this.host.clock.now(), roomDataOf(room))) === true
        } catch (err) {
          this.host.options.logger.debug('channel rule failed', { channel, error: String(err) })
          allowed = false
        }
        break
      case 'function':
        try {
          const answer = await this.decideInTime(rule.run(ctx))
          if (answer === true) allowed = true
          else if (typeof answer === 'object' && answer !== null) {
            grant = validGrant(answer)
            allowed = grant !== undefined
          }
        } catch (err) {
          this.host.options.logger.debug('channel rule threw', { channel, error: String(err) })
          allowed = false
        }
        break
    }
    if (allowed && grant?.expiresAt !== undefined && !(grant.expiresAt > this.host.clock.now())) return { denied: `the grant to ${action} on '${channel}' has expired` }
    if (allowed && room && !room.allows(as === 'publish' ? 'publish' : 'subscribe', identity.userId)) allowed = false
    if (allowed && this.host.options.authorize) {
      try {
        allowed = (await this.decideInTime(this.host.options.authorize(ctx))) === true
      } catch {
        allowed = false
      }
    }
    if (allowed) return grant === undefined ? {} : { grant }
    const ruleIsFalse = rule.kind === 'constant' && !rule.value
    return { denied: anonymous && !ruleIsFalse ? `authentication required to ${action} on '${channel}'` : `not allowed to ${action} on '${channel}'` }
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
    if (channel.options.liveQuery) this.liveQueries.ended(sub)
    const rights = sub.rights
    if (rights.expiry !== undefined) this.host.clock.clearTimeout(rights.expiry)
    rights.expiry = undefined
    if (!rights.presence) this.presenceDenied(channel, conn.id, false)
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
      // Live query channels take no dispatches: the broker was never asked for them.
      if (!channel.options.liveQuery) this.host.cluster.unwant(channel.name)
      this.host.signals.emit('channel:vacated', { channel: channel.name, nodeId: this.host.options.nodeId })
      if (room) {
        this.host.signals.emit('room:emptied', room.info())
        if (room.deleteWhenEmpty && this.host.rooms.rooms.get(room.channel) === room) this.host.rooms.delete(room.channel)
      }
    }
  }

  /**
   * Room membership, roles or permissions changed: publish rights are decided again on the next
   * publish, and every subscription to the channel is decided again (those now denied end with
   * `revoked`). The re-check runs once the caller is done (a member's removal kicks first).
   */
  forgetPublishDecisions(channelName: string): void {
    const channel = this.host.live.get(channelName)
    if (!channel) return
    const subs = [...channel.subscribers.values()]
    for (const sub of subs) sub.canPublish = undefined
    this.recheckSoon(subs)
  }

  /**
   * Decide these subscriptions again once the caller is done; until the answers are in, a replay
   * into any of them is refused (`recovered: false`), never sent ahead of a revocation.
   */
  recheckSoon(subs: Subscription[]): void {
    for (const sub of subs) {
      sub.canPublish = undefined
      sub.rights.checking++
    }
    void Promise.resolve()
      .then(() => this.recheck(subs))
      .catch((err: unknown) => this.host.signals.report(err, 'rules.recheck'))
      .finally(() => {
        for (const sub of subs) {
          sub.rights.checking--
        }
      })
  }

  /**
   * Decide the subscribe rule again for these subscriptions (with the `auth` string each
   * subscribed with): those denied now end with an `unsubscribed` frame, reason `'revoked'`
   * (and the `unsubscribe` event); the others have their publish decision forgotten, presence
   * decided again (by its own rule, when there is one) and a new grant's end. Only the latest
   * re-check of a subscription applies.
   */
  async recheck(subs: Iterable<Subscription>): Promise<void> {
    await Promise.all([...subs].map((sub) => this.recheckOne(sub)))
  }

  private async recheckOne(sub: Subscription): Promise<void> {
    const conn = sub.connection
    const channel = sub.channel
    const name = channel.name
    if (conn.ended || conn.subscriptions.get(name) !== sub) return
    sub.canPublish = undefined
    const rights = sub.rights
    const generation = ++rights.generation
    rights.checking++
    const current = () => rights.generation === generation && !conn.ended && conn.subscriptions.get(name) === sub
    try {
      const decision = await this.decide(conn, 'subscribe', name, channel, this.host.rooms.rooms.get(name), rights.auth)
      if (!current()) return
      if (decision.denied) {
        this.removeSubscription(sub, 'revoked', true)
        return
      }
      // A live query follows the identity (its row rule may see a refreshed one differently).
      if (channel.options.liveQuery) this.liveQueries.rechecked(sub)
      if (decision.grant !== undefined) {
        rights.grant = decision.grant
        if (rights.expiry !== undefined) this.host.clock.clearTimeout(rights.expiry)
        rights.expiry = undefined
        if (decision.grant.expiresAt !== undefined) this.expireAt(sub, rights, decision.grant.expiresAt)
      }
      if (channel.options.presence && rulesOf(channel.options).presence !== undefined && conn.userId !== undefined) {
        const allowed = (await this.decide(conn, 'presence', name, channel, this.host.rooms.rooms.get(name), rights.auth)).denied === undefined
        if (!current() || allowed === rights.presence) return
        rights.presence = allowed
        this.presenceDenied(channel, conn.id, !allowed)
        try {
          if (allowed) {
            const r = this.host.presence.join(conn, channel, undefined, rights.grant?.presence !== undefined ? { ...rights.grant.presence } : undefined)
            if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'presence.join'))
          } else this.host.presence.leave(conn, channel, false)
        } catch (err) {
          this.host.signals.report(err, allowed ? 'presence.join' : 'presence.leave')
        }
      }
    } catch (err) {
      this.host.signals.report(err, 'rules.recheck')
    } finally {
      rights.checking--
    }
  }

  /** Presence frames to the channel leave out this connection (its presence rule denies). */
  private presenceDenied(channel: Channel, connectionId: string, denied: boolean): void {
    if (denied) (channel.presenceDenied ??= new Set()).add(connectionId)
    else if (channel.presenceDenied?.delete(connectionId) && channel.presenceDenied.size === 0) channel.presenceDenied = null
  }

  /** The grant ends at `at`: the subscription ends then with reason `'expired'` (the client subscribes again with fresh credentials). */
  private expireAt(sub: Subscription, rights: SubscriptionRights, at: number): void {
    const delay = at - this.host.clock.now()
    const step = Math.max(0, Math.min(delay, LONGEST_TIMER))
    rights.expiry = this.host.clock.setTimeout(() => {
      rights.expiry = undefined
      if (sub.connection.subscriptions.get(sub.channel.name) !== sub) return
      if (step < delay) this.expireAt(sub, rights, at)
      else this.removeSubscription(sub, 'expired', true)
    }, step)
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
