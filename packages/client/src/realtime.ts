import {
  type ClientFrame,
  type MessageFrame,
  type Receiver,
  RealtimeError,
  utf8Length,
  type ServerFrame,
  type ServerFrameOf,
  createReceiver,
} from '@tidings/protocol'
import { backoffDelay } from './backoff.js'
import { Channel, type ChannelHost, type ChannelOptions, disposeSymbol } from './channel.js'
import { Emitter } from './emitter.js'
import { Outbox } from './outbox.js'
import { LongPollTransport } from './transports/long-poll.js'
import { SseTransport } from './transports/sse.js'
import type {
  ClientTransport,
  Credentials,
  EventSourceConstructorLike,
  FetchLike,
  TransportCloseInfo,
  TransportFactory,
  TransportName,
  TransportOptions,
  WebSocketConstructorLike,
} from './transports/types.js'
import { WebSocketTransport } from './transports/websocket.js'

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected'

export interface RealtimeOptions {
  /** The hub's prefix, e.g. `http://localhost:3000/realtime` (relative URLs resolve against the page in browsers). */
  readonly url: string
  /**
   * A token, or a function (sync or async) called on every (re)connect, on `auth:expiring` and by
   * `reauthenticate()` to get a fresh one. Only a function lets credentials be refreshed.
   */
  readonly auth?: string | (() => string | Promise<string>) | undefined
  readonly apiKey?: string | undefined
  /** Connect at construction. Default true. */
  readonly autoConnect?: boolean | undefined
  /** Reconnect automatically after a lost connection or a failed attempt. Default true. */
  readonly reconnect?: boolean | undefined
  /** Backoff base, ms (full jitter: attempt n waits a random time below min(max, base × 2^n)). Default 1000. */
  readonly reconnectDelay?: number | undefined
  /** Default 30 000. */
  readonly maxReconnectDelay?: number | undefined
  /** Failed attempts in a row before giving up (state `disconnected`). Default Infinity. */
  readonly maxReconnectAttempts?: number | undefined
  /** In order of preference; the next one is tried when one cannot open. Default websocket, sse, long-poll. */
  readonly transports?: ReadonlyArray<TransportName | TransportFactory> | undefined
  /** A WebSocket implementation (browsers: the global one; Node 20: the `ws` package). */
  readonly WebSocket?: WebSocketConstructorLike | undefined
  readonly fetch?: FetchLike | undefined
  readonly EventSource?: EventSourceConstructorLike | undefined
  /** Send cookies with cross-origin HTTP transports. */
  readonly withCredentials?: boolean | undefined
  /** Most sends kept while disconnected; further ones reject with RT_006. Default 100. */
  readonly outboxLimit?: number | undefined
  /** Acknowledgments are batched and sent at most this often, per channel. Default 50. */
  readonly ackIntervalMs?: number | undefined
  /** While on a fallback transport, try the preferred one again this often (0: never). Default 10 000. */
  readonly upgradeIntervalMs?: number | undefined
  /** A transport that has not produced `connected` by then counts as failed. Default 10 000. */
  readonly connectTimeoutMs?: number | undefined
  /** Send a `ping` this often while connected (0: never). Default 25 000. */
  readonly heartbeatIntervalMs?: number | undefined
  /** A `ping` unanswered for this long closes the connection (and reconnects). Default 10 000. */
  readonly heartbeatTimeoutMs?: number | undefined
  /**
   * A request (send, presence, history, subscribe, auth…) unanswered this long after it went out
   * on a connection rejects with `RT_001` (`details.timeout: true`). Time spent queued while
   * disconnected does not count. Default 10 000.
   */
  readonly requestTimeoutMs?: number | undefined
  /** HTTP transports: how long one HTTP request may take (a poll: this plus the server's hold). Default 15 000. */
  readonly httpTimeoutMs?: number | undefined
  /**
   * Browsers: on `pagehide` close the connection and release HTTP sessions (DELETE with
   * `keepalive`), so a closed tab does not hold the user's connection slots; reconnect on
   * `pageshow` when the page comes back from the back/forward cache. Default true.
   */
  readonly releaseOnPageHide?: boolean | undefined
  /** Source of randomness for the backoff jitter. Default `Math.random`. */
  readonly random?: (() => number) | undefined
}

export interface RealtimeEvents {
  state: (state: ConnectionState, previous: ConnectionState) => void
  /** A hub connection is ready (also after each reconnect and after switching transport). */
  connected: (info: { connectionId: string; userId: string | undefined; transport: string }) => void
  /** The connection was lost or closed. */
  disconnected: (info: { code: number; reason: string }) => void
  reconnecting: (info: { attempt: number; delay: number }) => void
  /** Errors that belong to no request: refused connections, errors without request id, listeners that threw. */
  error: (error: Error) => void
  /** Messages sent to this user or connection rather than to a channel (e.g. `notifications:badge`). */
  message: (message: MessageFrame) => void
  /** Credentials were refreshed on the open connection (after `auth:expiring` or `reauthenticate()`). */
  authenticated: (info: { userId: string | undefined; expiresAt: number | undefined }) => void
  /** A transport could not be used and the next one is tried (e.g. no WebSocket in Node without `ws`). */
  fallback: (info: { from: string; to: string; reason: string }) => void
}

type PendingKind = 'subscribe' | 'unsubscribe' | 'request' | 'auth'

interface Pending {
  readonly id: number
  readonly kind: PendingKind
  readonly frame: ClientFrame
  readonly channel?: Channel | undefined
  resolve(frame: ServerFrame): void
  reject(error: Error): void
  /** RT_006 retries so far. */
  retries: number
  /** Timeout of the request while it is out on a connection. */
  timer?: ReturnType<typeof setTimeout> | undefined
  /** Answered, rejected or timed out: late answers and scheduled retries are ignored. */
  settled?: boolean
}

interface OutboxEntry {
  readonly frame: ClientFrame
  readonly pending?: Pending | undefined
}

interface Link {
  readonly transport: ClientTransport
  readonly name: string
  readonly index: number
  readonly probe: boolean
  /** The token it was opened with. */
  readonly token: string | undefined
  connected: boolean
  refusal: RealtimeError | undefined
  timer: ReturnType<typeof setTimeout> | undefined
}

const BUILT_IN: Record<TransportName, (o: TransportOptions) => ClientTransport> = {
  websocket: (o) => new WebSocketTransport(o),
  sse: (o) => new SseTransport(o),
  'long-poll': (o) => new LongPollTransport(o),
}

/** Closes after which reconnecting is pointless. */
const NO_RECONNECT = new Set([4000, 4008])
/** The request timeout's default, ms. */
const REQUEST_TIMEOUT = 10_000
const MAX_RATE_RETRIES = 5

/**
 * A Tidings client: one hub connection (over WebSocket, SSE or long-poll, with fallback and
 * upgrade), automatic reconnect with backoff, and channels that resume where they were.
 */
export class Realtime extends Emitter<RealtimeEvents> {
  state: ConnectionState = 'idle'
  /** The transport of the current connection, undefined while not connected. */
  transport: string | undefined
  connectionId: string | undefined
  /** The hub's `maxMessageSize`, from its `connected` frame. */
  private maxMessageSize: number | undefined
  userId: string | undefined
  /** When the connection's credentials expire (ms since the epoch), if the hub said. */
  expiresAt: number | undefined

  private readonly options: RealtimeOptions
  private readonly factories: TransportFactory[]
  private readonly transportOptions: TransportOptions
  private readonly channels = new Map<string, Channel>()
  private readonly receiver: Receiver
  private readonly outbox: Outbox<OutboxEntry>
  private readonly pending = new Map<number, Pending>()
  private readonly acks = new Map<string, number>()
  private readonly host: ChannelHost
  private readonly keyPrefix = randomKey()
  private nextId = 1
  private keySeq = 0
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
  private ackTimer: ReturnType<typeof setTimeout> | undefined
  private upgradeTimer: ReturnType<typeof setTimeout> | undefined
  private heartbeatTimer: ReturnType<typeof setTimeout> | undefined
  private pingId: number | undefined
  /** A refresh in flight (one at a time). */
  private refreshing: Promise<{ userId: string | undefined; expiresAt: number | undefined }> | undefined
  /** The token the hub refused last (4001 / RT_002): not offered again. */
  private refusedToken: string | undefined
  private warned = false
  private pageHidden = false
  private readonly detachPageEvents: (() => void) | undefined

  constructor(options: RealtimeOptions) {
    super()
    this.options = options
    const names = options.transports ?? ['websocket', 'sse', 'long-poll']
    this.factories = names.map((t) => (typeof t === 'string' ? { name: t, create: BUILT_IN[t] } : t))
    if (this.factories.length === 0 || this.factories.some((f) => typeof f.create !== 'function')) {
      throw new TypeError(`transports: expected names among ${Object.keys(BUILT_IN).join(', ')} or { name, create } factories`)
    }
    this.transportOptions = {
      WebSocket: options.WebSocket,
      EventSource: options.EventSource,
      fetch: options.fetch,
      withCredentials: options.withCredentials,
      requestTimeoutMs: options.httpTimeoutMs,
      warn: (message) => {
        if (this.warned || this.listenerCount('fallback') > 0) return
        this.warned = true
        console.warn(`[tidings] ${message}`)
      },
    }
    this.outbox = new Outbox(options.outboxLimit ?? 100)
    this.receiver = createReceiver({
      deliver: (m) => this.deliver(m),
      ack: (channel, offset) => this.queueAck(channel, offset),
    })
    this.host = {
      wantSubscribed: (ch) => this.sendSubscribe(ch),
      unsubscribeChannel: (ch) => this.unsubscribeChannel(ch),
      request: <F extends ServerFrame>(frame: ClientFrame) => this.request(frame) as Promise<F>,
      sendVolatile: (frame) => {
        if (this.current?.connected) this.current.transport.send(frame)
      },
      sendQueued: (frame) => {
        try {
          this.enqueue({ frame })
        } catch (err) {
          this.reportError(err)
        }
      },
      idempotencyKey: () => `${this.keyPrefix}-${(++this.keySeq).toString(36)}`,
      reportError: (err, ch) => this.reportError(err, ch),
      disposed: (ch) => {
        if (this.channels.get(ch.name) === ch) this.channels.delete(ch.name)
      },
    }
    this.detachPageEvents = options.releaseOnPageHide === false ? undefined : this.watchPage()
    if (options.autoConnect !== false) this.connect()
  }

  /** Browsers: give the server its sessions back when the page goes away; come back with it. */
  private watchPage(): (() => void) | undefined {
    const target = globalThis as { addEventListener?: (type: string, fn: (e: { persisted?: boolean }) => void) => void; removeEventListener?: (type: string, fn: (e: { persisted?: boolean }) => void) => void; document?: unknown }
    if (typeof target.addEventListener !== 'function' || target.document === undefined) return undefined
    const hide = () => {
      if (this.state === 'idle' || this.state === 'disconnected') return
      this.pageHidden = true
      this.disconnect()
    }
    const show = (e: { persisted?: boolean }) => {
      if (e.persisted && this.pageHidden) {
        this.pageHidden = false
        this.connect()
      }
    }
    target.addEventListener('pagehide', hide)
    target.addEventListener('pageshow', show)
    return () => {
      target.removeEventListener?.('pagehide', hide)
      target.removeEventListener?.('pageshow', show)
    }
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
    if (token === undefined && this.refreshing) return this.refreshing
    const run = this.refresh(token).finally(() => {
      if (this.refreshing === run) this.refreshing = undefined
    })
    if (token === undefined) this.refreshing = run
    return run
  }

  private async refresh(given?: string): Promise<{ userId: string | undefined; expiresAt: number | undefined }> {
    const auth = this.options.auth
    let token = given
    if (token === undefined) {
      if (typeof auth !== 'function') throw new RealtimeError('RT_002', 'cannot refresh credentials: the auth option is not a function (pass a token to reauthenticate(), or a function as auth)')
      try {
        token = await auth()
      } catch (err) {
        throw new RealtimeError('RT_002', `auth function failed: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
    if (!token) throw new RealtimeError('RT_002', 'the auth function gave no token')
    if (!this.current || this.state !== 'connected') throw new RealtimeError('RT_001', 'not connected: credentials are sent on the next connect')
    const id = this.nextId++
    let pending!: Pending
    const answer = new Promise<ServerFrame>((resolve, reject) => {
      pending = { id, kind: 'auth', frame: { type: 'auth', id, token: token! } as ClientFrame, resolve, reject, retries: 0 }
    })
    this.dispatch(pending)
    const frame = (await answer) as ServerFrameOf<'authenticated'>
    this.expiresAt = frame.expiresAt
    const info = { userId: frame.userId ?? this.userId, expiresAt: frame.expiresAt }
    this.emit('authenticated', info)
    return info
  }

  /** The hub says the credentials are about to expire: refresh them, or say why that is not possible. */
  private onExpiring(frame: ServerFrameOf<'auth:expiring'>): void {
    this.expiresAt = frame.expiresAt
    const inMs = Math.max(0, frame.closesAt - Date.now())
    if (typeof this.options.auth !== 'function') {
      this.reportError(new RealtimeError('RT_002', `credentials expire and cannot be refreshed (the auth option is not a function): the connection closes in ${inMs} ms`, { expiresAt: frame.expiresAt, closesAt: frame.closesAt }))
      return
    }
    this.reauthenticate().catch((err: unknown) => {
      const e = err instanceof RealtimeError ? err : new RealtimeError('RT_002', String(err))
      this.reportError(new RealtimeError(e.code, `could not refresh credentials: ${e.message}`, { ...e.details, closesAt: frame.closesAt }))
    })
  }

  /** Stop for good: disconnect, forget the channels and stop watching the page. */
  close(): void {
    this.disconnect()
    this.detachPageEvents?.()
    for (const ch of [...this.channels.values()]) ch.dispose()
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
    let ch = this.channels.get(name)
    if (!ch) {
      ch = new Channel(name, options ?? {}, this.host)
      this.channels.set(name, ch)
    } else if (options) ch.options = { ...options }
    return ch
  }

  /** Sends waiting for a connection. */
  get queued(): number {
    return this.outbox.size
  }

  // ---------------------------------------------------------------- connecting

  private async credentials(): Promise<Credentials> {
    const auth = this.options.auth
    const token = typeof auth === 'function' ? await auth() : auth
    if (token && typeof auth === 'function' && token === this.refusedToken) {
      // The function gave the token the hub just refused: connecting with it would be refused again.
      throw new Error('it returned the token the hub refused last time')
    }
    return { token: token || undefined, apiKey: this.options.apiKey }
  }

  private async startAttempt(): Promise<void> {
    const generation = this.generation
    let credentials: Credentials
    try {
      credentials = await this.credentials()
    } catch (err) {
      if (generation !== this.generation) return
      this.reportError(new RealtimeError('RT_002', `auth function failed: ${err instanceof Error ? err.message : String(err)}`))
      return this.retryLater()
    }
    if (generation !== this.generation) return
    const n = this.factories.length
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
    attempt.link = this.open(index, attempt.credentials, false)
  }

  private open(index: number, credentials: Credentials, probe: boolean): Link {
    const factory = this.factories[index]!
    let transport: ClientTransport
    try {
      transport = factory.create(this.transportOptions)
    } catch (err) {
      transport = failedTransport(factory.name, err)
    }
    const link: Link = { transport, name: factory.name, index, probe, token: credentials.token, connected: false, refusal: undefined, timer: undefined }
    const timeout = this.options.connectTimeoutMs ?? 10_000
    link.timer = setTimeout(() => {
      transport.close(1000, 'connect timeout')
      this.linkClosed(link, { code: 1006, reason: `${factory.name}: no connection within ${timeout} ms` })
    }, timeout)
    try {
      transport.connect(this.options.url, credentials, {
        open: () => {},
        frame: (frame) => this.linkFrame(link, frame),
        close: (info) => this.linkClosed(link, info),
      })
    } catch (err) {
      queueMicrotask(() => this.linkClosed(link, { code: 1006, reason: err instanceof Error ? err.message : String(err) }))
    }
    return link
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
      this.refusedToken = link.token
      const error = link.refusal ?? new RealtimeError('RT_002', info.reason || 'authentication failed')
      this.reportError(error)
      // A token function may give a fresh token next time; a fixed token will not change.
      return typeof this.options.auth === 'function' ? this.retryLater() : this.giveUp(error)
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
    if (next !== undefined) this.emit('fallback', { from: link.name, to: this.factories[next]!.name, reason: info.reason })
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
    for (const entry of this.outbox.remove((e) => e.pending !== undefined)) entry.pending!.reject(error)
    for (const ch of this.channels.values()) ch.failWaiters(error)
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
    this.refusedToken = undefined
    this.transport = link.name
    this.connected(frame)
    // The old connection goes once the new one carries the subscriptions (what it still sent is replayed).
    previous?.transport.close(1000, 'switched transport')
  }

  /** A `connected` frame on the current link: a (new) hub connection. */
  private connected(frame: ServerFrameOf<'connected'>): void {
    if (this.pending.size > 0) this.requeuePending()
    this.connectionId = frame.connectionId
    this.userId = frame.userId
    this.expiresAt = frame.expiresAt
    this.maxMessageSize = frame.limits.maxMessageSize
    this.setState('connected')
    for (const ch of this.channels.values()) {
      ch.subscribeId = undefined
      if (ch.wanted) this.sendSubscribe(ch)
    }
    for (const entry of this.outbox.drain()) this.sendEntry(entry)
    this.flushAcks()
    this.startHeartbeat()
    this.scheduleUpgrade()
    this.emit('connected', { connectionId: frame.connectionId, userId: frame.userId, transport: this.current!.name })
  }

  /** The current connection is gone (lost, closed by the hub, or replaced). */
  private dropConnection(): void {
    this.current = undefined
    this.transport = undefined
    this.pingId = undefined
    clearTimeout(this.heartbeatTimer)
    clearTimeout(this.upgradeTimer)
    this.requeuePending()
    for (const ch of this.channels.values()) ch.handleLost()
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
    if (NO_RECONNECT.has(info.code) || (info.code === 4001 && typeof this.options.auth !== 'function')) {
      const error = new RealtimeError(info.code === 4001 ? 'RT_002' : 'RT_001', `connection closed by the server (${info.code}${info.reason ? ` ${info.reason}` : ''})`)
      this.reportError(error)
      return this.giveUp(error)
    }
    if (this.options.reconnect === false) return this.giveUp(new RealtimeError('RT_001', `connection lost (${info.code}${info.reason ? ` ${info.reason}` : ''})`))
    if (info.code === 4001) {
      // Credentials expired or were revoked: the next connect needs a different token from the auth function.
      this.refusedToken = token
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
      credentials = await this.credentials()
    } catch {
      return this.scheduleUpgrade()
    }
    if (generation !== this.generation || !this.current || this.probe) return
    this.probe = this.open(0, credentials, true)
  }

  // ---------------------------------------------------------------- frames

  private onFrame(frame: ServerFrame): void {
    switch (frame.type) {
      case 'connected':
        return this.connected(frame)
      case 'subscribed':
        return this.onSubscribed(frame)
      case 'unsubscribed':
        return this.onUnsubscribed(frame)
      case 'message':
        this.receiver.message(frame)
        return
      case 'error':
        return this.onError(frame)
      case 'auth:expiring':
        return this.onExpiring(frame)
      case 'pong':
        if (frame.id !== undefined && frame.id === this.pingId) {
          this.pingId = undefined
          return
        }
        return this.answer(frame)
      case 'presence:join':
      case 'presence:leave':
        this.channels.get(frame.channel)?.emitEvent(frame.type, frame.user)
        return
      case 'presence:update':
        this.channels.get(frame.channel)?.emitEvent('presence:update', frame.user)
        return this.answer(frame)
      case 'typing':
        this.channels.get(frame.channel)?.emitEvent('typing', { userId: frame.userId, active: frame.active })
        return
      case 'receipt':
        this.channels.get(frame.channel)?.emitEvent('receipt', frame)
        return
      default:
        return this.answer(frame)
    }
  }

  /** Resolve the request this frame answers. */
  private answer(frame: ServerFrame): void {
    const id = 'id' in frame ? frame.id : undefined
    if (typeof id !== 'number') return
    const p = this.pending.get(id)
    if (!p) return
    this.pending.delete(id)
    this.settle(p)
    p.resolve(frame)
  }

  /** The request is done: stop its timeout; later answers and retries leave it alone. */
  private settle(p: Pending): void {
    clearTimeout(p.timer)
    p.timer = undefined
    p.settled = true
  }

  /** Start a request's timeout when it goes out (kept across RT_006 retries, stopped when it is requeued). */
  private armTimeout(p: Pending): void {
    if (p.timer !== undefined) return
    const ms = this.options.requestTimeoutMs ?? REQUEST_TIMEOUT
    if (!(ms > 0) || !Number.isFinite(ms)) return
    p.timer = setTimeout(() => {
      p.timer = undefined
      if (p.settled) return
      const what = p.kind === 'request' || p.kind === 'auth' ? `'${p.frame.type}' request` : `${p.kind} of '${p.channel?.name ?? ''}'`
      const error = new RealtimeError('RT_001', `no answer to the ${what} within ${ms} ms`, { timeout: true, timeoutMs: ms })
      if (p.kind === 'subscribe') {
        // The subscribe stays in flight (a late answer still completes it); whoever waits for it is told.
        p.channel?.failWaiters(error)
        return
      }
      this.pending.delete(p.id)
      p.settled = true
      if (p.kind === 'unsubscribe') p.resolve({ type: 'unsubscribed', channel: p.channel?.name ?? '' })
      else p.reject(error)
    }, ms)
  }

  private onSubscribed(frame: ServerFrameOf<'subscribed'>): void {
    const p = typeof frame.id === 'number' ? this.pending.get(frame.id) : undefined
    if (p) {
      this.pending.delete(p.id)
      this.settle(p)
    }
    this.receiver.subscribed(frame)
    const ch = this.channels.get(frame.channel)
    if (!ch || !ch.wanted) return
    if (p && ch.subscribeId !== undefined && ch.subscribeId !== p.id) return // an older subscribe; a newer one is on its way
    if (p) ch.subscribeId = undefined
    ch.handleSubscribed(frame)
  }

  private onUnsubscribed(frame: ServerFrameOf<'unsubscribed'>): void {
    const p = typeof frame.id === 'number' ? this.pending.get(frame.id) : undefined
    const ch = this.channels.get(frame.channel)
    if (p) {
      this.pending.delete(p.id)
      this.settle(p)
      p.resolve(frame)
      // Subscribed again meanwhile: that subscribe (sent after this unsubscribe) starts afresh.
      if (!ch?.wanted) this.receiver.forget(frame.channel)
      ch?.handleUnsubscribed(undefined, false)
      return
    }
    this.receiver.forget(frame.channel)
    this.acks.delete(frame.channel)
    ch?.handleUnsubscribed(frame.reason, true)
  }

  private onError(frame: ServerFrameOf<'error'>): void {
    const error = new RealtimeError(frame.code, frame.message, frame.details)
    const p = typeof frame.id === 'number' ? this.pending.get(frame.id) : undefined
    if (!p) {
      const ch = frame.channel !== undefined ? this.channels.get(frame.channel) : undefined
      return this.reportError(error, ch)
    }
    this.pending.delete(p.id)
    // Rate limited: the frame was not handled, so sending it again is safe. The request's timeout
    // keeps running meanwhile: a request retried past it rejects (once) instead of hanging.
    const retryAfter = frame.details?.['retryAfterMs']
    if (frame.code === 'RT_006' && typeof retryAfter === 'number' && p.retries < MAX_RATE_RETRIES) {
      p.retries++
      const link = this.current
      this.pending.set(p.id, p)
      setTimeout(() => {
        if (p.settled || this.pending.get(p.id) !== p) return
        this.pending.delete(p.id)
        if (p.kind === 'subscribe' && (this.current !== link || p.channel?.subscribeId !== p.id)) return
        if (this.current && this.state === 'connected') this.dispatch(p)
        else if (p.kind === 'request') {
          clearTimeout(p.timer)
          p.timer = undefined
          this.outbox.restore([{ frame: p.frame, pending: p }])
        }
      }, retryAfter)
      return
    }
    this.settle(p)
    if (p.kind === 'subscribe' && p.channel) {
      if (p.channel.subscribeId === p.id) p.channel.subscribeId = undefined
      p.channel.handleRefused(error)
      return
    }
    p.reject(error)
  }

  private deliver(message: MessageFrame): void {
    const ch = message.channel !== undefined ? this.channels.get(message.channel) : undefined
    if (ch) ch.handleMessage(message)
    else this.emit('message', message)
  }

  // ---------------------------------------------------------------- sending

  private sendSubscribe(ch: Channel): void {
    if (!this.current || this.state !== 'connected' || ch.subscribeId !== undefined || !ch.wanted) return
    const o = ch.options
    const since = this.receiver.position(ch.name)
    const frame: ClientFrame = {
      type: 'subscribe',
      id: this.nextId++,
      channel: ch.name,
      ...(o.filter !== undefined ? { filter: o.filter } : {}),
      ...(o.presence !== undefined ? { presence: o.presence } : {}),
      ...(o.state !== undefined ? { state: o.state } : {}),
      ...(o.auth !== undefined ? { auth: o.auth } : {}),
      ...(since ? { since } : {}),
    }
    ch.subscribeId = frame.id as number
    this.dispatch({ id: frame.id as number, kind: 'subscribe', frame, channel: ch, resolve: () => {}, reject: () => {}, retries: 0 })
  }

  private unsubscribeChannel(ch: Channel): Promise<void> {
    this.acks.delete(ch.name)
    if (!this.current || this.state !== 'connected' || ch.state === 'unsubscribed') {
      this.receiver.forget(ch.name)
      ch.subscribeId = undefined
      ch.handleUnsubscribed(undefined, false)
      return Promise.resolve()
    }
    ch.subscribeId = undefined
    return new Promise((resolve) => {
      const id = this.nextId++
      this.dispatch({ id, kind: 'unsubscribe', frame: { type: 'unsubscribe', id, channel: ch.name }, channel: ch, resolve: () => resolve(), reject: () => resolve(), retries: 0 })
    })
  }

  /** A request: sent now, or queued until connected. Throws RT_006 when the outbox is full. */
  private request(frame: ClientFrame): Promise<ServerFrame> {
    const id = this.nextId++
    const full = { ...frame, id } as ClientFrame
    let pending!: Pending
    const promise = new Promise<ServerFrame>((resolve, reject) => {
      pending = { id, kind: 'request', frame: full, resolve, reject, retries: 0 }
    })
    this.enqueue({ frame: full, pending })
    return promise
  }

  private enqueue(entry: OutboxEntry): void {
    if (this.current && this.state === 'connected') this.sendEntry(entry)
    else this.outbox.push(entry)
  }

  private sendEntry(entry: OutboxEntry): void {
    if (entry.pending) this.dispatch(entry.pending)
    else this.current?.transport.send(entry.frame)
  }

  private dispatch(p: Pending): void {
    if (!this.current) return
    // The hub answers a frame this large without its request id (it does not decode it), so the
    // request would never settle: refuse it here, with the same error the hub would give.
    const max = this.maxMessageSize
    if (max !== undefined) {
      const bytes = utf8Length(JSON.stringify(p.frame))
      if (bytes > max) {
        this.settle(p)
        p.reject(new RealtimeError('RT_005', `frame of ${bytes} bytes is over the limit of ${max}`, { limit: max }))
        return
      }
    }
    this.pending.set(p.id, p)
    this.armTimeout(p)
    this.current.transport.send(p.frame)
  }

  /**
   * The connection is gone: its unanswered requests go back to the front of the outbox (a
   * publish carries its idempotency key, so the hub will not publish it twice); subscribes are
   * made again from the channels; unsubscribes are done (the subscription went with the connection).
   */
  private requeuePending(): void {
    const again: OutboxEntry[] = []
    for (const p of [...this.pending.values()].sort((a, b) => a.id - b.id)) {
      // Its timeout starts again when it is sent on the next connection.
      clearTimeout(p.timer)
      p.timer = undefined
      if (p.kind === 'auth') {
        // Not sent again: the next connection is opened with a fresh token from the auth function.
        p.settled = true
        p.reject(new RealtimeError('RT_001', 'connection lost before the hub answered the auth frame'))
      } else if (p.kind === 'request') again.push({ frame: p.frame, pending: p })
      else if (p.kind === 'unsubscribe') {
        if (p.channel && !p.channel.wanted) this.receiver.forget(p.channel.name)
        p.resolve({ type: 'unsubscribed', channel: p.channel?.name ?? '' })
      }
    }
    this.pending.clear()
    this.outbox.restore(again)
  }

  // ---------------------------------------------------------------- acknowledgments

  private queueAck(channel: string, offset: number): void {
    const previous = this.acks.get(channel)
    if (previous === undefined || offset > previous) this.acks.set(channel, offset)
    if (this.ackTimer === undefined) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = undefined
        this.flushAcks()
      }, this.options.ackIntervalMs ?? 50)
    }
  }

  /** Send the batched acks (kept while disconnected: they go after the resubscribes). */
  private flushAcks(): void {
    if (!this.current || this.state !== 'connected') return
    for (const [channel, offset] of this.acks) this.current.transport.send({ type: 'ack', channel, offset })
    this.acks.clear()
  }

  // ---------------------------------------------------------------- heartbeat

  private startHeartbeat(): void {
    clearTimeout(this.heartbeatTimer)
    this.pingId = undefined
    const interval = this.options.heartbeatIntervalMs ?? 25_000
    if (interval <= 0) return
    const link = this.current
    this.heartbeatTimer = setTimeout(() => {
      if (this.current !== link || !link) return
      const id = (this.pingId = this.nextId++)
      link.transport.send({ type: 'ping', id })
      this.heartbeatTimer = setTimeout(() => {
        if (this.current !== link) return
        if (this.pingId !== id) return this.startHeartbeat()
        link.transport.close(1000, 'heartbeat timeout')
        this.lost({ code: 1006, reason: 'no answer to ping' })
      }, this.options.heartbeatTimeoutMs ?? 10_000)
    }, interval)
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
    clearTimeout(this.heartbeatTimer)
    this.reconnectTimer = undefined
  }

  /** An error that belongs to no request: to the channel's `error` listeners if it has some, else to the client's. */
  private reportError(err: unknown, ch?: Channel): void {
    const error = err instanceof Error ? err : new Error(String(err))
    if (ch?.hasErrorListener()) ch.emitEvent('error', error)
    else this.emit('error', error)
  }
}

function randomKey(): string {
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto
  const bytes = new Uint8Array(9)
  if (crypto?.getRandomValues) crypto.getRandomValues(bytes)
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256)
  return Array.from(bytes, (b) => b.toString(36).padStart(2, '0')).join('')
}

/** Stands in for a transport whose factory threw: it fails to open. */
function failedTransport(name: string, err: unknown): ClientTransport {
  return {
    name,
    connect: (_url, _credentials, handlers) => {
      queueMicrotask(() => handlers.close({ code: 1006, reason: err instanceof Error ? err.message : String(err) }))
    },
    send: () => {},
    close: () => {},
  }
}
