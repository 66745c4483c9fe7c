import pg from 'pg'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { createSqlStore } from '../src/index.js'
import { type PostgresServer, startPostgres } from './postgres.js'

let server: PostgresServer
let url: string

beforeAll(async () => {
  server = await startPostgres()
  url = await server.createDatabase()
}, 60_000)

afterAll(async () => {
  await server?.stop()
})

const KEEP = { maxCount: 1_000_000, maxAgeMs: 24 * 3_600_000 }

it('a PostgreSQL crash and restart mid-run: every append either rejects or is in the history; none resolved is lost; offsets stay gapless', async () => {
  // The test server runs with synchronous_commit=off; an acknowledged commit is durable only with it on (the PostgreSQL default).
  const pool = new pg.Pool({ connectionString: url, max: 10, options: '-c synchronous_commit=on' })
  const errors: unknown[] = []
  pool.on('error', (e) => errors.push(e))
  const store = createSqlStore({ db: { postgres: pool }, sweepIntervalMs: false })
  await store.ready
  const ch = 'room:crash'
  const resolved = new Map<string, number>()
  let rejected = 0
  let n = 0
  let stop = false
  const callers = Array.from({ length: 20 }, async () => {
    while (!stop) {
      const id = `m${n++}`
      const now = Date.now()
      try {
        const r = await store.append(ch, { id, event: 'e', data: { id }, timestamp: now }, { retention: KEEP, now })
        resolved.set(id, r.message.offset)
      } catch {
        rejected++
        await new Promise((r) => setTimeout(r, 20))
      }
    }
  })
  // let appends flow, crash the server under them, let them flow again
  const until = async (count: number) => {
    const deadline = Date.now() + 30_000
    while (resolved.size < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  }
  await until(500)
  const beforeCrash = resolved.size
  await server.restart()
  await until(beforeCrash + 500)
  stop = true
  await Promise.all(callers)
  expect(resolved.size).toBeGreaterThanOrEqual(beforeCrash + 500) // writes resumed after the restart
  expect(rejected).toBeGreaterThan(0) // the crash was seen by appends, as errors

  const history: Array<{ id: string; offset: number }> = []
  for (let after = 0; ; ) {
    const page = await store.read(ch, { after, limit: 1_000, now: Date.now() })
    if (page.messages.length === 0) break
    history.push(...page.messages.map((m) => ({ id: m.id, offset: m.offset })))
    after = page.messages.at(-1)!.offset
  }
  const top = (await store.position(ch)).offset
  expect(history.map((m) => m.offset)).toEqual(Array.from({ length: top }, (_, i) => i + 1)) // no gap
  expect(new Set(history.map((m) => m.id)).size).toBe(history.length) // nothing stored twice
  const stored = new Map(history.map((m) => [m.id, m.offset]))
  const lost = [...resolved].filter(([id, offset]) => stored.get(id) !== offset)
  console.log(`postgres crash: resolved=${resolved.size} rejected=${rejected} stored=${history.length} acknowledged-but-missing=${lost.length}`)
  expect(lost).toEqual([])
  await store.close()
  await pool.end()
}, 90_000)
