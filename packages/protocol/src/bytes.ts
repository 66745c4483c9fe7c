/**
 * Byte helpers: what crosses a transport and how many bytes it takes. Imports nothing, so
 * every other module of the package (errors, codecs, the decode budget) can use it.
 */

/** Raw data as it crosses a transport: text frames or binary frames. */
export type WireData = string | Uint8Array

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
