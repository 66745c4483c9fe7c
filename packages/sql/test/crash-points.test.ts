import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Kysely, PostgresDialect, sql } from 'kysely'
import { migrate } from '../src/migrations/index.js'
import { type ChildScript, startScript } from './child-process.js'
import { type PostgresServer, startPostgres } from './postgres.js'

// Crash points of transactional publish: a node (test/crash-node.ts, its own process: hub, SQL
// store and outbox relay on a real PostgreSQL, a subscriber that acknowledges) is SIGKILLed
// after insert (before COMMIT), after commit, after publish (the store append answered, the
// outbox row not yet deleted) and after ack (the subscriber acknowledged). The next node takes
// over (the relay's advisory lock is free once the killed node's connection is gone) and drains
// the outbox. Then: every message the app saw committed or the subscriber acknowledged is in the
// channel log exactly once, and the one whose transaction never committed is not.

const POINTS = ['after-insert', 'after-commit', 'after-publish', 'after-ack'] as const

const startNode = (url: string, point: string): ChildScript => startScript('crash-node.ts', { DATABASE_URL: url, POINT: point }, `node ${point}`)

let server: PostgresServer
let url: string
let db: Kysely<any>

beforeAll(async () => {
  server = await startPostgres()
  url = await server.createDatabase()
  db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 2 }) }) })
  await migrate(db)
  await sql`CREATE TABLE orders (id serial PRIMARY KEY, note text NOT NULL)`.execute(db)
}, 60_000)
afterAll(async () => {
  await db?.destroy()
  await server?.stop()
})

/** How many times each message number is stored in the channel's log. */
async function storedCounts(channel: string): Promise<Map<number, number>> {
  const { rows } = await sql<{ n: number; copies: string }>`
    SELECT (data->>'n')::int AS n, count(*)::text AS copies FROM tidings_messages WHERE channel = ${channel} GROUP BY 1`.execute(db)
  return new Map(rows.map((r) => [r.n, Number(r.copies)]))
}

describe('crash points of transactional publish (SIGKILL, then another node takes over)', () => {
  it('after insert, after commit, after publish and after ack: nothing acknowledged goes missing, nothing is stored twice, nothing uncommitted appears', async () => {
    // Each node takes over from the one before it, then crashes at its own point; the last one only takes over.
    let previous: { point: string; node: ChildScript } | undefined
    const results: string[] = []
    const order = [...POINTS, 'none']
    // The next node starts while the one before it runs (it waits on the relay's lock as a standby), so spawning costs no extra time.
    let upcoming = startNode(url, order[0]!)
    for (const [i, point] of order.entries()) {
      const node = upcoming
      const ready = await node.waitFor((l) => l['ready'] === true)
      expect(ready['active']).toBe(true)
      if (previous) {
        const p = previous.point
        const channel = `crash:${p}`
        const lines = previous.node.lines
        const acknowledged = new Set<number>([...lines.flatMap((l) => (typeof l['committed'] === 'number' ? [l['committed']] : [])), ...lines.flatMap((l) => (typeof l['acked'] === 'number' ? [l['acked']] : []))])
        const counts = await storedCounts(channel)
        const missing = [...acknowledged].filter((n) => (counts.get(n) ?? 0) === 0).length
        const storedTwice = [...counts.values()].filter((c) => c > 1).length
        const uncommitted = p === 'after-insert' ? (counts.get(4) ?? 0) : 0
        const line = `crash-points: acknowledged-but-missing=${missing} stored-twice=${storedTwice} (point=${p} acknowledged=${acknowledged.size} stored=${counts.size} uncommitted-stored=${uncommitted})`
        console.log(line)
        results.push(line)
        expect({ missing, storedTwice, uncommitted }).toEqual({ missing: 0, storedTwice: 0, uncommitted: 0 })
        // what each point left behind was really there to take over
        if (p === 'after-commit' || p === 'after-ack') expect(acknowledged.has(4)).toBe(true)
        if (p === 'after-publish') expect((ready['stats'] as { verified: number }).verified).toBe(1)
        if (p === 'after-commit') expect((ready['stats'] as { relayed: number }).relayed).toBe(1)
        expect([...counts.keys()].sort()).toEqual(p === 'after-insert' ? [1, 2, 3] : [1, 2, 3, 4])
        const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM tidings_outbox`.execute(db)
        expect(rows[0]!.n).toBe('0')
      }
      if (point === 'none') {
        node.send('exit')
        expect((await node.exited).code).toBe(0)
        break
      }
      node.send('go')
      upcoming = startNode(url, order[i + 1]!)
      await node.waitFor((l) => l['crash'] === point)
      node.child.kill('SIGKILL')
      expect((await node.exited).signal).toBe('SIGKILL')
      previous = { point, node }
    }
    expect(results).toHaveLength(POINTS.length)
  }, 120_000)
})
