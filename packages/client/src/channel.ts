import {
  type ClientFrame,
  type FilterNode,
  type LiveQuery,
  type LiveResume,
  type MessageFrame,
  type PresenceMember,
  type PresenceSnapshot,
  type Priority,
  RealtimeError,
  type ServerFrameOf,
  type StreamPosition,
} from '@tidings/protocol'
import { type ChannelEncryption, type ChannelKey, Keyring, OpenError, open, seal } from './e2e.js'
import { Emitter } from './emitter.js'

/** What a channel's `auth` function is told: the channel, and the connection it subscribes on (tokens may be bound to it). */
export interface ChannelAuthContext {
  readonly channel: string
  readonly connectionId?: string | undefined
  readonly userId?: string | undefined
}

/** What a channel's `auth` function gives: a channel token, and with it the channel's key (and older keys still to read). */
export interface ChannelAuthResult {
  readonly token: string
  /** The channel's current key: new messages are sealed with it. */
  readonly key?: ChannelKey | undefined
  /** Older keys, to read messages sealed before a rotation. */
  readonly keys?: readonly ChannelKey[] | undefined
}

/**
 * A channel credential for the channel rules (`ctx.auth` on the server): a fixed string, or a
 * function called on every (re)subscribe, e.g. to fetch a short-lived channel token from the
 * app's endpoint. Calls are never concurrent for one channel: callers share the one in flight.
 */
export type ChannelAuth = string | ((ctx: ChannelAuthContext) => string | ChannelAuthResult | Promise<string | ChannelAuthResult>)

export interface ChannelOptions {
  /** Initial presence data (presence channels); kept and sent again on every resubscribe. */
  readonly presence?: Record<string, unknown> | undefined
  /** Initial presence state (default: the hub's, `online`). */
  readonly state?: string | undefined
  /** Server-side filter: only messages that pass it are sent (protocol §9). */
  readonly filter?: FilterNode | undefined
  /** Client-side filter: messages it rejects are not emitted (they still count as processed). */
  readonly clientFilter?: ((message: MessageFrame) => boolean) | undefined
  /**
   * A channel-specific credential for the channel rules (`ctx.auth`): a string, or a function
   * called on every (re)subscribe and again when the hub ends the subscription with reason
   * `'expired'` (then the channel subscribes again from where its stream was).
   */
  readonly auth?: ChannelAuth | undefined
  /**
   * End-to-end encryption (AES-256-GCM, WebCrypto): sends are sealed, and every message
   * (live, replayed, from `history()`) is opened before listeners see it; one that cannot be
   * opened goes to `error` (RT_007, `details.reason`), never to message listeners. `true`: the
   * keys come only with the `auth` result. See docs/encryption.md.
   */
  readonly encryption?: ChannelEncryption | true | undefined
  /**
   * Live query channels (`db:collection:<name>[:<tag>]`): the query sent with every subscribe.
   * `rt.database().collection(…)…onSnapshot(…)` sets it; see docs/live-queries.md.
   */
  readonly query?: LiveQuery | undefined
  /** Live query channels: called on every subscribe; what it gives is sent as `resume` (the result held). */
  readonly resume?: (() => LiveResume | undefined) | undefined
}

export interface SendOptions {
  /** Wait for the hub's `published` answer (default). With `false` the promise resolves once the frame is queued. */
  readonly ack?: boolean
  /** Deduplication key; one is generated for every publish when absent, so resends after a reconnect are not published twice. */
  readonly idempotencyKey?: string
  readonly priority?: Priority
}

export interface SendResult {
  readonly messageId: string
  /** Absent on channels that keep no history. */
  readonly offset: number | undefined
  /** The hub had already published a message with this idempotency key: these are its id and offset. */
  readonly duplicate: boolean
}

export interface HistoryPage {
  /**
   * The page's messages, oldest first, as they are now: a message revised since it was published
   * has `version` (2 after one edit) and, once deleted, `deleted: true` with data null. Revision
   * events of the page are not here but in `revisions`.
   */
  readonly messages: MessageFrame[]
  /**
   * The revision events of the page (edits and deletes, oldest first). They revise messages of
   * this page or of earlier ones; fold them into what you hold with `applyRevisions` (a revision
   * applies when its `version` is higher than the message's).
   */
  readonly revisions: Revision[]
  readonly position: StreamPosition
  readonly top: number
  readonly complete: boolean
}

/**
 * A message was edited (new `data`) or deleted (`deleted`, data null): the `revision` channel
 * event, and what `history()` gives for the revision events of its page. Apply it to the message
 * you hold at `offset` when `version` is higher than that message's (`version ?? 1`); otherwise
 * it is one you already have.
 */
export interface Revision {
  readonly channel: string
  /** The offset of the revised message. */
  readonly offset: number
  /** The version the message is now at: 2 after the first revision, +1 per revision. */
  readonly version: number
  readonly deleted: boolean
  /** The message's new data (null when deleted). */
  readonly data: unknown
  /** The revision event's event name. */
  readonly event: string
  /** Who revised (the revision event's sender). */
  readonly sender: string | undefined
  /** The offset of the revision event itself in the channel's log. */
  readonly revision: number
  /** The revision event's message id. */
  readonly messageId: string
  readonly timestamp: string
}

/** The hub's answer to `edit()` / `delete()`. */
export interface RevisionResult {
  /** The revised message's offset. */
  readonly offset: number
  /** Its version now (2 after the first revision). */
  readonly version: number
  /** The offset of the revision event in the channel's log. */
  readonly revision: number
  /** The revision event's message id. */
  readonly messageId: string
  readonly deleted: boolean
}

export interface EditOptions {
  /**
   * Encrypted channels (required there): the event the message was published with. The new data
   * is sealed bound to the channel and that event, as the revision event carries the original's.
   */
  readonly event?: string | undefined
}

export interface SearchOptions {
  /** Most messages (the hub's default 20, at most 100). */
  readonly limit?: number | undefined
  /** Only messages with offsets below this: the next page of a newest-first search. */
  readonly before?: number | undefined
}

export type ChannelState = 'unsubscribed' | 'subscribing' | 'subscribed'

/** Events with these names go to their own listeners; a published event with such a name reaches only `message` listeners. */
export interface ChannelEvents {
  /** Every message, once, in order (after `clientFilter`). Revision events are not messages: they go to `revision`. */
  message: (message: MessageFrame) => void
  /**
   * A message was edited or deleted (a revision event, on channels with revisions): once per
   * revised version, in log order with the messages, never to `message` nor to event-name
   * listeners, not filtered by `clientFilter`. Apply it when its `version` is higher than the one
   * you hold.
   */
  revision: (revision: Revision, frame: MessageFrame) => void
  /** Every `subscribed` answer: the first one, and again after each reconnect (with a fresh presence snapshot). */
  subscribed: (frame: ServerFrameOf<'subscribed'>) => void
  /** The hub could not replay what was missed (`recovered: false`): reload the state by other means. */
  gap: (info: { reason: string | undefined; position: StreamPosition | undefined }) => void
  /**
   * The subscription ended and will not be made again by itself: the server ended it (kicked,
   * room deleted, removed from the room, `'revoked'`: a rule no longer allows it), or the
   * channel's `auth` function kept failing (`'auth-failed'`). Reason `'expired'` is not emitted:
   * the channel re-authorizes and subscribes again by itself.
   */
  unsubscribed: (info: { reason: string | undefined }) => void
  'presence:join': (member: PresenceMember) => void
  'presence:leave': (member: PresenceMember) => void
  'presence:update': (member: PresenceMember) => void
  typing: (info: { userId: string; active: boolean }) => void
  receipt: (receipt: ServerFrameOf<'receipt'>) => void
  /**
   * Errors about this channel (a refused resubscribe, a refused ack or read, a listener that
   * threw, a failing `auth` function, a message of an encrypted channel that could not be
   * opened: `RT_007` with `details: { channel, offset, messageId, event, reason }`).
   */
  error: (error: Error) => void
  state: (state: ChannelState) => void
}

/**
 * `Symbol.dispose`, or the well-known fallback that TypeScript's and esbuild's `using` helpers
 * look up where the runtime does not define it yet (Node 20, older browsers).
 */
export const disposeSymbol: typeof Symbol.dispose = (Symbol.dispose ?? Symbol.for('Symbol.dispose')) as typeof Symbol.dispose

export const CHANNEL_EVENTS: ReadonlySet<string> = new Set([
  'message', 'revision', 'subscribed', 'gap', 'unsubscribed', 'presence:join', 'presence:leave', 'presence:update', 'typing', 'receipt', 'error', 'state',
])

/** What a channel needs from its client. @internal */
export interface ChannelHost {
  wantSubscribed(channel: Channel): void
  unsubscribeChannel(channel: Channel): Promise<void>
  /** Send a request (queued while disconnected; throws RT_006 when the outbox is full). */
  request<F extends ServerFrameOf<'published' | 'presence:update' | 'presence' | 'history' | 'revised' | 'search'>>(frame: ClientFrame): Promise<F>
  /** Send now or never (typing). */
  sendVolatile(frame: ClientFrame): void
  /** Send now, or queue for the next connection (read). */
  sendQueued(frame: ClientFrame): void
  idempotencyKey(): string
  reportError(error: unknown, channel?: Channel): void
  /** The connection the channel would subscribe on. */
  identity(): { connectionId: string | undefined; userId: string | undefined }
  /** The channel was disposed: the client forgets it (the next `rt.channel(name)` makes a new one). */
  disposed(channel: Channel): void
}

class ChannelEmitter extends Emitter<ChannelEvents> {
  constructor(private readonly fallback: (err: unknown) => void) {
    super()
  }
  fire(event: string, ...args: unknown[]): boolean {
    return this.emitDynamic(event, args)
  }
  protected override listenerFailed(err: unknown, event: string): void {
    if (event !== 'error' && this.listenerCount('error') > 0) this.emitDynamic('error', [err])
    else this.fallback(err)
  }
}

type Waiter = { resolve: (frame: ServerFrameOf<'subscribed'>) => void; reject: (err: Error) => void }

/** What one call of the `auth` function gave, and for which connection. @internal */
export interface Authorized {
  readonly token: string | undefined
  readonly connectionId: string | undefined
}

/** Revised messages whose version a channel remembers, to emit each revision once. */
const MAX_VERSIONS = 2000

/** A revision event as the `revision` event gives it; undefined for an ordinary message. @internal */
export function toRevision(channel: string, m: MessageFrame): Revision | undefined {
  const r = m.revises
  if (!r) return undefined
  // An edit whose message was deleted later comes back (history, replays) with its data gone and
  // `deleted` set: it reads as the deletion it was superseded by.
  const gone = r.deleted === true || m.deleted === true
  return {
    channel,
    offset: r.offset,
    version: r.version,
    deleted: gone,
    data: gone ? null : m.data,
    event: m.event,
    sender: m.sender,
    // Revisions are kept in the log, so the event has an offset.
    revision: m.offset ?? 0,
    messageId: m.id,
    timestamp: m.timestamp,
  }
}

/**
 * Fold revisions into messages you hold (e.g. `history()` pages): each message revised to a
 * higher version than its own (`version ?? 1`) gets the revision's data (null and `deleted` for
 * a deletion) and `version`. Returns a new array; messages are copied only when revised.
 * Revisions of messages not in `messages` are ignored.
 */
export function applyRevisions<M extends Pick<MessageFrame, 'offset' | 'data' | 'version' | 'deleted'>>(messages: readonly M[], revisions: readonly Revision[]): M[] {
  const latest = new Map<number, Revision>()
  for (const r of revisions) {
    const held = latest.get(r.offset)
    if (!held || r.version > held.version) latest.set(r.offset, r)
  }
  return messages.map((m) => {
    const r = m.offset !== undefined ? latest.get(m.offset) : undefined
    if (!r || r.version <= (m.version ?? 1)) return m
    return r.deleted ? { ...m, data: null, version: r.version, deleted: true } : { ...m, data: r.data, version: r.version }
  })
}

/** A channel of a `Realtime` client. Get one with `rt.channel(name, options)`. */
export class Channel {
  private readonly events: ChannelEmitter
  private waiters: Waiter[] = []
  private last: ServerFrameOf<'subscribed'> | undefined
  /** @internal Whether the application wants the subscription (kept across reconnects). */
  wanted = false
  /** @internal The id of the `subscribe` in flight, if any. */
  subscribeId: number | undefined
  state: ChannelState = 'unsubscribed'
  options: ChannelOptions
  /** True once `dispose()` was called: the handle is inert. */
  disposed = false
  /** @internal Waiting for the `auth` function before sending the subscribe. */
  authPending = false
  /** @internal A subscribe scheduled later (backoff after a failing `auth` function or grants that expire at once). */
  retryTimer: ReturnType<typeof setTimeout> | undefined
  /** @internal Failures of the `auth` function in a row. */
  authFailures = 0
  /** @internal Subscriptions in a row that expired soon after they were made. */
  shortExpiries = 0
  /** @internal When the last `subscribed` answer came (ms). */
  subscribedAt = 0
  private authorizing: Promise<Authorized> | undefined
  private keyring: Keyring | undefined
  /** Messages of an encrypted channel, opened one after the other so listeners see them in order. */
  private inbox: Promise<void> = Promise.resolve()
  /** Sends of an encrypted channel, sealed one after the other so they go out in call order. */
  private outgoing: Promise<unknown> = Promise.resolve()
  /** Revised messages seen (offset → highest version, oldest first, bounded): each revision is emitted once. */
  private readonly versions = new Map<number, number>()
  /** The epoch of the stream `versions` belongs to (offsets start again in a new one). */
  private epoch: string | undefined

  /** @internal */
  constructor(
    readonly name: string,
    options: ChannelOptions,
    private readonly host: ChannelHost,
  ) {
    this.options = { ...options }
    this.events = new ChannelEmitter((err) => host.reportError(err, this))
  }

  /**
   * Listen to a channel event, or to a published event by its name (`(data, message) => …`).
   * Returns a function that removes this listener. The handle is shared (`rt.channel(name)`
   * returns the same one until it is disposed), so a view that adds listeners on every visit
   * must remove them: call the returned function, or `dispose()` the channel.
   */
  on<K extends keyof ChannelEvents & string>(event: K, listener: ChannelEvents[K]): () => void
  on(event: string, listener: (data: any, message: MessageFrame) => void): () => void
  on(event: string, listener: (...args: never[]) => void): () => void {
    return this.events.on(event as 'message', listener as ChannelEvents['message'])
  }

  once<K extends keyof ChannelEvents & string>(event: K, listener: ChannelEvents[K]): () => void
  once(event: string, listener: (data: any, message: MessageFrame) => void): () => void
  once(event: string, listener: (...args: never[]) => void): () => void {
    return this.events.once(event as 'message', listener as ChannelEvents['message'])
  }

  off(event: string, listener?: (...args: never[]) => void): void {
    this.events.off(event as 'message', listener as ChannelEvents['message'] | undefined)
  }

  /** How many listeners an event has (for tests and leak checks). */
  listenerCount(event: string): number {
    return this.events.listenerCount(event as 'message')
  }

  /**
   * Done with this channel: unsubscribe, remove every listener, and let the client forget the
   * handle (the next `rt.channel(name)` returns a fresh one). Idempotent. Also `using ch = rt.channel(…)`.
   */
  dispose(): Promise<void> {
    if (this.disposed) return Promise.resolve()
    this.disposed = true
    this.clearRetry()
    const done = this.wanted || this.state !== 'unsubscribed' ? this.unsubscribe().catch(() => {}) : Promise.resolve()
    this.events.removeAll()
    this.host.disposed(this)
    return done
  }

  [disposeSymbol](): void {
    void this.dispose()
  }

  /**
   * Subscribe (and stay subscribed across reconnects, resuming where the stream was). Resolves
   * with the `subscribed` answer; rejects with the hub's `RealtimeError`.
   */
  subscribe(): Promise<ServerFrameOf<'subscribed'>> {
    if (this.disposed) return Promise.reject(new RealtimeError('RT_001', `channel '${this.name}' was disposed: get a new handle with rt.channel('${this.name}')`))
    if (this.wanted && this.state === 'subscribed' && this.last) return Promise.resolve(this.last)
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject })
      if (!this.wanted) {
        // The application asks again (after giving up, a refusal or an unsubscribe): a fresh start.
        this.authFailures = 0
        this.shortExpiries = 0
      }
      this.wanted = true
      if (this.state === 'unsubscribed') this.setState('subscribing')
      this.host.wantSubscribed(this)
    })
  }

  /** Leave the channel. Messages that arrive afterwards are not emitted. */
  async unsubscribe(): Promise<void> {
    this.wanted = false
    this.clearRetry()
    this.rejectWaiters(new RealtimeError('RT_001', `unsubscribed from '${this.name}' before the subscription completed`))
    await this.host.unsubscribeChannel(this)
  }

  /** Publish. Resolves on the hub's `published` answer (queued while disconnected, resent after a reconnect without duplicates). */
  send(event: string, data?: unknown, options?: SendOptions & { ack?: true }): Promise<SendResult>
  send(event: string, data: unknown, options: SendOptions & { ack: false }): Promise<undefined>
  send(event: string, data?: unknown, options?: SendOptions): Promise<SendResult | undefined>
  async send(event: string, data?: unknown, options: SendOptions = {}): Promise<SendResult | undefined> {
    const request = (payload: unknown) =>
      this.host.request<ServerFrameOf<'published'>>({
        type: 'message',
        channel: this.name,
        event,
        data: payload,
        idempotencyKey: options.idempotencyKey ?? this.host.idempotencyKey(),
        ...(options.priority ? { priority: options.priority } : {}),
      })
    let answer: Promise<ServerFrameOf<'published'>>
    if (this.options.encryption) {
      // Sealed in call order (each waits for the one before), then queued like any send.
      const ring = this.ring()
      const queued = this.outgoing.then(async () => ({ answer: request(await seal(await ring.forSending(), this.name, event, data)) }))
      this.outgoing = queued.catch(() => {})
      answer = queued.then((q) => q.answer)
    } else answer = request(data)
    if (options.ack === false) {
      answer.catch((err) => this.host.reportError(err, this))
      return undefined
    }
    const f = await answer
    return { messageId: f.messageId, offset: f.offset, duplicate: f.duplicate === true }
  }

  /** Replace this connection's presence data (and state); kept for resubscribes. Resolves with the updated member. */
  async updatePresence(data?: Record<string, unknown>, state?: string): Promise<PresenceMember> {
    this.options = { ...this.options, ...(data !== undefined ? { presence: data } : {}), ...(state !== undefined ? { state } : {}) }
    const f = await this.host.request<ServerFrameOf<'presence:update'>>({
      type: 'presence:update',
      channel: this.name,
      ...(data !== undefined ? { data } : {}),
      ...(state !== undefined ? { state } : {}),
    })
    return f.user
  }

  async getPresence(): Promise<PresenceSnapshot> {
    const f = await this.host.request<ServerFrameOf<'presence'>>({ type: 'presence:get', channel: this.name })
    return { users: f.users, count: f.count }
  }

  /** Typing indicator (volatile: dropped while disconnected). */
  typing(active = true): void {
    this.host.sendVolatile({ type: 'typing', channel: this.name, active })
  }

  /** Mark messages read (read receipts; notifications on the personal channel). Queued while disconnected. */
  read(offsets: number | readonly number[]): void {
    const list = typeof offsets === 'number' ? [offsets] : [...offsets]
    for (let i = 0; i < list.length; i += 500) this.host.sendQueued({ type: 'read', channel: this.name, offsets: list.slice(i, i + 500) })
  }

  /**
   * Read the channel's log (oldest first): after `since`, or the newest `limit` messages.
   * Messages come as they are now (`version`, `deleted`); the page's revision events come apart,
   * in `revisions`.
   */
  async history(options: { since?: StreamPosition; limit?: number } = {}): Promise<HistoryPage> {
    const f = await this.host.request<ServerFrameOf<'history'>>({ type: 'history', channel: this.name, ...options })
    const messages: MessageFrame[] = []
    const revisions: Revision[] = []
    for (const m of await this.openAll(f.messages)) {
      const r = toRevision(this.name, m)
      if (r) revisions.push(r)
      else messages.push(m)
    }
    return { messages, revisions, position: f.position, top: f.top, complete: f.complete }
  }

  /**
   * Replace the data of one of your own messages (channels with `revisions: 'own'` on the hub).
   * Resolves with the message's new version when the hub made it; the channel's other
   * subscribers get a `revision` event. Rejects with the hub's `RealtimeError`: `RT_003` (not
   * your message, or the channel allows no revisions), `RT_004` (no such message retained, or
   * already deleted), `RT_007` (the channel keeps no history, or its store cannot revise).
   * Queued while disconnected, like `send()`; see docs/client.md for a revision whose answer was
   * lost with the connection.
   */
  async edit(offset: number, data: unknown, options: EditOptions = {}): Promise<RevisionResult> {
    if (!this.options.encryption) return this.revise({ type: 'edit', channel: this.name, offset, data })
    const event = options.event
    if (event === undefined) {
      throw new RealtimeError('RT_007', `editing a message of the encrypted channel '${this.name}' needs its event (edit(offset, data, { event })): the sealed data is bound to it`, { channel: this.name, offset })
    }
    // Sealed in call order with the sends, then queued like them.
    const ring = this.ring()
    const queued = this.outgoing.then(async () => ({ answer: this.revise({ type: 'edit', channel: this.name, offset, data: await seal(await ring.forSending(), this.name, event, data) }) }))
    this.outgoing = queued.catch(() => {})
    return (await queued).answer
  }

  /** Delete one of your own messages (its offset stays, as a tombstone: data null, `deleted`), as `edit()` does. */
  delete(offset: number): Promise<RevisionResult> {
    return this.revise({ type: 'delete', channel: this.name, offset })
  }

  /**
   * Full-text search of the channel's retained history: messages as they are now (edited words
   * match, deleted messages never do), newest first. Page on with `before` = the last offset
   * you got. Rejects with `RT_007` when the hub's store cannot search, `RT_003` when the channel's
   * history is not yours to read.
   */
  async search(query: string, options: SearchOptions = {}): Promise<MessageFrame[]> {
    const f = await this.host.request<ServerFrameOf<'search'>>({
      type: 'search',
      channel: this.name,
      query,
      ...(options.limit !== undefined ? { limit: options.limit } : {}),
      ...(options.before !== undefined ? { before: options.before } : {}),
    })
    return this.openAll(f.messages)
  }

  private async revise(frame: ClientFrame & { type: 'edit' | 'delete' }): Promise<RevisionResult> {
    const f = await this.host.request<ServerFrameOf<'revised'>>(frame)
    // This client made that version: its revision event, if it comes back (a replay), is not news.
    this.noteVersion(f.offset, f.version)
    return { offset: f.offset, version: f.version, revision: f.revision, messageId: f.messageId, deleted: f.deleted === true }
  }

  /** Messages of a history or search answer, opened on encrypted channels (one that cannot be is left out and reported to `error`). */
  private async openAll(messages: MessageFrame[]): Promise<MessageFrame[]> {
    if (!this.options.encryption) return messages
    const ring = this.ring()
    const opened = await Promise.all(messages.map((m) => this.tryOpen(ring, m)))
    const out: MessageFrame[] = []
    for (const m of opened) {
      if (m instanceof RealtimeError) this.host.reportError(m, this)
      else out.push(m)
    }
    return out
  }

  /**
   * Encrypted channels: seal new messages with this key from now on (the app rotated the
   * channel's key). Messages sealed with older keys stay readable (`encryption.key(kid)`).
   * Rejects when the key cannot be imported.
   */
  async setKey(key: ChannelKey): Promise<void> {
    await this.ring().add(key, true)
  }

  /** Encrypted channels: forget the current key, so the next send asks `encryption.key()` (or the `auth` function) again. */
  refreshKey(): void {
    this.keyring?.stale()
  }

  /**
   * @internal Call the `auth` function: one call at a time, concurrent callers (a reconnect, an
   * expired grant, a send that needs the key) share it. Keys in its result go to the keyring.
   */
  authorize(): Promise<Authorized> {
    const auth = this.options.auth
    if (typeof auth !== 'function') return Promise.resolve({ token: auth, connectionId: undefined })
    if (this.authorizing) return this.authorizing
    const { connectionId, userId } = this.host.identity()
    const run = (async (): Promise<Authorized> => {
      const result = await auth({ channel: this.name, ...(connectionId !== undefined ? { connectionId } : {}), ...(userId !== undefined ? { userId } : {}) })
      const grant = typeof result === 'string' ? { token: result } : result
      if (typeof grant?.token !== 'string' || grant.token === '') throw new Error('it gave no token')
      if (grant.key || grant.keys) {
        const ring = this.ring()
        for (const k of grant.keys ?? []) ring.add(k, false)
        if (grant.key) ring.add(grant.key, true)
      }
      return { token: grant.token, connectionId }
    })().finally(() => {
      if (this.authorizing === run) this.authorizing = undefined
    })
    this.authorizing = run
    return run
  }

  // ---------------------------------------------------------------- called by the client

  /** @internal */
  handleSubscribed(frame: ServerFrameOf<'subscribed'>): void {
    this.last = frame
    if (frame.position && frame.position.epoch !== this.epoch) {
      // A new stream (a lost history starts offsets again): versions seen belong to the old one.
      if (this.epoch !== undefined) this.versions.clear()
      this.epoch = frame.position.epoch
    }
    this.subscribedAt = Date.now()
    if (this.wanted) this.setState('subscribed')
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w.resolve(frame)
    this.events.fire('subscribed', frame)
    if (frame.recovered === false) this.events.fire('gap', { reason: frame.reason, position: frame.position })
  }

  /** @internal The subscribe was refused. */
  handleRefused(error: RealtimeError): void {
    this.wanted = false
    this.clearRetry()
    this.setState('unsubscribed')
    if (this.waiters.length > 0) this.rejectWaiters(error)
    else this.events.fire('error', error)
  }

  /** @internal The server ended the subscription, or an unsubscribe completed. */
  handleUnsubscribed(reason: string | undefined, byServer: boolean): void {
    if (byServer) {
      this.wanted = false
      this.clearRetry()
    }
    if (!this.wanted) this.setState('unsubscribed')
    if (byServer) this.events.fire('unsubscribed', { reason })
  }

  /**
   * @internal The channel stops trying to subscribe (its `auth` function keeps failing, its
   * grants keep expiring at once): `subscribe()` calls waiting reject, else `error` and
   * `unsubscribed` are emitted.
   */
  abandon(error: RealtimeError, reason: string): void {
    this.wanted = false
    this.clearRetry()
    this.setState('unsubscribed')
    if (this.waiters.length > 0) return this.rejectWaiters(error)
    this.host.reportError(error, this)
    this.events.fire('unsubscribed', { reason })
  }

  /** @internal `subscribe()` calls are waiting for this subscription. */
  hasWaiters(): boolean {
    return this.waiters.length > 0
  }

  /** @internal */
  clearRetry(): void {
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
  }

  /** @internal The client gave up connecting: `subscribe()` calls waiting for it fail (the channel stays wanted for a later `connect()`). */
  failWaiters(error: Error): void {
    this.rejectWaiters(error)
  }

  /** @internal The connection is gone: the subscription will be made again. */
  handleLost(): void {
    this.subscribeId = undefined
    if (this.wanted) this.setState('subscribing')
  }

  /** @internal A message, once and in order. */
  handleMessage(message: MessageFrame): void {
    if (!this.wanted) return
    if (!this.options.encryption) return this.emitMessage(message)
    const ring = this.ring()
    this.inbox = this.inbox
      .then(async () => {
        const opened = await this.tryOpen(ring, message)
        if (opened instanceof RealtimeError) this.host.reportError(opened, this)
        else if (this.wanted) this.emitMessage(opened)
      })
      // Whatever happens to one message, the next ones are still opened.
      .catch((err: unknown) => this.host.reportError(err, this))
  }

  private emitMessage(message: MessageFrame): void {
    const revision = toRevision(this.name, message)
    if (revision) {
      if (this.noteVersion(revision.offset, revision.version)) this.events.fire('revision', revision, message)
      return
    }
    // A replayed message that was revised since comes as it is now: its revision events up to that version are not news.
    if (message.version !== undefined && message.offset !== undefined) this.noteVersion(message.offset, message.version)
    const filter = this.options.clientFilter
    if (filter) {
      let pass: boolean
      try {
        pass = filter(message)
      } catch (err) {
        this.host.reportError(err, this)
        return
      }
      if (!pass) return
    }
    this.events.fire('message', message)
    if (!CHANNEL_EVENTS.has(message.event)) this.events.fire(message.event, message.data, message)
  }

  /** @internal */
  emitEvent(event: keyof ChannelEvents & string, ...args: unknown[]): void {
    this.events.fire(event, ...args)
  }

  /** @internal */
  hasErrorListener(): boolean {
    return this.events.listenerCount('error') > 0
  }

  private ring(): Keyring {
    return (this.keyring ??= new Keyring({
      key: () => {
        const e = this.options.encryption
        return e === true ? undefined : e?.key
      },
      authorize: () => (typeof this.options.auth === 'function' ? this.authorize() : undefined),
    }))
  }

  /**
   * A revised version seen: false when this version (or a later one) of the message at `offset`
   * was seen already (a revision is idempotent: it is emitted once).
   */
  private noteVersion(offset: number, version: number): boolean {
    const seen = this.versions.get(offset)
    if (seen !== undefined && seen >= version) return false
    this.versions.delete(offset)
    this.versions.set(offset, version)
    if (this.versions.size > MAX_VERSIONS) this.versions.delete(this.versions.keys().next().value!)
    return true
  }

  /** The message with its data opened, or the error that says why it cannot be (for `error`, in order). */
  private async tryOpen(ring: Keyring, m: MessageFrame): Promise<MessageFrame | RealtimeError> {
    // A deleted message, or a deletion, has no data to open.
    if (m.deleted || m.revises?.deleted) return m
    try {
      return { ...m, data: await open(ring, this.name, m.event, m.data) }
    } catch (err) {
      const reason = err instanceof OpenError ? err.reason : 'unknown-key'
      const why = err instanceof Error ? err.message : String(err)
      return new RealtimeError('RT_007', `could not decrypt message ${m.offset ?? m.id} of '${this.name}': ${why}`, { channel: this.name, offset: m.offset, messageId: m.id, event: m.event, reason })
    }
  }

  private rejectWaiters(error: Error): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w.reject(error)
  }

  private setState(state: ChannelState): void {
    if (this.state === state) return
    this.state = state
    this.events.fire('state', state)
  }
}
