import type { IncomingMessage, ServerResponse } from 'node:http'
import { type ConnectionHandle, type Hub, jsonCodec, type Outbound, type Session } from '@tidings/core'
import {
  header,
  type HttpSessionTransport,
  type HttpSessionTransportOptions,
  maxMessageSizeOf,
  normalizePrefix,
  positiveOption,
  randomToken,
  receiveFrames,
  sendError,
  sendNoContent,
  SessionRegistry,
  SHUTTING_DOWN,
} from '@tidings/http-kit'
import { OutboundLog } from '@tidings/core'

export interface SseTransportOptions extends HttpSessionTransportOptions {
  /** Path prefix; the transport serves `GET {prefix}/sse` and `POST {prefix}/sse/:sessionId`. Default `/realtime`. */
  readonly prefix?: string
  /** Interval of the `: ping` comment on every open stream. Default 15 000 ms. */
  readonly heartbeatMs?: number
  /** The `retry:` sent to clients (EventSource reconnection delay). Default 1 000 ms. */
  readonly reconnectMs?: number
  /**
   * Longest a session outlives its stream. Default 30 000 ms. The session is closed after
   * min(this, `detachedTimeoutMs`) without a stream.
   */
  readonly sessionTimeoutMs?: number
  /**
   * How long a session whose stream closed waits for a resume (`Last-Event-ID` and the secret)
   * before it is closed with the hub, so a closed page stops holding the user's connection slots
   * and presence. Default 5 000 ms.
   */
  readonly detachedTimeoutMs?: number
  /** Bytes of sent frames kept for resume (and at most buffered while no stream is open). Default 1 MiB. */
  readonly bufferBytes?: number
}

/** Serves `GET {prefix}/sse` and `POST {prefix}/sse/:sessionId`; `close()` sends every client an `event: close` with 1001. */
export type SseTransport = HttpSessionTransport

export function createSseTransport(hub: Hub, options: SseTransportOptions = {}): SseTransport {
  return new SseTransportImpl(hub, options)
}

const SSE_HEADERS = {
  'Content-Type': 'text/event-stream',
  'Cache-Control': 'no-cache, no-transform',
  Connection: 'keep-alive',
  'X-Accel-Buffering': 'no',
} as const

const textDecoder = new TextDecoder()
const TYPE_PREFIX = /^\{"type":"([A-Za-z0-9_:.-]{1,64})"/
const SAFE_TYPE = /^[A-Za-z0-9_:.-]{1,64}$/

/** `event:` and `data:` lines of a frame, built once per `Outbound` and shared by every stream. */
function eventTail(out: Outbound): string {
  const memo = out.memo?.['sse']
  if (typeof memo === 'string') return memo
  const text = typeof out.data === 'string' ? out.data : textDecoder.decode(out.data)
  let type = TYPE_PREFIX.exec(text)?.[1]
  if (type === undefined) {
    try {
      const t = (JSON.parse(text) as { type?: unknown } | null)?.type
      type = typeof t === 'string' && SAFE_TYPE.test(t) ? t : 'message'
    } catch {
      type = 'message'
    }
  }
  // JSON text has no raw line breaks; anything else is split over several `data:` lines.
  const data = /[\r\n]/.test(text) ? text.replace(/\r\n|\r|\n/g, '\ndata: ') : text
  const tail = `event: ${type}\ndata: ${data}\n\n`
  ;(out.memo ??= {})['sse'] = tail
  return tail
}

function closeEvent(code: number, reason: string): string {
  return `event: close\ndata: ${JSON.stringify({ code, reason })}\n\n`
}

class SseSession implements Session {
  readonly transport = 'sse'
  readonly codec = jsonCodec
  readonly remoteAddress: string | undefined
  readonly headers: IncomingMessage['headers']
  readonly userAgent: string | undefined
  readonly id = randomToken(16)
  readonly secret = randomToken(24)
  handle: ConnectionHandle | undefined
  /** The opening request's response while `hub.connect` runs. */
  opening: ServerResponse | undefined
  /** Sent frames (their `event:`/`data:` lines), kept until a resume confirms them or `bufferBytes` trims them. */
  readonly log = new OutboundLog<string>()
  /** `seq` of the last frame written to a stream. */
  written = 0
  /** Bytes of the frames after `written`. */
  unwritten = 0
  res: ServerResponse | undefined
  closedWith: { code: number; reason: string } | undefined
  congested = false
  timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    private readonly t: SseTransportImpl,
    req: IncomingMessage,
  ) {
    // The client's address as the edge guard sees it (X-Forwarded-For only from trusted proxies).
    this.remoteAddress = t.clientIp(req)
    this.headers = req.headers
    this.userAgent = header(req, 'user-agent')
  }

  send(out: Outbound): boolean {
    if (this.closedWith) return true
    const tail = eventTail(out)
    const seq = this.log.push(tail, out.bytes)
    if (this.res) {
      this.write(this.res, seq, tail)
      this.log.trim(this.t.bufferBytes, seq + 1)
    } else this.unwritten += out.bytes
    if (this.bufferedAmount() < this.limit()) return true
    this.congested = true
    return false
  }

  bufferedAmount(): number {
    return this.unwritten + (this.res?.writableLength ?? 0)
  }

  close(code: number, reason: string): void {
    if (this.closedWith) return
    this.closedWith = { code, reason }
    if (this.res) this.end()
    // While detached the session stays (until its timeout) so a resume still gets the unconfirmed frames and the close.
    this.handle?.closed(code, reason)
  }

  private limit(): number {
    return Math.min(this.handle?.highWaterMark ?? Number.POSITIVE_INFINITY, this.t.bufferBytes)
  }

  private write(res: ServerResponse, seq: number, tail: string): void {
    // Node corks the socket for the rest of the tick, so a fan-out burst or a replay leaves in one write.
    res.write(`id: ${this.id}:${seq}\n${tail}`, this.flushed)
    this.written = seq
  }

  /** Called as each chunk reaches the kernel: the moment to tell a congested hub it may send again. */
  private readonly flushed = (): void => {
    if (this.congested) this.checkDrained()
  }

  /** Resume after the client's `Last-Event-ID`; false when frames after it were already trimmed. */
  resume(seq: number): boolean {
    const after = Math.min(seq, this.log.last)
    if (after + 1 < this.log.first) return false
    this.log.confirm(after)
    this.written = after
    this.unwritten = this.log.bytes
    return true
  }

  /**
   * Start (or take over) the stream: headers, `retry:`, the `session` event, then every frame
   * not yet written. The secret is in the `session` event of the first stream only: a resumed
   * stream never repeats it.
   */
  attach(res: ServerResponse, first: boolean): void {
    const old = this.res
    this.res = undefined
    if (old && !old.writableEnded) old.end()
    clearTimeout(this.timer)
    this.timer = undefined
    this.res = res
    res.writeHead(200, SSE_HEADERS)
    const announce = first ? { session: this.id, secret: this.secret } : { session: this.id }
    res.write(`retry: ${this.t.reconnectMs}\n\nevent: session\ndata: ${JSON.stringify(announce)}\n\n`)
    this.log.forEachAfter(this.written, (tail, seq) => this.write(res, seq, tail))
    this.unwritten = 0
    this.log.trim(this.t.bufferBytes, this.written + 1)
    res.on('drain', () => this.checkDrained())
    res.on('close', () => this.detach(res))
    res.on('error', () => this.detach(res)) // a failed write: the client is gone, 'close' follows
    if (this.closedWith) return this.end()
    this.t.attached.add(this)
    this.t.streamsChanged()
    this.checkDrained()
  }

  ping(): void {
    this.res?.write(': ping\n\n')
  }

  /** Write the `close` event and end the stream; the session is gone. */
  end(): void {
    const res = this.res
    this.res = undefined
    this.t.forget(this)
    if (res && !res.writableEnded) {
      const c = this.closedWith ?? { code: 1001, reason: SHUTTING_DOWN }
      res.end(closeEvent(c.code, c.reason))
    }
  }

  /** The transport is closing: end everything and tell the hub. */
  shutdown(): void {
    if (this.opening) sendError(this.opening, 503, 'RT_001', SHUTTING_DOWN)
    this.opening = undefined
    if (!this.closedWith) this.closedWith = { code: 1001, reason: SHUTTING_DOWN }
    this.end()
    this.handle?.closed(1001, SHUTTING_DOWN)
  }

  private detach(res: ServerResponse): void {
    if (this.res !== res) return
    this.res = undefined
    this.t.attached.delete(this)
    this.t.streamsChanged()
    this.startTimer()
  }

  startTimer(): void {
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.t.expire(this, 'session timed out'), this.t.detachedMs)
    this.timer.unref?.()
  }

  private checkDrained(): void {
    if (!this.congested || this.closedWith || !this.handle || this.bufferedAmount() >= this.limit()) return
    this.congested = false
    this.handle.drained()
  }
}

class SseTransportImpl implements SseTransport {
  readonly heartbeatMs: number
  readonly reconnectMs: number
  readonly sessionTimeoutMs: number
  /** How long a session without a stream is kept: min(sessionTimeoutMs, detachedTimeoutMs). */
  readonly detachedMs: number
  readonly bufferBytes: number
  readonly attached = new Set<SseSession>()
  private readonly maxBodyBytes: number
  private readonly maxDepth: number
  private readonly registry: SessionRegistry<SseSession>
  private heartbeat: ReturnType<typeof setInterval> | undefined

  constructor(hub: Hub, o: SseTransportOptions) {
    this.registry = new SessionRegistry(hub, `${normalizePrefix(o.prefix ?? '/realtime')}/sse`, { edge: o.edge, handshakeTimeoutMs: o.handshakeTimeoutMs, stage: 'sse' })
    this.heartbeatMs = o.heartbeatMs ?? 15_000
    this.reconnectMs = o.reconnectMs ?? 1_000
    this.sessionTimeoutMs = o.sessionTimeoutMs ?? 30_000
    this.detachedMs = Math.min(this.sessionTimeoutMs, positiveOption(o.detachedTimeoutMs, 5_000, '@tidings/sse: detachedTimeoutMs'))
    this.bufferBytes = o.bufferBytes ?? 1024 * 1024
    this.maxBodyBytes = o.maxBodyBytes ?? Math.max(1024 * 1024, 2 * maxMessageSizeOf(hub))
    this.maxDepth = positiveOption(o.maxDepth, hub.limits.maxDepth, '@tidings/sse: maxDepth')
  }

  get sessions(): number {
    return this.registry.open
  }

  clientIp(req: IncomingMessage): string {
    return this.registry.edge.clientIp(req)
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    let route: ReturnType<SessionRegistry<SseSession>['route']>
    try {
      route = this.registry.route(req, 'GET', ['POST', 'DELETE'])
    } catch {
      return false
    }
    if (route === null) return false
    const { sessionId, method } = route
    // serve() answers every failure itself and never rejects.
    await this.registry.serve(req, res, async () => {
      if (sessionId === undefined) return this.open(req, res, route.url, route.query)
      const session = this.registry.authorized(req, res, sessionId)
      if (!session) return
      if (method === 'DELETE') return this.remove(res, session)
      return receiveFrames(req, res, { maxBytes: this.maxBodyBytes, maxDepth: this.maxDepth, timeoutMs: this.registry.handshakeTimeoutMs, edge: this.registry.edge, ip: this.registry.edge.clientIp(req) }, () => (session.closedWith || this.registry.get(sessionId) !== session ? undefined : session.handle))
    })
    return true
  }

  private async open(req: IncomingMessage, res: ServerResponse, url: string, query: URLSearchParams): Promise<void> {
    // A resume named in the query (`?lastEventId=`, as an EventSource would) is a resume too, and
    // is refused like any other without the secret header.
    const lastId = header(req, 'last-event-id') ?? query.get('lastEventId') ?? ''
    const colon = lastId.lastIndexOf(':')
    const seqText = lastId.slice(colon + 1)
    if (colon > 0 && /^\d{1,15}$/.test(seqText)) {
      // A resume: only with the session's secret in `x-tidings-secret` (never in the URL, which
      // reaches logs). Knowing the id (it is in every event id) is not enough: 403, and the
      // stream, the frames and the secret stay with their owner. An unknown or expired session is
      // 404: the client opens a new session and resumes its channels from their offsets. (A
      // browser `EventSource`, which cannot send headers, always does the latter.)
      const previous = this.registry.authorized(req, res, lastId.slice(0, colon), true)
      if (!previous) return
      if (previous.resume(Number(seqText))) return previous.attach(res, false)
      // Frames after the client's position are gone: it starts over on a new session.
      this.expire(previous, 'session could not be resumed')
    }

    const session = new SseSession(this, req)
    session.opening = res
    let gone = false
    res.once('close', () => {
      gone = true
    })
    if ((await this.registry.connect(session, url, req)) !== 'accepted') return
    // The client left before it learnt the secret: nobody can resume this session.
    if (gone || res.destroyed) this.expire(session, 'stream closed before the session opened')
    else session.attach(res, true)
  }

  /** The client is done with the session (it closed, or moved to another transport): end it now, not at its timeout. */
  private remove(res: ServerResponse, session: SseSession & { handle: ConnectionHandle }): void {
    session.closedWith = { code: 1000, reason: 'closed by the client' }
    session.end()
    session.handle.closed(1000, 'closed by the client')
    sendNoContent(res)
  }

  /** The session's client is gone (timeout) or cannot resume: close it for the hub. */
  expire(session: SseSession, reason: string): void {
    if (session.closedWith) return session.end()
    session.closedWith = { code: 1006, reason }
    session.end()
    session.handle?.closed(1006, reason)
  }

  forget(session: SseSession): void {
    clearTimeout(session.timer)
    session.timer = undefined
    this.registry.forget(session)
    session.log.clear()
    if (this.attached.delete(session)) this.streamsChanged()
  }

  /** One heartbeat timer for every open stream. */
  streamsChanged(): void {
    if (this.attached.size > 0 && this.heartbeat === undefined && !this.registry.isClosing) {
      this.heartbeat = setInterval(() => {
        for (const s of this.attached) s.ping()
      }, this.heartbeatMs)
      this.heartbeat.unref?.()
    } else if (this.attached.size === 0 && this.heartbeat !== undefined) {
      clearInterval(this.heartbeat)
      this.heartbeat = undefined
    }
  }

  async close(): Promise<void> {
    this.registry.close((s) => s.shutdown())
    this.attached.clear()
    clearInterval(this.heartbeat)
    this.heartbeat = undefined
  }
}
