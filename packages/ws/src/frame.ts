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
  const payload = sharedPayload(outbound)
  const parts = Sender.frame(payload, { fin: true, rsv1: false, opcode: typeof outbound.data === 'string' ? 1 : 2, mask: false, readOnly: true })
  // One buffer (header + payload): one write per socket. An empty payload comes back as the header alone.
  const frame = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts)
  ;(outbound.memo ??= {})[FRAME] = frame
  return frame
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
