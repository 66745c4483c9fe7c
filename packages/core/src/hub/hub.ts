import { type Codec, type WireData, CloseCode, RealtimeError, type ClientFrame } from '@tidings/protocol'
import { EventEmitter } from 'eventemitter3'
import type { ClusterQuery } from '../ports/broker.js'
import type { Clock } from '../ports/clock.js'
import type { ConnectionHandle, Session } from '../ports/session.js'
import type { UserErasure } from '../ports/store.js'
import { type MaybePromise, isPromise, isoTimestamp } from '../util.js'
import type { BroadcastOptions, BroadcastResult, ChannelHandle, ChannelInfo, ConnectOptions, Hub, HubChannels, HubHealth, PublishOptions, PublishResult, Route } from './api.js'
import { Channel } from './channel.js'
import { ChannelPatterns } from './channels.js'
import { Connection } from './connection.js'
import type { HubEvents, Signals } from './events.js'
import { Metrics, type MetricsSnapshot } from './metrics.js'
import type { AnalyticsOptions, HubAnalytics } from './analytics.js'
import { type HubOptions, type ResolvedHubOptions, resolveHubOptions } from './options.js'
import { NotificationService } from './notifications.js'
import { PresenceService } from './presence.js'
import { CredentialWatch } from './credentials.js'
import { Acks } from './delivery/acks.js'
import { Receipts } from './delivery/receipts.js'
import { Recovery } from './delivery/recovery.js'
import { FanOut } from './fanout.js'
import { Cluster } from './cluster.js'
import { Publisher } from './publish.js'
import { Inbound } from './inbound.js'
import { attachLogging } from './logging.js'
import { Admission } from './admission.js'
import { SubscriptionService } from './subscriptions.js'
import { Preferences } from './preferences.js'
import { NodeWatch } from './nodes.js'
import { History } from './delivery/history.js'
import { Erasure } from './erasure.js'
import { Revisions } from './revisions.js'
import { UserChannels } from './user-channels.js'
import { RoomRegistry } from './rooms.js'

export type * from './api.js'
export { storedToFrame } from './routing.js'

export function createHub(options: HubOptions = {}): Hub {
  return new HubImpl(options)
}



/** Frames a connection whose credentials expired may not send until it refreshes them. */
const STARTS_SOMETHING: ReadonlySet<string> = new Set(['subscribe', 'message', 'presence:update', 'presence:get', 'typing', 'read', 'history', 'edit', 'delete', 'search', 'channels'])

class HubImpl extends EventEmitter<HubEvents> implements Hub {
  readonly options: ResolvedHubOptions
  readonly nodeId: string
  readonly limits: Hub['limits']
  readonly leaveDelayMs: number
  readonly clock: Clock
  get authenticates(): boolean {
    return this.options.authenticate !== undefined
  }
  readonly codec: Codec
  readonly rooms: RoomRegistry
  readonly connections: Admission
  readonly channels: HubChannels
  readonly presence: PresenceService
  readonly notifications: NotificationService
  readonly preferences: Preferences
  private readonly patterns = new ChannelPatterns()
  private readonly live = new Map<string, Channel>()
  private readonly admission: Admission
  private readonly byId: ReadonlyMap<string, Connection>
  private readonly byUser: ReadonlyMap<string, ReadonlySet<Connection>>
  private readonly stats = new Metrics()
  private closing = false
  /** Until the node's start-up is done (its previous run's entries removed), connections wait. */
  private started: MaybePromise<void> = undefined
  private readonly receipts: Receipts
  private readonly acks: Acks
  private readonly recovery: Recovery
  private readonly fanout: FanOut
  private readonly cluster: Cluster
  private readonly publisher: Publisher
  private readonly inbound: Inbound
  private readonly nodes: NodeWatch
  private readonly history: History
  private readonly revisions: Revisions
  private readonly userChannels: UserChannels
  private readonly erasure: Erasure
  private readonly subscriptions: SubscriptionService
  private readonly credentials: CredentialWatch

  constructor(input: HubOptions) {
    super()
    this.options = resolveHubOptions(input)
    this.nodeId = this.options.nodeId
    const l = this.options.limits
    this.limits = Object.freeze({ maxMessageSize: l.maxMessageSize, messagesPerSecond: l.messagesPerSecond, presenceUpdatesPerSecond: l.presenceUpdatesPerSecond, highWaterMark: l.highWaterMark, maxQueuedBytes: l.maxQueuedBytes, maxDepth: l.maxDepth, maxReplyBytes: l.maxReplyBytes })
    this.leaveDelayMs = this.options.presence.leaveDelayMs
    this.clock = this.options.clock
    this.codec = this.options.codec
    this.channels = this.channelDirectory()
    for (const [pattern, opts] of Object.entries(input.channels ?? {})) this.patterns.register(pattern, opts)
    const hub = this
    /** How every concept tells the app: the hub's events and its error reporting. */
    const signals: Signals = {
      emit: (event, ...args) => this.emit(event, ...(args as unknown as EventEmitter.EventArgs<HubEvents, typeof event>)),
      listenerCount: (event) => this.listenerCount(event),
      report: (err, stage) => this.report(err, stage),
    }
    this.cluster = new Cluster({
      nodeId: this.nodeId,
      broker: this.options.broker,
      clock: this.clock,
      logger: this.options.logger,
      requestTimeoutMs: this.options.nodes.requestTimeoutMs,
      clustered: this.options.clustered,
      get closing() {
        return hub.closing
      },
      deliverLocal: (d, out, where, collect) => this.fanout.deliverLocal(d, out, where, collect),
      resumed: () => this.recovery.checkLive(this.live.values()),
      liveNodes: () => (this.options.nodes.heartbeatMs > 0 ? this.options.presenceStore.liveNodes(this.clock.now(), this.options.nodes.nodeTtlMs) : undefined),
      signals,
    })
    this.cluster.answerWith({ answer: (q) => this.answer(q) })
    this.admission = new Admission({
      nodeId: this.nodeId,
      clock: this.clock,
      codec: this.codec,
      options: this.options,
      stats: this.stats,
      get closing() {
        return hub.closing
      },
      connectionHost: this,
      get credentials() {
        return hub.credentials
      },
      get fanout() {
        return hub.fanout
      },
      cluster: this.cluster,
      started: () => this.started,
      preferences: { compiled: (userId) => this.preferences.compiled(userId) },
      removeSubscription: (sub, reason, notify) => this.subscriptions.removeSubscription(sub, reason, notify),
      signals,
    })
    this.connections = this.admission
    this.byId = this.admission.connections
    this.byUser = this.admission.byUser
    this.preferences = new Preferences(this.byUser)
    this.notifications = new NotificationService({
      options: this.options,
      publish: async (userId, event, data) => (await this.publish(`private:user-${userId}`, event, data)).offset,
      badge: (userId, count) =>
        this.cluster.deliver({ kind: 'direct', users: [userId], connections: [] }, { type: 'message', event: 'notifications:badge', data: { count }, id: this.cluster.messageId(), timestamp: isoTimestamp(this.clock.now()) }),
      signals,
    })
    this.receipts = new Receipts({
      options: this.options,
      clock: this.clock,
      cluster: this.cluster,
      notifications: this.notifications,
    })
    this.acks = new Acks({
      clock: this.clock,
      options: this.options,
      stats: this.stats,
      receipts: this.receipts,
      get closing() {
        return hub.closing
      },
      get fanout() {
        return hub.fanout
      },
      admission: this.admission,
      signals,
    })
    this.recovery = new Recovery({
      clock: this.clock,
      options: this.options,
      acks: this.acks,
      get fanout() {
        return hub.fanout
      },
      signals,
      stats: this.stats,
    })
    this.rooms = new RoomRegistry({
      now: () => this.clock.now(),
      defaultAccess: (channel) => (this.patterns.resolve(channel)?.options.room === 'required' ? 'members' : 'anyone'),
      created: (room) => this.emit('room:created', room.info()),
      deleted: (room) => this.subscriptions.roomDeleted(room),
      memberRemoved: (room, userId) => {
        this.subscriptions.forgetPublishDecisions(room.channel)
        if (room.permissions.subscribe !== 'anyone' || this.patterns.resolve(room.channel)?.options.room === 'required') {
          this.subscriptions.kickLocal(room.channel, userId, 'removed-from-room')
        }
      },
      changed: (room) => this.subscriptions.forgetPublishDecisions(room.channel),
    })
    const registries = { live: this.live, connections: this.byId, byUser: this.byUser }
    this.fanout = new FanOut({
      codec: this.codec,
      options: this.options,
      stats: this.stats,
      ...registries,
      acks: this.acks,
      recovery: this.recovery,
      admission: this.admission,
    })
    this.presence = new PresenceService({ options: this.options, live: this.live, patterns: this.patterns, cluster: this.cluster, fanout: this.fanout, signals })
    this.subscriptions = new SubscriptionService({
      clock: this.clock,
      options: this.options,
      live: this.live,
      patterns: this.patterns,
      byUser: this.byUser,
      rooms: this.rooms,
      presence: this.presence,
      recovery: this.recovery,
      acks: this.acks,
      fanout: this.fanout,
      cluster: this.cluster,
      signals,
    })
    this.credentials = new CredentialWatch({
      clock: this.clock,
      options: this.options,
      patterns: this.patterns,
      rooms: this.rooms,
      subscriptions: this.subscriptions,
      fanout: this.fanout,
      admission: this.admission,
      signals,
    })
    this.publisher = new Publisher({
      nodeId: this.nodeId,
      clock: this.clock,
      codec: this.codec,
      options: this.options,
      stats: this.stats,
      live: this.live,
      rooms: this.rooms,
      fanout: this.fanout,
      cluster: this.cluster,
      get closing() {
        return hub.closing
      },
      requestTimeoutMs: this.options.nodes.requestTimeoutMs,
      acks: this.acks,
      subscriptions: this.subscriptions,
      signals,
    })
    this.inbound = new Inbound({
      clock: this.clock,
      options: this.options,
      stats: this.stats,
      fanout: this.fanout,
      handle: (conn, frame, bytes) => this.handle(conn, frame, bytes),
      admission: this.admission,
      signals,
    })
    this.history = new History({ clock: this.clock, options: this.options, rooms: this.rooms, subscriptions: this.subscriptions, fanout: this.fanout })
    this.revisions = new Revisions({ clock: this.clock, options: this.options, rooms: this.rooms, subscriptions: this.subscriptions, publisher: this.publisher, fanout: this.fanout, signals })
    this.userChannels = new UserChannels({ options: this.options, rooms: this.rooms, subscriptions: this.subscriptions, fanout: this.fanout })
    this.erasure = new Erasure({ options: this.options, clock: this.clock, analytics: this.stats.analytics, cluster: this.cluster })
    this.nodes = new NodeWatch({
      nodeId: this.nodeId,
      clock: this.clock,
      presenceStore: this.options.presenceStore,
      heartbeatMs: this.options.nodes.heartbeatMs,
      nodeTtlMs: this.options.nodes.nodeTtlMs,
      nodeGone: (node, changes) => {
        this.options.logger.warn(node === this.nodeId ? 'this node restarted: what its previous run left in the presence store was removed' : 'node stopped heartbeating: its presence members were removed', { node, channels: changes.length })
        this.cluster.nodeGone(node)
        this.presence.nodeGone(changes)
      },
      beat: () => this.recovery.checkLive(this.live.values()),
      rejoin: () => {
        this.options.logger.warn('the presence store no longer knew this node: joining its entries again', { node: this.nodeId })
        this.presence.rejoin()
        this.admission.rejoin()
        this.subscriptions.rejoinSeats()
      },
      signals,
    })
    attachLogging(this, this.options.logger, this.clock)
    if (this.options.nodes.heartbeatMs > 0) {
      const started = this.nodes.start()
      // Once started, connections no longer wait (not even a microtask).
      if (isPromise(started)) this.started = started.then(() => (this.started = undefined))
    }
  }

  publish(channel: string, event: string, data?: unknown, options: PublishOptions = {}): Promise<PublishResult> {
    return this.publisher.publish(channel, event, data, options)
  }

  broadcast(o: BroadcastOptions): Promise<BroadcastResult> {
    return this.publisher.broadcast(o)
  }

  eraseUser(userId: string): Promise<UserErasure> {
    return this.erasure.eraseUser(userId)
  }

  // ------------------------------------------------------------------ events and errors

  override emit<K extends EventEmitter.EventNames<HubEvents>>(event: K, ...args: EventEmitter.EventArgs<HubEvents, K>): boolean {
    try {
      return super.emit(event, ...args)
    } catch (err) {
      if (event !== 'error') this.report(err, `listener:${String(event)}`)
      return true
    }
  }

  report(error: unknown, stage: string): void {
    try {
      this.options.onError?.(error, { stage })
    } catch {
      // an onError that throws must not break the hub either
    }
    this.options.logger.error(`${stage} failed`, { error: error instanceof Error ? error.message : String(error) })
    this.emit('error', error, { stage })
  }

  // ------------------------------------------------------------------ connections

  connect(session: Session, options?: ConnectOptions): Promise<ConnectionHandle> {
    return this.admission.connect(session, options)
  }

  /** @internal Called by a connection's handle. */
  handleReceive(conn: Connection, data: WireData): void {
    this.inbound.receive(conn, data)
  }

  /** @internal Called by a connection's handle. */
  handleDrained(conn: Connection): void {
    if (!conn.ended) this.fanout.drained(conn)
  }

  /** @internal Called by a connection's handle. */
  handleClosed(conn: Connection, code: number, reason: string): void {
    this.admission.dropConnection(conn, code, reason)
  }

  // ------------------------------------------------------------------ inbound frames

  private handle(conn: Connection, frame: ClientFrame, bytes: number): MaybePromise<void> {
    // Past its credentials' expiry a connection keeps what it has for the grace period, but may
    // start nothing new until an `auth` frame refreshes them.
    if (STARTS_SOMETHING.has(frame.type) && this.credentials.expired(conn)) {
      throw new RealtimeError('RT_002', 'credentials expired: send an auth frame with fresh ones')
    }
    switch (frame.type) {
      case 'subscribe':
        return this.subscriptions.onSubscribe(conn, frame)
      case 'unsubscribe': {
        const sub = conn.subscriptions.get(frame.channel)
        if (sub) this.subscriptions.removeSubscription(sub, 'unsubscribed', false)
        this.fanout.sendFrame(conn, { type: 'unsubscribed', id: frame.id, channel: frame.channel })
        return
      }
      case 'message':
        return this.publisher.onClientPublish(conn, frame, bytes)
      case 'presence:update':
        return this.presence.onUpdate(conn, frame)
      case 'presence:get':
        return this.presence.onGet(conn, frame)
      case 'typing':
        return this.presence.onTyping(conn, frame)
      case 'ack':
        return this.acks.onAck(conn, frame)
      case 'read':
        return this.receipts.onRead(conn, frame)
      case 'history':
        return this.history.onHistory(conn, frame)
      case 'edit':
      case 'delete':
        return this.revisions.onClientRevise(conn, frame, bytes)
      case 'search':
        return this.history.onSearch(conn, frame)
      case 'channels':
        return this.userChannels.onChannels(conn, frame)
      case 'ping':
        this.fanout.sendFrame(conn, { type: 'pong', id: frame.id })
        return
      case 'auth':
        return this.credentials.onAuth(conn, frame)
    }
  }

  // ------------------------------------------------------------------ subscribe

  // ------------------------------------------------------------------ at-least-once

  // ------------------------------------------------------------------ unsubscribe and clean-up

  // ------------------------------------------------------------------ publish

  // ------------------------------------------------------------------ delivery (the hot path)

  // ------------------------------------------------------------------ presence frames

  // ------------------------------------------------------------------ history and auth frames

  // ------------------------------------------------------------------ server API

  channel(name: string): ChannelHandle {
    return {
      name,
      publish: (event, data, o) => this.publish(name, event, data, o),
      broadcast: (event, data, o) => this.publish(name, event, data, o),
      getPresence: () => this.presence.get(name),
      kick: (userId, reason) => this.subscriptions.kick(name, userId, reason),
      history: async (o = {}) => this.history.read(name, this.subscriptions.resolve(name), o),
      deliveredTo: async (offset) => {
        const cursors = await this.options.store.cursors(name)
        return Object.entries(cursors)
          .filter(([, at]) => at >= offset)
          .map(([user]) => user)
      },
      edit: (offset, data, o) => this.revisions.revise(name, offset, { data }, o),
      delete: (offset, o) => this.revisions.revise(name, offset, { deleted: true }, o),
      search: async (query, o = {}) => this.history.search(name, this.subscriptions.resolve(name), query, o),
    }
  }

  private channelDirectory(): HubChannels {
    return {
      register: (pattern, options) => this.patterns.register(pattern, options),
      list: (): ChannelInfo[] =>
        [...this.live.values()].map((c) => ({ name: c.name, pattern: c.pattern, subscribers: c.subscribers.size, occupants: c.occupants, room: this.rooms.get(c.name) })),
      resolve: (name) => {
        const live = this.live.get(name)
        if (live !== undefined) return { pattern: live.pattern, params: live.params }
        const resolved = this.patterns.resolve(name)
        return resolved === undefined ? undefined : { pattern: resolved.pattern, params: resolved.params }
      },
      forUser: (userId, o) => this.userChannels.forUser(userId, o),
    }
  }

  /** This node's answer to another node's question. */
  private answer(q: ClusterQuery): MaybePromise<unknown> {
    switch (q.op) {
      case 'connections':
        return this.admission.local(q)
      case 'disconnect':
        return this.admission.disconnectLocal(q, q.reason)
      case 'kick':
        return this.subscriptions.kickLocal(q.channel, q.userId, q.reason)
      case 'deliver':
        return this.publisher.deliverAndWait(q.dispatch, q.waitMs)
      case 'forget':
        return this.stats.analytics.forget(q.userId)
    }
  }

  route(route: Route): () => void {
    const routes = this.publisher.routes
    routes.push(route)
    return () => {
      const i = routes.indexOf(route)
      if (i >= 0) routes.splice(i, 1)
    }
  }

  metrics(): MetricsSnapshot {
    return this.stats.snapshot({ nodeId: this.nodeId, connections: this.byId.size, channels: this.live.values(), acksPending: this.acks.pending() })
  }

  analytics(options?: AnalyticsOptions): HubAnalytics {
    const s = this.stats
    return s.analytics.report({ nodeId: this.nodeId, now: this.clock.now(), peak: s.peakConnections, peakAt: s.peakConnectionsAt, connections: this.byId.values(), connectionCount: this.byId.size, channels: this.live.values() }, options)
  }

  health(): HubHealth {
    let broker: HubHealth['broker'] = { state: 'unknown' }
    try {
      const h = this.options.broker.health?.()
      if (h) broker = h.state === 'down' ? { state: 'down', since: h.since, downForMs: Math.max(0, this.clock.now() - h.since) } : { state: 'up', since: h.since }
    } catch (err) {
      this.report(err, 'broker.health')
    }
    const brokerOk = broker.state !== 'down' || (broker.downForMs ?? 0) < this.options.nodes.unhealthyAfterMs
    return { ok: !this.closing && brokerOk, nodeId: this.nodeId, closing: this.closing, connections: this.byId.size, broker }
  }

  /** @internal Frames still being handled (connections whose in-order chain waits): the test kit's `settle()` waits for them. */
  [Symbol.for('tidings.pendingWork')](): number {
    let n = 0
    for (const c of this.byId.values()) if (c.tail !== null) n++
    return n
  }

  /** @internal State sizes, for leak tests. */
  debugSizes(): Record<string, number> {
    return {
      connections: this.byId.size,
      users: this.byUser.size,
      channels: this.live.size,
      rooms: this.rooms.rooms.size,
      pendingLeaves: this.presence.pendingLeaveCount,
    }
  }

  /** A port's answer, or undefined after `ms` (a store that does not answer must not hold up a shutdown). */
  private within<T>(ms: number, answer: MaybePromise<T>): Promise<T | undefined> {
    if (!isPromise(answer)) return Promise.resolve(answer)
    return new Promise<T | undefined>((resolve, reject) => {
      const timer = this.clock.setTimeout(() => resolve(undefined), ms)
      answer.then(
        (v) => {
          this.clock.clearTimeout(timer)
          resolve(v)
        },
        (err: unknown) => {
          this.clock.clearTimeout(timer)
          reject(err)
        },
      )
    })
  }

  async close(): Promise<void> {
    if (this.closing) return
    this.closing = true
    this.acks.stop()
    this.nodes.stop()
    this.cluster.stop()
    this.notifications.close()
    for (const conn of [...this.byId.values()]) this.admission.closeConnection(conn, CloseCode.GoingAway, 'server shutting down')
    this.presence.flushLeaves()
    if (this.options.nodes.heartbeatMs > 0) {
      // Leave the cluster: other nodes stop counting on this one (questions no longer wait for
      // it), and whatever of its presence is still stored goes now, each leave announced once.
      try {
        const changes = await this.within(this.options.nodes.requestTimeoutMs, this.options.presenceStore.removeNode(this.nodeId, this.clock.now()))
        if (changes && changes.length > 0) this.presence.nodeGone(changes)
      } catch (err) {
        this.report(err, 'nodes.leave')
      }
    }
    try {
      await this.options.broker.close()
    } catch (err) {
      this.report(err, 'broker.close')
    }
    try {
      await this.options.store.close?.()
      await this.options.limitStore.close?.()
    } catch (err) {
      this.report(err, 'store.close')
    }
  }
}

