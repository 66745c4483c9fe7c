import { PGlite } from '@electric-sql/pglite'
import { Kysely, PostgresDialect } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import pg from 'pg'

/**
 * The database a store uses: the app's own Kysely instance (shared, never closed by the store),
 * a PostgreSQL connection string or `pg.Pool`, or PGlite (an instance, or a data directory:
 * `'memory://'` or absent keeps everything in memory).
 */
export type SqlDatabase = Kysely<any> | { readonly postgres: string | pg.Pool; readonly poolSize?: number | undefined } | { readonly pglite?: PGlite | string | undefined }

export interface Connection {
  readonly db: Kysely<any>
  readonly kind: 'postgres' | 'pglite' | 'kysely'
  /** Closes what the store opened itself (nothing of the app's). */
  close(): Promise<void>
}

/** Errors of an idle pooled connection (a server restart) must not crash the process: the next query fails instead. */
const ignore = () => {}

export function connect(database: SqlDatabase, onError: (error: unknown) => void = ignore): Connection {
  if (database instanceof Kysely) return { db: database, kind: 'kysely', close: async () => {} }
  if ('postgres' in database) {
    const given = database.postgres
    const owned = typeof given === 'string'
    const pool = owned ? new pg.Pool({ connectionString: given, max: database.poolSize ?? 10 }) : given
    if (owned) pool.on('error', onError)
    // A client checked out between two statements of a transaction has no listener when the server
    // goes away: without one, its 'error' would crash the process. The next statement fails instead.
    pool.on('connect', (client) => client.on('error', onError))
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
    return {
      db,
      kind: 'postgres',
      // Kysely's destroy() ends the pool: only for a pool the store made.
      close: async () => {
        if (owned) await db.destroy()
      },
    }
  }
  const given = database.pglite
  const owned = !(given instanceof PGlite)
  const client = given instanceof PGlite ? given : new PGlite(given ?? 'memory://')
  const db = new Kysely<any>({ dialect: new PGliteDialect(client) })
  return {
    db,
    kind: 'pglite',
    close: async () => {
      if (owned && !client.closed) await client.close()
    },
  }
}
