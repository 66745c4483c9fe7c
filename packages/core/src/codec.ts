import type { ServerFrame } from './protocol.js'

/** Raw data as it crosses a transport: text frames or binary frames. */
export type WireData = string | Uint8Array

/**
 * Turns frames into wire data and back. The hub encodes each outbound frame once per codec
 * in use, however many subscribers receive it.
 */
export interface Codec {
  /** Negotiated name, e.g. the `json` in the WebSocket subprotocol `tidings.v1.json`. */
  readonly name: string
  /** MUST be pure: the same frame always encodes to equal data. */
  encode(frame: ServerFrame): WireData
  /** MUST throw on undecodable input; the hub answers that with `RT_007`. */
  decode(data: WireData): unknown
}

const textDecoder = /* @__PURE__ */ new TextDecoder('utf-8', { fatal: true })

export const jsonCodec: Codec = {
  name: 'json',
  encode: (frame) => JSON.stringify(frame),
  decode: (data) => JSON.parse(typeof data === 'string' ? data : textDecoder.decode(data)),
}

/** Byte length of wire data (UTF-8 for text). */
export function wireLength(data: WireData): number {
  return typeof data === 'string' ? utf8Length(data) : data.byteLength
}

const textEncoder = /* @__PURE__ */ new TextEncoder()
/** Strings up to this many UTF-16 units are measured by encoding them into `scratch` (3 bytes a unit at most). */
const SCRATCH_UNITS = 1024
let scratch: Uint8Array | undefined
const ASCII = /^[\x00-\x7f]*$/

/**
 * UTF-8 byte length of a string without allocating per call. Short strings (every frame header,
 * most messages) are encoded into a reused buffer, which is native and many times faster than a
 * loop in JavaScript; long ones are checked for ASCII first (one byte per unit) and counted
 * otherwise. Lone surrogates count 3 bytes, as the encoder writes U+FFFD for them.
 */
export function utf8Length(s: string): number {
  if (s.length <= SCRATCH_UNITS) return textEncoder.encodeInto(s, (scratch ??= new Uint8Array(SCRATCH_UNITS * 3))).written
  if (ASCII.test(s)) return s.length
  let bytes = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) bytes += 1
    else if (c < 0x800) bytes += 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 4
      i++
    } else bytes += 3
  }
  return bytes
}

/**
 * The JSON text of an object with one more numeric field appended last: equal to
 * `JSON.stringify({ ...value, [key]: n })` when `json` is `JSON.stringify(value)`, `value` has
 * no `key` of its own and `key` needs no escaping. Lets the hub measure a message before storing
 * it and add the offset the store gives it without encoding the message a second time.
 */
export function jsonWithNumber(json: string, key: string, n: number): string {
  return `${json.slice(0, -1)}${json.length > 2 ? ',' : ''}"${key}":${n}}`
}
