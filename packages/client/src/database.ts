import {
  type LiveChange,
  type LiveDoc,
  type LiveQuery,
  type LiveQueryOperator,
  type LiveResultFrame,
  type LiveResultState,
  type LiveScalar,
  type LiveWhere,
  RealtimeError,
} from '@tidings/protocol'
import type { Channel, ChannelOptions } from './channel.js'
import { applyLiveFrame, diffLiveResults, resumeOf } from '@tidings/protocol'

/**
 * Live queries (docs/live-queries.md): `rt.database().collection('messages').where(…)
 * .orderBy(…).limit(50).onSnapshot((snapshot) => …)`. Each `onSnapshot` is one subscription to
 * `db:collection:<name>:<tag>` carrying the query; its frames are applied as `applyLiveFrame` does,
 * and after a reconnect (or a missed frame) it subscribes again with `resume`, so the server
 * sends only what changed meanwhile when it still has the result (a full `reset` snapshot otherwise).
 */

/** One change of a snapshot: remove at `oldIndex` (≥ 0), then insert at `newIndex` (≥ 0), in order. */
export interface DocChange<T = LiveDoc> {
  readonly type: 'added' | 'modified' | 'removed'
  readonly doc: T
  readonly oldIndex: number
  readonly newIndex: number
}

/** A live query's result as it stands, and what changed since the previous snapshot. */
export interface QuerySnapshot<T = LiveDoc> {
  /** The whole result, in the query's order. */
  readonly docs: readonly T[]
  /** What changed since the previous snapshot (the first one, and a reset, list every doc as `added`). */
  readonly changes: readonly DocChange<T>[]
  readonly size: number
  readonly empty: boolean
  /** The field that identifies a doc (the collection's key). */
  readonly key: string
  /** The result's version on the server (grows with every change). */
  readonly version: number
  /** The server sent the whole result: the first snapshot, or a reset. */
  readonly fromScratch: boolean
  /**
   * After a reconnect the server no longer had the result held and sent it whole: `changes`
   * are still relative to the previous snapshot (computed here), so a view that applies them stays right.
   */
  readonly reset: boolean
  /** The changes came from resuming after a reconnect (the server still had the result held). */
  readonly resumed: boolean
}

export type SnapshotListener<T> = (snapshot: QuerySnapshot<T>) => void
export type SnapshotErrorListener = (error: Error) => void

/** `{ and: [...] }`: every condition holds. Conditions are `[field, op, value]`. */
export function and(...conditions: LiveWhere[]): LiveWhere {
  return { and: conditions }
}

/** `{ or: [...] }`: at least one condition holds, e.g. `.where(or(['pinned', '==', true], ['score', '>', 10]))`. */
export function or(...conditions: LiveWhere[]): LiveWhere {
  return { or: conditions }
}

interface QueryParts {
  readonly where: readonly LiveWhere[]
  readonly orderBy: ReadonlyArray<readonly [string, 'asc' | 'desc']>
  readonly limit: number | undefined
  readonly startAfter: readonly LiveScalar[] | undefined
  readonly tag: string | undefined
}

const TAG = /^[A-Za-z0-9_\-.@=,+~]{1,64}$/

/** @internal What a query needs from its database. */
interface DatabaseHost {
  open<T>(collection: string, tag: string | undefined, query: LiveQuery, next: SnapshotListener<T>, error: SnapshotErrorListener | undefined): () => void
}

/**
 * A query on a collection. Immutable: every method returns a new query, so a base query can be
 * shared and refined.
 */
export class LiveQueryRef<T = LiveDoc> {
  /** @internal */
  constructor(
    readonly collection: string,
    private readonly parts: QueryParts,
    private readonly host: DatabaseHost,
    private readonly keyField: string,
  ) {}

  private with(change: Partial<QueryParts>): LiveQueryRef<T> {
    return new LiveQueryRef<T>(this.collection, { ...this.parts, ...change }, this.host, this.keyField)
  }

  /**
   * Adds a condition; all conditions must hold (AND). `where('roomId', '==', 'r1')`, or a node
   * made with `or(…)` / `and(…)`. Operators: `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not-in`.
   */
  where(field: string, op: LiveQueryOperator, value: LiveScalar | readonly LiveScalar[]): LiveQueryRef<T>
  where(node: LiveWhere): LiveQueryRef<T>
  where(fieldOrNode: string | LiveWhere, op?: LiveQueryOperator, value?: LiveScalar | readonly LiveScalar[]): LiveQueryRef<T> {
    const node: LiveWhere = typeof fieldOrNode === 'string' ? [fieldOrNode, op as LiveQueryOperator, value as LiveScalar] : fieldOrNode
    return this.with({ where: [...this.parts.where, node] })
  }

  /** Adds a sort field (ties are broken by the collection's key). */
  orderBy(field: string, direction: 'asc' | 'desc' = 'asc'): LiveQueryRef<T> {
    return this.with({ orderBy: [...this.parts.orderBy, [field, direction] as const] })
  }

  limit(n: number): LiveQueryRef<T> {
    return this.with({ limit: n })
  }

  /**
   * Keyset pagination: the rows after the given `orderBy` values (optionally followed by the
   * key), or after a doc of the previous page (its `orderBy` fields and its key are taken).
   */
  startAfter(doc: T): LiveQueryRef<T>
  startAfter(...values: LiveScalar[]): LiveQueryRef<T>
  startAfter(...args: unknown[]): LiveQueryRef<T> {
    const first = args[0]
    if (args.length === 1 && typeof first === 'object' && first !== null && !Array.isArray(first)) {
      const doc = first as Record<string, unknown>
      const values = this.parts.orderBy.map(([f]) => doc[f] as LiveScalar)
      if (doc[this.keyField] !== undefined) values.push(doc[this.keyField] as LiveScalar)
      return this.with({ startAfter: values })
    }
    return this.with({ startAfter: args as LiveScalar[] })
  }

  /**
   * Names this query's subscription (`db:collection:<name>:<tag>`): letters, digits and
   * `_ - . @ = , + ~`. Without one, each `onSnapshot` gets its own. Two live `onSnapshot`s with
   * the same tag on one collection are refused.
   */
  tag(tag: string): LiveQueryRef<T> {
    if (!TAG.test(tag)) throw new RealtimeError('RT_007', `invalid live query tag '${tag}': letters, digits and _ - . @ = , + ~ (at most 64)`)
    return this.with({ tag })
  }

  /** The query as it goes on the wire (`subscribe.query`). */
  toJSON(): LiveQuery {
    const { where, orderBy, limit, startAfter } = this.parts
    return {
      ...(where.length === 1 ? { where: where[0] } : where.length > 1 ? { where: [...where] } : {}),
      ...(orderBy.length > 0 ? { orderBy: orderBy.map(([f, d]) => [f, d] as const) } : {}),
      ...(limit !== undefined ? { limit } : {}),
      ...(startAfter !== undefined ? { startAfter: [...startAfter] } : {}),
    }
  }

  /**
   * Follows the query's result: `next` gets a snapshot now (once the server answered) and after
   * every change; `error` gets a refusal (`RT_007` an invalid query, `RT_003` not allowed,
   * `RT_004` no such collection) or the end of the subscription by the server (revoked, kicked).
   * Without `error`, those go to the client's `error` event. Returns the function that stops it.
   */
  onSnapshot(next: SnapshotListener<T>, error?: SnapshotErrorListener): () => void {
    return this.host.open(this.collection, this.parts.tag, this.toJSON(), next, error)
  }
}

/** What the database needs from its client. @internal */
export interface DatabaseClient {
  channel(name: string, options: ChannelOptions): Channel
  reportError(error: Error): void
}

interface Live {
  readonly channel: Channel
  state: LiveResultState | undefined
  closed: boolean
  /** Subscribing again after a frame that did not fit: frames until the next snapshot or resumed changes are stale. */
  resyncing: boolean
  apply(frame: LiveResultFrame): void
  close(): void
}

/** Live queries over one client's connection. Get it with `rt.database()`. */
export class Database implements DatabaseHost {
  private readonly live = new Map<string, Live>()
  private seq = 0

  /** @internal */
  constructor(private readonly client: DatabaseClient) {}

  /** A collection the server exposes; `key` (default `'id'`) is used by `startAfter(doc)`. */
  collection<T = LiveDoc>(name: string, options: { key?: string } = {}): LiveQueryRef<T> {
    if (!/^[A-Za-z0-9_\-.@=,+~]{1,100}$/.test(name)) throw new RealtimeError('RT_007', `invalid collection name '${name}'`)
    return new LiveQueryRef<T>(name, { where: [], orderBy: [], limit: undefined, startAfter: undefined, tag: undefined }, this, options.key ?? 'id')
  }

  /** Live queries open now. */
  get size(): number {
    return this.live.size
  }

  /** @internal A `query:snapshot` or `query:changes` frame. */
  frame(frame: LiveResultFrame & { readonly channel: string }): void {
    this.live.get(frame.channel)?.apply(frame)
  }

  /** @internal */
  open<T>(collection: string, tag: string | undefined, query: LiveQuery, next: SnapshotListener<T>, onError: SnapshotErrorListener | undefined): () => void {
    let name: string
    if (tag !== undefined) {
      name = `db:collection:${collection}:${tag}`
      if (this.live.has(name)) throw new RealtimeError('RT_007', `a live query tagged '${tag}' is already open on '${collection}'`)
    } else {
      do name = `db:collection:${collection}:q${(++this.seq).toString(36)}`
      while (this.live.has(name))
    }
    const fail = (error: Error) => {
      if (live.closed) return
      if (onError) {
        try {
          onError(error)
        } catch (err) {
          this.client.reportError(err instanceof Error ? err : new Error(String(err)))
        }
      } else this.client.reportError(error)
    }
    const channel = this.client.channel(name, { query, resume: () => (live.state && !live.closed ? resumeOf(live.state) : undefined) })
    const live: Live = {
      channel,
      state: undefined,
      closed: false,
      resyncing: false,
      apply: (frame) => {
        if (live.closed) return
        const fresh = frame.type === 'query:snapshot' || frame.resumed === true
        if (live.resyncing && !fresh) return
        const step = applyLiveFrame(live.state, frame)
        if (!step.ok) {
          // A frame was missed (or does not fit): subscribe again presenting the result held.
          live.resyncing = true
          void channel.unsubscribe().catch(() => {})
          channel.subscribe().catch((err: unknown) => fail(err instanceof Error ? err : new Error(String(err))))
          return
        }
        live.resyncing = false
        const held = live.state
        const reset = step.fromScratch && held !== undefined
        // A reset replaces a result the listener already has: tell it what changed, not "everything added".
        const changes = reset ? diffLiveResults(held.docs, step.state.docs, step.state.key) : step.changes
        live.state = step.state
        const docs = Object.freeze([...step.state.docs]) as readonly T[]
        const snapshot: QuerySnapshot<T> = Object.freeze({
          docs,
          changes: Object.freeze(changes.map((c: LiveChange) => ({ type: c.type, doc: c.doc as T, oldIndex: c.oldIndex, newIndex: c.newIndex }))),
          size: docs.length,
          empty: docs.length === 0,
          key: step.state.key,
          version: step.state.version,
          fromScratch: step.fromScratch,
          reset,
          resumed: frame.type === 'query:changes' && frame.resumed === true,
        })
        try {
          next(snapshot)
        } catch (err) {
          this.client.reportError(err instanceof Error ? err : new Error(String(err)))
        }
      },
      close: () => {
        if (live.closed) return
        live.closed = true
        if (this.live.get(name) === live) this.live.delete(name)
        void channel.dispose()
      },
    }
    this.live.set(name, live)
    channel.on('error', (error) => {
      fail(error)
      // A refused subscribe (e.g. again after a reconnect) leaves the channel unwanted: the query is over.
      if (!channel.wanted) live.close()
    })
    channel.on('unsubscribed', ({ reason }) => {
      fail(new RealtimeError('RT_003', `the live query on '${collection}' was ended by the server${reason ? ` (${reason})` : ''}`, { channel: name, ...(reason ? { reason } : {}) }))
      live.close()
    })
    channel.subscribe().catch((err: unknown) => {
      fail(err instanceof Error ? err : new Error(String(err)))
      live.close()
    })
    return live.close
  }
}
