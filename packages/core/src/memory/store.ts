import type { StreamPosition } from '@tidings/protocol'
import type { AppendOptions, AppendResult, ConsumerChannel, ConsumerCursor, MessageStore, ReadOptions, ReadResult, Retention, ReviseResult, Revision, StoredMessage, UserErasure } from '../ports/store.js'
import { boundedMap, cloneData, randomId } from '../util.js'
import { LRUCache } from 'lru-cache'
import { holdsWords, searchWords } from '../text-search.js'

interface ChannelLog {
  readonly channel: string
  readonly epoch: string
  /**
   * Retained messages, oldest first, from index `head` on: `messages[head + i].offset === first + i`,
   * and `sizes[head + i]` is that message's size as measured at its append. Trimming moves `head`
   * instead of shifting the arrays; they are compacted once half of them is dead, so an append
   * costs O(1) amortised.
   */
  messages: Array<StoredMessage | undefined>
  sizes: number[]
  head: number
  /** Offset of messages[head] (top + 1 when empty). */
  first: number
  top: number
  /** Bytes of the retained messages. */
  bytes: number
  retention: Retention
  /** Cursors committed in this epoch. */
  cursors: Map<string, number> | null
  /** Cursors committed in earlier epochs of this channel (its history was lost since), until each consumer commits anew. */
  lost: Map<string, ConsumerCursor> | null
  /** Set when the log was evicted or reset: queue entries pointing at it are stale. */
  dead: boolean
  /** `now` of the newest append. */
  active: number
}

/** What the store remembers of a channel whose log was evicted. */
interface Evicted {
  /** The epoch the channel reports now (and keeps at its next append). */
  readonly epoch: string
  /** Cursors of the lost histories. */
  readonly lost: Map<string, ConsumerCursor> | null
}

export interface MemoryStoreOptions {
  /** How many idempotency keys to remember at most (across channels). Default 100,000. */
  readonly maxIdempotencyKeys?: number
  /**
   * How many channel logs to keep at most. Only appends create logs (reads never do). The least
   * recently used is evicted past it: its channel starts a new epoch, and its consumer cursors are
   * kept (see `maxEvictedChannels`) with the epoch they were committed in. Default 100,000.
   */
  readonly maxChannels?: number
  /**
   * Bytes of messages held at most across all channels (each message's size as measured at its
   * append). Past it the globally oldest messages are dropped, whatever their channel: that is
   * retention (readers get `complete: false`, the epoch stays). Default 32 MiB.
   */
  readonly maxBytes?: number
  /**
   * How many evicted channels to remember (their new epoch and their consumer cursors). Past it
   * the least recently evicted is forgotten; then every channel that has no log moves to a new
   * epoch, so a forgotten channel can never come back in an epoch it had before. Default 100,000.
   */
  readonly maxEvictedChannels?: number
}

/** What the memory store holds, for tests and metrics. */
export interface MemoryStoreStats {
  /** Channel logs held (only appends create them). */
  readonly channels: number
  /** Messages held across all logs. */
  readonly messages: number
  /** Bytes of messages held across all logs (sizes as measured at append). */
  readonly bytes: number
  /** Evicted channels remembered (new epoch, lost cursors). */
  readonly evictedChannels: number
  /** Channel logs evicted by `maxChannels` since creation (each changed its channel's epoch). */
  readonly evictions: number
  /** Messages dropped to keep the store-wide `maxBytes` since creation. */
  readonly droppedForBytes: number
}

/** The in-memory MessageStore: one array per channel, trimmed by count, age and bytes. */
export interface MemoryMessageStore extends MessageStore {
  /**
   * Lose every history: every channel starts a new epoch (what a store crash or flush of the logs
   * looks like). Consumer cursors are kept, with the epoch they were committed in (bounded by
   * `maxEvictedChannels`), so the hub can report a lost offline queue.
   */
  reset(): void
  /** How many channel logs are held. */
  readonly size: number
  stats(): MemoryStoreStats
  revise(channel: string, offset: number, revision: Revision, options: { readonly now: number }): ReviseResult | undefined
  search(channel: string, query: string, options: { readonly limit: number; readonly before?: number | undefined; readonly now: number }): StoredMessage[]
  channelsOf(consumer: string, options: { readonly limit: number }): ConsumerChannel[]
  eraseUser(userId: string, options: { readonly now: number }): UserErasure
}

const EMPTY: readonly StoredMessage[] = Object.freeze([])
/** Messages one `search` call looks at, at most (the work of one client request stays bounded). */
export const MAX_SEARCH_SCAN = 10_000
/** Fixed cost charged per message besides its fields (the record, its slot in the arrays). */
const MESSAGE_OVERHEAD = 96

/** A short, stable hash of a channel name (FNV-1a, 32 bits), so different channels get different epochs. */
function nameHash(name: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193)
  return (h >>> 0).toString(36)
}

/** Values an estimate walks at most (shared or cyclic references are not tracked, so this bounds the walk). */
const MAX_WALK = 1_000_000

/**
 * An estimate of the bytes a value holds, in one walk without serialising: string lengths, 8 per
 * number, the keys, and a little per object. Cheap (a string costs its `length` read, not a scan).
 */
function estimateSize(value: unknown): number {
  let total = 0
  let walked = 0
  const stack: unknown[] = [value]
  while (stack.length > 0 && walked++ < MAX_WALK) {
    const v = stack.pop()
    switch (typeof v) {
      case 'string':
        total += v.length + 8
        break
      case 'number':
      case 'bigint':
        total += 8
        break
      case 'boolean':
        total += 4
        break
      case 'object':
        if (v === null) total += 4
        else if (ArrayBuffer.isView(v)) total += v.byteLength + 16
        else if (v instanceof ArrayBuffer) total += v.byteLength + 16
        else if (Array.isArray(v)) {
          total += 16 + 8 * v.length
          for (const item of v) stack.push(item)
        } else {
          total += 16
          for (const key in v) {
            if (!Object.hasOwn(v, key)) continue
            total += key.length + 8
            stack.push((v as Record<string, unknown>)[key])
          }
        }
        break
      default:
        total += 8
    }
  }
  return total
}

function measure(input: Omit<StoredMessage, 'offset' | 'channel'>, hint: number | undefined): number {
  if (hint !== undefined && Number.isFinite(hint) && hint >= 0) return MESSAGE_OVERHEAD + hint
  return MESSAGE_OVERHEAD + input.id.length + input.event.length + (input.sender?.length ?? 0) + estimateSize(input.data)
}

/**
 * Trimming to the store-wide byte budget drops the globally oldest messages first (in append
 * order), whatever their channel. Not the least recently used channel first: a flooder keeps its
 * own channel the most recently used, so every quiet channel would lose its whole history before
 * the flooder lost a message. Oldest first shrinks every channel's window alike, takes the
 * flooder's own older messages too, and keeps what a reconnecting client needs most: the last
 * seconds of every channel.
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): MemoryMessageStore {
  const maxBytes = options.maxBytes ?? 32 * 1024 * 1024
  const maxChannels = options.maxChannels ?? 100_000
  const maxEvicted = options.maxEvictedChannels ?? 100_000
  let storeEpoch = randomId()
  /** Moves on whenever an evicted channel is forgotten: then no channel without a log may keep its old empty epoch. */
  let generation = 0
  let evictionCount = 0
  let droppedForBytes = 0
  let totalBytes = 0
  let totalMessages = 0

  /** Every retained message in append order (log and offset), for the global byte budget; entries of dropped messages are skipped and compacted away. */
  let queueLogs: ChannelLog[] = []
  let queueOffsets: number[] = []
  let queueHead = 0

  const makeEvicted = () =>
    new LRUCache<string, Evicted>({
      maxSize: maxEvicted,
      sizeCalculation: () => 1,
      dispose: (_value, _key, reason) => {
        if (reason === 'evict') generation++
      },
    })
  let evicted = makeEvicted()

  const makeLogs = () =>
    new LRUCache<string, ChannelLog>({
      maxSize: maxChannels,
      sizeCalculation: () => 1,
      dispose: (l, channel, reason) => {
        if (reason !== 'evict') return
        evictionCount++
        drop(l)
        // The channel's next epoch: unique, and kept by its next append.
        const previous = evicted.get(channel)
        evicted.set(channel, { epoch: `${storeEpoch}.${generation.toString(36)}.${nameHash(channel)}.${evictionCount.toString(36)}`, lost: lostCursors(l, previous?.lost ?? null) })
      },
    })
  let logs = makeLogs()
  /** Consumer → the logs where it has a cursor (entries of dropped logs are removed when the log goes, or met). */
  let consumers = new Map<string, Set<ChannelLog>>()
  let keys = boundedMap<string, { offset: number; message: StoredMessage; at: number; epoch: string }>(options.maxIdempotencyKeys ?? 100_000)

  /** The log's current and lost cursors, all as cursors of earlier epochs (the log is going). */
  const lostCursors = (l: ChannelLog, older: Map<string, ConsumerCursor> | null): Map<string, ConsumerCursor> | null => {
    let out = older ?? l.lost
    if (older && l.lost) for (const [c, v] of l.lost) older.set(c, v)
    if (l.cursors) {
      out ??= new Map()
      for (const [c, offset] of l.cursors) out.set(c, { offset, epoch: l.epoch })
    }
    return out
  }

  /** A log is gone: its messages leave the budget. */
  const drop = (l: ChannelLog) => {
    l.dead = true
    forget(l)
    totalBytes -= l.bytes
    totalMessages -= l.messages.length - l.head
  }

  /** A log goes: its consumers no longer list it. */
  const forget = (l: ChannelLog) => {
    if (l.cursors === null) return
    for (const consumer of l.cursors.keys()) {
      const mine = consumers.get(consumer)
      mine?.delete(l)
      if (mine?.size === 0) consumers.delete(consumer)
    }
  }

  /** The epoch of a channel that has no log: stable, and kept by its first append. */
  const emptyEpoch = (channel: string) => evicted.get(channel)?.epoch ?? `${storeEpoch}.${generation.toString(36)}.${nameHash(channel)}`

  const create = (channel: string, retention: Retention): ChannelLog => {
    const gone = evicted.get(channel)
    const epoch = gone?.epoch ?? `${storeEpoch}.${generation.toString(36)}.${nameHash(channel)}`
    if (gone) evicted.delete(channel)
    const l: ChannelLog = { channel, epoch, messages: [], sizes: [], head: 0, first: 1, top: 0, bytes: 0, retention, cursors: null, lost: gone?.lost ?? null, dead: false, active: 0 }
    logs.set(channel, l)
    return l
  }

  /** Drops the `count` oldest retained messages of a log. */
  const dropOldest = (l: ChannelLog, count: number) => {
    const end = l.head + count
    let bytes = 0
    for (let i = l.head; i < end; i++) {
      l.messages[i] = undefined
      bytes += l.sizes[i]!
    }
    l.bytes -= bytes
    totalBytes -= bytes
    totalMessages -= count
    l.head = end
    l.first += count
    if (l.head === l.messages.length) {
      l.messages = []
      l.sizes = []
      l.head = 0
    } else if (l.head >= 32 && l.head * 2 >= l.messages.length) {
      l.messages = l.messages.slice(l.head)
      l.sizes = l.sizes.slice(l.head)
      l.head = 0
    }
  }

  /** The channel's own retention: count, age, bytes. */
  const trim = (l: ChannelLog, now: number) => {
    const kept = l.messages.length - l.head
    let drop = Math.max(0, kept - l.retention.maxCount)
    const oldest = now - l.retention.maxAgeMs
    while (drop < kept && l.messages[l.head + drop]!.timestamp < oldest) drop++
    const budget = l.retention.maxBytes
    if (budget !== undefined) {
      let bytes = l.bytes
      for (let i = 0; i < drop; i++) bytes -= l.sizes[l.head + i]!
      while (drop < kept && bytes > budget) bytes -= l.sizes[l.head + drop++]!
    }
    if (drop > 0) dropOldest(l, drop)
  }

  /** The store-wide budget: the globally oldest messages go first. */
  const trimGlobal = () => {
    while (totalBytes > maxBytes && queueHead < queueLogs.length) {
      const l = queueLogs[queueHead]!
      const offset = queueOffsets[queueHead]!
      queueHead++
      if (l.dead || offset < l.first) continue // already dropped by its own retention, eviction or reset
      // Every older message of this log came earlier in the queue, so this one is its oldest.
      const count = offset - l.first + 1
      dropOldest(l, count)
      droppedForBytes += count
    }
    compactQueue()
  }

  const compactQueue = () => {
    const length = queueLogs.length - queueHead
    if (length < 1024 || length <= 2 * totalMessages) {
      if (queueHead >= 1024 && queueHead * 2 >= queueLogs.length) {
        queueLogs = queueLogs.slice(queueHead)
        queueOffsets = queueOffsets.slice(queueHead)
        queueHead = 0
      }
      return
    }
    // Mostly stale entries (messages dropped by their channel's retention): keep the live ones.
    const logsOut: ChannelLog[] = []
    const offsetsOut: number[] = []
    for (let i = queueHead; i < queueLogs.length; i++) {
      const l = queueLogs[i]!
      const offset = queueOffsets[i]!
      if (l.dead || offset < l.first) continue
      logsOut.push(l)
      offsetsOut.push(offset)
    }
    queueLogs = logsOut
    queueOffsets = offsetsOut
    queueHead = 0
  }

  const emptyRead = (channel: string): ReadResult => ({ epoch: emptyEpoch(channel), messages: EMPTY, top: 0, complete: true })

  return {
    get size() {
      return logs.size
    },
    stats() {
      return { channels: logs.size, messages: totalMessages, bytes: totalBytes, evictedChannels: evicted.size, evictions: evictionCount, droppedForBytes }
    },
    append(channel, input, opts: AppendOptions): AppendResult {
      const l = logs.get(channel) ?? create(channel, opts.retention)
      const dedupKey = opts.idempotencyKey !== undefined ? `${channel}\u0000${opts.idempotencyKey}` : undefined
      if (dedupKey !== undefined) {
        const seen = keys.get(dedupKey)
        if (seen && seen.epoch === l.epoch && opts.now - seen.at < (opts.dedupWindowMs ?? 600_000)) {
          // The full message while the log still holds it; the slim record (no data) once retention dropped it.
          const held = seen.offset >= l.first ? l.messages[l.head + seen.offset - l.first] : undefined
          return { message: held ?? seen.message, epoch: l.epoch, duplicate: true }
        }
      }
      l.retention = opts.retention
      const size = measure(input, opts.size)
      // A snapshot, as a store that serialises keeps: later changes to the publisher's object do not reach history.
      const message: StoredMessage = {
        offset: ++l.top,
        id: input.id,
        channel,
        event: input.event,
        data: cloneData(input.data),
        sender: input.sender,
        timestamp: input.timestamp,
        exclude: input.exclude,
        ...(input.revises !== undefined ? { revises: { offset: input.revises.offset, version: input.revises.version, ...(input.revises.deleted ? { deleted: true as const } : {}) } } : {}),
      }
      l.active = Math.max(l.active, opts.now)
      l.messages.push(message)
      l.sizes.push(size)
      l.bytes += size
      totalBytes += size
      totalMessages++
      queueLogs.push(l)
      queueOffsets.push(message.offset)
      trim(l, opts.now)
      if (totalBytes > maxBytes) trimGlobal()
      else if (queueLogs.length - queueHead > 2 * totalMessages + 1024) compactQueue()
      if (dedupKey !== undefined) {
        // The key keeps a record without the data, so remembered keys never hold trimmed payloads.
        const slim: StoredMessage = { offset: message.offset, id: message.id, channel, event: message.event, data: undefined, sender: message.sender, timestamp: message.timestamp }
        keys.set(dedupKey, { offset: message.offset, message: slim, at: opts.now, epoch: l.epoch })
      }
      return { message, epoch: l.epoch, duplicate: false }
    },
    read(channel, opts: ReadOptions): ReadResult {
      const l = logs.get(channel)
      if (!l) return emptyRead(channel)
      trim(l, opts.now)
      const start = Math.max(opts.after + 1, l.first)
      const from = l.head + start - l.first
      const messages = l.messages.slice(from, from + opts.limit) as StoredMessage[]
      return { epoch: l.epoch, messages, top: l.top, complete: opts.after >= l.top || opts.after + 1 >= l.first }
    },
    position(channel): StreamPosition {
      const l = logs.get(channel)
      return l ? { epoch: l.epoch, offset: l.top } : { epoch: emptyEpoch(channel), offset: 0 }
    },
    cursor(channel, consumer): ConsumerCursor | undefined {
      const l = logs.peek(channel)
      if (l) {
        const offset = l.cursors?.get(consumer)
        return offset !== undefined ? { offset, epoch: l.epoch } : (l.lost?.get(consumer) ?? undefined)
      }
      return evicted.peek(channel)?.lost?.get(consumer) ?? undefined
    },
    commit(channel, consumer, offset) {
      const l = logs.get(channel)
      if (!l) {
        // No log: offsets are 0 in this epoch, so the commit only replaces a cursor of a lost history.
        evicted.peek(channel)?.lost?.delete(consumer)
        return
      }
      l.lost?.delete(consumer)
      const current = l.cursors?.get(consumer)
      if (l.top > 0 && (current === undefined || offset > current)) {
        ;(l.cursors ??= new Map()).set(consumer, Math.max(0, Math.min(offset, l.top)))
        if (current === undefined) {
          let mine = consumers.get(consumer)
          if (mine === undefined) consumers.set(consumer, (mine = new Set()))
          mine.add(l)
        }
      }
    },
    revise(channel, offset, revision, opts): ReviseResult | undefined {
      const l = logs.peek(channel)
      if (!l || offset < l.first || offset > l.top) return undefined
      trim(l, opts.now)
      if (offset < l.first) return undefined
      const i = l.head + offset - l.first
      const old = l.messages[i]!
      if (old.deleted) return undefined
      const version = (old.version ?? 1) + 1
      const { deleted: _d, version: _v, ...rest } = old
      const message: StoredMessage & { version: number } =
        revision.deleted === true ? { ...rest, data: null, version, deleted: true } : { ...rest, data: cloneData(revision.data) ?? null, version }
      l.messages[i] = message
      return { message }
    },
    search(channel, query, opts): StoredMessage[] {
      const l = logs.peek(channel)
      const wanted = searchWords(query)
      if (!l || wanted.length === 0) return []
      trim(l, opts.now)
      const out: StoredMessage[] = []
      const limit = Math.max(1, Math.floor(opts.limit))
      const last = Math.min(l.top, opts.before !== undefined ? opts.before - 1 : l.top)
      // At most the newest MAX_SEARCH_SCAN messages below `before` per call (older ones: page on with `before`).
      const stop = Math.max(l.first, last - MAX_SEARCH_SCAN + 1)
      for (let offset = last; offset >= stop && out.length < limit; offset--) {
        const m = l.messages[l.head + offset - l.first]!
        if (m.deleted || m.revises !== undefined) continue
        if (holdsWords(m.data, wanted)) out.push(m)
      }
      return out
    },
    channelsOf(consumer, opts): ConsumerChannel[] {
      const mine = consumers.get(consumer)
      if (mine === undefined) return []
      const out: ConsumerChannel[] = []
      for (const l of mine) {
        const offset = l.cursors?.get(consumer)
        if (l.dead || offset === undefined) {
          mine.delete(l)
          continue
        }
        out.push({ name: l.channel, lastSeenOffset: offset, top: l.top, unread: Math.max(0, l.top - Math.max(offset, l.first - 1)), lastActivity: l.top > 0 ? l.active : null, activeUsers: l.cursors!.size })
      }
      if (mine.size === 0) consumers.delete(consumer)
      out.sort((a, b) => (b.lastActivity ?? 0) - (a.lastActivity ?? 0) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      return out.slice(0, Math.max(1, Math.floor(opts.limit)))
    },
    eraseUser(userId): UserErasure {
      // A scan of every retained message: erasure is rare, and an index by sender would cost every append.
      let messages = 0
      for (const l of logs.values()) {
        for (let i = l.head; i < l.messages.length; i++) {
          const m = l.messages[i]
          if (m?.sender !== userId) continue
          const { deleted: _d, version: _v, sender: _s, exclude: _e, ...rest } = m
          l.messages[i] = { ...rest, sender: undefined, data: null, version: (m.version ?? 1) + 1, deleted: true }
          messages++
        }
      }
      let cursors = 0
      for (const l of consumers.get(userId) ?? []) if (l.cursors?.delete(userId)) cursors++
      consumers.delete(userId)
      for (const l of logs.values()) if (l.lost?.delete(userId)) cursors++
      for (const gone of evicted.values()) if (gone.lost?.delete(userId)) cursors++
      const erasedKeys = [...keys.entries()].filter(([, record]) => record.message.sender === userId)
      for (const [key] of erasedKeys) keys.delete(key)
      return { messages, cursors, keys: erasedKeys.length }
    },
    cursors(channel) {
      const cursors = logs.peek(channel)?.cursors
      return cursors ? Object.fromEntries(cursors) : {}
    },
    reset() {
      // Every log is lost; the cursors are kept as cursors of the epoch they were committed in.
      const previous = evicted
      evicted = makeEvicted()
      storeEpoch = randomId()
      generation = 0
      for (const [channel, l] of logs.entries()) {
        const lost = lostCursors(l, previous.peek(channel)?.lost ?? null)
        if (lost && lost.size > 0) evicted.set(channel, { epoch: `${storeEpoch}.0.${nameHash(channel)}`, lost })
        l.dead = true
      }
      for (const [channel, gone] of previous.entries()) {
        if (gone.lost && gone.lost.size > 0 && !evicted.has(channel)) evicted.set(channel, { epoch: `${storeEpoch}.0.${nameHash(channel)}`, lost: gone.lost })
      }
      logs = makeLogs()
      consumers = new Map()
      keys = boundedMap(options.maxIdempotencyKeys ?? 100_000)
      totalBytes = 0
      totalMessages = 0
      queueLogs = []
      queueOffsets = []
      queueHead = 0
    },
    close() {},
  }
}
