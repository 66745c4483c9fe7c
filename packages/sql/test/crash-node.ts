/**
 * One node of the crash-points test (test/crash-points.test.ts), run as a child process with tsx:
 * a hub with the SQL store and the outbox relay on PostgreSQL, and a subscriber connected through
 * the hub that acknowledges what it receives. It first takes over (drains what the previous,
 * killed node left), says so, then on "go" publishes three messages in app transactions and
 * stops dead at its crash point, writing a line and blocking the event loop until the parent
 * SIGKILLs it:
 *
 * - after-insert: the app's transaction wrote its row and published, before COMMIT;
 * - after-commit: the COMMIT returned to the app, before the relay could move the row;
 * - after-publish: the relay's store append of the row answered, before the relay deleted it;
 * - after-ack: the subscriber received the message and acknowledged it.
 *
 * Lines on stdout are JSON: { ready }, { committed: n }, { acked: n, offset }, { inserted: n }, { stored: n, offset }, { crash }.
 * Env: DATABASE_URL, POINT (a crash point, or 'none' to take over and wait for "exit").
 */
import { writeSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { type AppendOptions, type AppendResult, type StoredMessage, createHub, createMemoryTransport, silentLogger } from '@tidings/core'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { createOutboxRelay } from '../src/outbox.js'
import { publish } from '../src/publish.js'
import { createSqlStore } from '../src/store.js'

const url = process.env['DATABASE_URL']!
const point = process.env['POINT']!
const channel = `crash:${point}`
const say = (line: Record<string, unknown>) => writeSync(1, `${JSON.stringify(line)}\n`)
/** Stops the process where it stands (nothing else runs) until the parent kills it. */
const freeze = (line: Record<string, unknown>): never => {
  say({ ...line, crash: point })
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30_000)
  process.exit(3)
}

const store = createSqlStore({ db: { postgres: url }, migrate: false, sweepIntervalMs: false })
// The hub's store, watched: at after-publish the node stops once the append of message 4 answered.
const watched = {
  ...store,
  append: (ch: string, message: Omit<StoredMessage, 'offset' | 'channel'>, options: AppendOptions): Promise<AppendResult> =>
    store.append(ch, message, options).then((r) => {
      const n = (message.data as { n?: number } | null)?.n
      if (point === 'after-publish' && ch === channel && n === 4) freeze({ stored: n, offset: r.message.offset })
      return r
    }),
}
// A dedup window of 1 ms: a second append of a row after a crash is kept out by the relay's
// lookup in the store, not by the hub's window.
const hub = createHub({ store: watched, logger: silentLogger, dedupWindowMs: 1, channels: { 'crash:*': { history: { maxCount: 10_000, maxAgeMs: 3_600_000 }, delivery: 'at-least-once' } } })
const relay = createOutboxRelay({ db: { postgres: url }, hub, store, migrate: false, takeoverIntervalMs: 50 })
const pool = new pg.Pool({ connectionString: url, max: 4 })
const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })

// Lines from the parent, kept until asked for (one may arrive while the node is busy).
const inbox: string[] = []
let waiting: ((line: string) => void) | undefined
createInterface({ input: process.stdin }).on('line', (line) => {
  if (waiting) {
    const w = waiting
    waiting = undefined
    w(line)
  } else inbox.push(line)
})
const next = () => new Promise<string>((resolve) => (inbox.length > 0 ? resolve(inbox.shift()!) : (waiting = resolve)))

await relay.ready
const deadline = Date.now() + 60_000
while (!relay.active && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
await relay.flush()
say({ ready: true, active: relay.active, stats: relay.stats() })
if (point === 'none') {
  await next()
  await relay.close()
  await hub.close()
  await store.close()
  await db.destroy()
  process.exit(0)
}

const client = await createMemoryTransport(hub).connect({ userId: 'subscriber' })
await client.subscribe(channel)
client.on('message', (frame) => {
  const m = frame as unknown as { channel: string; data: { n: number }; offset: number }
  if (m.channel !== channel) return
  client.ack(channel, m.offset)
  say({ acked: m.data.n, offset: m.offset })
  if (point === 'after-ack' && m.data.n === 4) setTimeout(() => freeze({ acked: 4 }), 20)
})

await next() // "go"
for (const n of [1, 2, 3]) {
  await db.transaction().execute(async (trx) => {
    await sql`INSERT INTO orders (note) VALUES (${`${point} ${n}`})`.execute(trx)
    await publish(trx, channel, 'order', { n })
  })
  say({ committed: n })
}
await relay.flush()

if (point === 'after-insert') {
  const trx = await db.startTransaction().execute()
  await sql`INSERT INTO orders (note) VALUES (${`${point} 4`})`.execute(trx)
  await publish(trx, channel, 'order', { n: 4 })
  freeze({ inserted: 4 })
}
await db.transaction().execute(async (trx) => {
  await sql`INSERT INTO orders (note) VALUES (${`${point} 4`})`.execute(trx)
  await publish(trx, channel, 'order', { n: 4 })
})
if (point === 'after-commit') freeze({ committed: 4 })
say({ committed: 4 })
// after-publish and after-ack freeze from the store and the subscriber
await new Promise((r) => setTimeout(r, 20_000))
say({ error: 'the crash point was never reached' })
process.exit(4)
