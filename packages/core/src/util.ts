import { LRUCache } from 'lru-cache'

/** A value, or a promise of it: ports may answer synchronously (in memory) or not (Redis, SQL). */
export type MaybePromise<T> = T | Promise<T>

/**
 * A least-recently-used map holding at most `entries` values. Bounded by `maxSize` with unit
 * sizes rather than `max`, which would pre-allocate storage for every slot up front (~20 ms
 * and a few MB for 100,000 entries, per cache, per hub).
 */
export function boundedMap<K extends {}, V extends {}>(entries: number): LRUCache<K, V> {
  return new LRUCache<K, V>({ maxSize: entries, sizeCalculation: () => 1 })
}

export function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function'
}

/** A small, fast, seedable PRNG (mulberry32) for jittered timers and fault injection. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function randomId(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto
  if (c?.randomUUID) return c.randomUUID().replaceAll('-', '').slice(0, 12)
  return Math.floor(Math.random() * 2 ** 48).toString(36)
}

/**
 * Runs tasks one after another per key. A task that answers synchronously while nothing is
 * queued for its key runs with no promise at all, so in-memory stores stay on the fast path.
 */
export class SerialQueue {
  private readonly tails = new Map<string, Promise<unknown>>()

  run<T>(key: string, task: () => MaybePromise<T>): MaybePromise<T> {
    const tail = this.tails.get(key)
    const result = tail ? tail.then(task, task) : task()
    if (!isPromise(result)) return result
    const settled = result.then(
      () => undefined,
      () => undefined,
    )
    this.tails.set(key, settled)
    void settled.then(() => {
      if (this.tails.get(key) === settled) this.tails.delete(key)
    })
    return result
  }

  get size(): number {
    return this.tails.size
  }
}

/** `value.then(fn)` that stays synchronous for synchronous values. */
export function andThen<T, R>(value: MaybePromise<T>, fn: (v: T) => R): MaybePromise<Awaited<R>> | R {
  return isPromise(value) ? (value.then(fn) as Promise<Awaited<R>>) : fn(value)
}
