import type { LiveChange, LiveDoc, LiveResume, NormalizedLiveQuery } from '@tidings/protocol'
import type { MaybePromise } from '../util.js'
import type { Identity } from './auth.js'

/**
 * Live queries: the port a database adapter implements so clients can subscribe to a query's
 * result on `db:collection:<name>` channels (`@tidings/sql`'s `createLiveQueries` is one).
 *
 * The hub owns the subscription: the channel's subscribe rule, the subscription limits, the
 * `subscribed` reply, the frames and their order, slow consumers, unsubscribe and the end of a
 * connection. The provider owns the data: which collections exist and what they allow, the
 * per-user row rule, evaluation (shared by identical queries), diffs and the result cache.
 */
export interface LiveQueryContext {
  /** Who subscribes (the connection's identity when it subscribed). */
  readonly identity: Identity
  /** The channel, e.g. `db:collection:messages` or `db:collection:messages:inbox`. */
  readonly channel: string
  /** The collection the channel names (`messages`). */
  readonly collection: string
  /** The `auth` string the client subscribed with, if any. */
  readonly auth?: string | undefined
}

/** A result change for one subscriber: the changes from its previous version to `version`. */
export interface LiveQueryUpdate {
  readonly version: number
  readonly hash: string
  readonly changes: readonly LiveChange[]
}

/** An open live query. */
export interface LiveQuerySubscription {
  /** The field of each doc that identifies it (the collection's key). */
  readonly key: string
  readonly version: number
  readonly hash: string
  /** The whole current result, when the subscription did not resume. */
  readonly docs: readonly LiveDoc[]
  /**
   * When the client presented a `resume` the provider could honour: the changes from that
   * result to this one (`docs` is then not sent). Undefined otherwise.
   */
  readonly resumed?: readonly LiveChange[] | undefined
  /** Stop updates (idempotent). `emit` is never called after it. */
  close(): void
}

export interface LiveQueryProvider {
  /**
   * Open a live query. Validates the query against the collection (unknown collection: throw a
   * `RealtimeError` `RT_004`; a field or operator the collection does not allow, a limit over its
   * maximum: `RT_007`; a row rule that denies the user outright: `RT_003`), evaluates it (or
   * joins an identical one in the same authorization scope) and answers the current result.
   * Afterwards `emit` is called with each change of the result, in version order, never before
   * the returned promise settles.
   */
  open(ctx: LiveQueryContext, query: NormalizedLiveQuery, emit: (update: LiveQueryUpdate) => void, resume?: LiveResume): MaybePromise<LiveQuerySubscription>
  /** Stop everything (the hub does not call it: the app owns the provider). */
  close?(): MaybePromise<void>
}
