import { describe, expect, it } from 'vitest'
import { type MaybePromise, type MemoryStoreOptions, type MessageFrame, type Retention, type StoredMessage, createMemoryStore, createReceiver } from '@tidings/core'
import { delayed, storeConformance } from '@tidings/core/conformance'
import { createTestHub } from '@tidings/core/testing'

storeConformance('memory', () => createMemoryStore(), {
  reset: (s) => s.reset(),
  makeBudgetStore: (maxBytes) => createMemoryStore({ maxBytes }),
  makeBoundedStore: (maxChannels) => createMemoryStore({ maxChannels }),
  capabilities: ['revise', 'search', 'channelsOf', 'eraseUser'],
})

// The same contract when every answer comes late, as from a store across a network.
storeConformance('memory, answering 2 ms late', () => delayed(createMemoryStore(), 2), {
  reset: (s) => s.reset(),
  makeBudgetStore: (maxBytes) => delayed(createMemoryStore({ maxBytes }), 2),
  makeBoundedStore: (maxChannels) => delayed(createMemoryStore({ maxChannels }), 2),
  capabilities: ['revise', 'search', 'channelsOf', 'eraseUser'],
  timeoutMs: 30_000,
})

// ------------------------------------------------------------------ memory-only behaviour

const KEEP: Retention = { maxCount: 1000, maxAgeMs: 3_600_000 }
const msg = (n: number | string, timestamp = 0): Omit<StoredMessage, 'offset' | 'channel'> => ({ id: `m${n}`, event: 'e', data: { n }, sender: 'alice', timestamp })

type Sync<T> = { [K in keyof T]: T[K] extends (...args: infer A) => MaybePromise<infer R> ? (...args: A) => R : T[K] }

/** The memory store answers synchronously (the hub's fast path): this view checks it does and unwraps the types. */
function createSyncStore(options?: MemoryStoreOptions) {
  const store = createMemoryStore(options)
  return new Proxy(store, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver)
      if (typeof v !== 'function') return v
      return (...args: unknown[]) => {
        const r = (v as (...a: unknown[]) => unknown).apply(target, args)
        if (typeof (r as { then?: unknown } | null)?.then === 'function') throw new Error(`memory store ${String(key)}() answered with a promise`)
        return r
      }
    },
  }) as unknown as Sync<typeof store>
}

describe('createMemoryStore (memory only)', () => {
  it('answers synchronously (the hub’s fast path)', () => {
    const store = createMemoryStore()
    expect(typeof store.close).toBe('function')
    const results = [
      store.append('a', msg(1), { retention: KEEP, now: 0 }),
      store.read('a', { after: 0, limit: 10, now: 0 }),
      store.position('a'),
      store.commit('a', 'alice', 1),
      store.cursor('a', 'alice'),
      store.cursors('a'),
      store.close?.(),
    ]
    for (const r of results) expect(r instanceof Promise).toBe(false)
  })

  it('two stores never share an epoch (a new process is a new history)', () => {
    const one = createSyncStore()
    const two = createSyncStore()
    expect(one.position('a').epoch).not.toBe(two.position('a').epoch)
  })

  it('different channels have different epochs', () => {
    const store = createSyncStore()
    expect(store.position('a').epoch).not.toBe(store.position('b').epoch)
  })

  it('size counts the channel logs held; reading never adds one; reset() empties it', () => {
    const store = createSyncStore()
    expect(store.size).toBe(0)
    store.append('a', msg(1), { retention: KEEP, now: 0 })
    store.append('a', msg(2), { retention: KEEP, now: 0 })
    expect(store.size).toBe(1)
    store.append('b', msg(1), { retention: KEEP, now: 0 })
    expect(store.size).toBe(2)
    const c = store.position('c') // an empty channel's epoch is derived, not stored
    store.read('c', { after: 0, limit: 10, now: 0 })
    expect(store.size).toBe(2)
    expect(store.append('c', msg(1), { retention: KEEP, now: 0 }).epoch).toBe(c.epoch)
    expect(store.size).toBe(3)
    store.reset()
    expect(store.size).toBe(0)
  })

  it('110,000 history reads of distinct public:junk-N names create no log and evict nothing: public:important keeps its history, alice keeps her queue', () => {
    const store = createSyncStore()
    store.append('public:important', msg(1), { retention: KEEP, now: 0 })
    store.append('private:user-alice', msg(1), { retention: KEEP, now: 0 })
    store.commit('private:user-alice', 'alice', 1)
    const important = store.position('public:important')
    const before = store.stats()
    for (let i = 0; i < 110_000; i++) {
      const ch = `public:junk-${i}`
      store.read(ch, { after: 0, limit: 50, now: 0 })
      store.position(ch)
    }
    expect(store.stats()).toEqual(before)
    expect(store.stats()).toMatchObject({ channels: 2, evictions: 0, evictedChannels: 0 })
    expect(store.position('public:important')).toEqual(important)
    expect(store.read('public:important', { after: 0, limit: 10, now: 0 }).messages.map((m) => m.id)).toEqual(['m1'])
    expect(store.cursor('private:user-alice', 'alice')).toEqual({ offset: 1, epoch: store.position('private:user-alice').epoch })
  })

  it('maxChannels: the least recently used channel is evicted and comes back in a new epoch, its cursors kept in the old one', () => {
    const store = createSyncStore({ maxChannels: 2 })
    store.append('a', msg(1), { retention: KEEP, idempotencyKey: 'k', now: 0 })
    store.append('a', msg(2), { retention: KEEP, now: 0 })
    store.commit('a', 'alice', 2)
    const a = store.position('a')
    store.append('b', msg(1), { retention: KEEP, now: 0 })
    const b = store.position('b')
    expect(store.size).toBe(2)

    store.append('c', msg(1), { retention: KEEP, now: 0 }) // evicts 'a', the least recently used
    expect(store.size).toBe(2)
    expect(store.stats()).toMatchObject({ evictions: 1, evictedChannels: 1 })
    expect(store.cursor('a', 'alice')).toEqual({ offset: 2, epoch: a.epoch })
    expect(store.cursors('a')).toEqual({})
    const back = store.read('a', { after: 2, limit: 10, now: 0 })
    expect(back.epoch).not.toBe(a.epoch)
    expect(back).toMatchObject({ messages: [], top: 0, complete: true })
    expect(store.position('a')).toEqual({ epoch: back.epoch, offset: 0 })
    expect(store.size).toBe(2) // reading 'a' did not bring it back
    // offsets restart and the old idempotency key belongs to the lost history
    const again = store.append('a', msg(3), { retention: KEEP, idempotencyKey: 'k', now: 1 })
    expect(again).toMatchObject({ duplicate: false, epoch: back.epoch, message: { offset: 1, id: 'm3' } })
    expect(store.cursor('a', 'alice')).toEqual({ offset: 2, epoch: a.epoch })
    // bringing 'a' back evicted 'b' (then the LRU), not 'c'
    expect(store.size).toBe(2)
    expect(store.position('b').epoch).not.toBe(b.epoch)
  })

  it('maxEvictedChannels: once an evicted channel is forgotten, no channel without a log keeps its empty epoch (never an old epoch again)', () => {
    const store = createSyncStore({ maxChannels: 1, maxEvictedChannels: 1 })
    const neverWritten = store.position('quiet')
    store.append('a', msg(1), { retention: KEEP, now: 0 })
    const a = store.position('a')
    store.append('b', msg(1), { retention: KEEP, now: 0 }) // evicts 'a' (remembered)
    expect(store.position('quiet')).toEqual(neverWritten)
    store.append('c', msg(1), { retention: KEEP, now: 0 }) // evicts 'b'; 'a' is forgotten
    expect(store.position('a').epoch).not.toBe(a.epoch)
    expect(store.position('quiet').epoch).not.toBe(neverWritten.epoch)
    expect(store.stats().evictedChannels).toBe(1)
  })

  it('reset() keeps consumer cursors in the epoch they were committed in, and lists none as current', () => {
    const store = createSyncStore()
    store.append('q', msg(1), { retention: KEEP, now: 0 })
    store.append('q', msg(2), { retention: KEEP, now: 0 })
    store.commit('q', 'alice', 2)
    const old = store.position('q')
    store.reset()
    expect(store.position('q').epoch).not.toBe(old.epoch)
    expect(store.cursor('q', 'alice')).toEqual({ offset: 2, epoch: old.epoch })
    expect(store.cursors('q')).toEqual({})
    store.commit('q', 'alice', 0) // the hub reported the loss: the stale cursor goes
    expect(store.cursor('q', 'alice')).toBeUndefined()
  })

  it('maxBytes (store-wide): the globally oldest messages go first, whatever their channel; the epoch stays', () => {
    const store = createSyncStore({ maxBytes: 10 * 1096 })
    const retention = KEEP
    for (let n = 1; n <= 6; n++) store.append('old', msg(n), { retention, now: n, size: 1_000 })
    for (let n = 1; n <= 6; n++) store.append('new', msg(n), { retention, now: 10 + n, size: 1_000 })
    expect(store.stats()).toMatchObject({ messages: 10, bytes: 10 * 1096, droppedForBytes: 2 })
    const old = store.read('old', { after: 0, limit: 10, now: 20 })
    expect(old.messages.map((m) => m.offset)).toEqual([3, 4, 5, 6])
    expect(old.complete).toBe(false)
    expect(store.read('new', { after: 0, limit: 10, now: 20 }).messages.map((m) => m.offset)).toEqual([1, 2, 3, 4, 5, 6])
    // more in 'new' takes the rest of 'old' first
    for (let n = 7; n <= 10; n++) store.append('new', msg(n), { retention, now: 20 + n, size: 1_000 })
    expect(store.read('old', { after: 0, limit: 10, now: 40 })).toMatchObject({ messages: [], top: 6, complete: false })
    expect(store.read('new', { after: 0, limit: 20, now: 40 }).messages).toHaveLength(10)
    expect(store.position('old').epoch).toBe(store.append('old', msg(7), { retention, now: 41, size: 1_000 }).epoch)
  })

  it('maxBytes (store-wide) defaults to 32 MiB: 3,100 messages of 127 KB from one user hold at most that', () => {
    const store = createSyncStore()
    const text = 'x'.repeat(127 * 1024)
    for (let n = 1; n <= 3_100; n++) store.append(`public:flood-${n % 7}`, { id: `m${n}`, event: 'e', data: { text }, timestamp: n }, { retention: { maxCount: 1_000, maxAgeMs: 3_600_000 }, now: n })
    const stats = store.stats()
    expect(stats.bytes).toBeLessThanOrEqual(32 * 1024 * 1024)
    expect(stats.bytes).toBeGreaterThan(30 * 1024 * 1024)
    expect(stats.droppedForBytes).toBe(3_100 - stats.messages)
  })

  it('bytes and message counts go back to 0 when retention, eviction and reset drop everything', () => {
    const store = createSyncStore({ maxChannels: 1 })
    store.append('a', msg(1, 0), { retention: { maxCount: 10, maxAgeMs: 10 }, now: 0, size: 500 })
    expect(store.stats()).toMatchObject({ messages: 1, bytes: 596 })
    store.read('a', { after: 0, limit: 10, now: 100 }) // expired by age
    expect(store.stats()).toMatchObject({ messages: 0, bytes: 0 })
    store.append('a', msg(2, 100), { retention: KEEP, now: 100, size: 500 })
    store.append('b', msg(1, 100), { retention: KEEP, now: 100, size: 500 }) // evicts 'a'
    expect(store.stats()).toMatchObject({ channels: 1, messages: 1, bytes: 596 })
    store.reset()
    expect(store.stats()).toMatchObject({ channels: 0, messages: 0, bytes: 0 })
  })

  it('maxChannels: using a channel keeps it', () => {
    const store = createSyncStore({ maxChannels: 2 })
    store.append('a', msg(1), { retention: KEEP, now: 0 })
    const a = store.position('a')
    store.append('b', msg(1), { retention: KEEP, now: 0 })
    const b = store.position('b')
    store.read('a', { after: 0, limit: 10, now: 0 }) // 'b' is now the least recently used
    store.append('c', msg(1), { retention: KEEP, now: 0 })
    expect(store.position('a')).toEqual({ epoch: a.epoch, offset: 1 })
    expect(store.position('b')).not.toEqual(b)
    expect(store.position('b').offset).toBe(0)
  })

  it('the default dedup window is 10 minutes', () => {
    const store = createSyncStore()
    store.append('a', msg(1), { retention: KEEP, idempotencyKey: 'k', now: 0 })
    expect(store.append('a', msg(2), { retention: KEEP, idempotencyKey: 'k', now: 599_999 }).duplicate).toBe(true)
    expect(store.append('a', msg(3), { retention: KEEP, idempotencyKey: 'k', now: 600_000 }).duplicate).toBe(false)
  })

  it('the dedup window ends exactly dedupWindowMs after the first append', () => {
    const store = createSyncStore()
    store.append('a', msg(1), { retention: KEEP, idempotencyKey: 'k', dedupWindowMs: 1_000, now: 0 })
    expect(store.append('a', msg(2), { retention: KEEP, idempotencyKey: 'k', dedupWindowMs: 1_000, now: 999 }).duplicate).toBe(true)
    expect(store.append('a', msg(3), { retention: KEEP, idempotencyKey: 'k', dedupWindowMs: 1_000, now: 1_000 }).duplicate).toBe(false)
  })

  it('remembers at most maxIdempotencyKeys keys', () => {
    const store = createSyncStore({ maxIdempotencyKeys: 2 })
    for (const k of ['k1', 'k2', 'k3']) store.append('a', msg(k), { retention: KEEP, idempotencyKey: k, now: 0 })
    expect(store.append('a', msg('k3b'), { retention: KEEP, idempotencyKey: 'k3', now: 1 }).duplicate).toBe(true)
    expect(store.append('a', msg('k1b'), { retention: KEEP, idempotencyKey: 'k1', now: 1 }).duplicate).toBe(false)
  })

  it('a message timestamped exactly maxAgeMs ago is still kept', () => {
    const store = createSyncStore()
    const retention = { maxCount: 100, maxAgeMs: 1_000 }
    store.append('a', msg(1, 0), { retention, now: 0 })
    expect(store.read('a', { after: 0, limit: 10, now: 1_000 }).messages.map((m) => m.offset)).toEqual([1])
    expect(store.read('a', { after: 0, limit: 10, now: 1_001 }).messages).toEqual([])
  })
})

// ------------------------------------------------------------------ a hub over a store that loses its history

describe('a hub whose store loses a channel’s history while subscribers are live', () => {
  it.each(['at-most-once', 'at-least-once'] as const)('%s: the subscribers’ receivers still get every later message', async (delivery) => {
    const store = createMemoryStore()
    await using t = createTestHub({ store, channels: { 'chat:*': { subscribe: true, publish: true, delivery } } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const got: unknown[] = []
    const rx = createReceiver({ deliver: (f) => got.push(f.data), ack: (channel, offset) => bob.ack(channel, offset) })
    bob.on('frame', (f) => {
      if (f.type === 'subscribed') rx.subscribed(f)
      if (f.type === 'message') rx.message(f)
    })
    await bob.subscribe('chat:room')
    for (const n of [1, 2, 3]) await alice.publish('chat:room', 'say', n)
    await t.settle()
    expect(got).toEqual([1, 2, 3])

    store.reset() // a crash or flush of the store: the channel starts a new epoch, offsets restart at 1
    for (const n of [4, 5]) await alice.publish('chat:room', 'say', n)
    await t.advance(60_000)

    // a frame's prev is an earlier offset of the same stream, never at or after its own offset
    for (const m of bob.messages('chat:room') as MessageFrame[]) if (m.prev !== undefined) expect(m.prev, JSON.stringify(m)).toBeLessThan(m.offset!)
    expect(got).toEqual([1, 2, 3, 4, 5])
  })
})
