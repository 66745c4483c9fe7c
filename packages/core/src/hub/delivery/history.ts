import { type ClientFrameOf, type MessageFrame, RealtimeError, wireLength } from '@tidings/protocol'
import type { Clock } from '../../ports/clock.js'
import type { StoredMessage } from '../../ports/store.js'
import type { Connection } from '../connection.js'
import type { FanOut } from '../fanout.js'
import type { ResolvedHubOptions } from '../options.js'
import type { ResolvedChannel } from '../channels.js'
import { retentionOf } from '../publish.js'
import type { RoomRegistry } from '../rooms.js'
import { storedToFrame } from '../routing.js'
import { type Bucket, fullBucket, retryAfterMs, takeToken } from '../rate-limit.js'
import type { SubscriptionService } from '../subscriptions.js'

/** What history reads need from the hub. */
export interface HistoryHost {
  readonly clock: Clock
  readonly options: Pick<ResolvedHubOptions, 'store' | 'history' | 'limits'>
  readonly rooms: RoomRegistry
  readonly subscriptions: SubscriptionService
  readonly fanout: FanOut
}

/**
 * A message whose publish excluded the reader's user (`exclude: { users }`) is not in its history
 * or search results, as it was not in its replays. Connection exclusions are not applied here: a
 * client's own publishes exclude its connection (no echo), and it reads them back like any other.
 */
const hiddenFrom = (m: StoredMessage, conn: Connection): boolean => conn.userId !== undefined && m.exclude?.users?.includes(conn.userId) === true

/**
 * History on demand: the newest messages or pages from a position, read by anyone the channel's
 * history rule allows (the subscribe rule when it has none), each reply within `limits.maxReplyBytes` (a page that would pass it ends early with
 * `complete: false`).
 */
export class History {
  /** Client searches this node runs, all clients together (`limits.searchesPerSecond`). */
  private readonly searches: Bucket

  constructor(private readonly host: HistoryHost) {
    this.searches = fullBucket(host.options.limits.searchesPerSecond, host.clock.now())
  }

  async onHistory(conn: Connection, frame: ClientFrameOf<'history'>): Promise<void> {
    const resolved = this.host.subscriptions.resolve(frame.channel)
    // Decided on every request, subscribed or not (with the auth string the subscription was made
    // with): the history rule, or the subscribe rule when the channel has none.
    const denied = await this.host.subscriptions.authorize(conn, 'history', frame.channel, resolved, this.host.rooms.rooms.get(frame.channel), undefined)
    if (denied) throw new RealtimeError('RT_003', denied)
    const result = await this.read(frame.channel, resolved, { after: frame.since?.offset, limit: frame.limit })
    if (frame.since && result.epoch !== frame.since.epoch) {
      throw new RealtimeError('RT_004', 'epoch changed: the channel history was reset; read again without since', { epoch: result.epoch })
    }
    // A reply has a byte budget like any frame: a page that would pass it ends early, with
    // `complete: false` and the position to page on from.
    const budget = this.host.options.limits.maxReplyBytes - 512
    const messages: MessageFrame[] = []
    let bytes = 0
    let cut = false
    /** The last offset this page covers (messages left out for this reader included). */
    let covered: number | undefined
    for (const m of result.messages) {
      if (hiddenFrom(m, conn)) {
        covered = m.offset
        continue
      }
      const f = storedToFrame(m)
      const size = wireLength(conn.codec.encode(f)) + 1
      if (messages.length > 0 && bytes + size > budget) {
        cut = true
        break
      }
      messages.push(f)
      bytes += size
      covered = m.offset
    }
    this.host.fanout.sendFrame(conn, {
      type: 'history',
      id: frame.id,
      channel: frame.channel,
      messages,
      position: { epoch: result.epoch, offset: covered ?? frame.since?.offset ?? result.top },
      top: result.top,
      complete: result.complete && !cut,
    })
  }

  /** A client's `search`: who may read the channel's history may search it. */
  async onSearch(conn: Connection, frame: ClientFrameOf<'search'>): Promise<void> {
    const rate = this.host.options.limits.searchesPerSecond
    if (!takeToken(this.searches, rate, this.host.clock.now())) {
      throw new RealtimeError('RT_006', 'too many searches on this server: retry later', { retryAfterMs: retryAfterMs(this.searches, rate) })
    }
    const resolved = this.host.subscriptions.resolve(frame.channel)
    const denied = await this.host.subscriptions.authorize(conn, 'history', frame.channel, resolved, this.host.rooms.rooms.get(frame.channel), undefined)
    if (denied) throw new RealtimeError('RT_003', denied)
    const found = await this.search(frame.channel, resolved, frame.query, { limit: frame.limit, before: frame.before })
    const budget = this.host.options.limits.maxReplyBytes - 512
    const messages: MessageFrame[] = []
    let bytes = 0
    for (const m of found) {
      if (hiddenFrom(m, conn)) continue
      const f = storedToFrame(m)
      bytes += wireLength(conn.codec.encode(f)) + 1
      // Newest first: a reply over its byte budget ends early (page on with `before`).
      if (messages.length > 0 && bytes > budget) break
      messages.push(f)
    }
    this.host.fanout.sendFrame(conn, { type: 'search', id: frame.id, channel: frame.channel, messages })
  }

  /** Full-text search of a channel's retained history, newest first (the store's `search`). */
  async search(channel: string, resolved: ResolvedChannel, query: string, o: { limit?: number | undefined; before?: number | undefined }): Promise<StoredMessage[]> {
    if (!retentionOf(resolved.options, this.host.options.history)) throw new RealtimeError('RT_004', `'${channel}' keeps no history`)
    if (resolved.options.encrypted === true) throw new RealtimeError('RT_007', `'${channel}' is end-to-end encrypted: the server cannot search its messages`)
    const store = this.host.options.store
    if (typeof store.search !== 'function') throw new RealtimeError('RT_007', 'the hub’s message store cannot search (it has no search())')
    if (typeof query !== 'string' || query.length === 0 || query.length > 256) throw new RealtimeError('RT_007', 'a search query is 1 to 256 characters')
    const limit = Math.max(1, Math.min(Math.floor(o.limit ?? 20), 100))
    const before = o.before !== undefined && Number.isSafeInteger(o.before) && o.before > 0 ? o.before : undefined
    return [...(await store.search(channel, query, { limit, before, now: this.host.clock.now() }))]
  }

  async read(channel: string, resolved: ResolvedChannel, o: { after?: number | undefined; limit?: number | undefined }) {
    if (!retentionOf(resolved.options, this.host.options.history)) throw new RealtimeError('RT_004', `'${channel}' keeps no history`)
    const limit = Math.min(o.limit ?? 100, 1000)
    const store = this.host.options.store
    const now = this.host.clock.now()
    let after = o.after
    if (after === undefined) after = Math.max(0, (await store.position(channel)).offset - limit)
    const r = await store.read(channel, { after, limit, now })
    return { epoch: r.epoch, messages: [...r.messages], top: r.top, complete: r.complete || o.after === undefined }
  }
}
