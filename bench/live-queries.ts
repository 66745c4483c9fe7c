/**
 * Live queries: change → update latency with 1,000 live queries open, on a private PostgreSQL
 * (the test harness: a temporary cluster on a free port, fsync off) and on PGlite (in process).
 *
 * Set-up: a hub with `createLiveQueries` and the WebSocket transport on a loopback port; USERS
 * `ws` clients (one user each, all members of one room) hold QUERIES live queries together:
 * SHAPES query shapes per user (`roomId == 'lobby'`, newest first, limits 10, 20, …), each
 * opened QUERIES / (USERS × SHAPES) times under tagged channel names. So there are
 * USERS × SHAPES distinct evaluations (the rule is per user) shared by QUERIES subscribers.
 *
 * Each round inserts one row into the room (every query sees it enter its window and another
 * leave) and waits until every subscriber received the `query:changes` frame with it. Latency
 * of one delivery = arrival of that frame at the client − start of the INSERT (its commit, the
 * trigger's pg_notify, LISTEN, the shared re-evaluations, the diff, the frame over ws). Rounds
 * run one after another; p50/p95 are over every delivery, `last` over the slowest subscriber of
 * each round.
 *
 * Prints, last:
 *   bench-live: postgres-p50=<ms> postgres-p95=<ms> pglite-p50=<ms> pglite-p95=<ms> queries=<n> evaluations-per-change=<n>
 *
 * Environment: QUERIES (1,000), USERS (20), SHAPES (5), ROUNDS (100), PGLITE (1; 0 skips it), PG_URL.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { createHub, createTokenAuthenticator, silentLogger } from '@tidings/core'
import { createWsTransport } from '@tidings/ws'
import WebSocket from 'ws'
import { createLiveQueries } from '../packages/sql/src/index.js'
import { Kysely, PGlite, PGliteDialect, PostgresDialect, pg, sql } from '../packages/sql/test/live-deps.js'
import { startPostgres } from '../packages/sql/test/postgres.js'

const env = process.env
const num = (name: string, fallback: number) => (env[name] ? Number(env[name]) : fallback)
const QUERIES = num('QUERIES', 1000)
const USERS = num('USERS', 20)
const SHAPES = num('SHAPES', 5)
const ROUNDS = num('ROUNDS', 100)
const COPIES = Math.max(1, Math.round(QUERIES / (USERS * SHAPES)))

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}
const ms = (x: number) => x.toFixed(2)

interface Result {
  p50: number
  p95: number
  last50: number
  last95: number
  evalsPerChange: number
  queries: number
}

async function measure(label: string, db: { postgres: string } | { pglite: PGlite }, kysely: Kysely<any>): Promise<Result> {
  await sql`CREATE TABLE members (room_id text NOT NULL, user_id text NOT NULL, PRIMARY KEY (room_id, user_id))`.execute(kysely)
  await sql`CREATE TABLE messages (id text PRIMARY KEY, "roomId" text NOT NULL, "createdAt" bigint NOT NULL, body text)`.execute(kysely)
  const users = Array.from({ length: USERS }, (_, i) => `u${i}`)
  await kysely.insertInto('members').values(users.map((u) => ({ room_id: 'lobby', user_id: u }))).execute()
  await kysely.insertInto('messages').values(Array.from({ length: 200 }, (_, i) => ({ id: `seed${i}`, roomId: 'lobby', createdAt: i, body: 'seed' }))).execute()
  const live = createLiveQueries({
    db,
    collections: {
      messages: {
        table: 'messages',
        fields: { roomId: ['==', 'in'], createdAt: ['<', '<=', '>', '>=', 'orderBy'] },
        rule: (identity) => (eb) => eb('roomId', 'in', eb.selectFrom('members').select('room_id').where('user_id', '=', identity.userId ?? '')),
        watch: ['members'],
      },
    },
  })
  await live.install()
  await live.start()
  const tokens = Object.fromEntries(users.map((u) => [`tok-${u}`, { userId: u }]))
  const hub = createHub({ logger: silentLogger, authenticate: createTokenAuthenticator(tokens), liveQueries: live, limits: { maxSubscriptions: 1000, messagesPerSecond: 100_000 } })
  const transport = createWsTransport(hub)
  const server = createServer((_req, res) => res.writeHead(404).end())
  transport.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port

  // Arrival times of each new row, per subscriber.
  let waiting: { id: string; t0: number; arrivals: number[]; need: number; done: () => void } | undefined
  const sockets: WebSocket[] = []
  let opened = 0
  let openedAll!: () => void
  const allOpen = new Promise<void>((r) => (openedAll = r))
  const total = USERS * SHAPES * COPIES
  for (const u of users) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/realtime?token=tok-${u}`, 'tidings.v1.json')
    sockets.push(ws)
    ws.on('message', (raw) => {
      const now = performance.now()
      const f = JSON.parse(String(raw)) as { type: string; changes?: Array<{ type: string; doc: { id: string } }> }
      if (f.type === 'query:snapshot' && ++opened === total) openedAll()
      else if (f.type === 'query:changes' && waiting && f.changes?.some((c) => c.type === 'added' && c.doc.id === waiting!.id)) {
        waiting.arrivals.push(now - waiting.t0)
        if (waiting.arrivals.length === waiting.need) waiting.done()
      } else if (f.type === 'error') console.error(`${label}: error frame`, f)
    })
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    let n = 0
    for (let s = 0; s < SHAPES; s++) {
      for (let c = 0; c < COPIES; c++) {
        ws.send(JSON.stringify({ type: 'subscribe', id: ++n, channel: `db:collection:messages:s${s}c${c}`, query: { where: [['roomId', '==', 'lobby']], orderBy: [['createdAt', 'desc']], limit: 10 * (s + 1) } }))
      }
    }
  }
  await allOpen
  const stats0 = live.stats()
  const all: number[] = []
  const lasts: number[] = []
  for (let r = 0; r < ROUNDS; r++) {
    const id = `row${r}`
    const arrivals: number[] = []
    const t0 = performance.now()
    const done = new Promise<void>((resolve) => (waiting = { id, t0, arrivals, need: total, done: resolve }))
    await kysely.insertInto('messages').values({ id, roomId: 'lobby', createdAt: 1000 + r, body: `round ${r}` }).execute()
    await done
    all.push(...arrivals)
    lasts.push(Math.max(...arrivals))
  }
  const stats1 = live.stats()
  const result: Result = {
    p50: pct(all, 50),
    p95: pct(all, 95),
    last50: pct(lasts, 50),
    last95: pct(lasts, 95),
    evalsPerChange: (stats1.evaluations - stats0.evaluations) / ROUNDS,
    queries: stats1.subscribers,
  }
  console.log(
    `${label}: live queries=${result.queries} distinct=${stats1.queries} rounds=${ROUNDS} ` +
      `delivery p50=${ms(result.p50)} ms p95=${ms(result.p95)} ms; slowest subscriber per change p50=${ms(result.last50)} ms p95=${ms(result.last95)} ms; ` +
      `evaluations per change=${result.evalsPerChange}`,
  )
  for (const ws of sockets) ws.close()
  await hub.close()
  await live.close()
  await new Promise((r) => server.close(r))
  return result
}

const pgServer = env['PG_URL'] ? undefined : await startPostgres()
try {
  const url = env['PG_URL'] ?? (await pgServer!.createDatabase('bench_live'))
  const kysely = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 4 }) }) })
  const postgres = await measure('postgres', { postgres: url }, kysely)
  await kysely.destroy()
  let pglite: Result | undefined
  if (env['PGLITE'] !== '0') {
    const instance = new PGlite('memory://')
    pglite = await measure('pglite', { pglite: instance }, new Kysely<any>({ dialect: new PGliteDialect(instance) }))
    await instance.close()
  }
  console.log(
    `bench-live: postgres-p50=${ms(postgres.p50)} postgres-p95=${ms(postgres.p95)}` +
      (pglite ? ` pglite-p50=${ms(pglite.p50)} pglite-p95=${ms(pglite.p95)}` : '') +
      ` queries=${postgres.queries} evaluations-per-change=${postgres.evalsPerChange}`,
  )
} finally {
  await pgServer?.stop()
}
