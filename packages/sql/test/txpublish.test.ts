import { PGlite } from '@electric-sql/pglite'
import { type Hub, type MemoryClient, createHub, createMemoryTransport, seededRandom, silentLogger } from '@tidings/core'
import { Kysely, PostgresDialect, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { migrate } from '../src/migrations/index.js'
import { type OutboxRelay, type OutboxRelayOptions, createOutboxRelay } from '../src/outbox.js'
import { publish, publishWithClient } from '../src/publish.js'
import { type SqlStore, type SqlStoreOptions, createSqlStore } from '../src/store.js'
import { type PostgresServer, sleep, startPostgres, until } from './postgres.js'

// Transactional publish over a real PostgreSQL (and PGlite): hundreds of concurrent app
// transactions write their own rows and publish in the same transaction, then commit or roll
// back at random moments, some deliberately committing a smaller outbox id after a larger one.
// A subscriber connected through the hub must receive exactly the committed messages, once,
// in the order the relay guarantees (commit order within a channel: a transaction whose COMMIT
// returned before another's began is delivered first; a transaction's messages in call order).


const CHANNELS = ['orders:a', 'orders:b', 'orders:c', 'orders:d']

interface Tx {
  readonly i: number
  outcome: 'commit' | 'rollback'
  readonly msgs: Array<{ ch: string; k: number }>
  /** performance.now() just before COMMIT was sent, and once it returned. */
  before: number
  after: number
}

interface Received {
  readonly tx: number
  readonly k: number
  readonly offset: number
}

function makeHub(store: SqlStore): Hub {
  return createHub({ store, logger: silentLogger, channels: { 'orders:*': { history: { maxCount: 1_000_000, maxAgeMs: 3_600_000 } }, 'small:*': { maxMessageSize: 200 } } })
}

/** When each message (`tx.k`) reached the subscriber (performance.now()). */
const arrivals = new Map<string, number>()

async function subscriber(hub: Hub): Promise<MemoryClient> {
  const client = await createMemoryTransport(hub).connect({ userId: 'watcher' })
  for (const ch of CHANNELS) await client.subscribe(ch)
  arrivals.clear()
  client.on('message', (frame) => {
    const d = (frame as { data?: { tx?: number; k?: number } }).data
    if (d?.tx !== undefined) arrivals.set(`${d.tx}.${d.k}`, performance.now())
  })
  return client
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

class Rollback extends Error {}

/**
 * Runs `n` transactions `concurrency` at a time (and `pairs` inverted pairs: A publishes first,
 * B second, B commits, then A), each inserting an app row and publishing 1-3 messages.
 */
async function workload(o: { db: Kysely<any>; pool?: pg.Pool | undefined; n: number; pairs: number; concurrency: number; seed: number }) {
  const rnd = seededRandom(o.seed)
  const txs: Tx[] = []
  const inversions: Array<{ a: string; b: string }> = []
  const pick = () => CHANNELS[Math.floor(rnd() * CHANNELS.length)]!
  const newTx = (outcome: Tx['outcome'], count: number, ch?: string): Tx => {
    const tx: Tx = { i: txs.length, outcome, msgs: Array.from({ length: count }, (_, k) => ({ ch: ch ?? pick(), k })), before: 0, after: 0 }
    txs.push(tx)
    return tx
  }
  const tasks: Array<() => Promise<void>> = []
  for (let j = 0; j < o.n; j++) {
    const outcome = rnd() < 0.3 ? 'rollback' : 'commit'
    const tx = newTx(outcome, 1 + Math.floor(rnd() * 3))
    const delay = Math.floor(rnd() * 12)
    const kind = o.pool && rnd() < 0.2 ? 'raw' : rnd() < 0.5 ? 'controlled' : 'callback'
    tasks.push(async () => {
      if (kind === 'raw') {
        const client = await o.pool!.connect()
        try {
          await client.query('BEGIN')
          await client.query('INSERT INTO orders (tx) VALUES ($1)', [tx.i])
          for (const m of tx.msgs) await publishWithClient(client, m.ch, 'order', { tx: tx.i, k: m.k })
          await sleep(delay)
          tx.before = performance.now()
          await client.query(tx.outcome === 'commit' ? 'COMMIT' : 'ROLLBACK')
          tx.after = performance.now()
        } finally {
          client.release()
        }
      } else if (kind === 'controlled') {
        const trx = await o.db.startTransaction().execute()
        await sql`INSERT INTO orders (tx) VALUES (${tx.i})`.execute(trx)
        for (const m of tx.msgs) await publish(trx, m.ch, 'order', { tx: tx.i, k: m.k })
        await sleep(delay)
        tx.before = performance.now()
        if (tx.outcome === 'commit') await trx.commit().execute()
        else await trx.rollback().execute()
        tx.after = performance.now()
      } else {
        await o.db
          .transaction()
          .execute(async (trx) => {
            await sql`INSERT INTO orders (tx) VALUES (${tx.i})`.execute(trx)
            for (const m of tx.msgs) await publish(trx, m.ch, 'order', { tx: tx.i, k: m.k })
            await sleep(delay)
            tx.before = performance.now()
            if (tx.outcome === 'rollback') throw new Rollback()
          })
          .catch((error) => {
            if (!(error instanceof Rollback)) throw error
          })
        tx.after = performance.now()
      }
    })
  }
  for (let j = 0; j < o.pairs; j++) {
    const ch = pick()
    const a = newTx('commit', 1, ch)
    const b = newTx('commit', 1, ch)
    tasks.push(async () => {
      const ta = await o.db.startTransaction().execute()
      await sql`INSERT INTO orders (tx) VALUES (${a.i})`.execute(ta)
      const pa = await publish(ta, ch, 'order', { tx: a.i, k: 0 })
      const tb = await o.db.startTransaction().execute()
      await sql`INSERT INTO orders (tx) VALUES (${b.i})`.execute(tb)
      const pb = await publish(tb, ch, 'order', { tx: b.i, k: 0 })
      b.before = performance.now()
      await tb.commit().execute()
      b.after = performance.now()
      await sleep(1 + Math.floor(rnd() * 20))
      a.before = performance.now()
      await ta.commit().execute()
      a.after = performance.now()
      inversions.push({ a: pa.id, b: pb.id })
    })
  }
  // shuffled, then run `concurrency` at a time
  for (let j = tasks.length - 1; j > 0; j--) {
    const r = Math.floor(rnd() * (j + 1))
    ;[tasks[j], tasks[r]] = [tasks[r]!, tasks[j]!]
  }
  let next = 0
  await Promise.all(
    Array.from({ length: o.concurrency }, async () => {
      while (next < tasks.length) await tasks[next++]!()
    }),
  )
  return { txs, inversions }
}

/** Compares what the subscriber received (and the store holds) with what committed; prints the txpublish line. */
async function check(label: string, txs: Tx[], client: MemoryClient, store: SqlStore, relay: OutboxRelay) {
  const committed = txs.filter((t) => t.outcome === 'commit')
  const expected = committed.reduce((n, t) => n + t.msgs.length, 0)
  await relay.flush()
  await until(() => expect(CHANNELS.reduce((n, ch) => n + client.messages(ch).length, 0)).toBeGreaterThanOrEqual(expected))
  await sleep(100) // anything late (a phantom, a second copy) would show here
  const byTx = new Map(txs.map((t) => [t.i, t]))
  let phantom = 0
  let lost = 0
  let outOfOrder = 0
  let duplicates = 0
  let delivered = 0
  let storedTwice = 0
  let offsetGaps = 0
  for (const ch of CHANNELS) {
    const got: Received[] = client.messages(ch).map((m) => ({ ...(m.data as { tx: number; k: number }), offset: m.offset! }))
    delivered += got.length
    const seen = new Set<string>()
    for (const r of got) {
      const id = `${r.tx}.${r.k}`
      if (seen.has(id)) duplicates++
      seen.add(id)
      if (byTx.get(r.tx)?.outcome !== 'commit') phantom++
    }
    for (const t of committed) for (const m of t.msgs) if (m.ch === ch && !seen.has(`${t.i}.${m.k}`)) lost++
    // the guaranteed order: no message after one of a transaction that happened after it
    for (let j = 0; j < got.length; j++) {
      for (let i = 0; i < j; i++) {
        const earlier = byTx.get(got[i]!.tx)!
        const later = byTx.get(got[j]!.tx)!
        if (earlier === later ? got[j]!.k < got[i]!.k : later.after < earlier.before) outOfOrder++
      }
    }
    got.forEach((r, i) => {
      if (r.offset !== i + 1) offsetGaps++
    })
    const log = await store.read(ch, { after: 0, limit: 1_000_000, now: Date.now() })
    const ids = log.messages.map((m) => `${(m.data as Received).tx}.${(m.data as Received).k}`)
    storedTwice += ids.length - new Set(ids).size
    expect(new Set(ids)).toEqual(seen)
  }
  const stats = relay.stats()
  const latencies = committed.flatMap((t) => t.msgs.map((m) => (arrivals.get(`${t.i}.${m.k}`) ?? Number.NaN) - t.after)).filter((v) => Number.isFinite(v))
  console.log(`txpublish: transactions=${txs.length} committed=${committed.length} delivered=${delivered} phantom=${phantom} lost=${lost} out-of-order=${outOfOrder}`)
  console.log(
    `txpublish (${label}): messages expected=${expected} duplicates=${duplicates} stored-twice=${storedTwice} offset-gaps=${offsetGaps} relay relayed=${stats.relayed} batches=${stats.batches} waits=${stats.waits} notifications=${stats.notifications} commit→delivery ms p50=${percentile(latencies, 50).toFixed(1)} p95=${percentile(latencies, 95).toFixed(1)} max=${percentile(latencies, 100).toFixed(1)}`,
  )
  expect({ phantom, lost, outOfOrder, duplicates, storedTwice, offsetGaps, delivered }).toEqual({ phantom: 0, lost: 0, outOfOrder: 0, duplicates: 0, storedTwice: 0, offsetGaps: 0, delivered: expected })
  expect(await relay.backlog()).toEqual({ pending: 0, failed: 0 })
}

/** Where a test's store and relay live (they share it), and the relay's own options. */
interface Setup {
  readonly db: SqlStoreOptions['db'] & OutboxRelayOptions['db']
  readonly where?: { readonly schema: string; readonly prefix: string } | undefined
  readonly relay?: Omit<Partial<OutboxRelayOptions>, 'db' | 'hub' | 'store'> | undefined
}

/** A store, a hub on it and a relay, handed to `fn` once the relay is ready; all three closed after it, whatever happens. */
async function withRelay(setup: Setup, fn: (s: { store: SqlStore; hub: Hub; relay: OutboxRelay }) => Promise<void>): Promise<void> {
  const store = createSqlStore({ db: setup.db, ...setup.where, migrate: false, sweepIntervalMs: false })
  const hub = makeHub(store)
  const relay = createOutboxRelay({ db: setup.db, hub, store, ...setup.where, migrate: false, ...setup.relay })
  try {
    await relay.ready
    await fn({ store, hub, relay })
  } finally {
    await relay.close()
    await hub.close()
    await store.close()
  }
}

/** A client of `hub` subscribed to `channel`. */
async function watch(hub: Hub, channel: string): Promise<MemoryClient> {
  const client = await createMemoryTransport(hub).connect({ userId: 'w' })
  await client.subscribe(channel)
  return client
}

/** Waits until `client` has received exactly these message data on `channel`. */
const received = (client: MemoryClient, channel: string, data: unknown[], ms?: number) => until(() => expect(client.messages(channel).map((m) => m.data)).toEqual(data), ms)

/**
 * The scenario both databases run: `load` concurrent app transactions (on the app's `app.db`,
 * raw `pg` clients too when `app.pool` is given) against a relay woken by NOTIFY; the subscriber
 * must get exactly the committed messages, once, in commit order, each stored once.
 */
async function committedInCommitOrder(label: string, setup: Setup, app: { db: Kysely<any>; pool?: pg.Pool | undefined }, load: { n: number; pairs: number; concurrency: number; seed: number }) {
  await withRelay(setup, async ({ store, hub, relay }) => {
    expect(relay.active).toBe(true)
    const client = await subscriber(hub)
    const { txs, inversions } = await workload({ ...app, ...load })
    expect(inversions).toHaveLength(load.pairs)
    for (const { a, b } of inversions) expect(BigInt(a)).toBeLessThan(BigInt(b))
    await check(label, txs, client, store, relay)
    expect(relay.stats().notifications).toBeGreaterThan(0)
  })
}

describe('transactional publish on PostgreSQL', () => {
  let server: PostgresServer
  let url: string
  let db: Kysely<any>
  let pool: pg.Pool
  beforeAll(async () => {
    server = await startPostgres()
    url = await server.createDatabase()
    pool = new pg.Pool({ connectionString: url, max: 60 })
    db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
    await migrate(db)
    await sql`CREATE TABLE orders (id serial PRIMARY KEY, tx integer NOT NULL)`.execute(db)
  }, 60_000)
  afterAll(async () => {
    await db?.destroy()
    await server?.stop()
  })
  const onUrl = (relay?: Setup['relay']): Setup => ({ db: { postgres: url }, relay })

  it('340 concurrent transactions with random commits, rollbacks and commit order (20 pairs commit a smaller outbox id after a larger one): the subscriber gets every committed message once, no rolled-back one, in commit order per channel, each stored once', async () => {
    await committedInCommitOrder('postgres', onUrl(), { db, pool }, { n: 300, pairs: 20, concurrency: 40, seed: 12 })
  }, 60_000)

  it('a committed transaction is held, not skipped, while a transaction with a smaller outbox id is still open, then both arrive in commit order', async () => {
    await withRelay(onUrl(), async ({ hub }) => {
      const client = await watch(hub, 'orders:held')
      const a = await db.startTransaction().execute()
      const pa = await publish(a, 'orders:held', 'order', { n: 'a' })
      const b = await db.startTransaction().execute()
      const pb = await publish(b, 'orders:held', 'order', { n: 'b' })
      expect(BigInt(pa.id)).toBeLessThan(BigInt(pb.id))
      await b.commit().execute()
      await sleep(300)
      // b is committed but a (smaller id, still running) might yet take an earlier place: held
      expect(client.messages('orders:held')).toEqual([])
      await a.commit().execute()
      await received(client, 'orders:held', [{ n: 'b' }, { n: 'a' }])
      expect(client.messages('orders:held').map((m) => m.offset)).toEqual([1, 2])
    })
  }, 30_000)

  it('one relay per database: a second waits on the lock and takes over when the first stops', async () => {
    await withRelay(onUrl(), async ({ hub, store, relay: first }) => {
      const second = createOutboxRelay({ db: { postgres: url }, hub, store, migrate: false, takeoverIntervalMs: 50 })
      try {
        await second.ready
        expect([first.active, second.active]).toEqual([true, false])
        const client = await watch(hub, 'orders:lock')
        await db.transaction().execute((trx) => publish(trx, 'orders:lock', 'order', { n: 1 }))
        await until(() => expect(client.messages('orders:lock')).toHaveLength(1))
        await first.close()
        await db.transaction().execute((trx) => publish(trx, 'orders:lock', 'order', { n: 2 }))
        await until(() => expect(second.active).toBe(true))
        await received(client, 'orders:lock', [{ n: 1 }, { n: 2 }])
        expect(second.stats().relayed).toBe(1)
      } finally {
        await second.close()
      }
    })
  }, 30_000)

  it('on the app\'s Kysely alone (no LISTEN connection) the relay holds its lock on a pooled connection, polls, and a second one stays a standby until it closes', async () => {
    await withRelay({ db, relay: { pollIntervalMs: 50 } }, async ({ hub, store, relay: first }) => {
      const second = createOutboxRelay({ db, hub, store, migrate: false, pollIntervalMs: 50, takeoverIntervalMs: 50 })
      try {
        await second.ready
        expect([first.active, second.active]).toEqual([true, false])
        const client = await watch(hub, 'orders:poll')
        await db.transaction().execute((trx) => publish(trx, 'orders:poll', 'order', { n: 1 }))
        await received(client, 'orders:poll', [{ n: 1 }])
        expect(first.stats().notifications).toBe(0)
        await first.close()
        await until(() => expect(second.active).toBe(true))
        await db.transaction().execute((trx) => publish(trx, 'orders:poll', 'order', { n: 2 }))
        await received(client, 'orders:poll', [{ n: 1 }, { n: 2 }])
      } finally {
        await second.close()
      }
    })
  }, 30_000)

  it('the relay\'s lock connection killed by the server (pg_terminate_backend): it stops, takes the lock again and goes on relaying', async () => {
    await withRelay(onUrl({ takeoverIntervalMs: 50, onError: () => undefined }), async ({ hub, relay }) => {
      const client = await watch(hub, 'orders:kill')
      await db.transaction().execute((trx) => publish(trx, 'orders:kill', 'order', { n: 1 }))
      await until(() => expect(client.messages('orders:kill')).toHaveLength(1))
      const { rows } = await sql<{ killed: boolean }>`
        SELECT pg_terminate_backend(pid) AS killed FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()`.execute(db)
      expect(rows.map((r) => r.killed)).toEqual([true])
      await until(() => expect(relay.stats().takeovers).toBe(2))
      expect(relay.active).toBe(true)
      await db.transaction().execute((trx) => publish(trx, 'orders:kill', 'order', { n: 2 }))
      await received(client, 'orders:kill', [{ n: 1 }, { n: 2 }])
    })
  }, 30_000)

  it('a publish undone by ROLLBACK TO SAVEPOINT is never delivered; the ones around it in the same transaction are, in call order', async () => {
    await withRelay(onUrl(), async ({ hub, relay }) => {
      const client = await watch(hub, 'orders:savepoint')
      await db.transaction().execute(async (trx) => {
        await publish(trx, 'orders:savepoint', 'order', { n: 1 })
        await sql`SAVEPOINT s1`.execute(trx)
        await publish(trx, 'orders:savepoint', 'order', { n: 'undone' })
        await sql`ROLLBACK TO SAVEPOINT s1`.execute(trx)
        await publish(trx, 'orders:savepoint', 'order', { n: 2 })
      })
      await relay.flush()
      await received(client, 'orders:savepoint', [{ n: 1 }, { n: 2 }])
      await sleep(100)
      expect(client.messages('orders:savepoint').map((m) => m.data)).toEqual([{ n: 1 }, { n: 2 }])
    })
  }, 30_000)

  it('a row the hub refuses for good (too large for its channel) is set aside and does not block the ones after it', async () => {
    const errors: unknown[] = []
    await withRelay(onUrl({ onError: (e) => errors.push(e) }), async ({ hub, relay }) => {
      const client = await watch(hub, 'small:x')
      await db.transaction().execute(async (trx) => {
        await publish(trx, 'small:x', 'big', { text: 'x'.repeat(1_000) })
        await publish(trx, 'small:x', 'ok', { n: 1 })
      })
      await until(() => expect(client.messages('small:x').map((m) => m.event)).toEqual(['ok']))
      expect(await relay.backlog()).toEqual({ pending: 0, failed: 1 })
      expect(String(errors[0])).toContain('RT_005')
      const { rows } = await sql<{ error: string }>`SELECT error FROM tidings_outbox WHERE failed_at IS NOT NULL`.execute(db)
      expect(rows[0]!.error).toMatch(/^RT_005/)
      await sql`DELETE FROM tidings_outbox`.execute(db)
    })
  }, 30_000)

  it('in a schema with a prefix, a relay on the app\'s Kysely (LISTEN on a connection of its own) is woken by NOTIFY, and a publish without NOTIFY is found by the poll', async () => {
    const where = { schema: 'app', prefix: 'rt_' }
    await migrate(db, where)
    await withRelay({ db, where, relay: { listen: url, pollIntervalMs: 300 } }, async ({ hub, relay }) => {
      expect(relay.active).toBe(true)
      const client = await watch(hub, 'orders:schema')
      await db.transaction().execute((trx) => publish(trx, 'orders:schema', 'order', { n: 1 }, where))
      await received(client, 'orders:schema', [{ n: 1 }], 5_000)
      expect(relay.stats().notifications).toBe(1)
      const raw = await pool.connect()
      try {
        await raw.query('BEGIN')
        await publishWithClient(raw, 'orders:schema', 'order', { n: 2 }, { ...where, notify: false })
        await raw.query('COMMIT')
      } finally {
        raw.release()
      }
      await received(client, 'orders:schema', [{ n: 1 }, { n: 2 }], 5_000)
      expect(relay.stats().notifications).toBe(1)
      const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM app.rt_messages WHERE channel = 'orders:schema'`.execute(db)
      expect(rows[0]!.n).toBe('2')
    })
  }, 30_000)
})

describe('transactional publish on PGlite', () => {
  let lite: PGlite
  let db: Kysely<any>
  beforeAll(async () => {
    lite = new PGlite('memory://')
    db = new Kysely<any>({ dialect: new PGliteDialect(lite) })
    await migrate(db)
    await sql`CREATE TABLE orders (id serial PRIMARY KEY, tx integer NOT NULL)`.execute(db)
  }, 60_000)
  afterAll(async () => {
    await lite?.close()
  })

  it('60 interleaved transactions with random commits and rollbacks on one PGlite (store, relay and app on its one Kysely, woken by LISTEN; the 60 s poll never runs): every committed message once, no rolled-back one, in commit order', async () => {
    await committedInCommitOrder('pglite', { db, relay: { listen: lite, pollIntervalMs: 60_000 } }, { db }, { n: 60, pairs: 0, concurrency: 6, seed: 7 })
  }, 60_000)

  it('a channel or event name the hub would refuse, or data JSON cannot hold, fails the publish call inside the transaction (RT_007 / TypeError), and no outbox row is left', async () => {
    const bad: Array<[string, string, unknown, { idempotencyKey?: string }?]> = [
      ['', 'e', 1],
      ['has space', 'e', 1],
      ['x'.repeat(201), 'e', 1],
      ['orders:ok', '', 1],
      ['orders:ok', 'e'.repeat(129), 1],
      ['orders:ok', 'e', 1, { idempotencyKey: '' }],
    ]
    for (const [channel, event, data, options] of bad) {
      const err = await db.transaction().execute((trx) => publish(trx, channel, event, data, options)).catch((e: unknown) => e)
      expect(err, `${channel.slice(0, 20)} / ${event.slice(0, 20)}`).toMatchObject({ code: 'RT_007' })
    }
    await expect(db.transaction().execute((trx) => publish(trx, 'orders:ok', 'e', { n: 1n }))).rejects.toThrow(TypeError)
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM tidings_outbox`.execute(db)
    expect(rows[0]!.n).toBe(0)
  })
})
