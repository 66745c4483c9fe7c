import type { StreamPosition } from '../protocol.js'
import type { MaybePromise } from '../util.js'

/** A message as the channel log keeps it. */
export interface StoredMessage {
  readonly offset: number
  readonly id: string
  readonly channel: string
  readonly event: string
  readonly data: unknown
  readonly sender?: string | undefined
  /** Server time of publication, ms since the epoch. */
  readonly timestamp: number
  /**
   * Who the message was not for (the publisher's own connection unless the channel echoes; a
   * publish's `exclude`), so replays and redeliveries leave them out as live delivery did.
   */
  readonly exclude?: { readonly connections?: readonly string[] | undefined; readonly users?: readonly string[] | undefined } | undefined
}

/** How long a channel keeps its log. Both bounds apply; the stricter one wins. */
export interface Retention {
  /** Keep at most this many messages (0: keep none, offsets are still assigned). */
  readonly maxCount: number
  /** Drop messages older than this. */
  readonly maxAgeMs: number
}

export interface AppendOptions {
  readonly retention: Retention
  /** Publisher idempotency key: a repeat within `dedupWindowMs` returns the first append. */
  readonly idempotencyKey?: string | undefined
  readonly dedupWindowMs?: number | undefined
  /** Server time, from the hub's clock. */
  readonly now: number
}

export interface AppendResult {
  readonly message: StoredMessage
  readonly epoch: string
  /** True when `idempotencyKey` matched an earlier append: nothing was stored. */
  readonly duplicate: boolean
}

export interface ReadOptions {
  /** Return messages with offsets greater than this. */
  readonly after: number
  readonly limit: number
  readonly now: number
}

export interface ReadResult {
  readonly epoch: string
  readonly messages: readonly StoredMessage[]
  /** The offset of the newest message in the log (0 when none was ever appended). */
  readonly top: number
  /**
   * False when messages after `after` were already dropped by retention, so the result starts
   * later than asked: the reader has a gap.
   */
  readonly complete: boolean
}

/**
 * A per-channel, append-only log with offsets, plus per-consumer cursors. Offsets start at 1
 * and grow by 1 per append, per channel. A channel's epoch names one continuous history: it
 * MUST change whenever that channel's offsets restart or its history is lost other than by
 * retention (a store reset, a flushed Redis, an evicted channel), and MUST NOT change otherwise.
 */
export interface MessageStore {
  /** Assigns the next offset. With an idempotency key seen within the window, MUST return the earlier message with `duplicate: true` and store nothing. */
  append(channel: string, message: Omit<StoredMessage, 'offset' | 'channel'>, options: AppendOptions): MaybePromise<AppendResult>
  /** Messages after an offset, oldest first, at most `limit`. MUST NOT return expired messages. */
  read(channel: string, options: ReadOptions): MaybePromise<ReadResult>
  /** The current epoch and newest offset of a channel (offset 0 for an empty one). */
  position(channel: string): MaybePromise<StreamPosition>
  /**
   * Where a consumer (a user) got to in a channel: the offset it last acknowledged, in the
   * current epoch. Undefined when unknown or recorded in an earlier epoch.
   */
  cursor(channel: string, consumer: string): MaybePromise<number | undefined>
  /** Move a consumer's cursor forward (never back) within the current epoch. */
  commit(channel: string, consumer: string, offset: number): MaybePromise<void>
  /** Every consumer cursor of a channel in its current epoch. */
  cursors(channel: string): MaybePromise<Record<string, number>>
  close?(): MaybePromise<void>
}
