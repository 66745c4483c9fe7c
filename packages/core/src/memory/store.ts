import type { AppendOptions, AppendResult, MessageStore, ReadOptions, ReadResult, Retention, StoredMessage } from '../ports/store.js'
import { boundedMap, cloneData, randomId } from '../util.js'

interface ChannelLog {
  readonly epoch: string
  /**
   * Retained messages, oldest first, from index `head` on: `messages[head + i].offset === first + i`.
   * Trimming moves `head` instead of shifting the array; the array is compacted once half of it is
   * dead, so an append costs O(1) amortised.
   */
  messages: Array<StoredMessage | undefined>
  head: number
  /** Offset of messages[head] (top + 1 when empty). */
  first: number
  top: number
  retention: Retention
  cursors: Map<string, number> | null
}

export interface MemoryStoreOptions {
  /** How many idempotency keys to remember at most (across channels). Default 100,000. */
  readonly maxIdempotencyKeys?: number
  /**
   * How many channel logs to keep at most. The least recently used is forgotten past it; if
   * its channel is used again, it starts a new epoch (readers then learn their gap). Default 100,000.
   */
  readonly maxChannels?: number
}

/** The in-memory MessageStore: one array per channel, trimmed by count and age. */
export interface MemoryMessageStore extends MessageStore {
  /** Forget everything: every channel starts a new epoch (what a store crash or flush looks like). */
  reset(): void
  /** How many channel logs are held. */
  readonly size: number
}

const DEFAULT_RETENTION: Retention = { maxCount: 100, maxAgeMs: 5 * 60_000 }

export function createMemoryStore(options: MemoryStoreOptions = {}): MemoryMessageStore {
  let storeEpoch = randomId()
  let generation = 0
  const logs = boundedMap<string, ChannelLog>(options.maxChannels ?? 100_000)
  const keys = boundedMap<string, { message: StoredMessage; at: number; epoch: string }>(options.maxIdempotencyKeys ?? 100_000)

  const log = (channel: string, retention?: Retention): ChannelLog => {
    let l = logs.get(channel)
    if (!l) {
      l = { epoch: `${storeEpoch}.${(++generation).toString(36)}`, messages: [], head: 0, first: 1, top: 0, retention: retention ?? DEFAULT_RETENTION, cursors: null }
      logs.set(channel, l)
    }
    return l
  }

  const trim = (l: ChannelLog, now: number) => {
    const kept = l.messages.length - l.head
    let drop = Math.max(0, kept - l.retention.maxCount)
    const oldest = now - l.retention.maxAgeMs
    while (drop < kept && l.messages[l.head + drop]!.timestamp < oldest) drop++
    if (drop === 0) return
    const end = l.head + drop
    for (let i = l.head; i < end; i++) l.messages[i] = undefined
    l.head = end
    l.first += drop
    if (l.head === l.messages.length) {
      l.messages = []
      l.head = 0
    } else if (l.head >= 32 && l.head * 2 >= l.messages.length) {
      l.messages = l.messages.slice(l.head)
      l.head = 0
    }
  }

  return {
    get size() {
      return logs.size
    },
    append(channel, input, opts: AppendOptions): AppendResult {
      const l = log(channel, opts.retention)
      const dedupKey = opts.idempotencyKey !== undefined ? `${channel}\u0000${opts.idempotencyKey}` : undefined
      if (dedupKey !== undefined) {
        const seen = keys.get(dedupKey)
        if (seen && seen.epoch === l.epoch && opts.now - seen.at < (opts.dedupWindowMs ?? 600_000)) {
          return { message: seen.message, epoch: l.epoch, duplicate: true }
        }
      }
      l.retention = opts.retention
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
      }
      l.messages.push(message)
      trim(l, opts.now)
      if (dedupKey !== undefined) keys.set(dedupKey, { message, at: opts.now, epoch: l.epoch })
      return { message, epoch: l.epoch, duplicate: false }
    },
    read(channel, opts: ReadOptions): ReadResult {
      const l = log(channel)
      trim(l, opts.now)
      const start = Math.max(opts.after + 1, l.first)
      const from = l.head + start - l.first
      const messages = l.messages.slice(from, from + opts.limit) as StoredMessage[]
      return { epoch: l.epoch, messages, top: l.top, complete: opts.after >= l.top || opts.after + 1 >= l.first }
    },
    position(channel) {
      const l = log(channel)
      return { epoch: l.epoch, offset: l.top }
    },
    cursor(channel, consumer) {
      return logs.get(channel)?.cursors?.get(consumer)
    },
    commit(channel, consumer, offset) {
      const l = log(channel)
      const cursors = (l.cursors ??= new Map())
      if (offset > (cursors.get(consumer) ?? 0)) cursors.set(consumer, Math.min(offset, l.top))
    },
    cursors(channel) {
      return Object.fromEntries(logs.get(channel)?.cursors ?? [])
    },
    reset() {
      logs.clear()
      keys.clear()
      storeEpoch = randomId()
    },
    close() {},
  }
}
