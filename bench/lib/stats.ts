export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return Number.NaN
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Nearest-rank percentile of unsorted values (q in 0..100). */
export function percentile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil((q / 100) * s.length) - 1))
  return s[rank]!
}

/** Milliseconds on the monotonic clock (CLOCK_MONOTONIC): the same clock in every process of the machine. */
export function monoMs(): number {
  const [s, ns] = process.hrtime()
  return s * 1e3 + ns / 1e6
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
