import { createManualClock, createMemoryBus, createMemoryPresenceStore, createMemoryStore } from '@tidings/core'
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
})
