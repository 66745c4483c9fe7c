import { type ClientFrameOf, type LiveResume, type NormalizedLiveQuery, type RequestId, type ServerFrame, RealtimeError, isRealtimeError, normalizeLiveQuery } from '@tidings/protocol'
import type { LiveQueryProvider, LiveQuerySubscription, LiveQueryUpdate } from '../ports/live.js'
import type { Outbound } from '../ports/session.js'
import { newRights } from '../rules/rights.js'
import { isPromise } from '../util.js'
import { Channel } from './channel.js'
import type { ResolvedChannel } from './channels.js'
import { type Connection, type Subscription, PRIORITY } from './connection.js'
import type { Signals } from './events.js'
import type { FanOut } from './fanout.js'
import type { ResolvedHubOptions } from './options.js'

/** What live queries need from the hub. */
export interface LiveHost {
  readonly options: ResolvedHubOptions
  readonly live: Map<string, Channel>
  readonly fanout: FanOut
  readonly signals: Signals
}

/** What live queries need from the subscription service (rules, limits, the end of a subscription). */
export interface LiveSubscriptionsHost {
  decide(conn: Connection, action: 'subscribe', channel: string, resolved: ResolvedChannel, room: undefined, auth: string | undefined): Promise<{ denied?: string | undefined }>
  checkSubscriptionLimits(conn: Connection, channel: string): void
  removeSubscription(sub: Subscription, reason: string, notify: boolean): void
}

/** The live query a subscription follows. */
interface LiveState {
  /** The newest query asked for (a repeated subscribe replaces the query); an older one that opens late is closed. */
  latest: number
  /** The query whose updates go to the client. */
  current: number
  handle: LiveQuerySubscription | undefined
  /** The version and hash of the result the client holds. */
  version: number
  hash: string
  /** What the current query was opened with (a refreshed identity opens it again). */
  ctx: LiveCtx
  query: NormalizedLiveQuery
  /** The subscribe's id, until its `subscribed` reply is out (a reopen may be the one to send it). */
  replyId: RequestId | undefined
  replied: boolean
}

type LiveCtx = { readonly identity: Connection['identity']; readonly channel: string; readonly collection: string; readonly auth: string | undefined }
/** What opening a query answers: the subscribe's id and resume, and whether a `subscribed` reply goes first. */
interface OpenRequest {
  readonly id?: RequestId | undefined
  readonly resume?: LiveResume | undefined
  readonly reply: boolean
}

const states = new WeakMap<Subscription, LiveState>()

/** The built-in live query prefix; an app pattern may name the collection with `{collection}` instead. */
const PREFIX = 'db:collection:'

/**
 * The collection a live query channel names: the pattern's `{collection}` parameter, else the
 * part of the name after `db:collection:` up to the next `:` (what follows is the client's tag,
 * so one connection can follow several queries on one collection: `db:collection:messages:inbox`).
 */
export function collectionOf(name: string, resolved: ResolvedChannel): string | undefined {
  const param = resolved.params['collection']
  if (param !== undefined && param.length > 0) return param
  if (!name.startsWith(PREFIX)) return undefined
  const rest = name.slice(PREFIX.length)
  const colon = rest.indexOf(':')
  const collection = colon < 0 ? rest : rest.slice(0, colon)
  return collection.length > 0 ? collection : undefined
}

/**
 * The hub side of live queries: a subscribe with a `query` on a live query channel becomes an
 * ordinary subscription (limits, the channel's subscribe rule, re-checks, unsubscribe and the
 * end of the connection all apply as to any channel) whose frames come from the
 * `LiveQueryProvider`: `subscribed`, then `query:snapshot` (or `query:changes` with
 * `resumed: true`), then `query:changes` for each new version. Frames of one update are encoded
 * once per channel name and shared by every subscriber that receives it.
 */
export class LiveQueries {
  constructor(
    private readonly host: LiveHost,
    private readonly subs: LiveSubscriptionsHost,
  ) {}

  get provider(): LiveQueryProvider | undefined {
    return this.host.options.liveQueries
  }

  async subscribe(conn: Connection, frame: ClientFrameOf<'subscribe'>, resolved: ResolvedChannel): Promise<void> {
    const name = frame.channel
    const provider = this.provider
    if (!provider) throw new RealtimeError('RT_004', `'${name}' is a live query channel and no live query provider is installed`)
    if (frame.query === undefined) throw new RealtimeError('RT_007', `'${name}' is a live query channel: subscribe with a query`)
    if (frame.filter != null || frame.since !== undefined || frame.presence !== undefined || frame.state !== undefined) {
      throw new RealtimeError('RT_007', 'live query channels take a query (and resume), not filter, since or presence')
    }
    const collection = collectionOf(name, resolved)
    if (collection === undefined) throw new RealtimeError('RT_004', `'${name}' names no collection (db:collection:<name>[:<tag>])`)
    const query = normalizeLiveQuery(frame.query)
    const ctx = { identity: conn.identity, channel: name, collection, auth: frame.auth }
    const existing = conn.subscriptions.get(name)
    if (existing) {
      // A repeated subscribe replaces the query: the new one opens (the current one goes on
      // meanwhile, and stays when the new one is refused), then the current one stops.
      const state = states.get(existing)
      if (!state) throw new RealtimeError('RT_007', `'${name}' is not a live query subscription`)
      await this.open(provider, conn, existing, state, ++state.latest, ctx, query, { id: frame.id, resume: frame.resume, reply: true })
      return
    }
    this.subs.checkSubscriptionLimits(conn, name)
    const decision = await this.subs.decide(conn, 'subscribe', name, resolved, undefined, frame.auth)
    if (decision.denied) throw new RealtimeError('RT_003', decision.denied)
    if (conn.ended) return
    this.subs.checkSubscriptionLimits(conn, name)
    if (conn.subscriptions.get(name)) {
      // Another subscribe of the same name won while the rule decided: that one stands.
      throw new RealtimeError('RT_007', `'${name}' is being subscribed already`)
    }
    let channel = this.host.live.get(name)
    if (!channel) {
      this.host.live.set(name, (channel = new Channel(name, resolved.pattern, resolved.options, resolved.params, this.host.options.clustered)))
      this.host.signals.emit('channel:occupied', { channel: name, nodeId: this.host.options.nodeId })
    }
    const sub: Subscription = {
      connection: conn,
      session: conn.session,
      active: true,
      fast: false,
      channel,
      filter: null,
      canPublish: undefined,
      replay: null,
      tracked: false,
      lastSent: 0,
      acked: 0,
      attempts: 0,
      deadline: 0,
      pending: false,
      seated: false,
      rights: newRights(false, undefined, frame.auth),
    }
    const state: LiveState = { latest: 0, current: -1, handle: undefined, version: 0, hash: '', ctx, query, replyId: frame.id, replied: false }
    states.set(sub, state)
    channel.add(sub)
    conn.subscriptions.add(sub)
    conn.refreshFastPath()
    try {
      await this.open(provider, conn, sub, state, 0, ctx, query, { id: frame.id, resume: frame.resume, reply: true })
    } catch (err) {
      this.subs.removeSubscription(sub, 'failed', false)
      throw err
    }
    if (conn.subscriptions.get(name) === sub) this.host.signals.emit('subscribe', { connectionId: conn.id, userId: conn.userId, channel: name })
  }

  /**
   * Opens query number `generation` of the subscription and, when it is still the newest one
   * asked for and the subscription still stands, makes it current: the reply, the first result,
   * then the updates that came meanwhile. Otherwise the new handle is closed at once.
   */
  private async open(
    provider: LiveQueryProvider,
    conn: Connection,
    sub: Subscription,
    state: LiveState,
    generation: number,
    ctx: LiveCtx,
    query: NormalizedLiveQuery,
    frame: OpenRequest,
  ): Promise<void> {
    let waiting: LiveQueryUpdate[] | null = []
    const emit = (update: LiveQueryUpdate): void => {
      if (waiting !== null) waiting.push(update)
      else if (state.current === generation && sub.active) this.send(conn, sub, state, update)
    }
    let opened = provider.open(ctx, query, emit, frame.resume)
    if (isPromise(opened)) opened = await opened
    const handle = opened
    if (state.latest !== generation || !sub.active || conn.ended || conn.subscriptions.get(sub.channel.name) !== sub || states.get(sub) !== state) {
      waiting = null
      handle.close()
      return
    }
    const old = state.handle
    state.handle = handle
    state.current = generation
    state.ctx = ctx
    state.query = query
    try {
      old?.close()
    } catch (err) {
      this.host.signals.report(err, 'liveQueries.close')
    }
    const channel = sub.channel.name
    // Whichever query of the subscription becomes current first answers the subscribe (frames of
    // a connection are handled in order, so a reopen cannot overtake the first open today; this
    // keeps the reply if that ever changes).
    const reply = frame.reply || !state.replied
    const id = frame.reply ? frame.id : state.replyId
    if (reply) {
      this.host.fanout.sendFrame(conn, { type: 'subscribed', id, channel })
      state.replied = true
      state.replyId = undefined
    }
    if (handle.resumed !== undefined) {
      // Reopened for a refreshed identity with the same result: nothing to tell the client.
      if (reply || handle.resumed.length > 0 || handle.hash !== state.hash) {
        this.host.fanout.sendFrame(conn, { type: 'query:changes', channel, version: handle.version, hash: handle.hash, changes: [...handle.resumed], resumed: true })
      }
    } else {
      this.host.fanout.sendFrame(conn, {
        type: 'query:snapshot',
        id,
        channel,
        key: handle.key,
        version: handle.version,
        hash: handle.hash,
        docs: [...handle.docs],
        ...(frame.resume !== undefined ? { reset: true as const } : {}),
      })
    }
    state.version = handle.version
    state.hash = handle.hash
    const queued = waiting
    waiting = null
    for (const update of queued) this.send(conn, sub, state, update)
  }

  /** One update to one subscriber (older versions than it holds are dropped). */
  private send(conn: Connection, sub: Subscription, state: LiveState, update: LiveQueryUpdate): void {
    if (update.version <= state.version || conn.ended) return
    const prev = state.version
    state.version = update.version
    state.hash = update.hash
    this.host.fanout.write(conn, this.encoded(conn, sub.channel.name, prev, update), PRIORITY.high, false)
  }

  private readonly frames = new WeakMap<LiveQueryUpdate, Map<string, Outbound>>()

  /** The `query:changes` frame of an update on a channel, encoded once for every subscriber on the hub's codec. */
  private encoded(conn: Connection, channel: string, prev: number, update: LiveQueryUpdate): Outbound {
    const frame: ServerFrame = { type: 'query:changes', channel, version: update.version, prev, hash: update.hash, changes: [...update.changes] }
    if (conn.codec !== this.host.options.codec) return this.host.fanout.encode(conn.codec, frame)
    let byChannel = this.frames.get(update)
    if (!byChannel) this.frames.set(update, (byChannel = new Map()))
    const key = `${prev}\n${channel}`
    let out = byChannel.get(key)
    if (!out) byChannel.set(key, (out = this.host.fanout.encode(conn.codec, frame)))
    return out
  }

  /**
   * The subscription's rule was decided again and still allows it: when the connection's identity
   * changed since the query was opened (an `auth` frame: new roles or claims), the query is opened
   * again for it, since the collection's row rule may see the user differently. The client's
   * result is resumed (no frame when nothing changed, `query:changes` with `resumed` when the
   * result differs and the provider can diff it, else a `query:snapshot` with `reset`). A rule
   * that now refuses the user ends the subscription (`revoked`).
   */
  rechecked(sub: Subscription): void {
    const state = states.get(sub)
    const provider = this.provider
    const conn = sub.connection
    if (!state || !provider || state.ctx.identity === conn.identity || !sub.active) return
    const ctx: LiveCtx = { ...state.ctx, identity: conn.identity }
    this.open(provider, conn, sub, state, ++state.latest, ctx, state.query, { resume: { version: state.version, hash: state.hash || '-' }, reply: false }).catch((err: unknown) => {
      if (states.get(sub) !== state || conn.subscriptions.get(sub.channel.name) !== sub) return
      if (!isRealtimeError(err) || err.code !== 'RT_003') this.host.signals.report(err, 'liveQueries.reopen')
      this.subs.removeSubscription(sub, isRealtimeError(err) && err.code === 'RT_003' ? 'revoked' : 'failed', true)
    })
  }

  /** The subscription ended (unsubscribe, revoked, disconnected…): its query stops. */
  ended(sub: Subscription): void {
    const state = states.get(sub)
    if (!state) return
    states.delete(sub)
    state.current = -1
    const handle = state.handle
    state.handle = undefined
    try {
      handle?.close()
    } catch (err) {
      this.host.signals.report(err, 'liveQueries.close')
    }
  }
}
