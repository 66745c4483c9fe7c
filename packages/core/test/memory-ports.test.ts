import { describe, expect, it } from 'vitest'
import {
  type ClusterMessage,
  type Dispatch,
  type MaybePromise,
  type PresenceEntry,
  type Retention,
  createHub,
  createManualClock,
  createMemoryBroker,
  createMemoryBus,
  createMemoryPresenceStore,
  createMemoryStore,
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

// ------------------------------------------------------------------ message store

const KEEP: Retention = { maxCount: 1000, maxAgeMs: 3_600_000 }
const msg = (n: number | string, timestamp = 0) => ({ id: `m${n}`, event: 'e', data: { n }, sender: 'alice', timestamp })

describe('createMemoryStore', () => {
  it('assigns offsets from 1, per channel', () => {
    const store = syncPorts(createMemoryStore())
    const offsets = [1, 2, 3].map((n) => store.append('a', msg(n), { retention: KEEP, now: 0 }).message.offset)
    expect(offsets).toEqual([1, 2, 3])
    const b = store.append('b', msg('b1'), { retention: KEEP, now: 0 })
    expect(b.message).toEqual({ id: 'mb1', event: 'e', data: { n: 'b1' }, sender: 'alice', timestamp: 0, channel: 'b', offset: 1 })
    expect(b.duplicate).toBe(false)
    expect(b.epoch).toBe(store.epoch)
    expect(store.append('a', msg(4), { retention: KEEP, now: 0 }).message.offset).toBe(4)
  })

  it('reads messages after an offset, oldest first, at most limit', () => {
    const store = syncPorts(createMemoryStore())
    for (let n = 1; n <= 5; n++) store.append('a', msg(n), { retention: KEEP, now: 0 })
    const all = store.read('a', { after: 0, limit: 100, now: 0 })
    expect(all.messages.map((m) => m.offset)).toEqual([1, 2, 3, 4, 5])
    expect(all).toMatchObject({ epoch: store.epoch, top: 5, complete: true })
    expect(store.read('a', { after: 1, limit: 2, now: 0 }).messages.map((m) => m.id)).toEqual(['m2', 'm3'])
    expect(store.read('a', { after: 4, limit: 10, now: 0 }).messages.map((m) => m.offset)).toEqual([5])
    const caughtUp = store.read('a', { after: 5, limit: 10, now: 0 })
    expect(caughtUp).toMatchObject({ messages: [], top: 5, complete: true })
    expect(store.read('nothing', { after: 0, limit: 10, now: 0 })).toEqual({ epoch: store.epoch, messages: [], top: 0, complete: true })
  })

  it('keeps at most maxCount messages; a reader behind the retained window has a gap', () => {
    const store = syncPorts(createMemoryStore())
    const retention = { maxCount: 3, maxAgeMs: 3_600_000 }
    for (let n = 1; n <= 5; n++) store.append('a', msg(n), { retention, now: 0 })
    const r0 = store.read('a', { after: 0, limit: 10, now: 0 })
    expect(r0.messages.map((m) => m.offset)).toEqual([3, 4, 5])
    expect(r0.top).toBe(5)
    expect(r0.complete).toBe(false)
    expect(store.read('a', { after: 1, limit: 10, now: 0 }).complete).toBe(false)
    const r2 = store.read('a', { after: 2, limit: 10, now: 0 })
    expect(r2.messages.map((m) => m.offset)).toEqual([3, 4, 5])
    expect(r2.complete).toBe(true)
    expect(store.read('a', { after: 5, limit: 10, now: 0 }).complete).toBe(true)
  })

  it('maxCount 0 keeps nothing but still assigns offsets', () => {
    const store = syncPorts(createMemoryStore())
    const retention = { maxCount: 0, maxAgeMs: 3_600_000 }
    expect(store.append('a', msg(1), { retention, now: 0 }).message.offset).toBe(1)
    expect(store.append('a', msg(2), { retention, now: 0 }).message.offset).toBe(2)
    expect(store.read('a', { after: 0, limit: 10, now: 0 })).toMatchObject({ messages: [], top: 2, complete: false })
    expect(store.read('a', { after: 2, limit: 10, now: 0 })).toMatchObject({ messages: [], top: 2, complete: true })
    expect(store.position('a').offset).toBe(2)
  })

  it('drops messages older than maxAgeMs, on read as well as on append', () => {
    const store = syncPorts(createMemoryStore())
    const retention = { maxCount: 100, maxAgeMs: 1_000 }
    store.append('a', msg(1, 0), { retention, now: 0 })
    store.append('a', msg(2, 500), { retention, now: 500 })
    store.append('a', msg(3, 1_000), { retention, now: 1_000 })
    expect(store.read('a', { after: 0, limit: 10, now: 1_000 }).messages.map((m) => m.offset)).toEqual([1, 2, 3])

    const r = store.read('a', { after: 0, limit: 10, now: 1_200 })
    expect(r.messages.map((m) => m.offset)).toEqual([2, 3])
    expect(r.complete).toBe(false)
    expect(store.read('a', { after: 1, limit: 10, now: 1_200 }).complete).toBe(true)

    // trimmed by the next append too
    store.append('a', msg(4, 1_700), { retention, now: 1_700 })
    const r2 = store.read('a', { after: 1, limit: 10, now: 1_700 })
    expect(r2.messages.map((m) => m.offset)).toEqual([3, 4])
    expect(r2.complete).toBe(false)

    const late = store.read('a', { after: 0, limit: 10, now: 10_000 })
    expect(late).toMatchObject({ messages: [], top: 4, complete: false })
    expect(store.read('a', { after: 4, limit: 10, now: 10_000 }).complete).toBe(true)
    expect(store.position('a').offset).toBe(4)
  })

  it('the stricter of count and age wins', () => {
    const store = syncPorts(createMemoryStore())
    const retention = { maxCount: 2, maxAgeMs: 1_000 }
    for (let n = 1; n <= 4; n++) store.append('a', msg(n, n * 100), { retention, now: n * 100 })
    expect(store.read('a', { after: 0, limit: 10, now: 400 }).messages.map((m) => m.offset)).toEqual([3, 4]) // count
    expect(store.read('a', { after: 0, limit: 10, now: 1_350 }).messages.map((m) => m.offset)).toEqual([4]) // age
  })

  it('an idempotency key repeated within the window returns the first append and stores nothing', () => {
    const store = syncPorts(createMemoryStore())
    const first = store.append('a', msg(1), { retention: KEEP, idempotencyKey: 'k', dedupWindowMs: 1_000, now: 0 })
    const again = store.append('a', msg('1-retry'), { retention: KEEP, idempotencyKey: 'k', dedupWindowMs: 1_000, now: 999 })
    expect(first.duplicate).toBe(false)
    expect(again.duplicate).toBe(true)
    expect(again.message).toEqual(first.message)
    expect(again.epoch).toBe(store.epoch)
    expect(store.position('a').offset).toBe(1)
    expect(store.read('a', { after: 0, limit: 10, now: 999 }).messages.map((m) => m.id)).toEqual(['m1'])
    // the same key on another channel is a different publication
    expect(store.append('b', msg(2), { retention: KEEP, idempotencyKey: 'k', dedupWindowMs: 1_000, now: 999 }).duplicate).toBe(false)
  })

  it('an idempotency key repeated after the window appends again', () => {
    const store = syncPorts(createMemoryStore())
    store.append('a', msg(1), { retention: KEEP, idempotencyKey: 'k', dedupWindowMs: 1_000, now: 0 })
    const later = store.append('a', msg(2), { retention: KEEP, idempotencyKey: 'k', dedupWindowMs: 1_000, now: 1_000 })
    expect(later.duplicate).toBe(false)
    expect(later.message.offset).toBe(2)
    // and the window restarts from the new append
    const again = store.append('a', msg(3), { retention: KEEP, idempotencyKey: 'k', dedupWindowMs: 1_000, now: 1_500 })
    expect(again).toMatchObject({ duplicate: true, message: { offset: 2, id: 'm2' } })
  })

  it('the default dedup window is 10 minutes', () => {
    const store = syncPorts(createMemoryStore())
    store.append('a', msg(1), { retention: KEEP, idempotencyKey: 'k', now: 0 })
    expect(store.append('a', msg(2), { retention: KEEP, idempotencyKey: 'k', now: 599_999 }).duplicate).toBe(true)
    expect(store.append('a', msg(3), { retention: KEEP, idempotencyKey: 'k', now: 600_000 }).duplicate).toBe(false)
  })

  it('remembers at most maxIdempotencyKeys keys', () => {
    const store = syncPorts(createMemoryStore({ maxIdempotencyKeys: 2 }))
    for (const k of ['k1', 'k2', 'k3']) store.append('a', msg(k), { retention: KEEP, idempotencyKey: k, now: 0 })
    expect(store.append('a', msg('k3b'), { retention: KEEP, idempotencyKey: 'k3', now: 1 }).duplicate).toBe(true)
    expect(store.append('a', msg('k1b'), { retention: KEEP, idempotencyKey: 'k1', now: 1 }).duplicate).toBe(false)
  })

  it('position() gives the epoch and the newest offset', () => {
    const store = syncPorts(createMemoryStore())
    expect(store.position('a')).toEqual({ epoch: store.epoch, offset: 0 })
    store.append('a', msg(1), { retention: KEEP, now: 0 })
    store.append('a', msg(2), { retention: KEEP, now: 0 })
    expect(store.position('a')).toEqual({ epoch: store.epoch, offset: 2 })
    expect(store.position('b')).toEqual({ epoch: store.epoch, offset: 0 })
    expect(typeof store.epoch).toBe('string')
    expect(store.epoch.length).toBeGreaterThan(0)
    expect(createMemoryStore().epoch).not.toBe(store.epoch)
  })

  it('reset() starts a new epoch, restarts offsets and forgets idempotency keys', () => {
    const store = syncPorts(createMemoryStore())
    store.append('a', msg(1), { retention: KEEP, idempotencyKey: 'k', now: 0 })
    store.append('a', msg(2), { retention: KEEP, now: 0 })
    const before = store.epoch
    store.reset()
    expect(store.epoch).not.toBe(before)
    expect(store.position('a')).toEqual({ epoch: store.epoch, offset: 0 })
    expect(store.read('a', { after: 0, limit: 10, now: 0 })).toMatchObject({ epoch: store.epoch, messages: [], top: 0 })
    const r = store.append('a', msg(3), { retention: KEEP, idempotencyKey: 'k', now: 1 })
    expect(r).toMatchObject({ duplicate: false, epoch: store.epoch, message: { offset: 1, id: 'm3' } })
  })
})

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

  it('carries commands as well as dispatches', async () => {
    const { brokers, got } = nodes()
    const command: ClusterMessage = { kind: 'command', origin: 'n2', command: { op: 'kick', channel: 'public:x', userId: 'bob', reason: 'r' } }
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
