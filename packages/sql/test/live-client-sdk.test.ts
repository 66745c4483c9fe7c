/**
 * The client SDK's live queries (`rt.database().collection(…)…onSnapshot(…)`, @tidings/client)
 * against the real thing: a hub with the SQL provider over PGlite, the WebSocket transport on a
 * loopback HTTP server, and `Realtime` over the `ws` client. Each snapshot the SDK hands out is
 * compared with the database, and the frames it sent are recorded to check what it asked for.
 */
import { PGlite } from '@electric-sql/pglite'
import { type LiveQueryRef, type QuerySnapshot, Realtime, type RealtimeError } from '@tidings/client'
import { Kysely } from 'kysely'
import type WebSocket from 'ws'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RealServer, recordingWebSocket, startRealServer } from '../../client/test/real-hub.js'
import { type LiveChange, type LiveDoc, type LiveResultFrame, applyLiveFrame, diffLiveResults, resumeOf } from '@tidings/core'
import { type LiveQueries, createLiveQueries } from '../src/index.js'
import { COLLECTIONS, createSchema } from './live-suite.js'

type Msg = { id: string; roomId: string; createdAt: number; body: string | null; pinned: boolean; score: number | null }

let pglite: PGlite
let db: Kysely<any>
let live: LiveQueries
let server: RealServer
const clients: Realtime[] = []
const sent: Array<Record<string, unknown>> = []

let n = 0
const insert = async (rows: Array<Partial<Msg>>): Promise<string[]> => {
  const full = rows.map((r) => ({ id: r.id ?? `s${String(++n).padStart(5, '0')}`, roomId: r.roomId ?? 'r1', createdAt: r.createdAt ?? 0, body: r.body ?? 'hi', pinned: r.pinned ?? false, score: r.score ?? null }))
  await db.insertInto('messages').values(full).execute()
  return full.map((r) => r.id)
}

/** Every write so far has been seen and evaluated by the provider. */
const quiet = async () => {
  let last = -1
  while (live.stats().changes !== last) {
    last = live.stats().changes
    await new Promise((r) => setTimeout(r, 120))
    await live.idle()
  }
}

const until = async (what: string, ok: () => boolean, ms = 8000) => {
  const end = Date.now() + ms
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** Frames from the server that match are dropped before the SDK sees them (a lost frame). */
let dropInbound: ((text: string) => boolean) | undefined

function droppingWebSocket(): typeof WebSocket {
  return class extends recordingWebSocket(sent) {
    override emit(event: string | symbol, ...args: unknown[]): boolean {
      if (event === 'message' && dropInbound?.(String(args[0]))) return true
      return super.emit(event, ...args)
    }
  } as typeof WebSocket
}

function connect(user = 'ada'): Realtime {
  const rt = new Realtime({
    url: server.url,
    auth: `user:${user}`,
    transports: ['websocket'],
    WebSocket: droppingWebSocket() as never,
    heartbeatIntervalMs: 0,
    reconnectDelay: 30,
    maxReconnectDelay: 60,
    releaseOnPageHide: false,
  })
  clients.push(rt)
  return rt
}

/** Follows a query; keeps every snapshot and error. */
function follow<T>(query: LiveQueryRef<T>) {
  const snapshots: QuerySnapshot<T>[] = []
  const errors: RealtimeError[] = []
  const stop = query.onSnapshot(
    (s) => snapshots.push(s),
    (e) => errors.push(e as RealtimeError),
  )
  const ids = () => (snapshots.at(-1)?.docs ?? []).map((d) => (d as { id: string }).id)
  const next = async (after: number) => {
    await until(`a snapshot after #${after}`, () => snapshots.length > after)
    return snapshots[after]!
  }
  return { snapshots, errors, stop, ids, next }
}

/** Applies a snapshot's changes to the docs before it (Firestore's rule); must give its docs. */
function replay<T>(before: readonly T[], s: QuerySnapshot<T>): T[] {
  const out = [...before]
  for (const c of s.changes) {
    if (c.oldIndex >= 0) out.splice(c.oldIndex, 1)
    if (c.newIndex >= 0) out.splice(c.newIndex, 0, c.doc)
  }
  return out
}

const idsOf = (docs: readonly unknown[]) => docs.map((d) => (d as { id: string }).id)

beforeAll(async () => {
  pglite = new PGlite('memory://')
  db = new Kysely<any>({ dialect: new PGliteDialect(pglite) })
  await createSchema(db)
  live = createLiveQueries({ db: { pglite }, collections: COLLECTIONS })
  await live.install()
  await live.start()
  await db.insertInto('members').values([
    { room_id: 'r1', user_id: 'ada' },
    { room_id: 'r2', user_id: 'ada' },
  ]).execute()
  server = await startRealServer({ options: { liveQueries: live } })
})

afterAll(async () => {
  for (const rt of clients) rt.close()
  await server?.close()
  await live?.close()
  await pglite?.close()
})

describe('client SDK live queries (rt.database()) over WebSocket and PGlite', () => {
  it('the first snapshot holds the rows of the query in its order, every one added at its index', async () => {
    await db.deleteFrom('messages').execute()
    const [a, b, c] = await insert([{ createdAt: 10 }, { createdAt: 30 }, { createdAt: 20 }, { roomId: 'r2', createdAt: 40 }])
    const rt = connect()
    const q = follow(rt.database().collection<Msg>('messages').where('roomId', '==', 'r1').orderBy('createdAt', 'desc').limit(50))
    const s = await q.next(0)
    expect(idsOf(s.docs)).toEqual([b, c, a])
    expect(s.fromScratch).toBe(true)
    expect(s.changes.map((x) => [x.type, x.doc.id, x.oldIndex, x.newIndex])).toEqual([
      ['added', b, -1, 0],
      ['added', c, -1, 1],
      ['added', a, -1, 2],
    ])
    expect(s.key).toBe('id')
    // The subscribe carried the query as built, on a tagged channel of the collection.
    const sub = sent.find((f) => f['type'] === 'subscribe' && String(f['channel']).startsWith('db:collection:messages:'))!
    expect(sub['query']).toEqual({ where: ['roomId', '==', 'r1'], orderBy: [['createdAt', 'desc']], limit: 50 })
    expect(sub['resume']).toBeUndefined()
    expect(q.errors).toEqual([])
    q.stop()
  })

  it('inserts, updates and deletes arrive as added / modified / removed with indexes that rebuild the result', async () => {
    await db.deleteFrom('messages').execute()
    const [a, b] = await insert([{ createdAt: 10 }, { createdAt: 20 }])
    const rt = connect()
    const q = follow(rt.database().collection<Msg>('messages').where('roomId', '==', 'r1').orderBy('createdAt', 'desc'))
    await q.next(0)
    expect(q.ids()).toEqual([b, a])

    const [c] = await insert([{ createdAt: 15 }])
    let s = await q.next(1)
    expect(s.changes.map((x) => [x.type, x.doc.id, x.oldIndex, x.newIndex])).toEqual([['added', c, -1, 1]])
    expect(idsOf(replay(q.snapshots[0]!.docs, s))).toEqual(idsOf(s.docs))

    await db.updateTable('messages').set({ body: 'edited' }).where('id', '=', c!).execute()
    s = await q.next(2)
    expect(s.changes.map((x) => [x.type, x.doc.id, x.oldIndex, x.newIndex, x.doc.body])).toEqual([['modified', c, 1, 1, 'edited']])

    await db.updateTable('messages').set({ createdAt: 5 }).where('id', '=', b!).execute()
    s = await q.next(3)
    // A row moving down: reported as modified (the server's diff may also report the rows it passes).
    expect(new Set(s.changes.map((x) => x.type))).toEqual(new Set(['modified']))
    expect(s.changes.find((x) => x.doc.id === b)).toMatchObject({ oldIndex: expect.any(Number), newIndex: 2 })
    expect(idsOf(replay(q.snapshots[2]!.docs, s))).toEqual([c, a, b])
    expect(q.ids()).toEqual([c, a, b])

    await db.deleteFrom('messages').where('id', '=', a!).execute()
    s = await q.next(4)
    expect(s.changes.map((x) => [x.type, x.doc.id, x.oldIndex, x.newIndex])).toEqual([['removed', a, 1, -1]])
    expect(q.ids()).toEqual([c, b])
    for (let i = 1; i < q.snapshots.length; i++) expect(idsOf(replay(q.snapshots[i - 1]!.docs, q.snapshots[i]!))).toEqual(idsOf(q.snapshots[i]!.docs))
    expect(q.snapshots.every((x) => Object.isFrozen(x.docs))).toBe(true)
    q.stop()
  })

  it('a row entering a limited window pushes the last one out (added and removed), a delete lets the next one in', async () => {
    await db.deleteFrom('messages').execute()
    const [a, b, c] = await insert([{ createdAt: 10 }, { createdAt: 20 }, { createdAt: 30 }])
    const rt = connect()
    const q = follow(rt.database().collection<Msg>('messages').where('roomId', '==', 'r1').orderBy('createdAt', 'desc').limit(2))
    await q.next(0)
    expect(q.ids()).toEqual([c, b])
    const [d] = await insert([{ createdAt: 40 }])
    const s = await q.next(1)
    expect(s.changes.map((x) => [x.type, x.doc.id, x.oldIndex, x.newIndex])).toEqual([
      ['removed', b, 1, -1],
      ['added', d, -1, 0],
    ])
    await db.deleteFrom('messages').where('id', '=', c!).execute()
    const t = await q.next(2)
    expect(t.changes.map((x) => [x.type, x.doc.id])).toEqual([
      ['removed', c],
      ['added', b],
    ])
    expect(q.ids()).toEqual([d, b])
    expect(a).toBeDefined()
    q.stop()
  })

  it('several where clauses are ANDed and or(...) matches either branch; startAfter(doc) gives the next page', async () => {
    await db.deleteFrom('messages').execute()
    const [p1, , s1, , , r2p] = await insert([
      { createdAt: 1, pinned: true },
      { createdAt: 2 },
      { createdAt: 3, score: 50 },
      { createdAt: 4, score: 5 },
      { createdAt: 5, roomId: 'r3', pinned: true }, // ada is not in r3: the rule hides it
      { createdAt: 6, roomId: 'r2', pinned: true },
    ])
    const { or } = await import('@tidings/client')
    const rt = connect()
    const base = rt.database().collection<Msg>('messages').where('roomId', 'in', ['r1', 'r2', 'r3']).orderBy('createdAt', 'asc')
    const q = follow(base.where(or(['pinned', '==', true], ['score', '>', 10])))
    await q.next(0)
    expect(q.ids()).toEqual([p1, s1, r2p])
    // Pages of 2: the second starts after the last doc of the first.
    const page1 = follow(base.limit(2))
    const first = await page1.next(0)
    const page2 = follow(base.limit(2).startAfter(first.docs.at(-1)!))
    await page2.next(0)
    const all = (await db.selectFrom('messages').select('id').where('roomId', 'in', ['r1', 'r2']).orderBy('createdAt').execute()).map((r) => r.id)
    expect([...page1.ids(), ...page2.ids()]).toEqual(all.slice(0, 4))
    const frame = sent.filter((f) => f['type'] === 'subscribe').at(-1)!
    expect((frame['query'] as { startAfter: unknown }).startAfter).toEqual([first.docs.at(-1)!.createdAt, first.docs.at(-1)!.id])
    // The builders are immutable: refining `base` did not change it.
    expect(base.toJSON()).toEqual({ where: ['roomId', 'in', ['r1', 'r2', 'r3']], orderBy: [['createdAt', 'asc']] })
    for (const x of [q, page1, page2]) (expect(x.errors).toEqual([]), x.stop())
  })

  it('two tagged queries on one collection and one connection each get their own result', async () => {
    await db.deleteFrom('messages').execute()
    const [a, b] = await insert([{ roomId: 'r1', createdAt: 1 }, { roomId: 'r2', createdAt: 2 }])
    const rt = connect()
    const messages = rt.database().collection<Msg>('messages')
    const one = follow(messages.where('roomId', '==', 'r1').tag('room1'))
    const two = follow(messages.where('roomId', '==', 'r2').tag('room2'))
    await one.next(0)
    await two.next(0)
    expect(one.ids()).toEqual([a])
    expect(two.ids()).toEqual([b])
    expect(() => messages.tag('room1').onSnapshot(() => {})).toThrow(/already open/)
    const channels = sent.filter((f) => f['type'] === 'subscribe').slice(-2).map((f) => f['channel'])
    expect(channels).toEqual(['db:collection:messages:room1', 'db:collection:messages:room2'])
    const [c] = await insert([{ roomId: 'r2', createdAt: 3 }])
    await two.next(1)
    await quiet()
    expect(two.ids()).toEqual([b, c])
    expect(one.snapshots.length).toBe(1)
    one.stop()
    two.stop()
  })

  it('after unsubscribe no snapshot is delivered and the server closes the query', async () => {
    await db.deleteFrom('messages').execute()
    await quiet()
    const before = live.stats().subscribers
    const rt = connect()
    const q = follow(rt.database().collection<Msg>('messages').where('roomId', '==', 'r1'))
    await q.next(0)
    expect(live.stats().subscribers).toBe(before + 1)
    await insert([{ createdAt: 1 }])
    await q.next(1)
    q.stop()
    expect(rt.database().size).toBe(0)
    await until('the server to drop the query', () => live.stats().subscribers === before)
    await insert([{ createdAt: 2 }])
    await quiet()
    expect(q.snapshots.length).toBe(2)
    expect(q.errors).toEqual([])
  })

  it('after a reconnect the query resumes with only what changed meanwhile (no full reload)', async () => {
    await db.deleteFrom('messages').execute()
    const [a] = await insert([{ createdAt: 1 }])
    const rt = connect()
    const q = follow(rt.database().collection<Msg>('messages').where('roomId', '==', 'r1').orderBy('createdAt', 'asc').tag('resume'))
    const first = await q.next(0)
    expect(q.ids()).toEqual([a])
    const other = connect('bob') // keeps nothing open; the provider keeps the result cached
    other.disconnect()
    await new Promise<void>((r) => rt.once('disconnected', () => r()) && server.cut())
    const [b] = await insert([{ createdAt: 2 }])
    await quiet()
    await until('the reconnect', () => rt.state === 'connected')
    const s = await q.next(1)
    expect(s.resumed).toBe(true)
    expect(s.fromScratch).toBe(false)
    expect(s.changes.map((x) => [x.type, x.doc.id, x.oldIndex, x.newIndex])).toEqual([['added', b, -1, 1]])
    expect(q.ids()).toEqual([a, b])
    const resubscribe = sent.filter((f) => f['type'] === 'subscribe' && f['channel'] === 'db:collection:messages:resume').at(-1)!
    expect(resubscribe['resume']).toEqual({ version: first.version, hash: expect.any(String) })
    // And it goes on after the resume.
    const [c] = await insert([{ createdAt: 3 }])
    await q.next(2)
    expect(q.ids()).toEqual([a, b, c])
    expect(q.errors).toEqual([])
    q.stop()
  })

  it('a reconnect to a server that no longer has the result gets it whole (reset), with changes relative to what was held', async () => {
    // A second hub whose provider caches one result: another query evicts the one held.
    const small = createLiveQueries({ db: { pglite }, collections: COLLECTIONS, cacheSize: 1 })
    await small.start()
    const other = await startRealServer({ options: { liveQueries: small } })
    try {
      await db.deleteFrom('messages').execute()
      const [a, b] = await insert([{ createdAt: 1 }, { createdAt: 2 }])
      const rt = new Realtime({ url: other.url, auth: 'user:ada', transports: ['websocket'], WebSocket: droppingWebSocket() as never, heartbeatIntervalMs: 0, reconnectDelay: 30, maxReconnectDelay: 60, releaseOnPageHide: false })
      clients.push(rt)
      const q = follow(rt.database().collection<Msg>('messages').where('roomId', '==', 'r1').orderBy('createdAt', 'asc').tag('reset'))
      await q.next(0)
      expect(q.ids()).toEqual([a, b])
      rt.disconnect()
      await db.deleteFrom('messages').where('id', '=', a!).execute()
      const [c] = await insert([{ createdAt: 3 }])
      const evictor = new Realtime({ url: other.url, auth: 'user:ada', transports: ['websocket'], WebSocket: droppingWebSocket() as never, heartbeatIntervalMs: 0, releaseOnPageHide: false })
      clients.push(evictor)
      const e = follow(evictor.database().collection<Msg>('messages').where('roomId', '==', 'r2'))
      await e.next(0)
      rt.connect()
      const s = await q.next(1)
      expect(s.resumed).toBe(false)
      expect(s.fromScratch).toBe(true)
      expect(s.reset).toBe(true)
      expect(q.ids()).toEqual([b, c])
      expect(s.changes.map((x) => [x.type, x.doc.id])).toEqual([
        ['removed', a],
        ['added', c],
      ])
      expect(idsOf(replay(q.snapshots[0]!.docs, s))).toEqual([b, c])
      const resubscribe = sent.filter((f) => f['type'] === 'subscribe' && f['channel'] === 'db:collection:messages:reset').at(-1)!
      expect(resubscribe['resume']).toBeDefined()
      q.stop()
      e.stop()
    } finally {
      await other.close()
      await small.close()
    }
  })

  it('a lost query:changes frame is detected by prev and the SDK subscribes again with resume to catch up', async () => {
    await db.deleteFrom('messages').execute()
    const [a] = await insert([{ createdAt: 1 }])
    const rt = connect()
    const q = follow(rt.database().collection<Msg>('messages').where('roomId', '==', 'r1').orderBy('createdAt', 'asc').tag('lossy'))
    const first = await q.next(0)
    let dropped = 0
    dropInbound = (text) => text.includes('"query:changes"') && text.includes('messages:lossy') && dropped++ === 0
    const [b] = await insert([{ createdAt: 2 }])
    await quiet()
    await until('the frame to be dropped', () => dropped > 0)
    const [c] = await insert([{ createdAt: 3 }])
    const s = await q.next(1)
    dropInbound = undefined
    // The frame after the lost one did not fit (its prev is not the version held): a resume caught up.
    expect(s.resumed).toBe(true)
    expect(q.ids()).toEqual([a, b, c])
    const resubscribe = sent.filter((f) => f['type'] === 'subscribe' && f['channel'] === 'db:collection:messages:lossy').at(-1)!
    expect(resubscribe['resume']).toEqual({ version: first.version, hash: expect.any(String) })
    const [d] = await insert([{ createdAt: 4 }])
    await until('the next change', () => q.ids().length === 4)
    expect(q.ids()).toEqual([a, b, c, d])
    expect(q.errors).toEqual([])
    q.stop()
  })

  it('a query the collection does not allow goes to onError with RT_007, an unknown collection with RT_004', async () => {
    const rt = connect()
    const bad = follow(rt.database().collection<Msg>('messages').where('body', '==', 'x'))
    const none = follow(rt.database().collection('nope'))
    await until('the refusals', () => bad.errors.length > 0 && none.errors.length > 0)
    expect(bad.errors[0]!.code).toBe('RT_007')
    expect(none.errors[0]!.code).toBe('RT_004')
    expect(bad.snapshots).toEqual([])
    expect(rt.database().size).toBe(0)
  })

  it('a query the server ends (kicked, revoked) reports RT_003 with the reason to onError and stops', async () => {
    const rt = connect('eve')
    const q = follow(rt.database().collection<Msg>('messages').where('roomId', '==', 'r1').tag('k'))
    await q.next(0)
    expect(q.snapshots[0]!.empty).toBe(true) // eve is in no room: the rule hides every row
    expect(await server.hub.channel('db:collection:messages:k').kick('eve', 'revoked')).toBe(1)
    await until('the error', () => q.errors.length > 0)
    expect(q.errors[0]!.code).toBe('RT_003')
    expect(q.errors[0]!.message).toContain('revoked')
    expect(rt.database().size).toBe(0)
  })
})
