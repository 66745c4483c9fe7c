/**
 * Live queries against a hostile client: a hub with the SQL provider (PGlite in the process, and
 * a real PostgreSQL for the value-type cases, whose errors come from the server rather than from
 * PGlite's own checks), the WebSocket transport on a loopback port, and raw `ws` clients sending
 * frames a well-behaved SDK never would. Every case must be answered with a clear RT_00x error
 * (or a correct result), must not crash anything, must never carry a row the collection's rule
 * forbids, and must leave the server serving a well-behaved client (checked after every test).
 */
import { type Server, createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { PGlite } from '@electric-sql/pglite'
import { type Hub, type HubOptions, type LiveDoc, createHub, createTokenAuthenticator, silentLogger } from '@tidings/core'
import { createWsTransport } from '@tidings/ws'
import { Kysely, PostgresDialect, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import pg from 'pg'
import WebSocket from 'ws'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type LiveQueries, type LiveQueriesOptions, createLiveQueries } from '../src/index.js'
import { type Frame, WsClient, connectWs } from './live-client.js'
import { COLLECTIONS, createSchema } from './live-suite.js'
import { type PostgresServer, startPostgres, until } from './postgres.js'

const TOKENS = { 'tok-ada': { userId: 'ada' }, 'tok-bob': { userId: 'bob' }, 'tok-zed': { userId: 'zed' }, 'tok-eve': { userId: 'eve' } }
/** Who may read which room (the `members` rows): zed alone reads r9, where the secrets are. */
const MEMBERS = [
  { room_id: 'r1', user_id: 'ada' },
  { room_id: 'r2', user_id: 'ada' },
  { room_id: 'r1', user_id: 'bob' },
  { room_id: 'r9', user_id: 'zed' },
]
const SECRET = 'secret-of-zed'

interface Served {
  readonly hub: Hub
  readonly live: LiveQueries
  readonly db: Kysely<any>
  readonly url: string
  /** What the provider reported through `onError`. */
  readonly errors: Array<{ stage: string; error: unknown }>
  close(): Promise<void>
}

/** The provider, a hub and the WebSocket transport on a loopback port, over a database with the suite's schema and rows. */
async function serve(dbOption: LiveQueriesOptions['db'], db: Kysely<any>, hubOptions: Partial<HubOptions> = {}): Promise<Served> {
  await createSchema(db)
  await db.insertInto('members').values(MEMBERS).execute()
  await db.insertInto('messages').values([
    { id: 'a', roomId: 'r1', createdAt: 1, body: 'one', score: 1 },
    { id: 'b', roomId: 'r1', createdAt: 2, body: 'two', score: 2 },
    { id: 'c', roomId: 'r1', createdAt: 3, body: 'three', score: 3, pinned: true },
    // Between r1's rows in every order: a cursor or a window that let them through would show.
    { id: 'b5', roomId: 'r9', createdAt: 2, body: SECRET, score: 2 },
    { id: 's', roomId: 'r9', createdAt: 4, body: SECRET, score: 100 },
    ...Array.from({ length: 210 }, (_, i) => ({ id: `r2-${String(i).padStart(3, '0')}`, roomId: 'r2', createdAt: 100 + i, body: 'bulk', score: i })),
  ]).execute()
  const errors: Served['errors'] = []
  const live = createLiveQueries({ db: dbOption, collections: COLLECTIONS, onError: (error, stage) => errors.push({ stage, error }) })
  await live.install()
  await live.start()
  const hub = createHub({ logger: silentLogger, authenticate: createTokenAuthenticator(TOKENS), liveQueries: live, ...hubOptions })
  const transport = createWsTransport(hub)
  const http: Server = createServer((_req, res) => res.writeHead(404).end())
  transport.attach(http)
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r))
  return {
    hub,
    live,
    db,
    errors,
    url: `ws://127.0.0.1:${(http.address() as AddressInfo).port}/realtime`,
    async close() {
      await transport.close({ timeoutMs: 50 })
      await hub.close()
      await live.close()
      await new Promise((r) => http.close(r))
    },
  }
}

/** A raw client that also records how its socket closed. */
interface Raw extends WsClient {
  closed?: { code: number; reason: string }
}

/** Sends one frame and answers the reply carrying its id (an `error`, or `subscribed` then the first result). */
async function ask(c: WsClient, frame: Record<string, unknown>): Promise<Frame> {
  return c.request(frame)
}

/** Subscribes and answers the error, or the first result frame after `subscribed`. */
async function subscribe(c: WsClient, channel: string, query: unknown, extra: Record<string, unknown> = {}): Promise<Frame> {
  const from = c.frames.length
  const reply = await c.request({ type: 'subscribe', channel, query, ...extra })
  if (reply.type === 'error') return reply
  expect(reply.type).toBe('subscribed')
  return c.waitFor((f) => f['channel'] === channel && (f.type === 'query:snapshot' || (f.type === 'query:changes' && f['resumed'] === true)), 10_000, from)
}

function expectRefused(reply: Frame, code: string, message?: RegExp): void {
  expect(reply, JSON.stringify(reply)).toMatchObject({ type: 'error', code })
  if (message) expect(String(reply['message'])).toMatch(message)
}

/** What the database's own messages say (`invalid input syntax for type integer: "abc"`): never sent to a client. */
const DB_WORDS = /syntax|for type|is out of range|UTF8|0x00|encoding|"abc"|"zz"/

const idsOf = (f: Frame): string[] => (f['docs'] as Array<{ id: string }>).map((d) => d.id)

/** Every message of these rooms, as the query would order and cut them (the truth to compare with). */
async function truth(db: Kysely<any>, rooms: string[], order: Array<[string, 'asc' | 'desc']>, limit: number, extra?: (q: any) => any): Promise<string[]> {
  let q = db.selectFrom('messages').select('id').where('roomId', 'in', rooms)
  if (extra) q = extra(q)
  for (const [f, d] of order) q = q.orderBy(f, d)
  return (await q.limit(limit).execute()).map((r: { id: string }) => r.id)
}

describe('live queries against hostile ws clients (PGlite)', () => {
  let pglite: PGlite
  let s: Served
  /** Clients of users who must never see r9's rows; every frame they receive is checked. */
  const attackers: Raw[] = []
  /** Bob's well-behaved client: it follows r1 and must get every change, whatever the others do. */
  let watcher: WsClient
  const WATCH = 'db:collection:messages:watch'
  let written = 0

  /** A client of `token`'s user (ada by default), or of nobody (`null`). */
  const attack = async (token: string | null = 'tok-ada'): Promise<Raw> => {
    const c = (await connectWs(token === null ? s.url : `${s.url}?token=${token}`)) as Raw
    c.ws.on('close', (code, reason) => (c.closed = { code, reason: String(reason) }))
    attackers.push(c)
    return c
  }
  /** The provider's groups and subscribers, to compare before and after an attack. */
  const counts = () => ({ queries: s.live.stats().queries, subscribers: s.live.stats().subscribers })

  beforeAll(async () => {
    pglite = new PGlite('memory://')
    s = await serve({ pglite }, new Kysely<any>({ dialect: new PGliteDialect(pglite) }))
    watcher = await connectWs(`${s.url}?token=tok-bob`)
    const snap = await subscribe(watcher, WATCH, { where: [['roomId', '==', 'r1']], orderBy: [['createdAt', 'desc']], limit: 20 })
    expect(idsOf(snap)).toEqual(['c', 'b', 'a'])
  })

  afterEach(async () => {
    // The well-behaved client still gets its changes: a row written now reaches it.
    const id = `w${++written}`
    await s.db.insertInto('messages').values({ id, roomId: 'r1', createdAt: 1000 + written, body: 'watched' }).execute()
    await until(() => expect(watcher.live.views.get(WATCH)?.docs[0]?.['id']).toBe(id), 8000)
    expect(watcher.faults).toEqual([])
    expect(watcher.ws.readyState).toBe(WebSocket.OPEN)
    // No attacker ever received a row of r9.
    for (const c of attackers) {
      const text = JSON.stringify(c.frames)
      expect(text).not.toContain(SECRET)
      expect(text).not.toContain('"roomId":"r9"')
      expect(c.faults).toEqual([])
    }
    // Nothing an attacker did is a server failure.
    expect(s.errors.splice(0).map((e) => `${e.stage}: ${String(e.error)}`)).toEqual([])
    // Each test's attackers go (a user has 10 connections at most).
    for (const c of attackers.splice(0)) c.close()
  })

  afterAll(async () => {
    for (const c of attackers) c.close()
    watcher?.close()
    await s?.close()
    await pglite?.close()
  })

  it('fields and operators the collection does not allow, and SQL in field names, are RT_007 naming the problem', async () => {
    const c = await attack()
    const ch = 'db:collection:messages:bad'
    const before = counts()
    const cases: Array<[unknown, RegExp]> = [
      [{ where: [['body', '==', 'x']] }, /no field 'body'/], // a column of the table, not exposed
      [{ where: [['password', '==', 'x']] }, /no field 'password'/],
      [{ where: [['__proto__', '==', 1]] }, /no field '__proto__'/],
      [{ where: [['constructor', '==', 1]] }, /no field 'constructor'/],
      [{ where: [['id', '==', 'a']] }, /no field 'id'/], // the key pages and orders, it is not a filter here
      [{ where: [['pinned', '>', true]] }, /operator '>' is not allowed on 'messages.pinned'/],
      [{ where: [['roomId', '<', 'r']] }, /operator '<' is not allowed on 'messages.roomId'/],
      [{ where: [['roomId', 'LIKE', '%']] }, /where/],
      [{ where: [['roomId', '=', 'r1']] }, /where/],
      [{ where: [['roomId', '== OR 1=1 --', 'r1']] }, /where/],
      [{ where: [["roomId\"; DROP TABLE messages; --", '==', 'r1']] }, /field names are identifiers/],
      [{ where: [['"', '==', 'r1']] }, /field names are identifiers/],
      [{ where: [['roomId\u0000', '==', 'r1']] }, /field names are identifiers/],
      [{ where: [['x'.repeat(65), '==', 'r1']] }, /where/],
      [{ where: [['x'.repeat(10_000), '==', 'r1']] }, /where/],
      [{ orderBy: [['body', 'asc']] }, /cannot be ordered by 'body'/],
      [{ orderBy: [['roomId', 'asc']] }, /cannot be ordered by 'roomId'/],
      [{ orderBy: [['createdAt', 'desc; DROP TABLE messages']] }, /orderBy/],
      [{ orderBy: [['createdAt"); DROP TABLE messages; --']] }, /orderBy/],
      [{ where: [['roomId', '==', 'r1']], sql: 'SELECT * FROM messages' }, /sql|Unrecognized/i],
      [{ select: ['body'] }, /select|Unrecognized/i],
      [{ where: 'roomId = r1' }, /where/],
      [[['roomId', '==', 'r1']], /query/],
      ['SELECT 1', /query/],
    ]
    for (const [query, message] of cases) expectRefused(await ask(c, { type: 'subscribe', channel: ch, query }), 'RT_007', message)
    expect(counts()).toEqual(before)
    expect(s.hub.channels.list().filter((x) => x.name === ch)).toEqual([])
  })

  it('SQL-looking, quoted, NUL-holding and very long values are data: a correct (empty) result or RT_007, and the tables are intact', async () => {
    const c = await attack()
    const rowsBefore = await s.db.selectFrom('messages').select(sql<number>`count(*)::int`.as('n')).executeTakeFirstOrThrow()
    const values = ["x'; DROP TABLE messages; --", "r1' OR '1'='1", 'r1" OR "1"="1', '"', "'", '\\', '%', '_', '$1', '\ud800', '😀', 'r1\n', 'x'.repeat(1024)]
    for (const [i, v] of values.entries()) {
      const first = await subscribe(c, `db:collection:messages:v${i}`, { where: [['roomId', '==', v]] })
      expect(first.type, JSON.stringify(v)).toBe('query:snapshot')
      expect(first['docs']).toEqual([])
      const inList = await subscribe(c, `db:collection:messages:v${i}`, { where: [['roomId', 'in', [v, 'r1']]], orderBy: [['createdAt', 'asc']], limit: 3 })
      expect(idsOf(inList)).toEqual(['a', 'b', 'c'])
      await ask(c, { type: 'unsubscribe', channel: `db:collection:messages:v${i}` })
    }
    // PostgreSQL's text cannot hold NUL: the client's mistake, said as such, without the database's own words.
    for (const v of ['\u0000', 'r1\u0000; DROP TABLE messages']) {
      const r = await ask(c, { type: 'subscribe', channel: 'db:collection:messages:nul', query: { where: [['roomId', '==', v]] } })
      expectRefused(r, 'RT_007', /does not fit its field in 'messages'/)
      expect(String(r['message'])).not.toMatch(DB_WORDS)
    }
    expectRefused(await ask(c, { type: 'subscribe', channel: 'db:collection:messages:long', query: { where: [['roomId', '==', 'x'.repeat(1025)]] } }), 'RT_007', /1024/)
    expectRefused(await ask(c, { type: 'subscribe', channel: 'db:collection:messages:long', query: { where: [['roomId', '==', 'x'.repeat(100_000)]] } }), 'RT_007', /1024/)
    const rowsAfter = await s.db.selectFrom('messages').select(sql<number>`count(*)::int`.as('n')).executeTakeFirstOrThrow()
    expect(rowsAfter).toEqual(rowsBefore)
    expect((await s.db.selectFrom('members').selectAll().execute()).length).toBe(MEMBERS.length)
  })

  it('values of the wrong type (objects, arrays, huge numbers, NaN and words for integers, numbers for booleans, wrong cursors) are RT_007 and open nothing', async () => {
    const c = await attack()
    const ch = 'db:collection:messages:types'
    const before = counts()
    // Refused by the query's shape.
    for (const query of [
      { where: [['roomId', '==', { a: 1 }]] },
      { where: [['roomId', '==', ['r1']]] },
      { where: [['roomId', 'in', 'r1']] },
      { where: [['roomId', 'in', [['r1']]]] },
      { where: [['roomId', 'in', [{ $ne: null }]]] },
      { where: [['roomId', 'in', []]] },
      { where: [['score', '<', null]] },
      { where: [['score', '==']] },
      { where: [['score', '==', 1, 2]] },
      { orderBy: [['createdAt', 'asc']], startAfter: [{ x: 1 }] },
      { orderBy: [['createdAt', 'asc']], startAfter: [null] },
      { orderBy: [['createdAt', 'asc']], startAfter: [[1]] },
    ]) {
      expectRefused(await ask(c, { type: 'subscribe', channel: ch, query }), 'RT_007', /query/)
    }
    // JSON that decodes to a number JavaScript cannot carry (1e400 is Infinity).
    c.ws.send(`{"type":"subscribe","id":"inf","channel":"${ch}","query":{"where":[["score","==",1e400]]}}`)
    expectRefused(await c.waitFor((f) => f['id'] === 'inf'), 'RT_007')
    // Well-formed, but not of the column's type: the database refuses, the client is told it is its value.
    for (const query of [
      { where: [['createdAt', '>', 'abc']] },
      { where: [['createdAt', '>', 'NaN']] },
      { where: [['score', '==', 'Infinity']] },
      { where: [['score', '==', 1e300]] },
      { where: [['score', '==', 1e21]] },
      { where: [['score', '==', 2 ** 40]] },
      { where: [['score', '==', 1.5]] },
      { where: [['score', 'in', [1, 'x']]] },
      { where: [['score', 'not-in', [1, 'x']]] },
      { where: [['pinned', '==', 5]] },
      { where: [['pinned', '==', 'yes please']] },
      { orderBy: [['createdAt', 'asc']], startAfter: ['zz'] },
      { orderBy: [['createdAt', 'asc']], startAfter: [1e300, 'a'] },
    ]) {
      const r = await ask(c, { type: 'subscribe', channel: ch, query })
      expectRefused(r, 'RT_007', /does not fit its field in 'messages'/)
      expect(String(r['message']), JSON.stringify(query)).not.toMatch(DB_WORDS)
    }
    // Types PostgreSQL converts are a correct result: a boolean compared with text, a number with text.
    expect((await subscribe(c, ch, { where: [['roomId', '==', true]] }))['docs']).toEqual([])
    expect((await subscribe(c, ch, { where: [['roomId', 'in', [1, 'r1']]], orderBy: [['createdAt', 'asc']], limit: 3 }))['docs']).toHaveLength(3)
    await ask(c, { type: 'unsubscribe', channel: ch })
    expect(counts()).toEqual(before)
  })

  it('hundreds of where clauses, deep and/or trees and huge frames are refused by bound; a large query within the bounds is answered correctly', async () => {
    const c = await attack()
    const ch = 'db:collection:messages:big'
    const before = counts()
    const leaf = (i: number) => ['score', '!=', i]
    const deep = (n: number): unknown => (n === 0 ? leaf(0) : { or: [deep(n - 1), leaf(n)] })
    // Too deep for JSON.stringify itself: written out.
    const deepText = (n: number) => `${'{"or":['.repeat(n)}["score","!=",0]${Array.from({ length: n }, (_, i) => `,["score","!=",${i + 1}]]}`).join('')}`
    for (const [query, message] of [
      [{ where: Array.from({ length: 300 }, (_, i) => leaf(i)) }, /where/],
      [{ where: Array.from({ length: 33 }, (_, i) => leaf(i)) }, /where/],
      [{ where: { or: Array.from({ length: 300 }, (_, i) => leaf(i)) } }, /where/],
      [{ where: { and: Array.from({ length: 8 }, () => ({ or: Array.from({ length: 8 }, (_, i) => leaf(i)) })) } }, /more than 32 conditions/],
      [{ where: deep(5) }, /nested deeper than 4/],
      [{ where: deep(40) }, /nested deeper than 32/],
      [{ where: [['roomId', 'in', Array.from({ length: 101 }, (_, i) => `r${i}`)]] }, /where/],
      [{ orderBy: Array.from({ length: 5 }, () => ['createdAt', 'asc']) }, /orderBy/],
    ] as const) {
      expectRefused(await ask(c, { type: 'subscribe', channel: ch, query }), 'RT_007', message)
    }
    c.ws.send(`{"type":"subscribe","id":"deep","channel":"${ch}","query":{"where":${deepText(2000)}}}`)
    expectRefused(await c.waitFor((f) => f['id'] === 'deep'), 'RT_007', /nested deeper than 32/)
    // The largest query the bounds allow (32 conditions of 100 values, 4 levels) is run, and right.
    const wide = {
      where: [
        ['roomId', 'in', ['r1', 'r2', 'r9', ...Array.from({ length: 97 }, (_, i) => `x${i}`)]],
        { or: [['score', '<', 3], { and: [['score', '>=', 200], { or: [['createdAt', '>', 305], ['score', '==', 205]] }] }] },
        ...Array.from({ length: 26 }, (_, i) => ['roomId', 'not-in', Array.from({ length: 100 }, (_, j) => `${i}-${j}-${'y'.repeat(20)}`)]),
      ],
      orderBy: [['score', 'asc']],
    }
    const got = await subscribe(c, ch, wide)
    expect(got.type).toBe('query:snapshot')
    expect(idsOf(got)).toEqual(['r2-000', 'a', 'r2-001', 'b', 'r2-002', 'r2-205', 'r2-206', 'r2-207', 'r2-208', 'r2-209'])
    await ask(c, { type: 'unsubscribe', channel: ch })
    // Over the hub's message size (128 KiB): RT_005. Far over the transport's frame limit: closed 1009.
    const huge = { where: [['roomId', 'not-in', Array.from({ length: 100 }, (_, j) => `${j}${'z'.repeat(1000)}`)]] }
    const big = await ask(c, { type: 'subscribe', channel: ch, query: { where: [...huge.where, ...huge.where] } })
    expectRefused(big, 'RT_005')
    const gone = await attack()
    gone.ws.send(JSON.stringify({ type: 'subscribe', id: 'x', channel: ch, query: { where: Array.from({ length: 32 }, () => huge.where[0]) } }))
    await until(() => expect(gone.closed?.code).toBe(1009), 5000)
    expect(c.ws.readyState).toBe(WebSocket.OPEN)
    expect(counts()).toEqual(before)
  })

  it('limits: zero, negative, fractional, huge, strings and over the collection maximum are RT_007; no limit is the maximum', async () => {
    const c = await attack()
    const ch = 'db:collection:messages:limit'
    for (const limit of [0, -1, -1e9, 0.5, 1.5, 1e12, Number.MAX_SAFE_INTEGER, '10', true, null, [10], { n: 1 }]) {
      expectRefused(await ask(c, { type: 'subscribe', channel: ch, query: { where: [['roomId', '==', 'r2']], limit } }), 'RT_007', /limit/)
    }
    for (const limit of [201, 1000]) {
      expectRefused(await ask(c, { type: 'subscribe', channel: ch, query: { where: [['roomId', '==', 'r2']], limit } }), 'RT_007', /limit \d+ is over the maximum of 200 for 'messages'/)
    }
    const unbounded = await subscribe(c, ch, { where: [['roomId', '==', 'r2']], orderBy: [['createdAt', 'asc']] })
    expect(idsOf(unbounded)).toEqual(await truth(s.db, ['r2'], [['createdAt', 'asc'], ['id', 'asc']], 200))
    expect(idsOf(unbounded)).toHaveLength(200)
    // Everything ada may read, no where at all: only her rooms, still cut at the maximum.
    const all = await subscribe(c, 'db:collection:messages:all', { orderBy: [['score', 'desc']] })
    expect(idsOf(all)).toEqual(await truth(s.db, ['r1', 'r2'], [['score', 'desc'], ['id', 'desc']], 200))
    await ask(c, { type: 'unsubscribe', channel: ch })
    await ask(c, { type: 'unsubscribe', channel: 'db:collection:messages:all' })
  })

  it('startAfter: bogus cursors are RT_007; cursors from another query or on another user’s row page only through rows the rule allows', async () => {
    const c = await attack()
    const ch = 'db:collection:messages:page'
    const r1 = [['roomId', 'in', ['r1', 'r9']]] // asks for zed's room too: the rule keeps it out
    for (const query of [
      { where: r1, startAfter: [1] }, // no orderBy
      { where: r1, orderBy: [['createdAt', 'asc']], startAfter: [1, 'a', 'extra'] },
      { where: r1, orderBy: [['createdAt', 'asc']], startAfter: [] },
      { where: r1, orderBy: [['createdAt', 'asc']], startAfter: Array.from({ length: 6 }, (_, i) => i) },
      { where: r1, orderBy: [['createdAt', 'asc']], startAfter: 'a' },
      { where: r1, orderBy: [['createdAt', 'asc']], startAfter: ['x'.repeat(1025)] },
    ]) {
      expectRefused(await ask(c, { type: 'subscribe', channel: ch, query }), 'RT_007', /startAfter/)
    }
    // The cursor of zed's secret row (createdAt 2, key b5, between b and c; createdAt 4, key s):
    // pages start after it, and hold ada's rows only.
    const afterB5 = await subscribe(c, ch, { where: r1, orderBy: [['createdAt', 'asc']], limit: 2, startAfter: [2, 'b5'] })
    expect(idsOf(afterB5)).toEqual(['c', 'w1'])
    const afterS = await subscribe(c, ch, { where: r1, orderBy: [['score', 'desc']], limit: 3, startAfter: [100, 's'] })
    expect(idsOf(afterS)).toEqual(['c', 'b', 'a'])
    // A cursor from another query (a createdAt value used with a score order, a key of r2): a correct page.
    const other = await subscribe(c, ch, { where: [['roomId', 'in', ['r1', 'r2', 'r9']]], orderBy: [['score', 'asc']], limit: 4, startAfter: [150, 'r2-149'] })
    expect(idsOf(other)).toEqual(['r2-150', 'r2-151', 'r2-152', 'r2-153'])
    // A cursor past the end, and one before the start.
    expect(idsOf(await subscribe(c, ch, { where: r1, orderBy: [['createdAt', 'asc']], startAfter: [1e9] }))).toEqual([])
    expect(idsOf(await subscribe(c, ch, { where: [['roomId', '==', 'r1']], orderBy: [['createdAt', 'asc']], limit: 2, startAfter: [-1e9, ''] }))).toEqual(['a', 'b'])
    // The key first: the order is the client's (the key is unique, what follows it orders nothing), and the cursor follows it.
    const keyFirst = await subscribe(c, ch, { where: r1, orderBy: [['id', 'desc'], ['createdAt', 'asc']], limit: 3 })
    expect(idsOf(keyFirst)).toEqual(await truth(s.db, ['r1'], [['id', 'desc']], 3))
    const keyCursor = await subscribe(c, ch, { where: r1, orderBy: [['id', 'desc'], ['createdAt', 'asc']], limit: 3, startAfter: ['c', 0] })
    expect(idsOf(keyCursor)).toEqual(['b', 'a'])
    // A page stays live: a row of zed's room inserted inside it never shows; one of r1 does.
    await s.db.insertInto('messages').values([{ id: 'b6', roomId: 'r9', createdAt: 2, body: SECRET }, { id: 'b7', roomId: 'r1', createdAt: 2, body: 'seven' }]).execute()
    const page = await subscribe(c, 'db:collection:messages:page2', { where: r1, orderBy: [['createdAt', 'asc']], limit: 3, startAfter: [1, 'a'] })
    expect(idsOf(page)).toEqual(['b', 'b7', 'c'])
    await s.db.insertInto('messages').values([{ id: 'b8', roomId: 'r1', createdAt: 2, body: 'eight' }, { id: 'b9', roomId: 'r9', createdAt: 2, body: SECRET }]).execute()
    await until(() => expect(c.live.views.get('db:collection:messages:page2')?.docs.map((d) => d['id'])).toEqual(['b', 'b7', 'b8']))
    await s.db.deleteFrom('messages').where('id', 'in', ['b6', 'b7', 'b8', 'b9']).execute()
    await until(() => expect(c.live.views.get('db:collection:messages:page2')?.docs.map((d) => d['id'])).toEqual(['b', 'c', 'w1']))
    await ask(c, { type: 'unsubscribe', channel: ch })
    await ask(c, { type: 'unsubscribe', channel: 'db:collection:messages:page2' })
  })

  it('collections not exposed and odd channel names: RT_004 for a name that is no collection, RT_007 for a name that is no channel', async () => {
    const c = await attack()
    for (const name of ['members', 'messages_secret', 'pg_catalog', '..', '.', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'Messages', 'MESSAGES', 'messages.', '-', '~']) {
      expectRefused(await ask(c, { type: 'subscribe', channel: `db:collection:${name}`, query: {} }), 'RT_004', new RegExp(`no live collection '${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}'`))
    }
    for (const channel of ['', 'db:collection:messages:' + 'x'.repeat(10_000), 'db:collection:méssages', 'db:collection:messages:日本', 'db:collection:messages\u0000', 'db:collection:../members', 'db:collection:messages/../members', 'db:collection:messages members', 'db:collection:"messages"', "db:collection:messages'--"]) {
      expectRefused(await ask(c, { type: 'subscribe', channel, query: {} }), 'RT_007', /channel/)
    }
    // `db:collection:` itself names no collection; not a live query channel (and no other channel either).
    expectRefused(await ask(c, { type: 'subscribe', channel: 'db:collection:', query: {} }), 'RT_007')
    expectRefused(await ask(c, { type: 'subscribe', channel: 'db:collection:' }), 'RT_004')
    // A query on an ordinary channel, none on a live one, publishes and history on a live one.
    expectRefused(await ask(c, { type: 'subscribe', channel: 'public:x', query: {} }), 'RT_007', /not a live query channel/)
    expectRefused(await ask(c, { type: 'subscribe', channel: 'DB:collection:messages', query: {} }), 'RT_007', /not a live query channel/)
    expectRefused(await ask(c, { type: 'subscribe', channel: 'db:collection:messages' }), 'RT_007', /subscribe with a query/)
    expectRefused(await ask(c, { type: 'subscribe', channel: 'db:collection:messages', query: {}, filter: { event: 'x' } }), 'RT_007')
    expectRefused(await ask(c, { type: 'subscribe', channel: 'db:collection:messages', query: {}, since: { epoch: 'e', offset: 0 } }), 'RT_007')
    expectRefused(await ask(c, { type: 'message', channel: 'db:collection:messages', event: 'x', data: { id: 'a', roomId: 'r9' } }), 'RT_004')
    expectRefused(await ask(c, { type: 'history', channel: 'db:collection:messages' }), 'RT_004')
    // Tags are names, however odd: each is its own subscription on `messages`, under the same rule.
    for (const tag of ['..', '..:..', '__proto__', 'x'.repeat(150), 'a:b:c:d']) {
      const r = await subscribe(c, `db:collection:messages:${tag}`, { where: [['roomId', '==', 'r9']] })
      expect(r['docs'], tag).toEqual([])
      await ask(c, { type: 'unsubscribe', channel: `db:collection:messages:${tag}` })
    }
    expect(s.hub.channels.list().filter((x) => x.name.startsWith('db:collection:') && x.name !== WATCH)).toEqual([])
  })

  it('resume tokens that are forged, of another user, of another query or of another connection never add a row the rule forbids', async () => {
    const q = { where: [['roomId', 'in', ['r1', 'r9']]], orderBy: [['createdAt', 'asc']], limit: 5 }
    // Zed's result (r9, his rows) and its hash.
    const zed = await connectWs(`${s.url}?token=tok-zed`)
    const zedSnap = await subscribe(zed, 'db:collection:messages:z', q)
    expect(idsOf(zedSnap)).toEqual(['b5', 's'])
    const zedHeld = { version: zedSnap['version'] as number, hash: zedSnap['hash'] as string }
    const c = await attack()
    const ch = 'db:collection:messages:resume'
    const adaRows = await truth(s.db, ['r1'], [['createdAt', 'asc'], ['id', 'asc']], 5)
    // Zed's token presented by ada: not her result, a full snapshot of hers (flagged reset).
    const stolen = await subscribe(c, ch, q, { resume: zedHeld })
    expect(stolen).toMatchObject({ type: 'query:snapshot', reset: true })
    expect(idsOf(stolen)).toEqual(adaRows)
    await ask(c, { type: 'unsubscribe', channel: ch })
    // Forged hashes of every sort, including ones that look like cache keys.
    for (const hash of ['x', 'x'.repeat(128), zedHeld.hash.slice(0, 21), `${zedHeld.hash}#`, `#${zedHeld.hash}`, `messages\n${zedHeld.hash}`, '../../etc/passwd', '\u0000', '*', "' OR 1=1 --"]) {
      const r = await subscribe(c, ch, q, { resume: { version: 1, hash } })
      expect(r, hash).toMatchObject({ type: 'query:snapshot', reset: true })
      expect(idsOf(r)).toEqual(adaRows)
      await ask(c, { type: 'unsubscribe', channel: ch })
    }
    for (const resume of [{ version: -1, hash: 'x' }, { version: 1.5, hash: 'x' }, { version: 1, hash: '' }, { version: 1, hash: 'x'.repeat(129) }, { version: 1, hash: 5 }, { version: 1, hash: 'x', docs: [] }, 'x', null]) {
      expectRefused(await ask(c, { type: 'subscribe', channel: ch, query: q, resume }), 'RT_007', /resume/)
    }
    // Ada's own token of another query: a reset. Of another connection of hers, same query: a resume (the same result is hers).
    const other = await subscribe(c, 'db:collection:messages:other', { where: [['roomId', '==', 'r2']], limit: 3 })
    const r = await subscribe(c, ch, q, { resume: { version: other['version'] as number, hash: other['hash'] as string } })
    expect(r).toMatchObject({ type: 'query:snapshot', reset: true })
    const held = { version: r['version'] as number, hash: r['hash'] as string }
    // (The other connections hold the result they present: their views start from it.)
    const holding = async (): Promise<Raw> => {
      const x = await attack()
      x.live.views.set(ch, { docs: [...(r['docs'] as LiveDoc[])], version: held.version, hash: held.hash, key: 'id', changes: [], snapshots: 1, resumed: 0 })
      return x
    }
    const c2 = await holding()
    const resumed = await subscribe(c2, ch, q, { resume: held })
    expect(resumed).toMatchObject({ type: 'query:changes', resumed: true, changes: [] })
    // Ada loses room r1 while she holds the result; presenting the old token then only takes rows away.
    const before = await truth(s.db, ['r1'], [['createdAt', 'asc'], ['id', 'asc']], 5)
    await s.db.deleteFrom('members').where('room_id', '=', 'r1').where('user_id', '=', 'ada').execute()
    await until(() => expect(c.live.views.get(ch)?.docs).toEqual([]))
    const c3 = await holding()
    const late = await subscribe(c3, ch, q, { resume: held })
    expect(late.type).toBe('query:changes')
    expect((late['changes'] as Array<{ type: string; doc: { id: string } }>).map((x) => [x.type, x.doc.id])).toEqual(before.map((id) => ['removed', id]).reverse())
    expect(c3.live.views.get(ch)?.docs).toEqual([])
    await s.db.insertInto('members').values({ room_id: 'r1', user_id: 'ada' }).execute()
    await until(() => expect(c3.live.views.get(ch)?.docs.map((d) => d['id'])).toEqual(before))
    for (const x of [c, c2, c3]) x.close()
    zed.close()
  })

  it('the same live channel subscribed many times at once: each replaces the query, one subscriber stays, one frame per change', async () => {
    const c = await attack()
    const ch = 'db:collection:messages:same'
    const before = counts()
    const q = { where: [['roomId', '==', 'r1']], orderBy: [['createdAt', 'desc']], limit: 3 }
    for (let i = 0; i < 40; i++) c.ws.send(JSON.stringify({ type: 'subscribe', id: `same${i}`, channel: ch, query: q }))
    await c.waitFor((f) => f['id'] === 'same39' && f.type === 'query:snapshot')
    expect(c.frames.filter((f) => f.type === 'subscribed' && f['channel'] === ch)).toHaveLength(40)
    expect(c.frames.filter((f) => f.type === 'error')).toEqual([])
    expect(counts()).toEqual({ queries: before.queries + 1, subscribers: before.subscribers + 1 })
    // Alternating queries: the last one asked for stands, the others are closed.
    for (let i = 0; i < 40; i++) c.ws.send(JSON.stringify({ type: 'subscribe', id: `alt${i}`, channel: ch, query: { ...q, where: [['roomId', '==', i % 2 ? 'r1' : 'r2']], limit: 1 + (i % 3) } }))
    await c.waitFor((f) => f['id'] === 'alt39' && f.type === 'query:snapshot')
    expect(idsOf(c.frames.filter((f) => f['id'] === 'alt39').at(-1)!)).toEqual(await truth(s.db, ['r1'], [['createdAt', 'desc'], ['id', 'desc']], 1))
    expect(counts()).toEqual({ queries: before.queries + 1, subscribers: before.subscribers + 1 })
    const from = c.frames.length
    const v = c.live.views.get(ch)!.version
    await s.db.insertInto('messages').values({ id: 'same-new', roomId: 'r1', createdAt: 5000, body: 'x' }).execute()
    await until(() => expect(c.live.views.get(ch)!.version).toBeGreaterThan(v))
    await new Promise((r) => setTimeout(r, 100))
    expect(c.frames.slice(from).filter((f) => f.type === 'query:changes' && f['channel'] === ch)).toHaveLength(1)
    expect(c.live.views.get(ch)!.docs.map((d) => d['id'])).toEqual(['same-new'])
    // A replacement that is refused leaves the query in place, still live.
    expectRefused(await ask(c, { type: 'subscribe', channel: ch, query: { where: [['body', '==', 'x']] } }), 'RT_007', /no field 'body'/)
    expectRefused(await ask(c, { type: 'subscribe', channel: ch, query: { where: [['score', '==', 'abc']] } }), 'RT_007', /does not fit/)
    expect(counts()).toEqual({ queries: before.queries + 1, subscribers: before.subscribers + 1 })
    await s.db.deleteFrom('messages').where('id', '=', 'same-new').execute()
    const newest = await truth(s.db, ['r1'], [['createdAt', 'desc'], ['id', 'desc']], 1)
    await until(() => expect(c.live.views.get(ch)!.docs.map((d) => d['id'])).toEqual(newest))
    expect((await ask(c, { type: 'unsubscribe', channel: ch })).type).toBe('unsubscribed')
    expect(counts()).toEqual(before)
    // Subscribes still being opened when the socket dies open nothing that stays.
    const d = await attack()
    for (let i = 0; i < 20; i++) d.ws.send(JSON.stringify({ type: 'subscribe', id: `t${i}`, channel: `db:collection:messages:t${i % 4}`, query: { where: [['score', '>', 7 + i]] } }))
    d.ws.terminate()
    await until(() => expect(counts()).toEqual(before))
  })

  it('very many distinct live queries from one connection stop at its subscription limit (RT_006), and all of them end with it', async () => {
    const before = counts()
    for (let round = 0; round < 2; round++) {
      const c = await attack()
      const replies: Frame[] = []
      // One after the other; the 101st after a pause, so that the frame rate (100 a second) is not what refuses it.
      for (let i = 0; i < 101; i++) {
        if (i === 100) await new Promise((r) => setTimeout(r, 100))
        replies.push(await ask(c, { type: 'subscribe', channel: `db:collection:messages:n${i}`, query: { where: [['score', '!=', i + 1000 * round]], limit: 1 } }))
      }
      expect(replies.slice(0, 100).every((f) => f.type === 'subscribed')).toBe(true)
      expectRefused(replies[100]!, 'RT_006', /subscri/)
      expect(counts()).toEqual({ queries: before.queries + 100, subscribers: before.subscribers + 100 })
      c.close()
      await until(() => expect(counts()).toEqual(before))
    }
    // The resume cache stays within its bound however many queries came and went.
    expect(s.live.stats().cached).toBeLessThanOrEqual(1000)
  })

  it('floods of subscribe and unsubscribe are cut by the frame rate (RT_006) or, past 1,000 frames waiting, by closing the socket; nothing stays open', async () => {
    const before = counts()
    const c = await attack()
    const n = 600
    for (let i = 0; i < n; i++) {
      const channel = `db:collection:messages:fl${i % 7}`
      c.ws.send(JSON.stringify(i % 2 ? { type: 'unsubscribe', id: `f${i}`, channel } : { type: 'subscribe', id: `f${i}`, channel, query: { where: [['score', '>', i]], limit: 2 } }))
    }
    await until(() => expect(c.frames.filter((f) => typeof f['id'] === 'string' && (f['id'] as string).startsWith('f') && f.type !== 'query:snapshot').length).toBe(n), 10_000)
    const codes = new Set(c.frames.filter((f) => f.type === 'error').map((f) => f['code']))
    expect([...codes].every((code) => code === 'RT_006' || code === 'RT_004')).toBe(true)
    expect(codes.has('RT_006')).toBe(true)
    expect(c.ws.readyState).toBe(WebSocket.OPEN)
    // What the connection holds is exactly what the provider serves for it.
    const held = s.hub.channels.list().filter((x) => x.name.startsWith('db:collection:messages:fl')).length
    expect(counts()).toEqual({ queries: before.queries + held, subscribers: before.subscribers + held })
    // Past 1,000 frames waiting behind a slow one, the connection is closed (1008), not queued without end.
    const d = await attack('tok-bob')
    const frames = Array.from({ length: 1500 }, (_, i) => JSON.stringify({ type: 'subscribe', id: `g${i}`, channel: `db:collection:messages:g${i % 3}`, query: { where: [['score', '<', i]] } }))
    for (const f of frames) d.ws.send(f)
    // Either every frame is answered (the waits were short) or the socket is closed with 1008.
    const answered = () => d.frames.filter((f) => typeof f['id'] === 'string' && (f['id'] as string).startsWith('g') && f.type !== 'query:snapshot').length
    await until(() => expect(d.closed !== undefined || answered() === frames.length).toBe(true), 10_000)
    if (d.closed) expect(d.closed.code).toBe(1008)
    d.close()
    c.close()
    await until(() => expect(counts()).toEqual(before))
    expect(s.hub.channels.list().filter((x) => x.name.startsWith('db:collection:messages:fl') || x.name.startsWith('db:collection:messages:g'))).toEqual([])
  })

  it('unauthenticated: no credentials subscribe nothing (RT_003), bad ones are closed (RT_002, 4001), and a pattern opened to everyone still meets the collection rule', async () => {
    const anon = await attack(null)
    expectRefused(await ask(anon, { type: 'subscribe', channel: 'db:collection:messages', query: {} }), 'RT_003')
    expectRefused(await ask(anon, { type: 'subscribe', channel: 'db:collection:messages:x', query: { where: [['roomId', '==', 'r9']] }, resume: { version: 1, hash: 'x' } }), 'RT_003')
    expectRefused(await ask(anon, { type: 'subscribe', channel: 'db:collection:nothing', query: {} }), 'RT_003')
    for (const token of ['nope', "tok-zed' OR 1=1", 'tok-zed\u0000', 'x'.repeat(4000)]) {
      const ws = new WebSocket(`${s.url}?token=${encodeURIComponent(token)}`, 'tidings.v1.json')
      const frames: Frame[] = []
      ws.on('message', (raw) => frames.push(JSON.parse(String(raw)) as Frame))
      ws.on('error', () => undefined)
      const code = await new Promise<number>((resolve) => ws.on('close', (c) => resolve(c)))
      expect(code, token.slice(0, 20)).toBe(4001)
      expect(frames.find((f) => f.type === 'error')).toMatchObject({ code: 'RT_002' })
      expect(frames.some((f) => f.type === 'connected')).toBe(false)
    }
    // A refreshed token must name the same user: ada cannot become zed, nor the anonymous client anyone.
    const c = await attack()
    await subscribe(c, 'db:collection:messages:mine', { where: [['roomId', 'in', ['r1', 'r9']]], limit: 3, orderBy: [['createdAt', 'asc']] })
    expectRefused(await ask(c, { type: 'auth', token: 'tok-zed' }), 'RT_002')
    expectRefused(await ask(anon, { type: 'auth', token: 'tok-zed' }), 'RT_002')
    expectRefused(await ask(anon, { type: 'subscribe', channel: 'db:collection:messages', query: {} }), 'RT_003')
    await s.db.insertInto('messages').values({ id: 'z-new', roomId: 'r9', createdAt: 0, body: SECRET }).execute()
    await new Promise((r) => setTimeout(r, 150))
    await s.live.idle()
    expect(c.live.views.get('db:collection:messages:mine')!.docs.map((d) => d['id'])).toEqual(['a', 'b', 'c'])
    // An app that opens every live channel to anonymous users: the collection's rule still says no.
    const open = createHub({
      logger: silentLogger,
      authenticate: createTokenAuthenticator(TOKENS),
      liveQueries: s.live,
      channels: { 'db:collection:*': { subscribe: true, publish: false, liveQuery: true, history: false } },
    })
    const transport = createWsTransport(open)
    const http = createServer((_req, res) => res.writeHead(404).end())
    transport.attach(http)
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r))
    try {
      const a = (await connectWs(`ws://127.0.0.1:${(http.address() as AddressInfo).port}/realtime`)) as Raw
      attackers.push(a)
      expectRefused(await ask(a, { type: 'subscribe', channel: 'db:collection:messages', query: { where: [['roomId', '==', 'r9']] } }), 'RT_003', /not allowed to read 'messages'/)
      expectRefused(await ask(a, { type: 'subscribe', channel: 'db:collection:members', query: {} }), 'RT_004')
      a.close()
    } finally {
      await transport.close({ timeoutMs: 50 })
      await open.close()
      await new Promise((r) => http.close(r))
    }
  })
})

describe('live queries against hostile ws clients (PostgreSQL)', () => {
  let server: PostgresServer
  let s: Served
  let kysely: Kysely<any>

  beforeAll(async () => {
    server = await startPostgres()
    const url = await server.createDatabase()
    kysely = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 2 }) }) })
    s = await serve({ postgres: url }, kysely)
  }, 60_000)
  afterAll(async () => {
    await s?.close()
    await kysely?.destroy()
    await server?.stop()
  })

  it('values the server cannot take for the column are RT_007 without its message; the server goes on serving, rule intact', async () => {
    const c = await connectWs(`${s.url}?token=tok-ada`)
    const watcher = await connectWs(`${s.url}?token=tok-bob`)
    const watch = 'db:collection:messages:watch'
    await subscribe(watcher, watch, { where: [['roomId', '==', 'r1']], orderBy: [['createdAt', 'desc']], limit: 5 })
    const ch = 'db:collection:messages:types'
    for (const query of [
      { where: [['createdAt', '>', 'abc']] },
      { where: [['score', '==', 1e300]] },
      { where: [['score', '==', 2 ** 40]] },
      { where: [['score', 'in', [1, 'NaN']]] },
      { where: [['pinned', '==', 5]] },
      { where: [['roomId', '==', 'r1\u0000']] },
      { orderBy: [['createdAt', 'asc']], startAfter: ['zz', 'a'] },
    ]) {
      const r = await ask(c, { type: 'subscribe', channel: ch, query })
      expectRefused(r, 'RT_007', /does not fit its field in 'messages'/)
      expect(String(r['message'])).not.toMatch(DB_WORDS)
    }
    expect(s.live.stats()).toMatchObject({ queries: 1, subscribers: 1 })
    expect(s.errors).toEqual([])
    // SQL in values is data, and the rule holds under an OR that names zed's room.
    const r = await subscribe(c, ch, { where: { or: [['roomId', '==', "r9' OR '1'='1"], ['roomId', '==', 'r9'], ['roomId', '==', 'r1']] }, orderBy: [['createdAt', 'asc']], limit: 10 })
    expect(idsOf(r)).toEqual(['a', 'b', 'c'])
    expect(JSON.stringify(c.frames)).not.toContain(SECRET)
    await kysely.insertInto('messages').values({ id: 'pg-new', roomId: 'r1', createdAt: 9999, body: 'x' }).execute()
    await until(() => expect(watcher.live.views.get(watch)?.docs[0]?.['id']).toBe('pg-new'), 8000)
    await until(() => expect(c.live.views.get(ch)?.docs.map((d) => d['id'])).toEqual(['a', 'b', 'c', 'pg-new']), 8000)
    c.close()
    watcher.close()
  })
})
