import type { PresenceEntry } from '@tidings/core'
import { presenceConformance } from '@tidings/core/conformance'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type PostgresPresenceStore, createPostgresPresenceStore } from '../src/presence.js'
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

presenceConformance('PostgreSQL', () => createPostgresPresenceStore({ connectionString: url }), { dispose: (s) => s.close() })
presenceConformance('PostgreSQL, a schema and prefix of its own', () => createPostgresPresenceStore({ connectionString: url, schema: 'rt', tablePrefix: 'p_' }), { dispose: (s) => s.close() })

const T0 = Date.UTC(2026, 0, 1)
let run = 0
const names = () => {
  const base = `own:${Date.now().toString(36)}:${++run}`
  return { channel: `room:${base}`, node: (n: string) => `${base}:${n}`, user: (u: string) => `${base}:${u}`, conn: (c: string) => `${base}:${c}` }
}
type Names = ReturnType<typeof names>
const entry = (n: Names, conn: string, user: string, node: string, o: Partial<PresenceEntry> = {}): PresenceEntry => ({
  channel: n.channel,
  connectionId: n.conn(conn),
  userId: n.user(user),
  nodeId: n.node(node),
  state: 'online',
  data: {},
  joinedAt: T0,
  updatedAt: T0,
  ...o,
})

describe('three nodes, each with its own pool', () => {
  const stores: PostgresPresenceStore[] = []
  const three = () => {
    const s = [0, 1, 2].map(() => createPostgresPresenceStore({ connectionString: url }))
    stores.push(...s)
    return s as [PostgresPresenceStore, PostgresPresenceStore, PostgresPresenceStore]
  }
  afterAll(async () => {
    for (const s of stores) await s.close()
  })

  it('ten tabs of one user joining and leaving at once on three nodes: one join edge, one leave edge (the edge is decided under a lock)', async () => {
    const [a, b, c] = three()
    for (let round = 0; round < 3; round++) {
      const n = names()
      const via = [a, b, c]
      const joins = await Promise.all(Array.from({ length: 10 }, (_, i) => via[i % 3]!.join(entry(n, `t${i}`, 'alice', `n${i % 3}`))))
      expect(joins.filter((j) => j.edge)).toHaveLength(1)
      expect((await a.members(n.channel)).map((m) => [m.id, m.connections])).toEqual([[n.user('alice'), 10]])
      const leaves = await Promise.all(Array.from({ length: 10 }, (_, i) => via[(i + 1) % 3]!.leave(n.channel, n.conn(`t${i}`), T0 + 1)))
      expect(leaves.filter((l) => l?.edge)).toHaveLength(1)
      expect(leaves.find((l) => l?.edge)?.member).toMatchObject({ id: n.user('alice'), connections: 0, lastSeen: T0 + 1 })
      expect(await b.members(n.channel)).toEqual([])
    }
  })

  it('three nodes racing to remove a dead node with 120 entries over 11 channels report each leave once in total, and leave the live tab alone', async () => {
    const [dead, l1, l2] = three()
    const n = names()
    await Promise.all(Array.from({ length: 120 }, (_, i) => dead.join(entry(n, `d${i}`, `u${i % 13}`, 'dead', { channel: `${n.channel}:${i % 11}` }))))
    await l1.join(entry(n, 'live', 'u0', 'live', { channel: `${n.channel}:0` }))
    await l1.heartbeat(n.node('live'), T0 + 40_000)
    expect((await l2.deadNodes(T0 + 40_000, 30_000)).filter((x) => x.startsWith(n.node('')))).toEqual([n.node('dead')])
    const results = await Promise.all([l1.removeNode(n.node('dead'), T0 + 40_000), l2.removeNode(n.node('dead'), T0 + 40_000), dead.removeNode(n.node('dead'), T0 + 40_000)])
    const all = results.flat()
    expect(all).toHaveLength(120)
    const edges = all.filter((x) => x.change.edge).map((x) => `${x.channel} ${x.change.member.id}`)
    expect(new Set(edges).size).toBe(edges.length)
    expect(edges).not.toContain(`${n.channel}:0 ${n.user('u0')}`)
    expect((await l2.members(`${n.channel}:0`)).map((m) => [m.id, m.connections])).toEqual([[n.user('u0'), 1]])
    for (let i = 1; i < 11; i++) expect(await l2.entries(`${n.channel}:${i}`)).toEqual([])
  })

  it('a node judged dead while it was only slow hears it from its next heartbeat (false, and onLost once)', async () => {
    const lost: string[] = []
    const slow = createPostgresPresenceStore({ connectionString: url, onLost: (node) => lost.push(node) })
    stores.push(slow)
    const [other] = three()
    const n = names()
    expect(await slow.heartbeat(n.node('slow'), T0)).toBe(false)
    await slow.join(entry(n, 'c1', 'alice', 'slow'))
    expect(await other.removeNode(n.node('slow'), T0 + 31_000)).toHaveLength(1)
    expect(await slow.heartbeat(n.node('slow'), T0 + 31_500)).toBe(false)
    expect(lost).toEqual([n.node('slow')])
    expect(await slow.heartbeat(n.node('slow'), T0 + 32_000)).toBe(true)
    expect(lost).toEqual([n.node('slow')])
  })
})

describe('rows in PostgreSQL', () => {
  it('data and times come back exactly as given (text JSON, double precision)', async () => {
    const store = createPostgresPresenceStore({ connectionString: url })
    const n = names()
    const data = { pi: Math.PI, big: Number.MAX_SAFE_INTEGER, tiny: 1e-300, nested: { list: [0.1, 'x', null, true] }, text: 'é/"\\\'; --' }
    await store.join(entry(n, 'c1', 'alice', 'n1', { data, joinedAt: T0 + 0.5, updatedAt: T0 + 0.25 }))
    const [e] = await store.entries(n.channel)
    expect(e).toEqual({ channel: n.channel, connectionId: n.conn('c1'), userId: n.user('alice'), nodeId: n.node('n1'), state: 'online', data, joinedAt: T0 + 0.5, updatedAt: T0 + 0.25 })
    await store.leave(n.channel, n.conn('c1'), 1_767_225_600_123.75)
    expect(await store.lastSeen(n.user('alice'))).toBe(1_767_225_600_123.75)
    await store.close()
  })

  it('nothing is left behind: a channel’s rows go with its last entry, a dead node’s heartbeat with removeNode, a silent idle node’s with deadNodes', async () => {
    const pool = new pg.Pool({ connectionString: url, max: 2 })
    const store = createPostgresPresenceStore({ pool })
    const n = names()
    await store.join(entry(n, 'c1', 'alice', 'n1'))
    await store.join(entry(n, 'c2', 'bob', 'n2'))
    await store.heartbeat(n.node('n2'), T0)
    await store.heartbeat(n.node('idle'), T0)
    await store.leave(n.channel, n.conn('c1'), T0 + 1)
    expect(await store.removeNode(n.node('n2'), T0 + 2)).toHaveLength(1)
    const count = async (sql: string) => (await pool.query(sql, [`${n.node('')}%`])).rows[0].n as number
    expect(await count('SELECT count(*)::int AS n FROM tidings_presence WHERE node_id LIKE $1')).toBe(0)
    expect(await count('SELECT count(*)::int AS n FROM tidings_presence_nodes WHERE node_id LIKE $1')).toBe(1)
    await store.deadNodes(T0 + 30_001, 30_000)
    expect(await count('SELECT count(*)::int AS n FROM tidings_presence_nodes WHERE node_id LIKE $1')).toBe(0)
    await store.close()
    // a given pool is the app's: still open
    expect((await pool.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }])
    await pool.end()
  })
})

describe('the package’s migrations', () => {
  it('0002_cluster creates the cluster tables (in a schema, with a prefix): broker and presence work with createTables false, and down drops them', async () => {
    const { Kysely, PostgresDialect } = await import('kysely')
    const { createMigrator, migrate } = await import('../src/migrations/index.js')
    const { createPostgresBroker } = await import('../src/broker.js')
    const pool = new pg.Pool({ connectionString: url, max: 3 })
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
    const where = { schema: 'mig', prefix: 'm_' }
    const result = await migrate(db, where)
    expect(result.results?.map((r) => [r.migrationName, r.status])).toContainEqual(['0002_cluster', 'Success'])
    const store = createPostgresPresenceStore({ pool, createTables: false, schema: 'mig', tablePrefix: 'm_' })
    const n = names()
    expect((await store.join(entry(n, 'c1', 'alice', 'n1'))).edge).toBe(true)
    const got: unknown[] = []
    const a = createPostgresBroker({ pool, createTables: false, schema: 'mig', tablePrefix: 'm_', channelPrefix: 'mig' })
    const b = createPostgresBroker({ connectionString: url, createTables: false, schema: 'mig', tablePrefix: 'm_', channelPrefix: 'mig' })
    await a.start('mig-a', () => undefined)
    await b.start('mig-b', (m) => got.push(m))
    await b.subscribe('big')
    const data = 'y'.repeat(20_000)
    await a.publish({ kind: 'dispatch', origin: 'mig-a', target: { kind: 'channel', channel: 'big' }, frame: { type: 'message', channel: 'big', event: 'e', data, id: 'm1', timestamp: new Date(T0).toISOString() } } as never)
    for (let i = 0; i < 200 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 25))
    expect(got).toHaveLength(1)
    expect(a.stats().outboxWrites).toBe(1)
    expect((await pool.query(`SELECT count(*)::int AS n FROM mig.m_broker_outbox`)).rows[0].n).toBe(1)
    await a.close()
    await b.close()
    // down to the store's migration: 0002_cluster (and whatever follows it) undone
    const down = await createMigrator(db, where).migrateTo('0001_store')
    expect(down.error).toBeUndefined()
    expect(down.results?.map((r) => [r.migrationName, r.direction, r.status])).toContainEqual(['0002_cluster', 'Down', 'Success'])
    expect((await pool.query(`SELECT to_regclass('mig.m_presence') AS t, to_regclass('mig.m_broker_outbox') AS o`)).rows).toEqual([{ t: null, o: null }])
    await db.destroy()
  })
})
