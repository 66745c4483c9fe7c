import type { Duplex } from 'node:stream'
import { clampCloseReason, type Codec, type ConnectionHandle, type Outbound, type Session, type WireData } from '@tidings/core'
import { WebSocket } from 'ws'
import { isSendableCloseCode, sharedFrame, sharedPayload } from './frame.js'

/** What a session needs from the transport that owns it. */
export interface SessionHost {
  /** Whether the hub may still read a session's headers after accepting it (it re-authenticates with them). */
  readonly keepHeaders: boolean
  /** Called before each write: batches several writes to one socket in the same tick (cork/uncork). */
  batch(session: WsSession): void
  /** Frames of at least this many bytes are compressed when permessage-deflate is negotiated. */
  readonly deflateThreshold: number
  /** The socket is closed; forget the session. */
  removed(session: WsSession): void
  /** ws's closing-handshake timeout: a closing socket whose backlog stops draining for this long is destroyed. */
  readonly closeTimeoutMs: number
  /** Report an unexpected failure (never thrown into the hub or the socket). */
  report(error: unknown, stage: string): void
  /**
   * The payload of this keepalive round's pings (random, new each round): only a pong that echoes
   * it counts as an answer, so a client cannot stay "alive" with unsolicited pongs while it
   * reads nothing.
   */
  readonly pingPayload: Buffer
}

export interface WsSessionInit {
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  readonly remoteAddress: string | undefined
  readonly userAgent: string | undefined
  /** Negotiated codec; undefined means the hub's own (the fast path: one encoding for all). */
  readonly codec: Codec | undefined
  /** Gives back the edge guard's admission of this connection; called once, when the socket closes. */
  readonly admitted?: () => void
}

const OPEN = 1

interface CloseInfo {
  readonly code: number
  readonly reason: string
}
/**
 * A close with bytes still queued ahead of its close frame (a slow consumer dropped with 4009)
 * up to this many `closeTimeoutMs` periods for the backlog to drain (30 s with the default 5 s).
 */
const MAX_CLOSING_PERIODS = 6
type WsCloseTimer = { _closeTimer?: NodeJS.Timeout | null }
/** Frame header bytes at most (unmasked), so a write that may cross the high-water mark is noticed. */
const HEADER_MAX = 14
/**
 * ws's WebSocket, with its events handed straight to the session instead of to listeners, so a
 * socket holds no listeners of ours (four per socket grew each socket's listener table by ~100
 * bytes). ws builds sockets of this class when it is given as `WebSocketServer`'s `WebSocket`
 * option; the events still reach listeners anyone adds.
 */
export class SessionSocket extends WebSocket {
  session: WsSession | undefined = undefined

  // The argument list is whatever ws emits with; only ws's own events are read here.
  override emit(event: string | symbol, ...args: any[]): boolean {
    const s = this.session
    switch (event) {
      case 'message':
        s?.inbound(args[0] as Buffer | ArrayBuffer | Buffer[], args[1] as boolean)
        break
      case 'pong':
        if (s && s.host.pingPayload.equals(args[0] as Buffer)) s.alive = true
        break
      case 'close':
        s?.socketClosed(args[0] as number, (args[1] as Buffer).toString('utf8'))
        break
      case 'error':
        // A protocol error from the peer (bad frame, payload over maxPayload, …) or a failed
        // write: ws closes the socket itself and 'close' follows. Never crash for want of a listener.
        if (this.listenerCount('error') === 0) return true
        break
    }
    return super.emit(event, ...args)
  }
}

const NO_HEADERS: Readonly<Record<string, string | string[] | undefined>> = Object.freeze({})

/**
 * One WebSocket as a core `Session`. Frames are written as shared pre-built WebSocket frames
 * straight to the socket (or through ws's sender when permessage-deflate is negotiated, since
 * compression is per socket).
 */
export class WsSession implements Session {
  // Read on every delivery: declared first so they share the object's first cache line or two
  // (a fan-out touches thousands of sessions, each once).
  /** Set by `close()`: the code and reason this side closed with. */
  private closing: CloseInfo | undefined = undefined
  readonly ws: SessionSocket
  readonly socket: Duplex
  readonly host: SessionHost
  /** Last tick in which this session wrote, and whether its socket is corked for that tick (see the transport). */
  tick = -1
  corked = false
  private readonly deflate: boolean
  /**
   * Writes carry a callback to notice the buffer falling below the mark. Not needed when the
   * mark is at least the socket's own: a write that reaches our mark has then also reached the
   * socket's, so the socket emits 'drain' once it has flushed.
   */
  private watchWrites = false

  /** The handshake's headers; let go of once accepted when the hub will not read them again. */
  headers: Readonly<Record<string, string | string[] | undefined>>
  readonly remoteAddress: string | undefined
  readonly userAgent: string | undefined
  readonly codec: Codec | undefined
  /** Set once the hub accepted the connection. */
  handle: ConnectionHandle | undefined = undefined
  /** Inbound frames that arrived before the hub accepted the connection; null once accepted or closed. */
  pending: WireData[] | null = []
  /** Answered the last ping (or has not been pinged yet). */
  alive = true
  /** `send` returned false and `drained()` has not been called since. */
  private congested = false
  /** Set when the socket is gone (and the hub was told, once it had accepted): how it ended. */
  private ended: CloseInfo | undefined = undefined
  private flushed: ((err?: Error | null) => void) | undefined = undefined
  private onSocketDrain: (() => void) | undefined = undefined
  /**
   * The hub's high-water mark; until the hub accepted the connection, the largest small integer
   * (a number field that starts as Infinity would be a boxed double on every session).
   */
  private mark = 0x3fffffff
  private admitted: (() => void) | undefined

  constructor(ws: SessionSocket, socket: Duplex, host: SessionHost, init: WsSessionInit) {
    this.ws = ws
    this.socket = socket
    this.host = host
    this.headers = init.headers
    this.remoteAddress = init.remoteAddress
    this.userAgent = init.userAgent
    this.codec = init.codec
    this.admitted = init.admitted
    this.deflate = ws.extensions.includes('permessage-deflate')
    ws.session = this
  }

  get transport(): string {
    return 'ws'
  }

  /** Something was written to the socket (the first write of a session is `connected`). */
  get wrote(): boolean {
    return this.tick !== -1
  }

  get isClosed(): boolean {
    return this.ended !== undefined
  }

  // ---------------------------------------------------------------- Session

  send(frame: Outbound): boolean {
    if (this.closing !== undefined || this.ws.readyState !== OPEN) return true
    // A write that may leave the buffer at or above the mark asks to be told when it is flushed.
    // Without compression and with the hub's mark at least the socket's own (the usual case),
    // `write()`'s return says that already: false means the socket will emit 'drain'.
    const watch = this.deflate ? this.bufferedAmount() + frame.bytes + HEADER_MAX >= this.mark : this.watchWrites
    let below: boolean
    try {
      this.host.batch(this)
      if (this.deflate) {
        // ws frames (and compresses) per socket; its sender may hold bytes too.
        const binary = typeof frame.data !== 'string'
        this.ws.send(sharedPayload(frame), { binary, compress: frame.bytes >= this.host.deflateThreshold, fin: true }, watch ? this.whenFlushed() : undefined)
        below = !watch
      } else below = this.socket.write(sharedFrame(frame), watch ? this.whenFlushed() : undefined) && !watch
    } catch (err) {
      // A failed write closes the session; the hub hears of it through closed().
      this.host.report(err, 'ws.send')
      this.terminate()
      return true
    }
    return below || this.checkMark()
  }

  /** After a write: at or above the hub's mark, the session is congested until it drains. */
  private checkMark(): boolean {
    if (this.bufferedAmount() < this.mark) return true
    this.congested = true
    // The socket's 'drain' is listened to from the first congestion on: most sockets never need it.
    if (this.onSocketDrain === undefined) this.socket.on('drain', (this.onSocketDrain = () => this.checkDrained()))
    return false
  }

  private whenFlushed(): (err?: Error | null) => void {
    return (this.flushed ??= (err) => (err ? undefined : this.checkDrained()))
  }

  bufferedAmount(): number {
    // The socket's unflushed bytes plus what ws's sender holds (while compressing).
    return this.ws.bufferedAmount
  }

  close(code: number, reason: string): void {
    if (this.closing !== undefined || this.ended !== undefined) return
    this.closing = { code, reason }
    const authenticating = this.pending !== null
    this.pending = null
    try {
      if (isSendableCloseCode(code)) {
        this.ws.close(code, clampCloseReason(reason))
        // Reading was paused while the hub authenticated: read again to see the peer's close frame.
        if (authenticating) this.ws.resume()
        if (this.bufferedAmount() > 0) this.lingerWhileDraining()
      } else this.ws.terminate()
    } catch (err) {
      this.host.report(err, 'ws.close')
      this.terminate()
    }
  }

  /**
   * The close frame is queued behind bytes the client has not read yet (a slow consumer). ws
   * destroys a closing socket `closeTimeout` after `close()`, which would throw the close frame
   * away with the backlog, and a client that resumes reading would see 1006 instead of the code.
   * ws's timer is replaced (ws clears `_closeTimer` when the socket closes, so ours is cleared too)
   * by one that waits, up to `MAX_CLOSING_PERIODS` periods of `closeTimeoutMs`, for the backlog
   * and the close frame to leave this process (which happens only as the client reads: the
   * kernel's buffers are full), then gives the client one more period to read the close frame.
   * Destroying the socket after that loses nothing already handed to the kernel (a graceful close).
   */
  private lingerWhileDraining(): void {
    const ws = this.ws as unknown as WsCloseTimer
    const period = this.host.closeTimeoutMs
    if (!('_closeTimer' in ws) || period <= 0) return
    const giveUp = Date.now() + MAX_CLOSING_PERIODS * period
    const every = Math.min(period, 100)
    const destroy = (): void => {
      ws._closeTimer = null
      this.socket.destroy()
    }
    const check = (): void => {
      if (this.ended !== undefined) return
      if (this.bufferedAmount() === 0) ws._closeTimer = setTimeout(destroy, period)
      else if (Date.now() >= giveUp) destroy()
      else ws._closeTimer = setTimeout(check, every)
    }
    clearTimeout(ws._closeTimer ?? undefined)
    ws._closeTimer = setTimeout(check, every)
  }

  // ---------------------------------------------------------------- transport side

  /** The hub accepted the connection: hand it what arrived meanwhile, and read again. */
  accepted(handle: ConnectionHandle): void {
    this.handle = handle
    this.mark = handle.highWaterMark
    if (!this.host.keepHeaders) this.headers = NO_HEADERS
    this.watchWrites = this.mark < this.socket.writableHighWaterMark
    if (this.ended !== undefined) {
      this.tellClosed(handle, this.ended)
      return
    }
    const pending = this.pending
    this.pending = null
    if (pending !== null) for (const data of pending) this.deliver(handle, data)
    if (this.ended === undefined) this.ws.resume()
  }

  inbound(data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
    if (this.ended !== undefined || this.closing !== undefined) return
    const bytes = Array.isArray(data) ? Buffer.concat(data) : data instanceof ArrayBuffer ? Buffer.from(data) : data
    const wire: WireData = isBinary ? bytes : bytes.toString('utf8')
    if (this.pending !== null) {
      this.pending.push(wire)
      return
    }
    if (this.handle) this.deliver(this.handle, wire)
  }

  private deliver(handle: ConnectionHandle, data: WireData): void {
    try {
      handle.receive(data)
    } catch (err) {
      this.host.report(err, 'ws.receive')
    }
  }

  /** After a congested send: the buffer is below the mark again, so the hub may flush its queue. */
  checkDrained(): void {
    if (!this.congested || this.ended !== undefined || this.handle === undefined) return
    if (this.bufferedAmount() >= this.mark) return
    this.congested = false
    try {
      this.handle.drained()
    } catch (err) {
      this.host.report(err, 'ws.drained')
    }
  }

  /** Keepalive: terminate if the previous ping went unanswered, else ping again. */
  ping(): void {
    // Still authenticating: the handshake timeout covers it. Closing: the closing timer does (a
    // slow consumer that stopped reading must still get to read its close frame).
    if (this.ended !== undefined || this.pending !== null || this.closing !== undefined) return
    if (!this.alive) {
      this.terminate()
      return
    }
    this.alive = false
    try {
      this.ws.ping(this.host.pingPayload)
    } catch {
      this.terminate()
    }
  }

  terminate(): void {
    try {
      this.ws.terminate()
    } catch (err) {
      this.host.report(err, 'ws.terminate')
      this.socket.destroy()
    }
  }

  /** ws emitted 'close' (after the closing handshake, an error, or a lost socket). Runs once. */
  socketClosed(code: number, reason: string): void {
    if (this.ended !== undefined) return
    // Report the code this side closed with, if it did; else what the peer sent (1006: none).
    const ended = (this.ended = this.closing ?? { code, reason })
    this.pending = null
    const admitted = this.admitted
    if (admitted !== undefined) {
      this.admitted = undefined
      try {
        admitted()
      } catch (err) {
        this.host.report(err, 'ws.release')
      }
    }
    this.host.removed(this)
    if (this.handle) this.tellClosed(this.handle, ended)
  }

  private tellClosed(handle: ConnectionHandle, how: CloseInfo): void {
    try {
      handle.closed(how.code, how.reason)
    } catch (err) {
      this.host.report(err, 'ws.closed')
    }
  }
}
