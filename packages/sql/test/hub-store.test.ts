import { createMemoryBus } from '@tidings/core'
import { hubConformance } from '@tidings/core/conformance'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll } from 'vitest'
import { createSqlStore, migrate } from '../src/index.js'
import { type PostgresServer, startPostgres } from './postgres.js'

// The engine's guarantees (the delivery property on one hub; three hubs as one: order and
// offsets across nodes, resume on another node, dedup, at-least-once redelivery from the log)
// with the SQL message store on PostgreSQL: each node its own store (its own group commit) on
// one database; the broker is the in-process memory bus.

let server: PostgresServer
let db: Kysely<any>

beforeAll(async () => {
  server = await startPostgres()
  const url = await server.createDatabase()
  db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 20 }) }) })
  await migrate(db)
}, 60_000)

afterAll(async () => {
  await db?.destroy()
  await server?.stop()
})

hubConformance(
  'SQL store on PostgreSQL',
  (nodes) => {
    const bus = createMemoryBus()
    return Array.from({ length: nodes }, () => ({ broker: bus.broker(), store: createSqlStore({ db, migrate: false, sweepIntervalMs: false }) }))
  },
  { timeoutMs: 30_000, deliveryRuns: 5, deliveryTimeoutMs: 180_000 },
)
