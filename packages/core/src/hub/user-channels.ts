import { type ClientFrameOf, RealtimeError, wireLength } from '@tidings/protocol'
import type { ConsumerChannel } from '../ports/store.js'
import type { Connection } from './connection.js'
import type { FanOut } from './fanout.js'
import type { ResolvedHubOptions } from './options.js'
import type { RoomRegistry } from './rooms.js'
import type { SubscriptionService } from './subscriptions.js'

/** Rule decisions a channel list runs at once. */
const AUTHORIZE_AT_ONCE = 16
/** The most channels one list holds (and asks the store for). */
const LIST_MAX = 500

/** What the channel list needs from the hub. */
export interface UserChannelsHost {
  readonly options: Pick<ResolvedHubOptions, 'store' | 'limits'>
  readonly rooms: RoomRegistry
  readonly subscriptions: Pick<SubscriptionService, 'resolve' | 'authorize'>
  readonly fanout: FanOut
}

/**
 * A user's channels (seed 002's channel list): the channels where the store keeps a cursor for the
 * user (those with an `offline` queue it subscribed to), with unread counts and last activity,
 * from the store's `channelsOf`. A client sees only the channels it may still subscribe to.
 */
export class UserChannels {
  constructor(private readonly host: UserChannelsHost) {}

  /** Server code: `hub.channels.forUser`. */
  async forUser(userId: string, o: { readonly limit?: number | undefined } = {}): Promise<ConsumerChannel[]> {
    const store = this.host.options.store
    if (typeof store.channelsOf !== 'function') throw new RealtimeError('RT_007', 'the hub’s message store keeps no channel lists (it has no channelsOf())')
    if (typeof userId !== 'string' || userId.length === 0) throw new RealtimeError('RT_007', 'a user id is a non-empty string')
    // No store keeps one (PostgreSQL text cannot hold a NUL): refused alike by every store.
    if (userId.includes('\u0000')) throw new RealtimeError('RT_007', 'a user id has no NUL character')
    const limit = Math.max(1, Math.min(Math.floor(o.limit ?? 100), LIST_MAX))
    return [...(await store.channelsOf(userId, { limit }))]
  }

  /**
   * A client's `channels` frame: its user's list, less the channels it may no longer subscribe
   * to. Those do not take places in `limit`: while the store had more than was asked and some were
   * left out, it is asked again for more (four times as many, up to {@link LIST_MAX}), each
   * channel decided once; at most LIST_MAX rule decisions per request, as a list of LIST_MAX costs.
   */
  async onChannels(conn: Connection, frame: ClientFrameOf<'channels'>): Promise<void> {
    const userId = conn.userId
    if (userId === undefined) throw new RealtimeError('RT_003', 'an anonymous connection has no channel list')
    const limit = Math.max(1, Math.min(Math.floor(frame.limit ?? 100), LIST_MAX))
    const may = async (name: string): Promise<boolean> => {
      try {
        const resolved = this.host.subscriptions.resolve(name)
        return (await this.host.subscriptions.authorize(conn, 'subscribe', name, resolved, this.host.rooms.rooms.get(name), undefined)) === undefined
      } catch {
        return false // no pattern matches it any more, or the rule failed: not listed
      }
    }
    const decided = new Map<string, boolean>()
    let asked = limit
    let kept: ConsumerChannel[]
    for (;;) {
      const listed = await this.forUser(userId, { limit: asked })
      // The app's rules decide, AUTHORIZE_AT_ONCE at a time (a list of 500 is not 500 calls at once).
      const fresh = [...new Set(listed.map((e) => e.name).filter((name) => !decided.has(name)))]
      for (let i = 0; i < fresh.length; i += AUTHORIZE_AT_ONCE) {
        const batch = fresh.slice(i, i + AUTHORIZE_AT_ONCE)
        const answers = await Promise.all(batch.map(may))
        batch.forEach((name, j) => decided.set(name, answers[j]!))
      }
      kept = listed.filter((e) => decided.get(e.name) === true).slice(0, limit)
      if (kept.length >= limit || listed.length < asked || asked >= LIST_MAX) break
      asked = Math.min(LIST_MAX, asked * 4)
    }
    const budget = this.host.options.limits.maxReplyBytes - 512
    const channels: ConsumerChannel[] = []
    let bytes = 0
    for (const entry of kept) {
      const item: ConsumerChannel = {
        name: entry.name,
        unread: entry.unread,
        lastSeenOffset: entry.lastSeenOffset,
        top: entry.top,
        lastActivity: entry.lastActivity,
        ...(entry.kind !== undefined ? { kind: entry.kind } : {}),
        ...(entry.activeUsers !== undefined ? { activeUsers: entry.activeUsers } : {}),
      }
      bytes += wireLength(conn.codec.encode({ type: 'channels', channels: [item] })) + 1
      if (bytes > budget) break
      channels.push(item)
    }
    this.host.fanout.sendFrame(conn, { type: 'channels', id: frame.id, channels })
  }
}
