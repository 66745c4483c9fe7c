import { afterEach, describe, expect, it } from 'vitest'
import { type Broker, type ClusterMessage, type HubEvents, type HubOptions, type MessageFrame, createMemoryStore, createReceiver } from '@tidings/core'
import { createManualClock, createMemoryBus, createTestHub, type MemoryClient, type TestHub } from '@tidings/core/testing'

/*
 * The order of an at-least-once channel on a node that receives publishes from several nodes:
 * a frame's `prev` never names an offset range the node has not seen go by. A message beyond a
 * gap waits for the gap to fill (the late message arrives over the bus) or, after delivery.gapWaitMs,
 * for the gap to be read from the shared store.
 */

/** A broker end whose deliveries of chosen messages are held back (and released, or dropped) by the test. */
function gated(inner: Broker) {
  let deliver: ((m: ClusterMessage) => void) | undefined
  let gate: ((m: ClusterMessage) => boolean) | undefined
  const held: ClusterMessage[] = []
  const broker: Broker = {
    start: (nodeId, fn) => {
      deliver = fn
      return inner.start(nodeId, (m) => {
        if (gate?.(m)) held.push(m)
        else fn(m)
      })
    },
    publish: (m) => inner.publish(m),
    subscribe: (c) => inner.subscribe(c),
    unsubscribe: (c) => inner.unsubscribe(c),
    close: () => inner.close(),
  }
  return {
    broker,
    /** Hold back the channel messages whose data has one of these `n`. */
    holdBack(...ns: number[]) {
      gate = (m) => m.kind === 'dispatch' && m.frame.type === 'message' && ns.includes((m.frame.data as { n?: number } | null)?.n ?? -1)
    },
    /** Deliver what was held back, in the order it came. */
    release() {
      gate = undefined
      for (const m of held.splice(0)) deliver!(m)
    },
    /** Forget what was held back: lost on the bus. */
    drop() {
      gate = undefined
      held.length = 0
    },
  }
}

const CHANNELS: HubOptions['channels'] = {
  'room:*': { subscribe: true, publish: true, delivery: 'at-least-once' },
  'tiny:*': { subscribe: true, publish: true, delivery: 'at-least-once', history: { maxCount: 2 } },
}

// Redelivery far away: whatever reaches an application here got there without it.
/** delivery.gapWaitMs of the hubs here (not the default 250, so the option is what decides). */
const GAP_WAIT_MS = 400
const DELIVERY = { gapWaitMs: GAP_WAIT_MS, ackTimeoutMs: 60_000, maxBackoffMs: 60_000 }

describe('at-least-once order across nodes', () => {
  let open: TestHub[] = []
  afterEach(async () => {
    for (const h of open.splice(0)) await h.close()
  })

  /** Hub A (whose bus end the test gates) and hub B, one manual clock, one store, one bus. */
  const twoHubs = () => {
    const bus = createMemoryBus()
    const store = createMemoryStore()
    const clock = createManualClock()
    const gate = gated(bus.broker())
    const a = createTestHub({ clock, store, broker: gate.broker, channels: CHANNELS, delivery: DELIVERY, nodeId: 'a' })
    const b = createTestHub({ clock, store, broker: bus.broker(), channels: CHANNELS, delivery: DELIVERY, nodeId: 'b' })
    open.push(a, b)
    const settle = async () => {
      for (let i = 0; i < 3; i++) {
        await a.settle()
        await b.settle()
      }
    }
    return { a, b, gate, clock, settle }
  }

  /** A subscriber on `hub` whose frames go through a receiver; `got` is what its application got. */
  const subscriber = async (hub: TestHub, channel: string, userId: string, filter?: unknown) => {
    let client: MemoryClient | undefined
    const got: number[] = []
    const receiver = createReceiver({
      deliver: (f) => got.push((f.data as { n: number }).n),
      ack: (ch, offset) => client?.ack(ch, offset),
    })
    client = await hub.connect({ userId })
    client.on('frame', (f) => {
      if (f.type === 'subscribed' && f.channel === channel) receiver.subscribed(f)
      else if (f.type === 'message' && f.channel === channel) receiver.message(f as MessageFrame)
    })
    await client.subscribe(channel, filter === undefined ? {} : { filter: filter as never })
    return { client, got, receiver }
  }

  it('a message that overtook one still on the bus from another node waits for it, then both go out in offset order with no prev (was: sent first with prev naming the late one, which the receiver then dropped as a duplicate)', async () => {
    const { a, b, gate, settle } = twoHubs()
    const s = await subscriber(a, 'room:1', 's')
    await settle()
    gate.holdBack(1)
    expect((await b.hub.publish('room:1', 'say', { n: 1 })).offset).toBe(1)
    expect((await a.hub.publish('room:1', 'say', { n: 2 })).offset).toBe(2)
    await settle()
    expect(s.client.messages('room:1'), 'offset 2 waits on the node for offset 1').toEqual([])
    gate.release()
    await settle()
    expect(s.client.messages('room:1').map((m) => [m.offset, m.prev])).toEqual([
      [1, undefined],
      [2, undefined],
    ])
    expect(s.got).toEqual([1, 2])
    expect(a.hub.metrics().redelivered).toBe(0)
  })

  it('a message lost on the bus is read from the store after the gap wait and delivered before the one that overtook it (was: never delivered, the later one skipped it with prev)', async () => {
    const { a, b, gate, settle } = twoHubs()
    const s = await subscriber(a, 'room:2', 's')
    await settle()
    gate.holdBack(1)
    await b.hub.publish('room:2', 'say', { n: 1 })
    await b.hub.publish('room:2', 'say', { n: 2 })
    await settle()
    gate.drop()
    expect(s.client.messages('room:2')).toEqual([])
    await a.advance(GAP_WAIT_MS - 1)
    await settle()
    expect(s.client.messages('room:2'), 'nothing before the gap wait is over').toEqual([])
    await a.advance(1)
    await settle()
    expect(s.client.messages('room:2').map((m) => [m.offset, m.prev])).toEqual([
      [1, undefined],
      [2, undefined],
    ])
    expect(s.got).toEqual([1, 2])
    expect(a.hub.metrics().redelivered).toBe(0)
    // The lost message does not come twice when the bus brings a copy after all.
    await b.hub.publish('room:2', 'say', { n: 3 })
    await settle()
    expect(s.got).toEqual([1, 2, 3])
  })

  it('a gap read from the store skips, with prev, what a subscriber’s filter or the publish’s exclusions kept from it, so its receiver goes on without waiting', async () => {
    const { a, b, gate, settle } = twoHubs()
    const all = await subscriber(a, 'room:3', 'all')
    const excluded = await subscriber(a, 'room:3', 'excluded')
    const filtered = await subscriber(a, 'room:3', 'filtered', { field: 'event', op: 'eq', value: 'say' })
    await settle()
    gate.holdBack(1, 2)
    await b.hub.publish('room:3', 'say', { n: 1 }, { exclude: { users: ['excluded'] } })
    await b.hub.publish('room:3', 'shout', { n: 2 })
    await a.hub.publish('room:3', 'say', { n: 3 })
    await settle()
    gate.drop()
    await a.advance(GAP_WAIT_MS)
    await settle()
    expect(all.got).toEqual([1, 2, 3])
    expect(excluded.client.messages('room:3').map((m) => [m.offset, m.prev])).toEqual([
      [2, 0],
      [3, undefined],
    ])
    expect(excluded.got).toEqual([2, 3])
    expect(filtered.client.messages('room:3').map((m) => [m.offset, m.prev])).toEqual([
      [1, undefined],
      [3, 1],
    ])
    expect(filtered.got).toEqual([1, 3])
    for (const x of [all, excluded, filtered]) expect(x.receiver.held('room:3')).toBe(0)
  })

  it('a gap the store dropped by retention before the node saw it is reported (delivery:failed, subscribed past it) instead of skipped in silence, and what follows is not held forever', async () => {
    const { a, b, gate, settle } = twoHubs()
    const s = await subscriber(a, 'tiny:1', 's')
    await settle()
    const failed: Array<Parameters<HubEvents['delivery:failed']>[0]> = []
    a.hub.on('delivery:failed', (e) => failed.push(e))
    gate.holdBack(1, 2)
    for (let n = 1; n <= 4; n++) await b.hub.publish('tiny:1', 'say', { n })
    await settle()
    gate.drop()
    // The store keeps 2 messages: offsets 1 and 2 are gone when the gap is read.
    await a.advance(GAP_WAIT_MS)
    await settle()
    expect(failed.map((e) => [e.fromOffset, e.toOffset, e.reason])).toEqual([[1, 2, 'dropped by retention']])
    expect(s.client.received('subscribed').at(-1)).toMatchObject({ position: { offset: 2 }, recovered: false })
    expect(s.got).toEqual([3, 4])
    expect(s.receiver.held('tiny:1')).toBe(0)
  })

  it('an awaitAcks publish held behind a gap still counts, waits for and lists the subscriber it reaches when its turn comes', async () => {
    const { a, b, gate, settle } = twoHubs()
    const s = await subscriber(a, 'room:4', 's')
    await settle()
    gate.holdBack(1)
    await b.hub.publish('room:4', 'say', { n: 1 })
    let result: Awaited<ReturnType<typeof a.hub.publish>> | undefined
    void a.hub.publish('room:4', 'say', { n: 2 }, { awaitAcks: 5_000 }).then((r) => (result = r))
    await settle()
    expect(s.client.messages('room:4')).toEqual([])
    gate.release()
    await settle()
    await a.advance(2_000)
    await settle()
    expect(s.got).toEqual([1, 2])
    expect(result?.recipients).toBe(1)
    expect(result?.acknowledged?.map((r) => r.userId)).toEqual(['s'])
  })
})
