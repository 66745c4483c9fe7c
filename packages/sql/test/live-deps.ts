/** The database packages as @tidings/sql resolves them, for bench/live-queries.ts (the root has none of them). */
export { PGlite } from '@electric-sql/pglite'
export { Kysely, PostgresDialect, sql } from 'kysely'
export { PGliteDialect } from 'kysely-pglite-dialect'
export { default as pg } from 'pg'
