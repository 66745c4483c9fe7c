import { createHash } from 'node:crypto'
import { PGlite } from '@electric-sql/pglite'
import { type Hub, RealtimeError } from '@tidings/core'
import { Kysely, PostgresDialect, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import pg from 'pg'
import { migrate } from './migrations/index.js'
import { outboxTables } from './migrations/0003_outbox.js'
import { type SchemaContext, schemaContext, tables } from './names.js'
import { type OutboxLocation, outboxNotifyChannel } from './publish.js'
import type { SqlStore } from './store.js'

/**
 * The relay of the transactional outbox: moves committed rows written by `publish(trx, …)` to
 * the channel log and the subscribers through the hub (`hub.publish` with the row's idempotency
 * key), then deletes them. See docs/transactions.md for the order it guarantees and why a
 * transaction that commits out of id order is never skipped.
 *
 * Rounds: the relay reads `hi`, the largest commit-order key (`seq`) visible now, and the
 * snapshot's `xmax`. A transaction that took a smaller `seq` but is not visible yet was running
 * at that snapshot, so it has an id below `xmax`; once the snapshot `xmin` of a later statement
 * has passed `xmax` every such transaction has ended, and the rows with `seq <= hi` are all
 * there will ever be: they are passed in `seq` order (each from a transaction older than the
 * reading snapshot's `xmin`). Later commits take larger `seq` values, so the relayed sequence is
 * always a prefix of the final `seq` order: nothing is skipped and nothing overtakes.
 */
export interface OutboxRelayOptions extends OutboxLocation {
  /**
   * The database of the outbox: a connection string or `pg.Pool` (`{ postgres }`: the relay holds
   * one extra connection of its own for the lock and LISTEN), PGlite (`{ pglite }`: an instance,
   * or a data directory), or the app's Kysely instance (then give `listen` for wake-ups by
   * NOTIFY; without it the relay polls every `pollIntervalMs` and holds the lock on a pooled connection).
   */
  readonly db: Kysely<any> | { readonly postgres: string | pg.Pool; readonly poolSize?: number | undefined } | { readonly pglite?: PGlite | string | undefined }
  /** The hub that stores and delivers the messages (its store assigns offsets). */
  readonly hub: Pick<Hub, 'publish'> & Partial<Pick<Hub, 'report'>>
  /**
   * The hub's SQL store, when it is one (in any database): a row that a stopped relay may already
   * have stored (taken before and not deleted) is looked up in its log by idempotency key and not
   * published again, so it is stored once even when the relay comes back after the hub's dedup
   * window. Without it, the hub's idempotency window (`dedupWindowMs`) alone guards against a second copy.
   */
  readonly store?: SqlStore | undefined
  /** Schema and prefix of the store's tables, when they differ from the outbox's. */
  readonly storeLocation?: OutboxLocation | undefined
  /**
   * Where wake-ups come from when `db` is the app's Kysely instance or a pool: connection settings
   * of a dedicated PostgreSQL connection (it also holds the lock), or the PGlite instance under
   * the Kysely (on PGlite, give the relay, the store and `publish` the app's one Kysely instance
   * so their statements queue behind the app's transactions on PGlite's single session).
   */
  readonly listen?: string | pg.ClientConfig | PGlite | undefined
  /** Run the package's migrations first (default true). */
  readonly migrate?: boolean | undefined
  /** The safety net: look for committed rows this often even without a NOTIFY (ms; default 1,000). */
  readonly pollIntervalMs?: number | undefined
  /** Rows per batch (default 500). */
  readonly maxBatch?: number | undefined
  /** How often a standby relay tries to take over (ms; default 1,000). */
  readonly takeoverIntervalMs?: number | undefined
  /** Failures of the relay (also sent to `hub.report(error, 'outbox')` when the hub has it). */
  readonly onError?: ((error: unknown) => void) | undefined
}

export interface OutboxRelayStats {
  /** Rows published through the hub (stored and delivered). */
  readonly relayed: number
  /** Rows the hub answered as duplicates (an idempotency key it had seen): not stored again. */
  readonly duplicates: number
  /** Rows found already stored by a stopped relay (looked up in the store): deleted without publishing. */
  readonly verified: number
  /** Rows the hub refused for good (RT_003/RT_004/RT_005/RT_007): kept with `failed_at` and `error`. */
  readonly failed: number
  readonly batches: number
  /** Rounds that waited for running transactions to end before passing rows. */
  readonly waits: number
  /** NOTIFY wake-ups received. */
  readonly notifications: number
  /** Times this relay became the active one. */
  readonly takeovers: number
}

export interface OutboxRelay {
  /** Resolves once the tables exist and the relay has tried for the lock once. */
  readonly ready: Promise<void>
  /** This relay holds the lock (it is the one relaying for the database). */
  readonly active: boolean
  stats(): OutboxRelayStats
  /**
   * Resolves once every row committed before the call was relayed (or set aside as failed), by
   * whichever relay is active. Rejects after `timeoutMs` (default 30,000).
   */
  flush(timeoutMs?: number): Promise<void>
  /** Outbox rows not relayed yet (committed and pending) and rows set aside as failed. */
  backlog(): Promise<{ pending: number; failed: number }>
  /** Stops relaying, releases the lock (another relay takes over) and closes what the relay opened. */
  close(): Promise<void>
}

const PERMANENT = new Set(['RT_003', 'RT_004', 'RT_005', 'RT_007'])

interface Row {
  id: string
  txid: string
  seq: string
  channel: string
  event: string
  data: string
  sender: string | null
  idempotency_key: string | null
  attempts: number
}

/** The advisory lock key of an outbox (64 bits of a hash of its location). */
function lockKey(ctx: SchemaContext): string {
  return BigInt.asIntN(64, BigInt(`0x${createHash('sha256').update(`tidings.outbox\u0000${ctx.schema ?? ''}\u0000${ctx.prefix}`).digest('hex').slice(0, 16)}`)).toString()
}

/** The key a row is published with: the app's, or `outbox:<txid>:<id>` (the txid keeps a recreated outbox's ids from meeting old keys in the store). */
const keyOf = (row: Pick<Row, 'id' | 'txid' | 'idempotency_key'>) => row.idempotency_key ?? `outbox:${row.txid}:${row.id}`

/** Holds the lock (and listens) for the relay: a dedicated client, PGlite itself, or a pooled connection of the app's Kysely. */
interface Holder {
  /** Try to take the lock; true when this relay holds it now. */
  acquire(): Promise<boolean>
  /** Whether the connection holding the lock is still there. */
  holding(): boolean
  release(): Promise<void>
}

export function createOutboxRelay(options: OutboxRelayOptions): OutboxRelay {
  const ctx = schemaContext(options)
  const t = outboxTables(ctx)
  const storeCtx = schemaContext(options.storeLocation ?? options)
  const storeTables = tables(storeCtx)
  const channelName = outboxNotifyChannel(options)
  const key = lockKey(ctx)
  const hub = options.hub
  const pollMs = Math.max(10, options.pollIntervalMs ?? 1_000)
  const maxBatch = Math.max(1, Math.floor(options.maxBatch ?? 500))
  const takeoverMs = Math.max(10, options.takeoverIntervalMs ?? 1_000)
  const report = (error: unknown) => {
    try {
      options.onError?.(error)
      hub.report?.(error, 'outbox')
    } catch {}
  }

  // ------------------------------------------------------------------ connections
  let db: Kysely<any>
  let ownsDb = false
  let pglite: PGlite | undefined
  let ownsPglite = false
  let listenConfig: pg.ClientConfig | undefined
  const given = options.db
  if (given instanceof Kysely) {
    db = given
    if (options.listen instanceof PGlite) pglite = options.listen
    else if (options.listen !== undefined) listenConfig = typeof options.listen === 'string' ? { connectionString: options.listen } : options.listen
  } else if ('postgres' in given) {
    const pool = typeof given.postgres === 'string' ? new pg.Pool({ connectionString: given.postgres, max: given.poolSize ?? 4 }) : given.postgres
    if (typeof given.postgres === 'string') {
      pool.on('error', () => {})
      ownsDb = true
      listenConfig = { connectionString: given.postgres }
    } else if (options.listen instanceof PGlite) throw new TypeError('@tidings/sql outbox: listen is a PGlite instance but db is PostgreSQL')
    else listenConfig = options.listen !== undefined ? (typeof options.listen === 'string' ? { connectionString: options.listen } : options.listen) : (pool as unknown as { options: pg.ClientConfig }).options
    db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
  } else {
    ownsPglite = !(given.pglite instanceof PGlite)
    pglite = given.pglite instanceof PGlite ? given.pglite : new PGlite(given.pglite ?? 'memory://')
    // Never destroyed (that would close an instance the app shares); closed below when the relay opened it.
    db = new Kysely<any>({ dialect: new PGliteDialect(pglite) })
  }

  // ------------------------------------------------------------------ state
  let closed = false
  let active = false
  const stats = { relayed: 0, duplicates: 0, verified: 0, failed: 0, batches: 0, waits: 0, notifications: 0, takeovers: 0 }
  let signal: (() => void) | undefined
  let signalled = false
  const wake = () => {
    signalled = true
    const s = signal
    signal = undefined
    s?.()
  }
  const rest = (ms: number) =>
    new Promise<void>((resolve) => {
      if (signalled || closed) {
        signalled = false
        resolve()
        return
      }
      const timer = setTimeout(() => {
        signal = undefined
        resolve()
      }, ms)
      signal = () => {
        clearTimeout(timer)
        signalled = false
        resolve()
      }
    })
  const onNotify = () => {
    stats.notifications++
    wake()
  }

  // ------------------------------------------------------------------ the lock holder
  const holder: Holder = (() => {
    if (pglite) {
      // Lock and LISTEN go through `db`: when it is the app's Kysely, its driver queues them
      // behind the app's transactions (PGlite is one session: a statement sent on the instance
      // directly could land inside an open transaction, and a LISTEN there dies with a rollback).
      const lite = pglite
      let stop: (() => void) | undefined
      let held = false
      return {
        async acquire() {
          if (!held) {
            const { rows } = await sql<{ ok: boolean }>`SELECT pg_try_advisory_lock(${key}::bigint) AS ok`.execute(db)
            held = rows[0]?.ok === true
            if (held) {
              stop = lite.onNotification((channel) => {
                if (channel === channelName) onNotify()
              })
              await sql`LISTEN ${sql.id(channelName)}`.execute(db)
            }
          }
          return held
        },
        holding: () => held,
        async release() {
          if (!held) return
          held = false
          stop?.()
          if (!lite.closed) {
            await sql`UNLISTEN ${sql.id(channelName)}`.execute(db).catch(() => {})
            await sql`SELECT pg_advisory_unlock(${key}::bigint)`.execute(db).catch(() => {})
          }
        },
      }
    }
    if (listenConfig) {
      const config = listenConfig
      // One connection: a standby keeps it and asks for the lock again on it.
      let client: pg.Client | undefined
      let connected = false
      let alive = false
      return {
        async acquire() {
          if (client && alive) return true
          if (!client || !connected) {
            const c = new pg.Client(config)
            const lost = () => {
              if (client === c) {
                connected = false
                alive = false
                active = false
                client = undefined
                wake()
              }
            }
            c.on('error', lost)
            c.on('end', lost)
            c.on('notification', onNotify)
            client = c
            try {
              await c.connect()
              connected = true
            } catch (error) {
              client = undefined
              await c.end().catch(() => {})
              throw error
            }
          }
          const c = client!
          const { rows } = await c.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(${key}::bigint) AS ok`)
          if (rows[0]?.ok !== true) return false
          await c.query(`LISTEN "${channelName}"`)
          alive = true
          return true
        },
        holding: () => alive,
        async release() {
          const c = client
          client = undefined
          connected = false
          alive = false
          if (c) await c.end().catch(() => {})
        },
      }
    }
    // The app's Kysely and no connection settings: the lock lives on a pooled connection held open.
    let hold: { release: () => void; done: Promise<void> } | undefined
    let alive = false
    return {
      async acquire() {
        if (hold && alive) return true
        let release!: () => void
        const released = new Promise<void>((r) => (release = r))
        let answer!: (ok: boolean) => void
        let fail!: (error: unknown) => void
        const answered = new Promise<boolean>((resolve, reject) => {
          answer = resolve
          fail = reject
        })
        const done = db
          .connection()
          .execute(async (conn) => {
            const { rows } = await sql<{ ok: boolean }>`SELECT pg_try_advisory_lock(${key}::bigint) AS ok`.execute(conn)
            if (rows[0]?.ok !== true) return answer(false)
            alive = true
            answer(true)
            // A pooled connection tells nobody when it drops: ask it something every few seconds.
            let done = false
            void released.then(() => (done = true))
            while (!done) {
              await Promise.race([released, new Promise((r) => setTimeout(r, 2_000).unref?.())])
              if (!done) await sql`SELECT 1`.execute(conn)
            }
            await sql`SELECT pg_advisory_unlock(${key}::bigint)`.execute(conn).catch(() => {})
          })
          .catch((error) => fail(error))
          .finally(() => {
            alive = false
          })
        hold = { release, done }
        const ok = await answered
        if (!ok) hold = undefined
        return ok
      },
      holding: () => alive,
      async release() {
        const h = hold
        hold = undefined
        if (h) {
          h.release()
          await h.done
        }
      },
    }
  })()

  // ------------------------------------------------------------------ relaying

  /** The round in progress: rows with `seq <= hi` pass once the snapshot xmin reaches `xmax`. */
  let round: { xmax: bigint; hi: bigint } | undefined

  const probe = async () => {
    const { rows } = await sql<{ xmin: string; xmax: string; hi: string | null }>`
      SELECT pg_snapshot_xmin(s)::text AS xmin, pg_snapshot_xmax(s)::text AS xmax,
        (SELECT max(seq) FROM ${t.outbox} WHERE seq IS NOT NULL AND failed_at IS NULL)::text AS hi
      FROM (SELECT pg_current_snapshot() AS s) AS q`.execute(db)
    const r = rows[0]!
    return { xmin: BigInt(r.xmin), xmax: BigInt(r.xmax), hi: r.hi === null ? undefined : BigInt(r.hi) }
  }

  /** Rows a stopped relay may have stored already, found in the store's log or its idempotency keys. */
  const alreadyStored = async (rows: Row[]): Promise<Set<string>> => {
    const store = options.store
    if (!store || rows.length === 0) return new Set()
    const { rows: found } = await sql<{ channel: string; key: string }>`
      SELECT u.channel, u.key FROM unnest(${rows.map((r) => r.channel)}::text[], ${rows.map(keyOf)}::text[]) AS u(channel, key)
      WHERE EXISTS (SELECT 1 FROM ${storeTables.idempotency} i WHERE i.channel = u.channel AND i.key = u.key)
         OR EXISTS (SELECT 1 FROM ${storeTables.messages} m WHERE m.channel = u.channel AND m.idempotency_key = u.key)`.execute(store.db)
    return new Set(found.map((f) => `${f.channel}\u0000${f.key}`))
  }

  /** One batch of rows with `seq <= hi`; answers how many rows it took. */
  const batch = async (hi: bigint): Promise<number> => {
    const { rows: taken } = await sql<Row>`
      UPDATE ${t.outbox} SET attempts = attempts + 1
      WHERE id IN (
        SELECT id FROM ${t.outbox}
        WHERE seq IS NOT NULL AND failed_at IS NULL AND seq <= ${hi.toString()}::bigint
          AND txid < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY seq LIMIT ${maxBatch})
      RETURNING id::text AS id, txid::text AS txid, seq::text AS seq, channel, event, data, sender, idempotency_key, attempts`.execute(db)
    if (taken.length === 0) return 0
    stats.batches++
    const rows = taken.sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1))
    const suspects = rows.filter((r) => r.attempts > 1)
    const stored = await alreadyStored(suspects)
    const done: string[] = []
    const failed: Array<{ id: string; error: string }> = []
    // Every publish is started in `seq` order before any is awaited: the hub hands them to the
    // store in that order, and the store assigns offsets per channel in call order (group commit).
    const outcomes = await Promise.allSettled(
      rows.map((row) => {
        if (stored.has(`${row.channel}\u0000${keyOf(row)}`)) {
          stats.verified++
          return Promise.resolve('verified' as const)
        }
        let data: unknown
        try {
          data = JSON.parse(row.data)
        } catch (error) {
          return Promise.reject(new RealtimeError('RT_007', `outbox row ${row.id}: data is not JSON`))
        }
        let published: Promise<{ duplicate: boolean }>
        try {
          published = hub.publish(row.channel, row.event, data, { idempotencyKey: keyOf(row), sender: row.sender ?? undefined })
        } catch (error) {
          published = Promise.reject(error) // a synchronous refusal is the same refusal
        }
        return published.then((r) => {
          if (r.duplicate) stats.duplicates++
          else stats.relayed++
          return 'published' as const
        })
      }),
    )
    let transient: unknown
    outcomes.forEach((o, i) => {
      const row = rows[i]!
      if (o.status === 'fulfilled') done.push(row.id)
      else if (o.reason instanceof RealtimeError && PERMANENT.has(o.reason.code)) failed.push({ id: row.id, error: `${o.reason.code}: ${o.reason.message}` })
      else transient ??= o.reason
    })
    if (done.length > 0) await sql`DELETE FROM ${t.outbox} WHERE id = ANY(${done}::bigint[])`.execute(db)
    if (failed.length > 0) {
      stats.failed += failed.length
      await sql`UPDATE ${t.outbox} AS o SET failed_at = ${Date.now()}, error = u.error FROM unnest(${failed.map((f) => f.id)}::bigint[], ${failed.map((f) => f.error)}::text[]) AS u(id, error)
        WHERE o.id = u.id`.execute(db)
      for (const f of failed) report(new Error(`@tidings/sql outbox: row ${f.id} set aside (${f.error})`))
    }
    if (transient !== undefined) throw transient
    return rows.length
  }

  const relayUpTo = async (hi: bigint) => {
    for (;;) {
      if (closed || !active) return
      const n = await batch(hi)
      if (n < maxBatch) return
    }
  }

  /** One step: answers 'moved' (rows passed), 'waiting' (a round waits for running transactions) or 'idle'. */
  const step = async (): Promise<'moved' | 'waiting' | 'idle'> => {
    const p = await probe()
    let target: bigint | undefined
    if (round && p.xmin >= round.xmax) {
      target = round.hi
      round = undefined
    }
    if (p.hi !== undefined && (target === undefined || p.hi > target)) {
      // No transaction running now: every row with seq <= hi is already visible.
      if (p.xmin >= p.xmax) {
        target = p.hi
        round = undefined
      } else if (!round) {
        round = { xmax: p.xmax, hi: p.hi }
        stats.waits++
      }
    }
    if (target !== undefined) {
      await relayUpTo(target)
      return 'moved'
    }
    return round ? 'waiting' : 'idle'
  }

  // ------------------------------------------------------------------ the loop

  const ready: Promise<void> = (async () => {
    if (options.migrate !== false) await migrate(db, ctx)
  })()
  ready.catch(() => {})

  let firstTry!: () => void
  const triedOnce = new Promise<void>((r) => (firstTry = r))

  const loop = (async () => {
    try {
      await ready
    } catch (error) {
      report(error)
      firstTry()
      return
    }
    let failures = 0
    let waitMs = 1
    while (!closed) {
      if (!active || !holder.holding()) {
        active = false
        round = undefined
        try {
          active = await holder.acquire()
          if (active) {
            stats.takeovers++
            failures = 0
          }
        } catch (error) {
          report(error)
        }
        firstTry()
        if (!active) {
          await rest(takeoverMs)
          continue
        }
      }
      try {
        const state = await step()
        failures = 0
        if (state === 'moved') {
          waitMs = 1
          continue
        }
        if (state === 'waiting') {
          await rest(waitMs)
          waitMs = Math.min(100, waitMs * 2)
          continue
        }
        waitMs = 1
        await rest(pollMs)
      } catch (error) {
        if (closed) break
        report(error)
        round = undefined
        failures++
        await rest(Math.min(5_000, 50 * 2 ** Math.min(failures, 7)))
      }
    }
  })()

  const backlog = async () => {
    await ready
    const { rows } = await sql<{ pending: string; failed: string }>`
      SELECT count(*) FILTER (WHERE failed_at IS NULL)::text AS pending, count(*) FILTER (WHERE failed_at IS NOT NULL)::text AS failed FROM ${t.outbox}`.execute(db)
    return { pending: Number(rows[0]!.pending), failed: Number(rows[0]!.failed) }
  }

  const flush = async (timeoutMs = 30_000) => {
    await ready
    const { hi } = await probe()
    if (hi === undefined) return
    const deadline = Date.now() + timeoutMs
    for (;;) {
      wake()
      // Rows committed before the call have seq <= hi; rows still uncommitted then commit later with larger ones.
      const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM ${t.outbox} WHERE seq IS NOT NULL AND seq <= ${hi.toString()}::bigint AND failed_at IS NULL`.execute(db)
      if (Number(rows[0]!.n) === 0) return
      if (closed) throw new Error('@tidings/sql outbox: the relay is closed')
      if (Date.now() > deadline) throw new Error(`@tidings/sql outbox: ${rows[0]!.n} rows not relayed after ${timeoutMs} ms`)
      await new Promise((r) => setTimeout(r, 5))
    }
  }

  let closing: Promise<void> | undefined
  const close = () => {
    closing ??= (async () => {
      closed = true
      wake()
      await loop
      active = false
      await holder.release().catch(() => {})
      if (ownsDb) await db.destroy().catch(() => {})
      if (ownsPglite && pglite && !pglite.closed) await pglite.close()
    })()
    return closing
  }

  return {
    ready: ready.then(() => triedOnce),
    get active() {
      return active
    },
    stats: () => ({ ...stats }),
    flush,
    backlog,
    close,
  }
}
