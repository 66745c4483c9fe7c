import { filterSchema, serverFrameSchema } from '@tidings/protocol'

/**
 * The check every broker adapter makes of a `ClusterMessage` it receives (anything can be put
 * on a Redis channel or a NOTIFY channel: another app, an old version, a typo in a shell), so
 * the hub only ever sees well-formed messages. The envelope by hand (kinds, origin, target, ids,
 * queries); what is handed on to clients (the frame) or compiled (the recipient filter) by the
 * protocol's own zod schemas, unless `validateFrames` is false (a bus only trusted nodes reach).
 */

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isString = (v: unknown): v is string => typeof v === 'string'
const nonEmpty = (v: unknown): v is string => typeof v === 'string' && v.length > 0
const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString)
const optional = (v: unknown, check: (v: unknown) => boolean) => v === undefined || check(v)

function dispatchProblem(m: Record<string, unknown>, frames: boolean): string | undefined {
  const t = m['target']
  if (!isObject(t)) return 'dispatch without a target'
  if (t['kind'] === 'channel') {
    if (!nonEmpty(t['channel'])) return 'channel target without a channel'
  } else if (t['kind'] === 'direct') {
    if (!strings(t['users']) || !strings(t['connections'])) return 'direct target without users and connections lists'
  } else if (t['kind'] !== 'all') return 'unknown target kind'
  if (frames ? !serverFrameSchema.safeParse(m['frame']).success : !isObject(m['frame'])) return 'invalid frame'
  const ex = m['exclude']
  if (ex !== undefined && (!isObject(ex) || !optional(ex['connections'], strings) || !optional(ex['users'], strings))) return 'invalid exclude'
  if (m['where'] !== undefined && !filterSchema.safeParse(m['where']).success) return 'invalid recipient filter'
  if (!optional(m['priority'], (p) => p === 'high' || p === 'normal' || p === 'low')) return 'invalid priority'
  if (!optional(m['volatile'], (v) => typeof v === 'boolean')) return 'invalid volatile flag'
  if (!optional(m['epoch'], isString)) return 'invalid epoch'
  return undefined
}

function queryProblem(q: unknown, frames: boolean): string | undefined {
  if (!isObject(q)) return 'request without a query'
  switch (q['op']) {
    case 'connections':
      return optional(q['userId'], isString) && optional(q['channel'], isString) && optional(q['connectionId'], isString) ? undefined : 'invalid connections query'
    case 'disconnect':
      return isString(q['reason']) && optional(q['userId'], isString) && optional(q['connectionId'], isString) ? undefined : 'invalid disconnect query'
    case 'kick':
      return isString(q['channel']) && isString(q['userId']) && isString(q['reason']) ? undefined : 'invalid kick query'
    case 'deliver': {
      if (typeof q['waitMs'] !== 'number' || !Number.isFinite(q['waitMs'])) return 'invalid deliver query'
      const d = q['dispatch']
      if (!isObject(d) || d['kind'] !== 'dispatch' || !nonEmpty(d['origin'])) return 'deliver query without a dispatch'
      return dispatchProblem(d, frames)
    }
    default:
      return 'unknown query op'
  }
}

/** What is wrong with a received cluster message, or undefined when it is a well-formed `ClusterMessage`. Never throws. */
export function clusterMessageProblem(m: unknown, validateFrames = true): string | undefined {
  if (!isObject(m)) return 'not an object'
  if (!nonEmpty(m['origin'])) return 'no origin'
  switch (m['kind']) {
    case 'dispatch':
      return dispatchProblem(m, validateFrames)
    case 'request':
      return !nonEmpty(m['id']) ? 'request without an id' : queryProblem(m['query'], validateFrames)
    case 'reply':
      return !nonEmpty(m['id']) ? 'reply without an id' : !nonEmpty(m['to']) ? 'reply without a recipient' : !('result' in m) ? 'reply without a result' : undefined
    default:
      return 'unknown kind'
  }
}
