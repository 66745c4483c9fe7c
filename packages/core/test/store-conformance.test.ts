import { describe, expect, it } from 'vitest'
import { type MaybePromise, type MemoryStoreOptions, type MessageFrame, type Retention, type StoredMessage, createMemoryStore, createReceiver } from '@tidings/core'
import { storeConformance } from '@tidings/core/conformance'
import { createTestHub } from '@tidings/core/testing'

storeConformance('memory', () => createMemoryStore(), { reset: (s) => s.reset() })

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

  it('size counts the channel logs held; reset() empties it', () => {
    const store = createSyncStore()
    expect(store.size).toBe(0)
    store.append('a', msg(1), { retention: KEEP, now: 0 })
    store.append('a', msg(2), { retention: KEEP, now: 0 })
    expect(store.size).toBe(1)
    store.append('b', msg(1), { retention: KEEP, now: 0 })
    expect(store.size).toBe(2)
    store.position('c') // an empty channel's epoch is kept too, so it stays stable
    expect(store.size).toBe(3)
    store.reset()
    expect(store.size).toBe(0)
  })

  it('maxChannels: the least recently used channel is forgotten and comes back in a new epoch', () => {
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
    expect(store.cursor('a', 'alice')).toBeUndefined()
    expect(store.cursors('a')).toEqual({})
    const back = store.read('a', { after: 2, limit: 10, now: 0 })
    expect(back.epoch).not.toBe(a.epoch)
    expect(back).toMatchObject({ messages: [], top: 0, complete: true })
    expect(store.position('a')).toEqual({ epoch: back.epoch, offset: 0 })
    // offsets restart and the old idempotency key belongs to the lost history
    const again = store.append('a', msg(3), { retention: KEEP, idempotencyKey: 'k', now: 1 })
    expect(again).toMatchObject({ duplicate: false, epoch: back.epoch, message: { offset: 1, id: 'm3' } })
    // bringing 'a' back evicted 'b' (then the LRU), not 'c'
    expect(store.size).toBe(2)
    expect(store.position('b').epoch).not.toBe(b.epoch)
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
