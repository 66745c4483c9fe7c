import { describe, expect, it } from 'vitest'
import { RealtimeError, createHub, createManualClock as createManualClockFromCore, silentLogger } from '@tidings/core'
import { type MemoryClient, createManualClock, createMemoryTransport, createTestHub } from '@tidings/core/testing'

/** Resolves to the promise's outcome if it settles within a few microtask turns, else 'pending'. */
async function outcome<T>(p: Promise<T>, turns = 50): Promise<{ value: T } | { error: unknown } | 'pending'> {
  let result: { value: T } | { error: unknown } | 'pending' = 'pending'
  p.then(
    (value) => (result = { value }),
    (error) => (result = { error }),
  )
  for (let i = 0; i < turns; i++) await Promise.resolve()
  return result
}

const texts = (c: MemoryClient, channel = 'public:news') => c.messages(channel).map((m) => m.data)

async function pair(options: Parameters<typeof createTestHub>[0] = {}) {
  const t = createTestHub(options)
  const alice = await t.connect({ userId: 'alice' })
  const bob = await t.connect({ userId: 'bob' })
  await bob.subscribe('public:news')
  return { t, alice, bob }
}

describe('connecting', () => {
  it('connects a client in one line, with the connected frame recorded', async () => {
    const alice = await createTestHub().connect({ userId: 'alice' })
    expect(alice.connectionId).not.toBe('')
    expect(alice.userId).toBe('alice')
    expect(alice.closed).toBe(false)
    expect(alice.frames[0]).toMatchObject({ type: 'connected', v: 1, connectionId: alice.connectionId, userId: 'alice' })
    expect(await alice.ping()).toMatchObject({ type: 'pong' })
  })

  it('tracks every client of the transport, and reports refused connections', async () => {
    await using t = createTestHub({ allowAnonymous: false })
    const alice = await t.connect({ userId: 'alice' })
    const refused = t.connect()
    await expect(refused).rejects.toMatchObject({ code: 'RT_002' })
    expect(t.transport.clients).toHaveLength(2)
    expect(t.transport.clients[0]).toBe(alice)
    const loser = t.transport.clients[1]!
    expect(loser.closed).toBe(true)
    expect(loser.closeCode).toBe(4001)
    expect(loser.received('error')[0]?.code).toBe('RT_002')
  })

  it('works with a hub built by hand and createMemoryTransport', async () => {
    const clock = createManualClockFromCore()
    const hub = createHub({ clock, logger: silentLogger })
    const transport = createMemoryTransport(hub)
    const c = await transport.connect({ identity: { userId: 'carol', roles: ['admin'] }, ip: '10.0.0.9', userAgent: 'ua-test' })
    expect(await hub.connections.get(c.connectionId)).toMatchObject({ userId: 'carol', transport: 'memory', ip: '10.0.0.9', userAgent: 'ua-test' })
    await hub.close()
    expect(c.closeCode).toBe(1001)
  })
})

describe('createManualClock', () => {
  it('starts at the given time and only moves when told to', () => {
    const clock = createManualClock(1_000)
    expect(clock.now()).toBe(1_000)
    expect(clock.now()).toBe(1_000)
    clock.advance(250)
    expect(clock.now()).toBe(1_250)
    expect(createManualClock().now()).toBe(Date.UTC(2026, 0, 1))
  })

  it('advance runs due timers in time order, at their due time, including timers scheduled meanwhile', () => {
    const clock = createManualClock(0)
    const log: string[] = []
    clock.setTimeout(() => log.push(`c@${clock.now()}`), 30)
    clock.setTimeout(() => {
      log.push(`a@${clock.now()}`)
      clock.setTimeout(() => log.push(`a2@${clock.now()}`), 5) // due at 15, before c
      clock.setTimeout(() => log.push(`late@${clock.now()}`), 100) // due at 110, after this advance
      clock.setTimeout(() => log.push(`now@${clock.now()}`), 0) // due at 10, after a
    }, 10)
    clock.setTimeout(() => log.push(`b@${clock.now()}`), 10) // same time as a: scheduling order
    expect(log).toEqual([]) // never synchronously
    clock.advance(50)
    expect(log).toEqual(['a@10', 'b@10', 'now@10', 'a2@15', 'c@30'])
    expect(clock.now()).toBe(50)
    expect(clock.pending()).toBe(1)
    clock.advance(59)
    expect(log).toHaveLength(5)
    clock.advance(1)
    expect(log.at(-1)).toBe('late@110')
    expect(clock.pending()).toBe(0)
  })

  it('a timer due exactly at the end of advance runs; negative delays count as 0', () => {
    const clock = createManualClock(0)
    let ran = 0
    clock.setTimeout(() => ran++, 100)
    clock.advance(99)
    expect(ran).toBe(0)
    clock.advance(1)
    expect(ran).toBe(1)
    clock.setTimeout(() => ran++, -5)
    clock.advance(0)
    expect(ran).toBe(2)
  })

  it('runNext jumps to the next timer and runs only it', () => {
    const clock = createManualClock(0)
    const log: number[] = []
    clock.setTimeout(() => log.push(clock.now()), 500)
    clock.setTimeout(() => log.push(clock.now()), 200)
    expect(clock.pending()).toBe(2)
    expect(clock.runNext()).toBe(true)
    expect(log).toEqual([200])
    expect(clock.now()).toBe(200)
    expect(clock.pending()).toBe(1)
    expect(clock.runNext()).toBe(true)
    expect(log).toEqual([200, 500])
    expect(clock.runNext()).toBe(false)
    expect(clock.now()).toBe(500)
  })

  it('clearTimeout cancels a pending timer and is a no-op for a finished one', () => {
    const clock = createManualClock(0)
    let a = 0
    let b = 0
    const ha = clock.setTimeout(() => a++, 10)
    const hb = clock.setTimeout(() => b++, 20)
    clock.clearTimeout(ha)
    expect(clock.pending()).toBe(1)
    clock.advance(100)
    expect(a).toBe(0)
    expect(b).toBe(1)
    clock.clearTimeout(hb)
    clock.clearTimeout(ha)
    expect(clock.pending()).toBe(0)
    // a timer cleared from inside another timer's callback does not run
    let c = 0
    const hc = clock.setTimeout(() => c++, 20)
    clock.setTimeout(() => clock.clearTimeout(hc), 10)
    clock.advance(30)
    expect(c).toBe(0)
  })

  it('drives the hub: t.advance moves the clock and settles', async () => {
    await using t = createTestHub({ presence: { typingTimeoutMs: 1000 } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('presence:room')
    await bob.subscribe('presence:room')
    alice.typing('presence:room')
    await t.settle()
    expect(bob.received('typing').map((f) => f.active)).toEqual([true])
    await t.advance(999)
    expect(bob.received('typing')).toHaveLength(1)
    await t.advance(1)
    expect(bob.received('typing').map((f) => f.active)).toEqual([true, false])
  })
})

describe('fault injection', () => {
  it('inbound drop: 1 loses every frame from the hub', async () => {
    const { t, alice, bob } = await pair()
    bob.inbound = { drop: 1 }
    await alice.publish('public:news', 'post', 1)
    await alice.publish('public:news', 'post', 2)
    await t.settle()
    expect(texts(bob)).toEqual([])
    bob.inbound = {}
    await alice.publish('public:news', 'post', 3)
    await t.settle()
    expect(texts(bob)).toEqual([3])
    await t.close()
  })

  it('inbound duplicate: 1 delivers every frame twice', async () => {
    const { t, alice, bob } = await pair()
    bob.inbound = { duplicate: 1 }
    await alice.publish('public:news', 'post', 1)
    await alice.publish('public:news', 'post', 2)
    await t.settle()
    expect(texts(bob)).toEqual([1, 1, 2, 2])
    const ids = bob.messages().map((m) => m.id)
    expect(ids[0]).toBe(ids[1])
    expect(ids[2]).toBe(ids[3])
    await t.close()
  })

  it('inbound reorder: 1 swaps consecutive frames', async () => {
    const { t, alice, bob } = await pair()
    bob.inbound = { reorder: 1 }
    for (const n of [1, 2, 3, 4]) await alice.publish('public:news', 'post', n)
    await t.settle()
    expect(texts(bob)).toEqual([2, 1, 4, 3])
    expect(bob.messages().map((m) => m.offset)).toEqual([2, 1, 4, 3])
    await t.close()
  })

  it('inbound delayMs holds frames until the clock advances', async () => {
    const { t, alice, bob } = await pair()
    bob.inbound = { delayMs: 100 }
    await alice.publish('public:news', 'post', 1)
    await t.settle()
    expect(texts(bob)).toEqual([])
    await t.advance(99)
    expect(texts(bob)).toEqual([])
    await alice.publish('public:news', 'post', 2)
    await t.advance(1)
    expect(texts(bob)).toEqual([1])
    await t.advance(98) // the second frame was sent at +99, so it is due at +199
    expect(texts(bob)).toEqual([1])
    await t.advance(1)
    expect(texts(bob)).toEqual([1, 2])
    await t.close()
  })

  it('inbound delayMs as a range delays within [min, max]', async () => {
    const { t, alice, bob } = await pair({ seed: 3 })
    bob.inbound = { delayMs: [50, 150] }
    for (const n of [1, 2, 3, 4, 5]) await alice.publish('public:news', 'post', n)
    await t.advance(49)
    expect(texts(bob)).toEqual([])
    await t.advance(101)
    expect([...texts(bob)].sort()).toEqual([1, 2, 3, 4, 5])
    await t.close()
  })

  it('outbound faults apply to frames sent to the hub', async () => {
    const { t, alice, bob } = await pair()
    alice.outbound = { drop: 1 }
    const lost = alice.ping()
    expect(await outcome(lost)).toBe('pending')
    alice.outbound = { duplicate: 1 }
    alice.send({ type: 'message', channel: 'public:news', event: 'post', data: 'twice' })
    await t.settle()
    expect(texts(bob)).toEqual(['twice', 'twice'])
    expect(new Set(bob.messages().map((m) => m.id)).size).toBe(2) // the hub saw two publishes
    alice.outbound = { delayMs: 100 }
    alice.send({ type: 'message', channel: 'public:news', event: 'post', data: 'later' })
    await t.advance(50)
    expect(texts(bob)).toHaveLength(2)
    await t.advance(50)
    expect(texts(bob)).toEqual(['twice', 'twice', 'later'])
    alice.outbound = { reorder: 1 }
    alice.send({ type: 'message', channel: 'public:news', event: 'post', data: 'x' })
    alice.send({ type: 'message', channel: 'public:news', event: 'post', data: 'y' })
    await t.settle()
    expect(texts(bob).slice(3)).toEqual(['y', 'x'])
    await t.close()
    await expect(lost).rejects.toBeInstanceOf(RealtimeError) // pending requests fail on close
  })

  it('faults are deterministic for a given seed', async () => {
    const run = async (seed: number) => {
      await using t = createTestHub({ seed })
      const alice = await t.connect({ userId: 'alice' })
      const bob = await t.connect({ userId: 'bob' })
      await bob.subscribe('public:news')
      bob.inbound = { drop: 0.3 }
      for (let i = 0; i < 60; i++) await alice.publish('public:news', 'post', i)
      await t.settle()
      return texts(bob)
    }
    const a = await run(7)
    const b = await run(7)
    expect(a).toEqual(b)
    expect(a.length).toBeGreaterThan(20)
    expect(a.length).toBeLessThan(60)
    const c = await run(8)
    expect(c).not.toEqual(a)
  })
})

describe('connection behaviour', () => {
  it('client.drop() makes the hub see a 1006 disconnect', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('presence:lobby')
    await bob.subscribe('presence:lobby')
    const seen: Array<{ id: string; code: number }> = []
    t.hub.on('disconnect', (info, close) => seen.push({ id: info.id, code: close.code }))
    const closes: number[] = []
    bob.onClose((code) => closes.push(code))
    bob.drop()
    await t.settle()
    expect(seen).toEqual([{ id: bob.connectionId, code: 1006 }])
    expect(closes).toEqual([1006])
    expect(bob.closed).toBe(true)
    expect(bob.closeCode).toBe(1006)
    expect(await t.hub.connections.get(bob.connectionId)).toBeUndefined()
    expect(t.hub.connections.local().map((c) => c.userId)).toEqual(['alice'])
    expect(alice.received('presence:leave').map((f) => f.user.id)).toEqual(['bob'])
    expect(() => bob.send({ type: 'ping' })).toThrow(RealtimeError)
    await expect(bob.ping()).rejects.toMatchObject({ code: 'RT_001' })
  })

  it('pause() piles frames up as bufferedBytes; resume() delivers them in order', async () => {
    const { t, alice, bob } = await pair()
    bob.pause()
    for (const n of [1, 2, 3]) await alice.publish('public:news', 'post', n)
    await t.settle()
    expect(texts(bob)).toEqual([])
    expect(bob.bufferedBytes).toBeGreaterThan(0)
    const before = bob.bufferedBytes
    await alice.publish('public:news', 'post', 4)
    expect(bob.bufferedBytes).toBeGreaterThan(before)
    bob.resume()
    expect(bob.bufferedBytes).toBe(0)
    expect(texts(bob)).toEqual([1, 2, 3, 4])
    await t.close()
  })

  it('bufferedBytes is what the hub sees: above the high-water mark it queues, and drains on resume', async () => {
    const { t, alice, bob } = await pair({ limits: { highWaterMark: 200 } })
    bob.pause()
    for (let n = 1; n <= 10; n++) await alice.publish('public:news', 'post', n)
    await t.settle()
    // the session stops taking frames once over the mark; the rest wait in the hub
    expect(bob.bufferedBytes).toBeGreaterThanOrEqual(200)
    expect(bob.bufferedBytes).toBeLessThan(600)
    bob.resume()
    await t.settle()
    expect(texts(bob)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    expect(bob.bufferedBytes).toBe(0)
    await t.close()
  })

  it('a paused client past maxQueuedBytes is closed as a slow consumer', async () => {
    const { t, alice, bob } = await pair({ limits: { highWaterMark: 100, maxQueuedBytes: 500 } })
    bob.pause()
    for (let n = 1; n <= 20 && !bob.closed; n++) await alice.publish('public:news', 'post', n)
    expect(bob.closed).toBe(true)
    expect(bob.closeCode).toBe(4009)
    await t.close()
  })
})

describe('waiting for frames', () => {
  it('next(type) resolves with a later frame, not one already received', async () => {
    const { t, alice, bob } = await pair()
    await alice.publish('public:news', 'post', 'a')
    await t.settle()
    expect(texts(bob)).toEqual(['a'])
    const next = bob.next('message')
    expect(await outcome(next)).toBe('pending')
    await alice.publish('public:news', 'post', 'b')
    expect((await next).data).toBe('b')
    await t.close()
  })

  it('next(type, predicate) skips frames that do not match', async () => {
    const { t, alice, bob } = await pair()
    const next = bob.next('message', (m) => m.data === 'c')
    const anyFrame = bob.next('published')
    await alice.publish('public:news', 'post', 'b')
    await alice.publish('public:news', 'post', 'c')
    expect((await next).data).toBe('c')
    expect(await outcome(anyFrame)).toBe('pending') // bob published nothing
    await t.close()
    await expect(anyFrame).rejects.toBeInstanceOf(RealtimeError)
  })

  it('next() rejects when the connection closes', async () => {
    const { t, bob } = await pair()
    const next = bob.next('message')
    bob.close()
    await expect(next).rejects.toMatchObject({ name: 'RealtimeError', code: 'RT_001' })
    await t.close()
  })

  it('next() on an already closed client rejects instead of waiting forever', async () => {
    const { t, bob } = await pair()
    bob.close()
    const r = await outcome(bob.next('message'))
    expect(r).not.toBe('pending')
    expect(r !== 'pending' && 'error' in r && r.error instanceof RealtimeError).toBe(true)
    await t.close()
  })

  it('on(type) and on("frame") listen, and the returned function unsubscribes', async () => {
    const { t, alice, bob } = await pair()
    const types: string[] = []
    const msgs: unknown[] = []
    const offAll = bob.on('frame', (f) => types.push(f.type))
    const offMsg = bob.on('message', (f) => f.type === 'message' && msgs.push(f.data))
    await alice.publish('public:news', 'post', 1)
    await t.settle()
    offAll()
    offMsg()
    await alice.publish('public:news', 'post', 2)
    await t.settle()
    expect(types).toEqual(['message'])
    expect(msgs).toEqual([1])
    expect(texts(bob)).toEqual([1, 2])
    await t.close()
  })
})

describe('request()', () => {
  it('rejects with a RealtimeError carrying code and details on error frames', async () => {
    await using t = createTestHub({ limits: { maxSubscriptions: 1 } })
    const alice = await t.connect({ userId: 'alice' })
    const err = await alice.subscribe('nowhere').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(RealtimeError)
    expect(err).toMatchObject({ code: 'RT_004' })
    await alice.subscribe('public:a')
    const limit = await alice.subscribe('public:b').catch((e: unknown) => e)
    expect(limit).toBeInstanceOf(RealtimeError)
    expect(limit).toMatchObject({ code: 'RT_006', details: { limit: 1 } })
    // the connection stays usable
    expect(await alice.ping()).toMatchObject({ type: 'pong' })
  })

  it('resolves with the reply carrying its id, even when other frames come first', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    const p1 = alice.request({ type: 'ping' })
    const p2 = alice.subscribe('public:x')
    const [pong, sub] = await Promise.all([p1, p2])
    expect(pong).toEqual({ type: 'pong', id: 'r1' })
    expect(sub).toMatchObject({ type: 'subscribed', id: 'r2', channel: 'public:x' })
  })

  it('rejects at once on a closed client', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    alice.close()
    await expect(alice.subscribe('public:x')).rejects.toMatchObject({ code: 'RT_001' })
  })
})

describe('disposal', () => {
  it('await using closes every connection with 1001 and refuses new ones', async () => {
    let alice: MemoryClient
    let bob: MemoryClient
    let t: ReturnType<typeof createTestHub>
    {
      await using hub = createTestHub()
      t = hub
      alice = await hub.connect({ userId: 'alice' })
      bob = await hub.connect({ userId: 'bob' })
      await bob.subscribe('public:news')
      expect(alice.closed).toBe(false)
    }
    expect(alice.closed).toBe(true)
    expect(alice.closeCode).toBe(1001)
    expect(bob.closeCode).toBe(1001)
    expect(t.hub.metrics().connections).toBe(0)
    expect(t.hub.channels.list()).toEqual([])
    await expect(t.connect({ userId: 'carol' })).rejects.toMatchObject({ code: 'RT_001' })
    await t.close() // idempotent
  })
})
