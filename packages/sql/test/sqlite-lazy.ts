/**
 * Run as a child process by test/sqlite-process.test.ts: says whether better-sqlite3 is loaded
 * after importing the SQLite store module, after using it over an app-given database, and after
 * opening a file by name (only then may it be). One JSON line on stdout.
 */
import { createRequire } from 'node:module'
import { Kysely, SqliteDialect, type SqliteDatabase } from 'kysely'

const require = createRequire(import.meta.url)
const loaded = () => Object.keys(require.cache).some((path) => /[\\/]better-sqlite3[\\/]/.test(path))

const { createSqliteStore } = await import('../src/sqlite/index.js')
const afterImport = loaded()
// An app-given database that is not better-sqlite3 at all: the store must not need the package for it.
const fake: SqliteDatabase = {
  close() {},
  prepare() {
    throw new Error('fake database')
  },
}
const given = createSqliteStore({ db: new Kysely<any>({ dialect: new SqliteDialect({ database: fake }) }), sweepIntervalMs: false })
await given.ready.catch(() => {})
await given.close()
const afterGiven = loaded()
const byName = createSqliteStore({ db: { filename: ':memory:' }, sweepIntervalMs: false })
await byName.ready
await byName.close()
process.stdout.write(`${JSON.stringify({ afterImport, afterGiven, afterFilename: loaded() })}\n`)
