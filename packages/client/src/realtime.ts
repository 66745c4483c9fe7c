import { RealtimeError, type ServerFrame, type ServerFrameOf } from '@tidings/protocol'
import { backoffDelay } from './backoff.js'
import { type Channel, type ChannelOptions, disposeSymbol } from './channel.js'
import { ChannelRegistry } from './channel-registry.js'
import { CredentialSource } from './credentials.js'
import { Database } from './database.js'
import { Emitter } from './emitter.js'
import { Heartbeat } from './heartbeat.js'
import { type Link, Transports } from './link.js'
import type { ChannelSummary, ConnectionState, RealtimeEvents, RealtimeOptions } from './options.js'
import { watchPage } from './page.js'
import { type Line, Requests } from './requests.js'
import type { Credentials, TransportCloseInfo } from './transports/types.js'

/** Closes after which reconnecting is pointless. */
const NO_RECONNECT = new Set([4000, 4008])

/**
 * A Tidings client: one hub connection (over WebSocket, SSE or long-poll, with fallback and
 * upgrade), automatic reconnect with backoff, and channels that resume where they were.
 *
 * This class is the connection's lifecycle (attempts over the transports in order, reconnects
 * with backoff, the upgrade probe back to the preferred transport, giving up) and the routing
 * of the hub's frames; requests, channels, credentials, links and the heartbeat have their own files.
 */
export class Realtime extends Emitter<RealtimeEvents> {
  state: ConnectionState = 'idle'
  /** The transport of the current connection, undefined while not connected. */
  transport: string | undefined
  connectionId: string | undefined
  userId: string | undefined
  /** When the connection's credentials expire (ms since the epoch), if the hub said. */
  expiresAt: number | undefined

  private readonly options: RealtimeOptions
  private readonly transports: Transports
  private readonly requests: Requests
  private readonly registry: ChannelRegistry
  private readonly credentials: CredentialSource
  private readonly heartbeat: Heartbeat
  /** Failed attempts in a row. */
  private attempts = 0
  /** Index of the transport that last worked: attempts start there. */
  private preferred = 0
  /** Bumped by connect/disconnect to cancel what an older attempt still has in flight. */
  private generation = 0
  private current: Link | undefined
  private attempt: { link: Link | undefined; order: number[]; credentials: Credentials } | undefined
  private probe: Link | undefined
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  private upgradeTimer: ReturnType<typeof setTimeout> | undefined
  private warned = false
  private readonly detachPageEvents: (() => void) | undefined
  private db: Database | undefined

  constructor(options: RealtimeOptions) {
    super()
    this.options = options
    const warn = (message: string) => {
      if (this.warned || this.listenerCount('fallback') > 0) return
      this.warned = true
      console.warn(`[tidings] ${message}`)
    }
    this.transports = new Transports(options, warn, {
      frame: (link, frame) => this.linkFrame(link, frame),
      closed: (link, info) => this.linkClosed(link, info),
    })
    const line: Line = {
      current: () => this.current,
      ready: () => this.current !== undefined && this.state === 'connected',
    }
    this.requests = new Requests(line, options)
    this.registry = new ChannelRegistry(line, this.requests, options, {
      message: (m) => this.emit('message', m),
      revision: (r, m) => this.emit('revision', r, m),
      error: (err, ch) => this.reportError(err, ch),
      identity: () => ({ connectionId: this.connectionId, userId: this.userId }),
    })
    this.credentials = new CredentialSource(options, this.requests, {
      ready: line.ready,
      userId: () => this.userId,
      expires: (expiresAt) => (this.expiresAt = expiresAt),
      authenticated: (info) => this.emit('authenticated', info),
      reportError: (error) => this.reportError(error),
    })
    this.heartbeat = new Heartbeat(
      options,
      () => this.current,
      () => this.requests.id(),
      () => this.lost({ code: 1006, reason: 'no answer to ping' }),
    )
    this.detachPageEvents =
      options.releaseOnPageHide === false
        ? undefined
        : // Browsers: give the server its sessions back when the page goes away; come back with it.
          watchPage(
            () => {
              if (this.state === 'idle' || this.state === 'disconnected') return false
              this.disconnect()
              return true
            },
            () => this.connect(),
          )
    if (options.autoConnect !== false) this.connect()
  }

  // ---------------------------------------------------------------- public API

  /** Connect (no-op while connecting or connected). */
  connect(): void {
    if (this.state === 'connecting' || this.state === 'connected' || this.state === 'reconnecting') return
    this.generation++
    this.attempts = 0
    this.setState('connecting')
    void this.startAttempt()
  }

  /** Close the connection and stop reconnecting. Channels and unanswered sends are kept for the next `connect()`. */
  disconnect(): void {
    if (this.state === 'idle' || this.state === 'disconnected') return
    this.generation++
    const wasConnected = this.current !== undefined
    this.stopTimers()
    for (const link of [this.attempt?.link, this.probe, this.current]) {
      if (link) {
        clearTimeout(link.timer)
        link.transport.close(1000, 'client disconnect')
      }
    }
    this.attempt = undefined
    this.probe = undefined
    if (this.current) this.dropConnection()
    this.setState('disconnected')
    if (wasConnected) this.emit('disconnected', { code: 1000, reason: 'client disconnect' })
  }

  /**
   * Refresh the connection's credentials without reconnecting: sends an `auth` frame with
   * `token`, or with a fresh one from the `auth` function. Resolves when the hub accepted it;
   * rejects with `RT_002` (refused, or no way to get a token) or `RT_001` (not connected, timeout).
   * On reconnects the `auth` function is called anyway.
   */
  reauthenticate(token?: string): Promise<{ userId: string | undefined; expiresAt: number | undefined }> {
    return this.credentials.reauthenticate(token)
  }

  /** Stop for good: disconnect, forget the channels and stop watching the page. */
  close(): void {
    this.disconnect()
    this.detachPageEvents?.()
    this.registry.disposeAll()
  }

  [disposeSymbol](): void {
    this.close()
  }

  /**
   * The channel of that name (created on first use; options given later replace the earlier
   * ones). The same handle is returned until it is disposed: listeners added with `on()` stay
   * on it, so remove them with the function `on()` returns, or call `channel.dispose()` when
   * the view that used it goes away.
   */
  channel(name: string, options?: ChannelOptions): Channel {
    return this.registry.channel(name, options)
  }

  /**
   * Live database queries over this connection (docs/live-queries.md):
   * `rt.database().collection('messages').where('roomId', '==', id).orderBy('createdAt', 'desc').limit(50).onSnapshot(…)`.
   */
  database(): Database {
    this.db ??= new Database({ channel: (name, options) => this.registry.channel(name, options), reportError: (err) => this.reportError(err) })
    return this.db
  }

  /**
   * The user's channels (those where the hub keeps an offline queue for this user, e.g. the
   * personal channel and patterns with `offline`), most recently active first, with where the
   * user's cursor is and how many messages are unread after it. Rejects with `RT_007` when the
   * hub's store cannot list them, `RT_003` for a connection without a user.
   */
  async channels(options: { limit?: number } = {}): Promise<ChannelSummary[]> {
    const f = (await this.requests.request({ type: 'channels', ...(options.limit !== undefined ? { limit: options.limit } : {}) })) as ServerFrameOf<'channels'>
    return f.channels.map((c) => ({
      name: c.name,
      unread: c.unread,
      lastSeenOffset: c.lastSeenOffset,
      top: c.top,
      lastActivity: c.lastActivity,
      ...(c.kind !== undefined ? { kind: c.kind } : {}),
      ...(c.activeUsers !== undefined ? { activeUsers: c.activeUsers } : {}),
    }))
  }

  /** Sends waiting for a connection. */
  get queued(): number {
    return this.requests.queued
  }

  // ---------------------------------------------------------------- connecting

  private async startAttempt(): Promise<void> {
    const generation = this.generation
    let credentials: Credentials
    try {
      credentials = await this.credentials.get()
    } catch (err) {
      if (generation !== this.generation) return
      this.reportError(new RealtimeError('RT_002', `auth function failed: ${err instanceof Error ? err.message : String(err)}`))
      return this.retryLater()
    }
    if (generation !== this.generation) return
    const n = this.transports.count
    const order = Array.from({ length: n }, (_, i) => (this.preferred + i) % n)
    this.attempt = { link: undefined, order, credentials }
    this.tryNextTransport()
  }

  private tryNextTransport(): void {
    const attempt = this.attempt
    if (!attempt) return
    const index = attempt.order.shift()
    if (index === undefined) {
      this.attempt = undefined
      return this.retryLater()
    }
    attempt.link = this.transports.open(index, attempt.credentials, false)
  }

  private linkFrame(link: Link, frame: ServerFrame): void {
    if (link === this.current) {
      this.onFrame(frame)
      return
    }
    if (link !== this.attempt?.link && link !== this.probe) return
    if (frame.type === 'connected') this.adopt(link, frame)
    else if (frame.type === 'error') link.refusal = new RealtimeError(frame.code, frame.message, frame.details)
  }

  private linkClosed(link: Link, info: TransportCloseInfo): void {
    clearTimeout(link.timer)
    if (link === this.current) return this.lost(info)
    if (link === this.probe) {
      this.probe = undefined
      return this.scheduleUpgrade()
    }
    if (link !== this.attempt?.link) return
    this.attempt.link = undefined
    // Refused by the hub (not a transport problem): another transport would be refused too.
    if (link.refusal?.code === 'RT_002' || info.code === 4001) {
      this.attempt = undefined
      this.credentials.refused(link.token)
      const error = link.refusal ?? new RealtimeError('RT_002', info.reason || 'authentication failed')
      this.reportError(error)
      // A token function may give a fresh token next time; a fixed token will not change.
      return this.credentials.refreshable ? this.retryLater() : this.giveUp(error)
    }
    if (NO_RECONNECT.has(info.code)) {
      this.attempt = undefined
      const error = link.refusal ?? new RealtimeError('RT_001', info.reason || `connection refused (${info.code})`)
      this.reportError(error)
      return this.giveUp(error)
    }
    if (link.refusal || info.code === 1001 || info.code === 1013) {
      // The hub answered (shutting down, too many requests from this address): try again later,
      // over the same transport, not sooner than it asked.
      this.attempt = undefined
      if (link.refusal) this.reportError(link.refusal)
      return this.retryLater(info.retryAfterMs)
    }
    const next = this.attempt.order[0]
    if (next !== undefined) this.emit('fallback', { from: link.name, to: this.transports.name(next), reason: info.reason })
    this.tryNextTransport()
  }

  private retryLater(atLeastMs = 0): void {
    this.attempts++
    const max = this.options.maxReconnectAttempts ?? Number.POSITIVE_INFINITY
    if (this.options.reconnect === false || this.attempts > max) {
      const error = new RealtimeError('RT_001', this.options.reconnect === false ? 'could not connect' : `gave up after ${this.attempts - 1} reconnect attempts`)
      this.reportError(error)
      return this.giveUp(error)
    }
    const delay = Math.max(
      atLeastMs,
      backoffDelay(this.attempts - 1, {
        initialDelay: this.options.reconnectDelay ?? 1000,
        maxDelay: this.options.maxReconnectDelay ?? 30_000,
        random: this.options.random,
      }),
    )
    this.setState('reconnecting')
    this.emit('reconnecting', { attempt: this.attempts, delay })
    const generation = this.generation
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined
      if (generation === this.generation) void this.startAttempt()
    }, delay)
  }

  /**
   * Stop trying (refused credentials, a close that says not to come back, attempts exhausted).
   * What waits on a connection (subscribes, queued requests) is rejected with `error`: nothing
   * will happen to it until the application calls `connect()` again.
   */
  private giveUp(error?: RealtimeError): void {
    this.generation++
    this.stopTimers()
    this.setState('disconnected')
    if (!error) return
    this.requests.rejectQueued(error)
    this.registry.failWaiters(error)
  }

  /** A link produced `connected`: it becomes the connection (replacing the current one after an upgrade probe). */
  private adopt(link: Link, frame: ServerFrameOf<'connected'>): void {
    clearTimeout(link.timer)
    link.connected = true
    if (link.probe) this.probe = undefined
    else this.attempt = undefined
    const previous = this.current
    if (previous) this.dropConnection()
    this.current = link
    this.preferred = link.index
    this.attempts = 0
    this.credentials.accepted()
    this.transport = link.name
    this.connected(frame)
    // The old connection goes once the new one carries the subscriptions (what it still sent is replayed).
    previous?.transport.close(1000, 'switched transport')
  }

  /** A `connected` frame on the current link: a (new) hub connection. */
  private connected(frame: ServerFrameOf<'connected'>): void {
    this.requests.requeue()
    this.connectionId = frame.connectionId
    this.userId = frame.userId
    this.expiresAt = frame.expiresAt
    this.requests.maxMessageSize = frame.limits.maxMessageSize
    this.setState('connected')
    this.registry.resubscribe()
    this.requests.flush()
    this.registry.flushAcks()
    this.heartbeat.start()
    this.scheduleUpgrade()
    this.emit('connected', { connectionId: frame.connectionId, userId: frame.userId, transport: this.current!.name })
  }

  /** The current connection is gone (lost, closed by the hub, or replaced). */
  private dropConnection(): void {
    this.current = undefined
    this.transport = undefined
    this.heartbeat.stop()
    clearTimeout(this.upgradeTimer)
    this.requests.requeue()
    this.registry.lost()
  }

  private lost(info: TransportCloseInfo): void {
    const token = this.current?.token
    this.dropConnection()
    if (this.probe) {
      clearTimeout(this.probe.timer)
      this.probe.transport.close(1000, 'connection lost')
      this.probe = undefined
    }
    this.emit('disconnected', info)
    if (NO_RECONNECT.has(info.code) || (info.code === 4001 && !this.credentials.refreshable)) {
      const error = new RealtimeError(info.code === 4001 ? 'RT_002' : 'RT_001', `connection closed by the server (${info.code}${info.reason ? ` ${info.reason}` : ''})`)
      this.reportError(error)
      return this.giveUp(error)
    }
    if (this.options.reconnect === false) return this.giveUp(new RealtimeError('RT_001', `connection lost (${info.code}${info.reason ? ` ${info.reason}` : ''})`))
    if (info.code === 4001) {
      // Credentials expired or were revoked: the next connect needs a different token from the auth function.
      this.credentials.refused(token)
      this.reportError(new RealtimeError('RT_002', `connection closed by the server: credentials expired or refused (4001${info.reason ? ` ${info.reason}` : ''})`))
    } else this.attempts = 0
    this.retryLater(info.retryAfterMs)
  }

  // ---------------------------------------------------------------- upgrade back to the preferred transport

  private scheduleUpgrade(): void {
    clearTimeout(this.upgradeTimer)
    const interval = this.options.upgradeIntervalMs ?? 10_000
    if (!this.current || this.current.index === 0 || interval <= 0) return
    const generation = this.generation
    this.upgradeTimer = setTimeout(() => {
      if (generation === this.generation) void this.startProbe()
    }, interval)
  }

  private async startProbe(): Promise<void> {
    if (!this.current || this.probe) return
    const generation = this.generation
    let credentials: Credentials
    try {
      credentials = await this.credentials.get()
    } catch {
      return this.scheduleUpgrade()
    }
    if (generation !== this.generation || !this.current || this.probe) return
    this.probe = this.transports.open(0, credentials, true)
  }

  // ---------------------------------------------------------------- frames

  private onFrame(frame: ServerFrame): void {
    switch (frame.type) {
      case 'connected':
        return this.connected(frame)
      case 'subscribed':
        return this.registry.subscribed(frame)
      case 'unsubscribed':
        return this.registry.unsubscribed(frame)
      case 'message':
        this.registry.message(frame)
        return
      case 'error':
        return this.onError(frame)
      case 'auth:expiring':
        return this.credentials.expiring(frame)
      case 'pong':
        if (this.heartbeat.pong(frame.id)) return
        return this.requests.answer(frame)
      case 'presence:join':
      case 'presence:leave':
        this.registry.get(frame.channel)?.emitEvent(frame.type, frame.user)
        return
      case 'presence:update':
        this.registry.get(frame.channel)?.emitEvent('presence:update', frame.user)
        return this.requests.answer(frame)
      case 'typing':
        this.registry.get(frame.channel)?.emitEvent('typing', { userId: frame.userId, active: frame.active })
        return
      case 'receipt':
        this.registry.get(frame.channel)?.emitEvent('receipt', frame)
        return
      case 'query:snapshot':
      case 'query:changes':
        this.db?.frame(frame)
        return
      default:
        return this.requests.answer(frame)
    }
  }

  private onError(frame: ServerFrameOf<'error'>): void {
    const error = new RealtimeError(frame.code, frame.message, frame.details)
    if (this.requests.refused(frame, error)) return
    const ch = frame.channel !== undefined ? this.registry.get(frame.channel) : undefined
    this.reportError(error, ch)
  }

  // ---------------------------------------------------------------- state and errors

  private setState(state: ConnectionState): void {
    const previous = this.state
    if (previous === state) return
    this.state = state
    this.emit('state', state, previous)
  }

  private stopTimers(): void {
    clearTimeout(this.reconnectTimer)
    clearTimeout(this.upgradeTimer)
    this.heartbeat.stop()
    this.reconnectTimer = undefined
  }

  /** An error that belongs to no request: to the channel's `error` listeners if it has some, else to the client's. */
  private reportError(err: unknown, ch?: Channel): void {
    const error = err instanceof Error ? err : new Error(String(err))
    if (ch?.hasErrorListener()) ch.emitEvent('error', error)
    else this.emit('error', error)
  }
}
