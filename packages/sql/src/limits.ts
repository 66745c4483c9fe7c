import type { LimitStore } from '@tidings/core'
import { CompiledQuery, type Kysely } from 'kysely'
import pg from 'pg'
import { type SqlDatabase, connect } from './connect.js'
import { storeLifecycle } from './lifecycle.js'
import { clusterTablesOnce } from './migrations/0002_cluster.js'
import { limitStatements, limitTable } from './migrations/0005_limits.js'
import { schemaContext } from './names.js'

export interface PostgresLimitStoreOptions {
  /** Where the database is: the store makes its own pool (ended by `close()`). */
  readonly connectionString?: string | undefined
  /** The app's pool (never ended by the store). */
  readonly pool?: pg.Pool | undefined
  /**
   * Or the database as the message store takes it: the app's Kysely instance, `{ postgres }` or
   * `{ pglite }` (PGlite: one process, for tests and single-node apps).
   */
  readonly db?: SqlDatabase | undefined
  /** PostgreSQL schema of the table. Default: the connection's search path. */
  readonly schema?: string | undefined
  /** Prefix of the table's name (`<prefix>limits`). Default `tidings_`, as the package's migrations. */
  readonly tablePrefix?: string | undefined
  /** Create the table on first use when it is missing (idempotent). Default true; false when the app runs the package's migrations. */
  readonly createTables?: boolean | undefined
  /**
   * How long a window's counter outlives the window, at least, in the hits' time: the sweep
   * deletes a counter once a hit of this store came `windowMs` plus this after the window's
   * start, so a node whose clock is a little behind still counts in the same counter.
   * Default 1,000 ms.
   */
  readonly expiryMarginMs?: number | undefined
  /** How often ended windows are deleted, in ms (off the hot path). Default 30,000; 0 or false: never (call `sweep()` yourself). */
  readonly sweepIntervalMs?: number | false | undefined
  /** Rows deleted per sweep, at most (in statements of 1,000). Default 200,000 (with the default 30 s interval, ~6,600 ended windows a second: far above what the hub creates). */
  readonly sweepLimit?: number | undefined
}

export interface PostgresLimitStore extends LimitStore {
  hit(key: string, windowMs: number, now: number): Promise<number>
  /**
   * Delete counters whose window (plus the margin) ended by `now` (default: the latest `now`
   * a hit of this store was given), at most `sweepLimit` rows; answers how many were deleted.
   */
  sweep(now?: number): Promise<number>
  /** Stop the sweep and end the store's own pool or connection (the app's are left open). Idempotent. */
  close(): Promise<void>
}

type Run = <R>(text: string, values: unknown[]) => Promise<R[]>

/**
 * A LimitStore on PostgreSQL (table `tidings_limits` with the default prefix), for limits that
 * hold across hubs on several nodes sharing one database, without Redis: with
 * `createPostgresBroker` and `createPostgresPresenceStore`, PostgreSQL alone runs a cluster.
 *
 * Each hit is one statement, `INSERT … ON CONFLICT (key, window_ms, window_start) DO UPDATE SET
 * count = count + 1 RETURNING count`: PostgreSQL serialises concurrent hits on one row through
 * its unique index (a second inserter waits for the first and then updates the committed row),
 * so hits from any number of nodes each count once and each answers the count right after it.
 * The window size is part of the key, so two sizes whose windows start at the same instant never
 * share a counter. Ended windows are deleted by a periodic sweep in bounded batches (indexed by
 * `expires_at`), never by a hit.
 */
export function createPostgresLimitStore(options: PostgresLimitStoreOptions): PostgresLimitStore {
  const given = [options.pool, options.connectionString, options.db].filter((x) => x !== undefined).length
  if (given !== 1) throw new TypeError('createPostgresLimitStore needs one of pool, connectionString or db')
  const margin = options.expiryMarginMs ?? 1_000
  if (!(Number.isFinite(margin) && margin >= 0)) throw new RangeError(`createPostgresLimitStore: expiryMarginMs must be a number ≥ 0, got ${margin}`)
  const sweepLimit = options.sweepLimit ?? 200_000
  if (!(Number.isInteger(sweepLimit) && sweepLimit > 0)) throw new RangeError(`createPostgresLimitStore: sweepLimit must be a positive integer, got ${sweepLimit}`)
  const ctx = schemaContext({ schema: options.schema, prefix: options.tablePrefix })
  const T = limitTable(ctx)

  let run: Run
  let end: () => Promise<void>
  let ready: () => Promise<void>
  const tables = { schema: options.schema, prefix: options.tablePrefix, createTables: options.createTables, statements: limitStatements }
  if (options.db !== undefined) {
    const conn = connect(options.db)
    const db: Kysely<any> = conn.db
    run = async <R>(text: string, values: unknown[]) => (await db.executeQuery<R>(CompiledQuery.raw(text, values))).rows as R[]
    end = () => conn.close()
    ready = clusterTablesOnce(db, tables)
  } else {
    const ownPool = !options.pool
    const pool = options.pool ?? new pg.Pool({ connectionString: options.connectionString, max: 4 })
    if (ownPool) pool.on('error', () => undefined)
    run = async <R>(text: string, values: unknown[]) => (await pool.query(text, values)).rows as R[]
    end = async () => {
      if (ownPool) await pool.end().catch(() => undefined)
    }
    ready = clusterTablesOnce(pool, tables)
  }

  const HIT = `INSERT INTO ${T} AS l (key, window_ms, window_start, count, expires_at) VALUES ($1, $2, $3, 1, $4)
     ON CONFLICT (key, window_ms, window_start) DO UPDATE SET count = l.count + 1
     RETURNING l.count`
  const BATCH = Math.min(1_000, sweepLimit)
  const SWEEP = `DELETE FROM ${T} WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${T} WHERE expires_at <= $1 LIMIT $2))`

  /** The latest `now` a hit was given: the sweep's time (time comes only from the hits). */
  let latest = -Infinity
  /** Sweeps and hits under way: close waits for them before it lets the pool go. */
  const inFlight = new Set<Promise<unknown>>()
  const track = <T>(work: Promise<T>): Promise<T> => {
    inFlight.add(work)
    void work.then(
      () => inFlight.delete(work),
      () => inFlight.delete(work),
    )
    return work
  }

  const deleteEnded = async (now: number): Promise<number> => {
    if (!Number.isFinite(now)) return 0
    await ready()
    let deleted = 0
    while (deleted < sweepLimit) {
      const batch = Math.min(BATCH, sweepLimit - deleted)
      const rows = await run<{ n: number }>(`WITH d AS (${SWEEP} RETURNING 1) SELECT count(*)::int AS n FROM d`, [now, batch])
      const n = Number(rows[0]?.n ?? 0)
      deleted += n
      if (n < batch) break
    }
    return deleted
  }
  const sweep = (now = latest): Promise<number> => track(deleteEnded(now))

  const lifecycle = storeLifecycle({
    intervalMs: options.sweepIntervalMs ?? 30_000,
    sweep: () => sweep(),
    onError: () => undefined, // the next sweep tries again; hits are unaffected
    inFlight,
    ready: Promise.resolve(),
    release: end,
  })

  return {
    hit(key, windowMs, now) {
      if (!(Number.isFinite(windowMs) && windowMs > 0)) return Promise.reject(new RangeError(`LimitStore.hit: windowMs must be a positive number, got ${windowMs}`))
      if (!Number.isFinite(now)) return Promise.reject(new RangeError(`LimitStore.hit: now must be a finite number, got ${now}`))
      if (lifecycle.closed) return Promise.reject(new Error('PostgresLimitStore: closed'))
      const start = Math.floor(now / windowMs) * windowMs
      if (now > latest) latest = now
      return track(
        (async () => {
          await ready()
          const rows = await run<{ count: string | number }>(HIT, [key, windowMs, start, start + windowMs + margin])
          return Number(rows[0]!.count)
        })(),
      )
    },
    sweep,
    close: () => lifecycle.close(),
  }
}
