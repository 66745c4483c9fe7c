import { type ClusterMessage, clusterMessageProblem } from '@tidings/core'

/**
 * What crosses Redis between brokers: a `ClusterMessage` as JSON, checked when it arrives with
 * the core's `clusterMessageProblem` (anything can be published on a Redis channel), plus the
 * broker's own probes.
 */

/** A probe a broker sends to itself to check that its subscriber connection really delivers. */
export interface Probe {
  readonly kind: 'probe'
  readonly origin: string
  readonly n: number
}

export type Decoded =
  | { readonly ok: true; readonly message: ClusterMessage | Probe }
  | { readonly ok: false; readonly reason: string }

/** Parse and check one payload from Redis. Never throws. */
export function decodeEnvelope(payload: string, validateFrames = true): Decoded {
  let m: unknown
  try {
    m = JSON.parse(payload)
  } catch {
    return { ok: false, reason: 'not JSON' }
  }
  const probe = typeof m === 'object' && m !== null && (m as { kind?: unknown }).kind === 'probe'
  const problem = probe
    ? typeof (m as { origin?: unknown }).origin === 'string' && (m as { origin: string }).origin.length > 0 && typeof (m as { n?: unknown }).n === 'number' ? undefined : 'invalid probe'
    : clusterMessageProblem(m, validateFrames)
  return problem === undefined ? { ok: true, message: m as ClusterMessage | Probe } : { ok: false, reason: problem }
}
