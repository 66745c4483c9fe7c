import { PGlite } from '@electric-sql/pglite'
import { limitConformance } from '@tidings/core/conformance'
import { createTestHub } from '@tidings/core/testing'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createPostgresBroker } from '../src/broker.js'
import { createPostgresLimitStore } from '../src/limits.js'
import { createPostgresPresenceStore } from '../src/presence.js'
import { type PostgresServer, sleep, startPostgres, until } from './postgres.js'

// The LimitStore on PostgreSQL: the port's conformance suite with several stores as several
// nodes (each its own pool) on one database, and on PGlite (several stores on one instance);
// the sweep; the hit's latency; and two hubs on PostgreSQL alone whose channel publish budget
// holds across both nodes.

let server: PostgresServer
let url: string
const pglite = new PGlite('memory://')
const closers: Array<() => Promise<void>> = []
beforeAll(async () => {
  server = await startPostgres()
  url = await server.createDatabase()
}, 60_000)
afterAll(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined)
  await pglite.close()
  await server?.stop()
})

// Each store its own pool (a node of its own); the first one creates the table lazily, the
// others wait on the same advisory lock.
limitConformance('PostgreSQL, a pool per node', (count) => Array.from({ length: count }, () => createPostgresLimitStore({ connectionString: url })), {
  timeoutMs: 20_000,
  prefix: 'pg',
})
limitConformance('PostgreSQL, stores sharing the app’s pool', (count) => {
  const pool = new pg.Pool({ connectionString: url, max: 6 })
  closers.push(() => pool.end())
  return Array.from({ length: count }, () => createPostgresLimitStore({ pool }))
}, { timeoutMs: 20_000, prefix: 'pgpool' })
limitConformance('PGlite, one instance', (count) => Array.from({ length: count }, () => createPostgresLimitStore({ db: { pglite } })), { timeoutMs: 20_000, prefix: 'pglite' })

const T0 = Date.UTC(2026, 0, 1)

/** A client of the test database, ended after the file (also when a test fails first). */
async function sqlClient(): Promise<pg.Client> {
  const c = new pg.Client(url)
  c.on('error', () => undefined)
  await c.connect()
  closers.push(() => c.end())
  return c
}

describe('PostgreSQL limit store', () => {
  it('the sweep deletes only ended windows (plus the margin), in batches bounded by sweepLimit', async () => {
    const store = createPostgresLimitStore({ connectionString: url, tablePrefix: 'sweep_', sweepIntervalMs: false, sweepLimit: 1_500, expiryMarginMs: 500 })
    closers.push(() => store.close())
    for (let i = 0; i < 2_000; i++) await store.hit(`old:${i}`, 1_000, T0)
    expect(await store.hit('live', 60_000, T0)).toBe(1)
    // T0 + 1,499 is inside the old windows' margin: nothing is gone
    expect(await store.sweep(T0 + 1_499)).toBe(0)
    // past it, at most sweepLimit rows per sweep, then the rest
    expect(await store.sweep(T0 + 1_501)).toBe(1_500)
    expect(await store.sweep(T0 + 1_501)).toBe(500)
    expect(await store.sweep(T0 + 1_501)).toBe(0)
    // the minute window still counts on (a sweep that deleted it would answer 1)
    expect(await store.hit('live', 60_000, T0 + 1_501)).toBe(2)
    const db = await sqlClient()
    expect((await db.query('SELECT count(*)::int AS n FROM sweep_limits')).rows[0].n).toBe(1)
  }, 60_000)

  it('the periodic sweep runs by itself (sweepIntervalMs) and deletes an ended window once a later hit moved the store’s time past it', async () => {
    const store = createPostgresLimitStore({ connectionString: url, tablePrefix: 'timer_', sweepIntervalMs: 50, expiryMarginMs: 0 })
    closers.push(() => store.close())
    const db = await sqlClient()
    const rows = async () => (await db.query('SELECT key FROM timer_limits ORDER BY key')).rows.map((r) => r.key)
    expect(await store.hit('ended', 1_000, T0)).toBe(1)
    expect(await store.hit('current', 60_000, T0)).toBe(1)
    await sleep(200)
    expect(await rows()).toEqual(['current', 'ended']) // nothing later than the windows yet
    expect(await store.hit('current', 60_000, T0 + 1_000)).toBe(2)
    await until(async () => expect(await rows()).toEqual(['current']), 5_000)
  }, 30_000)

  it('with createTables false and no migrations, a hit fails; the lazy creator retries after a failure and then remembers success', async () => {
    const noTable = createPostgresLimitStore({ connectionString: url, tablePrefix: 'absent_', createTables: false, sweepIntervalMs: false })
    closers.push(() => noTable.close())
    await expect(noTable.hit('k', 1_000, T0)).rejects.toThrow(/absent_limits/)
    // the first creation fails: a table of the wrong shape is in the way (its index on expires_at cannot be made)
    const admin = await sqlClient()
    const store = createPostgresLimitStore({ connectionString: url, schema: 'retry_schema', sweepIntervalMs: false })
    closers.push(() => store.close())
    await admin.query('CREATE SCHEMA retry_schema')
    await admin.query('CREATE TABLE retry_schema.tidings_limits (key int)') // wrong shape: the index on expires_at fails
    await expect(store.hit('k', 1_000, T0)).rejects.toThrow(/expires_at/)
    await admin.query('DROP TABLE retry_schema.tidings_limits')
    expect(await store.hit('k', 1_000, T0)).toBe(1) // tried again, created
    await admin.query('DROP TABLE retry_schema.tidings_limits')
    // success is remembered: the table is not created again (a creator that ran every time would answer 1)
    await expect(store.hit('k', 1_000, T0)).rejects.toThrow(/tidings_limits/)
  }, 30_000)

  it('prints the median hit latency over 1,000 hits on local PostgreSQL (one node, sequential)', async () => {
    const store = createPostgresLimitStore({ connectionString: url, sweepIntervalMs: false })
    closers.push(() => store.close())
    await store.hit('warm', 60_000, T0)
    const times: number[] = []
    for (let i = 0; i < 1_000; i++) {
      const t = performance.now()
      expect(await store.hit(`lat:${i % 10}`, 60_000, T0)).toBe(Math.floor(i / 10) + 1)
      times.push(performance.now() - t)
    }
    times.sort((a, b) => a - b)
    const median = times[500]!
    console.log(`PostgreSQL limit store: median hit ${median.toFixed(3)} ms, p90 ${times[900]!.toFixed(3)} ms, p99 ${times[990]!.toFixed(3)} ms over 1,000 hits`)
    expect(median).toBeLessThan(50)
  }, 60_000)
})

// ------------------------------------------------------------------ two hubs, PostgreSQL alone

/** A hub on PostgreSQL alone: its own broker, presence store and limit store (each its own pool). */
function node(nodeId: string) {
  const presenceStore = createPostgresPresenceStore({ connectionString: url })
  const limitStore = createPostgresLimitStore({ connectionString: url })
  const t = createTestHub({
    nodeId,
    broker: createPostgresBroker({ connectionString: url }),
    presenceStore,
    limitStore,
    channels: { 'budget:*': { publish: 'authenticated', publishesPerMinute: 10 } },
  })
  closers.push(async () => {
    await t.close()
    await presenceStore.close()
    await limitStore.close()
  })
  return t
}

describe('two hubs on PostgreSQL alone (broker, presence, limit store)', () => {
  it('a channel’s publishesPerMinute of 10 holds across both nodes: 5 + 5 publish, the 11th (on either node) is RT_006 (a budget per node would allow 20)', async () => {
    const a = node('limit-a')
    const b = node('limit-b')
    const ada = await a.connect({ userId: 'ada' })
    const bob = await b.connect({ userId: 'bob' })
    // not on a minute's edge: all the publishes fall in one window
    const toEdge = 60_000 - (Date.now() % 60_000)
    if (toEdge < 10_000) await new Promise((r) => setTimeout(r, toEdge + 50))
    for (let i = 0; i < 10; i++) await (i % 2 === 0 ? ada : bob).publish('budget:room', 'say', { i })
    await expect(bob.publish('budget:room', 'say', { i: 10 })).rejects.toMatchObject({ code: 'RT_006' })
    await expect(ada.publish('budget:room', 'say', { i: 11 })).rejects.toMatchObject({ code: 'RT_006' })
    // another channel of the pattern has its own budget
    await ada.publish('budget:other', 'say', {})
  }, 60_000)
})
