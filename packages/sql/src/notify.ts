import { createHash } from 'node:crypto'
import type { ClusterMessage } from '@tidings/core'

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

/** Parse a notification's payload (the envelope only; the message is checked on arrival by the core's `ClusterArrivals`). Never throws. */
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
