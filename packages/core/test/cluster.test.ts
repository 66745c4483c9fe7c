import { type Broker, type ClusterMessage, createManualClock, createMemoryBus, createMemoryPresenceStore, createMemoryStore } from '@tidings/core'
import { type TestHub, createTestHub } from '@tidings/core/testing'
import { afterEach, describe, expect, it } from 'vitest'

/*
 * What the hub conformance suite (hub-conformance.test.ts) cannot do over any ports, because it
 * needs the memory bus's hand on delivery or a store that outlives its hubs. The cluster-wide
 * operations themselves (connections, limits, kicks, capacity, awaitAcks, badges across three
 * hubs) are scenarios of that suite, run over memory and 2 ms-late ports.
 */
let open: TestHub[] = []
afterEach(async () => {
  for (const t of open) await t.close()
  open = []
})

describe('cluster-wide questions and state (memory ports)', () => {
  it('a question waits for a node that does not answer only up to nodes.requestTimeoutMs, then answers with the rest', async () => {
    const clock = createManualClock(0)
    const bus = createMemoryBus()
    const store = createMemoryStore()
    const presenceStore = createMemoryPresenceStore()
    const make = (nodeId: string) => createTestHub({ nodeId, clock, broker: bus.broker(), store, presenceStore, nodes: { requestTimeoutMs: 1_000 } })
    const [a, b] = [make('a'), make('b')]
    open.push(a, b)
    await a.connect({ userId: 'alice' })
    await b.connect({ userId: 'bob' })
    await a.settle()
    await b.settle()
    bus.hold(true) // b never hears the question
    let listed: string[] | undefined
    void a.hub.connections.list().then((l) => (listed = l.map((x) => x.userId ?? '')))
    await a.settle()
    expect(listed).toBeUndefined()
    await clock.advance(999)
    await a.settle()
    expect(listed).toBeUndefined()
    await clock.advance(1)
    await a.settle()
    expect(listed).toEqual(['alice'])
    bus.hold(false)
  })

  it('the notification badge survives its hubs: a new hub on the same store knows it', async () => {
    const store = createMemoryStore()
    const one = createTestHub({ store })
    open.push(one)
    for (let n = 0; n < 3; n++) await one.hub.notifications.send('dora', { n })
    await one.hub.notifications.markRead('dora', [2])
    await one.close()
    const two = createTestHub({ store })
    open.push(two)
    expect(await two.hub.notifications.unread('dora')).toBe(2)
  })

  it('a single hub answers cluster-wide questions at once, without a broker round trip or a timer', async () => {
    const t = createTestHub()
    open.push(t)
    await t.connect({ userId: 'alice' })
    const pending = t.clock.pending()
    expect((await t.hub.connections.list()).map((x) => x.userId)).toEqual(['alice'])
    expect(await t.hub.connections.disconnectUser('alice')).toBe(1)
    expect(t.clock.pending()).toBe(pending)
  })

  describe('live gap detection', () => {
    /** A broker end that loses the channel dispatches it is given while `lossy` is on (a missed pub/sub message). */
    const lossy = (inner: Broker) => {
      const state = { lossy: false, lost: 0 }
      const broker: Broker = {
        ...inner,
        start: (nodeId, deliver) =>
          inner.start(nodeId, (m: ClusterMessage) => {
            if (state.lossy && m.kind === 'dispatch' && m.target.kind === 'channel') {
              state.lost++
              return
            }
            deliver(m)
          }),
      }
      return { broker, state }
    }

    it('a message the bus lost, with nothing published after it, reaches a live at-least-once subscriber from the store within a heartbeat and the gap wait', async () => {
      const clock = createManualClock(0)
      const bus = createMemoryBus()
      const store = createMemoryStore()
      const presenceStore = createMemoryPresenceStore()
      const channels = { 'acked:*': { delivery: 'at-least-once' as const } }
      const options = { clock, store, presenceStore, channels, nodes: { heartbeatMs: 1_000 }, delivery: { gapWaitMs: 200 } }
      const end = lossy(bus.broker())
      const a = createTestHub({ ...options, nodeId: 'a', broker: bus.broker() })
      const b = createTestHub({ ...options, nodeId: 'b', broker: end.broker })
      open.push(a, b)
      const bob = await b.connect({ userId: 'bob' })
      await bob.subscribe('acked:x')
      await a.hub.publish('acked:x', 'm', { n: 1 })
      await b.settle()
      expect(bob.messages('acked:x').map((m) => m.data)).toEqual([{ n: 1 }])
      end.state.lossy = true
      await a.hub.publish('acked:x', 'm', { n: 2 })
      await a.settle()
      await b.settle()
      expect(end.state.lost).toBe(1)
      expect(bob.messages('acked:x')).toHaveLength(1)
      // the next heartbeat compares the stream with what b has seen; the gap is read after the wait
      await b.advance(1_000)
      await b.advance(200)
      expect(bob.messages('acked:x').map((m) => [m.offset, m.data])).toEqual([
        [1, { n: 1 }],
        [2, { n: 2 }],
      ])
    })

    it('a store that lost its history while nothing was published is told to live subscribers as a new epoch at the next heartbeat', async () => {
      const clock = createManualClock(0)
      const bus = createMemoryBus()
      const store = createMemoryStore()
      const options = { clock, store, presenceStore: createMemoryPresenceStore(), channels: { 'acked:*': { delivery: 'at-least-once' as const } }, nodes: { heartbeatMs: 1_000 } }
      const a = createTestHub({ ...options, nodeId: 'a', broker: bus.broker() })
      open.push(a)
      const bob = await a.connect({ userId: 'bob' })
      await bob.subscribe('acked:y')
      await a.hub.publish('acked:y', 'm', { n: 1 })
      await a.settle()
      store.reset()
      await a.advance(1_000)
      const notices = bob.received('subscribed').filter((f) => f.recovered === false)
      expect(notices).toHaveLength(1)
      expect(notices[0]!.reason).toMatch(/epoch changed/)
    })
  })

  it('a node the presence store forgot (removed while only slow, or a store that lost its data) joins its entries again at its next heartbeat, announcing nothing', async () => {
    const clock = createManualClock(0)
    const bus = createMemoryBus()
    const presenceStore = createMemoryPresenceStore()
    const options = { clock, store: createMemoryStore(), presenceStore, nodes: { heartbeatMs: 1_000 }, limits: { maxConnectionsPerUser: 1 }, channels: { 'seats:*': { capacity: 1 } } }
    const a = createTestHub({ ...options, nodeId: 'a', broker: bus.broker() })
    const b = createTestHub({ ...options, nodeId: 'b', broker: bus.broker() })
    open.push(a, b)
    const watcher = await a.connect({ userId: 'watcher' })
    await watcher.subscribe('presence:room')
    const bob = await b.connect({ userId: 'bob' })
    await bob.subscribe('presence:room')
    await bob.updatePresence('presence:room', { state: 'away', data: { mood: 'busy' } })
    await bob.subscribe('seats:one')
    await a.settle()
    const joins = watcher.received('presence:join').length
    // another node judged b dead while it was only slow: its entries are gone
    await presenceStore.removeNode('b', clock.now())
    expect((await a.hub.presence.get('presence:room')).users.map((u) => u.id)).toEqual(['watcher'])
    await b.advance(1_000)
    await a.settle()
    const snapshot = await a.hub.presence.get('presence:room')
    expect(snapshot.users.map((u) => [u.id, u.state, u.data]).sort()).toEqual([
      ['bob', 'away', { mood: 'busy' }],
      ['watcher', 'online', {}],
    ])
    // the per-user limit and the seat hold again across nodes
    const refused = await a.connect({ userId: 'bob' }).then(() => undefined, (e: { code?: string }) => e.code)
    expect(refused).toBe('RT_001')
    const carol = await a.connect({ userId: 'carol' })
    const full = await carol.subscribe('seats:one').then(() => undefined, (e: { code?: string }) => e.code)
    expect(full).toBe('RT_008')
    // quietly: no second join announced to the watcher (it saw the removal as a leave, then this join)
    expect(watcher.received('presence:join').length).toBeLessThanOrEqual(joins + 1)
  })

  it('a node restarted with the same id within the TTL first removes what its previous run left (one leave each, its places freed) before it admits anyone', async () => {
    const clock = createManualClock(0)
    const bus = createMemoryBus()
    const presenceStore = createMemoryPresenceStore()
    const options = { clock, store: createMemoryStore(), presenceStore, nodes: { heartbeatMs: 1_000, nodeTtlMs: 20_000 }, limits: { maxConnectionsPerUser: 1 } }
    const a = createTestHub({ ...options, nodeId: 'a', broker: bus.broker() })
    const crashed = createTestHub({ ...options, nodeId: 'b', broker: bus.broker() })
    open.push(a, crashed)
    const watcher = await a.connect({ userId: 'watcher' })
    await watcher.subscribe('presence:room')
    const ghost = await crashed.connect({ userId: 'ghost' })
    await ghost.subscribe('presence:room')
    await a.settle()
    // b dies without closing (nothing more from it), and comes back at once under the same id
    const restarted = createTestHub({ ...options, nodeId: 'b', broker: bus.broker() })
    open.push(restarted)
    const again = await restarted.connect({ userId: 'ghost' }) // its old place is gone: the limit of 1 lets it in
    await restarted.settle()
    await a.settle()
    expect(watcher.received('presence:leave').map((f) => f.user.id)).toEqual(['ghost'])
    expect((await a.hub.presence.get('presence:room')).users.map((u) => u.id)).toEqual(['watcher'])
    await again.subscribe('presence:room')
    await a.settle()
    expect((await a.hub.presence.get('presence:room')).users.map((u) => `${u.id}:${u.connections}`).sort()).toEqual(['ghost:1', 'watcher:1'])
  })

  it('a single hub holds maxConnectionsPerAddress on its own (IPv4 as is, IPv6 by /64, ::ffff:-mapped IPv4 as IPv4), with no store round trip', async () => {
    const t = createTestHub({ limits: { maxConnectionsPerAddress: 1 } })
    open.push(t)
    const first = await t.connect({ userId: 'a', ip: '198.51.100.4' })
    const refusal = (p: Promise<unknown>) => p.then(() => undefined, (e: { code?: string }) => e.code)
    expect(await refusal(t.connect({ userId: 'b', ip: '::ffff:198.51.100.4' }))).toBe('RT_001')
    await t.connect({ userId: 'c', ip: '2001:db8:1:2::1' })
    expect(await refusal(t.connect({ userId: 'd', ip: '2001:db8:1:2:ffff::9' }))).toBe('RT_001')
    await t.connect({ userId: 'e', ip: '2001:db8:1:3::1' })
    first.close()
    await t.settle()
    await t.connect({ userId: 'b', ip: '198.51.100.4' })
  })

  it('connections.list answers at most its limit (default 1,000), so an answer crossing the broker stays bounded', async () => {
    const t = createTestHub({ limits: { maxConnectionsPerUser: 2_000 } })
    open.push(t)
    for (let i = 0; i < 1_005; i++) await t.connect({ userId: `u${i % 3}` })
    expect(await t.hub.connections.list()).toHaveLength(1_000)
    expect(await t.hub.connections.list({ limit: 7 })).toHaveLength(7)
    expect(await t.hub.connections.list({ userId: 'u1', limit: 2 })).toHaveLength(2)
    expect(t.hub.connections.local()).toHaveLength(1_005)
  })
})
