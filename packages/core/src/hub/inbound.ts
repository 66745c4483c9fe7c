import { CloseCode, type ErrorCode, RealtimeError, type ClientFrame, type RequestId, type WireData, decodeWithin, parseClientFrame, peekRequestId, wireLength } from '@tidings/protocol'
import type { Clock } from '../ports/clock.js'
import { type MaybePromise, isPromise } from '../util.js'
import type { Connection } from './connection.js'
import type { Signals } from './events.js'
import type { FanOut } from './fanout.js'
import type { Admission } from './admission.js'
import type { Metrics } from './metrics.js'
import type { ResolvedHubOptions } from './options.js'

/** Frames of one connection that may wait behind a frame still being handled. */
const MAX_WAITING_FRAMES = 1000
/** What an ack takes from the frame budget. */
const ACK_COST = 0.05
/**
 * A search reads through a channel's history, a channel list asks the store and the rules about
 * many channels: each costs ten frames of the rate budget (at most one second's worth).
 */
const READ_COST = 10

/** An error answer to one frame. */
export interface Refusal {
  readonly id?: RequestId | undefined
  readonly code: ErrorCode
  readonly message: string
  readonly frameType?: string | undefined
  readonly details?: Record<string, unknown> | undefined
  /** May be shed on a congested connection (only answers to frames without an id). */
  readonly volatile?: boolean
  readonly channel?: string | undefined
}

/** What the inbound pipeline needs from the hub: where a valid frame goes, and how to answer. */
export interface InboundHost {
  readonly clock: Clock
  readonly options: Pick<ResolvedHubOptions, 'limits'>
  readonly stats: Metrics
  readonly fanout: FanOut
  /** Handle one valid frame (throw or reject a `RealtimeError` to answer it with that code). */
  handle(conn: Connection, frame: ClientFrame, bytes: number): MaybePromise<void>
  /** Closes a connection that queued too many frames. */
  readonly admission: Pick<Admission, 'closeConnection'>
  readonly signals: Signals
}

/**
 * Every inbound frame: size, the decode budget (depth scanned before parsing), the frame rate
 * (acks at a twentieth of a frame), the protocol schema, then the frame's handler, in order per
 * connection even when one waits; every refusal answered by the frame's id, in frame order.
 */
export class Inbound {
  constructor(private readonly host: InboundHost) {}

  receive(conn: Connection, data: WireData): void {
    if (conn.ended) return
    try {
      this.receiveFrame(conn, data)
    } catch (err) {
      // Nothing a client sends may take the hub down: answer the frame and go on.
      this.host.signals.report(err, 'frame:receive')
      this.reject(conn, { code: 'RT_007', message: 'frame could not be handled' })
    }
  }

  private receiveFrame(conn: Connection, data: WireData): void {
    const now = this.host.clock.now()
    conn.lastSeen = now
    const bytes = wireLength(data)
    this.host.stats.messagesIn++
    this.host.stats.bytesIn += bytes
    const limits = this.host.options.limits
    const max = limits.maxMessageSize
    if (bytes > max) {
      // Still answer a request by its id, so the client's promise settles; past 4× the limit the
      // frame is not worth decoding at all.
      let id: RequestId | undefined
      if (bytes <= max * 4) {
        const decoded = decodeWithin(conn.codec, data, limits.maxDepth)
        id = decoded.ok ? requestIdOf(decoded.value) : conn.codec.name === 'json' ? peekRequestId(data) : undefined
      } else if (conn.codec.name === 'json') id = peekRequestId(data)
      return this.reject(conn, { id, code: 'RT_005', message: `frame of ${bytes} bytes is over the limit of ${max}`, details: { limit: max } })
    }
    // The decode budget: nesting is counted by a linear scan before anything recursive runs.
    const decoded = decodeWithin(conn.codec, data, limits.maxDepth)
    if (!decoded.ok) return this.reject(conn, { id: conn.codec.name === 'json' ? peekRequestId(data) : undefined, code: 'RT_007', message: decoded.reason, details: decoded.reason.startsWith('nested') ? { maxDepth: limits.maxDepth } : undefined })
    const value = decoded.value
    const id = requestIdOf(value)
    const type = typeof (value as { type?: unknown } | null)?.type === 'string' ? ((value as { type: string }).type) : undefined
    // Acks cost a twentieth of a frame: they are the client keeping its side of at-least-once
    // delivery, and must not eat the budget of the frames the app sends.
    const allowed =
      type === 'ack' ? conn.takeFractionalToken(now, ACK_COST) : type === 'search' || type === 'channels' ? conn.takeFractionalToken(now, Math.min(READ_COST, limits.messagesPerSecond)) : conn.takeMessageToken(now)
    if (!allowed) {
      // A request (it has an id) is always answered, so its promise settles; the rest may be shed.
      return this.reject(conn, { id, code: 'RT_006', message: 'too many messages per second', frameType: type, details: { retryAfterMs: conn.messageRetryAfter() }, volatile: id === undefined })
    }
    const parsed = parseClientFrame(value)
    if (!parsed.ok) return this.reject(conn, { id, code: 'RT_007', message: parsed.reason, frameType: type })
    const frame = parsed.frame
    this.inOrder(conn, () => {
      if (conn.ended) return
      try {
        const r = this.host.handle(conn, frame, bytes)
        return isPromise(r) ? r.catch((err) => this.fail(conn, frame, err)) : r
      } catch (err) {
        this.fail(conn, frame, err)
      }
    })
  }

  /**
   * Frames of one connection are handled, and answered, in order, even when one waits on a
   * store or a rule. With nothing waiting, the task runs now, with no promise at all.
   */
  inOrder(conn: Connection, task: () => MaybePromise<void>): void {
    if (conn.tail) {
      // Frames waiting behind one that waits (a slow rule or store) are bounded: a client that
      // keeps sending meanwhile is closed rather than queued without end.
      if (++conn.waiting > MAX_WAITING_FRAMES) {
        this.host.admission.closeConnection(conn, CloseCode.PolicyViolation, `more than ${MAX_WAITING_FRAMES} frames waiting for an answer`)
        return
      }
      const next = conn.tail.then(() => {
        conn.waiting--
        return task()
      })
      conn.tail = next
      void next.then(() => {
        if (conn.tail === next) conn.tail = null
      })
      return
    }
    const r = task()
    if (isPromise(r)) {
      conn.tail = r
      void r.then(() => {
        if (conn.tail === r) conn.tail = null
      })
    }
  }

  /**
   * A frame's handler threw or rejected. This runs inside that frame's turn of the in-order
   * chain, so the error is sent now: queued behind the chain it would follow the answers to
   * frames that arrived after it.
   */
  private fail(conn: Connection, frame: ClientFrame, err: unknown): void {
    const id = 'id' in frame ? frame.id : undefined
    const channel = 'channel' in frame ? frame.channel : undefined
    if (err instanceof RealtimeError) return this.sendError(conn, { id, code: err.code, message: err.message, frameType: frame.type, details: err.details as Record<string, unknown> | undefined, channel })
    this.host.signals.report(err, `frame:${frame.type}`)
    this.sendError(conn, { id, code: 'RT_001', message: `${frame.type} failed: internal error`, frameType: frame.type, channel })
  }

  /** Answer a frame with an error, in frame order (behind any frame still being handled). */
  reject(conn: Connection, r: Refusal): void {
    this.inOrder(conn, () => this.sendError(conn, r))
  }

  private sendError(conn: Connection, r: Refusal): void {
    this.host.stats.errors[r.code]++
    this.host.fanout.sendFrame(conn, { type: 'error', id: r.id, code: r.code, message: r.message, channel: r.channel, details: r.details }, r.volatile === true)
    this.host.signals.emit('client:error', { connectionId: conn.id, userId: conn.userId, code: r.code, message: r.message, frameType: r.frameType })
  }
}

/** The request id of a decoded frame, when it has a usable one (to answer even a rejected frame by it). */
function requestIdOf(value: unknown): RequestId | undefined {
  if (value === null || typeof value !== 'object') return undefined
  const id = (value as { id?: unknown }).id
  if (typeof id === 'string' && id.length > 0 && id.length <= 64) return id
  if (typeof id === 'number' && Number.isInteger(id) && id >= 0) return id
  return undefined
}
