import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { PresenceChange, PresenceEntry, PresenceStore } from '../ports/presence.js'
import { randomId } from '../util.js'

export interface PresenceConformanceOptions<P extends PresenceStore = PresenceStore> {
  /** Timeout of each test and hook, in ms. Default 10,000. */
  readonly timeoutMs?: number | undefined
  /** First part of the channel, user and node names the suite creates (each run adds a random part). Default `'conformance'`. */
  readonly prefix?: string | undefined
  /** Release the store after a test (a connection to close). */
  readonly dispose?: ((store: P) => Promise<void> | void) | undefined
}

/** A fixed, realistic "now": the suite never reads the wall clock. */
const T0 = Date.UTC(2026, 0, 1)

/**
 * The `PresenceStore` contract as a vitest suite: run it over every implementation.
 *
 *   presenceConformance('memory', () => createMemoryPresenceStore())
 *
 * Every test uses channels, users and node ids of its own (random names), so the suite runs on a
 * shared, non-empty database; `deadNodes` is only checked for the suite's own nodes. Time passes
 * only through the arguments.
 */
export function presenceConformance<P extends PresenceStore>(name: string, makeStore: () => P | Promise<P>, options: PresenceConformanceOptions<P> = {}): void {
  const timeout = options.timeoutMs ?? 10_000
  const run = `${options.prefix ?? 'conformance'}:${randomId()}`
  let counter = 0
  /** A name no other test (or run) uses. */
  const fresh = (label: string) => `${run}:${(++counter).toString(36)}:${label}`

  describe(`PresenceStore conformance: ${name}`, () => {
    let store: P

    beforeEach(async () => {
      store = await makeStore()
    }, timeout)

    afterEach(async () => {
      const s = store as P | undefined
      store = undefined as unknown as P
      if (s) await options.dispose?.(s)
    }, timeout)

    /** Names for one test: a channel, users, nodes. */
    const names = () => {
      const base = fresh('t')
      return {
        channel: `presence:${base}`,
        other: `presence:${base}:other`,
        user: (u: string) => `${base}:${u}`,
        node: (n: string) => `${base}:${n}`,
        conn: (c: string) => `${base}:${c}`,
      }
    }
    type Names = ReturnType<typeof names>
    const entryOf = (n: Names, conn: string, user: string, o: Partial<PresenceEntry> = {}): PresenceEntry => ({
      channel: n.channel,
      connectionId: n.conn(conn),
      userId: n.user(user),
      nodeId: n.node('n1'),
      state: 'online',
      data: {},
      joinedAt: T0,
      updatedAt: T0,
      ...o,
    })
    const summary = (changes: ReadonlyArray<{ channel: string; change: PresenceChange }>) =>
      changes.map((c) => [c.channel, c.change.member.id, c.change.edge, c.change.member.connections] as const).sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1))

    // ---------------------------------------------------------------- edges

    describe('join and leave edges are user-level', () => {
      it('three tabs of one user: the first join and the last leave are edges, nothing between', async () => {
        const n = names()
        const joins = []
        for (const c of ['t1', 't2', 't3']) joins.push(await store.join(entryOf(n, c, 'alice')))
        expect(joins.map((j) => j.edge)).toEqual([true, false, false])
        expect(joins.map((j) => j.member.connections)).toEqual([1, 2, 3])
        for (const j of joins) expect(j.member.id).toBe(n.user('alice'))
        const leaves = []
        for (const c of ['t2', 't1', 't3']) leaves.push(await store.leave(n.channel, n.conn(c), T0 + 10))
        expect(leaves.map((l) => l?.edge)).toEqual([false, false, true])
        expect(leaves.map((l) => l?.member.connections)).toEqual([2, 1, 0])
        expect(leaves[2]!.member).toMatchObject({ id: n.user('alice'), connections: 0, lastSeen: T0 + 10 })
        expect(await store.members(n.channel)).toEqual([])
        expect(await store.entries(n.channel)).toEqual([])
      }, timeout)

      it('another user’s join is its own edge', async () => {
        const n = names()
        expect((await store.join(entryOf(n, 'a1', 'alice'))).edge).toBe(true)
        expect((await store.join(entryOf(n, 'b1', 'bob'))).edge).toBe(true)
        expect((await store.leave(n.channel, n.conn('a1'), T0 + 1))?.edge).toBe(true)
        expect((await store.members(n.channel)).map((m) => m.id)).toEqual([n.user('bob')])
      }, timeout)

      it('the same user in two channels is a member of each, with edges in each', async () => {
        const n = names()
        expect((await store.join(entryOf(n, 'c1', 'alice'))).edge).toBe(true)
        expect((await store.join(entryOf(n, 'c1', 'alice', { channel: n.other }))).edge).toBe(true)
        expect((await store.leave(n.channel, n.conn('c1'), T0 + 1))?.edge).toBe(true)
        expect((await store.members(n.other)).map((m) => [m.id, m.connections])).toEqual([[n.user('alice'), 1]])
      }, timeout)

      it('joining again with the same connection replaces its entry: no second edge, one connection', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice'))
        const again = await store.join(entryOf(n, 'c1', 'alice', { state: 'away', updatedAt: T0 + 5 }))
        expect(again.edge).toBe(false)
        expect(again.member).toMatchObject({ connections: 1, state: 'away' })
        expect(await store.entries(n.channel)).toHaveLength(1)
        expect((await store.leave(n.channel, n.conn('c1'), T0 + 6))?.edge).toBe(true)
      }, timeout)

      it('leaving twice (or leaving what never joined) reports nothing the second time', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice'))
        expect((await store.leave(n.channel, n.conn('c1'), T0 + 1))?.edge).toBe(true)
        expect(await store.leave(n.channel, n.conn('c1'), T0 + 2)).toBeUndefined()
        expect(await store.leave(n.channel, n.conn('never'), T0 + 2)).toBeUndefined()
        expect(await store.leave(n.other, n.conn('c1'), T0 + 2)).toBeUndefined()
      }, timeout)

      it('concurrent joins of one user’s tabs report exactly one edge; concurrent leaves exactly one', async () => {
        const n = names()
        const tabs = ['t1', 't2', 't3', 't4', 't5']
        const joins = await Promise.all(tabs.map((c) => store.join(entryOf(n, c, 'alice'))))
        expect(joins.filter((j) => j.edge)).toHaveLength(1)
        const leaves = await Promise.all(tabs.map((c) => store.leave(n.channel, n.conn(c), T0 + 1)))
        expect(leaves.filter((l) => l?.edge)).toHaveLength(1)
        expect(await store.members(n.channel)).toEqual([])
      }, timeout)
    })

    // ---------------------------------------------------------------- updates and members

    describe('update, members and entries', () => {
      it('update changes an entry in place: what is not given is kept, updatedAt becomes now', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice', { state: 'online', data: { mood: 'ok', n: 1 } }))
        const m1 = await store.update(n.channel, n.conn('c1'), { state: 'away', now: T0 + 5 })
        expect(m1).toMatchObject({ id: n.user('alice'), state: 'away', data: { mood: 'ok', n: 1 }, connections: 1, lastSeen: T0 + 5 })
        const m2 = await store.update(n.channel, n.conn('c1'), { data: { mood: 'great' }, now: T0 + 6 })
        expect(m2).toMatchObject({ state: 'away', data: { mood: 'great' } })
        const [e] = await store.entries(n.channel)
        expect(e).toMatchObject({ connectionId: n.conn('c1'), state: 'away', data: { mood: 'great' }, joinedAt: T0, updatedAt: T0 + 6 })
      }, timeout)

      it('update of an unknown entry answers undefined and creates nothing', async () => {
        const n = names()
        expect(await store.update(n.channel, n.conn('ghost'), { state: 'away', now: T0 })).toBeUndefined()
        expect(await store.members(n.channel)).toEqual([])
        expect(await store.entries(n.channel)).toEqual([])
        expect(await store.lastSeen(n.user('ghost'))).toBeUndefined()
      }, timeout)

      it('a member shows its most recently updated entry’s state and data, counts its entries, and its earliest join', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice', { state: 'online', data: { tab: 1 }, joinedAt: T0, updatedAt: T0 }))
        await store.join(entryOf(n, 'c2', 'alice', { state: 'busy', data: { tab: 2 }, joinedAt: T0 + 10, updatedAt: T0 + 10 }))
        let [m] = await store.members(n.channel)
        expect(m).toMatchObject({ id: n.user('alice'), state: 'busy', data: { tab: 2 }, connections: 2, joinedAt: T0, lastSeen: T0 + 10 })
        await store.update(n.channel, n.conn('c1'), { state: 'away', now: T0 + 20 })
        ;[m] = await store.members(n.channel)
        expect(m).toMatchObject({ state: 'away', data: { tab: 1 }, connections: 2, lastSeen: T0 + 20 })
        // the member after a non-edge leave is the remaining entry
        const left = await store.leave(n.channel, n.conn('c1'), T0 + 30)
        expect(left).toMatchObject({ edge: false, member: { state: 'busy', data: { tab: 2 }, connections: 1 } })
      }, timeout)

      it('members lists each user once; entries lists every connection; channels do not mix', async () => {
        const n = names()
        await store.join(entryOf(n, 'a1', 'alice'))
        await store.join(entryOf(n, 'a2', 'alice'))
        await store.join(entryOf(n, 'b1', 'bob'))
        await store.join(entryOf(n, 'c1', 'carol', { channel: n.other }))
        const members = await store.members(n.channel)
        expect(members.map((m) => [m.id, m.connections]).sort()).toEqual([
          [n.user('alice'), 2],
          [n.user('bob'), 1],
        ])
        const entries = await store.entries(n.channel)
        expect(entries.map((e) => e.connectionId).sort()).toEqual([n.conn('a1'), n.conn('a2'), n.conn('b1')].sort())
        for (const e of entries) expect(e).toMatchObject({ channel: n.channel, nodeId: n.node('n1') })
        expect((await store.members(n.other)).map((m) => m.id)).toEqual([n.user('carol')])
        expect(await store.members(`${n.channel}:unknown`)).toEqual([])
      }, timeout)
    })

    // ---------------------------------------------------------------- last seen

    describe('lastSeen', () => {
      it('is unknown until the user leaves or updates, then the time of the latest', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice'))
        expect(await store.lastSeen(n.user('alice'))).toBeUndefined()
        await store.update(n.channel, n.conn('c1'), { state: 'away', now: T0 + 40 })
        expect(await store.lastSeen(n.user('alice'))).toBe(T0 + 40)
        await store.leave(n.channel, n.conn('c1'), T0 + 90)
        expect(await store.lastSeen(n.user('alice'))).toBe(T0 + 90)
        expect(await store.lastSeen(n.user('nobody'))).toBeUndefined()
      }, timeout)
    })

    // ---------------------------------------------------------------- dead nodes

    describe('removeNode', () => {
      it('removes a node’s entries in every channel and reports each change, edges where a user’s last entry went', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice', { nodeId: n.node('n1') }))
        await store.join(entryOf(n, 'c2', 'alice', { nodeId: n.node('n2') }))
        await store.join(entryOf(n, 'c3', 'bob', { nodeId: n.node('n1') }))
        await store.join(entryOf(n, 'c4', 'carol', { nodeId: n.node('n1'), channel: n.other }))
        const changes = await store.removeNode(n.node('n1'), T0 + 99)
        expect(summary(changes)).toEqual(
          summary([
            { channel: n.channel, change: { edge: false, member: { id: n.user('alice'), connections: 1 } as never } },
            { channel: n.channel, change: { edge: true, member: { id: n.user('bob'), connections: 0 } as never } },
            { channel: n.other, change: { edge: true, member: { id: n.user('carol'), connections: 0 } as never } },
          ]),
        )
        expect((await store.members(n.channel)).map((m) => [m.id, m.connections])).toEqual([[n.user('alice'), 1]])
        expect((await store.entries(n.channel)).map((e) => e.connectionId)).toEqual([n.conn('c2')])
        expect(await store.members(n.other)).toEqual([])
        expect(await store.lastSeen(n.user('bob'))).toBe(T0 + 99)
      }, timeout)

      it('removing the same node again reports nothing', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice'))
        expect(await store.removeNode(n.node('n1'), T0 + 1)).toHaveLength(1)
        expect(await store.removeNode(n.node('n1'), T0 + 2)).toEqual([])
        expect(await store.removeNode(n.node('never'), T0 + 2)).toEqual([])
      }, timeout)

      it('two nodes racing to remove the same dead node: every leave is reported once in total', async () => {
        const n = names()
        for (let i = 0; i < 20; i++) await store.join(entryOf(n, `c${i}`, `u${i % 7}`, { channel: i % 2 ? n.channel : n.other }))
        await store.join(entryOf(n, 'live', 'u0', { nodeId: n.node('n2') }))
        const [a, b, c] = await Promise.all([store.removeNode(n.node('n1'), T0 + 5), store.removeNode(n.node('n1'), T0 + 5), store.removeNode(n.node('n1'), T0 + 5)])
        const all = [...a, ...b, ...c]
        expect(all).toHaveLength(20)
        // each user's last entry in each channel is one leave edge, reported once
        const edges = all.filter((x) => x.change.edge).map((x) => `${x.channel} ${x.change.member.id}`)
        expect(new Set(edges).size).toBe(edges.length)
        // u0 keeps its entry on n2 in n.channel: no edge for it there
        expect(edges).not.toContain(`${n.channel} ${n.user('u0')}`)
        expect(edges.sort()).toEqual(
          [...['u1', 'u3', 'u5', 'u6', 'u2', 'u4'].map((u) => `${n.channel} ${n.user(u)}`), ...['u0', 'u1', 'u2', 'u3', 'u4', 'u5', 'u6'].map((u) => `${n.other} ${n.user(u)}`)].sort(),
        )
        expect((await store.members(n.channel)).map((m) => m.id)).toEqual([n.user('u0')])
      }, timeout)

      it('entries a node adds after its removal are its own again (a node that was only slow)', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice'))
        await store.removeNode(n.node('n1'), T0 + 1)
        expect((await store.join(entryOf(n, 'c2', 'alice', { joinedAt: T0 + 2, updatedAt: T0 + 2 }))).edge).toBe(true)
        expect(await store.removeNode(n.node('n1'), T0 + 3)).toHaveLength(1)
      }, timeout)
    })

    describe('heartbeats and deadNodes', () => {
      const mine = (n: Names, dead: readonly string[]) => dead.filter((d) => d.startsWith(n.node(''))).sort()

      it('a node whose last heartbeat is older than the TTL is dead; one that heartbeats stays alive', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice', { nodeId: n.node('quiet') }))
        await store.join(entryOf(n, 'c2', 'bob', { nodeId: n.node('busy') }))
        await store.heartbeat(n.node('quiet'), T0)
        await store.heartbeat(n.node('busy'), T0)
        expect(mine(n, await store.deadNodes(T0 + 30_000, 30_000))).toEqual([]) // exactly the TTL: still alive
        await store.heartbeat(n.node('busy'), T0 + 20_000)
        expect(mine(n, await store.deadNodes(T0 + 30_001, 30_000))).toEqual([n.node('quiet')])
        expect(mine(n, await store.deadNodes(T0 + 50_001, 30_000))).toEqual([n.node('busy'), n.node('quiet')].sort())
      }, timeout)

      it('a node that never heartbeated is judged by its newest join or update', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice', { nodeId: n.node('old'), joinedAt: T0, updatedAt: T0 }))
        await store.join(entryOf(n, 'c2', 'bob', { nodeId: n.node('old'), joinedAt: T0 + 10_000, updatedAt: T0 + 10_000 }))
        expect(mine(n, await store.deadNodes(T0 + 40_000, 30_000))).toEqual([])
        await store.update(n.channel, n.conn('c1'), { state: 'away', now: T0 + 20_000 })
        expect(mine(n, await store.deadNodes(T0 + 45_000, 30_000))).toEqual([])
        expect(mine(n, await store.deadNodes(T0 + 50_001, 30_000))).toEqual([n.node('old')])
      }, timeout)

      it('a node without entries is never dead, whatever its heartbeat', async () => {
        const n = names()
        await store.heartbeat(n.node('empty'), T0)
        await store.join(entryOf(n, 'c1', 'alice', { nodeId: n.node('gone') }))
        await store.leave(n.channel, n.conn('c1'), T0 + 1)
        expect(mine(n, await store.deadNodes(T0 + 1_000_000, 30_000))).toEqual([])
      }, timeout)

      it('liveNodes lists the nodes heartbeating within the TTL, with or without entries, and not a removed node', async () => {
        const n = names()
        await store.heartbeat(n.node('empty'), T0)
        await store.heartbeat(n.node('busy'), T0 + 10_000)
        await store.join(entryOf(n, 'c1', 'alice', { nodeId: n.node('busy') }))
        expect(mine(n, await store.liveNodes(T0 + 30_000, 30_000))).toEqual([n.node('busy'), n.node('empty')].sort()) // exactly the TTL: live
        expect(mine(n, await store.liveNodes(T0 + 30_001, 30_000))).toEqual([n.node('busy')])
        await store.removeNode(n.node('busy'), T0 + 30_002)
        expect(mine(n, await store.liveNodes(T0 + 30_002, 30_000))).toEqual([])
        await store.heartbeat(n.node('busy'), T0 + 30_003)
        expect(mine(n, await store.liveNodes(T0 + 30_003, 30_000))).toEqual([n.node('busy')])
      }, timeout)

      it('a heartbeat answers whether the store knew the node: false the first time and after removeNode, true otherwise', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice'))
        expect(await store.heartbeat(n.node('n1'), T0)).toBe(false)
        expect(await store.heartbeat(n.node('n1'), T0 + 1_000)).toBe(true)
        await store.removeNode(n.node('n1'), T0 + 2_000)
        expect(await store.heartbeat(n.node('n1'), T0 + 3_000)).toBe(false)
        expect(await store.heartbeat(n.node('n1'), T0 + 4_000)).toBe(true)
      }, timeout)

      it('a heartbeat never moves back', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice'))
        await store.heartbeat(n.node('n1'), T0 + 60_000)
        await store.heartbeat(n.node('n1'), T0)
        expect(mine(n, await store.deadNodes(T0 + 80_000, 30_000))).toEqual([])
      }, timeout)

      it('a dead node’s members expire: removeNode after deadNodes takes them out once, and the node is no longer dead', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice', { nodeId: n.node('dead') }))
        await store.join(entryOf(n, 'c2', 'bob', { nodeId: n.node('live') }))
        await store.heartbeat(n.node('dead'), T0)
        await store.heartbeat(n.node('live'), T0)
        await store.heartbeat(n.node('live'), T0 + 25_000)
        const dead = mine(n, await store.deadNodes(T0 + 31_000, 30_000))
        expect(dead).toEqual([n.node('dead')])
        // two live nodes both noticed: remove-once
        const [one, two] = await Promise.all(dead.flatMap((d) => [store.removeNode(d, T0 + 31_000), store.removeNode(d, T0 + 31_000)]))
        expect(summary([...one!, ...two!])).toEqual([[n.channel, n.user('alice'), true, 0]])
        expect((await store.members(n.channel)).map((m) => m.id)).toEqual([n.user('bob')])
        expect(mine(n, await store.deadNodes(T0 + 31_000, 30_000))).toEqual([])
        expect(await store.lastSeen(n.user('alice'))).toBe(T0 + 31_000)
      }, timeout)

      it('a removed node that comes back is judged by its new activity, not its old heartbeat', async () => {
        const n = names()
        await store.join(entryOf(n, 'c1', 'alice'))
        await store.heartbeat(n.node('n1'), T0)
        await store.removeNode(n.node('n1'), T0 + 40_000)
        await store.join(entryOf(n, 'c2', 'alice', { joinedAt: T0 + 41_000, updatedAt: T0 + 41_000 }))
        expect(mine(n, await store.deadNodes(T0 + 42_000, 30_000))).toEqual([])
      }, timeout)
    })
  })
}
