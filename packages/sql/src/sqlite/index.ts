import { createHash } from 'node:crypto'
import type {
  AppendOptions,
  AppendResult,
  ConsumerChannel,
  ConsumerCursor,
  MessageStore,
  ReadOptions,
  ReadResult,
  Retention,
  ReviseResult,
  Revision,
  StoredMessage,
  StreamPosition,
  UserErasure,
} from '@tidings/core'
import { holdsWords, searchWords, utf8Length } from '@tidings/core'
import { type Kysely, sql } from 'kysely'
import { type SqliteStoreDatabase, connectSqlite, connectionKey, withFileLock } from './connection.js'
import { migrateSqlite, newIdentity, sqlitePrefix, sqliteTables } from './migrations.js'
import { type DatabaseStore, storeLifecycle } from '../lifecycle.js'

export { type SqliteStoreDatabase } from './connection.js'
export { SQLITE_DEFAULT_PREFIX, SQLITE_MIGRATIONS, createSqliteMigrator, migrateSqlite, sqliteStoreMigration } from './migrations.js'

export interface SqliteStoreOptions {
  /**
   * The database: the app's `Kysely` over Kysely's `SqliteDialect` (never closed by the store),
   * `{ filename }` (better-sqlite3 is imported then; `':memory:'` for a private in-memory
   * database; closed by `close()`), or `{ database }`, a better-sqlite3 `Database` the app opened
   * (left open).
   */
  readonly db: SqliteStoreDatabase
  /** Run the store's migrations before the first query (default true). With false, call `migrateSqlite(db, { tablePrefix })` yourself. */
  readonly migrate?: boolean | undefined
  /** Prefix of every table name. Default `tidings_`. */
  readonly tablePrefix?: string | undefined
  /**
   * Group commit: at most this many appends of one channel are written in one transaction
   * (default 1,000). Appends queue while the previous batch commits; 1 turns batching off.
   */
  readonly maxBatch?: number | undefined
  /**
   * Set the connection's pragmas when the store starts (default true): `journal_mode = WAL` on a
   * file database, `busy_timeout` and `synchronous`. With false the store leaves them as they are.
   */
  readonly pragmas?: boolean | undefined
  /** How long a write waits for another process's write lock, in ms (`PRAGMA busy_timeout`). Default 5,000. */
  readonly busyTimeoutMs?: number | undefined
  /**
   * `PRAGMA synchronous`. Default `'normal'`: in WAL mode a commit survives a crash of the
   * process, and the database stays consistent after a power loss, which may lose the last
   * commits; `'full'` syncs the WAL on every commit (survives a power loss, slower).
   */
  readonly synchronous?: 'off' | 'normal' | 'full' | 'extra' | undefined
  /**
   * A byte budget for the whole store (sizes measured at append): after each batch, while all
   * channels together hold more, the oldest messages (by timestamp, across channels) are dropped,
   * as retention (epochs unchanged). Each trim scans the log in timestamp order (no index).
   */
  readonly maxBytes?: number | undefined
  /** How often `sweep()` runs by itself, in ms (default 60,000; 0 or false: never). */
  readonly sweepIntervalMs?: number | false | undefined
  /** How long `sweep()` keeps idempotency keys (ms; default 3,600,000): above the longest `dedupWindowMs` in use. */
  readonly idempotencyRetentionMs?: number | undefined
  /** Wall clock of the sweep and of cursor commits (default `Date.now`). */
  readonly now?: (() => number) | undefined
  /** Errors of the background sweep. Default: ignored. */
  readonly onError?: ((error: unknown) => void) | undefined
}

export interface SqliteSweepResult {
  /** Messages deleted because their age passed the channel's `maxAgeMs`. */
  readonly deleted: number
  /** Idempotency records past `idempotencyRetentionMs`. */
  readonly keys: number
}

/** The core `MessageStore` on SQLite, with the optional `revise`, `search`, `channelsOf` and `eraseUser`. */
export interface SqliteStore extends DatabaseStore<SqliteSweepResult> {
  /** The port's `eraseUser` (GDPR): the user's messages become tombstones (`data` null, no sender), its cursors and idempotency records go, in one transaction. */
  eraseUser(userId: string, options?: { readonly now?: number | undefined }): Promise<UserErasure>
}

interface Pending {
  readonly input: Omit<StoredMessage, 'offset' | 'channel'>
  readonly options: AppendOptions
  /** The data as JSON, taken at append (later changes to the caller's object change nothing). */
  readonly json: string
  readonly exclude: string | null
  readonly revises: string | null
  readonly size: number
  resolve(result: AppendResult): void
  reject(error: unknown): void
}

interface MessageRow {
  seq: number
  id: string
  event: string
  data: string
  sender: string | null
  ts: number
  exclude: string | null
  revises: string | null
  version: number
  deleted_at: number | null
}

interface KeyRecord {
  seq: number
  id: string
  event: string
  sender: string | null
  ts: number
  at: number
}

const COLUMNS = sql.raw('seq, id, event, data, sender, ts, exclude, revises, version, deleted_at')
const DEFAULT_WINDOW = 600_000
const SEARCH_PAGE = 500
/** Offsets one search looks at, at most (older ones: page on with `before`). */
const SEARCH_SCAN = 10_000

const finite = (v: number | undefined): v is number => typeof v === 'number' && Number.isFinite(v)
const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v))
const nameHash = (name: string) => createHash('sha256').update(name).digest('hex').slice(0, 12)

function toMessage(channel: string, r: MessageRow): StoredMessage {
  const m: { -readonly [K in keyof StoredMessage]: StoredMessage[K] } = { offset: Number(r.seq), id: r.id, channel, event: r.event, data: JSON.parse(r.data), timestamp: Number(r.ts) }
  if (r.sender !== null) m.sender = r.sender
  if (r.exclude !== null) m.exclude = JSON.parse(r.exclude)
  if (r.revises !== null) m.revises = JSON.parse(r.revises)
  if (num(r.version) > 1) m.version = num(r.version)
  if (r.deleted_at !== null) m.deleted = true
  return m
}

/** `kind` of a channel for `channelsOf`: the first part of a `kind:…` name. */
const kindOf = (name: string) => {
  const i = name.indexOf(':')
  return i > 0 ? name.slice(0, i) : null
}

/**
 * The `MessageStore` on SQLite through Kysely's `SqliteDialect` over better-sqlite3: a durable
 * log in one file (or in memory), with group commit per channel, retention by count, age and
 * bytes, idempotent appends, epochs from the store's identity, consumer cursors, message
 * versions, search and the per-consumer channel list. See docs/storage.md ("SQLite").
 */
export function createSqliteStore(options: SqliteStoreOptions): SqliteStore {
  const prefix = sqlitePrefix(options.tablePrefix)
  const t = sqliteTables(prefix)
  const conn = connectSqlite(options.db)
  const db = conn.db
  const maxBatch = Math.max(1, Math.floor(options.maxBatch ?? 1_000))
  const busyTimeout = Math.max(0, Math.floor(options.busyTimeoutMs ?? 5_000))
  const synchronous = options.synchronous ?? 'normal'
  if (!['off', 'normal', 'full', 'extra'].includes(synchronous)) throw new TypeError(`@tidings/sql: synchronous ${JSON.stringify(synchronous)} is not off, normal, full or extra`)
  const budget = finite(options.maxBytes) && options.maxBytes >= 0 ? options.maxBytes : undefined
  const wallClock = options.now ?? Date.now
  const keyRetention = options.idempotencyRetentionMs ?? 3_600_000
  const onError = options.onError ?? (() => {})
  const queues = new Map<string, { pending: Pending[]; running: boolean }>()
  const inFlight = new Set<Promise<unknown>>()
  /** Serializes this process's writers of the database file (a private key for an in-memory database). */
  let lockKey = connectionKey(db)

  const start = async () => {
    const { rows } = await sql<{ file: string | null }>`SELECT file FROM pragma_database_list WHERE name = 'main'`.execute(db)
    const file = rows[0]?.file ?? ''
    if (file !== '') lockKey = `file:${file}`
    if (options.pragmas !== false) {
      await sql.raw(`PRAGMA busy_timeout = ${busyTimeout}`).execute(db)
      await sql.raw(`PRAGMA synchronous = ${synchronous.toUpperCase()}`).execute(db)
    }
    await withFileLock(lockKey, async () => {
      if (options.pragmas !== false && file !== '') await sql`PRAGMA journal_mode = WAL`.execute(db)
      if (options.migrate !== false) await migrateSqlite(db, { tablePrefix: prefix })
    })
  }
  const ready: Promise<void> = start()
  ready.catch(() => {}) // reported by every call that awaits it

  /** One write transaction (`BEGIN IMMEDIATE`: the write lock first, so no transaction has to upgrade a read). */
  const write = <T>(fn: (c: Kysely<any>) => Promise<T>): Promise<T> =>
    withFileLock(lockKey, () =>
      db.connection().execute(async (c) => {
        await sql`BEGIN IMMEDIATE`.execute(c)
        try {
          const out = await fn(c)
          await sql`COMMIT`.execute(c)
          return out
        } catch (error) {
          await sql`ROLLBACK`.execute(c).catch(() => {})
          throw error
        }
      }),
    )

  const track = <T>(p: Promise<T>): Promise<T> => {
    inFlight.add(p)
    p.then(
      () => inFlight.delete(p),
      () => inFlight.delete(p),
    )
    return p
  }

  // ------------------------------------------------------------------ epochs

  const emptyEpoch = (identity: string | null, channel: string) => `${identity ?? 'unknown'}.${nameHash(channel)}`

  /** The store identity and the channel's row (and, with `now`, the first offset its age keeps). */
  const channelState = async (q: Kysely<any>, channel: string, now?: number | 'first') => {
    const firstLive =
      now === undefined
        ? sql`NULL`
        : now === 'first'
          ? sql`(SELECT m.ts FROM ${t.messages} m WHERE m.channel = c.name AND m.seq > c.low ORDER BY m.seq LIMIT 1)`
          : sql`CASE WHEN c.max_age_ms IS NULL THEN NULL ELSE (SELECT m.seq FROM ${t.messages} m WHERE m.channel = c.name AND m.seq > c.low AND m.ts >= ${now} - c.max_age_ms ORDER BY m.seq LIMIT 1) END`
    const { rows } = await sql<{ identity: string | null; epoch: string | null; top: number | null; low: number | null; bytes: number | null; max_age_ms: number | null; first_live: number | null }>`
      SELECT s.identity, c.epoch, c.top, c.low, c.bytes, c.max_age_ms, ${firstLive} AS first_live
      FROM (SELECT 1) AS one LEFT JOIN ${t.store} s ON s.id = 1 LEFT JOIN ${t.channels} c ON c.name = ${channel}`.execute(q)
    return rows[0]!
  }

  /** The low end a reader sees: what retention dropped, and what aged out by `now` (the rows stay until an append or the sweep). */
  const liveLow = (state: { top: number | null; low: number | null; max_age_ms: number | null; first_live: number | null }) => {
    const top = num(state.top)
    let low = num(state.low)
    if (state.max_age_ms !== null) low = Math.max(low, state.first_live === null ? top : num(state.first_live) - 1)
    return low
  }

  // ------------------------------------------------------------------ appends (group commit)

  const measure = (input: Pending['input'], json: string, size: number | undefined) =>
    finite(size) && size >= 0 ? size : utf8Length(json) + utf8Length(input.id) + utf8Length(input.event) + (input.sender !== undefined ? utf8Length(input.sender) : 0) + 16

  const writeBatch = (channel: string, batch: Pending[]) =>
    write(async (c): Promise<AppendResult[]> => {
      // With the timestamp of the oldest retained message (as `first_live`), so most batches need no age query.
      const state = await channelState(c, channel, 'first')
      let identity = state.identity
      if (identity === null) {
        // The store row was removed behind the store's back: a new identity, so no epoch comes back.
        identity = newIdentity()
        await sql`INSERT OR REPLACE INTO ${t.store} (id, identity, created_at) VALUES (1, ${identity}, ${Date.now()})`.execute(c)
      }
      const epoch = state.epoch ?? emptyEpoch(identity, channel)
      const top = num(state.top)
      const low = num(state.low)

      // Idempotency: keys seen within their window answer the earlier message.
      const keys = [...new Set(batch.map((p) => p.options.idempotencyKey).filter((k): k is string => k !== undefined))]
      const known = new Map<string, KeyRecord>()
      if (keys.length > 0 && state.epoch !== null) {
        const { rows } = await sql<KeyRecord & { key: string }>`
          SELECT key, seq, id, event, sender, ts, at FROM ${t.idempotency} WHERE channel = ${channel} AND key IN (SELECT value FROM json_each(${JSON.stringify(keys)}))`.execute(c)
        for (const r of rows) known.set(r.key, { seq: num(r.seq), id: r.id, event: r.event, sender: r.sender, ts: num(r.ts), at: num(r.at) })
      }
      const results: Array<AppendResult | { duplicateOf: number }> = []
      const rows: unknown[][] = []
      const keyRows = new Map<string, KeyRecord>()
      let next = top
      let added = 0
      for (const p of batch) {
        const key = p.options.idempotencyKey
        if (key !== undefined) {
          const seen = known.get(key)
          if (seen && p.options.now - seen.at < (p.options.dedupWindowMs ?? DEFAULT_WINDOW)) {
            results.push({ duplicateOf: seen.seq })
            continue
          }
        }
        const seq = ++next
        const { input } = p
        rows.push([seq, input.id, input.event, p.json, input.sender ?? null, input.timestamp, p.exclude, p.revises, Math.round(p.size)])
        added += Math.round(p.size)
        if (key !== undefined) {
          const record = { seq, id: input.id, event: input.event, sender: input.sender ?? null, ts: input.timestamp, at: p.options.now }
          known.set(key, record)
          keyRows.set(key, record)
        }
        const message: { -readonly [K in keyof StoredMessage]: StoredMessage[K] } = { offset: seq, id: input.id, channel, event: input.event, data: JSON.parse(p.json), timestamp: input.timestamp }
        if (input.sender !== undefined) message.sender = input.sender
        if (p.exclude !== null) message.exclude = JSON.parse(p.exclude)
        if (p.revises !== null) message.revises = JSON.parse(p.revises)
        results.push({ message, epoch, duplicate: false })
      }

      let newLow = low
      if (rows.length > 0) {
        // The batch in one statement: its rows as one JSON parameter (a fixed SQL text, prepared once).
        await sql`INSERT INTO ${t.messages} (channel, seq, id, event, data, sender, ts, exclude, revises, size)
          SELECT ${channel}, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8
          FROM json_each(${JSON.stringify(rows)}) AS j`.execute(c)
        if (keyRows.size > 0) {
          const records = [...keyRows].map(([key, r]) => [key, r.seq, r.id, r.event, r.sender, r.ts, r.at])
          await sql`INSERT INTO ${t.idempotency} (channel, key, seq, id, event, sender, ts, at)
            SELECT ${channel}, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, j.value ->> 6 FROM json_each(${JSON.stringify(records)}) AS j WHERE true
            ON CONFLICT (channel, key) DO UPDATE SET seq = excluded.seq, id = excluded.id, event = excluded.event, sender = excluded.sender, ts = excluded.ts, at = excluded.at`.execute(c)
        }

        // Retention of the channel (the last append's), once per batch: count in JS, age and bytes
        // from the rows; what it drops is deleted in this transaction.
        const last = batch.at(-1)!
        const retention: Retention = last.options.retention
        const newTop = next
        let bytes = num(state.bytes) + added
        newLow = Math.max(low, finite(retention.maxCount) ? newTop - Math.max(0, Math.floor(retention.maxCount)) : low)
        const cutoff = last.options.now - retention.maxAgeMs
        // The oldest message the count keeps, when its time is known: the stored oldest, or the batch's first.
        const oldest = newLow === low ? (state.first_live ?? (rows[0]![5] as number)) : undefined
        if (finite(retention.maxAgeMs) && newLow < newTop && !(oldest !== undefined && oldest >= cutoff)) {
          const { rows: live } = await sql<{ seq: number }>`SELECT seq FROM ${t.messages} WHERE channel = ${channel} AND seq > ${newLow} AND ts >= ${cutoff} ORDER BY seq LIMIT 1`.execute(c)
          newLow = Math.max(newLow, live[0] ? num(live[0].seq) - 1 : newTop)
        }
        const maxBytes = finite(retention.maxBytes) ? retention.maxBytes : undefined
        if (maxBytes !== undefined && newLow < newTop) {
          const { rows: kept } = await sql<{ bytes: number }>`SELECT coalesce(sum(size), 0) AS bytes FROM ${t.messages} WHERE channel = ${channel} AND seq > ${newLow}`.execute(c)
          if (num(kept[0]?.bytes) > maxBytes) {
            const { rows: cut } = await sql<{ seq: number }>`
              SELECT w.seq FROM (SELECT seq, sum(size) OVER (ORDER BY seq DESC) AS cum FROM ${t.messages} WHERE channel = ${channel} AND seq > ${newLow}) AS w
              WHERE w.cum > ${maxBytes} ORDER BY w.seq DESC LIMIT 1`.execute(c)
            if (cut[0]) newLow = Math.max(newLow, num(cut[0].seq))
          }
        }
        if (newLow > low) {
          const { rows: dropped } = await sql<{ bytes: number }>`SELECT coalesce(sum(size), 0) AS bytes FROM ${t.messages} WHERE channel = ${channel} AND seq > ${low} AND seq <= ${newLow}`.execute(c)
          bytes -= num(dropped[0]?.bytes)
          await sql`DELETE FROM ${t.messages} WHERE channel = ${channel} AND seq <= ${newLow}`.execute(c)
        }
        const now = Math.round(Math.max(...batch.map((p) => p.options.now)))
        await sql`INSERT INTO ${t.channels} (name, epoch, top, low, bytes, created_at, last_activity, max_count, max_age_ms, max_bytes)
          VALUES (${channel}, ${epoch}, ${newTop}, ${newLow}, ${Math.max(0, bytes)}, ${now}, ${now},
            ${finite(retention.maxCount) ? retention.maxCount : null}, ${finite(retention.maxAgeMs) ? retention.maxAgeMs : null}, ${maxBytes ?? null})
          ON CONFLICT (name) DO UPDATE SET top = excluded.top, low = excluded.low, bytes = excluded.bytes, last_activity = max(last_activity, excluded.last_activity),
            max_count = excluded.max_count, max_age_ms = excluded.max_age_ms, max_bytes = excluded.max_bytes`.execute(c)
      }

      // Duplicates answer the earlier message: whole while the log holds it, without data once dropped.
      const dupSeqs = [...new Set(results.flatMap((r) => ('duplicateOf' in r ? [r.duplicateOf] : [])))]
      const held = new Map<number, StoredMessage>()
      if (dupSeqs.length > 0) {
        const { rows: found } = await sql<MessageRow>`SELECT ${COLUMNS} FROM ${t.messages} WHERE channel = ${channel} AND seq IN (SELECT value FROM json_each(${JSON.stringify(dupSeqs)})) AND seq > ${newLow}`.execute(c)
        for (const r of found) held.set(num(r.seq), toMessage(channel, r))
      }
      const slim = (seq: number): StoredMessage => {
        const k = [...known.values()].find((v) => v.seq === seq)
        return { offset: seq, id: k?.id ?? '', channel, event: k?.event ?? '', data: undefined, ...(k && k.sender !== null ? { sender: k.sender } : {}), timestamp: k?.ts ?? 0 }
      }
      return results.map((r) => ('duplicateOf' in r ? { message: held.get(r.duplicateOf) ?? slim(r.duplicateOf), epoch, duplicate: true } : r))
    })

  /** The store-wide byte budget: the oldest messages (by timestamp) go first, as retention. */
  const trimToBudget = () =>
    write(async (c) => {
      for (let round = 0; round < 1_000; round++) {
        const { rows: total } = await sql<{ bytes: number }>`SELECT coalesce(sum(bytes), 0) AS bytes FROM ${t.channels}`.execute(c)
        let excess = num(total[0]?.bytes) - budget!
        if (excess <= 0) return
        const { rows } = await sql<{ channel: string; seq: number; size: number }>`SELECT channel, seq, size FROM ${t.messages} ORDER BY ts, channel, seq LIMIT 1000`.execute(c)
        if (rows.length === 0) return
        const upTo = new Map<string, { seq: number; size: number }>()
        for (const r of rows) {
          if (excess <= 0) break
          const u = upTo.get(r.channel) ?? { seq: 0, size: 0 }
          upTo.set(r.channel, { seq: Math.max(u.seq, num(r.seq)), size: u.size + num(r.size) })
          excess -= num(r.size)
        }
        for (const [channel, u] of upTo) {
          // Rows of a channel at or below its new low go, whatever their timestamps.
          const { rows: gone } = await sql<{ bytes: number }>`SELECT coalesce(sum(size), 0) AS bytes FROM ${t.messages} WHERE channel = ${channel} AND seq <= ${u.seq}`.execute(c)
          await sql`DELETE FROM ${t.messages} WHERE channel = ${channel} AND seq <= ${u.seq}`.execute(c)
          await sql`UPDATE ${t.channels} SET low = max(low, ${u.seq}), bytes = max(0, bytes - ${num(gone[0]?.bytes)}) WHERE name = ${channel}`.execute(c)
        }
      }
    })

  const flush = async (channel: string, queue: { pending: Pending[]; running: boolean }) => {
    try {
      await ready
    } catch (error) {
      for (const p of queue.pending.splice(0)) p.reject(error)
    }
    while (queue.pending.length > 0) {
      const batch = queue.pending.splice(0, maxBatch)
      try {
        const results = await writeBatch(channel, batch)
        if (budget !== undefined) await trimToBudget()
        for (const [i, p] of batch.entries()) p.resolve(results[i]!)
      } catch (error) {
        for (const p of batch) p.reject(error)
      }
    }
    queue.running = false
    if (queues.get(channel) === queue) queues.delete(channel)
  }

  const append = (channel: string, input: Pending['input'], opts: AppendOptions): Promise<AppendResult> => {
    if (life.closed) return Promise.reject(new Error('@tidings/sql: the store is closed'))
    // Checked here, so one bad message fails alone rather than the batch it would join.
    if (typeof input.id !== 'string' || typeof input.event !== 'string' || !Number.isFinite(input.timestamp) || !Number.isFinite(opts.now)) {
      return Promise.reject(new TypeError('@tidings/sql: append needs a string id and event, a finite timestamp and a finite now'))
    }
    let json: string
    let exclude: string | null
    let revises: string | null
    try {
      json = JSON.stringify(input.data) ?? 'null'
      exclude = input.exclude !== undefined ? JSON.stringify(input.exclude) : null
      revises =
        input.revises !== undefined ? JSON.stringify({ offset: input.revises.offset, version: input.revises.version, ...(input.revises.deleted ? { deleted: true } : {}) }) : null
    } catch (error) {
      return Promise.reject(error)
    }
    return new Promise<AppendResult>((resolve, reject) => {
      let queue = queues.get(channel)
      if (!queue) queues.set(channel, (queue = { pending: [], running: false }))
      queue.pending.push({ input, options: opts, json, exclude, revises, size: measure(input, json, opts.size), resolve, reject })
      if (!queue.running) {
        queue.running = true
        track(flush(channel, queue))
      }
    })
  }

  // ------------------------------------------------------------------ reads

  const read = async (channel: string, opts: ReadOptions): Promise<ReadResult> => {
    await ready
    const state = await channelState(db, channel, opts.now)
    if (state.epoch === null) return { epoch: emptyEpoch(state.identity, channel), messages: [], top: 0, complete: true }
    const top = num(state.top)
    const low = liveLow(state)
    const after = Number.isFinite(opts.after) ? Math.max(0, Math.floor(opts.after)) : 0
    const complete = after >= top || after >= low
    const from = Math.max(after, low)
    // An infinite limit (every message) is no limit (-1 in SQLite).
    const limit = Number.isFinite(opts.limit) ? Math.max(0, Math.floor(opts.limit)) : opts.limit > 0 ? -1 : 0
    if (from >= top || limit === 0) return { epoch: state.epoch, messages: [], top, complete }
    const { rows } = await sql<MessageRow>`SELECT ${COLUMNS} FROM ${t.messages} WHERE channel = ${channel} AND seq > ${from} AND seq <= ${top} ORDER BY seq LIMIT ${limit}`.execute(db)
    return { epoch: state.epoch, messages: rows.map((r) => toMessage(channel, r)), top, complete }
  }

  const position = async (channel: string): Promise<StreamPosition> => {
    await ready
    const state = await channelState(db, channel)
    return state.epoch === null ? { epoch: emptyEpoch(state.identity, channel), offset: 0 } : { epoch: state.epoch, offset: num(state.top) }
  }

  const cursor = async (channel: string, consumer: string): Promise<ConsumerCursor | undefined> => {
    await ready
    const { rows } = await sql<{ last_seen_offset: number; epoch: string }>`SELECT last_seen_offset, epoch FROM ${t.subscriptions} WHERE channel = ${channel} AND user_id = ${consumer}`.execute(db)
    const row = rows[0]
    return row ? { offset: num(row.last_seen_offset), epoch: row.epoch } : undefined
  }

  const commit = async (channel: string, consumer: string, offset: number): Promise<void> => {
    await ready
    const at = Number.isFinite(offset) ? Math.max(0, Math.floor(offset)) : offset > 0 ? Number.MAX_SAFE_INTEGER : 0
    // A channel with no log and no cursor there: nothing to write (and no write lock to wait for).
    const { rows: seen } = await sql<{ log: number | null; cursor: number | null }>`
      SELECT (SELECT 1 FROM ${t.channels} WHERE name = ${channel}) AS log, (SELECT 1 FROM ${t.subscriptions} WHERE channel = ${channel} AND user_id = ${consumer}) AS cursor`.execute(db)
    if (seen[0]?.log == null && seen[0]?.cursor == null) return
    await track(
      write(async (c) => {
        const r = await sql`
          INSERT INTO ${t.subscriptions} (channel, user_id, last_seen_offset, epoch, updated_at)
          SELECT c.name, ${consumer}, max(min(${at}, c.top), 0), c.epoch, ${Math.round(wallClock())} FROM ${t.channels} c WHERE c.name = ${channel}
          ON CONFLICT (channel, user_id) DO UPDATE SET
            last_seen_offset = CASE WHEN epoch = excluded.epoch THEN max(last_seen_offset, excluded.last_seen_offset) ELSE excluded.last_seen_offset END,
            epoch = excluded.epoch, updated_at = excluded.updated_at`.execute(c)
        // No log: the commit creates nothing, but it replaces a cursor of a lost history (here: dropped).
        if (Number(r.numAffectedRows ?? 0) === 0) await sql`DELETE FROM ${t.subscriptions} WHERE channel = ${channel} AND user_id = ${consumer}`.execute(c)
      }),
    )
  }

  const cursors = async (channel: string): Promise<Record<string, number>> => {
    await ready
    const { rows } = await sql<{ user_id: string; last_seen_offset: number }>`
      SELECT s.user_id, s.last_seen_offset FROM ${t.subscriptions} s JOIN ${t.channels} c ON c.name = s.channel AND c.epoch = s.epoch WHERE s.channel = ${channel}`.execute(db)
    const out: Record<string, number> = {}
    for (const r of rows) out[r.user_id] = num(r.last_seen_offset)
    return out
  }

  // ------------------------------------------------------------------ optional methods of the port

  const revise = async (channel: string, offset: number, revision: Revision, opts: { readonly now: number }): Promise<ReviseResult | undefined> => {
    await ready
    const remove = revision.deleted === true
    const json = remove ? 'null' : (JSON.stringify(revision.data) ?? 'null')
    const now = Math.round(opts.now)
    return track(
      write(async (c) => {
        const state = await channelState(c, channel, opts.now)
        if (state.epoch === null || !Number.isInteger(offset) || offset <= liveLow(state) || offset > num(state.top)) return undefined
        const { rows } = await sql<MessageRow>`
          UPDATE ${t.messages} SET data = ${json}, version = version + 1, ${remove ? sql`deleted_at = ${now}` : sql`edited_at = ${now}`}
          WHERE channel = ${channel} AND seq = ${offset} AND deleted_at IS NULL
          RETURNING ${COLUMNS}`.execute(c)
        const r = rows[0]
        if (!r) return undefined
        return { message: { ...toMessage(channel, r), version: num(r.version) } }
      }),
    )
  }

  /** Word matching in JS (core's `searchWords`/`holdsWords`, as the memory store), over the retained rows, newest first, page by page. */
  const search = async (channel: string, query: string, opts: { readonly limit: number; readonly before?: number | undefined; readonly now: number }): Promise<StoredMessage[]> => {
    await ready
    const wanted = searchWords(query)
    if (wanted.length === 0) return []
    const state = await channelState(db, channel, opts.now)
    if (state.epoch === null) return []
    const low = liveLow(state)
    const limit = Math.max(1, Math.floor(Number.isFinite(opts.limit) ? opts.limit : Number.MAX_SAFE_INTEGER))
    let below = Math.min(num(state.top) + 1, opts.before !== undefined && Number.isFinite(opts.before) ? Math.ceil(opts.before) : Number.MAX_SAFE_INTEGER)
    // At most the newest SEARCH_SCAN offsets below `before` per call, as the memory and Redis stores.
    const floor = Math.max(low, below - SEARCH_SCAN - 1)
    const out: StoredMessage[] = []
    while (out.length < limit && below > floor + 1) {
      const { rows } = await sql<MessageRow>`
        SELECT ${COLUMNS} FROM ${t.messages} WHERE channel = ${channel} AND seq > ${floor} AND seq < ${below} AND deleted_at IS NULL AND revises IS NULL
        ORDER BY seq DESC LIMIT ${SEARCH_PAGE}`.execute(db)
      for (const r of rows) {
        if (out.length >= limit) break
        const m = toMessage(channel, r)
        if (holdsWords(m.data, wanted)) out.push(m)
      }
      if (rows.length < SEARCH_PAGE) break
      below = num(rows.at(-1)!.seq)
    }
    return out
  }

  const channelsOf = async (consumer: string, opts: { readonly limit: number }): Promise<ConsumerChannel[]> => {
    await ready
    const limit = Math.max(1, Math.floor(Number.isFinite(opts.limit) ? opts.limit : 10_000))
    const { rows } = await sql<{ name: string; last_seen: number; top: number; low: number; last_activity: number; active_users: number }>`
      SELECT s.channel AS name, s.last_seen_offset AS last_seen, c.top, c.low, c.last_activity,
        (SELECT count(*) FROM ${t.subscriptions} a WHERE a.channel = s.channel AND a.epoch = c.epoch) AS active_users
      FROM ${t.subscriptions} s JOIN ${t.channels} c ON c.name = s.channel AND c.epoch = s.epoch
      WHERE s.user_id = ${consumer}
      ORDER BY c.last_activity DESC, s.channel LIMIT ${limit}`.execute(db)
    return rows.map((r) => ({
      name: r.name,
      lastSeenOffset: num(r.last_seen),
      top: num(r.top),
      unread: Math.max(0, num(r.top) - Math.max(num(r.last_seen), num(r.low))),
      lastActivity: num(r.top) > 0 ? num(r.last_activity) : null,
      kind: kindOf(r.name),
      activeUsers: num(r.active_users),
    }))
  }

  /** The port's `eraseUser`: one write transaction; a scan of the message table (no index on `sender`, which would cost every append). */
  const eraseUser = async (userId: string, opts: { readonly now?: number | undefined } = {}): Promise<UserErasure> => {
    await ready
    const now = Math.round(opts.now ?? wallClock())
    return track(
      write(async (c) => {
        const count = (r: { numAffectedRows?: bigint | undefined }) => Number(r.numAffectedRows ?? 0)
        const messages = count(
          await sql`UPDATE ${t.messages} SET data = 'null', sender = NULL, exclude = NULL, version = version + 1, deleted_at = coalesce(deleted_at, ${now})
            WHERE sender = ${userId}`.execute(c),
        )
        const cursors = count(await sql`DELETE FROM ${t.subscriptions} WHERE user_id = ${userId}`.execute(c))
        const keys = count(await sql`DELETE FROM ${t.idempotency} WHERE sender = ${userId}`.execute(c))
        return { messages, cursors, keys }
      }),
    )
  }

  // ------------------------------------------------------------------ what a database adds

  const stats = async () => {
    await ready
    const { rows } = await sql<{ channels: number; bytes: number; messages: number }>`
      SELECT count(*) AS channels, coalesce(sum(bytes), 0) AS bytes, coalesce(sum(top - low), 0) AS messages FROM ${t.channels}`.execute(db)
    const r = rows[0]!
    return { channels: num(r.channels), bytes: num(r.bytes), messages: num(r.messages) }
  }

  const reset = async () => {
    await ready
    await track(
      write(async (c) => {
        await sql`DELETE FROM ${t.messages}`.execute(c)
        await sql`DELETE FROM ${t.channels}`.execute(c)
        await sql`DELETE FROM ${t.idempotency}`.execute(c)
        await sql`INSERT OR REPLACE INTO ${t.store} (id, identity, created_at) VALUES (1, ${newIdentity()}, ${Date.now()})`.execute(c)
      }),
    )
  }

  const sweep = async (at?: number): Promise<SqliteSweepResult> => {
    await ready
    const now = at ?? wallClock()
    return track(
      write(async (c) => {
        let deleted = 0
        const { rows: aged } = await sql<{ name: string; top: number; low: number; max_age_ms: number }>`
          SELECT c.name, c.top, c.low, c.max_age_ms FROM ${t.channels} c
          WHERE c.max_age_ms IS NOT NULL AND c.top > c.low
            AND (SELECT m.ts FROM ${t.messages} m WHERE m.channel = c.name AND m.seq > c.low ORDER BY m.seq LIMIT 1) < ${now} - c.max_age_ms`.execute(c)
        for (const ch of aged) {
          const { rows: first } = await sql<{ seq: number }>`SELECT seq FROM ${t.messages} WHERE channel = ${ch.name} AND seq > ${ch.low} AND ts >= ${now - ch.max_age_ms} ORDER BY seq LIMIT 1`.execute(c)
          const newLow = first[0] ? num(first[0].seq) - 1 : num(ch.top)
          const { rows: gone } = await sql<{ bytes: number; n: number }>`SELECT coalesce(sum(size), 0) AS bytes, count(*) AS n FROM ${t.messages} WHERE channel = ${ch.name} AND seq <= ${newLow}`.execute(c)
          await sql`DELETE FROM ${t.messages} WHERE channel = ${ch.name} AND seq <= ${newLow}`.execute(c)
          await sql`UPDATE ${t.channels} SET low = max(low, ${newLow}), bytes = max(0, bytes - ${num(gone[0]?.bytes)}) WHERE name = ${ch.name}`.execute(c)
          deleted += num(gone[0]?.n)
        }
        const keys = await sql`DELETE FROM ${t.idempotency} WHERE at < ${now - keyRetention}`.execute(c)
        return { deleted, keys: Number(keys.numAffectedRows ?? 0) }
      }),
    )
  }

  // ------------------------------------------------------------------ lifecycle

  const life = storeLifecycle({ intervalMs: options.sweepIntervalMs, sweep: () => sweep(), onError, inFlight, ready, release: () => conn.close() })
  const close = () => life.close()

  return { db, ready, append, read, position, cursor, commit, cursors, revise, search, channelsOf, eraseUser, stats, reset, sweep, close }
}
