import { test, expect } from 'vitest'
import pg from 'pg'
import { startPostgres } from './postgres.js'
test('the test PostgreSQL answers queries, survives a crash restart and stops', async () => {
  const s = await startPostgres()
  const url = await s.createDatabase()
  const c = new pg.Client(url); await c.connect()
  const r = await c.query('select 1+1 as x'); expect(r.rows[0].x).toBe(2)
  await c.end(); await s.restart(); const c2 = new pg.Client(url); await c2.connect(); await c2.end()
  await s.stop()
})
