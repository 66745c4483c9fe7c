/**
 * The clients of `pnpm check:cluster`: real `ws` connections speaking the Tidings protocol to the
 * nodes, each moving to the next node when its node goes away.
 *
 * - `Subscriber`: subscribes to the channel, feeds every frame to a `createReceiver` (the
 *   client-side dedup and order of @tidings/protocol), and keeps the app-level log the check
 *   counts on: which numbered messages reached the app, duplicates, offsets not above the last
 *   one (inversions), offsets skipped with and without a notice. After a reconnect it resumes
 *   with `since` from its receiver's position.
 * - `Publisher`: publishes its share of the numbered messages with idempotency keys, a window of
 *   requests in flight, at a paced rate; a request that fails, times out, or whose connection
 *   drops is sent again with the same key (on another node if its node went away).
 * - `Ghost`: a presence member that goes away with its node and never comes back.
 */
import { createReceiver, type MessageFrame, type Receiver, type StreamPosition } from '@tidings/core'
import WebSocket from 'ws'

type Frame = { type: string; [k: string]: unknown }

/** A range of offsets the subscriber was told it will not get: `(from, to]` in `epoch`. */
export interface ReportedRange {
  epoch: string
  from: number
  to: number
  why: string
}

abstract class Link {
  ws: WebSocket | undefined
  connectionId: string | undefined
  stopped = false
  reconnects = 0
  refused = 0
  openedAt = 0
  /** The node (index into `ports`) this client is on or is trying. */
  node: number

  constructor(
    readonly userId: string,
    readonly ports: readonly number[],
    node: number,
    /** Whether to move to another node when the connection drops. */
    private readonly reconnect: boolean,
  ) {
    this.node = node
  }

  get open(): boolean {
    return this.connectionId !== undefined && this.ws?.readyState === WebSocket.OPEN
  }

  connect(): void {
    if (this.stopped) return
    const ws = new WebSocket(`ws://127.0.0.1:${this.ports[this.node]}/realtime?token=tok-${this.userId}`, 'tidings.v1.json')
    this.ws = ws
    this.connectionId = undefined
    ws.on('error', () => undefined)
    ws.on('message', (raw) => {
      const f = JSON.parse(raw.toString()) as Frame
      if (f.type === 'connected') {
        this.connectionId = f.connectionId as string
        this.openedAt = Date.now()
      }
      this.frame(f, ws)
    })
    ws.on('close', (code) => {
      if (this.ws !== ws) return
      this.connectionId = undefined
      this.closed()
      if (code === 4008) this.refused++
      if (this.stopped || !this.reconnect) return
      this.reconnects++
      // Another node: the one after this one (a load balancer would pick any live one).
      this.node = (this.node + 1) % this.ports.length
      setTimeout(() => this.connect(), 50 + Math.random() * 100)
    })
  }

  send(frame: object): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame))
  }

  stop(): void {
    this.stopped = true
    this.ws?.close(1000)
  }

  protected abstract frame(f: Frame, ws: WebSocket): void
  protected closed(): void {}
}

export class Subscriber extends Link {
  readonly receiver: Receiver
  /** Message number → where the app got it first. */
  readonly delivered = new Map<number, { epoch: string; offset: number }>()
  duplicates = 0
  crossEpochDuplicates = 0
  inversions = 0
  unreportedGaps = 0
  readonly unreportedNotes: string[] = []
  readonly reported: ReportedRange[] = []
  /** `recovered: false` notices (resume answers and the hub's own epoch-change frames). */
  notices = 0
  /** The app's position: the last message it processed, or where a notice moved it. */
  epoch: string | undefined
  offset = 0
  firstPosition: StreamPosition | undefined
  private ackDue: number | undefined
  private readonly ackTimer: NodeJS.Timeout

  constructor(userId: string, ports: readonly number[], node: number, readonly channel: string) {
    super(userId, ports, node, true)
    this.receiver = createReceiver({
      deliver: (frame) => this.deliver(frame),
      ack: (_channel, offset) => {
        this.ackDue = offset
      },
    })
    // Acknowledge in batches (cumulative), every 20 ms.
    this.ackTimer = setInterval(() => {
      if (this.ackDue === undefined || !this.open) return
      this.send({ type: 'ack', channel: this.channel, offset: this.ackDue })
      this.ackDue = undefined
    }, 20)
  }

  /** Resolves once the first `subscribed` arrived. */
  ready(): Promise<void> {
    return new Promise((resolve) => {
      const check = setInterval(() => {
        if (this.firstPosition) {
          clearInterval(check)
          resolve()
        }
      }, 10)
    })
  }

  override stop(): void {
    clearInterval(this.ackTimer)
    super.stop()
  }

  /** A `delivery:failed` event of a node about this subscriber's connection. */
  deliveryFailed(fromOffset: number, toOffset: number): void {
    this.reported.push({ epoch: this.epoch ?? '', from: fromOffset - 1, to: toOffset, why: 'delivery:failed' })
  }

  covered(epoch: string | undefined, offset: number): boolean {
    return this.reported.some((r) => (epoch === undefined || r.epoch === epoch) && offset > r.from && offset <= r.to)
  }

  protected frame(f: Frame): void {
    if (f.type === 'connected') {
      const since = this.receiver.position(this.channel)
      this.send({ type: 'subscribe', id: 'sub', channel: this.channel, ...(since ? { since } : {}) })
      return
    }
    if (f.type === 'subscribed' && f.channel === this.channel) {
      const before = this.receiver.position(this.channel)
      this.receiver.subscribed(f as never)
      const after = this.receiver.position(this.channel)
      if (!after) return
      if (!this.firstPosition) {
        this.firstPosition = after
        this.epoch = after.epoch
        this.offset = after.offset
        return
      }
      if (f.recovered === false) {
        this.notices++
        // Everything after the app's position up to the new one is reported lost.
        if (this.epoch !== after.epoch) {
          this.reported.push({ epoch: this.epoch!, from: this.offset, to: Number.POSITIVE_INFINITY, why: String(f.reason) })
          this.reported.push({ epoch: after.epoch, from: 0, to: after.offset, why: String(f.reason) })
        } else this.reported.push({ epoch: after.epoch, from: this.offset, to: after.offset, why: String(f.reason) })
        this.epoch = after.epoch
        this.offset = after.offset
        return
      }
      // No notice: the position must not have moved past anything.
      if (before && (after.epoch !== before.epoch || after.offset !== before.offset)) {
        if (after.epoch !== this.epoch) {
          this.unreportedGaps++
          this.unreportedNotes.push(`${this.userId}: subscribed moved ${this.epoch}:${this.offset} → ${after.epoch}:${after.offset} without recovered:false`)
          this.epoch = after.epoch
          this.offset = after.offset
        }
        // Same epoch, moved forward: the skipped offsets are counted when the next message arrives.
      }
      return
    }
    if (f.type === 'message' && f.channel === this.channel) {
      this.receiver.message(f as MessageFrame)
    }
  }

  private deliver(frame: MessageFrame): void {
    const n = (frame.data as { n?: number } | undefined)?.n
    const offset = frame.offset!
    const epoch = this.receiver.position(this.channel)?.epoch ?? ''
    if (epoch !== this.epoch) {
      // Epochs change only through `subscribed` frames, which set this.epoch: cannot happen.
      this.unreportedGaps++
      this.unreportedNotes.push(`${this.userId}: a message of epoch ${epoch} while the app was on ${this.epoch}`)
      this.epoch = epoch
      this.offset = offset - 1
    }
    if (offset <= this.offset) this.inversions++
    else if (offset > this.offset + 1) {
      let missing = 0
      for (let o = this.offset + 1; o < offset; o++) if (!this.covered(epoch, o)) missing++
      if (missing > 0) {
        this.unreportedGaps += missing
        this.unreportedNotes.push(`${this.userId}: offsets ${this.offset + 1}..${offset - 1} of ${epoch} skipped (${missing} without a notice)`)
      }
    }
    this.offset = Math.max(this.offset, offset)
    if (typeof n !== 'number') return
    const first = this.delivered.get(n)
    if (first) {
      this.duplicates++
      if (first.epoch !== epoch) this.crossEpochDuplicates++
      return
    }
    this.delivered.set(n, { epoch, offset })
  }
}

export class Publisher extends Link {
  /** Message number → the offset of its `published` reply. */
  readonly published = new Map<number, number>()
  readonly queue: number[]
  private readonly inFlight = new Map<string, { n: number; timer: NodeJS.Timeout }>()
  private attempt = 0
  private tokens = 0
  private pacer: NodeJS.Timeout | undefined
  retries = 0
  duplicateReplies = 0
  total: number
  readonly errors = new Map<string, number>()

  constructor(
    userId: string,
    ports: readonly number[],
    node: number,
    readonly channel: string,
    numbers: number[],
    private readonly window: number,
    private readonly timeoutMs = 10_000,
  ) {
    super(userId, ports, node, true)
    this.queue = numbers
    this.total = numbers.length
  }

  get done(): boolean {
    return this.published.size === this.total
  }

  /** Publish at `rate` messages per second until every number has its `published` reply. */
  start(rate: number): void {
    this.pacer = setInterval(() => {
      this.tokens = Math.min(this.tokens + rate / 100, Math.max(1, rate / 10))
      this.pump()
    }, 10)
  }

  override stop(): void {
    if (this.pacer) clearInterval(this.pacer)
    for (const f of this.inFlight.values()) clearTimeout(f.timer)
    super.stop()
  }

  private pump(): void {
    while (this.open && this.tokens >= 1 && this.inFlight.size < this.window && this.queue.length > 0) {
      const n = this.queue.shift()!
      if (this.published.has(n)) continue
      this.tokens--
      const id = `${n}.${++this.attempt}`
      const timer = setTimeout(() => this.retry(id, 'timeout'), this.timeoutMs)
      this.inFlight.set(id, { n, timer })
      this.send({ type: 'message', id, channel: this.channel, event: 'n', data: { n }, idempotencyKey: `n-${n}` })
    }
  }

  private retry(id: string, why: string): void {
    const f = this.inFlight.get(id)
    if (!f) return
    clearTimeout(f.timer)
    this.inFlight.delete(id)
    this.retries++
    this.errors.set(why, (this.errors.get(why) ?? 0) + 1)
    if (!this.published.has(f.n)) this.queue.unshift(f.n)
  }

  protected frame(f: Frame): void {
    if (f.type === 'published') {
      const p = this.inFlight.get(f.id as string)
      if (!p) return
      clearTimeout(p.timer)
      this.inFlight.delete(f.id as string)
      if (f.duplicate) this.duplicateReplies++
      this.published.set(p.n, f.offset as number)
    } else if (f.type === 'error' && f.id !== undefined) {
      const id = f.id as string
      setTimeout(() => this.retry(id, String(f.code)), 100)
    }
  }

  protected override closed(): void {
    for (const id of [...this.inFlight.keys()]) this.retry(id, 'connection closed')
  }
}

export class Ghost extends Link {
  constructor(userId: string, ports: readonly number[], node: number, readonly channel: string) {
    super(userId, ports, node, false)
  }

  protected frame(f: Frame): void {
    if (f.type === 'connected') this.send({ type: 'subscribe', id: 'sub', channel: this.channel })
    else if (f.type === 'message' && f.ack === true && typeof f.offset === 'number') this.send({ type: 'ack', channel: this.channel, offset: f.offset })
  }
}
