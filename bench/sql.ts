/**
 * `pnpm bench:sql`: messages persisted per second on ONE channel by the SQL store, with group
 * commit (appends of a channel batched into one transaction, `maxBatch` 1,000) and without it
 * (`maxBatch: 1`, one transaction per append), in the same run, on a private PostgreSQL 15 (the
 * test harness: a temporary cluster on a free port, fsync off as in the tests) and on PGlite
 * (in process, in memory).
 *
 * Each phase keeps INFLIGHT appends outstanding (many callers publishing to one channel, as a
 * hub under load does) until N appends resolved; an append counts once its promise resolved,
 * i.e. once its batch committed. Retention keeps the newest 10,000 (trimming is part of the
 * work). The figure is the median of ROUNDS runs; batched and unbatched alternate.
 *
 * Prints per-phase lines, then, last:
 *   bench-sql: postgres-batched=<msg/s> postgres-unbatched=<msg/s> pglite-batched=<msg/s> pglite-unbatched=<msg/s>
 *
 * Environment: N (batched appends per phase, 50,000), N_UNBATCHED (2,000), INFLIGHT (1,000),
 * ROUNDS (3), PG_URL (use this PostgreSQL instead of a private one).
 */
import { type SqlStore, connect, createSqlStore, migrate } from '../packages/sql/src/index.js'
import { startPostgres } from '../packages/sql/test/postgres.js'
import { appendRate, envNumber } from './lib/append-rate.js'
import { median } from './lib/stats.js'

const N = envNumber('N', 50_000)
const N_UNBATCHED = envNumber('N_UNBATCHED', 2_000)
const INFLIGHT = envNumber('INFLIGHT', 1_000)
const ROUNDS = envNumber('ROUNDS', 3)
const run = (store: SqlStore, count: number) => appendRate(store, count, INFLIGHT)

async function measure(label: string, db: SqlStore['db']): Promise<{ batched: number; unbatched: number }> {
  await migrate(db)
  const batchedStore = createSqlStore({ db, migrate: false, sweepIntervalMs: false })
  const unbatchedStore = createSqlStore({ db, migrate: false, sweepIntervalMs: false, maxBatch: 1 })
  await run(batchedStore, Math.min(N, 5_000)) // warm-up
  const batched: number[] = []
  const unbatched: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? ['b', 'u'] : ['u', 'b']
    for (const which of order) {
      if (which === 'b') {
        const r = await run(batchedStore, N)
        batched.push(r)
        console.log(`${label} round ${round + 1}: batched ${Math.round(r)} msg/s (${N} appends, ${INFLIGHT} in flight)`)
      } else {
        const r = await run(unbatchedStore, N_UNBATCHED)
        unbatched.push(r)
        console.log(`${label} round ${round + 1}: unbatched ${Math.round(r)} msg/s (${N_UNBATCHED} appends, ${INFLIGHT} in flight)`)
      }
    }
  }
  await batchedStore.close()
  await unbatchedStore.close()
  return { batched: median(batched), unbatched: median(unbatched) }
}

async function main() {
  let server: Awaited<ReturnType<typeof startPostgres>> | undefined
  const url = process.env.PG_URL ?? (await (async () => {
    server = await startPostgres()
    return server.createDatabase('bench_sql')
  })())
  // Both stores of a phase share one connection (a pool of 10 on PostgreSQL).
  const pgConn = connect({ postgres: url, poolSize: 10 })
  let postgres: { batched: number; unbatched: number }
  try {
    postgres = await measure('postgres', pgConn.db)
  } finally {
    await pgConn.close()
    await server?.stop()
  }
  const liteConn = connect({ pglite: 'memory://' })
  let lite: { batched: number; unbatched: number }
  try {
    lite = await measure('pglite', liteConn.db)
  } finally {
    await liteConn.close()
  }
  const f = (x: number) => Math.round(x)
  console.log(`bench-sql: postgres-batched=${f(postgres.batched)} postgres-unbatched=${f(postgres.unbatched)} pglite-batched=${f(lite.batched)} pglite-unbatched=${f(lite.unbatched)}`)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
