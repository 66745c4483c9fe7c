/**
 * A token bucket's state: `rate` tokens per second, holding at most `rate` (one second's worth).
 * Refilled lazily from the caller's clock, so it needs no timer and costs two multiplications per
 * check. Plain fields rather than an object of its own, so a connection can be its own bucket.
 */
export interface Bucket {
  tokens: number
  /** When `tokens` was last brought up to date (hub clock, ms). */
  refilledAt: number
}

/** A full bucket. */
export function fullBucket(rate: number, now: number): Bucket {
  return { tokens: rate, refilledAt: now }
}

/** Take one token (or `cost` of one); false when the bucket holds less. */
export function takeToken(bucket: Bucket, rate: number, now: number, cost = 1): boolean {
  if (now > bucket.refilledAt) {
    bucket.tokens = Math.min(rate, bucket.tokens + ((now - bucket.refilledAt) * rate) / 1000)
    bucket.refilledAt = now
  }
  if (bucket.tokens < cost) return false
  bucket.tokens -= cost
  return true
}

/** Milliseconds until one token is available. */
export function retryAfterMs(bucket: Bucket, rate: number): number {
  return bucket.tokens >= 1 ? 0 : Math.ceil(((1 - bucket.tokens) * 1000) / rate)
}
