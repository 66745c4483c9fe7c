import { createHash } from 'node:crypto'
import { type ClusterMessage, filterSchema, serverFrameSchema } from '@tidings/core'

/**
 * What the PostgreSQL broker puts on LISTEN/NOTIFY: channel identifiers and payloads.
 *
 * A NOTIFY channel is an identifier (at most 63 bytes) and a hub channel is any string, so a
 * topic (`all`, `node:<id>`, `ch:<channel>`) travels as `<prefix>_<40 hex digits of its SHA-256>`:
 * bounded, made of `[a-z0-9_]` only, and the same on every node. The envelope names the topic
 * in full, so a receiver checks that a message is on the channel it belongs on.
 *
 * A payload is JSON: `{ "t": topic, "s": seq, "m": message }` inline, or
 * `{ "t": topic, "s": seq, "o": origin, "x": outboxId }` when the message is larger than the
 * inline limit and was written to the outbox table in the same transaction as the NOTIFY.
 * `s` (a per-broker counter) keeps two equal messages from being folded into one by
 * PostgreSQL (it drops duplicate notifications of one transaction). `{ "t": "node:<id>", "s": 0, "f": n }`
 * is a broker's fence to itself (see broker.ts).
 */

/** NOTIFY refuses payloads of 8,000 bytes or more (BLCKSZ − NAMEDATALEN − 128 on a default build). */
export const NOTIFY_PAYLOAD_LIMIT = 8_000

/** A prefix is part of an unquoted-safe identifier: lower-case letters, digits and `_`, starting with a letter, at most 20 bytes. */
const PREFIX = /^[a-z][a-z0-9_]{0,19}$/

export function checkChannelPrefix(prefix: string): string {
  if (!PREFIX.test(prefix)) throw new TypeError(`channelPrefix must match ${PREFIX} (a NOTIFY channel is an identifier of at most 63 bytes): ${JSON.stringify(prefix)}`)
  return prefix
}

/** The NOTIFY channel of a topic: `<prefix>_<sha-256 of the topic, 40 hex digits>` (at most 61 bytes). */
export function notifyChannel(prefix: string, topic: string): string {
  return `${prefix}_${createHash('sha256').update(topic).digest('hex').slice(0, 40)}`
}

export interface InlineEnvelope {
  readonly t: string
  readonly s: number
  readonly m: ClusterMessage
}
export interface OutboxEnvelope {
  readonly t: string
  readonly s: number
  /** The publishing node (so it can skip its own without a read). */
  readonly o: string
  /** The outbox row's id. */
  readonly x: string
}
/** A broker's fence: sent to its own node topic with each publishing statement; its echo on the LISTEN connection answers the publishes. */
export interface FenceEnvelope {
  readonly t: string
  readonly s: number
  readonly f: number
}
export type Envelope = InlineEnvelope | OutboxEnvelope | FenceEnvelope

export type Parsed = { readonly ok: true; readonly envelope: Envelope } | { readonly ok: false; readonly reason: string }

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isString = (v: unknown): v is string => typeof v === 'string'
const nonEmpty = (v: unknown): v is string => typeof v === 'string' && v.length > 0
const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString)
const optional = (v: unknown, check: (v: unknown) => boolean) => v === undefined || check(v)

/** Parse a notification's payload (the envelope only; the message is checked by `messageProblem`). Never throws. */
export function parseEnvelope(payload: string): Parsed {
  let e: unknown
  try {
    e = JSON.parse(payload)
  } catch {
    return { ok: false, reason: 'not JSON' }
  }
  if (!isObject(e) || !isString(e['t']) || typeof e['s'] !== 'number') return { ok: false, reason: 'not an envelope' }
  if (typeof e['f'] === 'number') return { ok: true, envelope: e as unknown as FenceEnvelope }
  if ('m' in e) return isObject(e['m']) ? { ok: true, envelope: e as unknown as InlineEnvelope } : { ok: false, reason: 'not a message' }
  if (nonEmpty(e['o']) && nonEmpty(e['x'])) return { ok: true, envelope: e as unknown as OutboxEnvelope }
  return { ok: false, reason: 'neither a message nor an outbox reference' }
}

// The checks below are those of @tidings/redis (broker-envelope.ts): anything can NOTIFY on a
// channel, so the hub only ever sees well-formed messages. The envelope by hand, what is handed
// on to clients (the frame) or compiled (the recipient filter) by the protocol's zod schemas.

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

/** What is wrong with a received message, or undefined when it is a well-formed `ClusterMessage`. */
export function messageProblem(m: unknown, validateFrames = true): string | undefined {
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
