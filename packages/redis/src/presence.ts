import { createHash } from 'node:crypto'
import { type PresenceChange, type PresenceEntry, type PresenceStore, presenceMember, presenceMembers, presenceRemoval } from '@tidings/core'
import type { RedisClient } from './client.js'
import { CHANNEL_SCRIPT, DEAD_NODES_SCRIPT, NODE_SCRIPT, SEEN_SCRIPT } from './presence-scripts.js'

export interface RedisPresenceStoreOptions {
  /** The app's ioredis client or cluster. The store defines its scripts on it and never closes it. */
  readonly client: RedisClient
  /** First part of every key. Default `'tidings:'`. */
  readonly prefix?: string | undefined
  /**
   * How many users' last-seen times are kept (one sorted set); beyond it, those seen longest ago
   * are forgotten. Default 100,000 (as the memory store).
   */
  readonly maxLastSeen?: number | undefined
  /** Entries of a dead node removed per round trip by `removeNode`. Default 256. */
  readonly removeBatch?: number | undefined
  /**
   * Called by `heartbeat` when the node's previous heartbeat (made through this store) is gone
   * from Redis: Redis lost its data (a restart without persistence, a failover to a replica that
   * had not caught up) or another node judged this one dead and removed it. Either way the
   * node's presence entries may be gone, and the node should join them again.
   */
  readonly onLost?: ((nodeId: string) => void) | undefined
}

/** The scripts, as ioredis commands defined on the client (EVALSHA, EVAL after a NOSCRIPT). */
interface Scripted {
  tidingsPresenceChannel(entries: string, users: string, ...args: string[]): Promise<unknown>
  tidingsPresenceNode(heartbeats: string, activity: string, index: string, ...args: string[]): Promise<unknown>
  tidingsPresenceDead(heartbeats: string, activity: string, now: string, ttl: string, since: string): Promise<string[]>
  tidingsPresenceSeen(lastSeen: string, max: string, ...pairs: string[]): Promise<unknown>
}

type RemoveResult = Array<{ channel: string; change: PresenceChange }>

/**
 * A PresenceStore on Redis, for hubs on many nodes (standalone Redis or Redis Cluster).
 *
 * Keys (prefix `tidings:`):
 * - per channel, under the channel's hash tag: `presence:{<channel>}:e` (the entries) and
 *   `presence:{<channel>}:u` (per user, its connections in update order); every change of a
 *   channel is one Lua script, which also decides the user-level edge (remove-once: a removal
 *   is reported only by the call that deleted the entry);
 * - per cluster, under the tag `{nodes}`: `presence:{nodes}:hb` (heartbeats), `presence:{nodes}:act`
 *   (the newest activity of nodes holding entries) and `presence:{nodes}:node:<nodeId>` (the
 *   index of a node's entries, so `removeNode` reads only that node's entries);
 * - `presence:last-seen`: users' last-seen times, bounded by `maxLastSeen`.
 *
 * A channel whose name holds `{` or `}` (or is empty) is tagged by the SHA-1 of its name instead.
 * The node index is written before an entry (join) and after it is gone (leave), so it lists at
 * least every entry a node holds.
 */
export function createRedisPresenceStore(options: RedisPresenceStoreOptions): PresenceStore {
  const client = options.client
  const prefix = options.prefix ?? 'tidings:'
  const maxLastSeen = String(options.maxLastSeen ?? 100_000)
  const batch = options.removeBatch ?? 256
  defineScripts(client)
  const redis = client as unknown as Scripted

  const HB = `${prefix}presence:{nodes}:hb`
  const ACT = `${prefix}presence:{nodes}:act`
  const LAST_SEEN = `${prefix}presence:last-seen`
  const nodeIndex = (nodeId: string) => `${prefix}presence:{nodes}:node:${nodeId}`
  const channelKeys = (channel: string): [string, string] => {
    if (channel !== '' && !/[{}]/.test(channel)) return [`${prefix}presence:{${channel}}:e`, `${prefix}presence:{${channel}}:u`]
    const tag = createHash('sha1').update(channel).digest('hex')
    return [`${prefix}presence:{${tag}}:x:e`, `${prefix}presence:{${tag}}:x:u`]
  }
  const ref = (channel: string, connectionId: string) => JSON.stringify([channel, connectionId])

  const channelOp = (channel: string, ...args: string[]) => redis.tidingsPresenceChannel(...channelKeys(channel), ...args)
  const nodeOp = (op: string, nodeId: string, ...args: string[]) => redis.tidingsPresenceNode(HB, ACT, nodeIndex(nodeId), op, nodeId, ...args)
  const seen = (pairs: string[]) => (pairs.length === 0 ? undefined : redis.tidingsPresenceSeen(LAST_SEEN, maxLastSeen, ...pairs))

  /** The nodes this store has heartbeated (to notice that their heartbeat vanished). */
  const beating = new Set<string>()

  /** Operations on one entry from this store run in call order (join, update and leave of one connection). */
  const inFlight = new Map<string, Promise<unknown>>()
  const inOrder = <T>(channel: string, connectionId: string, fn: () => Promise<T>): Promise<T> => {
    const k = ref(channel, connectionId)
    const before = inFlight.get(k)
    const run = before ? before.then(fn, fn) : fn()
    const tail = run.then(
      () => undefined,
      () => undefined,
    )
    inFlight.set(k, tail)
    void tail.then(() => {
      if (inFlight.get(k) === tail) inFlight.delete(k)
    })
    return run
  }

  /** The channel script's leave; `onlyNode` ('' for any) is the node the entry must still be held by. */
  const removeEntry = async (channel: string, connectionId: string, now: number, onlyNode: string): Promise<{ change: PresenceChange; nodeId: string } | undefined> => {
    const r = (await channelOp(channel, 'leave', connectionId, onlyNode)) as [number, string, string[]] | null
    if (!r) return undefined
    const [edge, nodeId, raw] = r
    // The rows: the removed entry on the user's leave edge, else the user's remaining entries.
    const rows = parseRows(channel, raw)
    return { nodeId, change: presenceRemoval(rows[0]!, edge === 1 ? [] : rows, now) }
  }

  return {
    join(entry) {
      return inOrder(entry.channel, entry.connectionId, async () => {
        const r = ref(entry.channel, entry.connectionId)
        await nodeOp('track', entry.nodeId, String(Math.max(entry.joinedAt, entry.updatedAt)), r)
        const [edge, replaced, raw] = (await channelOp(
          entry.channel,
          'join',
          entry.connectionId,
          entry.userId,
          entry.nodeId,
          entry.state,
          JSON.stringify(entry.data ?? {}),
          String(entry.joinedAt),
          String(entry.updatedAt),
        )) as [number, string, string[]]
        if (replaced !== '' && replaced !== entry.nodeId) await nodeOp('untrack', replaced, r)
        return { edge: edge === 1, member: presenceMember(parseRows(entry.channel, raw)) }
      })
    },

    update(channel, connectionId, patch) {
      return inOrder(channel, connectionId, async () => {
        const r = (await channelOp(
          channel,
          'update',
          connectionId,
          patch.state === undefined ? '0' : '1',
          patch.state ?? '',
          patch.data === undefined ? '0' : '1',
          patch.data === undefined ? '' : JSON.stringify(patch.data),
          String(patch.now),
        )) as [string, string[]] | null
        if (!r) return undefined
        const [nodeId, raw] = r
        const rows = parseRows(channel, raw)
        const member = presenceMember(rows)
        await Promise.all([nodeOp('touch', nodeId, String(patch.now)), seen([member.id, String(patch.now)])])
        return member
      })
    },

    leave(channel, connectionId, now) {
      return inOrder(channel, connectionId, async () => {
        const removed = await removeEntry(channel, connectionId, now, '')
        if (!removed) return undefined
        await Promise.all([seen([removed.change.member.id, String(now)]), nodeOp('untrack', removed.nodeId, ref(channel, connectionId))])
        return removed.change
      })
    },

    async members(channel) {
      return presenceMembers(parseRows(channel, (await channelOp(channel, 'read')) as string[]))
    },

    async entries(channel) {
      return parseRows(channel, (await channelOp(channel, 'read')) as string[])
    },

    async lastSeen(userId) {
      const score = await client.zscore(LAST_SEEN, userId)
      return score === null ? undefined : Number(score)
    },

    async removeNode(nodeId, now) {
      const out: RemoveResult = []
      await client.zrem(HB, nodeId)
      const index = nodeIndex(nodeId)
      let cursor = '0'
      do {
        const [next, refs] = await client.sscan(index, cursor, 'COUNT', batch)
        cursor = next
        if (refs.length === 0) continue
        // Each entry is removed by the channel script only if it is still there and still this
        // node's: of several callers racing, exactly one reports it.
        const removed = await Promise.all(
          refs.map(async (r) => {
            const [channel, connectionId] = JSON.parse(r) as [string, string]
            const one = await removeEntry(channel, connectionId, now, nodeId)
            return one && { channel, change: one.change }
          }),
        )
        const pairs: string[] = []
        for (const c of removed) {
          if (!c) continue
          out.push(c)
          pairs.push(c.change.member.id, String(now))
        }
        await Promise.all([seen(pairs), nodeOp('untrack', nodeId, ...refs)])
      } while (cursor !== '0')
      return out
    },

    async heartbeat(nodeId, now) {
      const had = beating.has(nodeId)
      const found = (await nodeOp('beat', nodeId, String(now))) === 1
      beating.add(nodeId)
      if (had && !found) options.onLost?.(nodeId)
      return found
    },

    async deadNodes(now, ttlMs) {
      return redis.tidingsPresenceDead(HB, ACT, String(now), String(ttlMs), String(now - ttlMs))
    },

    async liveNodes(now, ttlMs) {
      return client.zrangebyscore(HB, String(now - ttlMs), '+inf')
    },
  }
}

function defineScripts(client: RedisClient): void {
  const c = client as unknown as Partial<Scripted> & RedisClient
  if (typeof c.tidingsPresenceChannel !== 'function') client.defineCommand('tidingsPresenceChannel', { lua: CHANNEL_SCRIPT, numberOfKeys: 2 })
  if (typeof c.tidingsPresenceNode !== 'function') client.defineCommand('tidingsPresenceNode', { lua: NODE_SCRIPT, numberOfKeys: 3 })
  if (typeof c.tidingsPresenceDead !== 'function') client.defineCommand('tidingsPresenceDead', { lua: DEAD_NODES_SCRIPT, numberOfKeys: 2 })
  if (typeof c.tidingsPresenceSeen !== 'function') client.defineCommand('tidingsPresenceSeen', { lua: SEEN_SCRIPT, numberOfKeys: 1 })
}

/** Rows of the channel script: 7 strings per entry. */
function parseRows(channel: string, raw: readonly string[]): PresenceEntry[] {
  const rows: PresenceEntry[] = []
  for (let i = 0; i + 6 < raw.length; i += 7) {
    rows.push({
      channel,
      connectionId: raw[i]!,
      userId: raw[i + 1]!,
      nodeId: raw[i + 2]!,
      state: raw[i + 3]!,
      data: JSON.parse(raw[i + 4]!) as Record<string, unknown>,
      joinedAt: Number(raw[i + 5]),
      updatedAt: Number(raw[i + 6]),
    })
  }
  return rows
}
