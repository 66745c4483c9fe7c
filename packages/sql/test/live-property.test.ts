import { PGlite } from '@electric-sql/pglite'
import { type LiveDoc, type LiveWhere, isCondition } from '@tidings/core'
import { type TestHub, createTestHub } from '@tidings/core/testing'
import fc from 'fast-check'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type LiveQueries, createLiveQueries } from '../src/index.js'
import { COLLECTIONS, LiveClient, createSchema } from './live-suite.js'

// A user never receives a row the rule forbids: random memberships, random queries per user,
// random inserts, updates (rooms included) and deletes; every doc of every frame a user gets is
// checked against its rooms, and at rest each result equals a plain in-memory oracle.

const USERS = ['u0', 'u1', 'u2'] as const
const ROOMS = ['r0', 'r1', 'r2', 'r3'] as const

interface Row { id: string; roomId: string; createdAt: number; score: number | null }
type Op =
  | { kind: 'insert'; roomId: string; createdAt: number; score: number | null }
  | { kind: 'update'; pick: number; roomId?: string; createdAt?: number; score?: number | null }
  | { kind: 'delete'; pick: number }
interface Q { where: LiveWhere[]; dir: 'asc' | 'desc'; limit: number }

const room = fc.constantFrom(...ROOMS)
const score = fc.option(fc.integer({ min: 0, max: 9 }), { nil: null })
const condition: fc.Arbitrary<LiveWhere> = fc.oneof(
  room.map((r) => ['roomId', '==', r] as const),
  room.map((r) => ['roomId', '!=', r] as const),
  fc.uniqueArray(room, { minLength: 1, maxLength: 3 }).map((rs) => ['roomId', 'in', rs] as const),
  fc.tuple(fc.constantFrom('<', '<=', '>', '>=', '==', '!=' as const), fc.integer({ min: 0, max: 9 })).map(([op, v]) => ['score', op, v] as const),
  fc.constant(['score', '==', null] as const),
)
const where: fc.Arbitrary<LiveWhere> = fc.oneof(condition, fc.array(condition, { minLength: 2, maxLength: 3 }).map((or) => ({ or })))
const query: fc.Arbitrary<Q> = fc.record({ where: fc.array(where, { maxLength: 2 }), dir: fc.constantFrom('asc' as const, 'desc' as const), limit: fc.integer({ min: 1, max: 6 }) })
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('insert' as const), roomId: room, createdAt: fc.integer({ min: 0, max: 20 }), score }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('update' as const), pick: fc.nat(), roomId: fc.option(room, { nil: undefined }), createdAt: fc.option(fc.integer({ min: 0, max: 20 }), { nil: undefined }), score: fc.option(score, { nil: undefined }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), pick: fc.nat() }) },
)

/** SQL's three-valued logic with unknown as false (no NOT in queries, so that is exact). */
function matches(row: Row, w: LiveWhere): boolean {
  if (isCondition(w)) {
    const [field, o, value] = w
    const v = row[field as keyof Row] as number | null
    if (o === '==' && value === null) return v === null
    if (o === '!=' && value === null) return v !== null
    if (v === null) return false
    switch (o) {
      case '==': return v === (value as unknown)
      case '!=': return v !== (value as unknown)
      case '<': return v < (value as number)
      case '<=': return v <= (value as number)
      case '>': return v > (value as number)
      case '>=': return v >= (value as number)
      case 'in': return (value as unknown[]).includes(v as unknown)
      case 'not-in': return !(value as unknown[]).includes(v as unknown)
    }
  }
  return 'and' in w ? w.and.every((c) => matches(row, c)) : w.or.some((c) => matches(row, c))
}

function oracle(rows: Row[], rooms: Set<string>, q: Q): string[] {
  const sign = q.dir === 'asc' ? 1 : -1
  return rows
    .filter((r) => rooms.has(r.roomId) && q.where.every((w) => matches(r, w)))
    .sort((a, b) => sign * (a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)))
    .slice(0, q.limit)
    .map((r) => r.id)
}

describe('live query row rule (property, PGlite)', () => {
  let pglite: PGlite
  let db: Kysely<any>
  let live: LiveQueries
  let t: TestHub
  beforeAll(async () => {
    pglite = new PGlite('memory://')
    db = new Kysely<any>({ dialect: new PGliteDialect(pglite) })
    await createSchema(db)
    live = createLiveQueries({ db: { pglite }, collections: COLLECTIONS })
    await live.install()
    await live.start()
    t = createTestHub({ liveQueries: live })
  })
  afterAll(async () => {
    await t?.close()
    await live?.close()
    await pglite?.close()
  })

  const quiet = async () => {
    let last = -1
    while (live.stats().changes !== last) {
      last = live.stats().changes
      await new Promise((r) => setTimeout(r, 60))
      await live.idle()
    }
  }

  it('a user never receives a row of a room it does not belong to, and each result at rest equals the oracle', async () => {
    let run = 0
    await fc.assert(
      fc.asyncProperty(
        fc.record({ u0: fc.subarray([...ROOMS]), u1: fc.subarray([...ROOMS]), u2: fc.subarray([...ROOMS]) }),
        fc.array(fc.tuple(fc.constantFrom(...USERS), query), { minLength: 1, maxLength: 5 }),
        fc.array(op, { maxLength: 14 }),
        async (membership, queries, ops) => {
          run++
          await db.deleteFrom('messages').execute()
          await db.deleteFrom('members').execute()
          const memberRows = USERS.flatMap((u) => membership[u].map((r) => ({ room_id: r, user_id: u })))
          if (memberRows.length > 0) await db.insertInto('members').values(memberRows).execute()
          const rows: Row[] = []
          let n = 0
          const seed = async (o: Op & { kind: 'insert' }) => {
            const row = { id: `p${run}-${String(++n).padStart(4, '0')}`, roomId: o.roomId, createdAt: o.createdAt, score: o.score }
            await db.insertInto('messages').values(row).execute()
            rows.push(row)
          }
          // A few rows before the queries open, the rest while they are live.
          const early = ops.filter((o): o is Op & { kind: 'insert' } => o.kind === 'insert').slice(0, 3)
          for (const o of early) await seed(o)
          await quiet()
          const clients = new Map<string, LiveClient>()
          for (const u of USERS) clients.set(u, new LiveClient(await t.connect({ userId: u })))
          const opened: Array<{ user: string; channel: string; q: Q }> = []
          for (const [i, [user, q]] of queries.entries()) {
            const channel = `db:collection:messages:q${i}`
            await clients.get(user)!.query(channel, { where: q.where, orderBy: [['createdAt', q.dir]], limit: q.limit })
            opened.push({ user, channel, q })
          }
          for (const o of ops) {
            if (early.includes(o as never)) continue
            if (o.kind === 'insert') await seed(o)
            else if (rows.length > 0) {
              const row = rows[o.pick % rows.length]!
              if (o.kind === 'delete') {
                await db.deleteFrom('messages').where('id', '=', row.id).execute()
                rows.splice(rows.indexOf(row), 1)
              } else {
                const set: Partial<Row> = {}
                if (o.roomId !== undefined) set.roomId = o.roomId
                if (o.createdAt !== undefined) set.createdAt = o.createdAt
                if (o.score !== undefined) set.score = o.score
                if (Object.keys(set).length === 0) continue
                await db.updateTable('messages').set(set).where('id', '=', row.id).execute()
                Object.assign(row, set)
              }
            }
          }
          await quiet()
          for (const { user, channel, q } of opened) {
            const c = clients.get(user)!
            const rooms = new Set<string>(membership[user as keyof typeof membership])
            // Every doc the user was ever sent on this channel: snapshots and changes.
            const sent: LiveDoc[] = c.seen
              .filter((f) => f['channel'] === channel)
              .flatMap((f) => (f.type === 'query:snapshot' ? (f['docs'] as LiveDoc[]) : f.type === 'query:changes' ? (f['changes'] as Array<{ doc: LiveDoc }>).map((ch) => ch.doc) : []))
            // A removal may carry a row as it was; a forbidden row must never be *shown*: check what was added or held.
            const shown = c.seen
              .filter((f) => f['channel'] === channel)
              .flatMap((f) => (f.type === 'query:snapshot' ? (f['docs'] as LiveDoc[]) : f.type === 'query:changes' ? (f['changes'] as Array<{ type: string; doc: LiveDoc }>).filter((ch) => ch.type !== 'removed').map((ch) => ch.doc) : []))
            for (const d of shown) expect(rooms.has(d['roomId'] as string), `${user} was sent ${JSON.stringify(d)} (rooms ${[...rooms]})`).toBe(true)
            expect(sent.length).toBeGreaterThanOrEqual(shown.length)
            expect(c.faults).toEqual([])
            expect(c.ids(channel), `${user} ${JSON.stringify(q)}`).toEqual(oracle(rows, rooms, q))
          }
          for (const c of clients.values()) c.client.close()
          await t.settle()
          await live.idle()
          expect(live.stats().subscribers).toBe(0)
        },
      ),
      { numRuns: 40, seed: 20261203, endOnFailure: true },
    )
  }, 120_000)
})
