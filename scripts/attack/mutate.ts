/**
 * Hostile inputs from a seeded PRNG: valid client frames of every type (docs/protocol.md §4),
 * then one mutation each — bit flips, truncation, type confusion, nesting up to 100,000 deep,
 * `__proto__` / `constructor` / `prototype` keys, invalid UTF-8, binary instead of text, huge
 * numbers, very long strings, garbage. Also what the hub would answer by id (`expectedId`), so the
 * fuzzer can count requests left without an answer.
 */
import { DEFAULT_MAX_DEPTH, jsonDepth, seededRandom } from '@tidings/core'

export type Rng = () => number

export function rngFor(seed: number): Rng {
  return seededRandom(seed)
}
export const int = (r: Rng, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1))
export const pick = <T>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!
export const chance = (r: Rng, p: number): boolean => r() < p

/** Channels the fuzzer aims at: every built-in kind, the canary's, a big log, nonsense. */
export const CHANNELS = [
  'public:fuzz', 'public:fuzz-2', 'canary:main', 'canary:other', 'presence:lobby', 'private:user-alice', 'private:user-nobody',
  'private:room-1', 'db:collection:todos', 'big:1', 'unknown:thing', 'public:a.b.c', 'public:__proto__', 'public:constructor',
] as const
export const TOKEN_GUESSES = ['tok-alice', 'tok-bob', 'tok-canary', 'wrong', 'tok-alice\u0000', 'Bearer tok-bob', 'x'.repeat(8192), ''] as const

export const CLIENT_FRAME_TYPES = ['subscribe', 'unsubscribe', 'message', 'presence:update', 'presence:get', 'typing', 'ack', 'read', 'history', 'ping', 'auth'] as const
export type ClientFrameType = (typeof CLIENT_FRAME_TYPES)[number]

function filterTree(r: Rng, depth = 0): unknown {
  const leaf = () => ({ field: pick(r, ['event', 'sender', 'data.x', 'data.a.b', 'data.__proto__.x', 'data.constructor']), op: pick(r, ['eq', 'ne', 'gt', 'in', 'contains', 'exists']), value: pick(r, [1, 'x', true, null, [1, 2]]) })
  if (depth > 3 || chance(r, 0.5)) return leaf()
  const k = pick(r, ['and', 'or', 'not'])
  return k === 'not' ? { not: filterTree(r, depth + 1) } : { [k]: Array.from({ length: int(r, 1, 3) }, () => filterTree(r, depth + 1)) }
}

function someData(r: Rng): unknown {
  return pick(r, [null, 1, 'hello', { x: int(r, 0, 100), text: 'hi' }, [1, 2, 3], { a: { b: { c: [true, false] } } }])
}

/** One valid client frame of `type`, with request id `id` where the type takes one. */
export function validFrame(r: Rng, type: ClientFrameType, id: number | string): Record<string, unknown> {
  const channel = pick(r, CHANNELS)
  switch (type) {
    case 'subscribe': {
      const f: Record<string, unknown> = { type, id, channel }
      if (chance(r, 0.3)) f.filter = filterTree(r)
      if (chance(r, 0.2)) f.since = { epoch: pick(r, ['e1', 'x.1', 'z'.repeat(64)]), offset: int(r, 0, 1000) }
      if (chance(r, 0.2)) f.presence = { name: 'fuzz', n: int(r, 0, 9) }
      if (chance(r, 0.1)) f.state = pick(r, ['online', 'away', 'busy'])
      if (chance(r, 0.1)) f.auth = 'room-token'
      return f
    }
    case 'unsubscribe':
    case 'presence:get':
      return { type, id, channel }
    case 'message': {
      const f: Record<string, unknown> = { type, id, channel, event: pick(r, ['chat', 'tick', 'e'.repeat(128)]), data: someData(r) }
      if (chance(r, 0.2)) f.idempotencyKey = `k${int(r, 0, 50)}`
      if (chance(r, 0.2)) f.priority = pick(r, ['high', 'normal', 'low'])
      return f
    }
    case 'presence:update':
      return { type, id, channel, data: { typing: chance(r, 0.5) }, state: pick(r, ['online', 'away']) }
    case 'typing':
      return { type, id, channel, active: chance(r, 0.5) }
    case 'ack':
      return { type, channel, offset: int(r, 0, 5000) }
    case 'read':
      return { type, channel, offsets: Array.from({ length: int(r, 1, 5) }, () => int(r, 1, 5000)) }
    case 'history': {
      const f: Record<string, unknown> = { type, id, channel }
      if (chance(r, 0.5)) f.limit = int(r, 1, 1000)
      if (chance(r, 0.3)) f.since = { epoch: 'e', offset: int(r, 0, 100) }
      return f
    }
    case 'ping':
      return { type, id }
    case 'auth':
      return { type, id, token: pick(r, TOKEN_GUESSES) }
  }
}

/** Nested JSON text `depth` levels deep. */
export function deepText(r: Rng, depth: number): string {
  return chance(r, 0.5) ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '0' + '}'.repeat(depth)
}
export const DEPTHS = [DEFAULT_MAX_DEPTH, DEFAULT_MAX_DEPTH + 1, 100, 1000, 10_000, 100_000] as const
const HUGE_NUMBERS = ['1e308', '1e999', '-1e999', '18446744073709551616', '9007199254740993', '-0', '1.5', '-1', '123456789012345678901234567890', '0.0000000000000000000001', '1E+400'] as const
/** 600,000 (over ws's maxPayload: close 1009) is one pick in sixteen. */
const LONG_LENGTHS = [65, 65, 129, 129, 201, 201, 1025, 1025, 8193, 8193, 70_000, 70_000, 140_000, 140_000, 200_000, 600_000] as const
const WEIRD_VALUES = ['null', 'true', '[]', '{}', '""', '0', '"\\u0000"', '[null]', '{"type":"ping"}', '"__proto__"'] as const
const PROTO_BITS = ['"__proto__":{"polluted":true}', '"constructor":{"prototype":{"polluted":true}}', '"prototype":{"polluted":true}', '"__proto__":null', '"hasOwnProperty":1', '"toString":"x"'] as const
/** Invalid UTF-8: a stray continuation, overlong encodings, a lone surrogate, bytes never valid, a cut sequence. */
const BAD_UTF8 = [[0x80], [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xff], [0xfe, 0xff], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]] as const

/**
 * Invalid UTF-8 in a text frame makes ws close the connection (1007), which ends the test of
 * everything in flight on it; such bytes go in text frames this rarely, in binary frames (where
 * the codec must refuse them with RT_007) otherwise.
 */
const TEXT_BREAKS = 0.02

export interface Mutant {
  /** The bytes to send. */
  readonly data: Buffer
  /** Send as a binary frame (text otherwise). */
  readonly binary: boolean
  /** The mutation applied, for the report. */
  readonly kind: string
}

/** Replace the first `"key":value` (string, number or simple value) in `text` with `"key":replacement`. */
function replaceField(text: string, key: string, replacement: string): string {
  const re = new RegExp(`"${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}":("(?:[^"\\\\]|\\\\.)*"|-?[0-9.eE+-]+|true|false|null)`)
  return re.test(text) ? text.replace(re, `"${key}":${replacement}`) : text.replace(/^\{/, `{"${key}":${replacement},`)
}

/** Insert `member` (`"k":v`) into the first object of `text` or into the object at `key`. */
function insertMember(text: string, member: string, key?: string): string {
  if (key !== undefined) {
    const at = text.indexOf(`"${key}":{`)
    if (at >= 0) {
      const open = at + key.length + 3
      return `${text.slice(0, open + 1)}${member}${text[open + 1] === '}' ? '' : ','}${text.slice(open + 1)}`
    }
  }
  return text.replace(/^\{/, `{${member},`)
}

/** One mutated client frame (text of a valid frame of a random type, mutated once). */
export function mutant(r: Rng, id: number | string): Mutant {
  const type = pick(r, CLIENT_FRAME_TYPES)
  const text = JSON.stringify(validFrame(r, type, id))
  const op = r()
  const utf8 = (s: string) => Buffer.from(s, 'utf8')
  const asText = (s: string, kind: string): Mutant => ({ data: utf8(s), binary: false, kind: `${type}/${kind}` })
  if (op < 0.1) return asText(text, 'valid')
  if (op < 0.2) {
    const b = utf8(text)
    for (let i = int(r, 1, 6); i > 0; i--) {
      const at = int(r, 0, b.length - 1)
      b[at] = b[at]! ^ (1 << int(r, 0, 7))
    }
    return { data: b, binary: !chance(r, TEXT_BREAKS), kind: `${type}/bitflip` }
  }
  if (op < 0.27) return asText(text.slice(0, int(r, 0, text.length - 1)), 'truncate')
  if (op < 0.42) {
    const key = pick(r, ['type', 'id', 'channel', 'event', 'data', 'offset', 'offsets', 'limit', 'since', 'filter', 'presence', 'state', 'token', 'active', 'v', 'priority', 'idempotencyKey', 'extra'])
    const value = chance(r, 0.5) ? pick(r, WEIRD_VALUES) : pick(r, [JSON.stringify(pick(r, CLIENT_FRAME_TYPES)), '{"epoch":{},"offset":[]}', '[1,"2",null]', `"${'ž'.repeat(40)}"`])
    return asText(replaceField(text, key, value), `confuse-${key}`)
  }
  if (op < 0.52) {
    const depth = pick(r, DEPTHS)
    const where = pick(r, ['data', 'filter', 'presence', 'since', 'root'])
    const deep = deepText(r, depth)
    const out = where === 'root' ? deep : where === 'data' && type === 'message' ? replaceField(text, 'data', deep) : replaceField(text, where, deep)
    return asText(out, `deep-${where}-${depth}`)
  }
  if (op < 0.62) {
    const where = pick(r, [undefined, 'data', 'presence', 'since', 'filter'])
    return asText(insertMember(text, pick(r, PROTO_BITS), where), `proto-${where ?? 'root'}`)
  }
  if (op < 0.68) {
    const b = utf8(text)
    const at = text.indexOf('"', text.indexOf(':') + 1) + 1 || int(r, 0, b.length)
    const bad = Buffer.from(pick(r, BAD_UTF8))
    return { data: Buffer.concat([b.subarray(0, at), bad, b.subarray(at)]), binary: !chance(r, TEXT_BREAKS), kind: `${type}/bad-utf8` }
  }
  if (op < 0.74) return { data: utf8(text), binary: true, kind: `${type}/binary` }
  if (op < 0.82) {
    const key = pick(r, ['id', 'offset', 'limit', 'v', 'offsets', 'data', 'active'])
    return asText(replaceField(text, key, pick(r, HUGE_NUMBERS)), `number-${key}`)
  }
  if (op < 0.9) {
    const key = pick(r, ['channel', 'event', 'id', 'token', 'idempotencyKey', 'state', 'type', 'auth'])
    const unit = pick(r, ['a', 'a', 'é', '😀', '\\', ':'])
    // Multi-byte units stay under ws's maxPayload (512 KiB): only the 600,000 'a's are meant to hit it.
    const len = unit === 'a' ? pick(r, LONG_LENGTHS) : Math.min(70_000, pick(r, LONG_LENGTHS))
    return asText(replaceField(text, key, JSON.stringify(unit.repeat(len))), `long-${key}-${len}`)
  }
  if (op < 0.95) {
    const b = Buffer.alloc(int(r, 0, 64))
    for (let i = 0; i < b.length; i++) b[i] = int(r, 0, 255)
    return { data: b, binary: !chance(r, TEXT_BREAKS), kind: 'garbage-bytes' }
  }
  return asText(pick(r, ['', ' ', '[]', 'null', '1', '"ping"', '{}', '{"type":null}', '[{"type":"ping","id":1}]', '{"type":"ping","id":1}{"type":"ping","id":2}', `{"type":"ping","id":1,"type":"subscribe"}`]), 'garbage-json')
}

/** Largest inbound frame the hub decodes at all (4 × the default maxMessageSize); ws closes 1009 past it. */
export const MAX_DECODED_BYTES = 4 * 131_072

/**
 * The request id the hub answers `data` with, mirroring docs/protocol.md §1: a frame that decodes
 * (strict UTF-8, within the depth budget, at most 4× maxMessageSize) to an object with a usable id
 * gets exactly one frame with that id back — its answer or an `error`. `typing` is left out (a
 * valid one has no answer). Undefined: no answer by id is owed. Keys are `typeof:value`.
 */
export function expectedId(data: Buffer): string | undefined {
  if (data.length > MAX_DECODED_BYTES) return undefined
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(data)
  } catch {
    return undefined
  }
  if (jsonDepth(text, DEFAULT_MAX_DEPTH) > DEFAULT_MAX_DEPTH) return undefined
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  if (value === null || typeof value !== 'object') return undefined
  const v = value as { id?: unknown; type?: unknown }
  if (v.type === 'typing') return undefined
  return idKey(v.id)
}

export function idKey(id: unknown): string | undefined {
  if (typeof id === 'string' && id.length > 0 && id.length <= 64) return `string:${id}`
  if (typeof id === 'number' && Number.isInteger(id) && id >= 0) return `number:${id}`
  return undefined
}
