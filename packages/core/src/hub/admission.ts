import { CloseCode, type ErrorCode, PROTOCOL_VERSION, RealtimeError, type ServerFrame, clampCloseReason, wireLength } from '@tidings/protocol'
import type { Identity } from '../ports/auth.js'
import type { Clock } from '../ports/clock.js'
import { type ConnectionHandle, Outbound, type Session } from '../ports/session.js'
import { type CompiledPreferences, Connection, type ConnectionHost, type ConnectionInfo, type Subscription } from './connection.js'
import type { CredentialWatch } from './credentials.js'
import type { Signals } from './events.js'
import type { FanOut } from './fanout.js'
import type { ConnectOptions, HubConnections } from './api.js'
import type { Answers } from './cluster.js'
import type { Metrics } from './metrics.js'
import type { ResolvedHubOptions } from './options.js'
import { type MaybePromise, addressKey, isPromise } from '../util.js'

/** How many connections `connections.list` answers at most (each node answers at most as many). */
const DEFAULT_LIST_LIMIT = 1_000

/** The identity of every anonymous connection: one frozen object shared by all. */
const ANONYMOUS: Identity = Object.freeze({})

/** What admission needs from the hub. */
export interface AdmissionHost {
  readonly nodeId: string
  readonly clock: Clock
  readonly codec: ResolvedHubOptions['codec']
  readonly options: Pick<ResolvedHubOptions, 'authenticate' | 'allowAnonymous' | 'limits' | 'logger' | 'clustered' | 'presenceStore'>
  readonly stats: Metrics
  /** The hub is shutting down: no new connections. */
  readonly closing: boolean
  /** What each connection reports its transport's calls to. */
  readonly connectionHost: ConnectionHost
  readonly credentials: CredentialWatch
  readonly fanout: FanOut
  /** The node's start-up (a promise while it is under way): connections wait for it. */
  started(): MaybePromise<void>
  readonly cluster: { ask<T>(query: import('../ports/broker.js').ClusterQuery, local: T): Promise<Answers<T>> }
  readonly preferences: { compiled(userId: string): CompiledPreferences | undefined }
  removeSubscription(sub: Subscription, reason: string, notify: boolean): void
  readonly signals: Signals
}

/**
 * The presence-store channel where, on a cluster, each connection of a user holds an entry, so
 * the per-user limit counts connections on every node (and a dead node's are removed with its
 * other entries). `$` cannot start a client's channel name.
 */
export const userConnectionsChannel = (userId: string): string => `$connections:${userId}`

/** The same for the connections of one client address (`limits.maxConnectionsPerAddress`, IPv6 by /64). */
export const addressConnectionsChannel = (address: string): string => `$addresses:${address}`

/**
 * Who is connected: accepting a session (authentication, expiry, the per-user limit across
 * nodes, refusals answered, logged and emitted), this node's registries by id and by user,
 * letting a connection go (exception-safe: never half-removed), and the connections of every
 * node (listed, found and closed through the cluster).
 */
export class Admission implements HubConnections {
  readonly connections = new Map<string, Connection>()
  readonly byUser = new Map<string, Set<Connection>>()
  /** Connections on this node per client address key, while `limits.maxConnectionsPerAddress` is set. */
  private readonly byAddress = new Map<string, number>()
  private seq = 0

  constructor(private readonly host: AdmissionHost) {
    // Connection durations and peaks are measured on the hub's clock.
    host.stats.useClock(host.clock)
  }

  /** Accept a transport session: authenticate, register, send `connected`. Rejects with `RT_002` / `RT_001` (and closes the session). */
  async connect(session: Session, opts: ConnectOptions = {}): Promise<ConnectionHandle> {
    const codec = session.codec ?? this.host.codec
    let refusedUser: string | undefined
    const refuse = (code: ErrorCode, message: string, closeCode: number): never => {
      this.host.stats.errors[code]++
      // Logged and emitted without the credentials themselves.
      const refused = { transport: session.transport, remoteAddress: session.remoteAddress, userId: refusedUser, code, reason: message, closeCode }
      this.host.options.logger.warn('connection refused', refused)
      if (this.host.signals.listenerCount('connection:refused') > 0) this.host.signals.emit('connection:refused', refused)
      const frame: ServerFrame = { type: 'error', code, message }
      try {
        const data = codec.encode(frame)
        session.send(new Outbound(data, wireLength(data)))
        session.close(closeCode, clampCloseReason(message))
      } catch (err) {
        this.host.signals.report(err, 'session.refuse')
      }
      throw new RealtimeError(code, message)
    }
    if (this.host.closing) refuse('RT_001', 'server is shutting down', CloseCode.GoingAway)
    const starting = this.host.started()
    if (starting) await starting

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
    const perAddress = this.host.options.limits.maxConnectionsPerAddress
    const address = perAddress !== undefined && session.remoteAddress !== undefined ? addressKey(session.remoteAddress) : undefined
    if (address !== undefined && (this.byAddress.get(address) ?? 0) >= perAddress!) {
      refuse('RT_001', `address already has ${perAddress} connections`, CloseCode.TooManyConnections)
    }
    const places: string[] = []
    if (this.host.options.clustered) {
      // Across nodes: take a place first, then count, so two nodes admitting at once can both
      // refuse but never both exceed the limit.
      if (userId !== undefined && Number.isFinite(max)) {
        if (!(await this.takePlace(userConnectionsChannel(userId), id, userId, max, now))) refuse('RT_001', `user already has ${max} connections`, CloseCode.TooManyConnections)
        places.push(userConnectionsChannel(userId))
      }
      if (address !== undefined) {
        if (!(await this.takePlace(addressConnectionsChannel(address), id, address, perAddress!, now))) {
          this.releasePlaces(places, id)
          refuse('RT_001', `address already has ${perAddress} connections`, CloseCode.TooManyConnections)
        }
        places.push(addressConnectionsChannel(address))
      }
      if (this.host.closing) {
        this.releasePlaces(places, id)
        refuse('RT_001', 'server is shutting down', CloseCode.GoingAway)
      }
    }
    if (address !== undefined) this.byAddress.set(address, (this.byAddress.get(address) ?? 0) + 1)
    const limits = this.host.options.limits
    let maxSubs = typeof limits.maxSubscriptions === 'number' ? limits.maxSubscriptions : 100
    const conn = new Connection(this.host.connectionHost, id, session, identity, codec, now, maxSubs)
    if (typeof limits.maxSubscriptions === 'function') {
      try {
        maxSubs = limits.maxSubscriptions(identity, conn.info())
      } catch (err) {
        this.host.signals.report(err, 'limits.maxSubscriptions')
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
    this.host.stats.connectionOpened(session.transport, userId, this.host.clock.now())
    this.host.fanout.sendFrame(conn, {
      type: 'connected',
      v: PROTOCOL_VERSION,
      connectionId: id,
      userId,
      limits: { maxMessageSize: limits.maxMessageSize, messagesPerSecond: limits.messagesPerSecond, maxSubscriptions: conn.maxSubscriptions },
      expiresAt: identity.expiresAt,
    })
    if (identity.expiresAt !== undefined) this.host.credentials.watch(conn, identity.expiresAt)
    if (this.host.signals.listenerCount('connection') > 0) this.host.signals.emit('connection', conn.info())
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
        this.host.signals.report(err, 'disconnect.unsubscribe')
        conn.subscriptions.delete(sub.channel.name)
      }
    }
    this.connections.delete(conn.id)
    if (conn.userId !== undefined) {
      const set = this.byUser.get(conn.userId)
      set?.delete(conn)
      if (set?.size === 0) this.byUser.delete(conn.userId)
    }
    const perAddress = this.host.options.limits.maxConnectionsPerAddress
    const address = perAddress !== undefined && conn.session.remoteAddress !== undefined ? addressKey(conn.session.remoteAddress) : undefined
    if (address !== undefined) {
      const n = (this.byAddress.get(address) ?? 1) - 1
      if (n > 0) this.byAddress.set(address, n)
      else this.byAddress.delete(address)
    }
    if (this.host.options.clustered) {
      const places: string[] = []
      if (conn.userId !== undefined && Number.isFinite(this.host.options.limits.maxConnectionsPerUser)) places.push(userConnectionsChannel(conn.userId))
      if (address !== undefined) places.push(addressConnectionsChannel(address))
      this.releasePlaces(places, conn.id)
    }
    this.host.stats.connectionClosed(conn.session.transport, conn.userId, code, conn.connectedAt, conn.sent, this.host.clock.now())
    if (this.host.signals.listenerCount('disconnect') > 0) this.host.signals.emit('disconnect', conn.info(), { code, reason })
  }

  closeConnection(conn: Connection, code: number, reason: string): void {
    if (conn.ended) return
    try {
      conn.session.close(code, clampCloseReason(reason))
    } catch (err) {
      this.host.signals.report(err, 'session.close')
    }
    this.dropConnection(conn, code, reason)
  }

  /** The shared store lost this node's places: take them again (no count: they were admitted). */
  rejoin(): void {
    if (!this.host.options.clustered) return
    const store = this.host.options.presenceStore
    const now = this.host.clock.now()
    const perUser = Number.isFinite(this.host.options.limits.maxConnectionsPerUser)
    const perAddress = this.host.options.limits.maxConnectionsPerAddress !== undefined
    const join = (channel: string, conn: Connection, holder: string) => {
      try {
        const r = store.join({ channel, connectionId: conn.id, userId: holder, nodeId: this.host.nodeId, state: 'online', data: {}, joinedAt: conn.connectedAt, updatedAt: now })
        if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'presence.rejoin'))
      } catch (err) {
        this.host.signals.report(err, 'presence.rejoin')
      }
    }
    for (const conn of this.connections.values()) {
      if (perUser && conn.userId !== undefined) join(userConnectionsChannel(conn.userId), conn, conn.userId)
      if (perAddress && conn.session.remoteAddress !== undefined) {
        const address = addressKey(conn.session.remoteAddress)
        join(addressConnectionsChannel(address), conn, address)
      }
    }
  }


  /**
   * A place under a limit across nodes: joined first, then counted; over `max`, given back.
   * True when it is held. When the shared count cannot be read, this node's own count (checked
   * before) decides, and the failure is reported.
   */
  private async takePlace(channel: string, connectionId: string, holder: string, max: number, now: number): Promise<boolean> {
    const store = this.host.options.presenceStore
    try {
      await store.join({ channel, connectionId, userId: holder, nodeId: this.host.nodeId, state: 'online', data: {}, joinedAt: now, updatedAt: now })
      if ((await store.entries(channel)).length <= max) return true
      await store.leave(channel, connectionId, now)
      return false
    } catch (err) {
      this.host.signals.report(err, 'limits.places')
      return true
    }
  }

  private releasePlaces(channels: readonly string[], connectionId: string): void {
    for (const channel of channels) {
      try {
        const r = this.host.options.presenceStore.leave(channel, connectionId, this.host.clock.now())
        if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'presence.leave'))
      } catch (err) {
        this.host.signals.report(err, 'presence.leave')
      }
    }
  }

  // ------------------------------------------------------------------ this node

  /** This node's connections matching the filter. */
  local(filter: { readonly userId?: string | undefined; readonly channel?: string | undefined; readonly connectionId?: string | undefined; readonly limit?: number | undefined } = {}): ConnectionInfo[] {
    let list: Iterable<Connection>
    if (filter.connectionId !== undefined) {
      const one = this.connections.get(filter.connectionId)
      list = one && (filter.userId === undefined || one.userId === filter.userId) ? [one] : []
    } else list = filter.userId !== undefined ? (this.byUser.get(filter.userId) ?? []) : this.connections.values()
    const limit = filter.limit !== undefined && Number.isFinite(filter.limit) ? Math.max(0, Math.floor(filter.limit)) : Infinity
    const out: ConnectionInfo[] = []
    for (const c of list) {
      if (out.length >= limit) break
      if (filter.channel === undefined || c.subscriptions.has(filter.channel)) out.push(c.info())
    }
    return out
  }

  /** Close this node's connection, or every connection of a user here; how many were closed. */
  disconnectLocal(target: { readonly userId?: string | undefined; readonly connectionId?: string | undefined }, reason: string): number {
    if (target.connectionId !== undefined) {
      const conn = this.connections.get(target.connectionId)
      if (!conn) return 0
      this.closeConnection(conn, CloseCode.Disconnected, reason)
      return 1
    }
    if (target.userId === undefined) return 0
    const conns = [...(this.byUser.get(target.userId) ?? [])]
    for (const conn of conns) this.closeConnection(conn, CloseCode.Disconnected, reason)
    return conns.length
  }

  // ------------------------------------------------------------------ every node

  async list(filter: { readonly userId?: string; readonly channel?: string; readonly limit?: number } = {}): Promise<ConnectionInfo[]> {
    const limit = filter.limit ?? DEFAULT_LIST_LIMIT
    const local = this.local({ ...filter, limit })
    const { answers } = await this.host.cluster.ask<ConnectionInfo[]>({ op: 'connections', userId: filter.userId, channel: filter.channel, limit }, local)
    return answers.flatMap((a) => (Array.isArray(a.result) ? a.result : [])).slice(0, limit)
  }

  async get(connectionId: string): Promise<ConnectionInfo | undefined> {
    const here = this.connections.get(connectionId)
    if (here) return here.info()
    const { answers } = await this.host.cluster.ask<ConnectionInfo[]>({ op: 'connections', connectionId }, [])
    for (const a of answers) if (Array.isArray(a.result) && a.result.length > 0) return a.result[0]
    return undefined
  }

  async disconnect(connectionId: string, reason = 'disconnected by server'): Promise<boolean> {
    if (this.disconnectLocal({ connectionId }, reason) > 0) return true
    const { answers } = await this.host.cluster.ask<number>({ op: 'disconnect', connectionId, reason }, 0)
    return answers.some((a) => typeof a.result === 'number' && a.result > 0)
  }

  async disconnectUser(userId: string, reason = 'disconnected by server'): Promise<number> {
    const here = this.disconnectLocal({ userId }, reason)
    const { answers } = await this.host.cluster.ask<number>({ op: 'disconnect', userId, reason }, here)
    return answers.reduce((n, a) => n + (typeof a.result === 'number' ? a.result : 0), 0)
  }
}
