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
  type RegisteredSession,
  sendError,
  sendJson,
  sendNoContent,
  SessionRegistry,
  SHUTTING_DOWN,
} from '@tidings/http-kit'
import { OutboundLog } from '@tidings/core'

export interface LongPollTransportOptions extends HttpSessionTransportOptions {
  /** Path prefix; the transport serves `{prefix}/poll` and `{prefix}/poll/:sessionId`. Default `/realtime`. */
  readonly prefix?: string
  /** How long a poll waits for a frame before answering with none. Default 30 000 ms. */
  readonly pollTimeoutMs?: number
  /**
   * Longest a session lives with no poll open. Default 60 000 ms. The session is closed after
   * min(this, `detachedTimeoutMs`) with no poll open.
   */
  readonly sessionTimeoutMs?: number
  /**
   * How long a session with no poll outstanding waits for the next one before it is closed with
   * the hub, so a closed page stops holding the user's connection slots and presence. A client
   * polls again as soon as a poll is answered; this is the margin over that gap (and over a
   * retry after a failed poll). Default 5 000 ms.
   */
  readonly detachedTimeoutMs?: number
  /** Bytes of unconfirmed frames kept; `send` reports backpressure at min(this, the hub's high-water mark). Default 1 MiB. */
  readonly bufferBytes?: number
}

/** Serves `POST {prefix}/poll` and `GET|POST|DELETE {prefix}/poll/:sessionId`; `close()` answers an open poll with `close: { code: 1001 }`. */
export type LongPollTransport = HttpSessionTransport

export function createLongPollTransport(hub: Hub, options: LongPollTransportOptions = {}): LongPollTransport {
  return new LongPollTransportImpl(hub, options)
}

const textDecoder = new TextDecoder()

/** The frame as JSON text, once per `Outbound`. */
function frameText(out: Outbound): string {
  if (typeof out.data === 'string') return out.data
  const memo = out.memo?.['text']
  if (typeof memo === 'string') return memo
  const text = textDecoder.decode(out.data)
  ;(out.memo ??= {})['text'] = text
  return text
}

interface Poll {
  readonly res: ServerResponse
  readonly cursor: number
  readonly timer: ReturnType<typeof setTimeout>
}

class PollSession implements Session {
  readonly transport = 'long-poll'
  readonly codec = jsonCodec
  readonly remoteAddress: string | undefined
  readonly headers: IncomingMessage['headers']
  readonly userAgent: string | undefined
  readonly id = randomToken(16)
  readonly secret = randomToken(24)
  handle: ConnectionHandle | undefined
  /** The opening request's response while `hub.connect` runs. */
  opening: ServerResponse | undefined
  /** Frames (JSON text) not confirmed by a poll's cursor yet. */
  readonly log = new OutboundLog<string>()
  closedWith: { code: number; reason: string } | undefined
  private poll: Poll | undefined
  private congested = false
  private timer: ReturnType<typeof setTimeout> | undefined
  private flush: ReturnType<typeof setImmediate> | undefined

  constructor(
    private readonly t: LongPollTransportImpl,
    req: IncomingMessage,
  ) {
    // The client's address as the edge guard sees it (X-Forwarded-For only from trusted proxies).
    this.remoteAddress = t.clientIp(req)
    this.headers = req.headers
    this.userAgent = header(req, 'user-agent')
  }

  send(out: Outbound): boolean {
    if (this.closedWith) return true
    this.log.push(frameText(out), out.bytes)
    // Frames sent in the same turn (a fan-out, a replay) go out in one answer.
    if (this.poll && this.flush === undefined) {
      this.flush = setImmediate(() => {
        this.flush = undefined
        this.answer()
      })
    }
    if (this.log.bytes < this.limit()) return true
    this.congested = true
    return false
  }

  bufferedAmount(): number {
    return this.log.bytes
  }

  close(code: number, reason: string): void {
    if (this.closedWith) return
    this.closedWith = { code, reason }
    // With no poll open the session stays (until its timeout) so the next poll learns the close.
    if (this.poll) this.answer()
    this.handle?.closed(code, reason)
  }

  private limit(): number {
    return Math.min(this.handle?.highWaterMark ?? Number.POSITIVE_INFINITY, this.t.bufferBytes)
  }

  /** The opening response: `{ session, secret, frames, cursor, upgrade }`. */
  opened(res: ServerResponse): void {
    this.respond(res, 0, `"session":${JSON.stringify(this.id)},"secret":${JSON.stringify(this.secret)},`)
  }

  /** A poll confirming `cursor`: answered at once when there is a frame after it, else on the next frame or the poll timeout. */
  take(res: ServerResponse, cursor: number): void {
    this.answer() // one poll at a time: an earlier one ends with what it has
    clearTimeout(this.timer)
    this.timer = undefined
    const after = Math.min(cursor, this.log.last)
    this.log.confirm(after)
    if (this.closedWith) return this.respond(res, after)
    const timer = setTimeout(() => this.answer(), this.t.pollTimeoutMs)
    timer.unref?.()
    this.poll = { res, cursor: after, timer }
    res.on('close', () => {
      if (this.poll?.res !== res) return
      clearTimeout(this.poll.timer)
      this.poll = undefined
      this.startTimer()
    })
    if (this.congested && this.handle && this.log.bytes < this.limit()) {
      this.congested = false
      this.handle.drained()
    }
    if (this.log.last > after) this.answer()
  }

  /** Answer the open poll, if any, with every frame after its cursor. */
  answer(): void {
    const p = this.poll
    if (!p) return
    this.poll = undefined
    clearTimeout(p.timer)
    this.respond(p.res, p.cursor)
  }

  private respond(res: ServerResponse, cursor: number, prefix = ''): void {
    const frames: string[] = []
    this.log.forEachAfter(cursor, (text) => frames.push(text))
    const close = this.closedWith ? `,"close":${JSON.stringify(this.closedWith)}` : ''
    const next = frames.length > 0 ? this.log.last : cursor
    sendJson(res, 200, `{${prefix}"frames":[${frames.join(',')}],"cursor":${next},"upgrade":"websocket"${close}}`)
    if (this.closedWith) this.t.forget(this)
    else this.startTimer()
  }

  startTimer(): void {
    if (this.poll) return
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.t.expire(this, 'session timed out'), this.t.detachedMs)
    this.timer.unref?.()
  }

  /** Stop every timer and drop the frames. */
  dispose(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.flush !== undefined) clearImmediate(this.flush)
    this.flush = undefined
    this.log.clear()
  }

  /** Closed by the client (`DELETE`), by its timeout or by the transport: answer the open poll and tell the hub. */
  end(code: number, reason: string): void {
    if (this.opening) sendError(this.opening, 503, 'RT_001', reason)
    this.opening = undefined
    const first = this.closedWith === undefined
    if (first) this.closedWith = { code, reason }
    if (this.poll) this.answer()
    this.t.forget(this)
    if (first) this.handle?.closed(code, reason)
  }
}

class LongPollTransportImpl implements LongPollTransport {
  readonly pollTimeoutMs: number
  readonly sessionTimeoutMs: number
  /** How long a session with no poll open is kept: min(sessionTimeoutMs, detachedTimeoutMs). */
  readonly detachedMs: number
  readonly bufferBytes: number
  private readonly maxBodyBytes: number
  private readonly maxDepth: number
  private readonly registry: SessionRegistry<PollSession>

  constructor(hub: Hub, o: LongPollTransportOptions) {
    this.registry = new SessionRegistry(hub, `${normalizePrefix(o.prefix ?? '/realtime')}/poll`, { edge: o.edge, handshakeTimeoutMs: o.handshakeTimeoutMs, stage: 'long-poll' })
    this.pollTimeoutMs = o.pollTimeoutMs ?? 30_000
    this.sessionTimeoutMs = o.sessionTimeoutMs ?? 60_000
    this.detachedMs = Math.min(this.sessionTimeoutMs, positiveOption(o.detachedTimeoutMs, 5_000, '@tidings/long-poll: detachedTimeoutMs'))
    this.bufferBytes = o.bufferBytes ?? 1024 * 1024
    this.maxBodyBytes = o.maxBodyBytes ?? Math.max(1024 * 1024, 2 * maxMessageSizeOf(hub))
    this.maxDepth = positiveOption(o.maxDepth, hub.limits.maxDepth, '@tidings/long-poll: maxDepth')
  }

  get sessions(): number {
    return this.registry.open
  }

  clientIp(req: IncomingMessage): string {
    return this.registry.edge.clientIp(req)
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    let route: ReturnType<SessionRegistry<PollSession>['route']>
    try {
      route = this.registry.route(req, 'POST', ['GET', 'POST', 'DELETE'])
    } catch {
      return false
    }
    if (route === null) return false
    const { method, sessionId } = route
    // serve() answers every failure itself and never rejects.
    await this.registry.serve(req, res, async () => {
      if (sessionId === undefined) return this.open(req, res, route.url)
      // A closed session still answers polls: they carry its `close`.
      const session = this.registry.authorized(req, res, sessionId, method === 'GET')
      if (!session) return
      if (method === 'GET') return this.poll(res, session, route.query.get('cursor'))
      if (method === 'DELETE') {
        session.end(1000, 'closed by client')
        return sendNoContent(res)
      }
      return receiveFrames(req, res, { maxBytes: this.maxBodyBytes, maxDepth: this.maxDepth, timeoutMs: this.registry.handshakeTimeoutMs, edge: this.registry.edge, ip: this.registry.edge.clientIp(req) }, () => (session.closedWith ? undefined : session.handle))
    })
    return true
  }

  private async open(req: IncomingMessage, res: ServerResponse, url: string): Promise<void> {
    req.resume() // an opening request's body, if any, is not read
    const session = new PollSession(this, req)
    session.opening = res
    let gone = false
    res.once('close', () => {
      gone = true
    })
    const outcome = await this.registry.connect(session, url, req)
    if (outcome === 'refused') session.dispose()
    else if (outcome !== 'accepted') return
    // The client left before it learnt the secret: nobody can poll this session.
    else if (gone || res.destroyed) session.end(1006, 'request closed before the session opened')
    else session.opened(res)
  }

  private poll(res: ServerResponse, session: PollSession, cursorParam: string | null): void {
    const cursor = cursorParam === null || !/^\d{1,15}$/.test(cursorParam) ? NaN : Number(cursorParam)
    if (!Number.isSafeInteger(cursor)) return sendError(res, 400, 'RT_007', 'cursor must be a non-negative integer')
    session.take(res, cursor)
  }

  /** No poll for `sessionTimeoutMs`: the session is closed (the hub sees 1006). */
  expire(session: PollSession, reason: string): void {
    session.end(1006, reason)
  }

  forget(session: PollSession): void {
    this.registry.forget(session)
    session.dispose()
  }

  async close(): Promise<void> {
    this.registry.close((s) => s.end(1001, SHUTTING_DOWN))
  }
}
