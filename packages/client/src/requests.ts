import { type ClientFrame, RealtimeError, type ServerFrame, type ServerFrameOf, utf8Length } from '@tidings/protocol'
import type { Channel } from './channel.js'
import { Outbox } from './outbox.js'
import type { ClientTransport } from './transports/types.js'

export type RequestKind = 'subscribe' | 'unsubscribe' | 'request' | 'auth'

/** A frame sent with an id, waiting for the hub's answer. */
export interface Pending {
  readonly id: number
  readonly kind: RequestKind
  readonly frame: ClientFrame
  readonly channel?: Channel | undefined
  resolve(frame: ServerFrame): void
  reject(error: Error): void
  /** An unsubscribe whose connection went before the answer: called before it resolves. */
  readonly lost?: (() => void) | undefined
  /** RT_006 retries so far. */
  retries: number
  /** Connections it went out on (more than one: its answer was lost with a connection and it was sent again). */
  sends?: number
  /** The connection it last went out on. */
  sentOn?: unknown
  /** Timeout of the request while it is out on a connection. */
  timer?: ReturnType<typeof setTimeout> | undefined
  /** Answered, rejected or timed out: late answers and scheduled retries are ignored. */
  settled?: boolean
}

interface OutboxEntry {
  readonly frame: ClientFrame
  readonly pending?: Pending | undefined
}

/** The hub connection as requests see it. */
export interface Line {
  /** The open connection (compared by identity across an RT_006 wait), undefined while there is none. */
  current(): { readonly transport: Pick<ClientTransport, 'send'> } | undefined
  /** An open connection in state `connected`: what is sent now goes out, otherwise it waits. */
  ready(): boolean
}

/** The request timeout's default, ms. */
const REQUEST_TIMEOUT = 10_000
const MAX_RATE_RETRIES = 5

/**
 * Requests with ids and their answers: the outbox of what waits for a connection, a timeout
 * per request while it is out, RT_006 retries, and what happens to unanswered requests when
 * the connection goes.
 */
export class Requests {
  /** The hub's `maxMessageSize`, from its `connected` frame. */
  maxMessageSize: number | undefined
  private readonly pending = new Map<number, Pending>()
  private readonly outbox: Outbox<OutboxEntry>
  private nextId = 1

  constructor(
    private readonly line: Line,
    private readonly options: { readonly outboxLimit?: number | undefined; readonly requestTimeoutMs?: number | undefined },
  ) {
    this.outbox = new Outbox(options.outboxLimit ?? 100)
  }

  /** Sends waiting for a connection. */
  get queued(): number {
    return this.outbox.size
  }

  /** A fresh frame id (requests, subscribes, pings). */
  id(): number {
    return this.nextId++
  }

  /** A request: sent now, or queued until connected. Throws RT_006 when the outbox is full. */
  request(frame: ClientFrame): Promise<ServerFrame> {
    const id = this.nextId++
    const full = { ...frame, id } as ClientFrame
    let pending!: Pending
    const promise = new Promise<ServerFrame>((resolve, reject) => {
      pending = { id, kind: 'request', frame: full, resolve, reject, retries: 0 }
    })
    this.enqueue({ frame: full, pending })
    return promise
  }

  /** A frame without answer: sent now, or queued until connected. Throws RT_006 when the outbox is full. */
  queue(frame: ClientFrame): void {
    this.enqueue({ frame })
  }

  /** Send a request on the current connection (nothing without one) and start its timeout. */
  dispatch(p: Pending): void {
    const link = this.line.current()
    if (!link) return
    // The hub answers a frame this large without its request id (it does not decode it), so the
    // request would never settle: refuse it here, with the same error the hub would give.
    const max = this.maxMessageSize
    if (max !== undefined) {
      const bytes = utf8Length(JSON.stringify(p.frame))
      if (bytes > max) {
        settle(p)
        p.reject(new RealtimeError('RT_005', `frame of ${bytes} bytes is over the limit of ${max}`, { limit: max }))
        return
      }
    }
    this.pending.set(p.id, p)
    this.armTimeout(p)
    if (p.sentOn !== link) {
      p.sentOn = link
      p.sends = (p.sends ?? 0) + 1
    }
    link.transport.send(p.frame)
  }

  /** Send what waited for the connection, oldest first. */
  flush(): void {
    for (const entry of this.outbox.drain()) this.sendEntry(entry)
  }

  /** The request this id belongs to, now answered (undefined when none waits for it). */
  take(id: string | number | undefined): Pending | undefined {
    const p = typeof id === 'number' ? this.pending.get(id) : undefined
    if (p) {
      this.pending.delete(p.id)
      settle(p)
    }
    return p
  }

  /** Resolve the request this frame answers. */
  answer(frame: ServerFrame): void {
    const id = 'id' in frame ? frame.id : undefined
    if (typeof id !== 'number') return
    const p = this.pending.get(id)
    if (!p) return
    this.pending.delete(id)
    settle(p)
    p.resolve(frame)
  }

  /** An `error` frame: false when it answers no request (it is the caller's to report). */
  refused(frame: ServerFrameOf<'error'>, error: RealtimeError): boolean {
    const p = typeof frame.id === 'number' ? this.pending.get(frame.id) : undefined
    if (!p) return false
    this.pending.delete(p.id)
    // Rate limited: the frame was not handled, so sending it again is safe. The request's timeout
    // keeps running meanwhile: a request retried past it rejects (once) instead of hanging.
    const retryAfter = frame.details?.['retryAfterMs']
    if (frame.code === 'RT_006' && typeof retryAfter === 'number' && p.retries < MAX_RATE_RETRIES) {
      p.retries++
      const link = this.line.current()
      this.pending.set(p.id, p)
      setTimeout(() => {
        if (p.settled || this.pending.get(p.id) !== p) return
        this.pending.delete(p.id)
        if (p.kind === 'subscribe' && (this.line.current() !== link || p.channel?.subscribeId !== p.id)) return
        if (this.line.ready()) this.dispatch(p)
        else if (p.kind === 'request') {
          clearTimeout(p.timer)
          p.timer = undefined
          this.outbox.restore([{ frame: p.frame, pending: p }])
        }
      }, retryAfter)
      return true
    }
    settle(p)
    if (p.kind === 'subscribe' && p.channel) {
      if (p.channel.subscribeId === p.id) p.channel.subscribeId = undefined
      p.channel.handleRefused(error)
      return true
    }
    p.reject(resentRevision(p, error))
    return true
  }

  /**
   * The connection is gone: its unanswered requests go back to the front of the outbox (a
   * publish carries its idempotency key, so the hub will not publish it twice); subscribes are
   * made again from the channels; unsubscribes are done (the subscription went with the connection).
   */
  requeue(): void {
    const again: OutboxEntry[] = []
    for (const p of [...this.pending.values()].sort((a, b) => a.id - b.id)) {
      // Its timeout starts again when it is sent on the next connection.
      clearTimeout(p.timer)
      p.timer = undefined
      if (p.kind === 'auth') {
        // Not sent again: the next connection is opened with a fresh token from the auth function.
        p.settled = true
        p.reject(new RealtimeError('RT_001', 'connection lost before the hub answered the auth frame'))
      } else if (p.kind === 'request') again.push({ frame: p.frame, pending: p })
      else if (p.kind === 'unsubscribe') {
        p.lost?.()
        p.resolve({ type: 'unsubscribed', channel: p.channel?.name ?? '' })
      }
    }
    this.pending.clear()
    this.outbox.restore(again)
  }

  /** Stop waiting for a connection: the queued requests reject with `error` (queued frames without answer stay). */
  rejectQueued(error: RealtimeError): void {
    for (const entry of this.outbox.remove((e) => e.pending !== undefined)) entry.pending!.reject(error)
  }

  private enqueue(entry: OutboxEntry): void {
    if (this.line.ready()) this.sendEntry(entry)
    else this.outbox.push(entry)
  }

  private sendEntry(entry: OutboxEntry): void {
    if (entry.pending) this.dispatch(entry.pending)
    else this.line.current()?.transport.send(entry.frame)
  }

  /** Start a request's timeout when it goes out (kept across RT_006 retries, stopped when it is requeued). */
  private armTimeout(p: Pending): void {
    if (p.timer !== undefined) return
    const ms = this.options.requestTimeoutMs ?? REQUEST_TIMEOUT
    if (!(ms > 0) || !Number.isFinite(ms)) return
    p.timer = setTimeout(() => {
      p.timer = undefined
      if (p.settled) return
      const what = p.kind === 'request' || p.kind === 'auth' ? `'${p.frame.type}' request` : `${p.kind} of '${p.channel?.name ?? ''}'`
      const error = new RealtimeError('RT_001', `no answer to the ${what} within ${ms} ms`, { timeout: true, timeoutMs: ms })
      if (p.kind === 'subscribe') {
        // The subscribe stays in flight (a late answer still completes it); whoever waits for it is told.
        p.channel?.failWaiters(error)
        return
      }
      this.pending.delete(p.id)
      p.settled = true
      if (p.kind === 'unsubscribe') p.resolve({ type: 'unsubscribed', channel: p.channel?.name ?? '' })
      else p.reject(error)
    }, ms)
  }
}

/**
 * An edit or delete refused after it was sent again on a new connection (its first answer was
 * lost with the connection): the first try may have been applied (a delete then answers RT_004,
 * already deleted). `details.resent: true` says so; edits and deletes carry no idempotency key.
 */
function resentRevision(p: Pending, error: RealtimeError): RealtimeError {
  if ((p.sends ?? 0) < 2 || (p.frame.type !== 'edit' && p.frame.type !== 'delete')) return error
  return new RealtimeError(error.code, `${error.message} (sent again after a lost connection: the first try may have been applied)`, { ...error.details, resent: true })
}

/** The request is done: stop its timeout; later answers and retries leave it alone. */
function settle(p: Pending): void {
  clearTimeout(p.timer)
  p.timer = undefined
  p.settled = true
}
