import { describe, expect, it } from 'vitest'
import { rejectsWith, testHubs } from './helpers.js'
import type { MemoryClient, TestHub } from '@tidings/core/testing'
import {
  type HubEvents,
  type HubOptions,
  type MessageFrame,
  type MessageStore,
  type PublishResult,
  type ServerFrameOf,
  createMemoryStore,
  createReceiver,
} from '@tidings/core'

// ---------------------------------------------------------------------------- helpers

const CHANNELS: HubOptions['channels'] = {
  'chat:*': {},
  'small:*': { history: { maxCount: 3 } },
  'ack:*': { delivery: 'at-least-once' },
  'rcpt:*': { delivery: 'at-least-once', receipts: true },
  'team:*': { delivery: 'at-least-once', offline: {} },
  'inbox:*': { delivery: 'at-least-once', offline: { maxMessages: 3, ttlMs: 60_000 } },
  'live:*': { history: false },
  'ro:*': { publish: false },
  'feed:*': { offline: {} },
  'smallack:*': { delivery: 'at-least-once', history: { maxCount: 2 } },
}

const DELIVERY = { ackTimeoutMs: 1000, backoffMultiplier: 2, maxBackoffMs: 60_000, maxAttempts: 3 } as const

const makeHub = testHubs({ channels: CHANNELS, delivery: DELIVERY })

const offsetsOf = (frames: readonly MessageFrame[]) => frames.map((f) => f.offset)
const eventsOf = (frames: readonly MessageFrame[]) => frames.map((f) => f.event)
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** Wire a receiver to a client: it sees every subscribed and message frame, and acks through the client. */
function attachReceiver(client: MemoryClient) {
  const delivered: MessageFrame[] = []
  const receiver = createReceiver({
    deliver: (f) => delivered.push(f),
    ack: (channel, offset) => {
      if (!client.closed) client.ack(channel, offset)
    },
  })
  client.on('frame', (f) => {
    if (f.type === 'subscribed') receiver.subscribed(f)
    else if (f.type === 'message') receiver.message(f)
  })
  return { receiver, delivered, offsets: (channel: string) => offsetsOf(delivered.filter((f) => f.channel === channel)) }
}

/** Index of the first frame matching a predicate in what a client received. */
function indexOf(c: MemoryClient, match: (f: MemoryClient['frames'][number]) => boolean): number {
  return c.frames.findIndex(match)
}

/**
 * A memory store whose reads can be held at a gate, to interleave live publishes with a replay.
 * `mode: 'wait-then-read'` reads the log after the gate opens (it sees what was published meanwhile);
 * `'read-then-wait'` reads at once and answers after the gate opens (a snapshot).
 */
function gatedStore(mode: 'wait-then-read' | 'read-then-wait') {
  const inner = createMemoryStore()
  let gate: Promise<void> | null = null
  let openGate: () => void = () => {}
  let held = 0
  const store: MessageStore = {
    append: (channel, message, options) => inner.append(channel, message, options),
    read: async (channel, options) => {
      if (gate === null) return inner.read(channel, options)
      held++
      if (mode === 'wait-then-read') {
        await gate
        return inner.read(channel, options)
      }
      const r = inner.read(channel, options)
      await gate
      return r
    },
    position: (channel) => inner.position(channel),
    cursor: (channel, consumer) => inner.cursor(channel, consumer),
    commit: (channel, consumer, offset) => inner.commit(channel, consumer, offset),
    cursors: (channel) => inner.cursors(channel),
  }
  return {
    store,
    get held() {
      return held
    },
    hold() {
      gate = new Promise((resolve) => (openGate = resolve))
    },
    release() {
      gate = null
      openGate()
    },
  }
}

/** Whether a promise settled after the hub settled. */
function track<T>(p: Promise<T>) {
  const state: { done: boolean; value: T | undefined; error: unknown } = { done: false, value: undefined, error: undefined }
  p.then(
    (v) => {
      state.done = true
      state.value = v
    },
    (e: unknown) => {
      state.done = true
      state.error = e
    },
  )
  return state
}

// ---------------------------------------------------------------------------- 1. offsets and epochs

describe('offsets and epochs', () => {
  it('offsets grow by one per message, per channel, for server and client publishes alike', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('chat:a')
    await bob.subscribe('chat:b')
    const a: PublishResult[] = []
    for (let i = 0; i < 3; i++) a.push(await t.hub.publish('chat:a', 'm', { i }))
    const b1 = await t.hub.publish('chat:b', 'm', {})
    const fromClient = await alice.publish('chat:a', 'm', {})
    const b2 = await t.hub.publish('chat:b', 'm', {})
    await t.settle()

    expect(a.map((r) => r.offset)).toEqual([1, 2, 3])
    expect(fromClient.offset).toBe(4)
    expect([b1.offset, b2.offset]).toEqual([1, 2])
    expect(offsetsOf(bob.messages('chat:a'))).toEqual([1, 2, 3, 4])
    expect(offsetsOf(bob.messages('chat:b'))).toEqual([1, 2])
  })

  it('subscribed.position carries the epoch and the newest offset', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const first = await alice.subscribe('chat:p')
    expect(first.position).toEqual({ epoch: expect.any(String), offset: 0 })
    expect(first.position!.epoch.length).toBeGreaterThan(0)

    await t.hub.publish('chat:p', 'm', {})
    await t.hub.publish('chat:p', 'm', {})
    const bob = await t.connect({ userId: 'bob' })
    const second = await bob.subscribe('chat:p')
    expect(second.position).toEqual({ epoch: first.position!.epoch, offset: 2 })
    expect((await t.hub.channel('chat:p').history()).epoch).toBe(first.position!.epoch)
    // Channels without history have no position.
    expect((await bob.subscribe('live:x')).position).toBeUndefined()
  })

  it('retention alone does not change the epoch', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const before = await alice.subscribe('small:e')
    for (let i = 0; i < 10; i++) await t.hub.publish('small:e', 'm', { i })
    const bob = await t.connect({ userId: 'bob' })
    const after = await bob.subscribe('small:e')
    expect(after.position).toEqual({ epoch: before.position!.epoch, offset: 10 })
  })

  it('a store reset changes the epoch; a resume from the old epoch gets recovered:false with a reason', async () => {
    const store = createMemoryStore()
    const t = makeHub({ store })
    const alice = await t.connect({ userId: 'alice' })
    const sub = await alice.subscribe('chat:r')
    await t.hub.publish('chat:r', 'm', { n: 1 })
    await t.hub.publish('chat:r', 'm', { n: 2 })
    await t.settle()
    const old = sub.position!
    expect(offsetsOf(alice.messages('chat:r'))).toEqual([1, 2])
    alice.drop()

    store.reset()
    const fresh = await t.hub.publish('chat:r', 'm', { n: 3 })
    expect(fresh.offset).toBe(1)

    const again = await t.connect({ userId: 'alice' })
    const resumed = await again.subscribe('chat:r', { since: { epoch: old.epoch, offset: 2 } })
    expect(resumed.recovered).toBe(false)
    expect(resumed.reason).toMatch(/epoch/)
    expect(resumed.position!.epoch).not.toBe(old.epoch)
    expect(resumed.position!.offset).toBe(1)
    await t.settle()
    expect(again.messages('chat:r')).toEqual([])
    // Live delivery continues in the new epoch.
    await t.hub.publish('chat:r', 'm', { n: 4 })
    await t.settle()
    expect(offsetsOf(again.messages('chat:r'))).toEqual([2])
  })
})

// ---------------------------------------------------------------------------- 3. history and recovery

describe('history and recovery', () => {
  it('a resume with since replays every missed message in order, then live ones, recovered:true', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const sub = await alice.subscribe('chat:h')
    await t.hub.publish('chat:h', 'm', { n: 1 })
    await t.hub.publish('chat:h', 'm', { n: 2 })
    await t.settle()
    expect(offsetsOf(alice.messages('chat:h'))).toEqual([1, 2])
    alice.drop()
    for (let n = 3; n <= 5; n++) await t.hub.publish('chat:h', 'm', { n })

    const again = await t.connect({ userId: 'alice' })
    const resumed = await again.subscribe('chat:h', { since: { epoch: sub.position!.epoch, offset: 2 } })
    expect(resumed.recovered).toBe(true)
    expect(resumed.reason).toBeUndefined()
    expect(resumed.position).toEqual({ epoch: sub.position!.epoch, offset: 2 })
    await t.settle()
    expect(offsetsOf(again.messages('chat:h'))).toEqual([3, 4, 5])
    expect(again.messages('chat:h').map((m) => (m.data as { n: number }).n)).toEqual([3, 4, 5])
    // The subscribed reply comes before the replay.
    expect(indexOf(again, (f) => f.type === 'subscribed')).toBeLessThan(indexOf(again, (f) => f.type === 'message'))

    await t.hub.publish('chat:h', 'm', { n: 6 })
    await t.settle()
    expect(offsetsOf(again.messages('chat:h'))).toEqual([3, 4, 5, 6])
  })

  it('past retention: recovered:false with a reason, the current position and no partial replay', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const sub = await alice.subscribe('small:h')
    await t.hub.publish('small:h', 'm', {})
    await t.settle()
    alice.drop()
    for (let i = 0; i < 5; i++) await t.hub.publish('small:h', 'm', {}) // offsets 2..6, only 4..6 kept

    const again = await t.connect({ userId: 'alice' })
    const resumed = await again.subscribe('small:h', { since: { epoch: sub.position!.epoch, offset: 1 } })
    expect(resumed.recovered).toBe(false)
    expect(resumed.reason).toMatch(/retention/)
    expect(resumed.position).toEqual({ epoch: sub.position!.epoch, offset: 6 })
    await t.settle()
    expect(again.messages('small:h')).toEqual([])

    await t.hub.publish('small:h', 'm', {})
    await t.settle()
    expect(offsetsOf(again.messages('small:h'))).toEqual([7])
  })

  it('a resume on a channel that keeps no history says so', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const resumed = await alice.subscribe('live:x', { since: { epoch: 'whatever', offset: 3 } })
    expect(resumed.recovered).toBe(false)
    expect(resumed.reason).toMatch(/no history/)
  })

  it('a client that has received nothing recovers from the position it got on subscribe', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    await t.hub.publish('chat:z', 'm', { n: 0 }) // before the subscription: not missed
    const sub = await alice.subscribe('chat:z')
    expect(sub.position!.offset).toBe(1)
    alice.drop()
    for (let n = 1; n <= 3; n++) await t.hub.publish('chat:z', 'm', { n })

    const again = await t.connect({ userId: 'alice' })
    const resumed = await again.subscribe('chat:z', { since: sub.position! })
    expect(resumed.recovered).toBe(true)
    await t.settle()
    expect(offsetsOf(again.messages('chat:z'))).toEqual([2, 3, 4])
  })

  it('a client that subscribed to an empty channel recovers from offset 0', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const sub = await alice.subscribe('chat:empty')
    expect(sub.position!.offset).toBe(0)
    alice.drop()
    await t.hub.publish('chat:empty', 'm', {})
    await t.hub.publish('chat:empty', 'm', {})
    const again = await t.connect({ userId: 'alice' })
    const resumed = await again.subscribe('chat:empty', { since: sub.position! })
    expect(resumed.recovered).toBe(true)
    await t.settle()
    expect(offsetsOf(again.messages('chat:empty'))).toEqual([1, 2])
  })

  describe.each([
    ['chat:g', 'wait-then-read'],
    ['chat:g', 'read-then-wait'],
    ['ack:g', 'wait-then-read'],
    ['ack:g', 'read-then-wait'],
  ] as const)('live messages during a replay (%s, store %s)', (channel, mode) => {
    it('are delivered after the replay, without duplicates or gaps', async () => {
      const gated = gatedStore(mode)
      const t = makeHub({ store: gated.store })
      const alice = await t.connect({ userId: 'alice' })
      const sub = await alice.subscribe(channel)
      for (let n = 1; n <= 3; n++) await t.hub.publish(channel, 'm', { n })
      await t.settle()
      alice.drop()
      await t.hub.publish(channel, 'm', { n: 4 })
      await t.hub.publish(channel, 'm', { n: 5 })

      const again = await t.connect({ userId: 'alice' })
      gated.hold()
      const resuming = again.subscribe(channel, { since: { epoch: sub.position!.epoch, offset: 3 } })
      await t.settle()
      expect(gated.held).toBeGreaterThan(0) // the replay read is waiting
      await t.hub.publish(channel, 'm', { n: 6 })
      await t.hub.publish(channel, 'm', { n: 7 })
      await t.settle()
      expect(again.messages(channel)).toEqual([]) // nothing overtakes the reply and the replay
      gated.release()
      const resumed = await resuming
      expect(resumed.recovered).toBe(true)
      await t.settle()
      expect(offsetsOf(again.messages(channel))).toEqual([4, 5, 6, 7])
      await t.hub.publish(channel, 'm', { n: 8 })
      await t.settle()
      expect(offsetsOf(again.messages(channel))).toEqual([4, 5, 6, 7, 8])
    })
  })

  it('history on demand: the newest messages, then pages from a position', async () => {
    const t = makeHub()
    for (let n = 1; n <= 5; n++) await t.hub.publish('chat:hist', 'm', { n })
    const alice = await t.connect({ userId: 'alice' })

    const latest = await alice.request<ServerFrameOf<'history'>>({ type: 'history', channel: 'chat:hist', limit: 2 })
    expect(latest.type).toBe('history')
    expect(latest.channel).toBe('chat:hist')
    expect(offsetsOf(latest.messages)).toEqual([4, 5])
    expect(latest.top).toBe(5)
    expect(latest.complete).toBe(true)
    expect(latest.position.offset).toBe(5)
    const epoch = latest.position.epoch

    const pages: number[][] = []
    let position = { epoch, offset: 0 }
    for (let i = 0; i < 4; i++) {
      const page = await alice.request<ServerFrameOf<'history'>>({ type: 'history', channel: 'chat:hist', since: position, limit: 2 })
      expect(page.complete).toBe(true)
      expect(page.position.epoch).toBe(epoch)
      pages.push(offsetsOf(page.messages) as number[])
      position = page.position
    }
    expect(pages).toEqual([[1, 2], [3, 4], [5], []])
    expect(position.offset).toBe(5)
    // The messages are whole message frames.
    const one = (await alice.request<ServerFrameOf<'history'>>({ type: 'history', channel: 'chat:hist', since: { epoch, offset: 0 }, limit: 1 })).messages[0]!
    expect(one).toMatchObject({ type: 'message', channel: 'chat:hist', event: 'm', data: { n: 1 }, offset: 1 })
    // Not subscribed by it.
    expect(t.hub.connections.local({ channel: 'chat:hist' })).toEqual([])
  })

  it('history says complete:false when retention dropped messages after since, and refuses a stale epoch', async () => {
    const t = makeHub()
    for (let n = 1; n <= 6; n++) await t.hub.publish('small:hist', 'm', { n })
    const alice = await t.connect({ userId: 'alice' })
    const first = await alice.request<ServerFrameOf<'history'>>({ type: 'history', channel: 'small:hist', limit: 1 })
    const epoch = first.position.epoch
    const page = await alice.request<ServerFrameOf<'history'>>({ type: 'history', channel: 'small:hist', since: { epoch, offset: 0 }, limit: 10 })
    expect(page.complete).toBe(false)
    expect(offsetsOf(page.messages)).toEqual([4, 5, 6])

    const stale = await rejectsWith(alice.request({ type: 'history', channel: 'small:hist', since: { epoch: 'old-epoch', offset: 0 } }), 'RT_004')
    expect(stale.details).toMatchObject({ epoch })
    await rejectsWith(alice.request({ type: 'history', channel: 'live:x', limit: 5 }), 'RT_004')
  })

  it('history and search leave out messages whose publish excluded the reader’s user; a client reads back its own (no-echo) publishes', async () => {
    const t = makeHub()
    await t.hub.publish('chat:ex', 'm', { text: 'for all' })
    await t.hub.publish('chat:ex', 'm', { text: 'surprise party for bob' }, { exclude: { users: ['bob'] } })
    const bob = await t.connect({ userId: 'bob' })
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('chat:ex')
    await alice.publish('chat:ex', 'm', { text: 'party plan from alice' })
    await t.hub.publish('chat:ex', 'm', { text: 'party hats' }, { exclude: { users: ['bob'] } })
    const forBob = await bob.request<ServerFrameOf<'history'>>({ type: 'history', channel: 'chat:ex', limit: 10 })
    expect(forBob.messages.map((m) => (m.data as { text: string }).text)).toEqual(['for all', 'party plan from alice'])
    // the page covers what it left out: paging on from its position finds nothing more
    expect(forBob.position.offset).toBe(4)
    const paged = await bob.request<ServerFrameOf<'history'>>({ type: 'history', channel: 'chat:ex', since: { epoch: forBob.position.epoch, offset: 2 }, limit: 10 })
    expect(paged.messages.map((m) => m.offset)).toEqual([3])
    expect(paged.position.offset).toBe(4)
    const forAlice = await alice.request<ServerFrameOf<'history'>>({ type: 'history', channel: 'chat:ex', limit: 10 })
    expect(offsetsOf(forAlice.messages)).toEqual([1, 2, 3, 4])
    const search = (c: MemoryClient) => c.search('chat:ex', 'party').then((found) => found.map((m) => m.offset))
    expect(await search(bob)).toEqual([3])
    expect(await search(alice)).toEqual([4, 3, 2])
  })

  it('server side: hub.channel(name).history()', async () => {
    const t = makeHub()
    for (let n = 1; n <= 5; n++) await t.hub.publish('chat:srv', 'm', { n })
    const all = await t.hub.channel('chat:srv').history()
    expect(all.messages.map((m) => m.offset)).toEqual([1, 2, 3, 4, 5])
    expect(all.messages.map((m) => (m.data as { n: number }).n)).toEqual([1, 2, 3, 4, 5])
    expect(all.top).toBe(5)
    expect(all.complete).toBe(true)
    expect(all.epoch).toEqual(expect.any(String))
    const page = await t.hub.channel('chat:srv').history({ after: 2, limit: 2 })
    expect(page.messages.map((m) => m.offset)).toEqual([3, 4])
    expect(page.epoch).toBe(all.epoch)
  })
})

// ---------------------------------------------------------------------------- 4. acks

describe('acknowledgments (at-least-once)', () => {
  it('at-least-once subscriptions say so, and their messages carry ack:true', async () => {
    const t = makeHub()
    const bob = await t.connect({ userId: 'bob' })
    expect((await bob.subscribe('ack:x')).delivery).toBe('at-least-once')
    expect((await bob.subscribe('chat:x')).delivery).toBe('at-most-once')
    await t.hub.publish('ack:x', 'm', {})
    await t.hub.publish('chat:x', 'm', {})
    await t.settle()
    expect(bob.messages('ack:x')[0]!.ack).toBe(true)
    expect(bob.messages('chat:x')[0]!.ack).toBeUndefined()
  })

  it('redelivers after ackTimeoutMs with exponential backoff, up to maxAttempts, then reports delivery:failed', async () => {
    const t = makeHub()
    const failed: Array<Parameters<HubEvents['delivery:failed']>[0]> = []
    t.hub.on('delivery:failed', (e) => failed.push(e))
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('ack:x')
    await t.hub.publish('ack:x', 'm', { n: 1 })
    await t.settle()
    const copies = () => bob.messages('ack:x').length
    expect(copies()).toBe(1)

    await t.advance(999)
    expect(copies()).toBe(1)
    await t.advance(1) // 1000 ms: first redelivery
    expect(copies()).toBe(2)
    await t.advance(1999)
    expect(copies()).toBe(2)
    await t.advance(1) // +2000 ms: second
    expect(copies()).toBe(3)
    await t.advance(3999)
    expect(copies()).toBe(3)
    await t.advance(1) // +4000 ms: third (maxAttempts)
    expect(copies()).toBe(4)
    expect(failed).toEqual([])
    await t.advance(7999)
    expect(failed).toEqual([])
    await t.advance(1) // the last attempt's wait is over too
    expect(failed).toEqual([
      { connectionId: bob.connectionId, userId: 'bob', channel: 'ack:x', fromOffset: 1, toOffset: 1, attempts: 3, reason: 'not acknowledged' },
    ])
    expect(t.hub.metrics().deliveryFailed).toBe(1)
    expect(t.hub.metrics().redelivered).toBe(3)
    for (const m of bob.messages('ack:x')) expect(m).toMatchObject({ offset: 1, ack: true, data: { n: 1 } })

    await t.advance(120_000)
    expect(copies()).toBe(4)
    expect(failed).toHaveLength(1)
    expect(bob.closed).toBe(false) // onFailure 'report' keeps the connection
  })

  it('a cumulative ack stops redelivery; a partial one redelivers only the rest', async () => {
    const t = makeHub()
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('ack:c')
    for (let n = 1; n <= 3; n++) await t.hub.publish('ack:c', 'm', { n })
    await t.settle()
    bob.ack('ack:c', 1)
    await t.advance(1000)
    const redelivered = bob.messages('ack:c').slice(3)
    expect(offsetsOf(redelivered)).toEqual([2, 3])
    expect(redelivered[0]!.prev).toBeUndefined() // 2 follows the acknowledged 1
    bob.ack('ack:c', 3)
    await t.advance(120_000)
    expect(bob.messages('ack:c')).toHaveLength(5)
    expect(t.hub.metrics().redelivered).toBe(2)
    expect(t.hub.metrics().deliveryFailed).toBe(0)

    // An ack of everything at once: nothing is sent again.
    for (let n = 4; n <= 6; n++) await t.hub.publish('ack:c', 'm', { n })
    await t.settle()
    bob.ack('ack:c', 6)
    await t.advance(120_000)
    expect(offsetsOf(bob.messages('ack:c').slice(5))).toEqual([4, 5, 6])
  })

  it('unacknowledged messages dropped by retention are reported failed; the rest are redelivered', async () => {
    const t = makeHub()
    const failed: Array<Parameters<HubEvents['delivery:failed']>[0]> = []
    t.hub.on('delivery:failed', (e) => failed.push(e))
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('smallack:x') // keeps 2
    for (let n = 1; n <= 5; n++) await t.hub.publish('smallack:x', 'm', { n })
    await t.advance(1000)
    expect(failed).toEqual([expect.objectContaining({ channel: 'smallack:x', fromOffset: 1, toOffset: 3, reason: 'dropped by retention' })])
    expect(offsetsOf(bob.messages('smallack:x').slice(5))).toEqual([4, 5])
    expect(t.hub.metrics().deliveryFailed).toBe(1)
    bob.ack('smallack:x', 5)
    await t.advance(60_000)
    expect(bob.messages('smallack:x')).toHaveLength(7)
  })

  it("onFailure 'disconnect' closes the connection with 4010", async () => {
    const t = makeHub({ delivery: { ...DELIVERY, maxAttempts: 1, onFailure: 'disconnect' } })
    const failed: unknown[] = []
    t.hub.on('delivery:failed', (e) => failed.push(e))
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('ack:d')
    await t.hub.publish('ack:d', 'm', {})
    await t.advance(1000)
    expect(bob.messages('ack:d')).toHaveLength(2)
    expect(bob.closed).toBe(false)
    await t.advance(2000)
    expect(failed).toHaveLength(1)
    expect(bob.closed).toBe(true)
    expect(bob.closeCode).toBe(4010)
    expect(await t.hub.connections.get(bob.connectionId)).toBeUndefined()
  })

  it('client publishes are answered with published (with the offset) or an error', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const first = await alice.publish('ack:p', 'm', { n: 1 })
    expect(first).toMatchObject({ type: 'published', channel: 'ack:p', messageId: expect.any(String), offset: 1 })
    expect(first.duplicate).toBeUndefined()
    const second = await alice.publish('ack:p', 'm', { n: 2 })
    expect(second.offset).toBe(2)
    expect(second.messageId).not.toBe(first.messageId)
    await rejectsWith(alice.publish('nowhere', 'm', {}), 'RT_004')
    await rejectsWith(alice.publish('ro:x', 'm', {}), 'RT_003')
    // A channel without history gives no offset.
    expect((await alice.publish('live:x', 'm', {})).offset).toBeUndefined()
  })

  describe.each(['ack:w', 'chat:w'])('publish with awaitAcks on %s', (channel) => {
    it('resolves after the wait with who acknowledged and who did not', async () => {
      const t = makeHub()
      const alice = await t.connect({ userId: 'alice' })
      const bob = await t.connect({ userId: 'bob' })
      await alice.subscribe(channel)
      await bob.subscribe(channel)
      const p = track(t.hub.publish(channel, 'm', {}, { awaitAcks: 500 }))
      await t.settle()
      const frame = alice.messages(channel)[0]!
      expect(frame.ack).toBe(true)
      alice.ack(channel, frame.offset!)
      await t.advance(499)
      expect(p.done).toBe(false)
      await t.advance(1)
      expect(p.done).toBe(true)
      expect(p.error).toBeUndefined()
      expect(p.value).toMatchObject({
        offset: 1,
        recipients: 2,
        acknowledged: [{ connectionId: alice.connectionId, userId: 'alice' }],
        unacknowledged: [{ connectionId: bob.connectionId, userId: 'bob' }],
      })
    })

    it('resolves as soon as every recipient acknowledged', async () => {
      const t = makeHub()
      const alice = await t.connect({ userId: 'alice' })
      const bob = await t.connect({ userId: 'bob' })
      await alice.subscribe(channel)
      await bob.subscribe(channel)
      const p = track(t.hub.publish(channel, 'm', {}, { awaitAcks: 10_000 }))
      await t.settle()
      alice.ack(channel, 1)
      bob.ack(channel, 1)
      await t.settle()
      expect(p.done).toBe(true)
      expect(p.value!.acknowledged!.map((r) => r.userId).sort()).toEqual(['alice', 'bob'])
      expect(p.value!.unacknowledged).toEqual([])
    })

    it('a recipient that disconnects counts as unacknowledged', async () => {
      const t = makeHub()
      const carol = await t.connect({ userId: 'carol' })
      await carol.subscribe(channel)
      const p = track(t.hub.publish(channel, 'm', {}, { awaitAcks: 1000 }))
      await t.settle()
      carol.drop()
      await t.advance(1000)
      expect(p.done).toBe(true)
      expect(p.value).toMatchObject({ acknowledged: [], unacknowledged: [{ connectionId: carol.connectionId, userId: 'carol' }] })
    })

    it('a recipient that disconnects does not cut the wait short for the others', async () => {
      const t = makeHub()
      const alice = await t.connect({ userId: 'alice' })
      const bob = await t.connect({ userId: 'bob' })
      const carol = await t.connect({ userId: 'carol' })
      for (const c of [alice, bob, carol]) await c.subscribe(channel)
      const p = track(t.hub.publish(channel, 'm', {}, { awaitAcks: 1000 }))
      await t.settle()
      alice.ack(channel, 1)
      await t.settle()
      carol.drop()
      await t.advance(100)
      bob.ack(channel, 1) // in time: 100 ms of 1000
      await t.advance(900)
      expect(p.done).toBe(true)
      expect(p.value!.acknowledged!.map((r) => r.userId).sort()).toEqual(['alice', 'bob'])
      expect(p.value!.unacknowledged!.map((r) => r.userId)).toEqual(['carol'])
    })
  })

  it('awaitAcks counts a subscriber whose resume replay is still under way', async () => {
    const gated = gatedStore('wait-then-read')
    const t = makeHub({ store: gated.store })
    const bob = await t.connect({ userId: 'bob' })
    const sub = await bob.subscribe('ack:w')
    bob.drop()
    const again = await t.connect({ userId: 'bob' })
    gated.hold()
    const resuming = again.subscribe('ack:w', { since: sub.position! })
    await t.settle()
    const p = track(t.hub.publish('ack:w', 'm', {}, { awaitAcks: 1000 }))
    await t.settle()
    gated.release()
    await resuming
    await t.settle()
    expect(offsetsOf(again.messages('ack:w'))).toEqual([1]) // it did get the message
    await t.advance(1000) // and never acknowledged it
    expect(p.done).toBe(true)
    expect(p.value!.recipients).toBe(1)
    expect(p.value!.unacknowledged).toEqual([{ connectionId: again.connectionId, userId: 'bob' }])
  })

  it('awaitAcks needs a channel with history', async () => {
    const t = makeHub()
    await rejectsWith(t.hub.publish('live:x', 'm', {}, { awaitAcks: 100 }), 'RT_007')
  })
})

// ---------------------------------------------------------------------------- 5. exactly-once

describe('exactly-once to the application', () => {
  it.each(['chat:i', 'ack:i'])('a repeated idempotencyKey within the window returns the original offset, duplicate:true, and is not delivered again (%s)', async (channel) => {
    const t = makeHub({ dedupWindowMs: 1000 })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe(channel)
    const first = await alice.publish(channel, 'm', { n: 1 }, { idempotencyKey: 'k1' })
    await t.settle()
    bob.ack(channel, 1) // no redelivery muddles the count below
    const repeat = await alice.publish(channel, 'm', { n: 1 }, { idempotencyKey: 'k1' })
    expect(repeat).toMatchObject({ offset: first.offset, messageId: first.messageId, duplicate: true })
    const server = await t.hub.publish(channel, 'm', { n: 1 }, { idempotencyKey: 'k1' })
    expect(server).toMatchObject({ offset: first.offset, messageId: first.messageId, duplicate: true, recipients: 0 })
    await t.advance(999)
    expect((await alice.publish(channel, 'm', {}, { idempotencyKey: 'k1' })).duplicate).toBe(true)
    expect(offsetsOf(bob.messages(channel))).toEqual([1])

    // A different key is a different message.
    expect((await alice.publish(channel, 'm', {}, { idempotencyKey: 'k2' })).offset).toBe(2)
    // After the window the key is new again.
    await t.advance(1)
    const later = await alice.publish(channel, 'm', { n: 3 }, { idempotencyKey: 'k1' })
    expect(later.duplicate).toBeUndefined()
    expect(later.offset).toBe(3)
    await t.settle()
    expect(offsetsOf(bob.messages(channel))).toEqual([1, 2, 3])
  })

  it('the receiver hands each message to the application once despite duplicated frames and redeliveries', async () => {
    const t = makeHub({ delivery: { ...DELIVERY, maxAttempts: 10 } })
    const bob = await t.connect({ userId: 'bob' })
    const r = attachReceiver(bob)
    await bob.subscribe('ack:e')
    bob.inbound = { duplicate: 1 }
    bob.outbound = { drop: 1 } // acks are lost: everything is sent again
    for (let n = 1; n <= 5; n++) await t.hub.publish('ack:e', 'm', { n })
    await t.settle()
    expect(bob.messages('ack:e')).toHaveLength(10)
    expect(r.offsets('ack:e')).toEqual([1, 2, 3, 4, 5])

    await t.advance(1000)
    expect(t.hub.metrics().redelivered).toBe(5)
    expect(bob.messages('ack:e')).toHaveLength(20)
    expect(r.offsets('ack:e')).toEqual([1, 2, 3, 4, 5])

    bob.outbound = {}
    await t.advance(2000) // the second redelivery: the receiver acks again
    const frames = bob.messages('ack:e').length
    expect(frames).toBe(30)
    await t.advance(120_000)
    expect(bob.messages('ack:e')).toHaveLength(frames) // acknowledged: no more
    expect(r.offsets('ack:e')).toEqual([1, 2, 3, 4, 5])
    expect(r.delivered.map((f) => (f.data as { n: number }).n)).toEqual([1, 2, 3, 4, 5])
    expect(t.hub.metrics().deliveryFailed).toBe(0)
  })

  it('a receiver resuming from its own position after a reconnect sees every message once', async () => {
    const t = makeHub()
    let client = await t.connect({ userId: 'bob' })
    const delivered: number[] = []
    const receiver = createReceiver({ deliver: (f) => delivered.push(f.offset!), ack: (ch, o) => client.ack(ch, o) })
    const feed = (c: MemoryClient) =>
      c.on('frame', (f) => {
        if (f.type === 'subscribed') receiver.subscribed(f)
        else if (f.type === 'message') receiver.message(f)
      })
    feed(client)
    await client.subscribe('ack:rc')
    for (let n = 1; n <= 3; n++) await t.hub.publish('ack:rc', 'm', { n })
    await t.settle()
    expect(receiver.position('ack:rc')!.offset).toBe(3)
    client.drop()
    await t.hub.publish('ack:rc', 'm', { n: 4 })
    await t.hub.publish('ack:rc', 'm', { n: 5 })

    client = await t.connect({ userId: 'bob' })
    feed(client)
    const resumed = await client.subscribe('ack:rc', { since: receiver.position('ack:rc')! })
    expect(resumed.recovered).toBe(true)
    await t.advance(10_000)
    expect(delivered).toEqual([1, 2, 3, 4, 5])
    expect(offsetsOf(client.messages('ack:rc'))).toEqual([4, 5]) // acknowledged: not sent again
  })

  it('a publisher retrying with its key plus the receiver: one message at the application', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const r = attachReceiver(bob)
    await bob.subscribe('ack:x1')
    bob.inbound = { duplicate: 1 }
    for (let i = 0; i < 3; i++) await alice.publish('ack:x1', 'order', { id: 7 }, { idempotencyKey: 'order-7' })
    await t.advance(5000)
    expect(r.delivered).toHaveLength(1)
    expect(r.delivered[0]).toMatchObject({ event: 'order', data: { id: 7 }, offset: 1 })
  })
})

// ---------------------------------------------------------------------------- 6. ordering

describe('ordering', () => {
  it('with reordering and loss on an at-least-once channel the receiver delivers in offset order, all of them', async () => {
    const t = makeHub({ seed: 7, delivery: { ackTimeoutMs: 200, backoffMultiplier: 2, maxBackoffMs: 400, maxAttempts: 100 } })
    const bob = await t.connect({ userId: 'bob' })
    const r = attachReceiver(bob)
    await bob.subscribe('ack:o')
    bob.inbound = { reorder: 0.5, drop: 0.2 }
    const N = 30
    for (let n = 1; n <= N; n++) {
      await t.hub.publish('ack:o', 'm', { n })
      if (n % 5 === 0) await t.settle()
    }
    for (let i = 0; i < 200 && r.delivered.length < N; i++) await t.advance(200)
    bob.inbound = {}
    await t.advance(1000)

    expect(r.offsets('ack:o')).toEqual(range(1, N))
    expect(r.receiver.held('ack:o')).toBe(0)
    // The wire really was out of order and lossy.
    const raw = offsetsOf(bob.messages('ack:o')) as number[]
    expect(raw.some((o, i) => i > 0 && o < raw[i - 1]!)).toBe(true)
    expect(t.hub.metrics().redelivered).toBeGreaterThan(0)
  })

  it("a publisher's own messages are left out of its stream, so its next message carries prev", async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const ra = attachReceiver(alice)
    await alice.subscribe('ack:own')
    await bob.subscribe('ack:own')
    await alice.publish('ack:own', 'm', {}) // 1: not sent to alice
    await bob.publish('ack:own', 'm', {}) // 2: not sent to bob
    await t.hub.publish('ack:own', 'm', {}) // 3
    await t.settle()

    const a = alice.messages('ack:own')
    expect(a.map((f) => [f.offset, f.prev])).toEqual([
      [2, 0],
      [3, undefined],
    ])
    const b = bob.messages('ack:own')
    expect(b.map((f) => [f.offset, f.prev])).toEqual([
      [1, undefined],
      [3, 1],
    ])
    expect(ra.offsets('ack:own')).toEqual([2, 3])
    expect(ra.receiver.held('ack:own')).toBe(0)
  })

  it('filtered subscriptions get prev links, live and on redelivery', async () => {
    const t = makeHub()
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('ack:f', { filter: { field: 'event', op: 'eq', value: 'keep' } })
    await t.hub.publish('ack:f', 'keep', {})
    await t.hub.publish('ack:f', 'skip', {})
    await t.hub.publish('ack:f', 'skip', {})
    await t.hub.publish('ack:f', 'keep', {})
    await t.settle()
    expect(bob.messages('ack:f').map((f) => [f.offset, f.prev])).toEqual([
      [1, undefined],
      [4, 1],
    ])
    await t.advance(1000) // not acknowledged: redelivered, with the same links
    expect(bob.messages('ack:f').slice(2).map((f) => [f.offset, f.prev])).toEqual([
      [1, undefined],
      [4, 1],
    ])
    // A receiver accepts the linked frames without waiting for 2 and 3.
    const delivered: number[] = []
    const rec = createReceiver({ deliver: (f) => delivered.push(f.offset!), ack: () => {} })
    rec.subscribed(bob.received('subscribed')[0]!)
    for (const f of bob.messages('ack:f')) rec.message(f)
    expect(delivered).toEqual([1, 4])
  })

  it('a filtered resume links the replayed messages with prev', async () => {
    const t = makeHub()
    const bob = await t.connect({ userId: 'bob' })
    const sub = await bob.subscribe('ack:fr', { filter: { field: 'event', op: 'eq', value: 'keep' } })
    bob.drop()
    await t.hub.publish('ack:fr', 'skip', {})
    await t.hub.publish('ack:fr', 'keep', {})
    await t.hub.publish('ack:fr', 'skip', {})
    await t.hub.publish('ack:fr', 'keep', {})
    const again = await t.connect({ userId: 'bob' })
    const r = attachReceiver(again)
    const resumed = await again.subscribe('ack:fr', { since: sub.position!, filter: { field: 'event', op: 'eq', value: 'keep' } })
    expect(resumed.recovered).toBe(true)
    await t.settle()
    expect(again.messages('ack:fr').map((f) => [f.offset, f.prev])).toEqual([
      [2, 0],
      [4, 2],
    ])
    expect(r.offsets('ack:fr')).toEqual([2, 4])
  })
})

// ---------------------------------------------------------------------------- 7. offline queues

describe('offline queues (private:user-*)', () => {
  it('messages published while the user is offline are delivered in order on the next subscribe; acked ones are not sent again', async () => {
    const t = makeHub()
    const bob = await t.connect({ userId: 'bob' })
    const first = await bob.subscribe('private:user-bob')
    expect(first.delivery).toBe('at-least-once')
    expect(first.position!.offset).toBe(0)
    bob.drop()
    for (let n = 1; n <= 3; n++) await t.hub.publish('private:user-bob', 'm', { n })

    const again = await t.connect({ userId: 'bob' })
    const sub = await again.subscribe('private:user-bob')
    expect(sub.recovered).toBe(true)
    expect(sub.position).toEqual({ epoch: first.position!.epoch, offset: 0 })
    await t.settle()
    expect(again.messages('private:user-bob').map((m) => [m.offset, (m.data as { n: number }).n, m.ack])).toEqual([
      [1, 1, true],
      [2, 2, true],
      [3, 3, true],
    ])
    expect(indexOf(again, (f) => f.type === 'subscribed')).toBeLessThan(indexOf(again, (f) => f.type === 'message'))

    again.ack('private:user-bob', 2)
    await t.settle()
    expect(await t.hub.channel('private:user-bob').deliveredTo(2)).toEqual(['bob'])
    expect(await t.hub.channel('private:user-bob').deliveredTo(3)).toEqual([])
    again.drop()
    await t.hub.publish('private:user-bob', 'm', { n: 4 })

    const third = await t.connect({ userId: 'bob' })
    const sub3 = await third.subscribe('private:user-bob')
    expect(sub3.position).toEqual({ epoch: first.position!.epoch, offset: 2 }) // the user's cursor
    await t.settle()
    expect(offsetsOf(third.messages('private:user-bob'))).toEqual([3, 4])
  })

  it('keeps at most 100 messages per channel by default, and says some were lost', async () => {
    const t = makeHub()
    for (let n = 1; n <= 105; n++) await t.hub.publish('private:user-bob', 'm', { n })
    const bob = await t.connect({ userId: 'bob' })
    const r = attachReceiver(bob)
    const sub = await bob.subscribe('private:user-bob')
    expect(sub.recovered).toBe(false)
    expect(sub.reason).toEqual(expect.any(String))
    await t.settle()
    expect(offsetsOf(bob.messages('private:user-bob'))).toEqual(range(6, 105))
    expect(r.offsets('private:user-bob')).toEqual(range(6, 105))
  })

  it('queued messages expire after 5 minutes', async () => {
    const t = makeHub()
    await t.hub.publish('private:user-bob', 'm', { n: 1 })
    await t.hub.publish('private:user-bob', 'm', { n: 2 })
    await t.advance(4 * 60_000)
    await t.hub.publish('private:user-bob', 'm', { n: 3 })
    await t.advance(90_000) // 1 and 2 are 5.5 minutes old, 3 is 1.5

    const bob = await t.connect({ userId: 'bob' })
    const sub = await bob.subscribe('private:user-bob')
    expect(sub.recovered).toBe(false)
    expect(sub.reason).toMatch(/expired/)
    await t.settle()
    expect(offsetsOf(bob.messages('private:user-bob'))).toEqual([3])

    await t.advance(6 * 60_000)
    bob.drop()
    const again = await t.connect({ userId: 'bob' })
    const sub2 = await again.subscribe('private:user-bob')
    expect(sub2.recovered).toBe(false)
    await t.settle()
    expect(again.messages('private:user-bob')).toEqual([])
  })

  it('the default offline limit (100) holds even when the hub keeps more history', async () => {
    const t = makeHub({ history: { maxCount: 1000, maxAgeMs: 60 * 60_000 } })
    for (let n = 1; n <= 105; n++) await t.hub.publish('private:user-bob', 'm', { n })
    const bob = await t.connect({ userId: 'bob' })
    const sub = await bob.subscribe('private:user-bob')
    await t.settle()
    expect(offsetsOf(bob.messages('private:user-bob'))).toEqual(range(6, 105))
    expect(sub.recovered).toBe(false)
  })

  it("a pattern's own offline.maxMessages and ttlMs bound its queue", async () => {
    const t = makeHub()
    for (let n = 1; n <= 5; n++) await t.hub.publish('inbox:bob', 'm', { n }) // maxMessages 3
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('inbox:bob')
    await t.settle()
    expect(offsetsOf(bob.messages('inbox:bob'))).toEqual([3, 4, 5])

    const carol = await t.connect({ userId: 'carol' })
    await t.hub.publish('inbox:carol', 'm', {})
    await t.advance(61_000) // ttlMs 60 s
    await carol.subscribe('inbox:carol')
    await t.settle()
    expect(carol.messages('inbox:carol')).toEqual([])
  })

  it('an at-most-once offline channel counts what was written as delivered', async () => {
    const t = makeHub()
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('feed:bob')
    for (let n = 1; n <= 3; n++) await t.hub.publish('feed:bob', 'm', { n })
    await t.settle()
    expect(offsetsOf(bob.messages('feed:bob'))).toEqual([1, 2, 3])
    bob.drop()
    await t.hub.publish('feed:bob', 'm', { n: 4 })

    const again = await t.connect({ userId: 'bob' })
    const sub = await again.subscribe('feed:bob')
    expect(sub.delivery).toBe('at-most-once')
    await t.settle()
    expect(offsetsOf(again.messages('feed:bob'))).toEqual([4])
  })

  it('hub.deliveredTo lists the users whose cursor passed an offset', async () => {
    const t = makeHub()
    const bob = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    await bob.subscribe('team:t')
    await carol.subscribe('team:t')
    for (let n = 1; n <= 3; n++) await t.hub.publish('team:t', 'm', { n })
    await t.settle()
    expect(await t.hub.channel('team:t').deliveredTo(1)).toEqual([])
    bob.ack('team:t', 3)
    carol.ack('team:t', 1)
    await t.settle()
    expect((await t.hub.channel('team:t').deliveredTo(1)).sort()).toEqual(['bob', 'carol'])
    expect(await t.hub.channel('team:t').deliveredTo(2)).toEqual(['bob'])
    expect(await t.hub.channel('team:t').deliveredTo(3)).toEqual(['bob'])
    expect(await t.hub.channel('team:t').deliveredTo(4)).toEqual([])
    // Carol, back later, gets what she had not acknowledged.
    carol.drop()
    const again = await t.connect({ userId: 'carol' })
    const sub = await again.subscribe('team:t')
    expect(sub.position!.offset).toBe(1)
    await t.settle()
    expect(offsetsOf(again.messages('team:t'))).toEqual([2, 3])
  })
})

// ---------------------------------------------------------------------------- 8. receipts

describe('receipts', () => {
  async function setup(t: TestHub) {
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    for (const c of [alice, bob, carol]) await c.subscribe('rcpt:x')
    await alice.publish('rcpt:x', 'm', { from: 'alice' }) // 1
    await carol.publish('rcpt:x', 'm', { from: 'carol' }) // 2
    await t.settle()
    return { alice, bob, carol }
  }

  it('an ack sends a delivered receipt to the original sender only', async () => {
    const t = makeHub()
    const { alice, bob, carol } = await setup(t)
    bob.ack('rcpt:x', 2)
    await t.settle()
    expect(alice.received('receipt')).toEqual([{ type: 'receipt', channel: 'rcpt:x', status: 'delivered', userId: 'bob', offsets: [1] }])
    expect(carol.received('receipt')).toEqual([{ type: 'receipt', channel: 'rcpt:x', status: 'delivered', userId: 'bob', offsets: [2] }])
    expect(bob.received('receipt')).toEqual([])

    // Alice's ack covers her own message (no receipt to herself) and Carol's.
    alice.ack('rcpt:x', 2)
    await t.settle()
    expect(alice.received('receipt')).toHaveLength(1)
    expect(carol.received('receipt').at(-1)).toEqual({ type: 'receipt', channel: 'rcpt:x', status: 'delivered', userId: 'alice', offsets: [2] })
    // Acking again sends nothing more.
    bob.ack('rcpt:x', 2)
    await t.settle()
    expect(alice.received('receipt')).toHaveLength(1)
    expect(carol.received('receipt')).toHaveLength(2)
  })

  it('a delivered receipt names only messages the acknowledging subscriber was sent', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('rcpt:f', { filter: { field: 'event', op: 'eq', value: 'keep' } })
    await alice.publish('rcpt:f', 'skip', {}) // 1: bob's filter leaves it out
    await alice.publish('rcpt:f', 'keep', {}) // 2
    await t.settle()
    expect(offsetsOf(bob.messages('rcpt:f'))).toEqual([2])
    bob.ack('rcpt:f', 2)
    await t.settle()
    expect(alice.received('receipt')).toEqual([{ type: 'receipt', channel: 'rcpt:f', status: 'delivered', userId: 'bob', offsets: [2] }])
  })

  it('a read frame sends a read receipt to the sender only', async () => {
    const t = makeHub()
    const { alice, bob, carol } = await setup(t)
    bob.send({ type: 'read', channel: 'rcpt:x', offsets: [1, 2] })
    await t.settle()
    expect(alice.received('receipt')).toEqual([{ type: 'receipt', channel: 'rcpt:x', status: 'read', userId: 'bob', offsets: [1] }])
    expect(carol.received('receipt')).toEqual([{ type: 'receipt', channel: 'rcpt:x', status: 'read', userId: 'bob', offsets: [2] }])
    expect(bob.received('receipt')).toEqual([])
    expect(bob.received('error')).toEqual([])
  })

  it("readReceipts:false suppresses that user's read receipts only", async () => {
    const t = makeHub()
    const { alice, bob, carol } = await setup(t)
    t.hub.preferences.set('bob', { readReceipts: false })
    bob.send({ type: 'read', channel: 'rcpt:x', offsets: [1, 2] })
    await t.settle()
    expect(alice.received('receipt')).toEqual([])
    expect(carol.received('receipt')).toEqual([])
    expect(bob.received('error')).toEqual([])

    carol.send({ type: 'read', channel: 'rcpt:x', offsets: [1] })
    await t.settle()
    expect(alice.received('receipt')).toEqual([{ type: 'receipt', channel: 'rcpt:x', status: 'read', userId: 'carol', offsets: [1] }])
  })

  it('read on a channel without receipts is refused with RT_007, and the connection stays usable', async () => {
    const t = makeHub()
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('chat:n')
    await t.hub.publish('chat:n', 'm', {})
    bob.send({ type: 'read', channel: 'chat:n', offsets: [1] })
    await t.settle()
    expect(bob.received('error')).toEqual([expect.objectContaining({ code: 'RT_007', channel: 'chat:n' })])
    expect(bob.closed).toBe(false)
    expect((await bob.ping()).type).toBe('pong')
  })
})

// ---------------------------------------------------------------------------- 9. priorities and backpressure

describe('priorities and backpressure', () => {
  it('queued frames are flushed high priority first on resume', async () => {
    const t = makeHub({ limits: { highWaterMark: 1 } })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('chat:q')
    bob.pause()
    await t.hub.publish('chat:q', 'first', {}) // on the wire; the session is now full
    await t.hub.publish('chat:q', 'low1', {}, { priority: 'low' })
    await t.hub.publish('chat:q', 'normal1', {})
    await t.hub.publish('chat:q', 'high1', {}, { priority: 'high' })
    await t.hub.publish('chat:q', 'low2', {}, { priority: 'low' })
    await t.hub.publish('chat:q', 'normal2', {}, { priority: 'normal' })
    await t.hub.publish('chat:q', 'high2', {}, { priority: 'high' })
    await t.settle()
    expect(bob.messages('chat:q')).toEqual([])
    bob.resume()
    await t.settle()
    expect(eventsOf(bob.messages('chat:q'))).toEqual(['first', 'high1', 'high2', 'normal1', 'normal2', 'low1', 'low2'])
    // Uncongested again: straight through.
    await t.hub.publish('chat:q', 'after', {}, { priority: 'low' })
    await t.settle()
    expect(eventsOf(bob.messages('chat:q')).at(-1)).toBe('after')
  })

  it('volatile frames (and typing) are dropped while congested', async () => {
    const t = makeHub({ limits: { highWaterMark: 1 }, presence: { typingDebounceMs: 0 } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('presence:room')
    await alice.subscribe('presence:room')
    await t.settle()
    bob.pause()
    await t.hub.publish('presence:room', 'first', {})
    const dropped = t.hub.metrics().dropped
    await t.hub.publish('presence:room', 'cursor', { x: 1 }, { volatile: true })
    alice.typing('presence:room', true)
    await t.settle()
    await t.hub.publish('presence:room', 'second', {})
    bob.resume()
    await t.settle()
    expect(eventsOf(bob.messages('presence:room'))).toEqual(['first', 'second'])
    expect(bob.received('typing')).toEqual([])
    expect(t.hub.metrics().dropped).toBeGreaterThanOrEqual(dropped + 2)

    // Uncongested, both get through.
    await t.hub.publish('presence:room', 'cursor', { x: 2 }, { volatile: true })
    alice.typing('presence:room', false)
    await t.settle()
    expect(eventsOf(bob.messages('presence:room')).at(-1)).toBe('cursor')
  })

  const big = 'x'.repeat(1000) // frames of ~1.2 KB: two fit in 3000 bytes, three do not

  it("over maxQueuedBytes low priority is shed first, then the connection is closed with 4009 ('disconnect')", async () => {
    const t = makeHub({ limits: { highWaterMark: 1, maxQueuedBytes: 3000, slowConsumer: 'disconnect' } })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('chat:m')
    bob.pause()
    await t.hub.publish('chat:m', 'first', big)
    await t.hub.publish('chat:m', 'normal1', big)
    await t.hub.publish('chat:m', 'low1', big, { priority: 'low' })
    expect(t.hub.metrics().dropped).toBe(0)
    await t.hub.publish('chat:m', 'low2', big, { priority: 'low' }) // over: the low ones go
    expect(t.hub.metrics().dropped).toBe(2)
    expect(bob.closed).toBe(false)
    await t.hub.publish('chat:m', 'normal2', big)
    expect(bob.closed).toBe(false)
    await t.hub.publish('chat:m', 'normal3', big) // over, with nothing low left to shed
    expect(bob.closed).toBe(true)
    expect(bob.closeCode).toBe(4009)
    expect(await t.hub.connections.get(bob.connectionId)).toBeUndefined()
  })

  it("with slowConsumer 'drop' the queue is discarded and the connection stays", async () => {
    const t = makeHub({ limits: { highWaterMark: 1, maxQueuedBytes: 3000, slowConsumer: 'drop' } })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('chat:m')
    bob.pause()
    await t.hub.publish('chat:m', 'first', big)
    await t.hub.publish('chat:m', 'normal1', big)
    await t.hub.publish('chat:m', 'normal2', big)
    await t.hub.publish('chat:m', 'normal3', big) // over: the queue goes
    expect(bob.closed).toBe(false)
    expect(t.hub.metrics().dropped).toBe(3)
    bob.resume()
    await t.settle()
    expect(eventsOf(bob.messages('chat:m'))).toEqual(['first'])
    await t.hub.publish('chat:m', 'later', big)
    await t.settle()
    expect(eventsOf(bob.messages('chat:m'))).toEqual(['first', 'later'])
    expect((await bob.ping()).type).toBe('pong')
  })

  it("an at-least-once subscriber with slowConsumer 'drop' still gets every message, in order, after resume", async () => {
    const t = makeHub({ limits: { highWaterMark: 1, maxQueuedBytes: 3000, slowConsumer: 'drop' } })
    const bob = await t.connect({ userId: 'bob' })
    const r = attachReceiver(bob)
    await bob.subscribe('ack:slow')
    bob.pause()
    for (let n = 1; n <= 8; n++) await t.hub.publish('ack:slow', 'm', big)
    expect(t.hub.metrics().dropped).toBeGreaterThan(0)
    expect(bob.closed).toBe(false)
    bob.resume()
    await t.settle()
    expect(r.offsets('ack:slow').length).toBeLessThan(8)
    await t.advance(1000)
    expect(r.offsets('ack:slow')).toEqual(range(1, 8))
    await t.advance(120_000)
    expect(r.offsets('ack:slow')).toEqual(range(1, 8))
    expect(t.hub.metrics().deliveryFailed).toBe(0)
  })
})

// ---------------------------------------------------------------------------- 10. notifications

describe('notifications', () => {
  const NOTIFY = { batchThreshold: 2, batchWindowMs: 1000 }

  it("hub.notify sends a 'notification' message on the user's channel with a growing badge", async () => {
    const t = makeHub({ notifications: NOTIFY })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('private:user-bob')
    const r1 = await t.hub.notifications.send('bob', { text: 'a' })
    const r2 = await t.hub.notifications.send('bob', { text: 'b' })
    expect(r1).toEqual({ batched: false, offset: 1, badge: 1 })
    expect(r2).toEqual({ batched: false, offset: 2, badge: 2 })
    await t.settle()
    expect(bob.messages('private:user-bob').map((m) => [m.event, m.data])).toEqual([
      ['notification', { notification: { text: 'a' }, badge: 1 }],
      ['notification', { notification: { text: 'b' }, badge: 2 }],
    ])
    expect(await t.hub.notifications.unread('bob')).toBe(2)
  })

  it('the badge grows also for notifications sent concurrently', async () => {
    const t = makeHub({ notifications: NOTIFY })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('private:user-bob')
    const results = await Promise.all([t.hub.notifications.send('bob', { n: 1 }), t.hub.notifications.send('bob', { n: 2 })])
    expect(results.map((r) => r.badge)).toEqual([1, 2])
    await t.settle()
    expect(bob.messages('private:user-bob').map((m) => (m.data as { badge: number }).badge)).toEqual([1, 2])
    expect(await t.hub.notifications.unread('bob')).toBe(2)
  })

  it("more than batchThreshold within batchWindowMs arrive as one 'notification:batch'", async () => {
    const t = makeHub({ notifications: NOTIFY })
    const bob = await t.connect({ userId: 'bob' })
    const r = attachReceiver(bob) // acknowledges, so nothing is redelivered
    await bob.subscribe('private:user-bob')
    const results = []
    for (let n = 1; n <= 5; n++) results.push(await t.hub.notifications.send('bob', { n }))
    expect(results.map((x) => x.batched)).toEqual([false, false, true, true, true])
    expect(results.map((x) => x.badge)).toEqual([1, 2, 3, 4, 5])
    await t.settle()
    expect(eventsOf(bob.messages('private:user-bob'))).toEqual(['notification', 'notification'])

    await t.advance(1000)
    expect(bob.messages('private:user-bob')).toHaveLength(3)
    const batch = r.delivered.slice(2)
    expect(batch).toHaveLength(1)
    expect(batch[0]).toMatchObject({ event: 'notification:batch', offset: 3, data: { notifications: [{ n: 3 }, { n: 4 }, { n: 5 }], badge: 5 } })
    expect(await t.hub.notifications.unread('bob')).toBe(5)

    // A new window: sent one by one again.
    const next = await t.hub.notifications.send('bob', { n: 6 })
    expect(next).toEqual({ batched: false, offset: 4, badge: 6 })
  })

  it("reading lowers the badge and the user's connections get 'notifications:badge'", async () => {
    const t = makeHub({ notifications: { batchThreshold: 10, batchWindowMs: 1000 } })
    const bob = await t.connect({ userId: 'bob' })
    const otherTab = await t.connect({ userId: 'bob' })
    const alice = await t.connect({ userId: 'alice' })
    await bob.subscribe('private:user-bob')
    for (let n = 1; n <= 3; n++) await t.hub.notifications.send('bob', { n })
    await t.settle()

    bob.send({ type: 'read', channel: 'private:user-bob', offsets: [1, 2] })
    await t.settle()
    expect(bob.received('error')).toEqual([])
    expect(await t.hub.notifications.unread('bob')).toBe(1)
    for (const c of [bob, otherTab]) {
      const badges = c.messages().filter((m) => m.event === 'notifications:badge')
      expect(badges).toHaveLength(1)
      expect(badges[0]!.channel).toBeUndefined()
      expect(badges[0]!.data).toEqual({ count: 1 })
    }
    expect(alice.messages()).toEqual([])

    await t.hub.notifications.markRead('bob')
    await t.settle()
    expect(await t.hub.notifications.unread('bob')).toBe(0)
    expect(otherTab.messages().filter((m) => m.event === 'notifications:badge').map((m) => m.data)).toEqual([{ count: 1 }, { count: 0 }])
  })

  it('markNotificationsRead with the offset of a batch lowers the badge by the whole batch', async () => {
    const t = makeHub({ notifications: NOTIFY })
    const bob = await t.connect({ userId: 'bob' })
    for (let n = 1; n <= 5; n++) await t.hub.notifications.send('bob', { n })
    await t.advance(1000)
    expect(await t.hub.notifications.unread('bob')).toBe(5)
    await t.hub.notifications.markRead('bob', [3]) // the batch of three
    await t.settle()
    expect(await t.hub.notifications.unread('bob')).toBe(2)
    expect(bob.messages().filter((m) => m.event === 'notifications:badge').map((m) => m.data)).toEqual([{ count: 2 }])
  })

  it('an offline user gets its notifications on the next subscribe', async () => {
    const t = makeHub({ notifications: NOTIFY })
    await t.hub.notifications.send('bob', { text: 'a' })
    await t.hub.notifications.send('bob', { text: 'b' })
    const bob = await t.connect({ userId: 'bob' })
    const sub = await bob.subscribe('private:user-bob')
    expect(sub.recovered).toBe(true)
    await t.settle()
    expect(bob.messages('private:user-bob').map((m) => [m.offset, m.event, m.data])).toEqual([
      [1, 'notification', { notification: { text: 'a' }, badge: 1 }],
      [2, 'notification', { notification: { text: 'b' }, badge: 2 }],
    ])
  })
})
