import type { WireData } from './bytes.js'
import type { ServerFrame } from './protocol.js'

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

/**
 * The JSON text of an object with one more numeric field appended last: equal to
 * `JSON.stringify({ ...value, [key]: n })` when `json` is `JSON.stringify(value)`, `value` has
 * no `key` of its own and `key` needs no escaping. Lets the hub measure a message before storing
 * it and add the offset the store gives it without encoding the message a second time.
 */
export function jsonWithNumber(json: string, key: string, n: number): string {
  return `${json.slice(0, -1)}${json.length > 2 ? ',' : ''}"${key}":${n}}`
}
