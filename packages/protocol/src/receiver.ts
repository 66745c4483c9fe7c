import type { MessageFrame, ServerFrameOf, StreamPosition } from './protocol.js'

/**
 * The receiving half of the delivery contract, for client SDKs and tests: feed it the frames of
 * a connection; it hands the application each channel message once, in offset order, and says
 * what to acknowledge.
 *
 * - Offsets at or below the last processed one are duplicates (redelivery, replay): dropped.
 * - On at-least-once channels a message is processed only when everything before it is: its
 *   `prev` (or `offset - 1`) is at or below the last processed offset. Otherwise it waits, bounded,
 *   until the hub's redelivery fills the gap.
 * - On at-most-once channels nothing is waited for; an offset that arrives after a higher one
 *   (overtaken by a higher-priority frame) is still delivered, once.
 * - The position to resume from after a reconnect is `position(channel)`.
 */
export interface Receiver {
  /** A `subscribed` frame: where the channel's stream starts for this subscription. */
  subscribed(frame: ServerFrameOf<'subscribed'>): void
  /** A message frame; returns how many messages it released to the application (0 for a duplicate or a held one). */
  message(frame: MessageFrame): number
  /** The last processed position of a channel, for `subscribe({ since })` after a reconnect. */
  position(channel: string): StreamPosition | undefined
  /** Messages held back waiting for an earlier one, per channel. */
  held(channel: string): number
  /** Forget a channel (unsubscribed). */
  forget(channel: string): void
}

export interface ReceiverOptions {
  /** The application's handler: called once per message, in order per channel. */
  deliver(frame: MessageFrame): void
  /** Acknowledge everything up to `offset` on a channel (cumulative); batch as you like. */
  ack(channel: string, offset: number): void
  /** Most messages held back per channel while waiting for a gap to fill. Default 1000. */
  maxHeld?: number
}

interface ChannelState {
  epoch: string
  last: number
  reliable: boolean
  /** Held messages by offset. */
  held: Map<number, MessageFrame>
  /**
   * At-most-once: offsets jumped over, which may still arrive late (a higher-priority frame can
   * overtake a queued one): delivered once if they do. Bounded to the most recent ones.
   */
  skipped: Set<number> | null
}

const MAX_SKIPPED = 256

export function createReceiver(options: ReceiverOptions): Receiver {
  const channels = new Map<string, ChannelState>()
  const maxHeld = options.maxHeld ?? 1000

  const release = (channel: string, st: ChannelState): number => {
    let released = 0
    for (;;) {
      let next: MessageFrame | undefined
      for (const [offset, f] of st.held) {
        if (offset <= st.last) {
          st.held.delete(offset)
          continue
        }
        if ((f.prev ?? offset - 1) <= st.last && (next === undefined || offset < next.offset!)) next = f
      }
      if (next === undefined) return released
      st.held.delete(next.offset!)
      st.last = next.offset!
      options.deliver(next)
      released++
    }
  }

  return {
    subscribed(frame) {
      if (!frame.position) return
      const st = channels.get(frame.channel)
      // The answer to a repeated subscribe carries neither `delivery` nor `recovered`: the
      // subscription goes on exactly as it was.
      if (st && frame.delivery === undefined && frame.recovered === undefined && st.epoch === frame.position.epoch) return
      const reliable = frame.delivery === 'at-least-once'
      // A resume that recovered continues the same stream; anything else starts from the position given.
      if (st && frame.recovered === true && st.epoch === frame.position.epoch) {
        st.reliable = reliable
        return
      }
      if (st && st.epoch === frame.position.epoch && frame.position.offset >= st.last) {
        // Same stream, moved past a gap the hub could not fill: keep what was held after it.
        st.reliable = reliable
        st.last = frame.position.offset
        if (release(frame.channel, st) > 0 && reliable) options.ack(frame.channel, st.last)
        return
      }
      channels.set(frame.channel, { epoch: frame.position.epoch, last: frame.position.offset, reliable, held: new Map(), skipped: null })
    },
    message(frame) {
      const channel = frame.channel
      const offset = frame.offset
      const st = channel === undefined ? undefined : channels.get(channel)
      if (channel === undefined || offset === undefined || !st) {
        options.deliver(frame)
        return 1
      }
      if (offset <= st.last) {
        if (!st.reliable && st.skipped?.delete(offset)) {
          options.deliver(frame)
          return 1
        }
        // Already processed: say so again, so the hub stops sending it.
        if (frame.ack) options.ack(channel, st.last)
        return 0
      }
      const prev = frame.prev ?? offset - 1
      if (!st.reliable) {
        if (prev > st.last) {
          const skipped = (st.skipped ??= new Set())
          for (let o = Math.max(st.last + 1, prev - MAX_SKIPPED + 1); o <= prev; o++) skipped.add(o)
          while (skipped.size > MAX_SKIPPED) skipped.delete(skipped.values().next().value!)
        }
        st.last = offset
        options.deliver(frame)
        if (frame.ack) options.ack(channel, offset)
        return 1
      }
      if (prev > st.last) {
        if (!st.held.has(offset) && st.held.size < maxHeld) st.held.set(offset, frame)
        return 0
      }
      st.last = offset
      options.deliver(frame)
      const released = 1 + release(channel, st)
      options.ack(channel, st.last)
      return released
    },
    position(channel) {
      const st = channels.get(channel)
      return st ? { epoch: st.epoch, offset: st.last } : undefined
    },
    held(channel) {
      return channels.get(channel)?.held.size ?? 0
    },
    forget(channel) {
      channels.delete(channel)
    },
  }
}
