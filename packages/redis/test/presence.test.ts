import { presenceConformance } from '@tidings/core/conformance'
import type { PresenceEntry } from '@tidings/core'
import { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RedisClient, createRedisPresenceStore } from '../src/index.js'
import { type RedisCluster, type RedisServer, startCluster, startRedis } from './servers.js'

let server: RedisServer
let cluster: RedisCluster
let standalone: Redis
let clustered: Cluster

beforeAll(async () => {
  ;[server, cluster] = await Promise.all([startRedis(), startCluster()])
  standalone = new Redis(server.port, '127.0.0.1', { maxRetriesPerRequest: null })
  clustered = new Cluster(cluster.nodes)
}, 60_000)

afterAll(async () => {
  standalone?.disconnect()
  clustered?.disconnect()
  await Promise.all([server?.stop(), cluster?.stop()])
})

presenceConformance('redis, standalone', () => createRedisPresenceStore({ client: standalone }))
presenceConformance('redis, cluster', () => createRedisPresenceStore({ client: clustered }))

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
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe.each([
  ['standalone', () => [new Redis(server.port, '127.0.0.1', { maxRetriesPerRequest: null }), new Redis(server.port, '127.0.0.1'), new Redis(server.port, '127.0.0.1')] as RedisClient[]],
  ['cluster', () => [new Cluster(cluster.nodes), new Cluster(cluster.nodes), new Cluster(cluster.nodes)] as RedisClient[]],
])('three nodes, each with its own Redis connection (%s)', (_kind, connect) => {
  let clients: RedisClient[]
  beforeAll(() => {
    clients = connect()
  })
  afterAll(() => {
    for (const c of clients) c.disconnect()
  })
  const stores = () => clients.map((client) => createRedisPresenceStore({ client }))

  it('three tabs of one user on three nodes: one join edge, one leave edge (not one per node)', async () => {
    const n = names()
    const [a, b, c] = stores()
    const joins = await Promise.all([a!.join(entry(n, 't1', 'alice', 'n1')), b!.join(entry(n, 't2', 'alice', 'n2')), c!.join(entry(n, 't3', 'alice', 'n3'))])
    expect(joins.filter((j) => j.edge)).toHaveLength(1)
    expect(Math.max(...joins.map((j) => j.member.connections))).toBe(3)
    for (const s of [a!, b!, c!]) expect((await s.members(n.channel)).map((m) => [m.id, m.connections])).toEqual([[n.user('alice'), 3]])
    const leaves = await Promise.all([a!.leave(n.channel, n.conn('t1'), T0 + 1), b!.leave(n.channel, n.conn('t2'), T0 + 1), c!.leave(n.channel, n.conn('t3'), T0 + 1)])
    expect(leaves.filter((l) => l?.edge)).toHaveLength(1)
    expect(leaves.find((l) => l?.edge)?.member).toMatchObject({ id: n.user('alice'), connections: 0, lastSeen: T0 + 1 })
    expect(await a!.members(n.channel)).toEqual([])
  })

  it('a node that stops heartbeating is dead after the TTL; two live nodes removing it concurrently announce each leave once', async () => {
    const n = names()
    const [dead, live1, live2] = stores()
    const ttl = 30_000
    // the dying node holds entries in several channels; alice also has a tab on a live node
    for (let i = 0; i < 40; i++) await dead!.join(entry(n, `d${i}`, `u${i % 9}`, 'dead', { channel: `${n.channel}:${i % 4}` }))
    await live1!.join(entry(n, 'l1', 'u0', 'live1', { channel: `${n.channel}:0` }))
    for (const [s, id] of [[dead!, 'dead'], [live1!, 'live1'], [live2!, 'live2']] as const) await s.heartbeat(n.node(id), T0)
    const mine = (list: string[]) => list.filter((x) => x.startsWith(n.node(''))).sort()
    await live1!.heartbeat(n.node('live1'), T0 + 20_000)
    await live2!.heartbeat(n.node('live2'), T0 + 20_000)
    expect(mine(await live1!.deadNodes(T0 + ttl, ttl))).toEqual([]) // exactly the TTL: alive
    const seen1 = mine(await live1!.deadNodes(T0 + ttl + 1, ttl))
    const seen2 = mine(await live2!.deadNodes(T0 + ttl + 1, ttl))
    expect(seen1).toEqual([n.node('dead')])
    expect(seen2).toEqual([n.node('dead')])
    const [r1, r2] = await Promise.all([live1!.removeNode(n.node('dead'), T0 + ttl + 1), live2!.removeNode(n.node('dead'), T0 + ttl + 1)])
    const all = [...r1, ...r2]
    expect(all).toHaveLength(40) // every entry's removal reported once in total
    const edges = all.filter((x) => x.change.edge).map((x) => `${x.channel} ${x.change.member.id}`)
    expect(new Set(edges).size).toBe(edges.length)
    // 9 users over 4 channels: u_k is in channel (k mod 4) and more; u0 keeps its live tab in :0
    expect(edges).not.toContain(`${n.channel}:0 ${n.user('u0')}`)
    expect((await live2!.members(`${n.channel}:0`)).map((m) => [m.id, m.connections])).toEqual([[n.user('u0'), 1]])
    for (const i of [1, 2, 3]) expect(await live2!.members(`${n.channel}:${i}`)).toEqual([])
    expect(mine(await live2!.deadNodes(T0 + ttl + 1, ttl))).toEqual([])
    expect(mine(await live2!.liveNodes(T0 + ttl + 1, ttl))).toEqual([n.node('live1'), n.node('live2')].sort())
    expect(await live1!.lastSeen(n.user('u3'))).toBe(T0 + ttl + 1)
  })
})

describe('keys on Redis', () => {
  it('a channel whose name holds braces (or is empty) works on a cluster: no CROSSSLOT', async () => {
    const store = createRedisPresenceStore({ client: clustered })
    const n = names()
    for (const channel of [`{${n.channel}}`, `a}b{${n.channel}`, `}${n.channel}`, '']) {
      const e = entry(n, 'c1', 'alice', 'n1', { channel })
      expect((await store.join(e)).edge).toBe(true)
      expect((await store.members(channel)).map((m) => m.id)).toEqual([n.user('alice')])
      expect((await store.leave(channel, n.conn('c1'), T0 + 1))?.edge).toBe(true)
    }
  })

  it('data and times come back exactly as given (Lua never re-encodes numbers)', async () => {
    const store = createRedisPresenceStore({ client: standalone })
    const n = names()
    const data = { pi: Math.PI, big: Number.MAX_SAFE_INTEGER, tiny: 1e-300, nested: { list: [0.1, 'x', null, true] }, text: 'é/"\\' }
    await store.join(entry(n, 'c1', 'alice', 'n1', { data, joinedAt: T0 + 0.5, updatedAt: T0 + 0.25 }))
    const [e] = await store.entries(n.channel)
    expect(e).toEqual({ channel: n.channel, connectionId: n.conn('c1'), userId: n.user('alice'), nodeId: n.node('n1'), state: 'online', data, joinedAt: T0 + 0.5, updatedAt: T0 + 0.25 })
    await store.leave(n.channel, n.conn('c1'), 1_767_225_600_123.75)
    expect(await store.lastSeen(n.user('alice'))).toBe(1_767_225_600_123.75)
  })

  it('nothing is left behind: a channel’s keys go with its last entry, a dead node’s index and activity with removeNode', async () => {
    const prefix = `leak-${Date.now()}:`
    const store = createRedisPresenceStore({ client: standalone, prefix })
    const n = names()
    await store.join(entry(n, 'c1', 'alice', 'n1'))
    await store.join(entry(n, 'c2', 'bob', 'n2'))
    await store.heartbeat(n.node('n2'), T0)
    await store.leave(n.channel, n.conn('c1'), T0 + 1)
    expect(await store.removeNode(n.node('n2'), T0 + 2)).toHaveLength(1)
    // what remains: only the last-seen times
    expect((await standalone.keys(`${prefix}*`)).sort()).toEqual([`${prefix}presence:last-seen`])
  })

  it('a heartbeat of a silent node that holds nothing is forgotten by deadNodes', async () => {
    const prefix = `hb-${Date.now()}:`
    const store = createRedisPresenceStore({ client: standalone, prefix })
    const n = names()
    await store.heartbeat(n.node('idle'), T0)
    expect(await store.deadNodes(T0 + 10, 30_000)).toEqual([])
    expect(await standalone.zcard(`${prefix}presence:{nodes}:hb`)).toBe(1)
    expect(await store.deadNodes(T0 + 30_001, 30_000)).toEqual([])
    expect(await standalone.zcard(`${prefix}presence:{nodes}:hb`)).toBe(0)
  })

  it('last-seen times are bounded by maxLastSeen: the users seen longest ago are forgotten', async () => {
    const store = createRedisPresenceStore({ client: clustered, prefix: `seen-${Date.now()}:`, maxLastSeen: 3 })
    const n = names()
    for (let i = 0; i < 5; i++) {
      await store.join(entry(n, `c${i}`, `u${i}`, 'n1'))
      await store.leave(n.channel, n.conn(`c${i}`), T0 + i)
    }
    expect(await store.lastSeen(n.user('u0'))).toBeUndefined()
    expect(await store.lastSeen(n.user('u1'))).toBeUndefined()
    expect(await store.lastSeen(n.user('u4'))).toBe(T0 + 4)
    expect(await store.lastSeen(n.user('u2'))).toBe(T0 + 2)
  })

  it('removeNode of a node with more entries than one batch removes them all, each once, across racing callers', async () => {
    const a = createRedisPresenceStore({ client: clustered, removeBatch: 7 })
    const b = createRedisPresenceStore({ client: clustered, removeBatch: 5 })
    const n = names()
    await Promise.all(Array.from({ length: 120 }, (_, i) => a.join(entry(n, `c${i}`, `u${i % 13}`, 'big', { channel: `${n.channel}:${i % 11}` }))))
    const [x, y] = await Promise.all([a.removeNode(n.node('big'), T0 + 1), b.removeNode(n.node('big'), T0 + 1)])
    expect(x.length + y.length).toBe(120)
    const keys = [...x, ...y].map((c) => `${c.channel} ${c.change.member.id} ${c.change.member.connections} ${c.change.edge}`)
    expect(new Set(keys).size).toBe(keys.length)
    for (let i = 0; i < 11; i++) expect(await a.entries(`${n.channel}:${i}`)).toEqual([])
  })

  it('a connection joined again through another node is that node’s: removing the old node leaves it alone', async () => {
    const store = createRedisPresenceStore({ client: clustered })
    const n = names()
    await store.join(entry(n, 'c1', 'alice', 'old'))
    expect((await store.join(entry(n, 'c1', 'alice', 'new', { updatedAt: T0 + 1 }))).edge).toBe(false)
    expect(await store.deadNodes(T0 + 1_000_000, 1)).not.toContain(n.node('old')) // holds nothing now
    expect(await store.removeNode(n.node('old'), T0 + 2)).toEqual([])
    expect((await store.entries(n.channel)).map((e) => [e.connectionId, e.nodeId])).toEqual([[n.conn('c1'), n.node('new')]])
    expect(await store.removeNode(n.node('new'), T0 + 3)).toHaveLength(1)
  })

  it('a stale index reference (a node that crashed between its two writes) never removes another node’s entry', async () => {
    const prefix = `stale-${Date.now()}:`
    const store = createRedisPresenceStore({ client: clustered, prefix })
    const n = names()
    await store.join(entry(n, 'c1', 'alice', 'new'))
    // the old node's index still names the connection, as if its untrack never ran
    await clustered.sadd(`${prefix}presence:{nodes}:node:${n.node('old')}`, JSON.stringify([n.channel, n.conn('c1')]))
    expect(await store.removeNode(n.node('old'), T0 + 2)).toEqual([])
    expect((await store.members(n.channel)).map((m) => m.id)).toEqual([n.user('alice')])
    expect(await clustered.exists(`${prefix}presence:{nodes}:node:${n.node('old')}`)).toBe(0)
  })

  it('join, update and leave of one connection called without awaiting take effect in call order', async () => {
    const store = createRedisPresenceStore({ client: clustered })
    const n = names()
    const ops = [store.join(entry(n, 'c1', 'alice', 'n1')), store.update(n.channel, n.conn('c1'), { state: 'away', now: T0 + 1 }), store.leave(n.channel, n.conn('c1'), T0 + 2)]
    const [joined, updated, left] = await Promise.all(ops)
    expect(joined).toMatchObject({ edge: true })
    expect(updated).toMatchObject({ state: 'away' })
    expect(left).toMatchObject({ edge: true })
    expect(await store.removeNode(n.node('n1'), T0 + 3)).toEqual([])
    expect(await store.deadNodes(T0 + 1_000_000, 1)).not.toContain(n.node('n1'))
  })
})

describe('a node judged dead while it was only slow', () => {
  it('is told by its next heartbeat that its entries were removed (onLost), not left believing it is present', async () => {
    const lost: string[] = []
    const slow = createRedisPresenceStore({ client: clustered, onLost: (node) => lost.push(node) })
    const other = createRedisPresenceStore({ client: clustered })
    const n = names()
    await slow.heartbeat(n.node('slow'), T0)
    await slow.join(entry(n, 'c1', 'alice', 'slow'))
    expect(await other.deadNodes(T0 + 31_000, 30_000)).toContain(n.node('slow'))
    expect(await other.removeNode(n.node('slow'), T0 + 31_000)).toHaveLength(1)
    await slow.heartbeat(n.node('slow'), T0 + 31_500)
    expect(lost).toEqual([n.node('slow')])
    await slow.heartbeat(n.node('slow'), T0 + 32_000)
    expect(lost).toEqual([n.node('slow')]) // once
  })
})

describe('a Redis restart', () => {
  it('loses presence (no persistence): members are empty after it, and the store works again (scripts reloaded) once the hub rejoins', async () => {
    const client = new Redis(server.port, '127.0.0.1', { maxRetriesPerRequest: null })
    const lost: string[] = []
    const store = createRedisPresenceStore({ client, onLost: (node) => lost.push(node) })
    const n = names()
    await store.join(entry(n, 'c1', 'alice', 'n1'))
    await store.heartbeat(n.node('n1'), T0)
    await store.heartbeat(n.node('n1'), T0 + 1)
    expect(lost).toEqual([])
    expect(await store.members(n.channel)).toHaveLength(1)
    await server.restart()
    let members: unknown
    for (let i = 0; i < 50; i++) {
      try {
        members = await store.members(n.channel)
        break
      } catch {
        await sleep(100)
      }
    }
    expect(members).toEqual([])
    expect(await store.liveNodes(T0 + 1, 30_000)).toEqual([])
    // the next heartbeat finds its previous one gone: the node is told, so it can join again
    await store.heartbeat(n.node('n1'), T0 + 2)
    expect(lost).toEqual([n.node('n1')])
    // a rejoin (what the hub has to do after it) is a fresh join edge, and the node is live again
    expect((await store.join(entry(n, 'c1', 'alice', 'n1'))).edge).toBe(true)
    await store.heartbeat(n.node('n1'), T0 + 2)
    expect(await store.liveNodes(T0 + 2, 30_000)).toEqual([n.node('n1')])
    client.disconnect()
  })
})
