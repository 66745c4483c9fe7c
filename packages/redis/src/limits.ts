import type { LimitStore } from '@tidings/core'
import type { RedisClient } from './client.js'

export interface RedisLimitStoreOptions {
  /** The app's ioredis client or cluster. The store defines its script on it and never closes it. */
  readonly client: RedisClient
  /** First part of every key. Default `'tidings:'`. */
  readonly prefix?: string | undefined
  /**
   * How long a window's counter outlives the window, at least: its key expires `windowMs` plus
   * this after the window's first hit, so a node whose clock is a little behind still counts in
   * the same counter. Default 1,000 ms.
   */
  readonly expiryMarginMs?: number | undefined
}

/**
 * One hit: the key's counter plus one, its expiry set by the hit that created it (atomic, one
 * key, so one slot on a Redis Cluster). KEYS[1] the counter; ARGV[1] its time to live in ms.
 */
const LIMIT_HIT_SCRIPT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
`

interface Scripted {
  tidingsLimitHit(key: string, ttlMs: string): Promise<number>
}

/**
 * A LimitStore on Redis, for limits that hold across the nodes of a cluster (standalone Redis or
 * Redis Cluster). Each (key, window size, window) is one counter,
 * `<prefix>limit:{<key>}:<windowMs>:<floor(now / windowMs)>`, counted by one Lua script (INCR,
 * and PEXPIRE on the first hit), so hits from any number of nodes each count once and a window's
 * counter is gone from Redis soon after the window ends. The window size is part of the key: two
 * sizes whose window numbers coincide never share a counter. `close()` leaves the client open.
 */
export function createRedisLimitStore(options: RedisLimitStoreOptions): LimitStore {
  const client = options.client
  const prefix = options.prefix ?? 'tidings:'
  const margin = options.expiryMarginMs ?? 1_000
  if (!(Number.isFinite(margin) && margin >= 0)) throw new RangeError(`createRedisLimitStore: expiryMarginMs must be a number ≥ 0, got ${margin}`)
  const c = client as unknown as Partial<Scripted> & RedisClient
  if (typeof c.tidingsLimitHit !== 'function') client.defineCommand('tidingsLimitHit', { lua: LIMIT_HIT_SCRIPT, numberOfKeys: 1 })
  const redis = client as unknown as Scripted

  return {
    async hit(key, windowMs, now) {
      if (!(Number.isFinite(windowMs) && windowMs > 0)) throw new RangeError(`LimitStore.hit: windowMs must be a positive number, got ${windowMs}`)
      if (!Number.isFinite(now)) throw new RangeError(`LimitStore.hit: now must be a finite number, got ${now}`)
      const index = Math.floor(now / windowMs)
      return Number(await redis.tidingsLimitHit(`${prefix}limit:{${key}}:${windowMs}:${index}`, String(Math.ceil(windowMs + margin))))
    },
    close() {
      // the client is the app's: nothing to close
    },
  }
}
