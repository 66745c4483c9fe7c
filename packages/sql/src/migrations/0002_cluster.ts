import { type Kysely, sql } from 'kysely'
import type { Migration } from 'kysely/migration'
import { type SchemaContext, schemaContext } from '../names.js'

/**
 * The tables of the cluster ports on PostgreSQL (the broker's outbox, the presence store).
 * Every statement is idempotent (`IF NOT EXISTS`), so the adapters may also create them on
 * start (`ensureClusterTables`) when the app does not run the migrations itself.
 *
 * - `broker_outbox`: payloads too large for NOTIFY; the notification carries the row's id.
 *   Rows are deleted by any broker once older than its outbox TTL.
 * - `presence`: one row per connection and channel; `seq` orders entries by their last join or
 *   update (ties of `updated_at`).
 * - `presence_nodes`: each node's latest heartbeat.
 * - `presence_seen`: each user's last-seen time.
 */
export interface ClusterTables {
  readonly outbox: string
  readonly presence: string
  readonly nodes: string
  readonly seen: string
  readonly seq: string
}

/** The tables' names as SQL (quoted, schema-qualified when a schema is given). Names are checked by `schemaContext`. */
export function clusterTables(ctx: SchemaContext): ClusterTables {
  const q = (name: string) => (ctx.schema !== undefined ? `"${ctx.schema}"."${ctx.prefix}${name}"` : `"${ctx.prefix}${name}"`)
  return { outbox: q('broker_outbox'), presence: q('presence'), nodes: q('presence_nodes'), seen: q('presence_seen'), seq: q('presence_seq') }
}

export function clusterStatements(ctx: SchemaContext): string[] {
  const t = clusterTables(ctx)
  const ix = (name: string) => `"${ctx.prefix}${name}"`
  return [
    ...(ctx.schema !== undefined ? [`CREATE SCHEMA IF NOT EXISTS "${ctx.schema}"`] : []),
    `CREATE TABLE IF NOT EXISTS ${t.outbox} (
       id text PRIMARY KEY,
       payload text NOT NULL,
       created_at timestamptz NOT NULL DEFAULT now()
     )`,
    `CREATE INDEX IF NOT EXISTS ${ix('broker_outbox_created')} ON ${t.outbox} (created_at)`,
    `CREATE SEQUENCE IF NOT EXISTS ${t.seq}`,
    `CREATE TABLE IF NOT EXISTS ${t.presence} (
       channel text NOT NULL,
       connection_id text NOT NULL,
       user_id text NOT NULL,
       node_id text NOT NULL,
       state text NOT NULL,
       data text NOT NULL,
       joined_at double precision NOT NULL,
       updated_at double precision NOT NULL,
       seq bigint NOT NULL DEFAULT nextval('${t.seq}'),
       PRIMARY KEY (channel, connection_id)
     )`,
    `CREATE INDEX IF NOT EXISTS ${ix('presence_user')} ON ${t.presence} (channel, user_id)`,
    `CREATE INDEX IF NOT EXISTS ${ix('presence_node')} ON ${t.presence} (node_id)`,
    `CREATE TABLE IF NOT EXISTS ${t.nodes} (
       node_id text PRIMARY KEY,
       beat double precision NOT NULL
     )`,
    `CREATE TABLE IF NOT EXISTS ${t.seen} (
       user_id text PRIMARY KEY,
       seen double precision NOT NULL
     )`,
    `CREATE INDEX IF NOT EXISTS ${ix('presence_seen_at')} ON ${t.seen} (seen)`,
  ]
}

/** The migration (`0002_cluster` in the package's list): PostgreSQL only. */
export function clusterMigration(ctx: SchemaContext): Migration {
  const t = clusterTables(ctx)
  return {
    async up(db: Kysely<any>) {
      for (const s of clusterStatements(ctx)) await sql.raw(s).execute(db)
    },
    async down(db: Kysely<any>) {
      for (const s of [`DROP TABLE IF EXISTS ${t.seen}`, `DROP TABLE IF EXISTS ${t.nodes}`, `DROP TABLE IF EXISTS ${t.presence}`, `DROP SEQUENCE IF EXISTS ${t.seq}`, `DROP TABLE IF EXISTS ${t.outbox}`]) await sql.raw(s).execute(db)
    },
  }
}

/** The part of `pg.Pool` the setup needs. */
interface PoolLike {
  connect(): Promise<{ query(text: string, values?: unknown[]): Promise<unknown>; release(err?: Error | boolean): void }>
}

/** Where tables are created: a `pg.Pool`, or a Kysely instance (PostgreSQL or PGlite). */
export type TableTarget = PoolLike | Kysely<any>

/** A key of PostgreSQL's advisory lock space for "creating Tidings' cluster tables". */
const SETUP_LOCK = '7361907238510451201'

const isKysely = (target: TableTarget): target is Kysely<any> => typeof (target as Kysely<any>).transaction === 'function' && typeof (target as Kysely<any>).executeQuery === 'function'

/**
 * Run `statements` (idempotent DDL) in one transaction under an advisory lock, so several nodes
 * starting at once do not race on `CREATE … IF NOT EXISTS`.
 */
async function runLocked(target: TableTarget, statements: readonly string[]): Promise<void> {
  if (isKysely(target)) {
    await target.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(${SETUP_LOCK}::bigint)`.execute(trx)
      for (const s of statements) await sql.raw(s).execute(trx)
    })
    return
  }
  const client = await target.connect()
  let failed: Error | undefined
  try {
    await client.query('BEGIN')
    await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [SETUP_LOCK])
    for (const s of statements) await client.query(s)
    await client.query('COMMIT')
  } catch (err) {
    failed = err instanceof Error ? err : new Error(String(err))
    await client.query('ROLLBACK').catch(() => undefined)
    throw err
  } finally {
    client.release(failed)
  }
}

/**
 * Create the cluster tables if they are missing, in one transaction under an advisory lock (so
 * several nodes starting at once do not race on `CREATE … IF NOT EXISTS`).
 */
export async function ensureClusterTables(pool: PoolLike, options: { schema?: string | undefined; prefix?: string | undefined } = {}): Promise<void> {
  await runLocked(pool, clusterStatements(schemaContext(options)))
}

export interface TablesOnceOptions {
  readonly schema?: string | undefined
  readonly prefix?: string | undefined
  /** false: never create anything (the app runs the package's migrations); the creator answers at once. */
  readonly createTables?: boolean | undefined
  /** The idempotent statements to run. Default: the cluster tables' (`clusterStatements`). */
  readonly statements?: ((ctx: SchemaContext) => string[]) | undefined
}

/**
 * The lazy table creation of an adapter that may run without the app's migrations (the broker,
 * the presence store, the limit store): a function to await before a query. Its first call
 * creates the tables (`IF NOT EXISTS`, in one transaction under the advisory lock); later calls
 * share that promise once it succeeded, and after a failure the next call tries again.
 */
export function clusterTablesOnce(target: TableTarget, options: TablesOnceOptions = {}): () => Promise<void> {
  if (options.createTables === false) return () => Promise.resolve()
  const statements = (options.statements ?? clusterStatements)(schemaContext(options))
  let tables: Promise<void> | undefined
  return () => {
    if (!tables) {
      tables = runLocked(target, statements).catch((err: unknown) => {
        tables = undefined
        throw err
      })
    }
    return tables
  }
}
