import { LRUCache } from 'lru-cache'
import type { AppendOptions, AppendResult, MessageStore, ReadOptions, ReadResult, Retention, StoredMessage } from '../ports/store.js'
import { randomId } from '../util.js'

interface ChannelLog {
  /** Retained messages, oldest first; `messages[i].offset === first + i`. */
  messages: StoredMessage[]
  /** Offset of messages[0] (top + 1 when empty). */
  first: number
  top: number
  retention: Retention
}

export interface MemoryStoreOptions {
  /** How many idempotency keys to remember at most (across channels). Default 100,000. */
  readonly maxIdempotencyKeys?: number
}

/** The in-memory MessageStore: one array per channel, trimmed by count and age. */
export interface MemoryMessageStore extends MessageStore {
  /** Forget everything and start a new epoch (what a store crash or flush looks like). */
  reset(): void
  readonly epoch: string
}

export function createMemoryStore(options: MemoryStoreOptions = {}): MemoryMessageStore {
  let epoch = randomId()
  const logs = new Map<string, ChannelLog>()
  const keys = new LRUCache<string, { message: StoredMessage; at: number }>({ max: options.maxIdempotencyKeys ?? 100_000 })

  const trim = (log: ChannelLog, now: number) => {
    let drop = Math.max(0, log.messages.length - log.retention.maxCount)
    const oldest = now - log.retention.maxAgeMs
    while (drop < log.messages.length && log.messages[drop]!.timestamp < oldest) drop++
    if (drop > 0) {
      log.messages.splice(0, drop)
      log.first += drop
    }
  }

  return {
    get epoch() {
      return epoch
    },
    append(channel, input, opts: AppendOptions): AppendResult {
      const dedupKey = opts.idempotencyKey !== undefined ? `${channel}\u0000${opts.idempotencyKey}` : undefined
      if (dedupKey !== undefined) {
        const seen = keys.get(dedupKey)
        if (seen && opts.now - seen.at < (opts.dedupWindowMs ?? 600_000)) {
          return { message: seen.message, epoch, duplicate: true }
        }
      }
      let log = logs.get(channel)
      if (!log) {
        log = { messages: [], first: 1, top: 0, retention: opts.retention }
        logs.set(channel, log)
      }
      log.retention = opts.retention
      const message: StoredMessage = { ...input, channel, offset: ++log.top }
      log.messages.push(message)
      trim(log, opts.now)
      if (dedupKey !== undefined) keys.set(dedupKey, { message, at: opts.now })
      return { message, epoch, duplicate: false }
    },
    read(channel, opts: ReadOptions): ReadResult {
      const log = logs.get(channel)
      if (!log) return { epoch, messages: [], top: 0, complete: true }
      trim(log, opts.now)
      const start = Math.max(opts.after + 1, log.first)
      const from = start - log.first
      const messages = log.messages.slice(from, from + opts.limit)
      return { epoch, messages, top: log.top, complete: opts.after >= log.top || opts.after + 1 >= log.first }
    },
    position(channel) {
      return { epoch, offset: logs.get(channel)?.top ?? 0 }
    },
    reset() {
      logs.clear()
      keys.clear()
      epoch = randomId()
    },
    close() {},
  }
}
