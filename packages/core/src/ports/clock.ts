/** An opaque timer handle from a Clock. */
export type TimerHandle = { readonly __timer: unique symbol } | object

/**
 * Time for the hub. Every timer the core uses comes from here, so tests drive time with a
 * manual clock and production uses the system one.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. MUST NOT go backwards. */
  now(): number
  /** Run `fn` once after `ms`. The callback MUST NOT run synchronously inside this call. */
  setTimeout(fn: () => void, ms: number): TimerHandle
  /** Cancel a pending timer; a no-op for one that already ran or was cleared. */
  clearTimeout(handle: TimerHandle): void
}

type GlobalTimers = {
  setTimeout(fn: () => void, ms: number): { unref?: () => void }
  clearTimeout(h: unknown): void
}

/** Real time. Timers are unref'd where the runtime allows, so they never keep a process alive. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const handle = (globalThis as unknown as GlobalTimers).setTimeout(fn, ms)
    if (typeof handle === 'object' && handle !== null) handle.unref?.()
    return handle as TimerHandle
  },
  clearTimeout(handle) {
    ;(globalThis as unknown as GlobalTimers).clearTimeout(handle)
  },
}
