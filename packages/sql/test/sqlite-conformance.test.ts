import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { storeConformance } from '@tidings/core/conformance'
import { afterAll } from 'vitest'
import { createSqliteStore } from '../src/sqlite/index.js'

const dir = mkdtempSync(join(tmpdir(), 'tidings-sqlite-conf-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let files = 0

const options = {
  reset: (s: ReturnType<typeof createSqliteStore>) => s.reset(),
  capabilities: ['revise', 'search', 'channelsOf', 'eraseUser'] as const,
  timeoutMs: 30_000,
}

// A private in-memory database per test.
storeConformance('sqlite in memory', () => createSqliteStore({ db: { filename: ':memory:' }, sweepIntervalMs: false }), {
  ...options,
  channelPrefix: 'sqlite-memory',
  makeBudgetStore: (maxBytes) => createSqliteStore({ db: { filename: ':memory:' }, maxBytes, sweepIntervalMs: false }),
})

// A file database (WAL, busy_timeout) per test.
storeConformance('sqlite file (WAL)', () => createSqliteStore({ db: { filename: join(dir, `store-${++files}.db`) }, sweepIntervalMs: false }), {
  ...options,
  channelPrefix: 'sqlite-file',
  makeBudgetStore: (maxBytes) => createSqliteStore({ db: { filename: join(dir, `budget-${++files}.db`) }, maxBytes, sweepIntervalMs: false }),
})
