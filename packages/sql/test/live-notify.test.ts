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

  it('a query the database cannot run (a collection over a missing table) is refused with RT_008, the database\'s message only to onError, and leaves nothing open', async () => {
    const reported: Array<[unknown, string]> = []
    const live = createLiveQueries({ db: { pglite }, listen: false, onError: (e, stage) => reported.push([e, stage]), collections: { ghost: { table: 'no_such_table', fields: { x: ['=='] } } } })
    await using t = createTestHub({ liveQueries: live })
    const c = await t.connect({ userId: 'ada' })
    const err = await c.request({ type: 'subscribe', channel: 'db:collection:ghost', query: {} } as never).then(() => undefined, (e: unknown) => e)
    expect(err).toMatchObject({ code: 'RT_008', message: expect.stringMatching(/live query on 'ghost' could not be evaluated/) })
    expect(String((err as Error).message)).not.toContain('no_such_table')
    expect(reported.map(([e, stage]) => [stage, String(e)])).toEqual([['liveQueries.evaluate', expect.stringContaining('no_such_table')]])
    expect(t.hub.channels.list()).toEqual([])
    expect(live.stats()).toMatchObject({ queries: 0, subscribers: 0 })
    await live.close()
  })

  it('one user holds at most maxQueriesPerUser live queries over all its connections (RT_006); closing one gives its slot back; other users are not affected', async () => {
    const live = createLiveQueries({ db: { pglite }, listen: false, maxQueriesPerUser: 2, collections: { orders: { table: 'orders', fields: { total: ['>', 'orderBy'] } } } })
    await using t = createTestHub({ liveQueries: live })
    const [one, two] = [await t.connect({ userId: 'ada' }), await t.connect({ userId: 'ada' })]
    const open = (c: typeof one, tag: string, total = 0) =>
      c.request({ type: 'subscribe', channel: `db:collection:orders:${tag}`, query: { where: [['total', '>', total]] } } as never).then(
        () => 'ok',
        (e: { code?: string }) => e.code,
      )
    expect(await open(one, 'a', 1)).toBe('ok')
    expect(await open(two, 'b', 2)).toBe('ok')
    expect(await open(two, 'c', 3)).toBe('RT_006')
    expect(await open(one, 'd', 1)).toBe('RT_006') // the same query as one held: still a subscription of its own
    const bob = await t.connect({ userId: 'bob' })
    expect(await open(bob, 'a', 1)).toBe('ok')
    expect(live.stats()).toMatchObject({ subscribers: 3 })
    await one.unsubscribe('db:collection:orders:a')
    expect(await open(two, 'c', 3)).toBe('ok')
    two.close()
    await t.settle()
    expect(await open(one, 'e', 5)).toBe('ok')
    await live.close()
  })
})
