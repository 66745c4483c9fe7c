import { PGlite } from '@electric-sql/pglite'
import { createTestHub } from '@tidings/core/testing'
import { Kysely, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLiveQueries } from '../src/index.js'
import { LiveClient } from './live-suite.js'

// Writes the triggers do not see: a table without `install()`. The app tells the provider,
// directly after the commit (`notify`, any dialect) or inside its transaction (`notifyIn`:
// pg_notify, heard only if the transaction commits).

describe('live queries without triggers', () => {
  let pglite: PGlite
  let db: Kysely<any>
  beforeAll(async () => {
    pglite = new PGlite('memory://')
    db = new Kysely<any>({ dialect: new PGliteDialect(pglite) })
    await sql`CREATE TABLE orders (id text PRIMARY KEY, total integer NOT NULL)`.execute(db)
  })
  afterAll(async () => {
    await pglite?.close()
  })

  it('notify() after a write, and notifyIn(trx) inside a transaction: a rollback wakes nobody, a commit updates the result', async () => {
    const live = createLiveQueries({ db: { pglite }, collections: { orders: { table: 'orders', fields: { total: ['>', 'orderBy'] } } } })
    await live.start()
    await using t = createTestHub({ liveQueries: live })
    const c = new LiveClient(await t.connect({ userId: 'ada' }))
    const ch = 'db:collection:orders'
    await c.query(ch, { where: [['total', '>', 10]], orderBy: [['total', 'desc']] })
    expect(c.ids(ch)).toEqual([])
    // No trigger: a plain insert is not seen…
    await db.insertInto('orders').values({ id: 'o1', total: 50 }).execute()
    await new Promise((r) => setTimeout(r, 150))
    await live.idle()
    expect(c.ids(ch)).toEqual([])
    // …until the app says so.
    let v = c.view(ch).version
    live.notify({ table: 'orders', key: 'o1', op: 'INSERT' })
    await c.changed(ch, v)
    expect(c.ids(ch)).toEqual(['o1'])
    // Inside a transaction that rolls back: nothing.
    const evaluations = live.stats().evaluations
    await db.transaction().execute(async (trx) => {
      await trx.insertInto('orders').values({ id: 'o2', total: 70 }).execute()
      await live.notifyIn(trx, { table: 'orders', key: 'o2', op: 'INSERT' })
      throw new Error('rollback')
    }).catch(() => undefined)
    await new Promise((r) => setTimeout(r, 150))
    await live.idle()
    expect(live.stats().evaluations).toBe(evaluations)
    // One that commits: the new row.
    v = c.view(ch).version
    await db.transaction().execute(async (trx) => {
      await trx.insertInto('orders').values({ id: 'o3', total: 90 }).execute()
      await live.notifyIn(trx, 'orders')
    })
    await c.changed(ch, v)
    expect(c.ids(ch)).toEqual(['o3', 'o1'])
    expect(c.faults).toEqual([])
    await t.close()
    await live.close()
  })

  it('a query the database cannot run (a collection over a missing table) is refused with RT_008 and leaves nothing open', async () => {
    const live = createLiveQueries({ db: { pglite }, listen: false, collections: { ghost: { table: 'no_such_table', fields: { x: ['=='] } } } })
    await using t = createTestHub({ liveQueries: live })
    const c = await t.connect({ userId: 'ada' })
    const err = await c.request({ type: 'subscribe', channel: 'db:collection:ghost', query: {} } as never).then(() => undefined, (e: unknown) => e)
    expect(err).toMatchObject({ code: 'RT_008', message: expect.stringMatching(/could not be evaluated.*no_such_table/) })
    expect(t.hub.channels.list()).toEqual([])
    expect(live.stats()).toMatchObject({ queries: 0, subscribers: 0 })
    await live.close()
  })
})

