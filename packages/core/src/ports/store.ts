import type { StreamPosition } from '@tidings/protocol'
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
  /**
   * Set on a revision event: this message edits (new `data`) or deletes (`deleted`, data null) the
   * message at `revises.offset` of the same channel, making it `revises.version`. A store MUST keep
   * it as appended, like `exclude`.
   */
  readonly revises?: Revises | undefined
  /**
   * The message's version when it was revised since its append (2 after one edit; absent: as
   * appended). Set by reads of a store that has `revise`.
   */
  readonly version?: number | undefined
  /** Set by reads once the message was deleted by `revise` (its data is then null). */
  readonly deleted?: true | undefined
}

/** What a revision event revises: a message of the same channel, and the version it makes it. */
export interface Revises {
  readonly offset: number
  readonly version: number
  /** A deletion (the event's data is null). */
  readonly deleted?: true | undefined
}

/** A revision to apply to a stored message: new data, or a deletion. */
export type Revision = { readonly data: unknown; readonly deleted?: undefined } | { readonly deleted: true; readonly data?: undefined }

export interface ReviseResult {
  /** The message as it is now: its offset, id, event, sender and timestamp unchanged, the new data (null when deleted), `version` set. */
  readonly message: StoredMessage & { readonly version: number }
}

/** What `eraseUser` did: how many of each thing of the user's it erased. */
export interface UserErasure {
  /** Messages the user sent (revision events included) that are now tombstones (or gone). */
  readonly messages: number
  /** The user's consumer cursors removed (its offline queues and channel list). */
  readonly cursors: number
  /** Idempotency records of the user's messages forgotten. */
  readonly keys: number
}

/** One channel of a consumer's list (`channelsOf`): where its cursor is and what is unread. */
export interface ConsumerChannel {
  readonly name: string
  /** The consumer's cursor in the channel's current epoch (0 when its cursor is of an earlier epoch). */
  readonly lastSeenOffset: number
  /** The channel's newest offset. */
  readonly top: number
  /** Retained messages after the cursor (all retained ones when the cursor is of an earlier epoch). */
  readonly unread: number
  /** Time of the newest append (ms), null when none is retained or known. */
  readonly lastActivity: number | null
  /** The channel's kind (the first part of its name by default), when the store keeps one. */
  readonly kind?: string | null | undefined
  /** Consumers with a cursor in the channel, when the store counts them. */
  readonly activeUsers?: number | undefined
}

/**
 * How long a channel keeps its log. Every bound given applies; the strictest one wins. Dropping
 * messages by retention MUST NOT change the epoch: a reader of the dropped range gets
 * `complete: false` instead.
 */
export interface Retention {
  /** Keep at most this many messages (0: keep none, offsets are still assigned). */
  readonly maxCount: number
  /** Drop messages older than this. */
  readonly maxAgeMs: number
  /**
   * Keep at most this many bytes of messages in this channel's log (each message's size as
   * measured at its append, see `AppendOptions.size`); the oldest go first. A message larger than
   * this is assigned its offset and dropped at once. No bound when absent. A store MAY also have
   * a budget of its own across all channels (the memory store's `maxBytes`), trimmed the same way.
   */
  readonly maxBytes?: number | undefined
}

export interface AppendOptions {
  readonly retention: Retention
  /** Publisher idempotency key: a repeat within `dedupWindowMs` returns the first append. */
  readonly idempotencyKey?: string | undefined
  readonly dedupWindowMs?: number | undefined
  /** Server time, from the hub's clock. */
  readonly now: number
  /**
   * The message's size in bytes as the caller already knows it (the hub: its encoded frame), for
   * byte budgets. A store MUST measure the message once, at append, using this when given (a
   * finite number >= 0) and measuring by itself otherwise; it MUST NOT measure it again later.
   */
  readonly size?: number | undefined
}

export interface AppendResult {
  readonly message: StoredMessage
  readonly epoch: string
  /**
   * True when `idempotencyKey` matched an earlier append: nothing was stored, and `message` is
   * the earlier one (its `offset`, `id`, `event`, `timestamp` and `sender`; its `data` and
   * `exclude` MAY be absent once retention dropped that message from the log).
   */
  readonly duplicate: boolean
}

/** A consumer's cursor: the offset it last acknowledged, and the epoch it was committed in. */
export interface ConsumerCursor {
  readonly offset: number
  /**
   * The channel's epoch when the cursor was committed. When it is not the channel's current
   * epoch, the history the cursor points into is gone (reset, eviction): the consumer's offline
   * queue was lost, and the offset means nothing in the current epoch.
   */
  readonly epoch: string
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
 *
 * Contract, besides each method's:
 * - Reads MUST NOT create state: `read`, `position`, `cursor` and `cursors` on a channel that
 *   has no log answer from an empty view (no messages, top 0, no cursors) and MUST NOT store
 *   anything for it, so the memory a store holds does not grow with the number of distinct
 *   channel names read. A store that bounds its number of logs MUST NOT evict a log to answer a
 *   read.
 * - The epoch of a channel that has no log MUST be stable: repeated reads report the same one,
 *   and the first append MUST keep it (a subscriber positioned at `{ epoch, offset: 0 }` before
 *   the first message sees no epoch change after it). It MUST differ from every epoch of an
 *   earlier history of that channel that was lost (derive it, for example, from the store's
 *   identity, which changes on a reset, and the channel name).
 * - Evicting a channel's log (a bound on the number of logs) loses its history: the channel's
 *   epoch MUST change. Never silently: a store that evicts MUST keep the evicted channel's
 *   consumer cursors (bounded) with the epoch they were committed in, so `cursor` tells a lost
 *   offline queue from none.
 * - Trimming to a byte budget (`Retention.maxBytes`, a store-wide budget) is retention: oldest
 *   messages first, epoch unchanged, readers of the dropped range get `complete: false`.
 */
export interface MessageStore {
  /**
   * Assigns the next offset. With an idempotency key seen within the window, MUST return the
   * earlier message with `duplicate: true` and store nothing. MUST measure the message's size
   * here (from `options.size` when given) for byte budgets, then apply the channel's retention.
   */
  append(channel: string, message: Omit<StoredMessage, 'offset' | 'channel'>, options: AppendOptions): MaybePromise<AppendResult>
  /**
   * Messages after an offset, oldest first, at most `limit`. MUST NOT return expired messages.
   * MUST NOT create a log for a channel that has none.
   */
  read(channel: string, options: ReadOptions): MaybePromise<ReadResult>
  /**
   * The current epoch and newest offset of a channel (offset 0 for an empty one). MUST NOT
   * create a log for a channel that has none; the epoch it reports then is the one the first
   * append will keep.
   */
  position(channel: string): MaybePromise<StreamPosition>
  /**
   * Where a consumer (a user) got to in a channel: the offset it last acknowledged and the epoch
   * it acknowledged it in. MUST return the cursor with its earlier epoch when the channel's
   * history was lost since (an evicted log; MAY also after a reset), as long as the store still
   * remembers it, so the caller can report a lost offline queue; `undefined` only when the
   * consumer never committed (or the store forgot it). MUST NOT create a log.
   */
  cursor(channel: string, consumer: string): MaybePromise<ConsumerCursor | undefined>
  /**
   * Move a consumer's cursor forward (never back, never past the newest offset) within the
   * current epoch. A cursor from an earlier epoch MUST be replaced by this commit, whatever its
   * offset (0 included): committing is how the caller says it has dealt with the loss. A commit
   * on a channel that has no log MUST NOT create one.
   */
  commit(channel: string, consumer: string, offset: number): MaybePromise<void>
  /** Every consumer cursor of a channel in its current epoch (cursors of earlier epochs MUST NOT be listed). MUST NOT create a log. */
  cursors(channel: string): MaybePromise<Record<string, number>>
  /**
   * Optional: message versions. Replaces the data of the retained message at `offset` (or deletes
   * it: data null, `deleted` set, offset kept as a tombstone) and returns it with its new version:
   * 1 at append, +1 per revision, assigned atomically (concurrent revisions of one message get
   * distinct versions). `undefined` when no such message is retained or it is already deleted.
   * MUST keep the message's offset, id, event, sender, timestamp and `exclude`, MUST NOT change
   * the epoch or the byte accounting (sizes are measured once, at append), MUST NOT create a log.
   * Reads after it return the new data with `version` (and `deleted`).
   */
  revise?(channel: string, offset: number, revision: Revision, options: { readonly now: number }): MaybePromise<ReviseResult | undefined>
  /**
   * Optional: full-text search of a channel's retained messages (words of the data's strings),
   * newest first, at most `limit`, only offsets below `before` when given. Deleted and expired
   * messages never match, nor do revision events (`revises` set): a match is a message as it is now. MUST NOT create a log.
   */
  search?(channel: string, query: string, options: { readonly limit: number; readonly before?: number | undefined; readonly now: number }): MaybePromise<readonly StoredMessage[]>
  /**
   * Optional: the channels where a consumer has a cursor in the current epoch (cursors of lost
   * histories MAY be listed with `lastSeenOffset` 0), most recently active first, at most `limit`.
   */
  channelsOf?(consumer: string, options: { readonly limit: number }): MaybePromise<readonly ConsumerChannel[]>
  /**
   * Optional: erasure of one user (GDPR). Every message the user sent that the store holds
   * (revision events included) becomes a tombstone as a deletion leaves it (data null, `deleted`,
   * version + 1) and no longer names the user (`sender`, `exclude` cleared); the user's consumer
   * cursors (the consumer id is the user id) and the idempotency records of the user's messages
   * are removed. MUST keep every offset and epoch, MUST NOT create a log; `search` and
   * `channelsOf` MUST NOT find what was erased. Idempotent: a second call finds nothing new.
   */
  eraseUser?(userId: string, options: { readonly now: number }): MaybePromise<UserErasure>
  close?(): MaybePromise<void>
}

/**
 * A `MessageStore` whose methods all answer with a promise and that has the optional ones: the
 * shape of a store across a network or in a database (Redis, SQL). Adapters extend it instead of
 * restating the port.
 */
export interface AsyncMessageStore extends MessageStore {
  append(channel: string, message: Omit<StoredMessage, 'offset' | 'channel'>, options: AppendOptions): Promise<AppendResult>
  read(channel: string, options: ReadOptions): Promise<ReadResult>
  position(channel: string): Promise<StreamPosition>
  cursor(channel: string, consumer: string): Promise<ConsumerCursor | undefined>
  commit(channel: string, consumer: string, offset: number): Promise<void>
  cursors(channel: string): Promise<Record<string, number>>
  revise(channel: string, offset: number, revision: Revision, options: { readonly now: number }): Promise<ReviseResult | undefined>
  search(channel: string, query: string, options: { readonly limit: number; readonly before?: number | undefined; readonly now: number }): Promise<StoredMessage[]>
  channelsOf(consumer: string, options: { readonly limit: number }): Promise<ConsumerChannel[]>
  eraseUser?(userId: string, options: { readonly now: number }): Promise<UserErasure>
}
