import { CloseCode, type ErrorCode, PROTOCOL_VERSION, RealtimeError, type ServerFrame, clampCloseReason, wireLength } from '@tidings/protocol'
import type { Identity } from '../ports/auth.js'
import type { Command } from '../ports/broker.js'
import type { Clock } from '../ports/clock.js'
import { type ConnectionHandle, Outbound, type Session } from '../ports/session.js'
import { type CompiledPreferences, Connection, type ConnectionHost, type ConnectionInfo, type Subscription } from './connection.js'
import type { CredentialWatch } from './credentials.js'
import type { HubEvents } from './events.js'
import type { FanOut } from './fanout.js'
import type { ConnectOptions } from './hub.js'
import type { Metrics } from './metrics.js'
import type { ResolvedHubOptions } from './options.js'

/** The identity of every anonymous connection: one frozen object shared by all. */
const ANONYMOUS: Identity = Object.freeze({})

/** What admission needs from the hub. */
export interface AdmissionHost {
  readonly nodeId: string
  readonly clock: Clock
  readonly codec: ResolvedHubOptions['codec']
  readonly options: Pick<ResolvedHubOptions, 'authenticate' | 'allowAnonymous' | 'limits' | 'logger'>
  readonly stats: Metrics
  /** The hub is shutting down: no new connections. */
  readonly closing: boolean
  /** What each connection reports its transport's calls to. */
  readonly connectionHost: ConnectionHost
  readonly credentials: CredentialWatch
  readonly fanout: FanOut
  readonly cluster: { toCluster(m: Command): Promise<void> }
  readonly preferences: { compiled(userId: string): CompiledPreferences | undefined }
  removeSubscription(sub: Subscription, reason: string, notify: boolean): void
  emit<K extends keyof HubEvents>(event: K, ...args: Parameters<HubEvents[K]>): unknown
  listenerCount(event: keyof HubEvents): number
  report(error: unknown, stage: string): void
}

/**
 * Who is connected to this node: accepting a session (authentication, expiry, the per-user
 * limit, refusals answered, logged and emitted), the registries by id and by user, and letting
 * a connection go (exception-safe: never half-removed).
 */
export class Admission {
  readonly connections = new Map<string, Connection>()
  readonly byUser = new Map<string, Set<Connection>>()
  private seq = 0

  constructor(private readonly host: AdmissionHost) {}

  /** Accept a transport session: authenticate, register, send `connected`. Rejects with `RT_002` / `RT_001` (and closes the session). */
  async connect(session: Session, opts: ConnectOptions = {}): Promise<ConnectionHandle> {
    const codec = session.codec ?? this.host.codec
    let refusedUser: string | undefined
    const refuse = (code: ErrorCode, message: string, closeCode: number): never => {
      this.host.stats.errors[code]++
      // Logged and emitted without the credentials themselves.
      const refused = { transport: session.transport, remoteAddress: session.remoteAddress, userId: refusedUser, code, reason: message, closeCode }
      this.host.options.logger.warn('connection refused', refused)
      if (this.host.listenerCount('connection:refused') > 0) this.host.emit('connection:refused', refused)
      const frame: ServerFrame = { type: 'error', code, message }
      try {
        const data = codec.encode(frame)
        session.send(new Outbound(data, wireLength(data)))
        session.close(closeCode, clampCloseReason(message))
      } catch (err) {
        this.host.report(err, 'session.refuse')
      }
      throw new RealtimeError(code, message)
    }
    if (this.host.closing) refuse('RT_001', 'server is shutting down', CloseCode.GoingAway)

    let identity: Identity
    const credentials = opts.token !== undefined || opts.apiKey !== undefined
    const authenticate = this.host.options.authenticate
    if (opts.identity) identity = opts.identity
    else if (authenticate) {
      // Asked even without a token or key: it may authenticate by headers (a cookie, a proxy's header).
      let found: Identity | null | undefined
      try {
        found = await authenticate({
          token: opts.token,
          apiKey: opts.apiKey,
          headers: session.headers,
          remoteAddress: session.remoteAddress,
          transport: session.transport,
        })
      } catch (err) {
        this.host.options.logger.debug('authenticator threw', { error: String(err) })
        found = null
      }
      if (found) identity = found
      else if (!credentials && this.host.options.allowAnonymous) identity = ANONYMOUS
      else return refuse('RT_002', credentials ? 'invalid or expired credentials' : 'credentials are required', CloseCode.AuthenticationFailed)
    } else if (credentials) return refuse('RT_002', 'credentials were given but the hub has no authenticator', CloseCode.AuthenticationFailed)
    else if (this.host.options.allowAnonymous) identity = ANONYMOUS
    else return refuse('RT_002', 'credentials are required', CloseCode.AuthenticationFailed)
    if (this.host.closing) refuse('RT_001', 'server is shutting down', CloseCode.GoingAway)
    refusedUser = identity.userId
    if (identity.expiresAt !== undefined && !(identity.expiresAt > this.host.clock.now())) {
      refuse('RT_002', 'credentials expired', CloseCode.AuthenticationFailed)
    }

    const userId = identity.userId
    const max = this.host.options.limits.maxConnectionsPerUser
    if (userId !== undefined && (this.byUser.get(userId)?.size ?? 0) >= max) {
      refuse('RT_001', `user already has ${max} connections`, CloseCode.TooManyConnections)
    }

    const id = `${this.host.nodeId}.${(++this.seq).toString(36)}`
    const now = this.host.clock.now()
    const limits = this.host.options.limits
    let maxSubs = typeof limits.maxSubscriptions === 'number' ? limits.maxSubscriptions : 100
    const conn = new Connection(this.host.connectionHost, id, session, identity, codec, now, maxSubs)
    if (typeof limits.maxSubscriptions === 'function') {
      try {
        maxSubs = limits.maxSubscriptions(identity, conn.info())
      } catch (err) {
        this.host.report(err, 'limits.maxSubscriptions')
      }
      conn.maxSubscriptions = maxSubs
    }
    this.connections.set(id, conn)
    if (userId !== undefined) {
      let set = this.byUser.get(userId)
      if (!set) this.byUser.set(userId, (set = new Set()))
      set.add(conn)
      const prefs = this.host.preferences.compiled(userId)
      if (prefs) conn.preferences = prefs
    }
    this.host.stats.connectionsOpened++
    this.host.fanout.sendFrame(conn, {
      type: 'connected',
      v: PROTOCOL_VERSION,
      connectionId: id,
      userId,
      limits: { maxMessageSize: limits.maxMessageSize, messagesPerSecond: limits.messagesPerSecond, maxSubscriptions: conn.maxSubscriptions },
      expiresAt: identity.expiresAt,
    })
    if (identity.expiresAt !== undefined) this.host.credentials.watch(conn, identity.expiresAt)
    if (this.host.listenerCount('connection') > 0) this.host.emit('connection', conn.info())
    return conn
  }

  /** Forget a connection and everything it held. Idempotent. */
  dropConnection(conn: Connection, code: number, reason: string): void {
    if (conn.ended) return
    conn.ended = true
    this.host.credentials.forget(conn)
    this.host.fanout.forget(conn)
    // Each subscription is let go of on its own: one that fails to clean up (a presence store
    // error, a throwing listener) must not leave the connection half-removed.
    for (const sub of [...conn.subscriptions.values()]) {
      try {
        this.host.removeSubscription(sub, 'disconnected', false)
      } catch (err) {
        this.host.report(err, 'disconnect.unsubscribe')
        conn.subscriptions.delete(sub.channel.name)
      }
    }
    this.connections.delete(conn.id)
    if (conn.userId !== undefined) {
      const set = this.byUser.get(conn.userId)
      set?.delete(conn)
      if (set?.size === 0) this.byUser.delete(conn.userId)
    }
    this.host.stats.connectionsClosed++
    if (this.host.listenerCount('disconnect') > 0) this.host.emit('disconnect', conn.info(), { code, reason })
  }

  closeConnection(conn: Connection, code: number, reason: string): void {
    if (conn.ended) return
    try {
      conn.session.close(code, clampCloseReason(reason))
    } catch (err) {
      this.host.report(err, 'session.close')
    }
    this.dropConnection(conn, code, reason)
  }

  disconnectUserLocal(userId: string, reason: string): number {
    const conns = [...(this.byUser.get(userId) ?? [])]
    for (const conn of conns) this.closeConnection(conn, CloseCode.Disconnected, reason)
    return conns.length
  }

  getConnections(filter: { userId?: string; channel?: string } = {}): ConnectionInfo[] {
    let list: Iterable<Connection> = filter.userId !== undefined ? (this.byUser.get(filter.userId) ?? []) : this.connections.values()
    if (filter.channel !== undefined) {
      const channel = filter.channel
      list = [...list].filter((c) => c.subscriptions.has(channel))
    }
    return [...list].map((c) => c.info())
  }

  getConnection(connectionId: string): ConnectionInfo | undefined {
    return this.connections.get(connectionId)?.info()
  }

  disconnect(connectionId: string, reason = 'disconnected by server'): boolean {
    const conn = this.connections.get(connectionId)
    if (!conn) {
      void this.host.cluster.toCluster({ kind: 'command', origin: this.host.nodeId, command: { op: 'disconnect', connectionId, reason } })
      return false
    }
    this.closeConnection(conn, CloseCode.Disconnected, reason)
    return true
  }

  disconnectUser(userId: string, reason = 'disconnected by server'): number {
    void this.host.cluster.toCluster({ kind: 'command', origin: this.host.nodeId, command: { op: 'disconnect', userId, reason } })
    return this.disconnectUserLocal(userId, reason)
  }
}
