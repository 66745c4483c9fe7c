/**
 * A WebSocket peer for the attacks, on the real `ws` client: it sends frames (text or binary, one
 * at a time or many in one TCP write), and keeps the books on what it is owed — every frame that
 * carries a usable id (see `expectedId`) must be answered by a frame with that id, or the
 * connection must be closed with a documented code.
 */
import WebSocket from 'ws'
import { expectedId, idKey } from './mutate.js'

/**
 * Close codes a server may legitimately end a fuzzed connection with: docs/protocol.md §8 (1001,
 * 4000, 4001, 4008, 4009, 4010) and docs/transports.md / RFC 6455 for what `ws` does with broken
 * input (1002 protocol error, 1007 invalid UTF-8 in a text frame, 1009 over maxPayload).
 */
export const LEGIT_CLOSE_CODES: ReadonlySet<number> = new Set([1000, 1001, 1002, 1007, 1009, 4000, 4001, 4008, 4009, 4010])

export interface PeerStats {
  sent: number
  owed: number
  answered: number
  /** Frames whose answer was owed when the connection closed with a documented code. */
  settledByClose: number
  /** Frames whose answer was owed when the connection closed with an undocumented code (1006, 1011, …). */
  lostInClose: number
  badCloses: Map<number, number>
  closes: Map<number, number>
}

export function newStats(): PeerStats {
  return { sent: 0, owed: 0, answered: 0, settledByClose: 0, lostInClose: 0, badCloses: new Map(), closes: new Map() }
}

export class WsPeer {
  readonly ws: WebSocket
  /** Owed answers by id key (a count: ids may collide after mutation). */
  readonly owed = new Map<string, number>()
  readonly opened: Promise<boolean>
  /** Resolves true on the `connected` frame, false if the connection ends (or 5 s pass) first. */
  readonly connected: Promise<boolean>
  readonly closedWith: Promise<number>
  closed = false
  onFrame: ((frame: Record<string, unknown>) => void) | undefined

  constructor(
    url: string,
    readonly stats: PeerStats,
  ) {
    this.ws = new WebSocket(url, 'tidings.v1.json', { maxPayload: 256 * 1024 * 1024 })
    this.opened = new Promise((resolve) => {
      this.ws.once('open', () => resolve(true))
      this.ws.once('error', () => resolve(false))
      this.ws.once('close', () => resolve(false))
    })
    this.ws.on('error', () => {})
    let onConnected: (ok: boolean) => void = () => {}
    this.connected = new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), 5000)
      onConnected = (ok) => {
        clearTimeout(timer)
        resolve(ok)
      }
      this.ws.once('close', () => onConnected(false))
    })
    this.ws.on('message', (raw) => {
      let frame: Record<string, unknown>
      try {
        frame = JSON.parse(raw.toString()) as Record<string, unknown>
      } catch {
        return
      }
      const key = idKey(frame.id)
      if (key !== undefined) {
        const n = this.owed.get(key)
        if (n !== undefined) {
          this.stats.answered++
          if (n <= 1) this.owed.delete(key)
          else this.owed.set(key, n - 1)
        }
      }
      if (frame.type === 'connected') onConnected(true)
      this.onFrame?.(frame)
    })
    this.closedWith = new Promise((resolve) => {
      this.ws.once('close', (code) => {
        this.closed = true
        const pending = [...this.owed.values()].reduce((a, b) => a + b, 0)
        this.owed.clear()
        this.stats.closes.set(code, (this.stats.closes.get(code) ?? 0) + 1)
        if (LEGIT_CLOSE_CODES.has(code)) this.stats.settledByClose += pending
        else {
          this.stats.lostInClose += pending
          this.stats.badCloses.set(code, (this.stats.badCloses.get(code) ?? 0) + 1)
        }
        resolve(code)
      })
    })
  }

  get pending(): number {
    let n = 0
    for (const v of this.owed.values()) n += v
    return n
  }

  /** Send one frame; false when the socket is not open. */
  send(data: Buffer | string, binary = false): boolean {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) return false
    const bytes = typeof data === 'string' ? Buffer.from(data) : data
    const key = expectedId(bytes)
    if (key !== undefined) {
      this.owed.set(key, (this.owed.get(key) ?? 0) + 1)
      this.stats.owed++
    }
    this.stats.sent++
    this.ws.send(bytes, { binary })
    return true
  }

  /** Send several frames in one TCP write: the socket is corked until the next tick. */
  sendBatch(frames: ReadonlyArray<{ data: Buffer; binary: boolean }>): number {
    const socket = (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket
    socket?.cork()
    let n = 0
    for (const f of frames) if (this.send(f.data, f.binary)) n++
    if (socket) process.nextTick(() => socket.uncork())
    return n
  }

  /** Resolves once nothing is owed (true), or after `timeoutMs` (false). */
  async settle(timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs
    while (this.owed.size > 0 && !this.closed && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
    return this.owed.size === 0
  }

  close(): void {
    if (!this.closed) this.ws.close(1000)
  }

  terminate(): void {
    if (!this.closed) this.ws.terminate()
  }
}
