import { RealtimeError, type ClientFrameOf, type PresenceMember, type PresenceSnapshot, utf8Length } from '@tidings/protocol'
import type { TimerHandle } from '../ports/clock.js'
import type { PresenceChange, PresenceEntry } from '../ports/presence.js'
import type { MaybePromise } from '../util.js'
import { SerialQueue, isPromise, andThen } from '../util.js'
import type { Channel } from './channel.js'
import type { Connection } from './connection.js'
import type { Signals } from './events.js'
import type { HubPresence } from './api.js'
import type { ChannelPatterns } from './channels.js'
import type { Cluster } from './cluster.js'
import type { FanOut } from './fanout.js'
import type { ResolvedHubOptions } from './options.js'

/** What the presence service needs from the hub. */
export interface PresenceHost {
  readonly options: ResolvedHubOptions
  /** Live channels on this node (their subscribers whose presence rule denies them). */
  readonly live: ReadonlyMap<string, Channel>
  /** Channel patterns: whether a channel a client names without subscribing is a presence channel. */
  readonly patterns: Pick<ChannelPatterns, 'resolve'>
  /** Delivers presence frames to a channel's subscribers here and on the other nodes. */
  readonly cluster: Pick<Cluster, 'deliver'>
  /** Answers a connection's frames. */
  readonly fanout: Pick<FanOut, 'sendFrame'>
  readonly signals: Signals
}

/**
 * Presence on top of the PresenceStore: user-level join/leave edges, in-place updates, an
 * optional leave delay, typing indicators (debounced, auto-cleared), the presence frames of
 * clients (`presence:update`, `presence:get`, `typing`) and snapshots within the reply budget.
 */
export class PresenceService implements HubPresence {
  private readonly serial = new SerialQueue()
  private readonly pendingLeaves = new Map<string, { timer: TimerHandle; run: () => void }>()
  /**
   * On a cluster, this node's own entries (by channel and connection) as last written, so they
   * can be joined again when the shared store loses them. A single node keeps none.
   */
  private readonly mine: Map<string, PresenceEntry> | null

  constructor(private readonly host: PresenceHost) {
    this.mine = host.options.clustered ? new Map() : null
  }

  private get store() {
    return this.host.options.presenceStore
  }

  validState(state: string | undefined): boolean {
    const allowed = this.host.options.presence.states
    return state === undefined || allowed === undefined || allowed.includes(state)
  }

  join(conn: Connection, channel: Channel, state: string | undefined, data: Record<string, unknown> | undefined): MaybePromise<void> {
    const userId = conn.userId
    if (userId === undefined) return
    // Back within the leave delay on the same connection: the entry below replaces the old one,
    // whose delayed leave must not remove it later.
    const pending = this.pendingLeaves.get(`${channel.name}\u0000${conn.id}`)
    if (pending) {
      this.host.options.clock.clearTimeout(pending.timer)
      this.pendingLeaves.delete(`${channel.name}\u0000${conn.id}`)
    }
    const now = this.host.options.clock.now()
    const entry = {
      channel: channel.name,
      connectionId: conn.id,
      userId,
      nodeId: this.host.options.nodeId,
      state: state ?? this.host.options.presence.defaultState,
      data: data ?? {},
      joinedAt: now,
      updatedAt: now,
    }
    this.mine?.set(`${channel.name}\u0000${conn.id}`, entry)
    return this.serial.run(channel.name, () => andThen(this.store.join(entry), (change) => {
      if (change.edge) this.announce(channel.name, 'presence:join', change.member, conn.id)
    }))
  }

  update(conn: Connection, channel: Channel, state: string | undefined, data: Record<string, unknown> | undefined): MaybePromise<PresenceMember> {
    const now = this.host.options.clock.now()
    return this.serial.run(channel.name, () => andThen(this.store.update(channel.name, conn.id, { state, data, now }), (member) => {
      if (!member) throw new RealtimeError('RT_009', 'no presence entry to update: subscribe first')
      const key = `${channel.name}\u0000${conn.id}`
      const own = this.mine?.get(key)
      if (own) this.mine!.set(key, { ...own, state: state ?? own.state, data: data ?? own.data, updatedAt: now })
      this.announce(channel.name, 'presence:update', member, conn.id)
      return member
    }))
  }

  /** The connection left the channel; with a leave delay the member lingers that long. */
  leave(conn: Connection, channel: Channel, userGone: boolean): void {
    if (conn.userId === undefined) return
    if (userGone) this.clearTyping(channel, conn.userId)
    const name = channel.name
    const run = () => {
      this.pendingLeaves.delete(key)
      this.mine?.delete(key)
      const r = this.serial.run(name, () => andThen(this.store.leave(name, conn.id, this.host.options.clock.now()), (change: PresenceChange | undefined) => {
        if (change?.edge) this.announce(name, 'presence:leave', change.member, undefined)
        // One of several tabs left: the member stays, but its connection count (and maybe its
        // state, now from another tab) changed.
        else if (change) this.announce(name, 'presence:update', change.member, undefined)
      }))
      if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'presence.leave'))
    }
    const key = `${name}\u0000${conn.id}`
    const delay = this.host.options.presence.leaveDelayMs
    if (delay <= 0) return run()
    const timer = this.host.options.clock.setTimeout(run, delay)
    this.pendingLeaves.set(key, { timer, run })
  }

  /**
   * The shared store lost this node's entries (it lost its data, or this node was removed while
   * only slow): join them again as they were, announcing nothing (nobody was told they left).
   */
  rejoin(): void {
    if (!this.mine) return
    for (const entry of this.mine.values()) {
      const r = this.serial.run(entry.channel, () => this.store.join(entry))
      if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'presence.rejoin'))
    }
  }

  /** Run every delayed leave now (shutdown). */
  flushLeaves(): void {
    for (const { timer, run } of [...this.pendingLeaves.values()]) {
      this.host.options.clock.clearTimeout(timer)
      run()
    }
  }

  get pendingLeaveCount(): number {
    return this.pendingLeaves.size
  }

  // ------------------------------------------------------------------ clients' presence frames

  /** The subscribed presence channel a frame refers to, or RT_009 (RT_003 when the channel's presence rule denies this subscription). */
  private subscribedChannel(conn: Connection, name: string): Channel {
    const sub = conn.subscriptions.get(name)
    if (!sub) {
      const resolved = this.host.patterns.resolve(name)
      if (resolved && !resolved.options.presence) throw new RealtimeError('RT_009', `'${name}' is not a presence channel`)
      throw new RealtimeError('RT_009', `subscribe to '${name}' before using its presence`)
    }
    if (!sub.channel.options.presence) throw new RealtimeError('RT_009', `'${name}' is not a presence channel`)
    if (conn.userId === undefined) throw new RealtimeError('RT_009', 'presence needs an authenticated user')
    if (sub?.rights.presence === false) throw new RealtimeError('RT_003', `not allowed to use the presence of '${name}'`)
    return sub.channel
  }

  onUpdate(conn: Connection, frame: ClientFrameOf<'presence:update'>): MaybePromise<void> {
    const channel = this.subscribedChannel(conn, frame.channel)
    if (!conn.takePresenceToken(this.host.options.clock.now())) throw new RealtimeError('RT_006', 'too many presence updates per second', { limit: this.host.options.limits.presenceUpdatesPerSecond })
    if (frame.state === undefined && frame.data === undefined) throw new RealtimeError('RT_009', 'presence update needs state or data')
    if (!this.validState(frame.state)) throw new RealtimeError('RT_009', `unknown presence state '${frame.state}'`)
    // Presence data granted by the channel's rule (a channel token) is not the client's to change.
    if (frame.data !== undefined && conn.subscriptions.get(frame.channel)?.rights.grant?.presence !== undefined) {
      throw new RealtimeError('RT_003', `the presence data on '${frame.channel}' is set by the channel's grant`)
    }
    return andThen(this.update(conn, channel, frame.state, frame.data), (member) => {
      this.host.fanout.sendFrame(conn, { type: 'presence:update', id: frame.id, channel: frame.channel, user: member })
    })
  }

  onGet(conn: Connection, frame: ClientFrameOf<'presence:get'>): MaybePromise<void> {
    this.subscribedChannel(conn, frame.channel)
    return andThen(this.snapshot(frame.channel), (snap) => {
      this.host.fanout.sendFrame(conn, { type: 'presence', id: frame.id, channel: frame.channel, ...this.capSnapshot(snap) })
    })
  }

  onTyping(conn: Connection, frame: ClientFrameOf<'typing'>): void {
    const channel = this.subscribedChannel(conn, frame.channel)
    if (!conn.takePresenceToken(this.host.options.clock.now())) throw new RealtimeError('RT_006', 'too many presence updates per second')
    // A user who turned typing indicators off sends none; a stop still clears one already shown.
    if (conn.preferences?.typing === false && frame.active) return
    this.typing(conn, channel, frame.active)
  }


  /**
   * A presence snapshot within the reply budget: as many members as fit (in the store's order);
   * `count` stays the total, so `count > users.length` tells the client the list is partial.
   */
  capSnapshot(snap: PresenceSnapshot): PresenceSnapshot {
    const budget = this.host.options.limits.maxReplyBytes - 1024
    let bytes = 0
    for (let i = 0; i < snap.users.length; i++) {
      bytes += utf8Length(JSON.stringify(snap.users[i])) + 1
      if (bytes > budget) return { users: snap.users.slice(0, i), count: snap.count }
    }
    return snap
  }

  /** Who is present in a channel: users, each once, across nodes. */
  async get(channel: string): Promise<PresenceSnapshot> {
    return this.snapshot(channel)
  }

  snapshot(channel: string): MaybePromise<PresenceSnapshot> {
    return andThen(this.store.members(channel), (users) => ({ users, count: users.length }))
  }

  typing(conn: Connection, channel: Channel, active: boolean): void {
    const userId = conn.userId!
    const { clock, presence } = this.host.options
    const now = clock.now()
    channel.typing ??= new Map()
    const state = channel.typing.get(userId)
    if (!active) {
      if (state?.active) this.stopTyping(channel, userId)
      return
    }
    if (!state || !state.active || now - state.lastSentAt >= presence.typingDebounceMs) {
      this.host.cluster.deliver({ kind: 'channel', channel: channel.name }, { type: 'typing', channel: channel.name, userId, active: true }, { exclude: { users: [userId], connections: this.excluded(channel.name, undefined) }, volatile: true })
    }
    if (state?.clear !== undefined) clock.clearTimeout(state.clear as TimerHandle)
    const clear = clock.setTimeout(() => this.stopTyping(channel, userId), presence.typingTimeoutMs)
    const lastSentAt = !state || !state.active || now - state.lastSentAt >= presence.typingDebounceMs ? now : state.lastSentAt
    channel.typing.set(userId, { active: true, lastSentAt, clear })
  }

  clearTyping(channel: Channel, userId: string): void {
    if (channel.typing?.get(userId)?.active) this.stopTyping(channel, userId)
  }

  private stopTyping(channel: Channel, userId: string): void {
    const state = channel.typing?.get(userId)
    if (!state) return
    if (state.clear !== undefined) this.host.options.clock.clearTimeout(state.clear as TimerHandle)
    channel.typing!.delete(userId)
    if (channel.typing!.size === 0) channel.typing = null
    this.host.cluster.deliver({ kind: 'channel', channel: channel.name }, { type: 'typing', channel: channel.name, userId, active: false }, { exclude: { users: [userId], connections: this.excluded(channel.name, undefined) }, volatile: true })
  }

  /** A dead node's entries were removed: each user who left with it is announced once (or updated, when another tab stays). */
  nodeGone(changes: ReadonlyArray<{ channel: string; change: PresenceChange }>): void {
    // `$…` channels are the hub's own bookkeeping (connections per user, room seats): nobody hears them.
    for (const { channel, change } of changes) if (!channel.startsWith('$')) this.announce(channel, change.edge ? 'presence:leave' : 'presence:update', change.member, undefined)
  }

  /** Connections here whose presence rule denies them: presence frames to the channel leave them out. */
  private excluded(channel: string, also: string | undefined): string[] | undefined {
    const denied = this.host.live.get(channel)?.presenceDenied
    if (denied == null) return also === undefined ? undefined : [also]
    return also === undefined ? [...denied] : [also, ...denied]
  }

  private announce(channel: string, type: 'presence:join' | 'presence:leave' | 'presence:update', member: PresenceMember, excludeConnection: string | undefined): void {
    const connections = this.excluded(channel, excludeConnection)
    this.host.cluster.deliver({ kind: 'channel', channel }, { type, channel, user: member }, connections ? { exclude: { connections } } : {})
    this.host.signals.emit(type, { channel, member })
  }
}
