import { describe, expect, it } from 'vitest'
import {
  type ClusterMessage,
  type Dispatch,
  type MaybePromise,
  type PresenceEntry,
  createHub,
  createManualClock,
  createMemoryBroker,
  createMemoryBus,
  createMemoryPresenceStore,
  createMemoryTransport,
  silentLogger,
} from '@tidings/core'

/** The in-memory ports answer synchronously (the hub's fast path); unwrap their MaybePromise types. */
function sync<T>(value: MaybePromise<T>): T {
  if (typeof (value as { then?: unknown } | null)?.then === 'function') throw new Error('expected a synchronous answer from an in-memory port')
  return value as T
}

type Syncify<T> = { [K in keyof T]: T[K] extends (...args: infer A) => MaybePromise<infer R> ? (...args: A) => R : T[K] }

function syncPorts<T extends object>(port: T): Syncify<T> {
  return new Proxy(port, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver)
      return typeof v === 'function' ? (...args: unknown[]) => sync((v as (...a: unknown[]) => unknown).apply(target, args)) : v
    },
  }) as Syncify<T>
}

const flush = async (turns = 10) => {
  for (let i = 0; i < turns; i++) await Promise.resolve()
}

// The message store's tests are the conformance suite (src/conformance/store.ts), run over the
// memory store with its memory-only tests in store-conformance.test.ts.

// ------------------------------------------------------------------ presence store

const entry = (connectionId: string, userId: string, o: Partial<PresenceEntry> = {}): PresenceEntry => ({
  channel: 'presence:lobby',
  connectionId,
  userId,
  nodeId: 'n1',
  state: 'online',
  data: {},
  joinedAt: 0,
  updatedAt: 0,
  ...o,
})

describe('createMemoryPresenceStore', () => {
  it('join is an edge only for a user’s first connection', () => {
    const p = syncPorts(createMemoryPresenceStore())
    const a1 = p.join(entry('c1', 'alice'))
    expect(a1.edge).toBe(true)
    expect(a1.member).toMatchObject({ id: 'alice', connections: 1, state: 'online' })
    const a2 = p.join(entry('c2', 'alice'))
    expect(a2.edge).toBe(false)
    expect(a2.member.connections).toBe(2)
    expect(p.join(entry('c3', 'bob')).edge).toBe(true)
    expect(p.join(entry('c9', 'alice', { channel: 'presence:other' })).edge).toBe(true) // per channel
    const members = p.members('presence:lobby')
    expect(members.map((m) => [m.id, m.connections])).toEqual([['alice', 2], ['bob', 1]])
  })

  it('joining again with the same connection replaces its entry', () => {
    const p = syncPorts(createMemoryPresenceStore())
    p.join(entry('c1', 'alice'))
    const again = p.join(entry('c1', 'alice', { state: 'busy', updatedAt: 5 }))
    expect(again.edge).toBe(false)
    expect(again.member).toMatchObject({ connections: 1, state: 'busy' })
    expect(p.entries('presence:lobby')).toHaveLength(1)
  })

  it('leave is an edge only for a user’s last connection', () => {
    const p = syncPorts(createMemoryPresenceStore())
    p.join(entry('c1', 'alice', { joinedAt: 1, updatedAt: 1 }))
    p.join(entry('c2', 'alice', { joinedAt: 2, updatedAt: 2 }))
    const l1 = p.leave('presence:lobby', 'c1', 10)
    expect(l1?.edge).toBe(false)
    expect(l1?.member.connections).toBe(1)
    const l2 = p.leave('presence:lobby', 'c2', 20)
    expect(l2?.edge).toBe(true)
    expect(l2?.member).toMatchObject({ id: 'alice', connections: 0, lastSeen: 20 })
    expect(p.leave('presence:lobby', 'c2', 30)).toBeUndefined()
    expect(p.leave('presence:lobby', 'nope', 30)).toBeUndefined()
    expect(p.leave('presence:nowhere', 'c1', 30)).toBeUndefined()
    expect(p.members('presence:lobby')).toEqual([])
  })

  it('update changes an entry in place', () => {
    const p = syncPorts(createMemoryPresenceStore())
    p.join(entry('c1', 'alice', { data: { name: 'A' }, joinedAt: 5, updatedAt: 5 }))
    const m = p.update('presence:lobby', 'c1', { state: 'away', now: 50 })
    expect(m).toEqual({ id: 'alice', state: 'away', data: { name: 'A' }, connections: 1, joinedAt: 5, lastSeen: 50 })
    const m2 = p.update('presence:lobby', 'c1', { data: { name: 'B' }, now: 60 })
    expect(m2).toMatchObject({ state: 'away', data: { name: 'B' }, lastSeen: 60 })
    const entries = p.entries('presence:lobby')
    expect(entries).toHaveLength(1)
    expect(entries[0]).toMatchObject({ connectionId: 'c1', state: 'away', data: { name: 'B' }, joinedAt: 5, updatedAt: 60 })
    expect(p.update('presence:lobby', 'nope', { state: 'x', now: 70 })).toBeUndefined()
    expect(p.update('presence:other', 'c1', { state: 'x', now: 70 })).toBeUndefined()
  })

  it('a member shows its most recently updated entry and counts its connections', () => {
    const p = syncPorts(createMemoryPresenceStore())
    p.join(entry('c1', 'alice', { state: 'online', data: { tab: 1 }, joinedAt: 10, updatedAt: 10 }))
    p.join(entry('c2', 'alice', { state: 'busy', data: { tab: 2 }, joinedAt: 20, updatedAt: 20 }))
    expect(p.members('presence:lobby')).toEqual([{ id: 'alice', state: 'busy', data: { tab: 2 }, connections: 2, joinedAt: 10, lastSeen: 20 }])
    const m = p.update('presence:lobby', 'c1', { state: 'away', now: 30 })
    expect(m).toEqual({ id: 'alice', state: 'away', data: { tab: 1 }, connections: 2, joinedAt: 10, lastSeen: 30 })
    expect(p.members('presence:lobby')[0]).toEqual(m)
  })

  it('an update shows in the member even when it happens in the same millisecond as another entry’s', () => {
    const p = syncPorts(createMemoryPresenceStore())
    p.join(entry('c1', 'alice', { joinedAt: 10, updatedAt: 10 }))
    p.join(entry('c2', 'alice', { joinedAt: 10, updatedAt: 10 }))
    const m = p.update('presence:lobby', 'c1', { state: 'away', data: { tab: 1 }, now: 10 })
    expect(m).toMatchObject({ state: 'away', data: { tab: 1 }, connections: 2 })
    expect(p.members('presence:lobby')[0]).toMatchObject({ state: 'away', data: { tab: 1 } })
  })

  it('entries() lists every connection entry of a channel', () => {
    const p = syncPorts(createMemoryPresenceStore())
    p.join(entry('c1', 'alice'))
    p.join(entry('c2', 'alice'))
    p.join(entry('c3', 'bob'))
    p.join(entry('c4', 'carol', { channel: 'presence:other' }))
    expect(p.entries('presence:lobby').map((e) => e.connectionId).sort()).toEqual(['c1', 'c2', 'c3'])
    expect(p.entries('presence:other').map((e) => e.userId)).toEqual(['carol'])
    expect(p.entries('presence:none')).toEqual([])
  })

  it('lastSeen records leaves and updates', () => {
    const p = syncPorts(createMemoryPresenceStore())
    expect(p.lastSeen('alice')).toBeUndefined()
    p.join(entry('c1', 'alice', { updatedAt: 1 }))
    p.update('presence:lobby', 'c1', { state: 'away', now: 40 })
    expect(p.lastSeen('alice')).toBe(40)
    p.leave('presence:lobby', 'c1', 90)
    expect(p.lastSeen('alice')).toBe(90)
    expect(p.lastSeen('bob')).toBeUndefined()
  })

  it('removeNode removes a node’s entries and reports the resulting changes', () => {
    const p = syncPorts(createMemoryPresenceStore())
    p.join(entry('c1', 'alice', { nodeId: 'n1' }))
    p.join(entry('c2', 'alice', { nodeId: 'n2' }))
    p.join(entry('c3', 'bob', { nodeId: 'n1' }))
    p.join(entry('c4', 'carol', { nodeId: 'n1', channel: 'presence:other' }))
    p.join(entry('c5', 'dave', { nodeId: 'n2', channel: 'presence:third' }))
    const changes = p.removeNode('n1', 99)
    const summary = changes.map((c) => [c.channel, c.change.member.id, c.change.edge, c.change.member.connections]).sort()
    expect(summary).toEqual([
      ['presence:lobby', 'alice', false, 1],
      ['presence:lobby', 'bob', true, 0],
      ['presence:other', 'carol', true, 0],
    ])
    expect(p.members('presence:lobby').map((m) => [m.id, m.connections])).toEqual([['alice', 1]])
    expect(p.entries('presence:lobby').map((e) => e.connectionId)).toEqual(['c2'])
    expect(p.members('presence:other')).toEqual([])
    expect(p.channelCount()).toBe(2)
    expect(p.lastSeen('bob')).toBe(99)
    expect(p.removeNode('n1', 100)).toEqual([])
  })

  it('leaves no channel behind once everyone has left', () => {
    const p = syncPorts(createMemoryPresenceStore())
    expect(p.channelCount()).toBe(0)
    p.join(entry('c1', 'alice'))
    p.join(entry('c2', 'alice'))
    p.join(entry('c3', 'bob', { channel: 'presence:other' }))
    p.join(entry('c4', 'carol', { channel: 'presence:third', nodeId: 'n9' }))
    expect(p.channelCount()).toBe(3)
    p.leave('presence:lobby', 'c1', 1)
    expect(p.channelCount()).toBe(3)
    p.leave('presence:lobby', 'c2', 1)
    p.leave('presence:other', 'c3', 1)
    p.removeNode('n9', 1)
    expect(p.channelCount()).toBe(0)
    // and the connections are forgotten too: updating a gone entry finds nothing
    expect(p.update('presence:lobby', 'c1', { state: 'x', now: 2 })).toBeUndefined()
    expect(p.join(entry('c1', 'alice')).edge).toBe(true)
  })
})

// ------------------------------------------------------------------ brokers

const dispatch = (origin: string, data: unknown = { n: 1 }): Dispatch => ({
  kind: 'dispatch',
  origin,
  target: { kind: 'channel', channel: 'public:news' },
  frame: { type: 'message', channel: 'public:news', event: 'e', data, id: `${origin}-1`, timestamp: '2026-01-01T00:00:00.000Z' },
})

describe('createMemoryBroker', () => {
  it('is a no-op loop-back: nothing is ever delivered, nothing throws', async () => {
    const broker = createMemoryBroker()
    const got: ClusterMessage[] = []
    expect(() => broker.start('n1', (m) => got.push(m))).not.toThrow()
    expect(() => broker.publish(dispatch('n1'))).not.toThrow()
    expect(() => broker.publish(dispatch('n2'))).not.toThrow()
    await flush()
    expect(got).toEqual([])
    expect(() => broker.close()).not.toThrow()
    expect(() => broker.close()).not.toThrow()
  })
})

describe('createMemoryBus', () => {
  const nodes = (bus = createMemoryBus(), ids = ['n1', 'n2', 'n3']) => {
    const got: Record<string, ClusterMessage[]> = {}
    const brokers = Object.fromEntries(
      ids.map((id) => {
        const b = bus.broker()
        got[id] = []
        b.start(id, (m) => got[id]!.push(m))
        b.subscribe('public:news')
        return [id, b] as const
      }),
    )
    return { bus, brokers, got }
  }

  it('delivers to every other node, never back to the origin', async () => {
    const { bus, brokers, got } = nodes()
    brokers.n1!.publish(dispatch('n1'))
    await flush()
    expect(got.n1).toEqual([])
    expect(got.n2).toEqual([dispatch('n1')])
    expect(got.n3).toEqual([dispatch('n1')])
    expect(bus.published).toBe(1)
  })

  it('delivers asynchronously', async () => {
    const { brokers, got } = nodes()
    brokers.n1!.publish(dispatch('n1'))
    expect(got.n2).toEqual([])
    await flush()
    expect(got.n2).toHaveLength(1)
  })

  it('delivers JSON copies: no shared objects, no non-JSON values', async () => {
    const { brokers, got } = nodes()
    const original = dispatch('n1', { when: new Date(0), skip: undefined, list: [1, 2] })
    brokers.n1!.publish(original)
    ;(original.frame as { data: { list: number[] } }).data.list.push(3) // mutate after publishing
    await flush()
    const a = got.n2![0] as Dispatch
    const b = got.n3![0] as Dispatch
    expect(a).not.toBe(original)
    expect(a).not.toBe(b)
    expect(a.frame).not.toBe(b.frame)
    expect((a.frame as { data: unknown }).data).toEqual({ when: '1970-01-01T00:00:00.000Z', list: [1, 2] })
    ;(a.frame as { data: { list: number[] } }).data.list.push(9)
    expect((b.frame as { data: { list: number[] } }).data.list).toEqual([1, 2])
  })

  it('keeps publication order', async () => {
    const { brokers, got } = nodes()
    for (let i = 0; i < 5; i++) brokers.n1!.publish(dispatch('n1', i))
    brokers.n3!.publish(dispatch('n3', 'x'))
    await flush()
    expect(got.n2!.map((m) => (m as Dispatch).frame.type === 'message' && ((m as Dispatch).frame as { data: unknown }).data)).toEqual([0, 1, 2, 3, 4, 'x'])
    expect(got.n3).toHaveLength(5)
    expect(got.n1).toHaveLength(1)
  })

  it('hold(true) holds delivery; hold(false) releases it in order, before later messages', async () => {
    const { bus, brokers, got } = nodes()
    bus.hold(true)
    for (let i = 0; i < 3; i++) brokers.n1!.publish(dispatch('n1', i))
    await flush()
    expect(got.n2).toEqual([])
    expect(bus.published).toBe(3)
    bus.hold(false)
    brokers.n1!.publish(dispatch('n1', 3))
    await flush()
    const data = (m: ClusterMessage) => ((m as Dispatch).frame as { data: unknown }).data
    expect(got.n2!.map(data)).toEqual([0, 1, 2, 3])
    expect(got.n3!.map(data)).toEqual([0, 1, 2, 3])
    expect(got.n1).toEqual([])
  })

  it('carries requests as well as dispatches', async () => {
    const { brokers, got } = nodes()
    const command: ClusterMessage = { kind: 'request', origin: 'n2', id: 'q1', query: { op: 'kick', channel: 'public:x', userId: 'bob', reason: 'r' } }
    brokers.n2!.publish(command)
    await flush()
    expect(got.n1).toEqual([command])
    expect(got.n2).toEqual([])
  })

  it('a closed node receives nothing more', async () => {
    const { brokers, got } = nodes()
    brokers.n3!.close()
    brokers.n3!.close()
    brokers.n1!.publish(dispatch('n1'))
    await flush()
    expect(got.n2).toHaveLength(1)
    expect(got.n3).toEqual([])
  })

  it('joins two hubs: a publish on one reaches subscribers on the other once', async () => {
    const bus = createMemoryBus()
    const clock = createManualClock()
    const hubA = createHub({ nodeId: 'A', clock, broker: bus.broker(), logger: silentLogger })
    const hubB = createHub({ nodeId: 'B', clock, broker: bus.broker(), logger: silentLogger })
    const alice = await createMemoryTransport(hubA).connect({ userId: 'alice' })
    const bob = await createMemoryTransport(hubB).connect({ userId: 'bob' })
    const carol = await createMemoryTransport(hubA).connect({ userId: 'carol' })
    await bob.subscribe('public:news')
    await carol.subscribe('public:news')
    await alice.publish('public:news', 'post', 'hi')
    await flush(30)
    expect(bob.messages().map((m) => m.data)).toEqual(['hi'])
    expect(carol.messages().map((m) => m.data)).toEqual(['hi'])
    await hubA.close()
    await hubB.close()
  })
})
