import { storeConformance } from '@tidings/core/conformance'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll } from 'vitest'
import { createSqlStore, migrate } from '../src/index.js'
import { storeExtras } from './store-extras.js'
import { type PostgresServer, startPostgres } from './postgres.js'

let server: PostgresServer
let db: Kysely<any>
let budgets = 0

beforeAll(async () => {
  server = await startPostgres()
  const url = await server.createDatabase()
  db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 10 }) }) })
  await migrate(db)
}, 60_000)

afterAll(async () => {
  await db?.destroy()
  await server?.stop()
})

storeConformance('sql on PostgreSQL', () => createSqlStore({ db, migrate: false, sweepIntervalMs: false }), {
  channelPrefix: 'pg',
  reset: (s) => s.reset(),
  // the store-wide budget applies to a store's tables: a fresh prefix, so the suite's other channels are not in it
  makeBudgetStore: (maxBytes) => createSqlStore({ db, prefix: `budget${++budgets}_`, maxBytes, sweepIntervalMs: false }),
  capabilities: ['revise', 'search', 'channelsOf', 'eraseUser'],
})

storeExtras('PostgreSQL', () => db)
