import { type ClientFrameOf, RealtimeError, wireLength } from '@tidings/protocol'
import type { ConsumerChannel } from '../ports/store.js'
import type { Connection } from './connection.js'
import type { FanOut } from './fanout.js'
import type { ResolvedHubOptions } from './options.js'
import type { RoomRegistry } from './rooms.js'
import type { SubscriptionService } from './subscriptions.js'

/** Rule decisions a channel list runs at once. */
const AUTHORIZE_AT_ONCE = 16

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
    const limit = Math.max(1, Math.min(Math.floor(o.limit ?? 100), 500))
    return [...(await store.channelsOf(userId, { limit }))]
  }

  /** A client's `channels` frame: its user's list, less the channels it may no longer subscribe to. */
  async onChannels(conn: Connection, frame: ClientFrameOf<'channels'>): Promise<void> {
    if (conn.userId === undefined) throw new RealtimeError('RT_003', 'an anonymous connection has no channel list')
    const listed = await this.forUser(conn.userId, { limit: frame.limit })
    const may = async (name: string): Promise<boolean> => {
      try {
        const resolved = this.host.subscriptions.resolve(name)
        return (await this.host.subscriptions.authorize(conn, 'subscribe', name, resolved, this.host.rooms.rooms.get(name), undefined)) === undefined
      } catch {
        return false // no pattern matches it any more, or the rule failed: not listed
      }
    }
    // The app's rules decide, AUTHORIZE_AT_ONCE at a time (a list of 500 is not 500 calls at once).
    const allowed: boolean[] = []
    for (let i = 0; i < listed.length; i += AUTHORIZE_AT_ONCE) allowed.push(...(await Promise.all(listed.slice(i, i + AUTHORIZE_AT_ONCE).map((e) => may(e.name)))))
    const budget = this.host.options.limits.maxReplyBytes - 512
    const channels: ConsumerChannel[] = []
    let bytes = 0
    for (const [i, entry] of listed.entries()) {
      if (!allowed[i]) continue
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
