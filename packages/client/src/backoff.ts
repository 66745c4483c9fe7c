export interface BackoffOptions {
  /** Base delay in ms (the cap of the first attempt). */
  readonly initialDelay: number
  /** Largest cap in ms. */
  readonly maxDelay: number
  /** A random number in [0, 1). Default `Math.random`. */
  readonly random?: () => number
}

/**
 * Exponential backoff with full jitter: attempt n (0-based) waits a random time in
 * [0, min(maxDelay, initialDelay × 2^n)). Full jitter spreads the reconnects of many clients
 * after a server restart instead of having them all come back at once.
 */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  const cap = Math.min(options.maxDelay, options.initialDelay * 2 ** Math.min(attempt, 52))
  const random = options.random ?? Math.random
  return Math.floor(random() * cap)
}
