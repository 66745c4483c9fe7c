import { describe, expect, it } from 'vitest'
import { createMemoryBus, createTestHub } from '@tidings/core/testing'
import { brokerConformance, delayed } from '@tidings/core/conformance'

brokerConformance('memory bus', (count) => {
  const bus = createMemoryBus()
  return Array.from({ length: count }, () => bus.broker())
})

// The same contract when every call (start, publish, close) answers late, as a broker across a network does.
brokerConformance(
  'memory bus, answering 2 ms late',
  (count) => {
    const bus = createMemoryBus()
    return Array.from({ length: count }, () => delayed(bus.broker(), 2))
  },
  { timeoutMs: 30_000 },
)

describe('two hubs on a bus answering 20 ms late (settle waits for the real work)', () => {
  it('a message published on one hub reaches the other hub’s subscriber once both have settled', async () => {
    const bus = createMemoryBus()
    await using one = createTestHub({ broker: delayed(bus.broker(), 20) })
    await using two = createTestHub({ broker: delayed(bus.broker(), 20) })
    await one.settle()
    await two.settle()
    const alice = await one.connect({ userId: 'alice' })
    const bob = await two.connect({ userId: 'bob' })
    await bob.subscribe('public:news')
    await alice.subscribe('public:news')
    alice.send({ type: 'message', channel: 'public:news', event: 'say', data: { n: 1 }, id: 'p1' })
    await one.settle()
    await two.settle()
    expect(bob.messages('public:news').map((m) => m.data)).toEqual([{ n: 1 }])
  })
})
