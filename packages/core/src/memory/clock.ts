import type { Clock, TimerHandle } from '../ports/clock.js'

interface ManualTimer {
  readonly at: number
  readonly seq: number
  readonly fn: () => void
  cancelled: boolean
}

/** A clock that only moves when told to. */
export interface ManualClock extends Clock {
  /** Move time forward, running every timer that falls due, in order (also ones scheduled meanwhile). */
  advance(ms: number): void
  /** Move time to the next pending timer and run it; false when none is pending. */
  runNext(): boolean
  /** How many timers are pending. */
  pending(): number
}

export function createManualClock(start = Date.UTC(2026, 0, 1)): ManualClock {
  let now = start
  let seq = 0
  let timers: ManualTimer[] = []

  const due = (until: number): ManualTimer | undefined => {
    let best: ManualTimer | undefined
    for (const t of timers) {
      if (t.cancelled || t.at > until) continue
      if (!best || t.at < best.at || (t.at === best.at && t.seq < best.seq)) best = t
    }
    return best
  }
  const run = (t: ManualTimer) => {
    timers = timers.filter((x) => x !== t && !x.cancelled)
    if (t.at > now) now = t.at
    t.fn()
  }

  return {
    now: () => now,
    setTimeout(fn, ms) {
      const timer: ManualTimer = { at: now + Math.max(0, ms), seq: seq++, fn, cancelled: false }
      timers.push(timer)
      return timer as unknown as TimerHandle
    },
    clearTimeout(handle) {
      const t = handle as unknown as ManualTimer
      if (t && typeof t === 'object' && 'cancelled' in t) t.cancelled = true
      timers = timers.filter((x) => !x.cancelled)
    },
    advance(ms) {
      const until = now + ms
      for (let t = due(until); t; t = due(until)) run(t)
      now = until
    },
    runNext() {
      const t = due(Number.POSITIVE_INFINITY)
      if (!t) return false
      run(t)
      return true
    },
    pending: () => timers.filter((t) => !t.cancelled).length,
  }
}
