import type { WireData } from './bytes.js'
import type { Codec } from './codec.js'

/**
 * The decode budget: what every inbound frame and request body is held to before anything
 * recursive (a parser, a schema, a filter compiler) looks at it. A linear scan over the text
 * counts the nesting of arrays and objects outside strings, so a 10 KB frame that is 5,000
 * arrays deep is refused in microseconds with a reason, instead of overflowing a stack.
 */
export const DEFAULT_MAX_DEPTH = 32

const OPEN_ARRAY = 0x5b // [
const OPEN_OBJECT = 0x7b // {
const CLOSE_ARRAY = 0x5d // ]
const CLOSE_OBJECT = 0x7d // }
const QUOTE = 0x22 // "
const BACKSLASH = 0x5c // \

/**
 * The deepest nesting of `[` / `{` in JSON text or UTF-8 bytes, outside strings, stopping as
 * soon as it passes `limit` (then returns `limit + 1`). Linear, no allocation, never throws; it
 * does not validate the JSON (the parser does that after). Works on bytes because the ASCII
 * bytes it looks for never occur inside a multi-byte UTF-8 sequence.
 */
export function jsonDepth(data: WireData, limit: number): number {
  let depth = 0
  let max = 0
  let inString = false
  const text = typeof data === 'string'
  const n = text ? data.length : data.byteLength
  for (let i = 0; i < n; i++) {
    const c = text ? data.charCodeAt(i) : data[i]!
    if (inString) {
      if (c === BACKSLASH) i++
      else if (c === QUOTE) inString = false
      continue
    }
    if (c === QUOTE) inString = true
    else if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      if (++depth > max) {
        max = depth
        if (max > limit) return max
      }
    } else if ((c === CLOSE_ARRAY || c === CLOSE_OBJECT) && depth > 0) depth--
  }
  return max
}

/**
 * The nesting depth of an already-decoded value (arrays and plain objects), stopping past
 * `limit`. Iterative, for codecs whose input cannot be scanned as JSON text.
 */
export function valueDepth(value: unknown, limit: number): number {
  if (value === null || typeof value !== 'object') return 0
  let max = 0
  const stack: Array<[unknown, number]> = [[value, 1]]
  while (stack.length > 0) {
    const [v, d] = stack.pop()!
    if (d > max) {
      max = d
      if (max > limit) return max
    }
    const children = Array.isArray(v) ? v : Object.values(v as object)
    for (const child of children) if (child !== null && typeof child === 'object') stack.push([child, d + 1])
  }
  return max
}

/** How far into a frame `peekRequestId` looks for a top-level `"id"`. */
const PEEK_LIMIT = 64 * 1024

/**
 * The request id of a JSON frame that will not be parsed (too deep, too large), found by a
 * linear scan for a top-level `"id"` key within the first 64 KiB, so even a refused request can
 * be answered by its id. Undefined when there is none (or it is not a short string or an integer).
 */
export function peekRequestId(data: WireData): string | number | undefined {
  const text = typeof data === 'string' ? data.slice(0, PEEK_LIMIT) : textDecoder.decode(data.subarray(0, PEEK_LIMIT))
  let depth = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) {
      const start = i
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i)
        if (d === BACKSLASH) i++
        else if (d === QUOTE) break
      }
      if (depth !== 1 || text.slice(start, i + 1) !== '"id"') continue
      const m = ID_VALUE.exec(text.slice(i + 1, i + 80))
      if (!m) continue
      if (m[1] !== undefined) return m[1].length > 0 && m[1].length <= 64 ? m[1] : undefined
      const n = Number(m[2])
      return Number.isSafeInteger(n) && n >= 0 ? n : undefined
    }
    if (c === OPEN_ARRAY || c === OPEN_OBJECT) depth++
    else if ((c === CLOSE_ARRAY || c === CLOSE_OBJECT) && depth > 0) depth--
  }
  return undefined
}

const ID_VALUE = /^\s*:\s*(?:"([A-Za-z0-9_.:\-]*)"|(\d{1,16})(?![.\deE]))/
const textDecoder = /* @__PURE__ */ new TextDecoder('utf-8')

export type Decoded = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly reason: string }

/**
 * Decode one frame within the budget: JSON is scanned before it is parsed; any other codec's
 * result is walked iteratively after. Never throws.
 */
export function decodeWithin(codec: Codec, data: WireData, maxDepth: number): Decoded {
  const json = codec.name === 'json'
  if (json && jsonDepth(data, maxDepth) > maxDepth) return { ok: false, reason: tooDeep(maxDepth) }
  let value: unknown
  try {
    value = codec.decode(data)
  } catch {
    return { ok: false, reason: `frame is not valid ${codec.name}` }
  }
  if (!json && valueDepth(value, maxDepth) > maxDepth) return { ok: false, reason: tooDeep(maxDepth) }
  return { ok: true, value }
}

/**
 * Parse a JSON request body within the budget (HTTP transports, the admin API). Never throws:
 * too deep or not JSON comes back as a reason to answer with 400 / `RT_007`.
 */
export function parseJsonWithin(text: string, maxDepth: number = DEFAULT_MAX_DEPTH): Decoded {
  if (jsonDepth(text, maxDepth) > maxDepth) return { ok: false, reason: tooDeep(maxDepth) }
  try {
    return { ok: true, value: JSON.parse(text) }
  } catch {
    return { ok: false, reason: 'body is not valid JSON' }
  }
}

function tooDeep(maxDepth: number): string {
  return `nested deeper than ${maxDepth} levels`
}
