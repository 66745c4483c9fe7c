import type { MaybePromise } from '../util.js'

/**
 * Counters shared by the nodes of a cluster, for rate limits that must hold across them (a
 * channel's publish budget): each node counts in the same place. Every implementation passes
 * `limitConformance` (`@tidings/core/conformance`).
 *
 * - Windows are fixed: the window of `windowMs` that contains `now` is
 *   `[floor(now / windowMs) * windowMs, … + windowMs)`; each (key, window) has its own counter,
 *   starting at 0.
 * - `hit` is atomic: hits made at once, by any number of nodes, each count once, and each answer
 *   is the counter right after that hit (so exactly one hit answers each value).
 * - Time comes only from the arguments; a window's counter is forgotten some time after the
 *   window ends (nothing grows without bound with keys or time).
 */
export interface LimitStore {
  /** Count one hit on `key` in the current window of `windowMs`; answers the window's count after it. */
  hit(key: string, windowMs: number, now: number): MaybePromise<number>
  close?(): MaybePromise<void>
}
