import { RealtimeError, createManualClock, createMemoryBus, createMemoryPresenceStore, createMemoryStore, type HubOptions, type PublishResult } from '@tidings/core'
import { type MemoryClient, type TestHub, createTestHub } from '@tidings/core/testing'
import { delayed } from '@tidings/core/conformance'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'

/*
 * Three hubs on the in-memory bus sharing one store and one presence store, as three processes
 * share Redis: what a user expects to hold across nodes (connections, limits, kicks, presence,
 * room capacity, acknowledgments, badges) holds on any of them.
 */
let open: TestHub[] = []
afterEach(async () => {
  for (const t of open) await t.close()
  open = []
})

/** Every port call answers this many ms late (0: the memory ports as they are), as over a network. */
let lateMs = 0

function cluster(options: HubOptions = {}) {
  const clock = createManualClock(0)
  const bus = createMemoryBus()
  const late = <P extends object>(port: P): P => (lateMs > 0 ? delayed(port, lateMs) : port)
  const store = late(createMemoryStore())
  const presenceStore = late(createMemoryPresenceStore())
  const make = (nodeId: string) =>
    createTestHub({
      nodeId,
      clock,
      broker: late(bus.broker()),
      store,
      presenceStore,
      channels: { 'room:*': { capacity: 2 }, 'acked:*': { delivery: 'at-least-once' } },
      ...options,
    })
  const hubs = [make('a'), make('b'), make('c')] as [TestHub, TestHub, TestHub]
  open.push(...hubs)
  const settle = async () => {
    for (let i = 0; i < 2; i++) for (const t of hubs) await t.settle()
  }
  const advance = async (ms: number) => {
    await clock.advance(ms)
    await settle()
  }
  return { hubs, bus, clock, settle, advance }
}

/** A promise's outcome, readable without awaiting it. */
function track<T>(p: Promise<T>) {
  const out: { done: boolean; value?: T; error?: unknown } = { done: false }
  p.then(
    (v) => Object.assign(out, { done: true, value: v }),
    (e) => Object.assign(out, { done: true, error: e }),
  )
  return out
}

const refusal = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as RealtimeError)

describe.each([0, 2])('three hubs as one, ports answering %i ms late', (ms) => {
beforeEach(() => {
  lateMs = ms
})
afterEach(() => {
  lateMs = 0
})

describe('connections', () => {
  it('connections.list on any hub lists every node’s connections, each with its node, filtered by user or channel; get finds one anywhere', async () => {
    const { hubs, settle } = cluster()
    const [a, b, c] = hubs
    const alice1 = await a.connect({ userId: 'alice' })
    const alice2 = await c.connect({ userId: 'alice' })
    const bob = await b.connect({ userId: 'bob' })
    await bob.subscribe('public:news')
    await settle()
    for (const t of hubs) {
      const all = await t.hub.connections.list()
      expect(all.map((x) => `${x.nodeId}/${x.userId}`).sort()).toEqual(['a/alice', 'b/bob', 'c/alice'])
    }
    expect((await b.hub.connections.list({ userId: 'alice' })).map((x) => x.id).sort()).toEqual([alice1.connectionId, alice2.connectionId].sort())
    expect((await a.hub.connections.list({ channel: 'public:news' })).map((x) => x.id)).toEqual([bob.connectionId])
    expect((await a.hub.connections.get(alice2.connectionId))).toMatchObject({ userId: 'alice', nodeId: 'c' })
    expect(await a.hub.connections.get('c.no-such')).toBeUndefined()
    // this node alone, synchronously
    expect(a.hub.connections.local().map((x) => x.id)).toEqual([alice1.connectionId])
  })

  it('disconnectUser on one hub closes the user’s connections on every hub and counts them all; disconnect finds a connection on another hub', async () => {
    const { hubs, settle } = cluster()
    const [a, b, c] = hubs
    const tabs = [await a.connect({ userId: 'alice' }), await b.connect({ userId: 'alice' }), await c.connect({ userId: 'alice' })]
    const bob = await c.connect({ userId: 'bob' })
    await settle()
    expect(await b.hub.connections.disconnectUser('alice', 'bye')).toBe(3)
    await settle()
    for (const tab of tabs) expect(tab.closeCode).toBe(4000)
    expect(bob.closed).toBe(false)
    expect(await a.hub.connections.disconnect(bob.connectionId, 'admin')).toBe(true)
    await settle()
    expect(bob.closeCode).toBe(4000)
    expect(await a.hub.connections.disconnect(bob.connectionId, 'again')).toBe(false)
    expect(await a.hub.connections.list()).toEqual([])
  })

  it('the per-user connection limit holds across hubs, and a place is freed when a connection closes', async () => {
    const { hubs, settle } = cluster({ limits: { maxConnectionsPerUser: 2 } })
    const [a, b, c] = hubs
    const first = await a.connect({ userId: 'alice' })
    await b.connect({ userId: 'alice' })
    const refused = await refusal(c.connect({ userId: 'alice' }))
    expect(refused).toBeInstanceOf(RealtimeError)
    expect((refused as RealtimeError).code).toBe('RT_001')
    // another user is not affected
    await c.connect({ userId: 'bob' })
    first.drop()
    await settle()
    const again = await c.connect({ userId: 'alice' })
    expect(again.connectionId.startsWith('c.')).toBe(true)
    expect((await a.hub.connections.list({ userId: 'alice' })).map((x) => x.nodeId).sort()).toEqual(['b', 'c'])
  })

  it('a question waits for a node that does not answer only up to nodes.requestTimeoutMs, then answers with the rest', async () => {
    const { hubs, bus, clock, settle } = cluster({ nodes: { requestTimeoutMs: 1_000 } })
    const [a, b] = hubs
    await a.connect({ userId: 'alice' })
    await b.connect({ userId: 'bob' })
    await settle()
    bus.hold(true) // the other nodes never hear the question
    const listed = track(a.hub.connections.list())
    await a.settle()
    expect(listed.done).toBe(false)
    await clock.advance(999)
    await a.settle()
    expect(listed.done).toBe(false)
    await clock.advance(1)
    await a.settle()
    expect(listed.done).toBe(true)
    expect(listed.value!.map((x) => x.userId)).toEqual(['alice'])
    bus.hold(false)
  })
})

describe('channels', () => {
  it('kick on one hub ends the user’s subscriptions on every hub and counts them', async () => {
    const { hubs, settle } = cluster()
    const [a, b, c] = hubs
    const onA = await a.connect({ userId: 'bob' })
    const onC = await c.connect({ userId: 'bob' })
    const carol = await c.connect({ userId: 'carol' })
    for (const x of [onA, onC, carol]) await x.subscribe('public:lobby')
    await settle()
    expect(await b.hub.channel('public:lobby').kick('bob', 'spam')).toBe(2)
    await settle()
    for (const x of [onA, onC]) expect(x.received('unsubscribed').map((f) => (f as { reason?: string }).reason)).toEqual(['spam'])
    expect(carol.received('unsubscribed')).toEqual([])
    expect((await a.hub.connections.list({ channel: 'public:lobby' })).map((x) => x.userId)).toEqual(['carol'])
  })

  it('presence on any hub lists the members of every hub, each user once', async () => {
    const { hubs, settle } = cluster()
    const [a, b, c] = hubs
    await (await a.connect({ userId: 'alice' })).subscribe('presence:room')
    await (await b.connect({ userId: 'alice' })).subscribe('presence:room')
    await (await c.connect({ userId: 'bob' })).subscribe('presence:room')
    await settle()
    for (const t of hubs) {
      const snap = await t.hub.presence.get('presence:room')
      expect(snap.users.map((u) => `${u.id}:${u.connections}`).sort()).toEqual(['alice:2', 'bob:1'])
    }
  })

  it('room capacity holds across hubs: a third user is refused with RT_008 on any hub, a second tab of a seated user is not, and a seat frees on leave', async () => {
    const { hubs, settle } = cluster()
    const [a, b, c] = hubs
    const alice = await a.connect({ userId: 'alice' })
    await alice.subscribe('room:small')
    await (await b.connect({ userId: 'bob' })).subscribe('room:small')
    await settle()
    const carol = await c.connect({ userId: 'carol' })
    const full = await refusal(carol.subscribe('room:small'))
    expect((full as RealtimeError).code).toBe('RT_008')
    const aliceTab = await c.connect({ userId: 'alice' })
    await aliceTab.subscribe('room:small')
    alice.send({ type: 'unsubscribe', channel: 'room:small', id: 'u1' })
    aliceTab.send({ type: 'unsubscribe', channel: 'room:small', id: 'u2' })
    await settle()
    await carol.subscribe('room:small')
    expect(carol.received('subscribed').map((f) => (f as { channel: string }).channel)).toEqual(['room:small'])
  })

  it('awaitAcks waits for the recipients on every hub and says who acknowledged', async () => {
    const { hubs, settle, advance } = cluster()
    const [a, b, c] = hubs
    const onB = await b.connect({ userId: 'bob' })
    const onC = await c.connect({ userId: 'carol' })
    await onB.subscribe('acked:x')
    await onC.subscribe('acked:x')
    await settle()
    const p = track(a.hub.publish('acked:x', 'm', { n: 1 }, { awaitAcks: 500 }))
    await settle()
    const frame = onB.messages('acked:x')[0]!
    expect(frame.ack).toBe(true)
    onB.ack('acked:x', frame.offset!)
    await settle()
    expect(p.done).toBe(false)
    await advance(500)
    await advance(10)
    expect(p.done).toBe(true)
    const r = p.value as PublishResult
    expect(r.recipients).toBe(2)
    expect(r.acknowledged).toEqual([{ connectionId: onB.connectionId, userId: 'bob' }])
    expect(r.unacknowledged).toEqual([{ connectionId: onC.connectionId, userId: 'carol' }])
  })

  it('awaitAcks resolves as soon as every recipient on every hub acknowledged', async () => {
    const { hubs, settle } = cluster()
    const [a, b, c] = hubs
    const subs: MemoryClient[] = [await a.connect({ userId: 'amy' }), await b.connect({ userId: 'bob' }), await c.connect({ userId: 'cid' })]
    for (const s of subs) await s.subscribe('acked:y')
    await settle()
    const p = track(b.hub.publish('acked:y', 'm', {}, { awaitAcks: 60_000 }))
    await settle()
    for (const s of subs) s.ack('acked:y', s.messages('acked:y')[0]!.offset!)
    await settle()
    expect(p.done).toBe(true)
    expect(p.value!.acknowledged!.map((x) => x.userId).sort()).toEqual(['amy', 'bob', 'cid'])
    expect(p.value!.unacknowledged).toEqual([])
  })
})

describe('notification badges', () => {
  it('one badge count across hubs: sent on one, read on another, seen on the third', async () => {
    const { hubs, settle } = cluster()
    const [a, b, c] = hubs
    const bobOnB = await b.connect({ userId: 'bob' })
    await a.hub.notifications.send('bob', { text: 'one' })
    const second = await c.hub.notifications.send('bob', { text: 'two' })
    expect(second.badge).toBe(2)
    expect(await b.hub.notifications.unread('bob')).toBe(2)
    expect(await c.hub.notifications.markRead('bob', [second.offset!])).toBe(1)
    await settle()
    expect(await a.hub.notifications.unread('bob')).toBe(1)
    expect(bobOnB.messages().filter((m) => m.event === 'notifications:badge').map((m) => m.data)).toEqual([{ count: 1 }])
    expect(await a.hub.notifications.markRead('bob')).toBe(0)
    expect(await b.hub.notifications.unread('bob')).toBe(0)
  })

  it('the badge survives the hubs: a new hub on the same store knows it', async () => {
    const store = createMemoryStore()
    const one = createTestHub({ store })
    open.push(one)
    for (let n = 0; n < 3; n++) await one.hub.notifications.send('dora', { n })
    await one.close()
    const two = createTestHub({ store })
    open.push(two)
    expect(await two.hub.notifications.unread('dora')).toBe(3)
  })
})
})
