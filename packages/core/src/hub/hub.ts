import { decodeWithin, peekRequestId, type Codec, type WireData, jsonCodec, jsonWithNumber, utf8Length, wireLength, CloseCode, type ErrorCode, RealtimeError, clampCloseReason, type FilterNode, type FilterPredicate, RECIPIENT_FILTER_ROOTS, compileFilter, type ClientFrame, type ClientFrameOf, type MessageFrame, type PresenceSnapshot, type Priority, type RequestId, type ServerFrame, type StreamPosition, channelNameSchema, parseClientFrame, PROTOCOL_VERSION } from '@tidings/protocol'
import { EventEmitter } from 'eventemitter3'
import type { Identity } from '../ports/auth.js'
import type { ClusterMessage, Command, Dispatch } from '../ports/broker.js'
import type { Clock } from '../ports/clock.js'
import { type ConnectionHandle, Outbound, type Session } from '../ports/session.js'
import type { Retention, StoredMessage } from '../ports/store.js'
import type { LRUCache } from 'lru-cache'
import { type MaybePromise, isPromise, andThen, boundedMap, isoTimestamp } from '../util.js'
import { Channel } from './channel.js'
import { type ChannelOptions, ChannelPatterns, type ResolvedChannel } from './channels.js'
import type { Bucket } from './rate-limit.js'
import { type CompiledPreferences, Connection, type ConnectionInfo, Delivery, PRIORITY, type PriorityClass, type QueueLimits, type Subscription } from './connection.js'
import type { HubEvents } from './events.js'
import { Metrics, type MetricsSnapshot } from './metrics.js'
import { type HubOptions, type ResolvedHubOptions, resolveHubOptions } from './options.js'
import { NotificationService } from './notifications.js'
import { PresenceService } from './presence.js'
import { CredentialWatch } from './credentials.js'
import { type AckRecipient, Acks } from './delivery/acks.js'
import { Receipts } from './delivery/receipts.js'
import { Recovery } from './delivery/recovery.js'
import { FanOut } from './fanout.js'
import { Cluster } from './cluster.js'
import { Publisher, retentionOf } from './publish.js'
import { Inbound } from './inbound.js'
import { Admission } from './admission.js'
import { admits, frameFor, type LocalDispatch, NO_EXCLUSIONS, REPLAY_PAGE, storedToFrame } from './routing.js'

export { storedToFrame } from './routing.js'
import { type Room, type RoomInfo, RoomRegistry, type Rooms } from './rooms.js'

export interface ConnectOptions {
  readonly token?: string | undefined
  readonly apiKey?: string | undefined
  /** An identity the host app already established (its own session, cookie, …): skips the authenticator. */
  readonly identity?: Identity | undefined
}

export interface PublishOptions {
  /** Shown to recipients as `sender`. */
  readonly sender?: string | undefined
  readonly exclude?: { readonly connections?: readonly string[]; readonly users?: readonly string[] } | undefined
  readonly priority?: Priority | undefined
  /** May be dropped under backpressure (typing, cursors). */
  readonly volatile?: boolean | undefined
  /** A repeat within the dedup window returns the first result and delivers nothing. */
  readonly idempotencyKey?: string | undefined
  /**
   * Ask every recipient on this node to acknowledge the message, and resolve once all have or
   * after this many ms, with who did and who did not. Needs a channel that keeps history.
   */
  readonly awaitAcks?: number | undefined
}

export type { AckRecipient } from './delivery/acks.js'

export interface PublishResult {
  readonly messageId: string
  /** The message's offset in the channel stream (absent when the channel keeps no history). */
  readonly offset: number | undefined
  readonly duplicate: boolean
  /** Connections on this node that it was written or queued to. */
  readonly recipients: number
  /** With `awaitAcks`: the recipients that acknowledged in time. */
  readonly acknowledged?: AckRecipient[]
  /** With `awaitAcks`: the recipients that did not. */
  readonly unacknowledged?: AckRecipient[]
}

export interface BroadcastOptions extends Omit<PublishOptions, 'idempotencyKey' | 'awaitAcks'> {
  readonly event: string
  readonly data?: unknown
  /** `'all'` connections, or any mix of channels, users and connection ids. */
  readonly to: 'all' | { readonly channels?: readonly string[]; readonly users?: readonly string[]; readonly connections?: readonly string[] }
  /** Only recipients passing this filter (fields `user.id`, `user.roles`, `user.claims.<path>`, `transport`). */
  readonly where?: FilterNode | undefined
}

export interface BroadcastResult {
  readonly messageIds: string[]
  readonly recipients: number
}

export interface UserPreferences {
  /** Channels whose messages this user does not want delivered. */
  readonly mutedChannels?: readonly string[]
  /** Events this user does not want delivered, on any channel. */
  readonly mutedEvents?: readonly string[]
  /** Send this user's typing indicators to others. Default true. */
  readonly typingIndicators?: boolean
  /** Send read receipts for this user's reads. Default true. */
  readonly readReceipts?: boolean
}

export interface ChannelInfo {
  readonly name: string
  readonly pattern: string
  readonly subscribers: number
  readonly occupants: number
  readonly room: RoomInfo | undefined
}

/** Content-based routing: extra channels a published message should also go to. */
export type Route = (message: { channel: string; event: string; data: unknown; sender: string | undefined }) => string | readonly string[] | undefined | void

/** A server-side handle on one channel. */
export interface ChannelHandle {
  readonly name: string
  publish(event: string, data?: unknown, options?: PublishOptions): Promise<PublishResult>
  /** The seeds' name for publish. */
  broadcast(event: string, data?: unknown, options?: PublishOptions): Promise<PublishResult>
  getPresence(): Promise<PresenceSnapshot>
  kick(userId: string, reason?: string): Promise<number>
  history(options?: { after?: number; limit?: number }): Promise<{ epoch: string; messages: StoredMessage[]; top: number; complete: boolean }>
}

export interface Hub extends EventEmitter<HubEvents> {
  readonly nodeId: string
  /** The limits in force (transports size their buffers and bodies from them). */
  readonly limits: Readonly<{ maxMessageSize: number; messagesPerSecond: number; presenceUpdatesPerSecond: number; highWaterMark: number; maxQueuedBytes: number; maxDepth: number; maxReplyBytes: number }>
  /** How long a presence member lingers after its last connection left (`presence.leaveDelayMs`). */
  readonly leaveDelayMs: number
  /**
   * The hub has an authenticator, which also sees the handshake headers when a connection
   * re-authenticates (an `auth` frame). Without one, transports may let go of a session's headers
   * once the hub accepted it (a few hundred bytes per connection).
   */
  readonly authenticates: boolean
  readonly clock: Clock
  readonly codec: Codec
  readonly rooms: Rooms
  /** Accept a transport session: authenticate, register, send `connected`. Rejects with `RT_002` / `RT_001` (and closes the session). */
  connect(session: Session, options?: ConnectOptions): Promise<ConnectionHandle>
  publish(channel: string, event: string, data?: unknown, options?: PublishOptions): Promise<PublishResult>
  broadcast(options: BroadcastOptions): Promise<BroadcastResult>
  channel(name: string): ChannelHandle
  getPresence(channel: string): Promise<PresenceSnapshot>
  /**
   * Send a notification to a user's personal channel (`private:user-<id>`: acknowledged, kept
   * while the user is offline). Keeps the user's unread badge count; batches bursts.
   */
  notify(userId: string, notification: unknown): Promise<{ batched: boolean; offset: number | undefined; badge: number }>
  unreadNotifications(userId: string): number
  /** Mark notifications read (by the offsets of their messages, or all); the user's connections get the new badge count. */
  markNotificationsRead(userId: string, offsets?: readonly number[]): void
  /** Users whose cursor on a channel (kept for offline channels) has passed an offset. */
  deliveredTo(channel: string, offset: number): Promise<string[]>
  /** Unsubscribe a user from a channel on every node; returns the connections on this node it removed. */
  kick(channel: string, userId: string, reason?: string): Promise<number>
  getConnections(filter?: { userId?: string; channel?: string }): ConnectionInfo[]
  getConnection(connectionId: string): ConnectionInfo | undefined
  disconnect(connectionId: string, reason?: string): boolean
  /** Close every connection of a user on every node; returns how many were on this node. */
  disconnectUser(userId: string, reason?: string): number
  setPreferences(userId: string, preferences: UserPreferences): void
  getPreferences(userId: string): UserPreferences | undefined
  /**
   * Add a channel pattern (or change the options of an existing one). Channels already live on
   * this node keep the options they were opened with until their last subscriber leaves.
   */
  registerChannel(pattern: string, options: ChannelOptions): void
  /** Live channels on this node. */
  channels(): ChannelInfo[]
  /**
   * The pattern a channel name resolves to (app patterns first, then the built-in ones) and its
   * named parts, or undefined when no pattern matches (clients get `RT_004` for such names).
   */
  resolveChannel(name: string): { readonly pattern: string; readonly params: Readonly<Record<string, string>> } | undefined
  /** Add a content-based route; returns a function that removes it. */
  route(route: Route): () => void
  metrics(): MetricsSnapshot
  /** Close every connection (1001, reconnect elsewhere), stop the broker. */
  close(): Promise<void>
}

export function createHub(options: HubOptions = {}): Hub {
  return new HubImpl(options)
}



/** Frames a connection whose credentials expired may not send until it refreshes them. */
const STARTS_SOMETHING: ReadonlySet<string> = new Set(['subscribe', 'message', 'presence:update', 'presence:get', 'typing', 'read', 'history'])

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
  private readonly patterns = new ChannelPatterns()
  private readonly live = new Map<string, Channel>()
  private readonly admission: Admission
  private readonly connections: ReadonlyMap<string, Connection>
  private readonly byUser: ReadonlyMap<string, ReadonlySet<Connection>>
  private readonly preferences: LRUCache<string, { raw: UserPreferences; compiled: CompiledPreferences }>
  private readonly stats = new Metrics()
  private readonly presence: PresenceService
  private seq = 0
  private closing = false
  private readonly receipts: Receipts
  private readonly acks: Acks
  private readonly recovery: Recovery
  private readonly notifications: NotificationService
  private readonly fanout: FanOut
  private readonly cluster: Cluster
  private readonly publisher: Publisher
  private readonly inbound: Inbound
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
    this.preferences = boundedMap(100_000)
    for (const [pattern, opts] of Object.entries(input.channels ?? {})) this.patterns.register(pattern, opts)
    const hub = this
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
      get cluster() {
        return hub.cluster
      },
      preferences: this.preferences,
      removeSubscription: (sub, reason, notify) => this.removeSubscription(sub, reason, notify),
      emit: (event, ...args) => this.emit(event, ...(args as unknown as EventEmitter.EventArgs<HubEvents, typeof event>)),
      listenerCount: (event) => this.listenerCount(event),
      report: (err, stage) => this.report(err, stage),
    })
    this.connections = this.admission.connections
    this.byUser = this.admission.byUser
    this.presence = new PresenceService({
      options: this.options,
      toChannel: (channel, frame, exclude, volatile) =>
        this.cluster.dispatch({
          kind: 'dispatch',
          origin: this.nodeId,
          target: { kind: 'channel', channel },
          frame,
          exclude: { connections: exclude.connection ? [exclude.connection] : undefined, users: exclude.user ? [exclude.user] : undefined },
          volatile,
        }),
      emit: (event, ...args) => this.emit(event, ...(args as unknown as EventEmitter.EventArgs<HubEvents, typeof event>)),
      report: (err, stage) => this.report(err, stage),
    })
    this.notifications = new NotificationService({
      options: this.options,
      publish: async (userId, event, data) => (await this.publish(`private:user-${userId}`, event, data)).offset,
      badge: (userId, count) =>
        this.cluster.dispatch({
          kind: 'dispatch',
          origin: this.nodeId,
          target: { kind: 'direct', users: [userId], connections: [] },
          frame: { type: 'message', event: 'notifications:badge', data: { count }, id: this.nextMessageId(), timestamp: isoTimestamp(this.clock.now()) },
        }),
      report: (err, stage) => this.report(err, stage),
    })
    this.receipts = new Receipts({
      nodeId: this.nodeId,
      options: this.options,
      clock: this.clock,
      dispatch: (d) => this.cluster.dispatch(d),
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
      encode: (codec, frame) => this.fanout.encode(codec, frame),
      write: (conn, out, priority, volatile) => this.fanout.write(conn, out, priority, volatile),
      sendFrame: (conn, frame) => this.fanout.sendFrame(conn, frame),
      closeConnection: (conn, code, reason) => this.admission.closeConnection(conn, code, reason),
      emit: (event, ...args) => this.emit(event, ...(args as unknown as EventEmitter.EventArgs<HubEvents, typeof event>)),
      report: (err, stage) => this.report(err, stage),
    })
    this.recovery = new Recovery({
      clock: this.clock,
      options: this.options,
      acks: this.acks,
      encode: (codec, frame) => this.fanout.encode(codec, frame),
      write: (conn, out, priority, volatile) => this.fanout.write(conn, out, priority, volatile),
      sendFrame: (conn, frame) => this.fanout.sendFrame(conn, frame),
    })
    this.rooms = new RoomRegistry({
      now: () => this.clock.now(),
      defaultAccess: (channel) => (this.patterns.resolve(channel)?.options.room === 'required' ? 'members' : 'anyone'),
      created: (room) => this.emit('room:created', room.info()),
      deleted: (room) => this.roomDeleted(room),
      memberRemoved: (room, userId) => {
        this.forgetPublishDecisions(room.channel)
        if (room.permissions.subscribe !== 'anyone' || this.patterns.resolve(room.channel)?.options.room === 'required') {
          this.kickLocal(room.channel, userId, 'removed-from-room')
        }
      },
      changed: (room) => this.forgetPublishDecisions(room.channel),
    })
    this.credentials = new CredentialWatch({
      clock: this.clock,
      refreshBeforeMs: this.options.credentials.refreshBeforeMs,
      graceMs: this.options.credentials.graceMs,
      warn: (conn, expiresAt, closesAt) => this.fanout.sendFrame(conn, { type: 'auth:expiring', expiresAt, closesAt }),
      expire: (conn) => {
        if (conn.ended) return
        for (const sub of [...conn.subscriptions.values()]) this.removeSubscription(sub, 'credentials expired', true)
        this.admission.closeConnection(conn, CloseCode.AuthenticationFailed, 'credentials expired')
      },
    })
    const registries = { live: this.live, connections: this.connections, byUser: this.byUser }
    this.fanout = new FanOut({
      codec: this.codec,
      options: this.options,
      stats: this.stats,
      ...registries,
      acks: this.acks,
      recovery: this.recovery,
      closeConnection: (conn, code, reason) => this.admission.closeConnection(conn, code, reason),
    })
    this.cluster = new Cluster({
      nodeId: this.nodeId,
      options: this.options,
      get closing() {
        return hub.closing
      },
      fanout: this.fanout,
      connections: this.connections,
      kickLocal: (channel, userId, reason) => this.kickLocal(channel, userId, reason),
      disconnectUserLocal: (userId, reason) => this.admission.disconnectUserLocal(userId, reason),
      closeConnection: (conn, code, reason) => this.admission.closeConnection(conn, code, reason),
      report: (err, stage) => this.report(err, stage),
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
      acks: this.acks,
      resolve: (name) => this.resolve(name),
      authorize: (conn, action, channel, resolved, room, auth) => this.authorize(conn, action, channel, resolved, room, auth),
      retention: (options) => retentionOf(options, this.options.history),
      nextMessageId: () => this.nextMessageId(),
      emit: (event, ...args) => this.emit(event, ...(args as unknown as EventEmitter.EventArgs<HubEvents, typeof event>)),
      listenerCount: (event) => this.listenerCount(event),
      report: (err, stage) => this.report(err, stage),
    })
    this.inbound = new Inbound({
      clock: this.clock,
      options: this.options,
      stats: this.stats,
      fanout: this.fanout,
      handle: (conn, frame, bytes) => this.handle(conn, frame, bytes),
      closeConnection: (conn, code, reason) => this.admission.closeConnection(conn, code, reason),
      emit: (event, ...args) => this.emit(event, ...(args as unknown as EventEmitter.EventArgs<HubEvents, typeof event>)),
      report: (err, stage) => this.report(err, stage),
    })
  }

  private nextMessageId(): string {
    return `${this.nodeId}-${(++this.seq).toString(36)}`
  }

  publish(channel: string, event: string, data?: unknown, options: PublishOptions = {}): Promise<PublishResult> {
    return this.publisher.publish(channel, event, data, options)
  }

  broadcast(o: BroadcastOptions): Promise<BroadcastResult> {
    return this.publisher.broadcast(o)
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

  getConnections(filter?: { userId?: string; channel?: string }): ConnectionInfo[] {
    return this.admission.getConnections(filter)
  }

  getConnection(connectionId: string): ConnectionInfo | undefined {
    return this.admission.getConnection(connectionId)
  }

  disconnect(connectionId: string, reason?: string): boolean {
    return this.admission.disconnect(connectionId, reason)
  }

  disconnectUser(userId: string, reason?: string): number {
    return this.admission.disconnectUser(userId, reason)
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
        return this.onSubscribe(conn, frame)
      case 'unsubscribe': {
        const sub = conn.subscriptions.get(frame.channel)
        if (sub) this.removeSubscription(sub, 'unsubscribed', false)
        this.fanout.sendFrame(conn, { type: 'unsubscribed', id: frame.id, channel: frame.channel })
        return
      }
      case 'message':
        return this.publisher.onClientPublish(conn, frame, bytes)
      case 'presence:update':
        return this.onPresenceUpdate(conn, frame)
      case 'presence:get': {
        this.presenceChannel(conn, frame.channel)
        return andThen(this.presence.snapshot(frame.channel), (snap) => {
          this.fanout.sendFrame(conn, { type: 'presence', id: frame.id, channel: frame.channel, ...this.capSnapshot(snap) })
        })
      }
      case 'typing': {
        const channel = this.presenceChannel(conn, frame.channel)
        if (!conn.takePresenceToken(this.clock.now())) throw new RealtimeError('RT_006', 'too many presence updates per second')
        // A user who turned typing indicators off sends none; a stop still clears one already shown.
        if (conn.preferences?.typing === false && frame.active) return
        this.presence.typing(conn, channel, frame.active)
        return
      }
      case 'ack':
        return this.acks.onAck(conn, frame)
      case 'read':
        return this.receipts.onRead(conn, frame)
      case 'history':
        return this.onHistory(conn, frame)
      case 'ping':
        this.fanout.sendFrame(conn, { type: 'pong', id: frame.id })
        return
      case 'auth':
        return this.onAuth(conn, frame)
    }
  }

  // ------------------------------------------------------------------ subscribe

  /**
   * A channel's pattern and options: those it was opened with while it is live on this node
   * (whatever was registered since), else what its pattern gives now. The name must be valid.
   */
  private resolve(name: string): ResolvedChannel {
    const live = this.live.get(name)
    if (live !== undefined) return live
    const resolved = this.patterns.resolve(name)
    if (!resolved) throw new RealtimeError('RT_004', `no channel pattern matches '${name}'`)
    if (resolved.options.liveQuery) throw new RealtimeError('RT_004', `'${name}' is a live query channel and no live query provider is installed`)
    return resolved
  }

  private async onSubscribe(conn: Connection, frame: ClientFrameOf<'subscribe'>): Promise<void> {
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
      this.fanout.sendFrame(conn, {
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
    if (options.presence && frame.state !== undefined && !this.presence.validState(frame.state)) {
      throw new RealtimeError('RT_009', `unknown presence state '${frame.state}'`)
    }
    let room = this.rooms.rooms.get(name)
    if (!room && options.room === 'required') throw new RealtimeError('RT_004', `room '${name}' does not exist`)
    const denied = await this.authorize(conn, 'subscribe', name, resolved, room, frame.auth)
    if (denied) throw new RealtimeError('RT_003', denied)
    if (conn.ended) return
    this.checkSubscriptionLimits(conn, name)
    // The room may have been created or deleted while the rule was deciding.
    const current = this.rooms.rooms.get(name)
    if (room && current !== room) throw new RealtimeError('RT_004', `room '${name}' was deleted`)
    room = current
    if (!room && options.room === 'required') throw new RealtimeError('RT_004', `room '${name}' does not exist`)
    if (!room && options.room === 'auto') room = this.rooms.open(name, {}, true)
    let channel = this.live.get(name)
    const capacity = room?.capacity ?? options.capacity
    if (capacity !== undefined && !channel?.occupiedBy(conn.userId, conn.id) && (channel?.occupants ?? 0) >= capacity) {
      throw new RealtimeError('RT_008', `'${name}' is full (${capacity})`, { capacity })
    }
    if (!channel) this.live.set(name, (channel = new Channel(name, resolved.pattern, options, resolved.params)))
    const history = retentionOf(options, this.options.history)
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
    }
    const entered = channel.add(sub)
    conn.subscriptions.add(sub)
    conn.refreshFastPath()
    if (entered && room) this.emit('room:member-joined', { room: room.info(), userId: conn.userId, connectionId: conn.id })
    try {
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
    const perUser = this.options.limits.maxSubscriptionsPerUser
    if (perUser === undefined || conn.userId === undefined) return
    let limit: number
    try {
      limit = typeof perUser === 'function' ? perUser(conn.identity) : perUser
    } catch (err) {
      this.report(err, 'limits.maxSubscriptionsPerUser')
      throw new RealtimeError('RT_006', 'subscription limit could not be decided')
    }
    if (!Number.isFinite(limit)) {
      this.report(new TypeError(`limits.maxSubscriptionsPerUser gave ${String(limit)}`), 'limits.maxSubscriptionsPerUser')
      throw new RealtimeError('RT_006', 'subscription limit could not be decided')
    }
    // Distinct channels: the same room open in two tabs is one subscription of the user's.
    const channels = new Set<string>()
    for (const c of this.byUser.get(conn.userId) ?? []) for (const sub of c.subscriptions.values()) channels.add(sub.channel.name)
    if (!channels.has(channel) && channels.size >= limit) throw new RealtimeError('RT_006', `subscription limit of ${limit} channels per user reached`, { limit, scope: 'user' })
  }

  /** Presence, position, offline queue or recovery, then the reply and live delivery. */
  private async startSubscription(conn: Connection, sub: Subscription, frame: ClientFrameOf<'subscribe'>): Promise<void> {
    const name = frame.channel
    const channel = sub.channel
    const options = channel.options
    const history = retentionOf(options, this.options.history)
    if (options.presence && conn.userId !== undefined) await this.presence.join(conn, channel, frame.state, frame.presence)
    if (conn.ended || conn.subscriptions.get(name) !== sub) return
    const extras = await this.subscribedExtras(channel)
    if (conn.ended || conn.subscriptions.get(name) !== sub) return
    if (extras.position) this.recovery.learnEpoch(channel, extras.position.epoch, extras.position.offset, sub)
    const delivery = history ? (sub.tracked ? 'at-least-once' : 'at-most-once') : undefined
    let since = frame.since
    let offline = false
    let lost: string | undefined
    if (!since && history && options.offline && conn.userId !== undefined && extras.position) {
      // The user's offline queue: what was published since it last acknowledged (or all that is kept).
      const cursor = await this.options.store.cursor(name, conn.userId)
      if (conn.ended || conn.subscriptions.get(name) !== sub) return
      since = { epoch: extras.position.epoch, offset: cursor && cursor.epoch === extras.position.epoch ? cursor.offset : 0 }
      offline = true
      if (cursor && cursor.epoch !== extras.position.epoch) {
        // The cursor points into history that is gone: the queue up to the loss is lost. Say so
        // (`recovered: false`), deliver what the channel has kept since, and move the cursor into
        // the current epoch so the loss is reported once.
        lost = 'epoch changed: the offline queue was lost with the channel history; what the channel kept since is replayed'
        const r = this.options.store.commit(name, conn.userId, 0)
        if (isPromise(r)) r.catch((err) => this.report(err, 'store.commit'))
      }
    }
    if (since && !history) {
      this.fanout.sendFrame(conn, { type: 'subscribed', id: frame.id, channel: name, ...extras, recovered: false, reason: 'channel keeps no history' })
    } else if (since) {
      await this.recovery.recover(conn, sub, since, frame.id, { ...extras, delivery }, offline, lost)
    } else {
      const start = extras.position?.offset ?? 0
      sub.lastSent = sub.acked = start
      this.fanout.sendFrame(conn, { type: 'subscribed', id: frame.id, channel: name, ...extras, delivery })
      this.recovery.goLive(sub, start)
    }
    if (conn.subscriptions.get(name) === sub) this.emit('subscribe', { connectionId: conn.id, userId: conn.userId, channel: name })
  }

  private async subscribedExtras(channel: Channel): Promise<{ presence?: PresenceSnapshot; position?: StreamPosition }> {
    const out: { presence?: PresenceSnapshot; position?: StreamPosition } = {}
    if (channel.options.presence) out.presence = this.capSnapshot(await this.presence.snapshot(channel.name))
    if (retentionOf(channel.options, this.options.history)) out.position = await this.options.store.position(channel.name)
    return out
  }

  // ------------------------------------------------------------------ at-least-once

  private compileMessageFilter(filter: unknown): FilterPredicate {
    try {
      return compileFilter(filter)
    } catch (err) {
      throw new RealtimeError('RT_007', err instanceof Error ? err.message : 'invalid filter')
    }
  }

  /** Returns why the action is denied, or undefined when it is allowed. */
  private async authorize(conn: Connection, action: 'subscribe' | 'publish', channel: string, resolved: ResolvedChannel, room: Room | undefined, auth: string | undefined): Promise<string | undefined> {
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
    } else {
      try {
        allowed = (await this.decideInTime(rule(ctx))) === true
      } catch (err) {
        this.options.logger.debug('channel rule threw', { channel, error: String(err) })
        allowed = false
      }
    }
    if (allowed && room && !room.allows(action, identity.userId)) allowed = false
    if (allowed && this.options.authorize) {
      try {
        allowed = (await this.decideInTime(this.options.authorize(ctx))) === true
      } catch {
        allowed = false
      }
    }
    if (allowed) return undefined
    return anonymous && rule !== false ? `authentication required to ${action} on '${channel}'` : `not allowed to ${action} on '${channel}'`
  }

  /** A rule's answer, or `false` when it takes longer than `limits.ruleTimeoutMs` (a hung rule denies). */
  private decideInTime(answer: MaybePromise<boolean>): MaybePromise<boolean> {
    if (!isPromise(answer)) return answer
    const ms = this.options.limits.ruleTimeoutMs
    return new Promise<boolean>((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.options.logger.warn('channel rule timed out', { ms })
        resolve(false)
      }, ms)
      answer.then(
        (v) => {
          this.clock.clearTimeout(timer)
          resolve(v)
        },
        (err) => {
          this.clock.clearTimeout(timer)
          reject(err)
        },
      )
    })
  }

  // ------------------------------------------------------------------ unsubscribe and clean-up

  private removeSubscription(sub: Subscription, reason: string, notify: boolean): void {
    const conn = sub.connection
    const channel = sub.channel
    if (conn.subscriptions.get(channel.name) !== sub) return
    conn.subscriptions.delete(channel.name)
    const left = channel.remove(sub)
    this.acks.untrack(sub)
    this.acks.gone(sub)
    const written = sub.replay === null ? Math.max(sub.lastSent, channel.lastOffset) : sub.lastSent
    // The port calls below may throw (a custom store or presence store): each is reported on its
    // own, and the channel is still let go of below.
    if (channel.options.offline && !sub.tracked && conn.userId !== undefined && written > 0) {
      // At-most-once offline channels count what was written as delivered.
      try {
        const r = this.options.store.commit(channel.name, conn.userId, written)
        if (isPromise(r)) r.catch((err) => this.report(err, 'store.commit'))
      } catch (err) {
        this.report(err, 'store.commit')
      }
    }
    const room = this.rooms.rooms.get(channel.name)
    if (channel.options.presence && conn.userId !== undefined) {
      try {
        this.presence.leave(conn, channel, left)
      } catch (err) {
        this.report(err, 'presence.leave')
      }
    }
    if (left && room) this.emit('room:member-left', { room: room.info(), userId: conn.userId, connectionId: conn.id })
    if (notify && !conn.ended) this.fanout.sendFrame(conn, { type: 'unsubscribed', channel: channel.name, reason })
    this.emit('unsubscribe', { connectionId: conn.id, userId: conn.userId, channel: channel.name, reason })
    if (channel.subscribers.size === 0) {
      this.live.delete(channel.name)
      if (room) {
        this.emit('room:emptied', room.info())
        if (room.deleteWhenEmpty && this.rooms.rooms.get(room.channel) === room) this.rooms.delete(room.channel)
      }
    }
  }

  /** Room membership or permissions changed: publish rights are decided again on the next publish. */
  private forgetPublishDecisions(channelName: string): void {
    const channel = this.live.get(channelName)
    if (channel) for (const sub of channel.subscribers.values()) sub.canPublish = undefined
  }

  private roomDeleted(room: Room): void {
    const channel = this.live.get(room.channel)
    if (channel) for (const sub of [...channel.subscribers.values()]) this.removeSubscription(sub, 'room-deleted', true)
    this.emit('room:deleted', room.info())
  }

  private kickLocal(channelName: string, userId: string, reason: string): number {
    let n = 0
    for (const conn of [...(this.byUser.get(userId) ?? [])]) {
      const sub = conn.subscriptions.get(channelName)
      if (sub) {
        this.removeSubscription(sub, reason, true)
        n++
      }
    }
    return n
  }

  // ------------------------------------------------------------------ publish

  // ------------------------------------------------------------------ delivery (the hot path)

  // ------------------------------------------------------------------ presence frames

  /** The subscribed presence channel a frame refers to, or RT_009. */
  private presenceChannel(conn: Connection, name: string): Channel {
    const sub = conn.subscriptions.get(name)
    if (!sub) {
      const resolved = this.patterns.resolve(name)
      if (resolved && !resolved.options.presence) throw new RealtimeError('RT_009', `'${name}' is not a presence channel`)
      throw new RealtimeError('RT_009', `subscribe to '${name}' before using its presence`)
    }
    if (!sub.channel.options.presence) throw new RealtimeError('RT_009', `'${name}' is not a presence channel`)
    if (conn.userId === undefined) throw new RealtimeError('RT_009', 'presence needs an authenticated user')
    return sub.channel
  }

  private onPresenceUpdate(conn: Connection, frame: ClientFrameOf<'presence:update'>): MaybePromise<void> {
    const channel = this.presenceChannel(conn, frame.channel)
    if (!conn.takePresenceToken(this.clock.now())) throw new RealtimeError('RT_006', 'too many presence updates per second', { limit: this.options.limits.presenceUpdatesPerSecond })
    if (frame.state === undefined && frame.data === undefined) throw new RealtimeError('RT_009', 'presence update needs state or data')
    if (!this.presence.validState(frame.state)) throw new RealtimeError('RT_009', `unknown presence state '${frame.state}'`)
    return andThen(this.presence.update(conn, channel, frame.state, frame.data), (member) => {
      this.fanout.sendFrame(conn, { type: 'presence:update', id: frame.id, channel: frame.channel, user: member })
    })
  }

  /**
   * A presence snapshot within the reply budget: as many members as fit (in the store's order);
   * `count` stays the total, so `count > users.length` tells the client the list is partial.
   */
  private capSnapshot(snap: PresenceSnapshot): PresenceSnapshot {
    const budget = this.options.limits.maxReplyBytes - 1024
    let bytes = 0
    for (let i = 0; i < snap.users.length; i++) {
      bytes += utf8Length(JSON.stringify(snap.users[i])) + 1
      if (bytes > budget) return { users: snap.users.slice(0, i), count: snap.count }
    }
    return snap
  }

  // ------------------------------------------------------------------ history and auth frames

  private async onHistory(conn: Connection, frame: ClientFrameOf<'history'>): Promise<void> {
    const resolved = this.resolve(frame.channel)
    if (!conn.subscriptions.has(frame.channel)) {
      const denied = await this.authorize(conn, 'subscribe', frame.channel, resolved, this.rooms.rooms.get(frame.channel), undefined)
      if (denied) throw new RealtimeError('RT_003', denied)
    }
    const result = await this.readHistory(frame.channel, resolved, { after: frame.since?.offset, limit: frame.limit })
    if (frame.since && result.epoch !== frame.since.epoch) {
      throw new RealtimeError('RT_004', 'epoch changed: the channel history was reset; read again without since', { epoch: result.epoch })
    }
    // A reply has a byte budget like any frame: a page that would pass it ends early, with
    // `complete: false` and the position to page on from.
    const budget = this.options.limits.maxReplyBytes - 512
    const messages: MessageFrame[] = []
    let bytes = 0
    let cut = false
    for (const m of result.messages) {
      const f = storedToFrame(m)
      const size = wireLength(conn.codec.encode(f)) + 1
      if (messages.length > 0 && bytes + size > budget) {
        cut = true
        break
      }
      messages.push(f)
      bytes += size
    }
    this.fanout.sendFrame(conn, {
      type: 'history',
      id: frame.id,
      channel: frame.channel,
      messages,
      position: { epoch: result.epoch, offset: messages.at(-1)?.offset ?? frame.since?.offset ?? result.top },
      top: result.top,
      complete: result.complete && !cut,
    })
  }

  private async readHistory(channel: string, resolved: ResolvedChannel, o: { after?: number | undefined; limit?: number | undefined }) {
    if (!retentionOf(resolved.options, this.options.history)) throw new RealtimeError('RT_004', `'${channel}' keeps no history`)
    const limit = Math.min(o.limit ?? 100, 1000)
    const store = this.options.store
    const now = this.clock.now()
    let after = o.after
    if (after === undefined) after = Math.max(0, (await store.position(channel)).offset - limit)
    const r = await store.read(channel, { after, limit, now })
    return { epoch: r.epoch, messages: [...r.messages], top: r.top, complete: r.complete || o.after === undefined }
  }

  private async onAuth(conn: Connection, frame: ClientFrameOf<'auth'>): Promise<void> {
    const authenticate = this.options.authenticate
    let identity: Identity | null | undefined = null
    if (authenticate) {
      try {
        identity = await authenticate({ token: frame.token, headers: conn.session.headers, remoteAddress: conn.session.remoteAddress, transport: conn.session.transport })
      } catch {
        identity = null
      }
    }
    if (!identity) throw new RealtimeError('RT_002', 'invalid or expired credentials')
    if (identity.userId !== conn.userId) throw new RealtimeError('RT_002', 'a refreshed token must name the same user')
    if (identity.expiresAt !== undefined && !(identity.expiresAt > this.clock.now())) throw new RealtimeError('RT_002', 'the new credentials have already expired')
    if (conn.ended) return
    conn.identity = identity
    conn.recipient = { id: identity.userId, roles: identity.roles ?? [], claims: identity.claims ?? {} }
    // Per-identity limits follow the new identity (a plan may have changed).
    const perConnection = this.options.limits.maxSubscriptions
    if (typeof perConnection === 'function') {
      try {
        conn.maxSubscriptions = perConnection(identity, conn.info())
      } catch (err) {
        this.report(err, 'limits.maxSubscriptions')
      }
    }
    this.fanout.sendFrame(conn, { type: 'authenticated', id: frame.id, userId: identity.userId, expiresAt: identity.expiresAt })
    if (identity.expiresAt !== undefined) this.credentials.watch(conn, identity.expiresAt)
    else this.credentials.forget(conn)
    // Every subscription is decided again for the new identity; those no longer allowed end.
    for (const sub of [...conn.subscriptions.values()]) {
      sub.canPublish = undefined
      const name = sub.channel.name
      const resolved = this.patterns.resolve(name)
      const denied = resolved === undefined ? 'channel no longer exists' : await this.authorize(conn, 'subscribe', name, resolved, this.rooms.rooms.get(name), undefined)
      if (conn.ended) return
      if (denied && conn.subscriptions.get(name) === sub) this.removeSubscription(sub, `not allowed after re-authentication: ${denied}`, true)
    }
  }

  // ------------------------------------------------------------------ server API

  channel(name: string): ChannelHandle {
    return {
      name,
      publish: (event, data, o) => this.publish(name, event, data, o),
      broadcast: (event, data, o) => this.publish(name, event, data, o),
      getPresence: () => this.getPresence(name),
      kick: (userId, reason) => this.kick(name, userId, reason),
      history: async (o = {}) => this.readHistory(name, this.resolve(name), o),
    }
  }

  notify(userId: string, notification: unknown): Promise<{ batched: boolean; offset: number | undefined; badge: number }> {
    return this.notifications.notify(userId, notification)
  }

  unreadNotifications(userId: string): number {
    return this.notifications.unreadCount(userId)
  }

  markNotificationsRead(userId: string, offsets?: readonly number[]): void {
    if (offsets) this.notifications.read(userId, offsets)
    else this.notifications.readAll(userId)
  }

  async deliveredTo(channel: string, offset: number): Promise<string[]> {
    const cursors = await this.options.store.cursors(channel)
    return Object.entries(cursors)
      .filter(([, at]) => at >= offset)
      .map(([user]) => user)
  }

  async getPresence(channel: string): Promise<PresenceSnapshot> {
    return this.presence.snapshot(channel)
  }

  async kick(channel: string, userId: string, reason = 'kicked'): Promise<number> {
    const n = this.kickLocal(channel, userId, reason)
    await this.cluster.toCluster({ kind: 'command', origin: this.nodeId, command: { op: 'kick', channel, userId, reason } })
    return n
  }

  setPreferences(userId: string, raw: UserPreferences): void {
    const compiled: CompiledPreferences = {
      mutedChannels: new Set(raw.mutedChannels ?? []),
      mutedEvents: new Set(raw.mutedEvents ?? []),
      typing: raw.typingIndicators !== false,
      readReceipts: raw.readReceipts !== false,
    }
    const empty = compiled.mutedChannels.size === 0 && compiled.mutedEvents.size === 0 && compiled.typing && compiled.readReceipts
    if (empty) this.preferences.delete(userId)
    else this.preferences.set(userId, { raw: { ...raw }, compiled })
    for (const conn of this.byUser.get(userId) ?? []) {
      conn.preferences = empty ? undefined : compiled
      conn.refreshFastPath()
    }
  }

  getPreferences(userId: string): UserPreferences | undefined {
    return this.preferences.get(userId)?.raw
  }

  registerChannel(pattern: string, options: ChannelOptions): void {
    this.patterns.register(pattern, options)
  }

  channels(): ChannelInfo[] {
    return [...this.live.values()].map((c) => ({
      name: c.name,
      pattern: c.pattern,
      subscribers: c.subscribers.size,
      occupants: c.occupants,
      room: this.rooms.get(c.name),
    }))
  }

  resolveChannel(name: string): { readonly pattern: string; readonly params: Readonly<Record<string, string>> } | undefined {
    const live = this.live.get(name)
    if (live !== undefined) return { pattern: live.pattern, params: live.params }
    const resolved = this.patterns.resolve(name)
    return resolved === undefined ? undefined : { pattern: resolved.pattern, params: resolved.params }
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
    const s = this.stats
    const byChannel: Record<string, number> = {}
    let subscriptions = 0
    for (const c of this.live.values()) {
      byChannel[c.name] = c.subscribers.size
      subscriptions += c.subscribers.size
    }
    return {
      nodeId: this.nodeId,
      connections: this.connections.size,
      channels: this.live.size,
      subscriptions,
      subscriptionsByChannel: byChannel,
      messagesIn: s.messagesIn,
      messagesOut: s.messagesOut,
      bytesIn: s.bytesIn,
      bytesOut: s.bytesOut,
      published: s.published,
      dropped: s.dropped,
      queuedBytes: s.queuedBytes,
      redelivered: s.redelivered,
      deliveryFailed: s.deliveryFailed,
      connectionsOpened: s.connectionsOpened,
      connectionsClosed: s.connectionsClosed,
      errors: { ...s.errors },
    }
  }

  /** @internal Frames still being handled (connections whose in-order chain waits): the test kit's `settle()` waits for them. */
  [Symbol.for('tidings.pendingWork')](): number {
    let n = 0
    for (const c of this.connections.values()) if (c.tail !== null) n++
    return n
  }

  /** @internal State sizes, for leak tests. */
  debugSizes(): Record<string, number> {
    return {
      connections: this.connections.size,
      users: this.byUser.size,
      channels: this.live.size,
      rooms: this.rooms.rooms.size,
      pendingLeaves: this.presence.pendingLeaveCount,
    }
  }

  async close(): Promise<void> {
    if (this.closing) return
    this.closing = true
    this.acks.stop()
    this.notifications.close()
    for (const conn of [...this.connections.values()]) this.admission.closeConnection(conn, CloseCode.GoingAway, 'server shutting down')
    this.presence.flushLeaves()
    try {
      await this.options.broker.close()
    } catch (err) {
      this.report(err, 'broker.close')
    }
    try {
      await this.options.store.close?.()
    } catch (err) {
      this.report(err, 'store.close')
    }
  }
}

