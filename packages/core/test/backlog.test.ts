import { createTestHub } from '@tidings/core/testing'
import { describe, expect, it } from 'vitest'

/*
 * Clients that stop reading: one connection's queue is bounded (`maxQueuedBytes`), and so are all
 * of them together (`maxTotalQueuedBytes`): past the total, the largest queues go first.
 */
describe('the hub-wide outbound budget', () => {
  it('paused clients cannot queue more than maxTotalQueuedBytes together: the largest queues are cut with 4009, the others stay', async () => {
    const budget = 200_000
    await using t = createTestHub({ limits: { highWaterMark: 10_000, maxQueuedBytes: 1_000_000, maxTotalQueuedBytes: budget } })
    const readers = await Promise.all(Array.from({ length: 6 }, (_, i) => t.connect({ userId: `u${i}` })))
    for (const c of readers) await c.subscribe('public:feed')
    // two read nothing at all, two read slowly (their queues stay smaller), two keep reading
    for (const c of readers.slice(0, 4)) c.pause()
    const data = 'x'.repeat(5_000)
    for (let i = 0; i < 40; i++) {
      await t.hub.publish('public:feed', 'e', { data, i })
      if (i % 4 === 0) for (const c of readers.slice(2, 4)) (c.resume(), c.pause())
    }
    await t.settle()
    expect(t.hub.metrics().queuedBytes).toBeLessThanOrEqual(budget)
    // the two that never read had the largest queues: cut as slow consumers
    expect(readers.slice(0, 2).map((c) => c.closeCode)).toEqual([4009, 4009])
    // the readers were never at risk
    expect(readers.slice(4).map((c) => c.closed)).toEqual([false, false])
    expect(readers[4]!.received('message')).toHaveLength(40)
  })

  it('with slowConsumer "drop", the largest queues are emptied instead and their connections stay', async () => {
    await using t = createTestHub({ limits: { highWaterMark: 10_000, maxQueuedBytes: 1_000_000, maxTotalQueuedBytes: 100_000, slowConsumer: 'drop' } })
    const a = await t.connect({ userId: 'a' })
    const b = await t.connect({ userId: 'b' })
    for (const c of [a, b]) {
      await c.subscribe('public:feed')
      c.pause()
    }
    for (let i = 0; i < 40; i++) await t.hub.publish('public:feed', 'e', { data: 'x'.repeat(5_000), i })
    await t.settle()
    expect(t.hub.metrics().queuedBytes).toBeLessThanOrEqual(100_000)
    expect([a.closed, b.closed]).toEqual([false, false])
    expect(t.hub.metrics().dropped).toBeGreaterThan(0)
  })
})
