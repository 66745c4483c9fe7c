import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import { type Codec, jsonCodec } from '@tidings/core'

/** Subprotocols are `tidings.v1.<codec name>`; JSON is `tidings.v1.json`. */
export const SUBPROTOCOL_PREFIX = 'tidings.v1.'
export const JSON_SUBPROTOCOL = `${SUBPROTOCOL_PREFIX}json`

export interface Negotiated {
  /** The subprotocol to answer with; undefined when the client offered none. */
  readonly protocol: string | undefined
  /** The session's codec; undefined means the hub's own codec (one encoding shared by all). */
  readonly codec: Codec | undefined
}

/** The subprotocols named in a `Sec-WebSocket-Protocol` header. */
export function offeredSubprotocols(header: string | string[] | undefined): string[] {
  if (header === undefined) return []
  // The usual case: one subprotocol offered.
  if (typeof header === 'string' && !header.includes(',')) {
    const one = header.trim()
    return one.length > 0 ? [one] : []
  }
  const joined = Array.isArray(header) ? header.join(',') : header
  return joined
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p.length > 0)
}

/**
 * Picks the codec for the offered subprotocols: the hub's codec when offered, else JSON when
 * offered, else (nothing offered) JSON. Null when the client offered only subprotocols we do not
 * speak: the handshake is refused.
 */
export function negotiate(offered: readonly string[], hubCodec: Codec): Negotiated | null {
  const hubIsJson = hubCodec.name === jsonCodec.name
  if (offered.length === 0) return { protocol: undefined, codec: hubIsJson ? undefined : jsonCodec }
  // One string for every socket of the hub's codec (ws keeps the answered protocol per socket).
  const own = hubIsJson ? JSON_SUBPROTOCOL : `${SUBPROTOCOL_PREFIX}${hubCodec.name}`
  if (offered.includes(own)) return { protocol: own, codec: undefined }
  if (offered.includes(JSON_SUBPROTOCOL)) return { protocol: JSON_SUBPROTOCOL, codec: jsonCodec }
  return null
}

/** The path of a request URL (no query string). */
export function pathOf(url: string | undefined): string {
  if (url === undefined) return '/'
  const q = url.indexOf('?')
  return q >= 0 ? url.slice(0, q) : url
}

/** Answers an upgrade request with a plain HTTP error and closes the socket (as ws does). */
export function refuseHandshake(socket: Duplex, status: number, message: string, headers: Record<string, string> = {}): void {
  try {
    socket.on('error', ignore)
    if (!socket.writable) {
      socket.destroy()
      return
    }
    const body = message
    socket.once('finish', () => socket.destroy())
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n` +
        'Connection: close\r\n' +
        Object.entries(headers)
          .map(([name, value]) => `${name}: ${value}\r\n`)
          .join('') +
        'Content-Type: text/plain; charset=utf-8\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        '\r\n' +
        body,
    )
  } catch {
    socket.destroy()
  }
}

function ignore(): void {}
