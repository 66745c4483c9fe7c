import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, createTokenAuthenticator, silentLogger } from '@tidings/core'
import { createWsTransport } from '@tidings/ws'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLiveQueries } from '../src/index.js'
import { connectWs } from './live-client.js'
import { type PostgresServer, startPostgres } from './postgres.js'
import { COLLECTIONS, createSchema, liveQuerySuite } from './live-suite.js'

let server: PostgresServer
beforeAll(async () => {
  server = await startPostgres()
}, 60_000)
afterAll(async () => {
  await server?.stop()
})

// The shared suite over a real PostgreSQL: the provider LISTENs on a dedicated connection.
liveQuerySuite('PostgreSQL', async () => {
  const url = await server.createDatabase()
  const pool = new pg.Pool({ connectionString: url, max: 4 })
  const kysely = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
  return { db: { postgres: url }, kysely, close: () => kysely.destroy() }
})

describe('live queries over a real ws connection (PostgreSQL)', () => {
  it('a raw ws client opens two queries on one collection, gets snapshots and changes, is refused bad queries, unsubscribes, and resumes after reconnecting', async () => {
    const url = await server.createDatabase()
    const kysely = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 2 }) }) })
    await createSchema(kysely)
    await kysely.insertInto('members').values([{ room_id: 'r1', user_id: 'ada' }]).execute()
    await kysely.insertInto('messages').values([
      { id: 'a', roomId: 'r1', createdAt: 1, body: 'first' },
      { id: 'b', roomId: 'r1', createdAt: 2, body: 'second' },
      { id: 'x', roomId: 'r9', createdAt: 3, body: 'secret' },
    ]).execute()
    const live = createLiveQueries({ db: { postgres: url }, collections: COLLECTIONS })
    await live.install()
    await live.start()
    const hub = createHub({ logger: silentLogger, authenticate: createTokenAuthenticator({ 'tok-ada': { userId: 'ada' } }), liveQueries: live })
    const transport = createWsTransport(hub)
    const http: Server = createServer((_req, res) => res.writeHead(404).end())
    transport.attach(http)
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r))
    const wsUrl = `ws://127.0.0.1:${(http.address() as AddressInfo).port}/realtime?token=tok-ada`
    try {
      const c = await connectWs(wsUrl)
      const newest = 'db:collection:messages:newest'
      const oldest = 'db:collection:messages:oldest'
      const s1 = await c.query(newest, { where: [['roomId', '==', 'r1']], orderBy: [['createdAt', 'desc']], limit: 1 })
      const s2 = await c.query(oldest, { orderBy: [['createdAt', 'asc']] })
      expect(s1.type).toBe('query:snapshot')
      expect((s1['docs'] as Array<{ id: string }>).map((d) => d.id)).toEqual(['b'])
      // The rule keeps room r9 out even though the query asks for everything.
      expect((s2['docs'] as Array<{ id: string }>).map((d) => d.id)).toEqual(['a', 'b'])
      // A subscribe whose query is invalid is answered by id with RT_007.
      const bad = await c.request({ type: 'subscribe', channel: 'db:collection:messages:bad', query: { where: [['body', '==', 'x']] } })
      expect(bad).toMatchObject({ type: 'error', code: 'RT_007' })
      expect(String(bad['message'])).toMatch(/no field 'body'/)
      // A publish into a live query channel is refused.
      const pub = await c.request({ type: 'message', channel: newest, event: 'x', data: {} })
      expect(pub).toMatchObject({ type: 'error', code: 'RT_004' })
      await kysely.insertInto('messages').values({ id: 'c', roomId: 'r1', createdAt: 5, body: 'third' }).execute()
      await c.waitFor((f) => f.type === 'query:changes' && f['channel'] === newest)
      await c.waitFor((f) => f.type === 'query:changes' && f['channel'] === oldest)
      expect(c.live.views.get(newest)!.docs.map((d) => d['id'])).toEqual(['c'])
      expect(c.live.views.get(oldest)!.docs.map((d) => d['id'])).toEqual(['a', 'b', 'c'])
      // Unsubscribe one: the other still follows.
      const un = await c.request({ type: 'unsubscribe', channel: newest })
      expect(un.type).toBe('unsubscribed')
      const held = { version: c.live.views.get(oldest)!.version, hash: c.live.views.get(oldest)!.hash }
      const mark = c.frames.length
      await kysely.updateTable('messages').set({ body: 'edited' }).where('id', '=', 'a').execute()
      const changed = await c.waitFor((f) => f.type === 'query:changes' && f['channel'] === oldest, 10_000, mark)
      expect(changed['changes']).toEqual([{ type: 'modified', doc: expect.objectContaining({ id: 'a', body: 'edited' }), oldIndex: 0, newIndex: 0 }])
      await new Promise((r) => setTimeout(r, 200))
      expect(c.frames.slice(mark).filter((f) => f['channel'] === newest)).toEqual([])
      expect(c.faults).toEqual([])
      const lastHeld = { version: c.live.views.get(oldest)!.version, hash: c.live.views.get(oldest)!.hash }
      c.close()
      // While the client is away: a delete. It reconnects and presents the last result it holds.
      await new Promise((r) => setTimeout(r, 100))
      await kysely.deleteFrom('messages').where('id', '=', 'b').execute()
      await new Promise((r) => setTimeout(r, 200))
      const again = await connectWs(wsUrl)
      const resumed = await again.query(oldest, { orderBy: [['createdAt', 'asc']] }, lastHeld)
      expect(resumed).toMatchObject({ type: 'query:changes', resumed: true })
      expect(resumed['changes']).toEqual([{ type: 'removed', doc: expect.objectContaining({ id: 'b' }), oldIndex: 1, newIndex: -1 }])
      expect(held.version).toBeLessThan(lastHeld.version)
      again.close()
    } finally {
      await hub.close()
      await live.close()
      await new Promise((r) => http.close(r))
      await kysely.destroy()
    }
  })
})
