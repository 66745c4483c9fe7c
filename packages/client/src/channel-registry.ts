import { type ClientFrame, type MessageFrame, type Receiver, type ServerFrame, type ServerFrameOf, createReceiver } from '@tidings/protocol'
import { Acks } from './acks.js'
import { Channel, type ChannelHost, type ChannelOptions } from './channel.js'
import type { Line, Requests } from './requests.js'

/** What the registry reports to its client. */
export interface RegistryEvents {
  /** A message to this user or connection rather than to a channel. */
  message(message: MessageFrame): void
  /** An error that belongs to no request (to the channel's listeners, if it has some). */
  error(err: unknown, channel?: Channel): void
}

/**
 * The client's channels by name: their subscribes (made again on every connection, resuming
 * from the receiver's position), unsubscribes, the messages and acknowledgments of each.
 */
export class ChannelRegistry {
  private readonly channels = new Map<string, Channel>()
  private readonly receiver: Receiver
  private readonly acks: Acks
  private readonly host: ChannelHost
  private readonly keyPrefix = randomKey()
  private keySeq = 0

  constructor(
    private readonly line: Line,
    private readonly requests: Requests,
    options: { readonly ackIntervalMs?: number | undefined },
    events: RegistryEvents,
  ) {
    this.acks = new Acks(line, options)
    this.receiver = createReceiver({
      deliver: (m) => {
        const ch = m.channel !== undefined ? this.channels.get(m.channel) : undefined
        if (ch) ch.handleMessage(m)
        else events.message(m)
      },
      ack: (channel, offset) => this.acks.add(channel, offset),
    })
    this.host = {
      wantSubscribed: (ch) => this.subscribe(ch),
      unsubscribeChannel: (ch) => this.unsubscribe(ch),
      request: <F extends ServerFrame>(frame: ClientFrame) => requests.request(frame) as Promise<F>,
      // Only a connection in use is ever current.
      sendVolatile: (frame) => line.current()?.transport.send(frame),
      sendQueued: (frame) => {
        try {
          requests.queue(frame)
        } catch (err) {
          events.error(err)
        }
      },
      idempotencyKey: () => `${this.keyPrefix}-${(++this.keySeq).toString(36)}`,
      reportError: (err, ch) => events.error(err, ch),
      disposed: (ch) => {
        if (this.channels.get(ch.name) === ch) this.channels.delete(ch.name)
      },
    }
  }

  get(name: string): Channel | undefined {
    return this.channels.get(name)
  }

  /** The channel of that name, created on first use; options given later replace the earlier ones. */
  channel(name: string, options?: ChannelOptions): Channel {
    let ch = this.channels.get(name)
    if (!ch) {
      ch = new Channel(name, options ?? {}, this.host)
      this.channels.set(name, ch)
    } else if (options) ch.options = { ...options }
    return ch
  }

  /** A `message` frame: to its channel once and in order (the receiver holds, dedups and acks). */
  message(frame: MessageFrame): void {
    this.receiver.message(frame)
  }

  /** A new connection: every wanted channel subscribes again, from where its stream was. */
  resubscribe(): void {
    for (const ch of this.channels.values()) {
      ch.subscribeId = undefined
      if (ch.wanted) this.subscribe(ch)
    }
  }

  /** Send the batched acks (after the resubscribes of a new connection). */
  flushAcks(): void {
    this.acks.flush()
  }

  /** The connection is gone: the subscriptions will be made again. */
  lost(): void {
    for (const ch of this.channels.values()) ch.handleLost()
  }

  /** The client gave up connecting: waiting `subscribe()` calls fail. */
  failWaiters(error: Error): void {
    for (const ch of this.channels.values()) ch.failWaiters(error)
  }

  disposeAll(): void {
    for (const ch of [...this.channels.values()]) ch.dispose()
  }

  subscribed(frame: ServerFrameOf<'subscribed'>): void {
    const p = this.requests.take(frame.id)
    this.receiver.subscribed(frame)
    const ch = this.channels.get(frame.channel)
    if (!ch || !ch.wanted) return
    if (p && ch.subscribeId !== undefined && ch.subscribeId !== p.id) return // an older subscribe; a newer one is on its way
    if (p) ch.subscribeId = undefined
    ch.handleSubscribed(frame)
  }

  unsubscribed(frame: ServerFrameOf<'unsubscribed'>): void {
    const p = this.requests.take(frame.id)
    const ch = this.channels.get(frame.channel)
    if (p) {
      p.resolve(frame)
      // Subscribed again meanwhile: that subscribe (sent after this unsubscribe) starts afresh.
      if (!ch?.wanted) this.receiver.forget(frame.channel)
      ch?.handleUnsubscribed(undefined, false)
      return
    }
    this.receiver.forget(frame.channel)
    this.acks.delete(frame.channel)
    ch?.handleUnsubscribed(frame.reason, true)
  }

  private subscribe(ch: Channel): void {
    if (!this.line.ready() || ch.subscribeId !== undefined || !ch.wanted) return
    const o = ch.options
    const since = this.receiver.position(ch.name)
    const frame: ClientFrame = {
      type: 'subscribe',
      id: this.requests.id(),
      channel: ch.name,
      ...(o.filter !== undefined ? { filter: o.filter } : {}),
      ...(o.presence !== undefined ? { presence: o.presence } : {}),
      ...(o.state !== undefined ? { state: o.state } : {}),
      ...(o.auth !== undefined ? { auth: o.auth } : {}),
      ...(since ? { since } : {}),
    }
    ch.subscribeId = frame.id as number
    this.requests.dispatch({ id: frame.id as number, kind: 'subscribe', frame, channel: ch, resolve: () => {}, reject: () => {}, retries: 0 })
  }

  private unsubscribe(ch: Channel): Promise<void> {
    this.acks.delete(ch.name)
    if (!this.line.ready() || ch.state === 'unsubscribed') {
      this.receiver.forget(ch.name)
      ch.subscribeId = undefined
      ch.handleUnsubscribed(undefined, false)
      return Promise.resolve()
    }
    ch.subscribeId = undefined
    return new Promise((resolve) => {
      const id = this.requests.id()
      const lost = () => {
        if (!ch.wanted) this.receiver.forget(ch.name)
      }
      this.requests.dispatch({ id, kind: 'unsubscribe', frame: { type: 'unsubscribe', id, channel: ch.name }, channel: ch, resolve: () => resolve(), reject: () => resolve(), lost, retries: 0 })
    })
  }
}

function randomKey(): string {
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto
  const bytes = new Uint8Array(9)
  if (crypto?.getRandomValues) crypto.getRandomValues(bytes)
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256)
  return Array.from(bytes, (b) => b.toString(36).padStart(2, '0')).join('')
}
