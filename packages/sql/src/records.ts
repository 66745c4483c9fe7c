import type { StoredMessage } from '@tidings/core'
import { type Kysely, sql } from 'kysely'
import type { tables } from './names.js'
import { type MessageRow, NUL, num, toMessage } from './rows.js'
import type { ChannelDescription, EraseResult, MessageVersion, Receipt, UserChannel } from './store.js'

/**
 * What the SQL store keeps beside the message log, and what it does to single messages: edits
 * and deletes with versions, erasure of one user (GDPR), full-text search, the per-user channel
 * list (seed 002) and per-message receipts. Each waits for the store's migrations (`ready`).
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

export function createRecords({ db, t, ready, searchConfig, describe, wallClock }: RecordsContext) {
  const messageRow = async (channel: string, offset: number) => {
    await ready
    const { rows } = await sql<MessageRow & { version: unknown; edited_at: unknown; deleted_at: unknown }>`
      SELECT ${sql.raw('m.seq, m.id, m.event, m.data, m.data_json, m.sender, m.ts, m.exclude, m.version, m.edited_at, m.deleted_at')}
      FROM ${t.messages} m JOIN ${t.channels} c ON c.name = m.channel WHERE m.channel = ${channel} AND m.seq = ${offset} AND m.seq > c.low`.execute(db)
    const r = rows[0]
    if (!r) return undefined
    return { ...toMessage(channel, r), version: num(r.version), editedAt: r.edited_at === null ? null : num(r.edited_at), deletedAt: r.deleted_at === null ? null : num(r.deleted_at) }
  }

  const change = async (channel: string, offset: number, data: unknown, now: number, remove: boolean): Promise<MessageVersion | undefined> => {
    await ready
    const json = remove ? null : (JSON.stringify(data) ?? 'null')
    const jsonb = json !== null && !json.includes(NUL) ? json : null
    const { rows } = await sql<{ version: unknown; edited_at: unknown; deleted_at: unknown }>`
      UPDATE ${t.messages} m SET data = ${jsonb}::jsonb, data_json = ${json !== null && jsonb === null ? json : null}, version = m.version + 1,
        ${remove ? sql`deleted_at = ${now}` : sql`edited_at = ${now}`}
      FROM ${t.channels} c
      WHERE m.channel = ${channel} AND m.seq = ${offset} AND c.name = m.channel AND m.seq > c.low AND m.deleted_at IS NULL
      RETURNING m.version, m.edited_at, m.deleted_at`.execute(db)
    const r = rows[0]
    if (!r) return undefined
    return {
      channel,
      offset,
      version: num(r.version),
      data: remove ? null : JSON.parse(json!),
      editedAt: r.edited_at === null ? null : num(r.edited_at),
      deletedAt: r.deleted_at === null ? null : num(r.deleted_at),
    }
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
      const subscriptions = count(await sql`DELETE FROM ${t.subscriptions} WHERE user_id = ${userId}`.execute(trx))
      const keys = count(await sql`DELETE FROM ${t.idempotency} WHERE sender = ${userId}`.execute(trx))
      const channels = count(await sql`UPDATE ${t.channels} SET created_by = NULL WHERE created_by = ${userId}`.execute(trx))
      return { messages, receipts, subscriptions, keys, channels }
    })
  }

  const search = async (channel: string, query: string, o: { limit?: number | undefined; before?: number | undefined } = {}): Promise<StoredMessage[]> => {
    await ready
    const config = sql.lit(searchConfig)
    const limit = Math.max(1, Math.min(1_000, Math.floor(o.limit ?? 50)))
    const { rows } = await sql<MessageRow>`
      SELECT ${sql.raw('m.seq, m.id, m.event, m.data, m.data_json, m.sender, m.ts, m.exclude')}
      FROM ${t.messages} m JOIN ${t.channels} c ON c.name = m.channel
      WHERE m.channel = ${channel} AND m.seq > c.low AND m.deleted_at IS NULL AND m.data IS NOT NULL
        ${o.before !== undefined ? sql`AND m.seq < ${o.before}` : sql``}
        AND jsonb_to_tsvector(${config}::regconfig, m.data, '["string"]'::jsonb) @@ websearch_to_tsquery(${config}::regconfig, ${query})
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

  return { messageRow, change, eraseUser, search, setStatus, channelsOf, receiptsUpsert, receipts }
}
