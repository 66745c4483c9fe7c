import { type Codec, type WireData, CloseCode, RealtimeError, type FilterNode, type ClientFrame, type ClientFrameOf, type PresenceSnapshot, type Priority } from '@tidings/protocol'
import { EventEmitter } from 'eventemitter3'
import type { Identity } from '../ports/auth.js'
import type { Clock } from '../ports/clock.js'
import type { ConnectionHandle, Session } from '../ports/session.js'
import type { StoredMessage } from '../ports/store.js'
import { type MaybePromise, andThen, isoTimestamp } from '../util.js'
import { Channel } from './channel.js'
import { type ChannelOptions, ChannelPatterns } from './channels.js'
import { Connection, type ConnectionInfo } from './connection.js'
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
import { SubscriptionService } from './subscriptions.js'
import { Preferences } from './preferences.js'
import { NodeWatch } from './nodes.js'
import { History } from './delivery/history.js'

export { storedToFrame } from './routing.js'
import { type RoomInfo, RoomRegistry, type Rooms } from './rooms.js'

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
  /**
   * Report an error that happened outside the app's call stack (a transport's socket, a timer):
   * it goes to `onError`, the logger and the `error` event, like the hub's own. Adapters use it
   * instead of emitting `error` themselves, so `onError` sees every failure.
   */
  report(error: unknown, stage: string): void
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
  private readonly preferences: Preferences
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
  private readonly nodes: NodeWatch
  private readonly history: History
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
      preferences: { compiled: (userId) => this.preferences.compiled(userId) },
      removeSubscription: (sub, reason, notify) => this.subscriptions.removeSubscription(sub, reason, notify),
      emit: (event, ...args) => this.emit(event, ...(args as unknown as EventEmitter.EventArgs<HubEvents, typeof event>)),
      listenerCount: (event) => this.listenerCount(event),
      report: (err, stage) => this.report(err, stage),
    })
    this.connections = this.admission.connections
    this.byUser = this.admission.byUser
    this.preferences = new Preferences(this.byUser)
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
      deleted: (room) => this.subscriptions.roomDeleted(room),
      memberRemoved: (room, userId) => {
        this.subscriptions.forgetPublishDecisions(room.channel)
        if (room.permissions.subscribe !== 'anyone' || this.patterns.resolve(room.channel)?.options.room === 'required') {
          this.subscriptions.kickLocal(room.channel, userId, 'removed-from-room')
        }
      },
      changed: (room) => this.subscriptions.forgetPublishDecisions(room.channel),
    })
    this.credentials = new CredentialWatch({
      clock: this.clock,
      refreshBeforeMs: this.options.credentials.refreshBeforeMs,
      graceMs: this.options.credentials.graceMs,
      warn: (conn, expiresAt, closesAt) => this.fanout.sendFrame(conn, { type: 'auth:expiring', expiresAt, closesAt }),
      expire: (conn) => {
        if (conn.ended) return
        for (const sub of [...conn.subscriptions.values()]) this.subscriptions.removeSubscription(sub, 'credentials expired', true)
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
      emit: (event, ...args) => this.emit(event, ...(args as unknown as EventEmitter.EventArgs<HubEvents, typeof event>)),
      report: (err, stage) => this.report(err, stage),
    })
    this.cluster = new Cluster({
      nodeId: this.nodeId,
      options: this.options,
      get closing() {
        return hub.closing
      },
      fanout: this.fanout,
      connections: this.connections,
      kickLocal: (channel, userId, reason) => this.subscriptions.kickLocal(channel, userId, reason),
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
      resolve: (name) => this.subscriptions.resolve(name),
      authorize: (conn, action, channel, resolved, room, auth) => this.subscriptions.authorize(conn, action, channel, resolved, room, auth),
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
    this.history = new History({ clock: this.clock, options: this.options, rooms: this.rooms, subscriptions: this.subscriptions, fanout: this.fanout })
    this.nodes = new NodeWatch({
      nodeId: this.nodeId,
      clock: this.clock,
      presenceStore: this.options.presenceStore,
      heartbeatMs: this.options.nodes.heartbeatMs,
      nodeTtlMs: this.options.nodes.nodeTtlMs,
      nodeGone: (node, changes) => {
        this.options.logger.warn('node stopped heartbeating: its presence members were removed', { node, channels: changes.length })
        this.presence.nodeGone(changes)
      },
      report: (err, stage) => this.report(err, stage),
    })
    if (this.options.nodes.heartbeatMs > 0) this.nodes.start()
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
        return this.onPresenceUpdate(conn, frame)
      case 'presence:get': {
        this.presenceChannel(conn, frame.channel)
        return andThen(this.presence.snapshot(frame.channel), (snap) => {
          this.fanout.sendFrame(conn, { type: 'presence', id: frame.id, channel: frame.channel, ...this.subscriptions.capSnapshot(snap) })
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
        return this.history.onHistory(conn, frame)
      case 'ping':
        this.fanout.sendFrame(conn, { type: 'pong', id: frame.id })
        return
      case 'auth':
        return this.onAuth(conn, frame)
    }
  }

  // ------------------------------------------------------------------ subscribe

  // ------------------------------------------------------------------ at-least-once

  // ------------------------------------------------------------------ unsubscribe and clean-up

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

  // ------------------------------------------------------------------ history and auth frames

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
      const denied = resolved === undefined ? 'channel no longer exists' : await this.subscriptions.authorize(conn, 'subscribe', name, resolved, this.rooms.rooms.get(name), undefined)
      if (conn.ended) return
      if (denied && conn.subscriptions.get(name) === sub) this.subscriptions.removeSubscription(sub, `not allowed after re-authentication: ${denied}`, true)
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
      history: async (o = {}) => this.history.read(name, this.subscriptions.resolve(name), o),
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
    const n = this.subscriptions.kickLocal(channel, userId, reason)
    await this.cluster.toCluster({ kind: 'command', origin: this.nodeId, command: { op: 'kick', channel, userId, reason } })
    return n
  }

  setPreferences(userId: string, preferences: UserPreferences): void {
    this.preferences.set(userId, preferences)
  }

  getPreferences(userId: string): UserPreferences | undefined {
    return this.preferences.get(userId)
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
    this.nodes.stop()
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

