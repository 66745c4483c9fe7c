import { RealtimeError, type Revision, type ReviseResult, type StoredMessage, searchWords } from '@tidings/core'
import { type Kysely, type RawBuilder, sql } from 'kysely'
import type { tables } from './names.js'
import { M_MESSAGE_COLUMNS, type MessageRow, jsonbRefuses, num, toMessage } from './rows.js'
import type { ChannelDescription, EraseResult, MessageVersion, Receipt, UserChannel } from './store.js'

/**
 * What the SQL store keeps beside the message log, and what it does to single messages: revisions
 * (the port's `revise`: edits and deletes with versions), erasure of one user (GDPR), full-text
 * search, the per-user channel list (seed 002) and per-message receipts. Each waits for the
 * store's migrations (`ready`).
 */
export interface RecordsContext {
  readonly db: Kysely<any>
  readonly t: ReturnType<typeof tables>
  readonly ready: Promise<void>
  /** A PostgreSQL text search configuration name, checked by the store. */
  readonly searchConfig: string
  readonly describe: (name: string, firstSender: string | undefined) => ChannelDescription
  readonly wallClock: () => number
}

/** Offsets one search looks at, at most (older ones: page on with `before`), as the memory and Redis stores. */
const SEARCH_SCAN = 10_000
/**
 * Messages larger than this (bytes, as measured at append) are not searched: PostgreSQL refuses a
 * text whose distinct words pass 1 MB (`string is too long for tsvector`), which would fail every
 * search of the channel.
 */
export const SEARCH_MAX_MESSAGE_BYTES = 512 * 1024
/** Words of one query at most (a longer query is refused: PostgreSQL's tsquery has a size limit). */
const SEARCH_MAX_WORDS = 1_000
/** PostgreSQL indexes no word longer than this: a query holding one matches nothing. */
const LONGEST_INDEXED_WORD = 2_047

export function createRecords({ db, t, ready, searchConfig, describe, wallClock }: RecordsContext) {
  /**
   * `l.low`: the channel's retained range at `now` starts after it (`c` the channel's row): its
   * `low`, moved past the prefix of messages expired by age, as `read` computes it. A LATERAL
   * item beside `c`, so it is computed once per query, not once per message row.
   */
  const liveLow = (now: number): RawBuilder<unknown> =>
    sql`CROSS JOIN LATERAL (SELECT CASE WHEN c.max_age_ms IS NULL THEN c.low ELSE GREATEST(c.low, coalesce((SELECT f.seq - 1 FROM ${t.messages} f
      WHERE f.channel = c.name AND f.seq > c.low AND f.ts >= ${now}::float8 - c.max_age_ms ORDER BY f.seq LIMIT 1), c.top)) END AS low) l`

  const messageRow = async (channel: string, offset: number): Promise<MessageVersion | undefined> => {
    await ready
    const { rows } = await sql<MessageRow & { version: unknown; edited_at: unknown; deleted_at: unknown }>`
      SELECT ${M_MESSAGE_COLUMNS}, m.edited_at
      FROM ${t.messages} m JOIN ${t.channels} c ON c.name = m.channel WHERE m.channel = ${channel} AND m.seq = ${offset} AND m.seq > c.low`.execute(db)
    const r = rows[0]
    if (!r) return undefined
    return { ...toMessage(channel, r), version: num(r.version), editedAt: r.edited_at === null ? null : num(r.edited_at), deletedAt: r.deleted_at === null ? null : num(r.deleted_at) }
  }

  /**
   * The port's `revise`: one UPDATE of the retained, undeleted row, `version = version + 1` (the
   * row lock orders concurrent revisions: each gets its own version). Sizes, bytes and the epoch
   * are not touched. The data is taken as JSON now, so later changes to the caller's object change nothing.
   */
  const revise = async (channel: string, offset: number, revision: Revision, now: number): Promise<ReviseResult | undefined> => {
    await ready
    if (!Number.isSafeInteger(offset) || offset < 1) return undefined
    const remove = revision.deleted === true
    const json = remove ? null : (JSON.stringify(revision.data) ?? 'null')
    const jsonb = json !== null && !jsonbRefuses(json) ? json : null
    const { rows } = await sql<MessageRow>`
      UPDATE ${t.messages} m SET data = ${jsonb}::jsonb, data_json = ${json !== null && jsonb === null ? json : null}, version = m.version + 1,
        ${remove ? sql`deleted_at = ${now}::bigint` : sql`edited_at = ${now}::bigint`}
      FROM ${t.channels} c ${liveLow(now)}
      WHERE m.channel = ${channel} AND m.seq = ${offset}::bigint AND c.name = ${channel} AND m.seq > l.low AND m.seq <= c.top AND m.deleted_at IS NULL
      RETURNING ${M_MESSAGE_COLUMNS}`.execute(db)
    const r = rows[0]
    if (!r) return undefined
    return { message: { ...toMessage(channel, r), version: num(r.version) } }
  }

  const eraseUser = async (userId: string, o: { mode?: 'redact' | 'delete' | undefined; now?: number | undefined } = {}): Promise<EraseResult> => {
    await ready
    const now = Math.round(o.now ?? wallClock())
    return db.transaction().execute(async (trx) => {
      const count = (r: { numAffectedRows?: bigint | undefined }) => Number(r.numAffectedRows ?? 0)
      let messages: number
      if (o.mode === 'delete') {
        const r = await sql<{ n: unknown }>`
          WITH d AS (DELETE FROM ${t.messages} m USING ${t.channels} c WHERE m.sender = ${userId} AND c.name = m.channel RETURNING m.channel, m.size, m.seq > c.low AS retained),
          per AS (SELECT channel, sum(size) FILTER (WHERE retained) AS size FROM d GROUP BY channel),
          u AS (UPDATE ${t.channels} c SET bytes = GREATEST(0, c.bytes - coalesce(per.size, 0)) FROM per WHERE c.name = per.channel)
          SELECT count(*) AS n FROM d`.execute(trx)
        messages = num(r.rows[0]?.n)
      } else {
        const r = await sql`UPDATE ${t.messages} SET data = NULL, data_json = NULL, sender = NULL, exclude = NULL, idempotency_key = NULL, version = version + 1, deleted_at = coalesce(deleted_at, ${now})
          WHERE sender = ${userId}`.execute(trx)
        messages = count(r)
      }
      const receipts = count(await sql`DELETE FROM ${t.receipts} WHERE user_id = ${userId}`.execute(trx))
      const cursors = count(await sql`DELETE FROM ${t.subscriptions} WHERE user_id = ${userId}`.execute(trx))
      const keys = count(await sql`DELETE FROM ${t.idempotency} WHERE sender = ${userId}`.execute(trx))
      const channels = count(await sql`UPDATE ${t.channels} SET created_by = NULL WHERE created_by = ${userId}`.execute(trx))
      return { messages, cursors, keys, receipts, channels }
    })
  }

  /**
   * The port's `search` (at most the newest SEARCH_SCAN offsets below `before`: the work of one
   * client request stays bounded without an index): messages as they are now (never deleted ones nor revision events), among
   * those a read at `now` would return (retention and age), newest first.
   */
  const search = async (channel: string, query: string, o: { limit?: number | undefined; before?: number | undefined; now: number }): Promise<StoredMessage[]> => {
    await ready
    const config = sql.lit(searchConfig)
    const limit = Math.min(1_000, Math.floor(o.limit ?? 50))
    if (!(limit >= 1)) return []
    const before = o.before !== undefined && Number.isFinite(o.before) ? Math.ceil(o.before) : undefined
    // Words, never operators: the query's words (as every store splits them) joined with AND by
    // plainto_tsquery, so `-word`, `or` and quotes are words like any other. PostgreSQL folds the
    // case of the data (and of the query) by the database's locale, which under `C` leaves letters
    // beyond ASCII alone: so the words as given, and lower-cased as every store folds them, each
    // find a message ("école" finds "école"; "ÉCOLE" finds "ÉCOLE" too).
    const words = searchWords(String(query), { fold: false })
    if (words.length === 0 || words.some((w) => w.length > LONGEST_INDEXED_WORD)) return []
    if (words.length > SEARCH_MAX_WORDS) throw new RealtimeError('RT_007', `a search query has at most ${SEARCH_MAX_WORDS} words`)
    const given = words.join(' ')
    const folded = searchWords(given).join(' ')
    const { rows } = await sql<MessageRow>`
      SELECT ${M_MESSAGE_COLUMNS}
      FROM ${t.channels} c ${liveLow(o.now)} JOIN ${t.messages} m ON m.channel = c.name
        -- CASE: a message too large to search is never made into a tsvector (AND has no order)
        CROSS JOIN LATERAL (SELECT CASE WHEN m.size <= ${SEARCH_MAX_MESSAGE_BYTES} AND m.data IS NOT NULL
          THEN jsonb_to_tsvector(${config}::regconfig, m.data, '["string"]'::jsonb) ELSE ''::tsvector END AS v) d
      WHERE c.name = ${channel} AND m.seq > l.low AND m.seq <= c.top AND m.deleted_at IS NULL AND m.revises IS NULL AND m.data IS NOT NULL
        ${before !== undefined ? sql`AND m.seq < ${before}::bigint` : sql``}
        AND m.seq > ${before !== undefined ? sql`LEAST(${before}::bigint, c.top + 1)` : sql`c.top + 1`} - ${SEARCH_SCAN + 1}
        AND (d.v @@ plainto_tsquery(${config}::regconfig, ${given})${folded !== given ? sql` OR d.v @@ plainto_tsquery(${config}::regconfig, ${folded})` : sql``})
      ORDER BY m.seq DESC LIMIT ${limit}`.execute(db)
    return rows.map((r) => toMessage(channel, r))
  }

  const setStatus = async (channel: string, userId: string, status: 'active' | 'left', now: number) => {
    await ready
    await sql`INSERT INTO ${t.subscriptions} AS s (channel, user_id, last_seen_offset, epoch, status, subscribed_at, updated_at)
      VALUES (${channel}, ${userId}, 0, NULL, ${status}, ${now}, ${now})
      ON CONFLICT (channel, user_id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at`.execute(db)
  }

  const channelsOf = async (userId: string, o: { limit?: number | undefined; includeLeft?: boolean | undefined } = {}): Promise<UserChannel[]> => {
    await ready
    const limit = Math.max(1, Math.min(10_000, Math.floor(o.limit ?? 100)))
    const { rows } = await sql<{ name: string; kind: string | null; active_users: unknown; last_activity: unknown; unread: unknown; status: string; last_seen: unknown; top: unknown }>`
      SELECT s.channel AS name, c.kind, c.last_activity, s.status, coalesce(c.top, 0) AS top,
        CASE WHEN s.epoch = c.epoch THEN s.last_seen_offset ELSE 0 END AS last_seen,
        (SELECT count(*) FROM ${t.subscriptions} a WHERE a.channel = s.channel AND a.status = 'active') AS active_users,
        GREATEST(coalesce(c.top, 0) - GREATEST(CASE WHEN s.epoch = c.epoch THEN s.last_seen_offset ELSE 0 END, coalesce(c.low, 0)), 0) AS unread
      FROM ${t.subscriptions} s LEFT JOIN ${t.channels} c ON c.name = s.channel
      WHERE s.user_id = ${userId} ${o.includeLeft ? sql`` : sql`AND s.status = 'active'`}
      ORDER BY c.last_activity DESC NULLS LAST, s.channel LIMIT ${limit}`.execute(db)
    return rows.map((r) => ({
      name: r.name,
      kind: r.kind ?? describe(r.name, undefined).kind ?? null,
      activeUsers: num(r.active_users),
      lastActivity: r.last_activity === null ? null : num(r.last_activity),
      unread: num(r.unread),
      status: r.status,
      lastSeenOffset: num(r.last_seen),
      top: num(r.top),
    }))
  }

  const receiptsUpsert = async (channel: string, offsets: readonly number[], userId: string, now: number, readToo: boolean) => {
    await ready
    if (offsets.length === 0) return
    await sql`INSERT INTO ${t.receipts} AS r (channel, seq, user_id, delivered_at, read_at)
      SELECT ${channel}, u.seq, ${userId}, ${now}, ${readToo ? sql`${now}::bigint` : sql`NULL::bigint`} FROM unnest(${[...new Set(offsets.map(Math.floor))]}::bigint[]) AS u(seq)
      ON CONFLICT (channel, seq, user_id) DO UPDATE SET delivered_at = coalesce(r.delivered_at, EXCLUDED.delivered_at)
        ${readToo ? sql`, read_at = coalesce(r.read_at, EXCLUDED.read_at)` : sql``}`.execute(db)
  }

  const receipts = async (channel: string, offset: number): Promise<Receipt[]> => {
    await ready
    const { rows } = await sql<{ user_id: string; delivered_at: unknown; read_at: unknown }>`
      SELECT user_id, delivered_at, read_at FROM ${t.receipts} WHERE channel = ${channel} AND seq = ${offset} ORDER BY user_id`.execute(db)
    return rows.map((r) => ({ userId: r.user_id, deliveredAt: r.delivered_at === null ? null : num(r.delivered_at), readAt: r.read_at === null ? null : num(r.read_at) }))
  }

  return { messageRow, revise, eraseUser, search, setStatus, channelsOf, receiptsUpsert, receipts }
}
