/**
 * What crosses Redis between brokers: a `ClusterMessage` as JSON (checked on arrival by the
 * core's `ClusterArrivals`, with `clusterMessageProblem`: anything can be published on a Redis
 * channel), plus the broker's own probes.
 */

/** A probe a broker sends to itself to check that its subscriber connection really delivers. */
export interface Probe {
  readonly kind: 'probe'
  readonly origin: string
  readonly n: number
}

export type Decoded =
  | { readonly ok: true; readonly probe: Probe; readonly message?: undefined }
  | { readonly ok: true; readonly probe?: undefined; readonly message: unknown }
  | { readonly ok: false; readonly reason: string }

/** Parse one payload from Redis: a probe (checked here), or what should be a `ClusterMessage` (checked by the broker's arrivals). Never throws. */
export function decodeEnvelope(payload: string): Decoded {
  let m: unknown
  try {
    m = JSON.parse(payload)
  } catch {
    return { ok: false, reason: 'not JSON' }
  }
  if (typeof m !== 'object' || m === null || (m as { kind?: unknown }).kind !== 'probe') return { ok: true, message: m }
  const p = m as { origin?: unknown; n?: unknown }
  return typeof p.origin === 'string' && p.origin.length > 0 && typeof p.n === 'number' ? { ok: true, probe: m as Probe } : { ok: false, reason: 'invalid probe' }
}
