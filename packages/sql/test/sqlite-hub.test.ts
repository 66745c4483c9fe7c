import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMemoryBus } from '@tidings/core'
import { hubConformance } from '@tidings/core/conformance'
import { afterAll } from 'vitest'
import { createSqliteStore } from '../src/sqlite/index.js'

// The engine's guarantees (delivery on one hub; several hubs as one: order and offsets across
// nodes, resume on another node, dedup, redelivery from the log) with the SQLite store: each node
// its own store, so its own connection and group commit, on one WAL file per call; the broker
// is the in-process memory bus.

const dir = mkdtempSync(join(tmpdir(), 'tidings-sqlite-hub-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let files = 0

hubConformance(
  'SQLite store, one file per test, a connection per node',
  (nodes) => {
    const bus = createMemoryBus()
    const filename = join(dir, `hub-${++files}.sqlite`)
    return Array.from({ length: nodes }, () => ({ broker: bus.broker(), store: createSqliteStore({ db: { filename }, sweepIntervalMs: false }) }))
  },
  { timeoutMs: 30_000, deliveryRuns: 5, deliveryTimeoutMs: 180_000 },
)
