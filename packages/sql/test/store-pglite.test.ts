import { PGlite } from '@electric-sql/pglite'
import { storeConformance } from '@tidings/core/conformance'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll } from 'vitest'
import { createSqlStore, migrate } from '../src/index.js'
import { storeExtras } from './store-extras.js'

// One PGlite for the file (a fresh instance takes seconds and much memory).
let pglite: PGlite
let db: Kysely<any>
let budgets = 0

beforeAll(async () => {
  pglite = new PGlite()
  db = new Kysely<any>({ dialect: new PGliteDialect(pglite) })
  await migrate(db)
}, 60_000)

afterAll(async () => {
  await pglite?.close()
})

storeConformance('sql on PGlite', () => createSqlStore({ db, migrate: false, sweepIntervalMs: false }), {
  channelPrefix: 'pglite',
  reset: (s) => s.reset(),
  // the store-wide budget applies to a store's tables: a fresh prefix, so the suite's other channels are not in it
  makeBudgetStore: (maxBytes) => createSqlStore({ db, prefix: `budget${++budgets}_`, maxBytes, sweepIntervalMs: false }),
  capabilities: ['revise', 'search', 'channelsOf', 'eraseUser'],
  timeoutMs: 30_000,
})

storeExtras('PGlite', () => db)
