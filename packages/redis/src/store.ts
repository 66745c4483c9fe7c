import { createHash, randomUUID } from 'node:crypto'
import type { AppendOptions, AppendResult, ConsumerCursor, MessageStore, ReadOptions, ReadResult, StoredMessage, StreamPosition } from '@tidings/core'
import { type RedisClient, isCluster } from './client.js'
import { APPEND, COMMIT, CURSORS, POSITION, READ } from './store-scripts.js'
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

export interface RedisMessageStore extends MessageStore {
  append(channel: string, message: Omit<StoredMessage, 'offset' | 'channel'>, options: AppendOptions): Promise<AppendResult>
  read(channel: string, options: ReadOptions): Promise<ReadResult>
  position(channel: string): Promise<StreamPosition>
  cursor(channel: string, consumer: string): Promise<ConsumerCursor | undefined>
  commit(channel: string, consumer: string, offset: number): Promise<void>
  cursors(channel: string): Promise<Record<string, number>>
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

/** A fresh identity for a slot whose identity is gone (only used when the script finds none). */
const candidate = () => randomUUID().replaceAll('-', '').slice(0, 12)

type Body = [id: string, event: string, data: unknown, sender: string | null, timestamp: number, exclude: StoredMessage['exclude'] | null]
type Slim = [id: string, event: string, sender: string | null, timestamp: number]

function fromBody(channel: string, offset: number, json: string): StoredMessage {
  const [id, event, data, sender, timestamp, exclude] = JSON.parse(json) as Body
  return { offset, id, channel, event, data, sender: sender ?? undefined, timestamp, exclude: exclude ?? undefined }
}

function fromSlim(channel: string, offset: number, json: string): StoredMessage {
  const [id, event, sender, timestamp] = JSON.parse(json) as Slim
  return { offset, id, channel, event, data: undefined, sender: sender ?? undefined, timestamp }
}

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
      identity: cluster ? `${prefix}store{${slotTag(tagSlot(tag))}}` : standaloneIdentity,
      suffix: nameHash(channel),
    }
  }

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
      const body = JSON.stringify([input.id, input.event, input.data, input.sender ?? null, input.timestamp, input.exclude ?? null] satisfies Body)
      const size = opts.size !== undefined && Number.isFinite(opts.size) && opts.size >= 0 ? Math.ceil(opts.size) : Buffer.byteLength(body)
      const retention = opts.retention
      const key = opts.idempotencyKey
      const asked = opts.dedupWindowMs ?? defaultWindow
      const window = Number.isNaN(asked) ? defaultWindow : Math.max(0, Math.min(asked, UNBOUNDED))
      const slim = key !== undefined ? JSON.stringify([input.id, input.event, input.sender ?? null, input.timestamp] satisfies Slim) : ''
      const reply = (await run(
        APPEND,
        [k.meta, k.stream, k.identity, key !== undefined ? `${k.base}k:${key}` : `${k.base}k`, k.cursors],
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
      )) as [number, string, number, string?, string?]
      const [duplicate, epoch, offset] = reply
      if (duplicate === 1) {
        const held = reply[3]
        const message = held ? fromBody(channel, offset, held) : fromSlim(channel, offset, reply[4]!)
        return { message, epoch, duplicate: true }
      }
      return { message: fromBody(channel, offset, body), epoch, duplicate: false }
    },

    async read(channel, opts) {
      const k = keysOf(channel)
      const limit = Math.max(0, Math.min(Math.floor(opts.limit), 1_000_000))
      const [epoch, top, complete, entries] = (await run(READ, [k.meta, k.stream, k.identity], [String(Math.max(0, Math.floor(opts.after))), String(limit), String(opts.now), k.suffix, candidate()])) as [
        string,
        number,
        number,
        Array<[string, string[]]>,
      ]
      const messages = entries.map(([id, fields]) => fromBody(channel, Number(id.slice(0, id.indexOf('-'))), fields[1]!))
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
      await run(COMMIT, [k.meta, k.cursors], [consumer, String(Math.max(0, Math.floor(offset)))])
    },

    async cursors(channel) {
      const k = keysOf(channel)
      const flat = (await run(CURSORS, [k.meta, k.cursors], [])) as string[]
      const out: Record<string, number> = {}
      for (let i = 0; i < flat.length; i += 2) out[flat[i]!] = Number(flat[i + 1])
      return out
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
