import { jsonCodec, RealtimeError, type FilterNode, type ClientFrame, type MessageFrame, type PresenceSnapshot, type ServerFrame, type ServerFrameOf, type ServerFrameType, type StreamPosition } from '@tidings/protocol'
import { EventEmitter } from 'eventemitter3'
import type { Hub } from '../hub/hub.js'
import type { Identity } from '../ports/auth.js'
import type { Clock } from '../ports/clock.js'
import type { ConnectionHandle, Outbound, Session } from '../ports/session.js'
import { seededRandom } from '../util.js'

/** Faults applied to one direction of a memory connection. Probabilities are 0..1. */
export interface Faults {
  /** Lose a frame. */
  readonly drop?: number
  /** Deliver a frame twice. */
  readonly duplicate?: number
  /** Hold a frame back and deliver it after the next one. */
  readonly reorder?: number
  /** Delay each frame by this many ms (or a random amount in [min, max]), on the injected clock. */
  readonly delayMs?: number | readonly [number, number]
}

export interface MemoryConnectOptions {
  /** Shorthand for a trusted identity `{ userId }`. */
  readonly userId?: string
  /** A trusted identity (skips the authenticator, as a host app's own session would). */
  readonly identity?: Identity
  readonly token?: string
  readonly apiKey?: string
  readonly headers?: Record<string, string>
  readonly ip?: string
  readonly userAgent?: string
}

export interface MemoryTransportOptions {
  /** Seed for fault injection, so a failing schedule can be replayed. Default 1. */
  readonly seed?: number
}

/** Connects in-memory clients to a hub: real protocol frames, encoded and decoded, no sockets. */
export interface MemoryTransport {
  connect(options?: MemoryConnectOptions): Promise<MemoryClient>
  /** Every client this transport connected, open or closed. */
  readonly clients: readonly MemoryClient[]
}

export function createMemoryTransport(hub: Hub, options: MemoryTransportOptions = {}): MemoryTransport {
  const random = seededRandom(options.seed ?? 1)
  const clients: MemoryClient[] = []
  return {
    clients,
    async connect(o = {}) {
      const client = new MemoryClient(hub.clock, random, o)
      clients.push(client)
      const identity = o.identity ?? (o.userId !== undefined ? { userId: o.userId } : undefined)
      const handle = await hub.connect(client.session, { identity, token: o.token, apiKey: o.apiKey }).catch((err: unknown) => {
        client.markClosed(4001, err instanceof Error ? err.message : 'refused')
        throw err
      })
      client.attach(handle)
      return client
    },
  }
}

type Listener = (frame: ServerFrame) => void

/**
 * One in-memory client. Speaks the wire protocol through the hub's codec. Frames from the hub
 * are recorded in `frames` as they arrive; frames to the hub are delivered on a microtask
 * (never re-entrantly). Faults can be injected per direction.
 */
export class MemoryClient {
  readonly frames: ServerFrame[] = []
  connectionId = ''
  userId: string | undefined
  closed = false
  closeCode: number | undefined
  closeReason: string | undefined
  /** Server → client faults. */
  inbound: Faults = {}
  /** Client → server faults. */
  outbound: Faults = {}
  readonly session: Session
  private handle: ConnectionHandle | undefined
  private readonly events = new EventEmitter()
  private readonly pending = new Map<string, { resolve: (f: ServerFrame) => void; reject: (e: Error) => void }>()
  private nextId = 0
  private paused = false
  private inFlight: Outbound[] = []
  private inFlightBytes = 0
  private heldIn: string | undefined
  private heldOut: string | undefined

  constructor(
    private readonly clock: Clock,
    private readonly random: () => number,
    meta: MemoryConnectOptions,
  ) {
    this.session = {
      transport: 'memory',
      codec: jsonCodec,
      remoteAddress: meta.ip ?? '127.0.0.1',
      headers: meta.headers ?? {},
      userAgent: meta.userAgent ?? 'tidings-memory-client',
      send: (frame) => this.fromServer(frame),
      bufferedAmount: () => this.inFlightBytes,
      close: (code, reason) => {
        this.markClosed(code, reason)
        this.handle?.closed(code, reason)
      },
    }
  }

  /** @internal */
  attach(handle: ConnectionHandle): void {
    this.handle = handle
    this.connectionId = handle.id
    const connected = this.frames.find((f) => f.type === 'connected') as ServerFrameOf<'connected'> | undefined
    this.userId = connected?.userId
  }

  /** @internal */
  markClosed(code: number, reason: string): void {
    if (this.closed) return
    this.closed = true
    this.closeCode = code
    this.closeReason = reason
    for (const p of this.pending.values()) p.reject(new RealtimeError('RT_001', `connection closed (${code} ${reason})`))
    this.pending.clear()
    this.events.emit('close', code, reason)
  }

  // ---------------------------------------------------------------- server → client

  private fromServer(frame: Outbound): boolean {
    if (this.closed) return true
    if (this.paused) {
      this.inFlight.push(frame)
      this.inFlightBytes += frame.bytes
      return this.inFlightBytes < (this.handle?.highWaterMark ?? Number.POSITIVE_INFINITY)
    }
    this.applyFaults(this.inbound, typeof frame.data === 'string' ? frame.data : new TextDecoder().decode(frame.data), 'in')
    return true
  }

  private applyFaults(f: Faults, data: string, dir: 'in' | 'out'): void {
    const deliver = dir === 'in' ? (d: string) => this.decode(d) : (d: string) => this.toServer(d)
    if (f.drop && this.random() < f.drop) return
    const copies = f.duplicate && this.random() < f.duplicate ? 2 : 1
    const send = () => {
      for (let i = 0; i < copies; i++) deliver(data)
    }
    if (f.reorder && this.random() < f.reorder) {
      const held = dir === 'in' ? this.heldIn : this.heldOut
      if (held === undefined) {
        if (dir === 'in') this.heldIn = data
        else this.heldOut = data
        return
      }
    }
    const flushHeld = () => {
      const held = dir === 'in' ? this.heldIn : this.heldOut
      if (held === undefined) return
      if (dir === 'in') this.heldIn = undefined
      else this.heldOut = undefined
      deliver(held)
    }
    const delay = typeof f.delayMs === 'number' ? f.delayMs : f.delayMs ? f.delayMs[0] + this.random() * (f.delayMs[1] - f.delayMs[0]) : 0
    if (delay > 0) {
      this.clock.setTimeout(() => {
        send()
        flushHeld()
      }, delay)
      return
    }
    send()
    flushHeld()
  }

  private decode(data: string): void {
    if (this.closed) return
    const frame = jsonCodec.decode(data) as ServerFrame
    this.frames.push(frame)
    const id = 'id' in frame && frame.id !== undefined ? String(frame.id) : undefined
    if (id !== undefined && this.pending.has(id) && frame.type !== 'message') {
      const p = this.pending.get(id)!
      this.pending.delete(id)
      if (frame.type === 'error') p.reject(new RealtimeError(frame.code, frame.message, frame.details))
      else p.resolve(frame)
    }
    this.events.emit('frame', frame)
    this.events.emit(frame.type, frame)
  }

  // ---------------------------------------------------------------- client → server

  /** Send a frame (or raw text, to test bad input) to the hub. */
  send(frame: ClientFrame | Record<string, unknown> | string): void {
    if (this.closed) throw new RealtimeError('RT_001', 'connection is closed')
    const data = typeof frame === 'string' ? frame : JSON.stringify(frame)
    this.applyFaults(this.outbound, data, 'out')
  }

  private toServer(data: string): void {
    queueMicrotask(() => {
      if (!this.closed) this.handle?.receive(data)
    })
  }

  /** Send a request and wait for the reply carrying its id; an `error` reply rejects with a RealtimeError. */
  request<T extends ServerFrame = ServerFrame>(frame: Omit<ClientFrame, 'id'> & Record<string, unknown>): Promise<T> {
    const id = `r${++this.nextId}`
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (f: ServerFrame) => void, reject })
      try {
        this.send({ ...frame, id } as ClientFrame)
      } catch (err) {
        this.pending.delete(id)
        reject(err)
      }
    })
  }

  subscribe(channel: string, options: { filter?: FilterNode | null; since?: StreamPosition; presence?: Record<string, unknown>; state?: string; auth?: string } = {}): Promise<ServerFrameOf<'subscribed'>> {
    return this.request({ type: 'subscribe', channel, ...options })
  }

  unsubscribe(channel: string): Promise<ServerFrameOf<'unsubscribed'>> {
    return this.request({ type: 'unsubscribe', channel })
  }

  publish(channel: string, event: string, data?: unknown, options: { idempotencyKey?: string; priority?: 'high' | 'normal' | 'low' } = {}): Promise<ServerFrameOf<'published'>> {
    return this.request({ type: 'message', channel, event, data, ...options })
  }

  /** Replace the data of one of this user's messages (channels with `revisions: 'own'`). */
  edit(channel: string, offset: number, data: unknown): Promise<ServerFrameOf<'revised'>> {
    return this.request({ type: 'edit', channel, offset, data })
  }

  /** Delete one of this user's messages (channels with `revisions: 'own'`). */
  delete(channel: string, offset: number): Promise<ServerFrameOf<'revised'>> {
    return this.request({ type: 'delete', channel, offset })
  }

  /** Full-text search of a channel's history, newest first. */
  async search(channel: string, query: string, options: { limit?: number; before?: number } = {}): Promise<MessageFrame[]> {
    return (await this.request<ServerFrameOf<'search'>>({ type: 'search', channel, query, ...options })).messages
  }

  /** This user's channels (those keeping an offline queue for it) with unread counts. */
  async channels(options: { limit?: number } = {}): Promise<ServerFrameOf<'channels'>['channels']> {
    return (await this.request<ServerFrameOf<'channels'>>({ type: 'channels', ...options })).channels
  }

  updatePresence(channel: string, update: { state?: string; data?: Record<string, unknown> }): Promise<ServerFrameOf<'presence:update'>> {
    return this.request({ type: 'presence:update', channel, ...update })
  }

  async getPresence(channel: string): Promise<PresenceSnapshot> {
    const f = await this.request<ServerFrameOf<'presence'>>({ type: 'presence:get', channel })
    return { users: f.users, count: f.count }
  }

  typing(channel: string, active = true): void {
    this.send({ type: 'typing', channel, active })
  }

  ack(channel: string, offset: number): void {
    this.send({ type: 'ack', channel, offset })
  }

  ping(): Promise<ServerFrameOf<'pong'>> {
    return this.request({ type: 'ping' })
  }

  // ---------------------------------------------------------------- reading what arrived

  /** Message frames received, optionally for one channel. */
  messages(channel?: string): MessageFrame[] {
    return this.frames.filter((f): f is MessageFrame => f.type === 'message' && (channel === undefined || f.channel === channel))
  }

  /** Frames of one type received so far. */
  received<T extends ServerFrameType>(type: T): Array<ServerFrameOf<T>> {
    return this.frames.filter((f) => f.type === type) as Array<ServerFrameOf<T>>
  }

  /** The next frame of a type (optionally matching a predicate) that arrives from now on. */
  next<T extends ServerFrameType>(type: T, match: (f: ServerFrameOf<T>) => boolean = () => true): Promise<ServerFrameOf<T>> {
    if (this.closed) return Promise.reject(new RealtimeError('RT_001', 'connection is closed'))
    return new Promise((resolve, reject) => {
      const onFrame = (f: ServerFrameOf<T>) => {
        if (!match(f)) return
        this.events.off(type, onFrame)
        this.events.off('close', onClose)
        resolve(f)
      }
      const onClose = () => {
        this.events.off(type, onFrame)
        reject(new RealtimeError('RT_001', 'connection closed while waiting'))
      }
      this.events.on(type, onFrame)
      this.events.once('close', onClose)
    })
  }

  on(type: ServerFrameType | 'frame', listener: Listener): () => void {
    this.events.on(type, listener)
    return () => this.events.off(type, listener)
  }

  onClose(listener: (code: number, reason: string) => void): void {
    this.events.on('close', listener)
  }

  // ---------------------------------------------------------------- network behaviour

  /** Stop reading: frames pile up as buffered bytes, as with a slow consumer. */
  pause(): void {
    this.paused = true
  }

  /** Read again: deliver what piled up and tell the hub the buffer drained. */
  resume(): void {
    this.paused = false
    const frames = this.inFlight
    this.inFlight = []
    this.inFlightBytes = 0
    for (const f of frames) this.fromServer(f)
    this.handle?.drained()
  }

  get bufferedBytes(): number {
    return this.inFlightBytes
  }

  /** Close from the client side, as a browser tab closing a socket would. */
  close(code = 1000, reason = 'client closed'): void {
    if (this.closed) return
    this.markClosed(code, reason)
    this.handle?.closed(code, reason)
  }

  /** Lose the connection abruptly (network failure): the hub sees a 1006 close. */
  drop(): void {
    this.close(1006, 'connection lost')
  }
}
