import { Kysely, type SqliteDatabase, SqliteDialect, type SqliteStatement } from 'kysely'

/**
 * The database of a SQLite store: the app's Kysely instance over Kysely's `SqliteDialect`
 * (shared, never closed by the store), a file name (better-sqlite3 is loaded then, and only
 * then; `':memory:'` for a private in-memory database) or a better-sqlite3 `Database` the app
 * opened (left open by `close()`).
 */
export type SqliteStoreDatabase = Kysely<any> | { readonly filename: string } | { readonly database: SqliteDatabase }

export interface SqliteConnection {
  readonly db: Kysely<any>
  /** Closes what the store opened itself (nothing of the app's). */
  close(): Promise<void>
}

/** Prepared statements kept per connection (Kysely's driver prepares every query anew). */
const STATEMENT_CACHE = 256

/**
 * better-sqlite3 prepares a statement per call of `prepare`: this wrapper keeps the most recent
 * ones by SQL text (the store's queries have a fixed text; batches are passed as one JSON
 * parameter), which saves the parse of every query on the hot path.
 */
function cachingDatabase(raw: SqliteDatabase, owned: boolean): SqliteDatabase {
  const cache = new Map<string, SqliteStatement>()
  return {
    prepare(text: string): SqliteStatement {
      let stmt = cache.get(text)
      if (stmt !== undefined) {
        cache.delete(text) // most recent last
        cache.set(text, stmt)
        return stmt
      }
      stmt = raw.prepare(text)
      cache.set(text, stmt)
      if (cache.size > STATEMENT_CACHE) cache.delete(cache.keys().next().value!)
      return stmt
    },
    close() {
      cache.clear()
      if (owned) raw.close()
    },
  }
}

/** better-sqlite3, imported on first use (PostgreSQL users never need it installed). */
async function openFile(filename: string): Promise<SqliteDatabase> {
  let mod: { default: new (filename: string) => SqliteDatabase }
  try {
    mod = (await import('better-sqlite3')) as unknown as typeof mod
  } catch (error) {
    throw new Error(`@tidings/sql: createSqliteStore({ db: { filename } }) needs the better-sqlite3 package (npm install better-sqlite3): ${error instanceof Error ? error.message : String(error)}`)
  }
  return new mod.default(filename)
}

const sharedKysely = new WeakMap<SqliteDatabase, Kysely<any>>()

/** A lock key of its own per Kysely instance (an in-memory database is private to its connection). */
const connectionKeys = new WeakMap<Kysely<any>, string>()
let connections = 0
export function connectionKey(db: Kysely<any>): string {
  let key = connectionKeys.get(db)
  if (key === undefined) connectionKeys.set(db, (key = `connection:${++connections}`))
  return key
}

export function connectSqlite(database: SqliteStoreDatabase): SqliteConnection {
  if (database instanceof Kysely) return { db: database, close: async () => {} }
  if ('filename' in database) {
    const filename = database.filename
    if (typeof filename !== 'string' || filename === '') throw new TypeError('@tidings/sql: createSqliteStore({ db: { filename } }) needs a file name (or ":memory:")')
    const db = new Kysely<any>({ dialect: new SqliteDialect({ database: async () => cachingDatabase(await openFile(filename), true) }) })
    return { db, close: () => db.destroy() }
  }
  if (database.database && typeof database.database.prepare === 'function') {
    // Stores given one Database share one Kysely instance, so they share its connection lock: no
    // store's statement runs inside another's open transaction. Nothing to close (the app's).
    let db = sharedKysely.get(database.database)
    if (!db) sharedKysely.set(database.database, (db = new Kysely<any>({ dialect: new SqliteDialect({ database: cachingDatabase(database.database, false) }) })))
    return { db, close: async () => {} }
  }
  throw new TypeError('@tidings/sql: createSqliteStore needs db: a Kysely instance, { filename } or { database }')
}

// ------------------------------------------------------------------ one writer per file

/**
 * Write transactions on one database file, across every store of this process. SQLite has one
 * writer at a time and better-sqlite3 waits for a busy lock synchronously (`busy_timeout`): a
 * second connection of the same process waiting there would block the event loop, and with it
 * the transaction it waits for. So writers of one process queue here (in JS), and `busy_timeout`
 * only ever waits for another process.
 */
const fileLocks = new Map<string, { tail: Promise<void>; users: number }>()

export async function withFileLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
  let lock = fileLocks.get(key)
  if (!lock) fileLocks.set(key, (lock = { tail: Promise.resolve(), users: 0 }))
  lock.users++
  const previous = lock.tail
  let release!: () => void
  lock.tail = new Promise<void>((resolve) => (release = resolve))
  try {
    await previous
    return await fn()
  } finally {
    release()
    if (--lock.users === 0) fileLocks.delete(key)
  }
}
