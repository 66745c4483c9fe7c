/**
 * A lean WebSocket client over `net`: the HTTP upgrade done by hand, server→client frames parsed
 * in place (unmasked; 7/16/64-bit lengths; FIN, with continuation frames joined), client→server
 * frames masked. Each complete text or binary message is handed over as (buffer, start, end):
 * no copy, no decoding, so a load generator can count frames and parse only what it must.
 */
import { randomBytes, randomFillSync } from 'node:crypto'
import net from 'node:net'

export interface LeanWsEvents {
  /** The 101 response arrived: frames may be sent. */
  open(): void
  /** One whole message (text or binary); `buf[start..end)` is its payload. Do not keep `buf`. */
  message(buf: Buffer, start: number, end: number): void
  /** The connection ended (close frame, error, or destroy); `error` when it failed. */
  closed(error?: Error): void
}

const CRLFCRLF = Buffer.from('\r\n\r\n')
const mask = Buffer.alloc(4)

export class LeanWs {
  readonly socket: net.Socket
  private opened = false
  private done = false
  private head: Buffer | null = Buffer.alloc(0)
  private rest: Buffer | null = null
  private fragments: Buffer[] | null = null

  constructor(
    port: number,
    path: string,
    private readonly events: LeanWsEvents,
    protocol?: string,
    host = '127.0.0.1',
  ) {
    this.socket = net.connect({ port, host, noDelay: true })
    this.socket.on('connect', () => {
      this.socket.write(
        `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
          (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : '') +
          '\r\n',
      )
    })
    this.socket.on('data', (chunk: Buffer) => (this.opened ? this.frames(chunk) : this.handshake(chunk)))
    this.socket.on('error', (err) => this.end(err))
    this.socket.on('close', () => this.end(this.opened ? undefined : new Error('closed before the upgrade')))
  }

  get isOpen(): boolean {
    return this.opened && !this.done
  }

  private handshake(chunk: Buffer): void {
    const head = Buffer.concat([this.head!, chunk])
    const at = head.indexOf(CRLFCRLF)
    if (at < 0) {
      if (head.length > 16_384) this.fail(new Error('handshake response too large'))
      else this.head = head
      return
    }
    const status = head.toString('latin1', 0, head.indexOf('\r\n'))
    if (!/^HTTP\/1\.1 101 /.test(status)) return this.fail(new Error(`upgrade refused: ${status}`))
    this.head = null
    this.opened = true
    this.events.open()
    if (at + 4 < head.length && !this.done) this.frames(head.subarray(at + 4))
  }

  private frames(chunk: Buffer): void {
    let buf = chunk
    if (this.rest !== null) {
      buf = Buffer.concat([this.rest, chunk])
      this.rest = null
    }
    const n = buf.length
    let i = 0
    while (n - i >= 2 && !this.done) {
      const b0 = buf[i]!
      const b1 = buf[i + 1]!
      let len = b1 & 0x7f
      let p = i + 2
      if (len === 126) {
        if (n - p < 2) break
        len = buf.readUInt16BE(p)
        p += 2
      } else if (len === 127) {
        if (n - p < 8) break
        len = buf.readUInt32BE(p) * 2 ** 32 + buf.readUInt32BE(p + 4)
        p += 8
      }
      if (b1 & 0x80) return this.fail(new Error('masked frame from the server'))
      if (n - p < len) break
      const end = p + len
      const opcode = b0 & 0x0f
      const fin = (b0 & 0x80) !== 0
      if (opcode === 1 || opcode === 2 || opcode === 0) {
        if (fin && this.fragments === null) this.events.message(buf, p, end)
        else {
          ;(this.fragments ??= []).push(Buffer.from(buf.subarray(p, end)))
          if (fin) {
            const whole = Buffer.concat(this.fragments)
            this.fragments = null
            this.events.message(whole, 0, whole.length)
          }
        }
      } else if (opcode === 9) this.send(buf.subarray(p, end), 10)
      else if (opcode === 8) {
        this.socket.destroy()
        return this.end()
      }
      i = end
    }
    if (i < n && !this.done) this.rest = i === 0 ? buf : buf.subarray(i)
  }

  /** Send one masked frame (text by default). */
  send(data: string | Buffer, opcode = 1): void {
    if (!this.isOpen) return
    const payload = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data)
    const len = payload.length
    const extra = len < 126 ? 0 : len < 65_536 ? 2 : 8
    const frame = Buffer.allocUnsafe(2 + extra + 4 + len)
    frame[0] = 0x80 | opcode
    if (extra === 0) frame[1] = 0x80 | len
    else if (extra === 2) {
      frame[1] = 0x80 | 126
      frame.writeUInt16BE(len, 2)
    } else {
      frame[1] = 0x80 | 127
      frame.writeUInt32BE(Math.floor(len / 2 ** 32), 2)
      frame.writeUInt32BE(len >>> 0, 6)
    }
    randomFillSync(mask)
    const m = 2 + extra
    mask.copy(frame, m)
    for (let k = 0; k < len; k++) frame[m + 4 + k] = payload[k]! ^ mask[k & 3]!
    this.socket.write(frame)
  }

  /** Close at once (RST where Node supports it: nothing lingers in TIME_WAIT between measurements). */
  destroy(): void {
    if (this.done) return
    const s = this.socket as net.Socket & { resetAndDestroy?: () => void }
    if (s.resetAndDestroy && !s.connecting) s.resetAndDestroy()
    else s.destroy()
    this.end()
  }

  private fail(err: Error): void {
    this.socket.destroy()
    this.end(err)
  }

  private end(err?: Error): void {
    if (this.done) return
    this.done = true
    this.rest = null
    this.events.closed(err)
  }
}
