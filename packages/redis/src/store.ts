import { createHash, randomUUID } from 'node:crypto'
import {
  type AsyncMessageStore,
  type ConsumerChannel,
  type ConsumerCursor,
  type MessageStore,
  type ReviseResult,
  type Revision,
  type StoredMessage,
  holdsWords,
  searchWords,
} from '@tidings/core'
import { type RedisClient, isCluster } from './client.js'
import { fromBody, fromSlim, overlay, toBody, toRevision, toSlim } from './store-body.js'
import { APPEND, CHANNEL, COMMIT, CURSORS, POSITION, READ, REMEMBER_CHANNEL, REVISE, SEARCH_PAGE } from './store-scripts.js'
import { slotTag, tagSlot } from './store-slot.js'

export interface RedisStoreOptions {
  /** The app's ioredis client or cluster. The store never closes it. */
  readonly client: RedisClient
  /**
   * First part of every key (default `'tidings:'`). Must not contain `{` or `}`: each channel's
   * keys carry the channel as their hash tag, so they live in one Redis Cluster slot.
   */
  readonly prefix?: string | undefined
  /** Dedup window when an append gives an idempotency key but no `dedupWindowMs`. Default 600,000 ms. */
  readonly dedupWindowMs?: number | undefined
}

/** What the store holds under its prefix (scans every key: for tests and operations, not hot paths). */
export interface RedisStoreStats {
  /** Channel logs (channels appended to). */
  readonly channels: number
  /** Bytes of retained messages (sizes as measured at append). */
  readonly bytes: number
  /** Retained messages. */
  readonly messages: number
}

export interface RedisMessageStore extends AsyncMessageStore {
  /** Edits or deletes a retained message (kept beside the stream, overlaid on every read). */
  revise(channel: string, offset: number, revision: Revision, options: { readonly now: number }): Promise<ReviseResult | undefined>
  /**
   * Full-text search, scanning the retained stream newest first in pages: at most 10,000
   * messages are looked at per call, so a rare word in a long log can go unfound; page on
   * with `before`.
   */
  search(channel: string, query: string, options: { readonly limit: number; readonly before?: number | undefined; readonly now: number }): Promise<StoredMessage[]>
  /** The channels where the consumer has a cursor (of the 10,000 it committed in most recently). */
  channelsOf(consumer: string, options: { readonly limit: number }): Promise<ConsumerChannel[]>
  /** Scans the keys under the prefix (every master of a cluster). */
  stats(): Promise<RedisStoreStats>
  /** Resolves; the app's client stays open. */
  close(): Promise<void>
}

/** A bound given as Infinity (or absurdly large) as Lua can read it. */
const UNBOUNDED = 1e15
const bound = (n: number | undefined): string => (n === undefined || !Number.isFinite(n) || n > UNBOUNDED ? String(UNBOUNDED) : String(Math.max(0, Math.floor(n))))

/** The channel as a hash tag: `%` and `}` escaped (so the tag ends where it should), `%` alone for ''. */
export function channelTag(channel: string): string {
  return channel === '' ? '%' : channel.replaceAll('%', '%25').replaceAll('}', '%7D')
}

/** A short, stable hash of a channel name (FNV-1a, 32 bits), so channels of one slot get different epochs. */
function nameHash(name: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193)
  return (h >>> 0).toString(36)
}

/** Messages a search looks at, at most, per call (newest first). */
export const SEARCH_SCAN_LIMIT = 10_000
/** Channels a consumer's list keeps (those it committed in most recently); the oldest go beyond. */
export const CONSUMER_CHANNELS_LIMIT = 10_000
/** Cursors of a channel counted exactly for `activeUsers`; beyond, the cursor hash's length. */
const ACTIVE_USERS_EXACT = 1_000
/** Messages one search script returns. */
const SEARCH_PAGE_SIZE = 200

/** A fresh identity for a slot whose identity is gone (only used when the script finds none). */
const candidate = () => randomUUID().replaceAll('-', '').slice(0, 12)

/** A stream entry as Redis answers it: id `<offset>-0` and fields `m`, `t`, `z`. */
type Entry = [id: string, fields: string[]]

const entryOffset = ([id]: Entry): number => Number(id.slice(0, id.indexOf('-')))

const fromEntry = (channel: string, entry: Entry, revision: string | null | undefined): StoredMessage => overlay(fromBody(channel, entryOffset(entry), entry[1][1]!), revision)

function isNoScript(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('NOSCRIPT')
}

/**
 * The MessageStore on Redis: one Stream per channel with ids `<offset>-0` (offsets exact and
 * dense), a meta hash (epoch, newest offset, oldest retained offset, bytes, retention), consumer
 * cursors in a hash (`<epoch>|<offset>`), idempotency keys expiring with the dedup window; every
 * call on a channel is one Lua script, and every key of a channel carries the channel as its hash
 * tag, so it works on a Redis Cluster.
 *
 * Epochs: `<identity>.<hash of the channel>`, where the identity is a random id kept in one key
 * per cluster slot (one key on a standalone Redis) and created by the first call that finds none.
 * When Redis loses its data (FLUSHALL, a restart without persistence) the identity goes with the
 * channels, so every channel comes back in a new epoch, never with offsets restarting in the old
 * one. Reads create no channel keys (at most that one identity key per slot).
 *
 * Optional methods: `revise` keeps new versions in a hash beside the stream (overlaid on every
 * read, trimmed with the messages retention drops), `search` scans the retained stream newest
 * first, `channelsOf` reads a sorted set of channels per consumer (see store-scripts.ts).
 *
 * Run Redis with `maxmemory-policy noeviction` (or a `volatile-*` policy: only idempotency keys
 * expire): a key evicted from under a channel loses history the store cannot always see.
 */
export function createRedisStore(options: RedisStoreOptions): RedisMessageStore {
  const client = options.client
  const prefix = options.prefix ?? 'tidings:'
  if (prefix.includes('{') || prefix.includes('}')) throw new TypeError('createRedisStore: prefix must not contain { or } (each channel is its keys’ hash tag)')
  const defaultWindow = options.dedupWindowMs ?? 600_000
  const cluster = isCluster(client)
  const standaloneIdentity = `${prefix}store`

  const scripts = new Map<string, string>()
  const sha = (source: string) => {
    let s = scripts.get(source)
    if (s === undefined) scripts.set(source, (s = createHash('sha1').update(source).digest('hex')))
    return s
  }
  /** EVALSHA, loading the script (EVAL) when the node does not have it (first use, restart, SCRIPT FLUSH). */
  const run = async (source: string, keys: string[], args: Array<string | number>): Promise<unknown> => {
    try {
      return await client.evalsha(sha(source), keys.length, ...keys, ...args)
    } catch (error) {
      if (!isNoScript(error)) throw error
      return client.eval(source, keys.length, ...keys, ...args)
    }
  }

  interface Keys {
    readonly meta: string
    readonly stream: string
    readonly cursors: string
    readonly revisions: string
    readonly identity: string
    readonly base: string
    readonly suffix: string
  }
  const keysOf = (channel: string): Keys => {
    const tag = channelTag(channel)
    const base = `${prefix}{${tag}}:`
    return {
      base,
      meta: `${base}m`,
      stream: `${base}s`,
      cursors: `${base}c`,
      revisions: `${base}r`,
      identity: cluster ? `${prefix}store{${slotTag(tagSlot(tag))}}` : standaloneIdentity,
      suffix: nameHash(channel),
    }
  }

  /** A consumer's channel list (a sorted set in the consumer's own slot). */
  const listOf = (consumer: string) => `${prefix}u{${channelTag(consumer)}}`

  const parseCursor = (v: string): ConsumerCursor | undefined => {
    const bar = v.lastIndexOf('|')
    if (bar < 0) return undefined
    return { epoch: v.slice(0, bar), offset: Number(v.slice(bar + 1)) }
  }

  /** Each master of a cluster, or the client itself. */
  const masters = async () => (cluster ? client.nodes('master') : [client])

  return {
    async append(channel, input, opts) {
      const k = keysOf(channel)
      const body = toBody(input)
      const size = opts.size !== undefined && Number.isFinite(opts.size) && opts.size >= 0 ? Math.ceil(opts.size) : Buffer.byteLength(body)
      const retention = opts.retention
      const key = opts.idempotencyKey
      const asked = opts.dedupWindowMs ?? defaultWindow
      const window = Number.isNaN(asked) ? defaultWindow : Math.max(0, Math.min(asked, UNBOUNDED))
      const slim = key !== undefined ? toSlim(input) : ''
      const reply = (await run(
        APPEND,
        [k.meta, k.stream, k.identity, key !== undefined ? `${k.base}k:${key}` : `${k.base}k`, k.cursors, k.revisions],
        [
          k.suffix,
          candidate(),
          String(opts.now),
          bound(retention.maxCount),
          bound(retention.maxAgeMs),
          retention.maxBytes === undefined ? '' : bound(retention.maxBytes),
          String(size),
          body,
          String(input.timestamp),
          key !== undefined ? '1' : '0',
          String(window),
          slim,
          String(Math.max(1, Math.ceil(window))),
        ],
      )) as [number, string, number, string?, string?, (string | null)?]
      const [duplicate, epoch, offset] = reply
      if (duplicate === 1) {
        const held = reply[3]
        const message = held ? overlay(fromBody(channel, offset, held), reply[5]) : fromSlim(channel, offset, reply[4]!)
        return { message, epoch, duplicate: true }
      }
      return { message: fromBody(channel, offset, body), epoch, duplicate: false }
    },

    async read(channel, opts) {
      const k = keysOf(channel)
      const limit = Math.max(0, Math.min(Math.floor(opts.limit), 1_000_000))
      const [epoch, top, complete, entries, revisions] = (await run(
        READ,
        [k.meta, k.stream, k.revisions, k.identity],
        [String(Math.max(0, Math.floor(opts.after))), String(limit), String(opts.now), k.suffix, candidate()],
      )) as [string, number, number, Entry[], Array<string | null>]
      const messages = entries.map((entry, i) => fromEntry(channel, entry, revisions[i]))
      return { epoch, messages, top, complete: complete === 1 }
    },

    async position(channel) {
      const k = keysOf(channel)
      const [epoch, offset] = (await run(POSITION, [k.meta, k.identity], [k.suffix, candidate()])) as [string, number]
      return { epoch, offset }
    },

    async cursor(channel, consumer) {
      const v = await client.hget(keysOf(channel).cursors, consumer)
      return v === null ? undefined : parseCursor(v)
    },

    async commit(channel, consumer, offset) {
      const k = keysOf(channel)
      const list = listOf(consumer)
      const score = String(Date.now())
      const cap = String(CONSUMER_CHANNELS_LIMIT)
      // On a standalone Redis the script keeps the consumer's list too; a cluster keeps it in another slot.
      const wrote = await run(COMMIT, cluster ? [k.meta, k.cursors] : [k.meta, k.cursors, list], [consumer, String(Math.max(0, Math.floor(offset))), channel, score, cap])
      if (cluster && wrote === 1) await run(REMEMBER_CHANNEL, [list], [channel, score, cap])
    },

    async cursors(channel) {
      const k = keysOf(channel)
      const flat = (await run(CURSORS, [k.meta, k.cursors], [])) as string[]
      const out: Record<string, number> = {}
      for (let i = 0; i < flat.length; i += 2) out[flat[i]!] = Number(flat[i + 1])
      return out
    },

    async revise(channel, offset, revision, opts) {
      if (!Number.isSafeInteger(offset) || offset < 1) return undefined
      const k = keysOf(channel)
      const value = toRevision(revision)
      const reply = (await run(REVISE, [k.meta, k.stream, k.revisions], [String(offset), value, String(opts.now)])) as [number, string] | null
      if (reply === null) return undefined
      const [version, body] = reply
      const message = overlay(fromBody(channel, offset, body), `${version}|${value}`) as StoredMessage & { version: number }
      return { message }
    },

    async search(channel, query, opts) {
      const wanted = searchWords(query)
      const limit = Math.max(1, Math.floor(opts.limit))
      if (wanted.length === 0) return []
      const k = keysOf(channel)
      const out: StoredMessage[] = []
      let hi = opts.before !== undefined ? Math.floor(opts.before) - 1 : undefined
      if (hi !== undefined && hi < 1) return []
      let scanned = 0
      while (out.length < limit && scanned < SEARCH_SCAN_LIMIT) {
        const count = Math.min(SEARCH_PAGE_SIZE, SEARCH_SCAN_LIMIT - scanned)
        const reply = (await run(SEARCH_PAGE, [k.meta, k.stream, k.revisions], [hi === undefined ? '' : String(hi), String(count), String(opts.now)])) as [number, Entry[], Array<string | null>] | null
        if (reply === null) break
        const [first, entries, revisions] = reply
        for (const [i, entry] of entries.entries()) {
          const m = fromEntry(channel, entry, revisions[i])
          if (m.deleted || m.revises !== undefined || !holdsWords(m.data, wanted)) continue
          out.push(m)
          if (out.length === limit) break
        }
        scanned += entries.length
        if (entries.length < count) break
        hi = entryOffset(entries.at(-1)!) - 1
        if (hi < first) break
      }
      return out
    },

    async channelsOf(consumer, opts) {
      const limit = Math.max(1, Math.floor(opts.limit))
      const list = listOf(consumer)
      const names = await client.zrevrange(list, 0, CONSUMER_CHANNELS_LIMIT - 1)
      const out: ConsumerChannel[] = []
      const stale: string[] = []
      const one = async (name: string) => {
        const k = keysOf(name)
        const reply = (await run(CHANNEL, cluster ? [k.meta, k.cursors, k.stream] : [k.meta, k.cursors, k.stream, list], [consumer, name, String(ACTIVE_USERS_EXACT)])) as
          | [number, number, number, string, number]
          | null
        if (reply === null) {
          stale.push(name)
          return
        }
        const [lastSeenOffset, top, unread, activity, activeUsers] = reply
        out.push({ name, lastSeenOffset, top, unread, lastActivity: activity === '' ? null : Number(activity), activeUsers })
      }
      for (let i = 0; i < names.length; i += 64) await Promise.all(names.slice(i, i + 64).map(one))
      // A standalone Redis removed stale entries in the script; on a cluster the list is in another slot.
      if (cluster && stale.length > 0) await client.zrem(list, ...stale)
      out.sort((a, b) => (b.lastActivity ?? 0) - (a.lastActivity ?? 0) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      return out.slice(0, limit)
    },

    async stats() {
      const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}{*}:m`
      const exact = (key: string) => key.startsWith(`${prefix}{`) && key.endsWith('}:m') && !key.slice(prefix.length + 1, -3).includes('}')
      let channels = 0
      let bytes = 0
      let messages = 0
      for (const node of await masters()) {
        let cursor = '0'
        do {
          const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
          cursor = next
          for (const key of keys.filter(exact)) {
            const [b, first, top] = await node.hmget(key, 'bytes', 'first', 'top')
            if (b === null) continue
            channels++
            bytes += Number(b)
            messages += Number(top) - Number(first) + 1
          }
        } while (cursor !== '0')
      }
      return { channels, bytes, messages }
    },

    async close() {},
  }
}
