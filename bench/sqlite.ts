/**
 * `pnpm bench:sqlite`: messages persisted per second on ONE channel by the SQLite store
 * (`createSqliteStore`, better-sqlite3 through Kysely), with group commit (appends of a channel
 * batched into one transaction, `maxBatch` 1,000) and one by one (`maxBatch: 1`, one transaction
 * per append), in the same run, on a file database in a temporary directory (WAL) with
 * `synchronous` NORMAL (the store's default) and FULL.
 *
 * Each phase keeps INFLIGHT appends outstanding (many callers publishing to one channel, as a
 * hub under load does) until the phase's appends resolved; an append counts once its promise
 * resolved, i.e. once its batch committed. Retention keeps the newest 10,000 (trimming is part
 * of the work). The figure is the median of ROUNDS runs; batched and one-by-one alternate.
 *
 * Prints per-phase lines, then, last:
 *   bench-sqlite: normal-batched=<msg/s> normal-one-by-one=<msg/s> full-batched=<msg/s> full-one-by-one=<msg/s>
 *
 * Environment: N (batched appends per phase, 100,000), N_ONE (one-by-one appends per phase,
 * 5,000), INFLIGHT (1,000), ROUNDS (3).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type SqliteStore, createSqliteStore } from '../packages/sql/src/sqlite/index.js'
import { appendRate, envNumber } from './lib/append-rate.js'
import { median } from './lib/stats.js'

const N = envNumber('N', 100_000)
const N_ONE = envNumber('N_ONE', 5_000)
const INFLIGHT = envNumber('INFLIGHT', 1_000)
const ROUNDS = envNumber('ROUNDS', 3)
const run = (store: SqliteStore, count: number) => appendRate(store, count, INFLIGHT)

async function measure(dir: string, synchronous: 'normal' | 'full'): Promise<{ batched: number; one: number }> {
  const filename = join(dir, `bench-${synchronous}.db`)
  // Two stores (two connections) on one file: one batches, one does not.
  const batchedStore = createSqliteStore({ db: { filename }, synchronous, sweepIntervalMs: false })
  await batchedStore.ready
  const oneStore = createSqliteStore({ db: { filename }, synchronous, sweepIntervalMs: false, maxBatch: 1 })
  await oneStore.ready
  await run(batchedStore, Math.min(N, 10_000)) // warm-up
  await run(oneStore, Math.min(N_ONE, 1_000))
  const batched: number[] = []
  const one: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? ['b', 'o'] : ['o', 'b']
    for (const which of order) {
      if (which === 'b') {
        const r = await run(batchedStore, N)
        batched.push(r)
        console.log(`sqlite synchronous=${synchronous} round ${round + 1}: batched ${Math.round(r)} msg/s (${N} appends, ${INFLIGHT} in flight)`)
      } else {
        const r = await run(oneStore, N_ONE)
        one.push(r)
        console.log(`sqlite synchronous=${synchronous} round ${round + 1}: one by one ${Math.round(r)} msg/s (${N_ONE} appends, ${INFLIGHT} in flight)`)
      }
    }
  }
  await batchedStore.close()
  await oneStore.close()
  return { batched: median(batched), one: median(one) }
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'tidings-bench-sqlite-'))
  try {
    const normal = await measure(dir, 'normal')
    const full = await measure(dir, 'full')
    const f = (x: number) => Math.round(x)
    console.log(`bench-sqlite: normal-batched=${f(normal.batched)} normal-one-by-one=${f(normal.one)} full-batched=${f(full.batched)} full-one-by-one=${f(full.one)}`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
