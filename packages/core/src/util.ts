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

/**
 * The key one client's connections are counted under: an IPv4 address as it is (`::ffff:`-mapped
 * ones unmapped), an IPv6 address by its /64 network (one host usually owns a whole /64, so
 * counting single addresses would let it take as many places as it likes).
 */
export function addressKey(address: string): string {
  if (address.startsWith('::ffff:') && address.includes('.')) return address.slice(7)
  if (!address.includes(':')) return address
  const bare = address.split('%')[0]!.toLowerCase()
  const [head = '', tail] = bare.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`
}

/** `value.then(fn)` that stays synchronous for synchronous values. */
export function andThen<T, R>(value: MaybePromise<T>, fn: (v: T) => R): MaybePromise<Awaited<R>> | R {
  return isPromise(value) ? (value.then(fn) as Promise<Awaited<R>>) : fn(value)
}

/** The whole second `isoTimestamp` last formatted, and its `YYYY-MM-DDTHH:MM:SS.` prefix. */
let isoSecond = Number.NaN
let isoPrefix = ''
/** Years 0000–9999: the range in which `toISOString` has the fixed 24-character form. */
const ISO_MAX_MS = 253_402_300_800_000

/**
 * `new Date(ms).toISOString()`, formatting the date part once per second: a hub stamps every
 * message it publishes, and building a `Date` for each costs more than the rest of the envelope.
 */
export function isoTimestamp(ms: number): string {
  const second = Math.floor(ms / 1000)
  const millis = Math.floor(ms) - second * 1000
  if (!(ms >= 0 && ms < ISO_MAX_MS)) return new Date(ms).toISOString()
  if (second !== isoSecond) {
    isoPrefix = new Date(second * 1000).toISOString().slice(0, 20)
    isoSecond = second
  }
  return `${isoPrefix}${millis < 10 ? '00' : millis < 100 ? '0' : ''}${millis}Z`
}

const PLAIN_DEPTH = 64
const NOT_PLAIN: unique symbol = Symbol('not plain')

/**
 * A deep copy of message data, as `structuredClone` makes it for plain data (primitives, arrays,
 * objects whose prototype is `Object.prototype` or null), copied directly: many times faster than
 * `structuredClone`'s serialise-and-parse for the small payloads messages carry. Unlike it, a value
 * referenced twice inside the data is copied twice, and named properties on arrays are not kept.
 * Anything else (a Date, a Map, a class instance, a cycle, very deep nesting) is left to
 * `structuredClone`, which throws for what it cannot clone (functions, symbols).
 */
export function cloneData<T>(value: T): T {
  if (typeof value !== 'object' || value === null) return value
  const copy = copyPlain(value, 0)
  return copy === NOT_PLAIN ? structuredClone(value) : (copy as T)
}

function copyPlain(value: object, depth: number): unknown {
  if (depth > PLAIN_DEPTH) return NOT_PLAIN
  if (Array.isArray(value)) {
    if (Object.getPrototypeOf(value) !== Array.prototype) return NOT_PLAIN
    const out: unknown[] = new Array(value.length)
    for (let i = 0; i < value.length; i++) {
      if (!(i in value)) continue // a hole stays a hole, as structuredClone keeps it
      const v: unknown = value[i]
      if (typeof v === 'object' && v !== null) {
        const c = copyPlain(v, depth + 1)
        if (c === NOT_PLAIN) return NOT_PLAIN
        out[i] = c
      } else if (typeof v === 'function' || typeof v === 'symbol') return NOT_PLAIN
      else out[i] = v
    }
    return out
  }
  const proto: unknown = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return NOT_PLAIN
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(value)) {
    const v: unknown = (value as Record<string, unknown>)[key]
    if (typeof v === 'object' && v !== null) {
      const c = copyPlain(v, depth + 1)
      if (c === NOT_PLAIN) return NOT_PLAIN
      setOwn(out, key, c)
    } else if (typeof v === 'function' || typeof v === 'symbol') return NOT_PLAIN
    else setOwn(out, key, v)
  }
  return out
}

/** `out[key] = v` as an own property, even for the key `__proto__` (which would set the prototype). */
function setOwn(out: Record<string, unknown>, key: string, v: unknown): void {
  if (key === '__proto__') Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true })
  else out[key] = v
}
