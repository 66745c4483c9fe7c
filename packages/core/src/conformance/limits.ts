import { afterEach, describe, expect, it } from 'vitest'
import type { LimitStore } from '../ports/limits.js'
import { randomId } from '../util.js'

export interface LimitConformanceOptions {
  /** Timeout of each test, in ms. Default 10,000. */
  readonly timeoutMs?: number | undefined
  /** First part of the keys the suite uses (each run and test adds a random part). Default `'conformance'`. */
  readonly prefix?: string | undefined
}

/** A start of time on a whole minute (so on a whole window of every size the suite uses but one). */
const T0 = Date.UTC(2026, 0, 1)

/**
 * The `LimitStore` contract as a vitest suite: run it over every implementation.
 *
 *   limitConformance('memory', (count) => Array(count).fill(createMemoryLimitStore()))
 *   limitConformance('redis', (count) => clients.slice(0, count).map((client) => createRedisLimitStore({ client })))
 *
 * `makeLimitStores(count)` gives `count` stores sharing one backend (one per node; for an
 * in-memory store, the same object `count` times). Keys are random per run and test, so the
 * suite runs on a shared database (a Redis server other tests use).
 */
export function limitConformance(name: string, makeStores: (count: number) => LimitStore[] | Promise<LimitStore[]>, options: LimitConformanceOptions = {}): void {
  const timeout = options.timeoutMs ?? 10_000
  const run = `${options.prefix ?? 'conformance'}:${randomId()}`
  let counter = 0

  describe(`LimitStore conformance: ${name}`, () => {
    let open: LimitStore[] = []

    afterEach(async () => {
      const stores = open
      open = []
      for (const s of stores) await s.close?.()
    }, timeout)

    /** `count` stores on one backend, and a key maker unique to this test. */
    const setup = async (count: number) => {
      const stores = await makeStores(count)
      expect(stores).toHaveLength(count)
      open.push(...stores)
      const test = `${run}:${(++counter).toString(36)}`
      return { stores, key: (k: string) => `${test}:${k}` }
    }

    it('counts 1, 2, 3 for one key within one window, whichever node hits (a count per node would answer 1, 1, 1)', async () => {
      const { stores, key } = await setup(3)
      const k = key('a')
      const answers: number[] = []
      for (const s of stores) answers.push(await s.hit(k, 60_000, T0 + 10))
      expect(answers).toEqual([1, 2, 3])
      // anywhere inside the window is the same window
      expect(await stores[0]!.hit(k, 60_000, T0 + 59_999)).toBe(4)
      expect(await stores[1]!.hit(k, 60_000, T0)).toBe(5)
    }, timeout)

    it('a new window starts again at 1, exactly at floor(now / windowMs) (not a sliding window, not off by one)', async () => {
      const { stores, key } = await setup(2)
      const [a, b] = stores as [LimitStore, LimitStore]
      const k = key('boundary')
      const w = 1_500 // T0 is not on a boundary of it
      const end = (Math.floor(T0 / w) + 1) * w // the first instant of the next window
      expect(await a.hit(k, w, end - w)).toBe(1) // the window's first instant
      expect(await b.hit(k, w, end - 1)).toBe(2) // its last instant
      expect(await a.hit(k, w, end)).toBe(1) // the next window
      expect(await b.hit(k, w, end)).toBe(2)
      expect(await a.hit(k, w, end + w - 1)).toBe(3)
      expect(await b.hit(k, w, end + w)).toBe(1)
    }, timeout)

    it('keys, and window sizes of one key, count apart (no shared counter, not even when the window numbers coincide)', async () => {
      const { stores, key } = await setup(2)
      const [a, b] = stores as [LimitStore, LimitStore]
      const [k1, k2] = [key('one'), key('two')]
      expect(await a.hit(k1, 60_000, T0)).toBe(1)
      expect(await b.hit(k2, 60_000, T0)).toBe(1)
      expect(await a.hit(k1, 60_000, T0)).toBe(2)
      // 5,500 is in window 5 of 1,000 ms and in window 5 of 1,100 ms: still two counters
      expect(await a.hit(k1, 1_000, 5_500)).toBe(1)
      expect(await b.hit(k1, 1_100, 5_500)).toBe(1)
      expect(await a.hit(k1, 1_000, 5_500)).toBe(2)
      expect(await b.hit(k1, 1_100, 5_500)).toBe(2)
      // keys that differ only in characters a store might treat specially
      const odd = [key('x:1'), key('x}:1'), key('{x}:1'), key('x'), key('')]
      for (const k of odd) expect(await a.hit(k, 1_000, 5_500)).toBe(1)
      expect(await b.hit(k2, 60_000, T0)).toBe(2)
    }, timeout)

    it('200 hits made at once over several nodes answer each of 1..200 exactly once (atomic: no lost or doubled count)', async () => {
      const { stores, key } = await setup(4)
      const k = key('burst')
      const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => stores[i % stores.length]!.hit(k, 60_000, T0 + i)))
      for (const n of answers) expect(typeof n).toBe('number')
      expect([...answers].sort((x, y) => x - y)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
      expect(await stores[0]!.hit(k, 60_000, T0 + 30_000)).toBe(201)
    }, timeout)

    it("an ended window's count never shows in a later one, after one window or after many (replaced, not accumulated)", async () => {
      const { stores, key } = await setup(2)
      const [a, b] = stores as [LimitStore, LimitStore]
      const k = key('old')
      const w = 1_000
      for (let i = 1; i <= 5; i++) expect(await a.hit(k, w, T0)).toBe(i)
      for (let n = 1; n <= 40; n++) {
        expect(await b.hit(k, w, T0 + n * w)).toBe(1)
        expect(await a.hit(k, w, T0 + n * w + w - 1)).toBe(2)
      }
      // a jump over many windows, then back to counting from 1
      expect(await a.hit(k, w, T0 + 1_000 * w + 5)).toBe(1)
      expect(await b.hit(k, w, T0 + 1_000 * w + 999)).toBe(2)
      expect(await a.hit(k, w, T0 + 86_400_000)).toBe(1)
    }, timeout)

    it('close, when the store has it, can be called twice on every node without throwing', async () => {
      const { stores, key } = await setup(2)
      expect(await stores[0]!.hit(key('c'), 1_000, T0)).toBe(1)
      for (const s of stores) {
        await s.close?.()
        await s.close?.()
      }
    }, timeout)
  })
}
