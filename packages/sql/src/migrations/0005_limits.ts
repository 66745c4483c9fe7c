import { type Kysely, sql } from 'kysely'
import type { Migration } from 'kysely/migration'
import type { SchemaContext } from '../names.js'

/**
 * The table of the limit store on PostgreSQL (`createPostgresLimitStore`). Every statement is
 * idempotent (`IF NOT EXISTS`), so the store may also create it on first use (through
 * `clusterTablesOnce`) when the app does not run the migrations itself.
 *
 * - `limits`: one counter per (key, window size, window start), incremented by one
 *   `INSERT … ON CONFLICT DO UPDATE … RETURNING` per hit. `expires_at` (the window's end plus a
 *   margin, in the hits' own time, ms) is what the store's sweep deletes by, in bounded batches.
 */
export function limitTable(ctx: SchemaContext): string {
  return ctx.schema !== undefined ? `"${ctx.schema}"."${ctx.prefix}limits"` : `"${ctx.prefix}limits"`
}

export function limitStatements(ctx: SchemaContext): string[] {
  const t = limitTable(ctx)
  return [
    ...(ctx.schema !== undefined ? [`CREATE SCHEMA IF NOT EXISTS "${ctx.schema}"`] : []),
    `CREATE TABLE IF NOT EXISTS ${t} (
       key text NOT NULL,
       window_ms double precision NOT NULL,
       window_start double precision NOT NULL,
       count bigint NOT NULL,
       expires_at double precision NOT NULL,
       PRIMARY KEY (key, window_ms, window_start)
     )`,
    `CREATE INDEX IF NOT EXISTS "${ctx.prefix}limits_expires" ON ${t} (expires_at)`,
  ]
}

/** The migration (`0005_limits` in the package's list). */
export function limitsMigration(ctx: SchemaContext): Migration {
  return {
    async up(db: Kysely<any>) {
      for (const s of limitStatements(ctx)) await sql.raw(s).execute(db)
    },
    async down(db: Kysely<any>) {
      await sql.raw(`DROP TABLE IF EXISTS ${limitTable(ctx)}`).execute(db)
    },
  }
}
