import type { Outbound } from '@tidings/core'
import * as wsModule from 'ws'

/** ws's frame builder (`Sender.frame`, not in @types/ws). */
export interface SenderStatics {
  frame(data: Buffer | Uint8Array, options: { fin: boolean; rsv1: boolean; opcode: number; mask: boolean; readOnly: boolean }): Array<Buffer | Uint8Array>
}
/**
 * ws's Sender class: a named export of ws's ESM wrapper and a property of its CommonJS export
 * (`WebSocket.Sender` is only set by the CommonJS entry). Called as `Sender.frame` each time.
 */
export const Sender = (wsModule as unknown as { Sender: SenderStatics }).Sender

/** Memo keys on `Outbound.memo`. */
const FRAME = 'ws'
const PAYLOAD = 'ws.payload'

/**
 * The whole WebSocket frame (unmasked, uncompressed, FIN) for an outbound message, built once
 * and memoized on `outbound.memo.ws`, so a fan-out writes the same bytes to every socket.
 * Text for string data, binary for bytes. Never mutates `outbound.data`.
 */
export function sharedFrame(outbound: Outbound): Buffer {
  const memo = outbound.memo
  const cached = memo?.[FRAME]
  if (cached !== undefined) return cached as Buffer
  const frame = buildFrame(outbound)
  ;(outbound.memo ??= {})[FRAME] = frame
  return frame
}

/**
 * RFC 6455 §5.2 framing in one buffer: the header (FIN + opcode, then the payload length in 7,
 * 7+16 or 7+64 bits; no mask from a server) followed by the payload, written straight into it.
 * One allocation and one copy of the text, where converting the text, framing it with ws and
 * joining the two would take three and two. `outbound.bytes` gives the length, as the Session
 * contract guarantees (a text that writes fewer bytes than that is framed by ws instead).
 */
export function buildFrame(outbound: Outbound): Buffer {
  const data = outbound.data
  const text = typeof data === 'string'
  const length = text ? outbound.bytes : data.byteLength
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10
  const frame = Buffer.allocUnsafe(header + length)
  frame[0] = 0x80 | (text ? 1 : 2)
  if (header === 2) frame[1] = length
  else if (header === 4) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeUInt32BE(Math.floor(length / 0x1_0000_0000), 2)
    frame.writeUInt32BE(length >>> 0, 6)
  }
  if (!text) frame.set(data, header)
  else if (frame.write(data, header, 'utf8') !== length) return framedByWs(outbound)
  return frame
}

function framedByWs(outbound: Outbound): Buffer {
  const payload = sharedPayload(outbound)
  const parts = Sender.frame(payload, { fin: true, rsv1: false, opcode: typeof outbound.data === 'string' ? 1 : 2, mask: false, readOnly: true })
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts)
}

/**
 * The payload bytes of an outbound message, converted from a string once and memoized (used
 * where ws frames per socket, as with permessage-deflate).
 */
export function sharedPayload(outbound: Outbound): Buffer {
  const data = outbound.data
  if (Buffer.isBuffer(data)) return data
  const cached = outbound.memo?.[PAYLOAD]
  if (cached !== undefined) return cached as Buffer
  // A view on binary data (no copy), or the UTF-8 bytes of text.
  const payload = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  ;(outbound.memo ??= {})[PAYLOAD] = payload
  return payload
}

/** Close codes a WebSocket endpoint may send (RFC 6455 §7.4, as ws validates them). */
export function isSendableCloseCode(code: number): boolean {
  return (
    Number.isInteger(code) &&
    ((code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999))
  )
}
