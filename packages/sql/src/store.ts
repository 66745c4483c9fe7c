import { createHash, randomBytes } from 'node:crypto'
import type { AppendOptions, AppendResult, UserErasure, ConsumerCursor, MessageStore, ReadOptions, ReadResult, Retention, Revision, ReviseResult, StoredMessage, StreamPosition } from '@tidings/core'
import { utf8Length } from '@tidings/core'
import { type Kysely, sql } from 'kysely'
import { type Connection, type SqlDatabase, connect } from './connect.js'
import { migrate } from './migrations/index.js'
import { type SchemaContext, schemaContext, tables } from './names.js'
import { createRecords } from './records.js'
import { type DatabaseStore, storeLifecycle } from './lifecycle.js'
import { MESSAGE_COLUMNS, type MessageRow, jsonbRefuses, num, revisesColumn, toMessage } from './rows.js'

/** What the seed-002 columns of a channel row say about it (filled on the channel's first append). */
export interface ChannelDescription {
  readonly kind?: string | undefined
  readonly scope?: string | undefined
  readonly entity?: string | undefined
  readonly entityId?: string | undefined
  readonly createdBy?: string | undefined
  readonly metadata?: Record<string, unknown> | undefined
}

export interface SqlStoreOptions {
  /** The database: the app's Kysely instance, `{ postgres: url | pg.Pool }` or `{ pglite: PGlite | dataDir }`. */
  readonly db: SqlDatabase
  /** PostgreSQL schema of the tables. */
  readonly schema?: string | undefined
  /** Table name prefix. Default `tidings_`. */
  readonly prefix?: string | undefined
  /** Run the package's migrations before the first query (default true). With false, call `migrate(db)` yourself. */
  readonly migrate?: boolean | undefined
  /**
   * Group commit: at most this many appends of one channel are written in one transaction
   * (default 1,000). Appends queue while their channel's previous batch commits, so the batch
   * grows with the load and adds no wait when the load is light. 1 turns batching off.
   */
  readonly maxBatch?: number | undefined
  /** The text search configuration of `search()` (a PostgreSQL regconfig name). Default `'simple'`. */
  readonly searchConfig?: string | undefined
  /** The seed-002 description of a new channel. Default: from its name, `kind` its first part, `scope:entity:id` for three parts, `createdBy` the first sender. */
  readonly describeChannel?: ((name: string, firstSender: string | undefined) => ChannelDescription) | undefined
  /**
   * Archival: called by `sweep()` with messages that retention dropped, before they are deleted
   * (oldest first, per channel, in batches). A throw keeps them for the next sweep. With an
   * archive hook, appends only move the retained range and the sweep deletes.
   */
  readonly archive?: ((channel: string, messages: readonly StoredMessage[]) => Promise<void> | void) | undefined
  /** How often `sweep()` runs by itself, in ms (default 60,000; 0 or false: never, call it yourself). */
  readonly sweepIntervalMs?: number | false | undefined
  /**
   * A byte budget for the whole store (sizes measured at append): after each batch, while all
   * channels together hold more, the oldest messages (by timestamp, across channels) are dropped,
   * as retention (epochs unchanged). Each trim scans the retained messages in timestamp order
   * (no index): meant for a small embedded store (PGlite on a device), not a large PostgreSQL.
   */
  readonly maxBytes?: number | undefined
  /**
   * Rows dropped by retention are deleted off the append path: by a purge of the channel once
   * this many await it (default 10,000), and by `sweep()`. With an `archive` hook only the sweep deletes.
   */
  readonly purgeEvery?: number | undefined
  /** How long `sweep()` keeps idempotency keys (ms; default 3,600,000): set it above the longest `dedupWindowMs` in use. */
  readonly idempotencyRetentionMs?: number | undefined
  /** Wall clock of the sweep (default `Date.now`). */
  readonly now?: (() => number) | undefined
  /** Errors of the background sweep and of idle pooled connections. Default: ignored. */
  readonly onError?: ((error: unknown) => void) | undefined
}

/** One entry of `channelsOf(user)`: the per-user channel list of seed 002 (the port's `ConsumerChannel`, with kind, active users and status always set). */
export interface UserChannel {
  readonly name: string
  readonly kind: string | null
  /** Users whose subscription to it is active. */
  readonly activeUsers: number
  /** Time of the newest append (ms), or null for a channel with no message yet. */
  readonly lastActivity: number | null
  /** Messages retained after the user's cursor (all retained ones when it has none in the current epoch). */
  readonly unread: number
  readonly status: string
  readonly lastSeenOffset: number
  readonly top: number
}

/** A message as `message()` answers it: with its version (1 as appended, +1 per revision) and the times of its last edit and of its deletion. */
export type MessageVersion = StoredMessage & { readonly version: number; readonly editedAt: number | null; readonly deletedAt: number | null }

/** The port's erasure counts (`messages` deleted or redacted, `cursors`: the user's subscription rows, `keys`), plus the SQL store's own. */
export interface EraseResult extends UserErasure {
  readonly receipts: number
  /** Channels the user created (their `created_by` cleared). */
  readonly channels: number
}

export interface Receipt {
  readonly userId: string
  readonly deliveredAt: number | null
  readonly readAt: number | null
}

export interface SweepResult {
  /** Messages deleted (after archiving, when there is an archive hook). */
  readonly deleted: number
  readonly archived: number
  /** Idempotency records past their window. */
  readonly keys: number
}

/** The SQL message store: the core `MessageStore` plus what a database adds (documented in docs/storage.md). */
export interface SqlStore extends DatabaseStore<SweepResult> {
  /** A message with its version, edit and deletion times (undefined when not retained). */
  message(channel: string, offset: number): Promise<MessageVersion | undefined>
  /**
   * The port's `revise`: replaces a retained message's data (`{ data }`) or deletes it
   * (`{ deleted: true }`: data null, a tombstone keeps its offset), in one atomic UPDATE
   * (`version + 1`); the message as it is now, or undefined when it is not retained (retention,
   * age at `now`) or already deleted. Changes no size, byte count or epoch, and delivers nothing:
   * the hub's `channel(name).edit/delete` revise through it and deliver the revision event.
   */
  revise(channel: string, offset: number, revision: Revision, options?: { now?: number | undefined }): Promise<ReviseResult | undefined>
  /** GDPR erasure of one user: their messages (redacted by default, or deleted), receipts, subscriptions, keys. */
  eraseUser(userId: string, options?: { mode?: 'redact' | 'delete' | undefined; now?: number | undefined }): Promise<EraseResult>
  /**
   * The port's `search`: full-text search (the query's words joined with AND by PostgreSQL's
   * `plainto_tsquery`, against the strings of the data, `searchConfig`) of a channel's retained
   * messages as they are now, newest first, among the newest 10,000 offsets below `before`: never
   * deleted ones, revision events or messages expired by age at `now` (default: the wall clock).
   */
  search(channel: string, query: string, options?: { limit?: number | undefined; before?: number | undefined; now?: number | undefined }): Promise<StoredMessage[]>
  /** Marks a user's subscription to a channel active (membership, for `channelsOf`). */
  join(channel: string, userId: string, options?: { now?: number | undefined }): Promise<void>
  /** Marks it left (the cursor is kept). */
  leave(channel: string, userId: string, options?: { now?: number | undefined }): Promise<void>
  /**
   * The port's `channelsOf`: the user's channels (a cursor committed, or joined) with their kind,
   * active users, last activity and unread count, most recently active first. Left ones only with `includeLeft`.
   */
  channelsOf(userId: string, options?: { limit?: number | undefined; includeLeft?: boolean | undefined }): Promise<UserChannel[]>
  /** Records that messages reached a user (per message). */
  markDelivered(channel: string, offsets: readonly number[], userId: string, options?: { now?: number | undefined }): Promise<void>
  /** Records that a user read messages (per message; implies delivered). */
  markRead(channel: string, offsets: readonly number[], userId: string, options?: { now?: number | undefined }): Promise<void>
  receipts(channel: string, offset: number): Promise<Receipt[]>
}

interface Pending {
  readonly input: Omit<StoredMessage, 'offset' | 'channel'>
  readonly options: AppendOptions
  /** The data as JSON (taken at append: later changes to the caller's object change nothing). */
  readonly json: string
  readonly size: number
  resolve(result: AppendResult): void
  reject(error: unknown): void
}

interface ChannelQueue {
  pending: Pending[]
  running: boolean
}

const DEFAULT_WINDOW = 600_000

function nameHash(name: string): string {
  return createHash('sha256').update(name).digest('hex').slice(0, 12)
}

function newIdentity(): string {
  return randomBytes(8).toString('hex')
}

/** Default description: `kind` is the first part of the name; `scope:entity:id` when it has three parts or more. */
export function describeChannelName(name: string, firstSender: string | undefined): ChannelDescription {
  const parts = name.split(':')
  const kind = parts.length > 1 ? parts[0] : undefined
  if (parts.length >= 3) return { kind, scope: parts[0], entity: parts[1], entityId: parts.slice(2).join(':'), createdBy: firstSender }
  return { kind, createdBy: firstSender }
}

const finite = (v: number | undefined): v is number => typeof v === 'number' && Number.isFinite(v)

/** The SQL `MessageStore` on PostgreSQL, PGlite or any Kysely PostgreSQL dialect. See docs/storage.md. */
export function createSqlStore(options: SqlStoreOptions): SqlStore {
  const ctx: SchemaContext = schemaContext(options)
  const t = tables(ctx)
  const onError = options.onError ?? (() => {})
  const conn: Connection = connect(options.db, onError)
  const db = conn.db
  const maxBatch = Math.max(1, Math.floor(options.maxBatch ?? 1_000))
  const searchConfig = options.searchConfig ?? 'simple'
  if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(searchConfig)) throw new TypeError(`@tidings/sql: searchConfig ${JSON.stringify(searchConfig)} is not a configuration name`)
  const describe = options.describeChannel ?? describeChannelName
  const archive = options.archive
  const wallClock = options.now ?? Date.now
  const keyRetention = options.idempotencyRetentionMs ?? 3_600_000
  const purgeEvery = Math.max(1, options.purgeEvery ?? 10_000)
  const budget = finite(options.maxBytes) && options.maxBytes >= 0 ? options.maxBytes : undefined
  const ready: Promise<void> = options.migrate === false ? Promise.resolve() : migrate(db, ctx).then(() => undefined)
  ready.catch(() => {}) // reported by every call that awaits it
  const queues = new Map<string, ChannelQueue>()
  const inFlight = new Set<Promise<void>>()

  // ------------------------------------------------------------------ identity and epochs

  const ensureIdentity = async () => {
    await sql`INSERT INTO ${t.store} (id, identity, created_at) VALUES (1, ${newIdentity()}, ${Date.now()}) ON CONFLICT (id) DO NOTHING`.execute(db)
  }

  /** The channel's row (epoch, top, low…) and the store identity, in one query. */
  const channelState = async (channel: string, withFirstLive?: number) => {
    for (let attempt = 0; ; attempt++) {
      const firstLive =
        withFirstLive === undefined
          ? sql`NULL`
          : sql`(SELECT m.seq FROM ${t.messages} m WHERE m.channel = ${channel} AND m.seq > c.low AND m.ts >= ${withFirstLive}::float8 - c.max_age_ms ORDER BY m.seq LIMIT 1)`
      const { rows } = await sql<{ identity: string | null; epoch: string | null; top: unknown; low: unknown; max_age_ms: unknown; first_live: unknown }>`
        SELECT s.identity, c.epoch, c.top, c.low, c.max_age_ms, ${firstLive} AS first_live
        FROM (SELECT 1) AS one LEFT JOIN ${t.store} s ON s.id = 1 LEFT JOIN ${t.channels} c ON c.name = ${channel}`.execute(db)
      const row = rows[0]!
      if (row.epoch === null && row.identity === null && attempt === 0) {
        await ensureIdentity() // the tables were emptied behind the store's back
        continue
      }
      return row
    }
  }

  const emptyEpoch = (identity: string | null, channel: string) => `${identity ?? 'unknown'}.${nameHash(channel)}`

  // ------------------------------------------------------------------ appends (group commit)

  const measure = (input: Pending['input'], json: string, size: number | undefined) =>
    finite(size) && size >= 0 ? size : utf8Length(json) + utf8Length(input.id) + utf8Length(input.event) + (input.sender !== undefined ? utf8Length(input.sender) : 0) + 16

  const writeBatch = async (channel: string, batch: Pending[]): Promise<AppendResult[]> => {
    const last = batch.at(-1)!
    const now = Math.round(Math.max(...batch.map((p) => p.options.now)))
    const description = describe(channel, batch[0]!.input.sender)
    let purge: { low: number; purged: number; epoch: string } | undefined
    // Read committed (whatever the database's default): after waiting for another node's batch on
    // the channel's row, the next statements see what that batch committed (its keys, its rows).
    const out = await db.transaction().setIsolationLevel('read committed').execute(async (trx) => {
      // Locks the channel's row: appends of other processes to this channel wait here.
      const head = await sql<{ epoch: string | null; top: unknown; low: unknown; bytes: unknown }>`
        INSERT INTO ${t.channels} AS c (name, kind, scope, entity, entity_id, created_by, created_at, last_activity, metadata, epoch)
        VALUES (${channel}, ${description.kind ?? null}, ${description.scope ?? null}, ${description.entity ?? null}, ${description.entityId ?? null},
          ${description.createdBy ?? null}, ${now}, ${now}, ${JSON.stringify(description.metadata ?? {})}::jsonb,
          (SELECT identity FROM ${t.store} WHERE id = 1) || '.' || ${nameHash(channel)})
        ON CONFLICT (name) DO UPDATE SET last_activity = GREATEST(c.last_activity, EXCLUDED.last_activity)
        RETURNING c.epoch, c.top, c.low, c.bytes`.execute(trx)
      const state = head.rows[0]!
      const epoch = state.epoch!
      const top = num(state.top)
      const low = num(state.low)

      // Idempotency: keys seen within their window answer the earlier message.
      const keys = [...new Set(batch.map((p) => p.options.idempotencyKey).filter((k): k is string => k !== undefined))]
      const known = new Map<string, { seq: number; id: string; event: string; sender: string | null; ts: number; at: number; revises: string | null }>()
      if (keys.length > 0) {
        const { rows } = await sql<{ key: string; seq: unknown; id: string; event: string; sender: string | null; ts: unknown; at: unknown; revises: string | null }>`
          SELECT key, seq, id, event, sender, ts, at, revises FROM ${t.idempotency} WHERE channel = ${channel} AND key = ANY(${keys}::text[])`.execute(trx)
        for (const r of rows) known.set(r.key, { seq: num(r.seq), id: r.id, event: r.event, sender: r.sender, ts: num(r.ts), at: num(r.at), revises: r.revises })
      }
      const results: Array<AppendResult | { duplicateOf: number }> = []
      const fresh: Array<{ p: Pending; seq: number }> = []
      const firstInBatch = new Map<string, number>()
      let next = top
      for (const p of batch) {
        const key = p.options.idempotencyKey
        if (key !== undefined) {
          const window = p.options.dedupWindowMs ?? DEFAULT_WINDOW
          const seen = known.get(key)
          if (seen && p.options.now - seen.at < window) {
            results.push({ duplicateOf: seen.seq })
            continue
          }
        }
        const seq = ++next
        fresh.push({ p, seq })
        if (key !== undefined) {
          known.set(key, { seq, id: p.input.id, event: p.input.event, sender: p.input.sender ?? null, ts: p.input.timestamp, at: p.options.now, revises: revisesColumn(p.input.revises) })
          firstInBatch.set(key, seq)
        }
        results.push({
          message: {
            ...toMessage(channel, { seq, id: p.input.id, event: p.input.event, data: null, data_json: p.json, sender: p.input.sender ?? null, ts: p.input.timestamp, exclude: null, revises: revisesColumn(p.input.revises) }),
            ...(p.input.exclude !== undefined ? { exclude: JSON.parse(JSON.stringify(p.input.exclude)) } : {}),
          },
          epoch,
          duplicate: false,
        })
      }

      const retention: Retention = last.options.retention
      let newLow = low
      if (fresh.length > 0) {
        const jsonb = (p: Pending) => (jsonbRefuses(p.json) ? null : p.json)
        const cols = {
          seq: fresh.map((f) => f.seq),
          id: fresh.map((f) => f.p.input.id),
          event: fresh.map((f) => f.p.input.event),
          data: fresh.map((f) => jsonb(f.p)),
          dataJson: fresh.map((f) => (jsonb(f.p) === null ? f.p.json : null)),
          sender: fresh.map((f) => f.p.input.sender ?? null),
          ts: fresh.map((f) => f.p.input.timestamp),
          exclude: fresh.map((f) => (f.p.input.exclude !== undefined ? JSON.stringify(f.p.input.exclude) : null)),
          revises: fresh.map((f) => revisesColumn(f.p.input.revises)),
          key: fresh.map((f) => f.p.options.idempotencyKey ?? null),
          size: fresh.map((f) => Math.round(f.p.size)),
          expires: fresh.map((f) => (finite(f.p.options.retention.maxAgeMs) ? Math.round(f.p.options.now + f.p.options.retention.maxAgeMs) : null)),
        }
        // The messages and their idempotency keys in one statement.
        const keyRows = [...firstInBatch].map(([key]) => ({ key, ...known.get(key)! }))
        const keysInsert =
          keyRows.length > 0
            ? sql`WITH k AS (
                INSERT INTO ${t.idempotency} AS k (channel, key, seq, id, event, sender, ts, at, revises)
                SELECT ${channel}, u.key, u.seq, u.id, u.event, u.sender, u.ts, u.at, u.revises
                FROM unnest(${keyRows.map((r) => r.key)}::text[], ${keyRows.map((r) => r.seq)}::bigint[], ${keyRows.map((r) => r.id)}::text[], ${keyRows.map((r) => r.event)}::text[],
                  ${keyRows.map((r) => r.sender)}::text[], ${keyRows.map((r) => r.ts)}::float8[], ${keyRows.map((r) => Math.round(r.at))}::bigint[],
                  ${keyRows.map((r) => r.revises)}::text[]) AS u(key, seq, id, event, sender, ts, at, revises)
                ON CONFLICT (channel, key) DO UPDATE SET seq = EXCLUDED.seq, id = EXCLUDED.id, event = EXCLUDED.event, sender = EXCLUDED.sender, ts = EXCLUDED.ts, at = EXCLUDED.at,
                  revises = EXCLUDED.revises)`
            : sql``
        await sql`${keysInsert}
          INSERT INTO ${t.messages} (channel, seq, epoch, id, event, data, data_json, sender, ts, exclude, idempotency_key, size, expires_at, revises)
          SELECT ${channel}, u.seq, ${epoch}, u.id, u.event, u.data::jsonb, u.data_json, u.sender, u.ts, u.exclude, u.key, u.size, u.expires, u.revises
          FROM unnest(${cols.seq}::bigint[], ${cols.id}::text[], ${cols.event}::text[], ${cols.data}::text[], ${cols.dataJson}::text[], ${cols.sender}::text[],
            ${cols.ts}::float8[], ${cols.exclude}::text[], ${cols.key}::text[], ${cols.size}::bigint[], ${cols.expires}::bigint[], ${cols.revises}::text[])
            AS u(seq, id, event, data, data_json, sender, ts, exclude, key, size, expires, revises)`.execute(trx)

        // Retention of the channel (the last append's), once per batch, in one statement: the new
        // low end (count in JS; age and bytes from the rows), the rows it drops (deleted, or left
        // for the sweep to archive) and the channel's row.
        const newTop = next
        const added = cols.size.reduce((a, b) => a + b, 0)
        const bytes = num(state.bytes) + added
        const floor = Math.max(low, finite(retention.maxCount) ? newTop - Math.max(0, retention.maxCount) : low)
        const cutoff = finite(retention.maxAgeMs) ? last.options.now - retention.maxAgeMs : undefined
        const maxBytes = finite(retention.maxBytes) ? retention.maxBytes : undefined
        const byAge =
          cutoff !== undefined && floor < newTop
            ? sql`coalesce((SELECT seq - 1 FROM ${t.messages} WHERE channel = ${channel} AND seq > ${floor} AND ts >= ${cutoff}::float8 ORDER BY seq LIMIT 1), ${newTop}::bigint)`
            : sql`0::bigint`
        const byBytes =
          maxBytes !== undefined && bytes > maxBytes && floor < newTop
            ? sql`coalesce((SELECT w.seq FROM (SELECT seq, sum(size) OVER (ORDER BY seq DESC) AS cum FROM ${t.messages} WHERE channel = ${channel} AND seq > ${floor}) w
                WHERE w.cum > ${maxBytes} ORDER BY w.seq DESC LIMIT 1), 0::bigint)`
            : sql`0::bigint`
        // Rows retention drops stay until the purge (or the sweep, with an archive hook) deletes
        // them, off the append path; their bytes leave the channel's count now.
        const updated = await sql<{ low: unknown; purged: unknown }>`
          WITH nl AS (SELECT GREATEST(${floor}::bigint, ${byAge}, ${byBytes}) AS low),
          d AS (SELECT size FROM ${t.messages} WHERE channel = ${channel} AND seq > ${low} AND seq <= (SELECT low FROM nl))
          UPDATE ${t.channels} SET top = ${newTop}, low = (SELECT low FROM nl), bytes = ${bytes}::bigint - (SELECT coalesce(sum(size), 0) FROM d),
            max_count = ${finite(retention.maxCount) ? retention.maxCount : null}, max_age_ms = ${cutoff !== undefined ? retention.maxAgeMs : null},
            max_bytes = ${maxBytes ?? null}
          WHERE name = ${channel} RETURNING low, purged`.execute(trx)
        purge = { low: num(updated.rows[0]?.low), purged: num(updated.rows[0]?.purged), epoch }
        newLow = num(updated.rows[0]?.low)
      }

      // Duplicates answer the earlier message: whole while the log holds it, without data once dropped.
      const dupSeqs = [...new Set(results.flatMap((r) => ('duplicateOf' in r ? [r.duplicateOf] : [])))]
      const held = new Map<number, StoredMessage>()
      if (dupSeqs.length > 0) {
        const { rows } = await sql<MessageRow>`SELECT ${MESSAGE_COLUMNS} FROM ${t.messages} WHERE channel = ${channel} AND seq = ANY(${dupSeqs}::bigint[]) AND seq > ${newLow}`.execute(trx)
        for (const r of rows) held.set(Number(r.seq), toMessage(channel, r))
      }
      const bySeq = new Map<number, StoredMessage>()
      for (const r of results) if (!('duplicateOf' in r)) bySeq.set(r.message.offset, r.message)
      const slim = (seq: number): StoredMessage => {
        const k = [...known.values()].find((v) => v.seq === seq)
        return k
          ? { offset: seq, id: k.id, channel, event: k.event, data: undefined, ...(k.sender !== null ? { sender: k.sender } : {}), timestamp: k.ts, ...(k.revises !== null ? { revises: JSON.parse(k.revises) } : {}) }
          : { offset: seq, id: '', channel, event: '', data: undefined, timestamp: 0 }
      }
      return results.map((r) => ('duplicateOf' in r ? { message: held.get(r.duplicateOf) ?? bySeq.get(r.duplicateOf) ?? slim(r.duplicateOf), epoch, duplicate: true } : r))
    })
    const p = purge as { low: number; purged: number; epoch: string } | undefined
    if (p && !archive && p.low - p.purged >= purgeEvery) schedulePurge(channel, p.low, p.epoch)
    if (budget !== undefined && p) await trimToBudget()
    return out
  }

  /**
   * The store-wide byte budget: while the retained messages of all channels hold more than
   * `maxBytes`, the oldest (by timestamp) go first, each channel's `low` moving past them (retention:
   * epochs unchanged). One trim at a time per store; each channel row is updated on its own, so
   * it never waits on two channel locks at once.
   */
  let trimming: Promise<void> = Promise.resolve()
  const trimToBudget = (): Promise<void> => {
    const run = async () => {
      {
        for (let round = 0; round < 100; round++) {
          const { rows: total } = await sql<{ bytes: unknown }>`SELECT coalesce(sum(bytes), 0) AS bytes FROM ${t.channels}`.execute(db)
          let excess = num(total[0]?.bytes) - budget!
          if (excess <= 0) return
          const { rows } = await sql<{ channel: string; seq: unknown; size: unknown }>`
            SELECT m.channel, m.seq, m.size FROM ${t.messages} m JOIN ${t.channels} c ON c.name = m.channel AND m.seq > c.low
            ORDER BY m.ts, m.channel, m.seq LIMIT 1000`.execute(db)
          if (rows.length === 0) return
          const upTo = new Map<string, number>()
          for (const r of rows) {
            if (excess <= 0) break
            upTo.set(r.channel, Math.max(upTo.get(r.channel) ?? 0, num(r.seq)))
            excess -= num(r.size)
          }
          for (const [channel, seq] of [...upTo].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
            await sql`UPDATE ${t.channels} AS c SET low = GREATEST(c.low, ${seq}::bigint),
                bytes = GREATEST(0, c.bytes - (SELECT coalesce(sum(size), 0) FROM ${t.messages} m WHERE m.channel = ${channel} AND m.seq > c.low AND m.seq <= ${seq}))
              WHERE c.name = ${channel}`.execute(db)
          }
        }
      }
    }
    // After the trims already asked for (each sees the batches committed before it started).
    const next = trimming.then(run, run)
    trimming = next.catch(() => {})
    return next
  }

  /** Deletes the rows retention dropped from a channel, outside the append path (one purge per channel at a time). */
  const purging = new Set<string>()
  const schedulePurge = (channel: string, low: number, epoch: string) => {
    if (purging.has(channel) || life.closed) return
    purging.add(channel)
    const done: Promise<void> = (async () => {
      await sql`DELETE FROM ${t.messages} WHERE channel = ${channel} AND seq <= ${low} AND epoch = ${epoch}`.execute(db)
      await sql`UPDATE ${t.channels} SET purged = GREATEST(purged, ${low}::bigint) WHERE name = ${channel} AND epoch = ${epoch}`.execute(db)
    })()
      .catch(onError)
      .finally(() => {
        purging.delete(channel)
        inFlight.delete(done)
      })
    inFlight.add(done)
  }

  const flush = async (channel: string, queue: ChannelQueue) => {
    try {
      await ready
    } catch (error) {
      for (const p of queue.pending.splice(0)) p.reject(error)
    }
    while (queue.pending.length > 0) {
      const batch = queue.pending.splice(0, maxBatch)
      try {
        const results = await writeBatch(channel, batch)
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
    let json: string
    try {
      json = JSON.stringify(input.data) ?? 'null'
    } catch (error) {
      return Promise.reject(error)
    }
    return new Promise<AppendResult>((resolve, reject) => {
      let queue = queues.get(channel)
      if (!queue) {
        queue = { pending: [], running: false }
        queues.set(channel, queue)
      }
      queue.pending.push({ input: { ...input }, options: opts, json, size: measure(input, json, opts.size), resolve, reject })
      if (!queue.running) {
        queue.running = true
        const q = queue
        const done = flush(channel, q).finally(() => inFlight.delete(done))
        inFlight.add(done)
      }
    })
  }

  // ------------------------------------------------------------------ reads

  const read = async (channel: string, opts: ReadOptions): Promise<ReadResult> => {
    await ready
    const state = await channelState(channel, opts.now)
    if (state.epoch === null) return { epoch: emptyEpoch(state.identity, channel), messages: [], top: 0, complete: true }
    const top = num(state.top)
    let low = num(state.low)
    if (state.max_age_ms !== null) low = Math.max(low, state.first_live === null ? top : num(state.first_live) - 1)
    const after = Number.isFinite(opts.after) ? Math.max(0, Math.floor(opts.after)) : 0
    const complete = after >= top || after >= low
    const from = Math.max(after, low)
    // An infinite limit (every message) is no LIMIT.
    const limit = Number.isFinite(opts.limit) ? Math.max(0, Math.floor(opts.limit)) : opts.limit > 0 ? null : 0
    if (from >= top || limit === 0) return { epoch: state.epoch, messages: [], top, complete }
    const { rows } = await sql<MessageRow>`SELECT ${MESSAGE_COLUMNS} FROM ${t.messages} WHERE channel = ${channel} AND seq > ${from} AND seq <= ${top} ORDER BY seq LIMIT ${limit}`.execute(db)
    return { epoch: state.epoch, messages: rows.map((r) => toMessage(channel, r)), top, complete }
  }

  const position = async (channel: string): Promise<StreamPosition> => {
    await ready
    const state = await channelState(channel)
    return state.epoch === null ? { epoch: emptyEpoch(state.identity, channel), offset: 0 } : { epoch: state.epoch, offset: num(state.top) }
  }

  const cursor = async (channel: string, consumer: string): Promise<ConsumerCursor | undefined> => {
    await ready
    const { rows } = await sql<{ last_seen_offset: unknown; epoch: string | null }>`
      SELECT last_seen_offset, epoch FROM ${t.subscriptions} WHERE channel = ${channel} AND user_id = ${consumer}`.execute(db)
    const row = rows[0]
    return row && row.epoch !== null ? { offset: num(row.last_seen_offset), epoch: row.epoch } : undefined
  }

  const commit = async (channel: string, consumer: string, offset: number): Promise<void> => {
    await ready
    const now = Math.round(wallClock())
    await sql`
      INSERT INTO ${t.subscriptions} AS s (channel, user_id, last_seen_offset, epoch, status, subscribed_at, updated_at)
      SELECT c.name, ${consumer}, GREATEST(LEAST(${Math.floor(offset)}::bigint, c.top), 0), c.epoch, 'active', ${now}, ${now} FROM ${t.channels} c WHERE c.name = ${channel}
      ON CONFLICT (channel, user_id) DO UPDATE SET
        last_seen_offset = CASE WHEN s.epoch IS NOT DISTINCT FROM EXCLUDED.epoch THEN GREATEST(s.last_seen_offset, EXCLUDED.last_seen_offset) ELSE EXCLUDED.last_seen_offset END,
        epoch = EXCLUDED.epoch, updated_at = EXCLUDED.updated_at`.execute(db)
  }

  const cursors = async (channel: string): Promise<Record<string, number>> => {
    await ready
    const { rows } = await sql<{ user_id: string; last_seen_offset: unknown }>`
      SELECT s.user_id, s.last_seen_offset FROM ${t.subscriptions} s JOIN ${t.channels} c ON c.name = s.channel AND c.epoch = s.epoch WHERE s.channel = ${channel}`.execute(db)
    const out: Record<string, number> = {}
    for (const r of rows) out[r.user_id] = num(r.last_seen_offset)
    return out
  }

  // ------------------------------------------------------------------ what a database adds

  const stats = async () => {
    await ready
    const { rows } = await sql<{ channels: unknown; bytes: unknown; messages: unknown }>`
      SELECT (SELECT count(*) FROM ${t.channels}) AS channels, (SELECT coalesce(sum(bytes), 0) FROM ${t.channels}) AS bytes,
        (SELECT coalesce(sum(top - low), 0) FROM ${t.channels}) AS messages`.execute(db)
    const r = rows[0]!
    return { channels: num(r.channels), bytes: num(r.bytes), messages: num(r.messages) }
  }

  const reset = async () => {
    await ready
    await db.transaction().execute(async (trx) => {
      await sql`TRUNCATE ${t.messages}, ${t.channels}, ${t.idempotency}, ${t.receipts}`.execute(trx)
      await sql`INSERT INTO ${t.store} (id, identity, created_at) VALUES (1, ${newIdentity()}, ${Date.now()})
        ON CONFLICT (id) DO UPDATE SET identity = EXCLUDED.identity, created_at = EXCLUDED.created_at`.execute(trx)
    })
  }

  const sweep = async (at?: number): Promise<SweepResult> => {
    await ready
    const now = Math.round(at ?? wallClock())
    let deleted = 0
    let archived = 0
    // Age: move the retained range of each channel past what expired (a prefix, as reads see it),
    // one channel at a time under its row lock, so a concurrent append is never cut.
    const { rows: aged } = await sql<{ name: string }>`
      SELECT c.name FROM ${t.channels} c
      WHERE c.max_age_ms IS NOT NULL AND c.top > c.low
        AND (SELECT m.ts FROM ${t.messages} m WHERE m.channel = c.name AND m.seq > c.low ORDER BY m.seq LIMIT 1) < ${now}::float8 - c.max_age_ms`.execute(db)
    for (const { name } of aged) {
      await db.transaction().execute(async (trx) => {
        const { rows } = await sql<{ top: unknown; low: unknown; max_age_ms: unknown }>`SELECT top, low, max_age_ms FROM ${t.channels} WHERE name = ${name} FOR UPDATE`.execute(trx)
        const c = rows[0]
        if (!c || c.max_age_ms === null) return
        const low = num(c.low)
        const top = num(c.top)
        const first = await sql<{ seq: unknown }>`SELECT seq FROM ${t.messages} WHERE channel = ${name} AND seq > ${low} AND ts >= ${now - num(c.max_age_ms)}::float8 ORDER BY seq LIMIT 1`.execute(trx)
        const newLow = first.rows[0] ? num(first.rows[0].seq) - 1 : top
        if (newLow <= low) return
        await sql`UPDATE ${t.channels} SET low = ${newLow}, bytes = GREATEST(0, bytes - (SELECT coalesce(sum(size), 0) FROM ${t.messages} WHERE channel = ${name} AND seq > ${low} AND seq <= ${newLow}))
          WHERE name = ${name}`.execute(trx)
      })
    }
    // Rows below each channel's retained range: archived (when asked, oldest first, in pages), then
    // deleted. Their bytes were retired when `low` passed them.
    const { rows: behind } = await sql<{ name: string; low: unknown; purged: unknown; epoch: string }>`
      SELECT name, low, purged, epoch FROM ${t.channels} WHERE low > purged ORDER BY name`.execute(db)
    for (const c of behind) {
      const low = num(c.low)
      let from = num(c.purged)
      while (from < low) {
        let upTo = low
        if (archive) {
          const { rows } = await sql<MessageRow>`SELECT ${MESSAGE_COLUMNS} FROM ${t.messages}
            WHERE channel = ${c.name} AND seq > ${from} AND seq <= ${low} AND epoch = ${c.epoch} ORDER BY seq LIMIT 1000`.execute(db)
          if (rows.length > 0) {
            await archive(c.name, rows.map((r) => toMessage(c.name, r)))
            archived += rows.length
          }
          if (rows.length === 1000) upTo = Number(rows.at(-1)!.seq)
        }
        const r = await sql`DELETE FROM ${t.messages} WHERE channel = ${c.name} AND seq > ${from} AND seq <= ${upTo} AND epoch = ${c.epoch}`.execute(db)
        deleted += Number(r.numAffectedRows ?? 0)
        await sql`UPDATE ${t.channels} SET purged = GREATEST(purged, ${upTo}::bigint) WHERE name = ${c.name} AND epoch = ${c.epoch}`.execute(db)
        from = upTo
      }
    }
    const keys = await sql`DELETE FROM ${t.idempotency} WHERE at < ${now - keyRetention}::bigint`.execute(db)
    return { deleted, archived, keys: Number(keys.numAffectedRows ?? 0) }
  }

  const { messageRow, revise, eraseUser, search, setStatus, channelsOf, receiptsUpsert, receipts } = createRecords({ db, t, ready, searchConfig, describe, wallClock })

  // ------------------------------------------------------------------ lifecycle

  const life = storeLifecycle({ intervalMs: options.sweepIntervalMs, sweep: () => sweep(), onError, inFlight, ready, release: () => conn.close() })
  const close = () => life.close()

  const nowOf = (o?: { now?: number | undefined }) => Math.round(o?.now ?? wallClock())

  return {
    db,
    ready,
    append,
    read,
    position,
    cursor,
    commit,
    cursors,
    stats,
    reset,
    sweep,
    message: messageRow,
    revise: (channel, offset, revision, o) => revise(channel, offset, revision, nowOf(o)),
    eraseUser,
    search: (channel, query, o) => search(channel, query, { limit: o?.limit, before: o?.before, now: nowOf(o) }),
    join: (channel, userId, o) => setStatus(channel, userId, 'active', nowOf(o)),
    leave: (channel, userId, o) => setStatus(channel, userId, 'left', nowOf(o)),
    channelsOf,
    markDelivered: (channel, offsets, userId, o) => receiptsUpsert(channel, offsets, userId, nowOf(o), false),
    markRead: (channel, offsets, userId, o) => receiptsUpsert(channel, offsets, userId, nowOf(o), true),
    receipts,
    close,
  }
}

/**
 * The embedded default: a SQL store on PGlite (PostgreSQL in the process, no server). With a
 * `dataDir` the history survives a restart; without one it lives in memory.
 */
export function createPGliteStore(options: Omit<SqlStoreOptions, 'db'> & { readonly dataDir?: string | undefined } = {}): SqlStore {
  const { dataDir, ...rest } = options
  return createSqlStore({ ...rest, db: { pglite: dataDir ?? 'memory://' } })
}
