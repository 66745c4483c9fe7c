import { createHash } from 'node:crypto'
import { RealtimeError, channelNameSchema, eventNameSchema } from '@tidings/core'
import { type Kysely, sql } from 'kysely'
import { outboxTables } from './migrations/0003_outbox.js'
import { type SchemaContext, schemaContext } from './names.js'

/**
 * Publishing in the app's own transaction (the transactional outbox). See docs/transactions.md.
 *
 * `publish(trx, channel, event, data)` writes one outbox row in the transaction it is given and
 * asks PostgreSQL to NOTIFY the relay, which PostgreSQL only does when (and if) that transaction
 * commits. Nothing else happens in the transaction: the relay (`createOutboxRelay`) moves
 * committed rows to the channel log and the subscribers, in commit order per channel.
 */

/** Where the outbox table lives: the same `schema` and `prefix` as the package's migrations. */
export interface OutboxLocation {
  /** PostgreSQL schema of the outbox. Default: the connection's search path. */
  readonly schema?: string | undefined
  /** Table name prefix. Default `tidings_`. */
  readonly prefix?: string | undefined
}

export interface TxPublishOptions extends OutboxLocation {
  /**
   * The idempotency key the relay publishes with (default `outbox:<txid>:<row id>`). Give your own to
   * fold repeats of one logical event, e.g. a transaction the app retried after a commit whose
   * outcome it could not learn: the hub stores and delivers the first, answers the others as duplicates.
   */
  readonly idempotencyKey?: string | undefined
  /** Shown to recipients as `sender`. */
  readonly sender?: string | undefined
  /**
   * NOTIFY the relay at commit (default true). PostgreSQL serializes the commits of transactions
   * that sent a NOTIFY (one global queue lock); with false the row waits for the relay's poll.
   */
  readonly notify?: boolean | undefined
}

/** The outbox row written. */
export interface TxPublished {
  /** The row's id (insert order); the default idempotency key is `outbox:<txid>:<id>`. */
  readonly id: string
  /** The writing transaction's id (xid8, as text). */
  readonly txid: string
}

/** A `pg` client (or pool client) in a transaction: anything with pg's `query(text, values)`. */
export interface PgQueryable {
  query(text: string, values?: unknown[]): Promise<{ rows: any[] }>
}

/** The NOTIFY channel that wakes the relay of an outbox: `<schema>_<prefix>outbox`, hashed when over 63 bytes. */
export function outboxNotifyChannel(location: OutboxLocation = {}): string {
  const ctx = schemaContext(location)
  const name = `${ctx.schema !== undefined ? `${ctx.schema}_` : ''}${ctx.prefix}outbox`
  return name.length <= 63 ? name : `tidings_outbox_${createHash('sha256').update(name).digest('hex').slice(0, 40)}`
}

const contexts = new Map<string, SchemaContext>()
function context(location: OutboxLocation): SchemaContext {
  const key = `${location.schema ?? ''}\u0000${location.prefix ?? ''}`
  let ctx = contexts.get(key)
  if (!ctx) {
    ctx = schemaContext(location)
    if (contexts.size < 100) contexts.set(key, ctx)
  }
  return ctx
}

interface Prepared {
  readonly channel: string
  readonly event: string
  readonly json: string
  readonly sender: string | null
  readonly key: string | null
  /** The NOTIFY channel, or null for none (pg_notify of NULL is not called: the CASE below). */
  readonly notify: string | null
}

function prepare(channel: string, event: string, data: unknown, options: TxPublishOptions): Prepared {
  // Checked here, inside the app's transaction: a name the hub would refuse fails the call, not the relay later.
  if (typeof channel !== 'string' || !channelNameSchema.safeParse(channel).success) throw new RealtimeError('RT_007', `@tidings/sql publish: invalid channel name '${String(channel).slice(0, 200)}'`)
  if (typeof event !== 'string' || !eventNameSchema.safeParse(event).success) throw new RealtimeError('RT_007', '@tidings/sql publish: event must be a string of 1 to 128 characters')
  // Taken now: later changes to the caller's object change nothing (a throw here, e.g. a BigInt, fails the publish, not the relay).
  const json = JSON.stringify(data ?? null)
  if (options.idempotencyKey !== undefined && (typeof options.idempotencyKey !== 'string' || options.idempotencyKey.length === 0)) throw new RealtimeError('RT_007', '@tidings/sql publish: idempotencyKey must be a non-empty string')
  return { channel, event, json, sender: options.sender ?? null, key: options.idempotencyKey ?? null, notify: options.notify === false ? null : outboxNotifyChannel(options) }
}

/**
 * Publishes `event` on `channel` if and only if the transaction `trx` commits: one outbox row
 * (with the transaction's id) and a NOTIFY that PostgreSQL delivers at commit. Use it inside the
 * app's own Kysely transaction:
 *
 * ```ts
 * await db.transaction().execute(async (trx) => {
 *   await trx.insertInto('orders').values(order).execute()
 *   await publish(trx, 'admin:orders', 'new-order', order)
 * })
 * ```
 *
 * Given a Kysely instance that is not in a transaction, the row commits at once (autocommit).
 * Within one transaction, messages keep the order of the `publish` calls.
 */
export async function publish(trx: Kysely<any>, channel: string, event: string, data?: unknown, options: TxPublishOptions = {}): Promise<TxPublished> {
  const p = prepare(channel, event, data, options)
  const t = outboxTables(context(options))
  const { rows } = await sql<{ id: string; txid: string }>`
    WITH r AS (
      INSERT INTO ${t.outbox} (txid, channel, event, data, sender, idempotency_key)
      VALUES (pg_current_xact_id(), ${p.channel}, ${p.event}, ${p.json}, ${p.sender}, ${p.key})
      RETURNING id, txid)
    SELECT r.id::text AS id, r.txid::text AS txid, CASE WHEN ${p.notify}::text IS NOT NULL THEN pg_notify(${p.notify}::text, '') END AS notified FROM r`.execute(trx)
  const row = rows[0]!
  return { id: row.id, txid: row.txid }
}

const quoteIdent = (s: string) => `"${s.replace(/"/g, '""')}"`
const texts = new Map<string, string>()

/**
 * `publish` for a raw `pg` client inside a transaction the app manages (`BEGIN` … `COMMIT` on
 * that client). Same row, same NOTIFY, same guarantees.
 */
export async function publishWithClient(client: PgQueryable, channel: string, event: string, data?: unknown, options: TxPublishOptions = {}): Promise<TxPublished> {
  const p = prepare(channel, event, data, options)
  const ctx = context(options)
  const cacheKey = `${ctx.schema ?? ''}\u0000${ctx.prefix}`
  let text = texts.get(cacheKey)
  if (text === undefined) {
    const name = (ctx.schema !== undefined ? `${quoteIdent(ctx.schema)}.` : '') + quoteIdent(`${ctx.prefix}outbox`)
    text = `WITH r AS (INSERT INTO ${name} (txid, channel, event, data, sender, idempotency_key) VALUES (pg_current_xact_id(), $1, $2, $3, $4, $5) RETURNING id, txid)
      SELECT r.id::text AS id, r.txid::text AS txid, CASE WHEN $6::text IS NOT NULL THEN pg_notify($6::text, '') END AS notified FROM r`
    if (texts.size < 100) texts.set(cacheKey, text)
  }
  const { rows } = await client.query(text, [p.channel, p.event, p.json, p.sender, p.key, p.notify])
  const row = rows[0] as { id: string; txid: string }
  return { id: row.id, txid: row.txid }
}
