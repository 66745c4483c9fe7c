/**
 * Raw TCP for what a well-behaved client library cannot send: a hand-made WebSocket handshake
 * and hand-made frames (lying lengths, reserved bits, unmasked frames, bad opcodes), sockets that
 * never read, and raw HTTP requests with lying `Content-Length`.
 */
import { randomBytes } from 'node:crypto'
import { connect, type Socket } from 'node:net'

/** One client frame, masked unless `unmasked`; `declaredLength` lies about the payload length. */
export function wsFrame(payload: Buffer, o: { opcode?: number; fin?: boolean; rsv?: number; unmasked?: boolean; declaredLength?: number } = {}): Buffer {
  const len = o.declaredLength ?? payload.length
  const head: number[] = [((o.fin ?? true) ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | (o.opcode ?? 0x1)]
  const mask = o.unmasked ? 0 : 0x80
  if (len < 126) head.push(mask | len)
  else if (len < 65_536) head.push(mask | 126, len >> 8, len & 0xff)
  else {
    head.push(mask | 127)
    const big = BigInt(len)
    for (let i = 7; i >= 0; i--) head.push(Number((big >> BigInt(i * 8)) & 0xffn))
  }
  if (o.unmasked) return Buffer.concat([Buffer.from(head), payload])
  const key = randomBytes(4)
  const body = Buffer.from(payload)
  for (let i = 0; i < body.length; i++) body[i] = body[i]! ^ key[i & 3]!
  return Buffer.concat([Buffer.from(head), key, body])
}

/**
 * Open a WebSocket by hand on `path` (query included) and resolve once the 101 arrived, with the
 * socket and whatever followed the handshake. Rejects on any other answer or after `timeoutMs`.
 */
export function rawWebSocket(port: number, path: string, timeoutMs = 5000): Promise<{ socket: Socket; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let buf = Buffer.alloc(0)
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error('handshake timed out'))
    }, timeoutMs)
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      clearTimeout(timer)
      socket.off('data', onData)
      const head = buf.subarray(0, end).toString('latin1')
      if (!head.startsWith('HTTP/1.1 101')) {
        socket.destroy()
        reject(new Error(`handshake answered ${head.split('\r\n')[0]}`))
        return
      }
      resolve({ socket, rest: buf.subarray(end + 4) })
    }
    socket.on('data', onData)
    socket.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tidings.v1.json\r\n\r\n`,
    )
  })
}

export interface RawAnswer {
  /** HTTP status of the first response line, when one came. */
  status?: number
  /** The server closed the connection (before or after answering). */
  closedByServer: boolean
  /** Neither a status nor a close within the timeout. */
  timedOut: boolean
  /** Head and the start of the body (at most 64 KiB). */
  text: string
}

/**
 * Write `request` (already-built HTTP/1.1 bytes) on a fresh connection and wait for the status
 * line (or for the server to close). With `halfClose`, the client ends its side after writing.
 * With `untilEnd`, waits for the whole response (the server closing, or `Content-Length` bytes).
 */
export function rawHttp(port: number, request: Buffer, o: { halfClose?: boolean; timeoutMs?: number; untilEnd?: boolean } = {}): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let size = 0
    let done = false
    const finish = (closedByServer: boolean, timedOut: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      const text = Buffer.concat(chunks).toString('latin1')
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text)
      socket.destroy()
      resolve({ ...(m ? { status: Number(m[1]) } : {}), closedByServer, timedOut, text })
    }
    const timer = setTimeout(() => finish(false, true), o.timeoutMs ?? 5000)
    socket.on('data', (chunk: Buffer) => {
      if (size < 65_536) {
        chunks.push(chunk)
        size += chunk.length
      }
      const text = Buffer.concat(chunks).toString('latin1')
      const headEnd = text.indexOf('\r\n\r\n')
      if (headEnd < 0) return
      if (!o.untilEnd) return finish(false, false)
      const cl = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, headEnd))
      if (cl && Buffer.byteLength(text.slice(headEnd + 4), 'latin1') >= Number(cl[1])) finish(false, false)
    })
    socket.on('end', () => finish(true, false))
    socket.on('close', () => finish(true, false))
    socket.on('error', () => finish(true, false))
    socket.write(request, () => {
      if (o.halfClose) socket.end()
    })
  })
}

/** An HTTP/1.1 request as bytes; `contentLength` overrides (lies about) the body's length. */
export function httpRequest(method: string, path: string, headers: Record<string, string>, body?: Buffer, contentLength?: number | string): Buffer {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close']
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`)
  if (body !== undefined || contentLength !== undefined) lines.push(`Content-Length: ${contentLength ?? body?.length ?? 0}`)
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), body ?? Buffer.alloc(0)])
}
