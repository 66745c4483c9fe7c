import { type ClientFrame, type LiveQuery, type LiveResume, type MessageFrame, type Receiver, RealtimeError, type ServerFrame, type ServerFrameOf, createReceiver } from '@tidings/protocol'
import { Acks } from './acks.js'
import { backoffDelay } from './backoff.js'
import { Channel, type ChannelHost, type ChannelOptions, type Revision, toRevision } from './channel.js'
import type { Line, Requests } from './requests.js'

/** What the registry reports to its client. */
export interface RegistryEvents {
  /** A message to this user or connection rather than to a channel. */
  message(message: MessageFrame): void
  /** A revision event of a channel that has no handle here. */
  revision(revision: Revision, frame: MessageFrame): void
  /** An error that belongs to no request (to the channel's listeners, if it has some). */
  error(err: unknown, channel?: Channel): void
  /** The connection channels subscribe on (for channel `auth` functions). */
  identity(): { connectionId: string | undefined; userId: string | undefined }
}

/** Options the registry reads. */
export interface RegistryOptions {
  readonly ackIntervalMs?: number | undefined
  readonly reconnectDelay?: number | undefined
  readonly maxReconnectDelay?: number | undefined
  readonly random?: (() => number) | undefined
}

/** Failures of a channel's `auth` function in a row before the channel stops trying. */
export const MAX_AUTH_FAILURES = 5
/** A subscription that expires sooner than this after it was made counts as short-lived (ms). */
export const SHORT_LIVED_MS = 1000
/** Short-lived subscriptions in a row before the channel stops subscribing again. */
export const MAX_SHORT_EXPIRIES = 5

/**
 * The client's channels by name: their subscribes (made again on every connection, resuming
 * from the receiver's position), unsubscribes, the messages and acknowledgments of each.
 */
export class ChannelRegistry {
  private readonly channels = new Map<string, Channel>()
  private readonly receiver: Receiver
  private readonly acks: Acks
  private readonly host: ChannelHost
  private readonly keyPrefix = randomKey()
  private readonly events: RegistryEvents
  private keySeq = 0

  constructor(
    private readonly line: Line,
    private readonly requests: Requests,
    private readonly options: RegistryOptions,
    events: RegistryEvents,
  ) {
    this.events = events
    this.acks = new Acks(line, options)
    this.receiver = createReceiver({
      deliver: (m) => {
        const ch = m.channel !== undefined ? this.channels.get(m.channel) : undefined
        if (ch) return ch.handleMessage(m)
        const revision = m.channel !== undefined ? toRevision(m.channel, m) : undefined
        if (revision) events.revision(revision, m)
        else events.message(m)
      },
      ack: (channel, offset) => this.acks.add(channel, offset),
    })
    this.host = {
      wantSubscribed: (ch) => this.subscribe(ch),
      unsubscribeChannel: (ch) => this.unsubscribe(ch),
      request: <F extends ServerFrame>(frame: ClientFrame) => requests.request(frame) as Promise<F>,
      // Only a connection in use is ever current.
      sendVolatile: (frame) => line.current()?.transport.send(frame),
      sendQueued: (frame) => {
        try {
          requests.queue(frame)
        } catch (err) {
          events.error(err)
        }
      },
      idempotencyKey: () => `${this.keyPrefix}-${(++this.keySeq).toString(36)}`,
      reportError: (err, ch) => events.error(err, ch),
      identity: () => events.identity(),
      disposed: (ch) => {
        if (this.channels.get(ch.name) === ch) this.channels.delete(ch.name)
      },
    }
  }

  get(name: string): Channel | undefined {
    return this.channels.get(name)
  }

  /** The channel of that name, created on first use; options given later replace the earlier ones. */
  channel(name: string, options?: ChannelOptions): Channel {
    let ch = this.channels.get(name)
    if (!ch) {
      ch = new Channel(name, options ?? {}, this.host)
      this.channels.set(name, ch)
    } else if (options) ch.options = { ...options }
    return ch
  }

  /** A `message` frame: to its channel once and in order (the receiver holds, dedups and acks). */
  message(frame: MessageFrame): void {
    this.receiver.message(frame)
  }

  /** A new connection: every wanted channel subscribes again, from where its stream was. */
  resubscribe(): void {
    for (const ch of this.channels.values()) {
      ch.subscribeId = undefined
      if (ch.wanted) this.subscribe(ch)
    }
  }

  /** Send the batched acks (after the resubscribes of a new connection). */
  flushAcks(): void {
    this.acks.flush()
  }

  /** The connection is gone: the subscriptions will be made again. */
  lost(): void {
    for (const ch of this.channels.values()) ch.handleLost()
  }

  /** The client gave up connecting: waiting `subscribe()` calls fail. */
  failWaiters(error: Error): void {
    for (const ch of this.channels.values()) ch.failWaiters(error)
  }

  disposeAll(): void {
    for (const ch of [...this.channels.values()]) ch.dispose()
  }

  subscribed(frame: ServerFrameOf<'subscribed'>): void {
    const p = this.requests.take(frame.id)
    this.receiver.subscribed(frame)
    const ch = this.channels.get(frame.channel)
    if (!ch || !ch.wanted) return
    if (p && ch.subscribeId !== undefined && ch.subscribeId !== p.id) return // an older subscribe; a newer one is on its way
    if (p) ch.subscribeId = undefined
    ch.handleSubscribed(frame)
  }

  unsubscribed(frame: ServerFrameOf<'unsubscribed'>): void {
    const p = this.requests.take(frame.id)
    const ch = this.channels.get(frame.channel)
    if (p) {
      p.resolve(frame)
      // Subscribed again meanwhile: that subscribe (sent after this unsubscribe) starts afresh.
      if (!ch?.wanted) this.receiver.forget(frame.channel)
      ch?.handleUnsubscribed(undefined, false)
      return
    }
    this.acks.delete(frame.channel)
    if (frame.reason === 'expired' && ch?.wanted && !ch.disposed) return this.expired(ch)
    this.receiver.forget(frame.channel)
    ch?.handleUnsubscribed(frame.reason, true)
  }

  /**
   * The hub ended the subscription because its grant (e.g. a channel token) expired: authorize
   * again and subscribe from the receiver's position, so the replay fills what was sent
   * meanwhile and nothing is processed twice. A subscription that expires right after it was
   * made (a token endpoint handing out stale tokens, clock skew) makes the next one wait with
   * backoff; after `MAX_SHORT_EXPIRIES` of them in a row the channel stops.
   */
  private expired(ch: Channel): void {
    ch.subscribeId = undefined
    ch.shortExpiries = Date.now() - ch.subscribedAt < SHORT_LIVED_MS ? ch.shortExpiries + 1 : 0
    if (ch.shortExpiries > MAX_SHORT_EXPIRIES) {
      this.receiver.forget(ch.name)
      return ch.abandon(new RealtimeError('RT_003', `the grant of '${ch.name}' expired ${ch.shortExpiries} times in a row right after subscribing: not subscribing again (expired tokens? a clock off?)`, { channel: ch.name }), 'expired')
    }
    ch.handleLost()
    if (ch.shortExpiries === 0) return this.subscribe(ch)
    this.later(ch, ch.shortExpiries - 1)
  }

  /** Subscribe again after a backoff (equal jitter: at least half the cap). */
  private later(ch: Channel, attempt: number): void {
    ch.clearRetry()
    const delay = backoffDelay(attempt, {
      initialDelay: this.options.reconnectDelay ?? 1000,
      maxDelay: this.options.maxReconnectDelay ?? 30_000,
      random: () => 0.5 + (this.options.random ?? Math.random)() / 2,
    })
    ch.retryTimer = setTimeout(() => {
      ch.retryTimer = undefined
      this.subscribe(ch)
    }, delay)
  }

  /**
   * Subscribe on the current connection. With an `auth` function, it is called first (the one
   * call in flight is shared); its token is used only on the connection it was made for (a
   * token may be bound to the connection id), otherwise it is called again.
   */
  private subscribe(ch: Channel): void {
    if (!this.line.ready() || ch.subscribeId !== undefined || !ch.wanted || ch.authPending || ch.retryTimer !== undefined) return
    if (typeof ch.options.auth !== 'function') return this.send(ch, ch.options.auth)
    ch.authPending = true
    ch.authorize().then(
      (grant) => {
        ch.authPending = false
        ch.authFailures = 0
        if (!this.line.ready() || ch.subscribeId !== undefined || !ch.wanted) return // the next connection calls again
        if (grant.connectionId !== this.events.identity().connectionId) return this.subscribe(ch)
        this.send(ch, grant.token)
      },
      (err: unknown) => {
        ch.authPending = false
        if (!ch.wanted) return
        const error = new RealtimeError('RT_002', `the auth function of channel '${ch.name}' failed: ${err instanceof Error ? err.message : String(err)}`, { channel: ch.name })
        // The application is waiting for this subscribe: it decides.
        if (ch.hasWaiters()) return ch.abandon(error, 'auth-failed')
        if (++ch.authFailures >= MAX_AUTH_FAILURES) {
          this.receiver.forget(ch.name)
          return ch.abandon(new RealtimeError('RT_002', `${error.message} (${ch.authFailures} times in a row: not trying again)`, { channel: ch.name }), 'auth-failed')
        }
        this.events.error(error, ch)
        this.later(ch, ch.authFailures - 1)
      },
    )
  }

  private send(ch: Channel, auth: string | undefined): void {
    const o = ch.options
    const since = this.receiver.position(ch.name)
    const frame: ClientFrame = {
      type: 'subscribe',
      id: this.requests.id(),
      channel: ch.name,
      ...(o.filter !== undefined ? { filter: o.filter } : {}),
      ...(o.presence !== undefined ? { presence: o.presence } : {}),
      ...(o.state !== undefined ? { state: o.state } : {}),
      ...(auth !== undefined ? { auth } : {}),
      ...(since && o.query === undefined ? { since } : {}),
      ...(o.query !== undefined ? liveFields(o.query, o.resume?.()) : {}),
    }
    ch.subscribeId = frame.id as number
    this.requests.dispatch({ id: frame.id as number, kind: 'subscribe', frame, channel: ch, resolve: () => {}, reject: () => {}, retries: 0 })
  }

  private unsubscribe(ch: Channel): Promise<void> {
    this.acks.delete(ch.name)
    if (!this.line.ready() || ch.state === 'unsubscribed') {
      this.receiver.forget(ch.name)
      ch.subscribeId = undefined
      ch.handleUnsubscribed(undefined, false)
      return Promise.resolve()
    }
    ch.subscribeId = undefined
    return new Promise((resolve) => {
      const id = this.requests.id()
      const lost = () => {
        if (!ch.wanted) this.receiver.forget(ch.name)
      }
      this.requests.dispatch({ id, kind: 'unsubscribe', frame: { type: 'unsubscribe', id, channel: ch.name }, channel: ch, resolve: () => resolve(), reject: () => resolve(), lost, retries: 0 })
    })
  }
}

/** A live query channel's `query` and, when a result is held, `resume`. */
function liveFields(query: LiveQuery, resume: LiveResume | undefined): { query: LiveQuery; resume?: LiveResume } {
  return resume ? { query, resume } : { query }
}

function randomKey(): string {
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto
  const bytes = new Uint8Array(9)
  if (crypto?.getRandomValues) crypto.getRandomValues(bytes)
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256)
  return Array.from(bytes, (b) => b.toString(36).padStart(2, '0')).join('')
}
