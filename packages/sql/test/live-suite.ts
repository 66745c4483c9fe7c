/**
 * The live query tests, run over PGlite (live-pglite.test.ts) and a real PostgreSQL
 * (live-postgres.test.ts): a hub with the SQL provider, in-memory clients speaking the frames,
 * and each client's result kept by applying the frames (LiveViews), compared with the database.
 */
import { type Identity, type LiveDoc, RealtimeError } from '@tidings/core'
import { type MemoryClient, type TestHub, createTestHub } from '@tidings/core/testing'
import { type Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type LiveQueries, type LiveQueriesOptions, createLiveQueries } from '../src/index.js'
import { type Frame, LiveViews } from './live-client.js'

export interface LiveFixture {
  /** The provider's database option (PGlite instance or `{ postgres: url }`). */
  readonly db: LiveQueriesOptions['db']
  /** Direct access for writes and checks. */
  readonly kysely: Kysely<any>
  close(): Promise<void>
}

export const SCHEMA = [
  `CREATE TABLE members (room_id text NOT NULL, user_id text NOT NULL, PRIMARY KEY (room_id, user_id))`,
  `CREATE TABLE messages (id text PRIMARY KEY, "roomId" text NOT NULL, "createdAt" integer NOT NULL, body text, pinned boolean NOT NULL DEFAULT false, score integer)`,
]

export const COLLECTIONS: LiveQueriesOptions['collections'] = {
  messages: {
    table: 'messages',
    key: 'id',
    fields: {
      roomId: ['==', '!=', 'in', 'not-in'],
      createdAt: ['==', '<', '<=', '>', '>=', 'orderBy'],
      pinned: ['=='],
      score: ['==', '!=', '<', '<=', '>', '>=', 'in', 'not-in', 'orderBy'],
    },
    // Only rows of rooms the user belongs to.
    rule: (identity: Identity) =>
      identity.userId === undefined ? false : (eb) => eb('roomId', 'in', eb.selectFrom('members').select('room_id').where('user_id', '=', identity.userId!)),
    watch: ['members'],
    maxLimit: 200,
  },
}

export async function createSchema(db: Kysely<any>): Promise<void> {
  for (const s of SCHEMA) await sql.raw(s).execute(db)
}

/** A live-query client over the memory transport: requests by id, every frame applied to views. */
export class LiveClient {
  readonly views = new LiveViews()
  readonly faults: string[] = []
  readonly seen: Frame[] = []
  private waiters: Array<{ match: (f: Frame) => boolean; resolve: (f: Frame) => void }> = []

  constructor(readonly client: MemoryClient) {
    client.on('frame', (f: unknown) => {
      const frame = f as Frame
      this.seen.push(frame)
      try {
        this.views.apply(frame)
      } catch (err) {
        this.faults.push(String(err))
      }
      for (const w of [...this.waiters]) if (w.match(frame)) (this.waiters.splice(this.waiters.indexOf(w), 1), w.resolve(frame))
    })
  }

  view(channel: string) {
    const v = this.views.views.get(channel)
    if (!v) throw new Error(`no result for ${channel}`)
    return v
  }

  docs(channel: string): LiveDoc[] {
    return this.view(channel).docs
  }

  ids(channel: string): string[] {
    return this.docs(channel).map((d) => d['id'] as string)
  }

  waitFor(match: (f: Frame) => boolean, ms = 10_000): Promise<Frame> {
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for a frame')), ms)
      this.waiters.push({ match, resolve: (f) => (clearTimeout(timer), resolve(f)) })
    })
  }

  /** Subscribes; resolves once the first result is applied. Rejects with the RealtimeError of a refusal. */
  async query(channel: string, query: unknown, resume?: { version: number; hash: string }): Promise<Frame> {
    const first = this.waitFor((f) => f['channel'] === channel && (f.type === 'query:snapshot' || (f.type === 'query:changes' && f['resumed'] === true)))
    first.catch(() => undefined)
    await this.client.request({ type: 'subscribe', channel, query, ...(resume ? { resume } : {}) } as never)
    return first
  }

  /** Waits until the channel's result reaches a version newer than `after`. */
  async changed(channel: string, after: number, ms = 10_000): Promise<void> {
    if ((this.views.views.get(channel)?.version ?? 0) > after) return
    await this.waitFor((f) => f.type === 'query:changes' && f['channel'] === channel && (f['version'] as number) > after, ms)
  }
}

let ids = 0
export const nextId = (): string => `m${String(++ids).padStart(6, '0')}`

export function liveQuerySuite(name: string, make: () => Promise<LiveFixture>): void {
  describe(`live queries over ${name}`, () => {
    let fx: LiveFixture
    let live: LiveQueries
    let t: TestHub
    const users: Record<string, LiveClient> = {}

    beforeAll(async () => {
      fx = await make()
      await createSchema(fx.kysely)
      live = createLiveQueries({ db: fx.db, collections: COLLECTIONS, maxQueriesPerUser: 1_000 }) // one user holds the 1,000 of the multiplexing test
      await live.install()
      await live.start()
      t = createTestHub({ liveQueries: live, limits: { maxSubscriptions: 2000, maxConnectionsPerUser: 100 } })
      await fx.kysely.insertInto('members').values([
        { room_id: 'r1', user_id: 'ada' },
        { room_id: 'r2', user_id: 'ada' },
        { room_id: 'r1', user_id: 'bob' },
      ]).execute()
      for (const u of ['ada', 'bob', 'eve']) users[u] = new LiveClient(await t.connect({ userId: u }))
    })
    afterAll(async () => {
      await t?.close()
      await live?.close()
      await fx?.close()
    })

    const insert = async (rows: Array<Partial<{ id: string; roomId: string; createdAt: number; body: string; pinned: boolean; score: number | null }>>) => {
      const full = rows.map((r) => ({ id: r.id ?? nextId(), roomId: r.roomId ?? 'r1', createdAt: r.createdAt ?? 0, body: r.body ?? 'hi', pinned: r.pinned ?? false, score: r.score ?? null }))
      await fx.kysely.insertInto('messages').values(full).execute()
      return full.map((r) => r.id)
    }
    /** No change heard for 150 ms and no evaluation running: earlier writes are all taken into account. */
    const quiet = async () => {
      let last = -1
      while (live.stats().changes !== last) {
        last = live.stats().changes
        await new Promise((r) => setTimeout(r, 150))
        await live.idle()
      }
    }
    /** What the query gives now, read straight from the database (the client's result must equal it). */
    const fresh = async (roomIds: string[], orderDesc: boolean, limit: number, extra?: (q: any) => any) => {
      let q = fx.kysely.selectFrom('messages').selectAll().where('roomId', 'in', roomIds)
      if (extra) q = extra(q)
      return (await q.orderBy('createdAt', orderDesc ? 'desc' : 'asc').orderBy('id', orderDesc ? 'desc' : 'asc').limit(limit).execute()).map((r: any) => r.id as string)
    }

    it('a limited window reports rows entering and leaving it as added and removed, with Firestore indexes', async () => {
      await fx.kysely.deleteFrom('messages').execute()
      const [a, b, c] = await insert([
        { roomId: 'r1', createdAt: 10 },
        { roomId: 'r1', createdAt: 20 },
        { roomId: 'r1', createdAt: 30 },
      ])
      const ada = users['ada']!
      const ch = 'db:collection:messages:window'
      const snap = await ada.query(ch, { where: [['roomId', '==', 'r1']], orderBy: [['createdAt', 'desc']], limit: 2 })
      expect(snap.type).toBe('query:snapshot')
      expect(snap['key']).toBe('id')
      expect(ada.ids(ch)).toEqual([c, b])
      // A newer row enters at the top; the oldest of the window (b) leaves it.
      let v = ada.view(ch).version
      const [d] = await insert([{ roomId: 'r1', createdAt: 40 }])
      await ada.changed(ch, v)
      const frame = ada.seen.filter((f) => f.type === 'query:changes' && f['channel'] === ch).at(-1)!
      expect(frame['changes']).toEqual([
        { type: 'removed', doc: expect.objectContaining({ id: b }), oldIndex: 1, newIndex: -1 },
        { type: 'added', doc: expect.objectContaining({ id: d }), oldIndex: -1, newIndex: 0 },
      ])
      expect(ada.ids(ch)).toEqual([d, c])
      // A modification that moves a row: c goes to the top.
      v = ada.view(ch).version
      await fx.kysely.updateTable('messages').set({ createdAt: 50, body: 'edited' }).where('id', '=', c!).execute()
      await ada.changed(ch, v)
      const moved = ada.seen.filter((f) => f.type === 'query:changes' && f['channel'] === ch).at(-1)!
      expect(moved['changes']).toEqual([{ type: 'modified', doc: expect.objectContaining({ id: c, body: 'edited', createdAt: 50 }), oldIndex: 1, newIndex: 0 }])
      // A delete inside the window lets the next row (b) in at the end.
      v = ada.view(ch).version
      await fx.kysely.deleteFrom('messages').where('id', '=', d!).execute()
      await ada.changed(ch, v)
      expect(ada.ids(ch)).toEqual([c, b])
      expect(ada.ids(ch)).toEqual(await fresh(['r1'], true, 2))
      // A row of another room changes nothing of this result (no frame, no version).
      v = ada.view(ch).version
      await insert([{ roomId: 'r2', createdAt: 99 }])
      await live.idle()
      await new Promise((r) => setTimeout(r, 100))
      await live.idle()
      expect(ada.view(ch).version).toBe(v)
      expect(a).toBeDefined()
      expect(ada.faults).toEqual([])
    })

    it('inserts, updates and deletes in bursts leave every client with exactly the database result, in order', async () => {
      await fx.kysely.deleteFrom('messages').execute()
      const ada = users['ada']!
      const asc = 'db:collection:messages:asc'
      const desc = 'db:collection:messages:desc'
      await ada.query(asc, { where: { or: [['roomId', '==', 'r1'], ['roomId', '==', 'r2']] }, orderBy: [['createdAt', 'asc']], limit: 5 })
      await ada.query(desc, { where: [['roomId', 'in', ['r1', 'r2']]], orderBy: [['createdAt', 'desc']], limit: 7 })
      const rows: string[] = []
      for (let i = 0; i < 30; i++) {
        const op = i % 5
        if (op === 3 && rows.length > 0) await fx.kysely.deleteFrom('messages').where('id', '=', rows.splice(i % rows.length, 1)[0]!).execute()
        else if (op === 4 && rows.length > 0) await fx.kysely.updateTable('messages').set({ createdAt: (i * 37) % 50 }).where('id', '=', rows[(i * 7) % rows.length]!).execute()
        else rows.push(...(await insert([{ roomId: i % 2 ? 'r1' : 'r2', createdAt: (i * 13) % 50 }])))
      }
      // Wait until both results stop changing and match the database.
      const expectedAsc = await fresh(['r1', 'r2'], false, 5)
      const expectedDesc = await fresh(['r1', 'r2'], true, 7)
      for (let i = 0; i < 100; i++) {
        await live.idle()
        if (JSON.stringify(ada.ids(asc)) === JSON.stringify(expectedAsc) && JSON.stringify(ada.ids(desc)) === JSON.stringify(expectedDesc)) break
        await new Promise((r) => setTimeout(r, 50))
      }
      expect(ada.ids(asc)).toEqual(expectedAsc)
      expect(ada.ids(desc)).toEqual(expectedDesc)
      expect(ada.faults).toEqual([])
    })

    it('startAfter pages by cursor (with and without the key) and the second page stays live', async () => {
      await fx.kysely.deleteFrom('messages').execute()
      const ids = await insert([10, 20, 20, 30, 40, 50].map((createdAt) => ({ roomId: 'r1', createdAt })))
      const bob = users['bob']!
      const p2 = 'db:collection:messages:page2'
      await bob.query(p2, { where: [['roomId', '==', 'r1']], orderBy: [['createdAt', 'asc']], limit: 2, startAfter: [20, ids[1]!] })
      expect(bob.ids(p2)).toEqual([ids[2], ids[3]])
      const p3 = 'db:collection:messages:page3'
      await bob.query(p3, { where: [['roomId', '==', 'r1']], orderBy: [['createdAt', 'asc']], limit: 2, startAfter: [20] })
      expect(bob.ids(p3)).toEqual([ids[3], ids[4]])
      const v = bob.view(p2).version
      const [x] = await insert([{ roomId: 'r1', createdAt: 25 }])
      await bob.changed(p2, v)
      expect(bob.ids(p2)).toEqual([ids[2], x])
      // Before the cursor: not on this page.
      const v2 = bob.view(p2).version
      await insert([{ roomId: 'r1', createdAt: 5 }])
      await live.idle()
      await new Promise((r) => setTimeout(r, 100))
      expect(bob.view(p2).version).toBe(v2)
      expect(bob.faults).toEqual([])
    })

    it('several where clauses with AND and OR select exactly the matching rows', async () => {
      await fx.kysely.deleteFrom('messages').execute()
      const ids = await insert([
        { roomId: 'r1', createdAt: 1, score: 5, pinned: true },
        { roomId: 'r1', createdAt: 2, score: 50 },
        { roomId: 'r2', createdAt: 3, score: 7 },
        { roomId: 'r2', createdAt: 4, score: null, pinned: true },
        { roomId: 'r1', createdAt: 5, score: 9 },
      ])
      const ada = users['ada']!
      const ch = 'db:collection:messages:andor'
      // (pinned OR score > 8) AND createdAt >= 2 AND score != 50
      await ada.query(ch, {
        where: [{ or: [['pinned', '==', true], ['score', '>', 8]] }, ['createdAt', '>=', 2], { or: [['score', '!=', 50], ['score', '==', null]] }],
        orderBy: [['createdAt', 'asc']],
      })
      expect(ada.ids(ch)).toEqual([ids[3], ids[4]])
      const v = ada.view(ch).version
      await fx.kysely.updateTable('messages').set({ score: 60 }).where('id', '=', ids[2]!).execute()
      await ada.changed(ch, v)
      expect(ada.ids(ch)).toEqual([ids[2], ids[3], ids[4]])
    })

    it('unsubscribe stops updates, and a resubscribe presenting its hash resumes with only the changes', async () => {
      await fx.kysely.deleteFrom('messages').execute()
      await insert([{ roomId: 'r1', createdAt: 1 }, { roomId: 'r1', createdAt: 2 }])
      const bob = users['bob']!
      const ch = 'db:collection:messages:resume'
      const q = { where: [['roomId', '==', 'r1']], orderBy: [['createdAt', 'asc']], limit: 10 }
      await bob.query(ch, q)
      const held = { version: bob.view(ch).version, hash: bob.view(ch).hash }
      await bob.client.unsubscribe(ch)
      const seenBefore = bob.seen.length
      const [c] = await insert([{ roomId: 'r1', createdAt: 3 }])
      await live.idle()
      await new Promise((r) => setTimeout(r, 150))
      expect(bob.seen.slice(seenBefore).filter((f) => f['channel'] === ch)).toEqual([])
      // Resume: the server still has the result the client holds.
      const first = await bob.query(ch, q, held)
      expect(first.type).toBe('query:changes')
      expect(first['resumed']).toBe(true)
      expect(first['changes']).toEqual([{ type: 'added', doc: expect.objectContaining({ id: c }), oldIndex: -1, newIndex: 2 }])
      expect(bob.view(ch).docs.length).toBe(3)
      // A hash the server never had: a full snapshot, flagged.
      await bob.client.unsubscribe(ch)
      const reset = await bob.query(ch, q, { version: 1, hash: 'not-a-known-hash' })
      expect(reset.type).toBe('query:snapshot')
      expect(reset['reset']).toBe(true)
      expect(bob.faults).toEqual([])
    })

    it('a user never sees rows of rooms the rule forbids, and membership changes move rows in and out', async () => {
      await fx.kysely.deleteFrom('messages').execute()
      await insert([{ roomId: 'r1', createdAt: 1 }, { roomId: 'r2', createdAt: 2 }, { roomId: 'r3', createdAt: 3 }])
      const bob = users['bob']!
      const ch = 'db:collection:messages:all'
      // Bob asks for every room; the rule keeps him to r1.
      await bob.query(ch, { orderBy: [['createdAt', 'asc']] })
      expect(bob.docs(ch).map((d) => d['roomId'])).toEqual(['r1'])
      const v = bob.view(ch).version
      await fx.kysely.insertInto('members').values({ room_id: 'r3', user_id: 'bob' }).execute()
      await bob.changed(ch, v)
      expect(bob.docs(ch).map((d) => d['roomId'])).toEqual(['r1', 'r3'])
      const v2 = bob.view(ch).version
      await fx.kysely.deleteFrom('members').where('room_id', '=', 'r3').where('user_id', '=', 'bob').execute()
      await bob.changed(ch, v2)
      expect(bob.docs(ch).map((d) => d['roomId'])).toEqual(['r1'])
      // Eve belongs nowhere: an empty result, whatever she asks.
      const eve = users['eve']!
      await eve.query('db:collection:messages', { where: [['roomId', '==', 'r2']] })
      expect(eve.docs('db:collection:messages')).toEqual([])
    })

    it('invalid queries are refused with RT_007 naming the problem (unknown field, forbidden operator, oversized, deep)', async () => {
      const ada = users['ada']!.client
      const refuse = async (query: unknown, pattern: RegExp, code = 'RT_007', channel = 'db:collection:messages:bad') => {
        const err = (await ada.request({ type: 'subscribe', channel, query } as never).then(
          () => undefined,
          (e: unknown) => e,
        )) as RealtimeError | undefined
        expect(err, JSON.stringify(query)).toBeInstanceOf(RealtimeError)
        expect(err!.code).toBe(code)
        expect(err!.message).toMatch(pattern)
      }
      await refuse({ where: [['password', '==', 'x']] }, /no field 'password'/)
      await refuse({ where: [['pinned', '>', true]] }, /operator '>' is not allowed on 'messages.pinned'/)
      await refuse({ orderBy: [['body', 'asc']] }, /cannot be ordered by 'body'/)
      await refuse({ limit: 500 }, /limit 500 is over the maximum of 200/)
      await refuse({ limit: 5000 }, /limit/)
      await refuse({ where: [['roomId', 'in', Array.from({ length: 101 }, (_, i) => `r${i}`)]] }, /where/)
      await refuse({ where: Array.from({ length: 33 }, () => ['score', '==', 1]) }, /where/)
      const deep = { and: [{ or: [{ and: [{ or: [{ and: [['score', '==', 1], ['score', '==', 2]] }, ['score', '==', 3]] }, ['score', '==', 4]] }, ['score', '==', 5]] }, ['score', '==', 6]] }
      await refuse({ where: deep }, /nested deeper than 4/)
      await refuse({ where: [['roomId', 'LIKE', '%']] }, /where/)
      await refuse({ where: [['roomId; DROP TABLE messages', '==', 1]] }, /field names are identifiers/)
      await refuse({ where: [['roomId', '==', 'r1']], sql: 'SELECT 1' }, /Unrecognized key|sql/)
      await refuse({ startAfter: [1] }, /startAfter needs orderBy/)
      await refuse(undefined, /subscribe with a query/)
      await refuse({}, /no live collection 'nothing'/, 'RT_004', 'db:collection:nothing')
      // Nothing was left half-open.
      expect(t.hub.channels.list().filter((c) => c.name.endsWith(':bad'))).toEqual([])
    })

    it('a change no query can see costs no evaluation: the trigger sends the row before and after, and only queries whose where holds for either run again', async () => {
      for (const u of Object.values(users)) for (const ch of u.views.views.keys()) await u.client.unsubscribe(ch)
      await fx.kysely.deleteFrom('messages').execute()
      await quiet()
      expect(live.stats().queries).toBe(0)
      const ada = users['ada']!
      await ada.query('db:collection:messages:r1', { where: [['roomId', '==', 'r1']], orderBy: [['createdAt', 'asc']] })
      await ada.query('db:collection:messages:r2', { where: [['roomId', '==', 'r2']], orderBy: [['createdAt', 'asc']] })
      await ada.query('db:collection:messages:high', { where: [['roomId', 'in', ['r1', 'r2']], ['score', '>=', 100]], orderBy: [['createdAt', 'asc']] })
      const count = async (write: () => Promise<unknown>) => {
        await quiet()
        const before = live.stats().evaluations
        await write()
        await quiet()
        return live.stats().evaluations - before
      }
      const [id] = await insert([{ roomId: 'r3', createdAt: 1, score: 1 }])
      await quiet()
      // Only r1 sees an r1 row of score 5 (the high query needs score >= 100).
      expect(await count(() => insert([{ roomId: 'r1', createdAt: 2, score: 5 }]))).toBe(1)
      // A row moving from r3 (no query) to r2 with a high score: r2 and high.
      expect(await count(() => fx.kysely.updateTable('messages').set({ roomId: 'r2', score: 150 }).where('id', '=', id!).execute())).toBe(2)
      expect(ada.ids('db:collection:messages:high')).toEqual([id])
      // Leaving r2 for r3 again: the queries it leaves run (old row), the result loses it.
      expect(await count(() => fx.kysely.updateTable('messages').set({ roomId: 'r3' }).where('id', '=', id!).execute())).toBe(2)
      expect(ada.ids('db:collection:messages:high')).toEqual([])
      expect(ada.ids('db:collection:messages:r2')).toEqual([])
      // Rows of r3 and deletes of them: nobody.
      expect(await count(() => insert([{ roomId: 'r3', createdAt: 3 }]))).toBe(0)
      expect(await count(() => fx.kysely.deleteFrom('messages').where('roomId', '=', 'r3').execute())).toBe(0)
      // notify() without the row cannot tell: every query on the table runs.
      expect(await count(async () => live.notify('messages'))).toBe(3)
      for (const ch of [...ada.views.views.keys()]) await ada.client.unsubscribe(ch)
    })

    it('1,000 live queries over 10 distinct shapes cost exactly 10 evaluations per relevant change', async () => {
      await fx.kysely.deleteFrom('messages').execute()
      // The other tests' queries end first, so every evaluation counted here is of this test's.
      for (const u of Object.values(users)) for (const ch of u.views.views.keys()) await u.client.unsubscribe(ch)
      await insert([{ roomId: 'r1', createdAt: 1 }])
      await quiet()
      expect(live.stats().queries).toBe(0)
      const clients: LiveClient[] = []
      for (let i = 0; i < 10; i++) clients.push(new LiveClient(await t.connect({ userId: 'bob' })))
      const before = live.stats()
      // 10 shapes × 100 subscribers (10 clients × 10 channels each), the same scope (bob).
      await Promise.all(
        clients.flatMap((c, ci) =>
          Array.from({ length: 100 }, (_, j) => {
            const shape = j % 10
            return c.query(`db:collection:messages:mx${ci}-${j}`, { where: [['roomId', '==', 'r1'], ['createdAt', '>=', shape]], orderBy: [['createdAt', 'desc']], limit: 10 + shape })
          }),
        ),
      )
      const opened = live.stats()
      expect(opened.subscribers - before.subscribers).toBe(1000)
      expect(opened.queries - before.queries).toBe(10)
      expect(opened.evaluations - before.evaluations).toBe(10)
      for (let round = 1; round <= 3; round++) {
        const at = live.stats().evaluations
        const [id] = await insert([{ roomId: 'r1', createdAt: 100 + round }])
        // Every subscriber gets the row…
        for (let i = 0; i < 100 && !clients.every((c) => [...c.views.views.values()].every((v) => v.docs.some((d) => d['id'] === id))); i++) await new Promise((r) => setTimeout(r, 20))
        await live.idle()
        expect(clients.every((c) => [...c.views.views.values()].every((v) => v.docs.some((d) => d['id'] === id)))).toBe(true)
        // …from one evaluation per shape.
        expect(live.stats().evaluations - at).toBe(10)
      }
      for (const c of clients) c.client.close()
      await t.settle()
      await live.idle()
      expect(live.stats().subscribers).toBe(before.subscribers)
    })
  })
}
