import type { LimitStore } from '../ports/limits.js'
import { boundedMap } from '../util.js'

export interface MemoryLimitStoreOptions {
  /**
   * How many (key, window size) counters are kept; beyond it, those hit longest ago are
   * forgotten (they start again at 0). Default 100,000.
   */
  readonly maxKeys?: number | undefined
}

/** One (key, window size): the counter of its newest window, and of the window before it. */
interface Counter {
  /** `floor(now / windowMs)` of the newest window hit. */
  index: number
  count: number
  /** The count of window `index - 1` (0 when none), for a hit that arrives a little late. */
  previous: number
}

/**
 * The in-memory LimitStore (one process: its "nodes" share the object). Each (key, window size)
 * keeps one counter: a hit in a later window replaces it (the ended window's count becomes the
 * `previous` one and is dropped at the next window), so memory is bounded by `maxKeys`, never by
 * time. A hit whose `now` falls in the window just before the newest one counts in that window;
 * one from an older window, forgotten by then, counts alone (answers 1).
 */
export function createMemoryLimitStore(options: MemoryLimitStoreOptions = {}): LimitStore {
  const counters = boundedMap<string, Counter>(options.maxKeys ?? 100_000)
  return {
    hit(key, windowMs, now) {
      if (!(Number.isFinite(windowMs) && windowMs > 0)) throw new RangeError(`LimitStore.hit: windowMs must be a positive number, got ${windowMs}`)
      if (!Number.isFinite(now)) throw new RangeError(`LimitStore.hit: now must be a finite number, got ${now}`)
      const index = Math.floor(now / windowMs)
      const id = `${windowMs}:${key}` // a number has no ':', so this is unambiguous
      const c = counters.get(id)
      if (!c) {
        counters.set(id, { index, count: 1, previous: 0 })
        return 1
      }
      if (index === c.index) return ++c.count
      if (index > c.index) {
        c.previous = index === c.index + 1 ? c.count : 0
        c.index = index
        c.count = 1
        return 1
      }
      if (index === c.index - 1) return ++c.previous
      return 1
    },
    close() {
      counters.clear()
    },
  }
}
