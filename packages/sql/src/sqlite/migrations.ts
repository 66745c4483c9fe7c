import { randomBytes } from 'node:crypto'
import { type Kysely, type RawBuilder, sql } from 'kysely'
import { type Migration, type MigrationProvider, type MigrationResultSet, Migrator } from 'kysely/migration'

/** Prefix of every table of the SQLite store. Default `tidings_`. */
export const SQLITE_DEFAULT_PREFIX = 'tidings_'

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/

/** Checks a table prefix (spliced into DDL as an identifier). */
export function sqlitePrefix(prefix: string | undefined): string {
  const p = prefix ?? SQLITE_DEFAULT_PREFIX
  if (p !== '' && !IDENT.test(p)) throw new TypeError(`@tidings/sql: tablePrefix ${JSON.stringify(p)} must be letters, digits and underscores`)
  return p
}

/** The SQLite store's tables, as SQL identifiers. */
export function sqliteTables(prefix: string) {
  const id = (name: string): RawBuilder<unknown> => sql.id(`${prefix}${name}`)
  return {
    store: id('store'),
    channels: id('channels'),
    messages: id('messages'),
    idempotency: id('idempotency'),
    subscriptions: id('subscriptions'),
  }
}

/** A new store identity (every channel epoch is `<identity>.<hash of the name>`). */
export const newIdentity = (): string => randomBytes(8).toString('hex')

/**
 * The SQLite store's tables (its own, not the PostgreSQL ones: SQLite types, `WITHOUT ROWID`
 * tables clustered on their key, JSON kept as text). Times are ms since the epoch.
 *
 * - `store`: one row, the store's identity (new after `reset()`).
 * - `channels`: the log's state per channel: `epoch`, `top` (newest offset), `low` (offsets up
 *   to it dropped by retention; their rows are deleted in the same transaction), `bytes` (sizes of
 *   the retained messages, measured at append), `last_activity` (the newest append's `now`) and
 *   the retention of the last append.
 * - `messages`: the log, keyed `(channel, seq)`; `data` is the JSON text of the data (exact:
 *   U+0000, unicode, large integers), `exclude` and `revises` JSON text, `size` measured once at
 *   append, `version` / `edited_at` / `deleted_at` follow revisions.
 * - `idempotency`: publisher keys per channel → the first message's offset, id, event, sender,
 *   timestamp and when the key was seen (they outlive the message they name).
 * - `subscriptions`: consumer cursors: the last acknowledged offset and the epoch it was committed in.
 */
export function sqliteStoreMigration(prefix: string): Migration {
  const t = sqliteTables(prefix)
  const index = (name: string) => sql.id(`${prefix}${name}`)
  return {
    async up(db: Kysely<any>) {
      await sql`CREATE TABLE ${t.store} (
        id INTEGER PRIMARY KEY,
        identity TEXT NOT NULL,
        created_at INTEGER NOT NULL
      )`.execute(db)
      await sql`INSERT INTO ${t.store} (id, identity, created_at) VALUES (1, ${newIdentity()}, ${Date.now()})`.execute(db)
      await sql`CREATE TABLE ${t.channels} (
        name TEXT NOT NULL PRIMARY KEY,
        epoch TEXT NOT NULL,
        top INTEGER NOT NULL DEFAULT 0,
        low INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        last_activity INTEGER NOT NULL,
        max_count INTEGER,
        max_age_ms REAL,
        max_bytes INTEGER
      ) WITHOUT ROWID`.execute(db)
      await sql`CREATE TABLE ${t.messages} (
        channel TEXT NOT NULL,
        seq INTEGER NOT NULL,
        id TEXT NOT NULL,
        event TEXT NOT NULL,
        data TEXT NOT NULL,
        sender TEXT,
        ts REAL NOT NULL,
        exclude TEXT,
        revises TEXT,
        size INTEGER NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        edited_at INTEGER,
        deleted_at INTEGER,
        PRIMARY KEY (channel, seq)
      ) WITHOUT ROWID`.execute(db)
      await sql`CREATE TABLE ${t.idempotency} (
        channel TEXT NOT NULL,
        key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        id TEXT NOT NULL,
        event TEXT NOT NULL,
        sender TEXT,
        ts REAL NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (channel, key)
      ) WITHOUT ROWID`.execute(db)
      await sql`CREATE INDEX ${index('idempotency_at')} ON ${t.idempotency} (at)`.execute(db)
      await sql`CREATE TABLE ${t.subscriptions} (
        channel TEXT NOT NULL,
        user_id TEXT NOT NULL,
        last_seen_offset INTEGER NOT NULL,
        epoch TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (channel, user_id)
      ) WITHOUT ROWID`.execute(db)
      await sql`CREATE INDEX ${index('subscriptions_user')} ON ${t.subscriptions} (user_id)`.execute(db)
    },
    async down(db: Kysely<any>) {
      for (const name of [t.subscriptions, t.idempotency, t.messages, t.channels, t.store]) await sql`DROP TABLE IF EXISTS ${name}`.execute(db)
    },
  }
}

/**
 * Every SQLite migration, in order (Kysely runs them sorted by name). Append new ones at the end;
 * never rename or edit a published one.
 */
export const SQLITE_MIGRATIONS: ReadonlyArray<readonly [name: string, migration: (prefix: string) => Migration]> = [['0001_store', sqliteStoreMigration]]

/** A Kysely `Migrator` for the SQLite store's tables (static provider, no file system). */
export function createSqliteMigrator(db: Kysely<any>, options: { readonly tablePrefix?: string | undefined } = {}): Migrator {
  const prefix = sqlitePrefix(options.tablePrefix)
  const provider: MigrationProvider = {
    async getMigrations() {
      const out: Record<string, Migration> = {}
      for (const [name, factory] of SQLITE_MIGRATIONS) out[name] = factory(prefix)
      return out
    },
  }
  return new Migrator({ db, provider, migrationTableName: `${prefix}migrations`, migrationLockTableName: `${prefix}migrations_lock` })
}

/**
 * Brings the SQLite store's tables up to date, inside one `BEGIN IMMEDIATE` transaction: Kysely's
 * migrator takes no lock on SQLite, so this write lock is what keeps two connections (two
 * processes starting at once) from running a migration twice. Throws when a migration fails.
 */
export async function migrateSqlite(db: Kysely<any>, options: { readonly tablePrefix?: string | undefined } = {}): Promise<MigrationResultSet> {
  return db.connection().execute(async (conn) => {
    await sql`BEGIN IMMEDIATE`.execute(conn)
    try {
      const result = await createSqliteMigrator(conn, options).migrateToLatest()
      if (result.error) throw result.error instanceof Error ? result.error : new Error(String(result.error))
      await sql`COMMIT`.execute(conn)
      return result
    } catch (error) {
      await sql`ROLLBACK`.execute(conn).catch(() => {})
      throw error
    }
  })
}
