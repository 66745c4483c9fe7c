import { describe, expect, it } from 'vitest'
import { createTestHub } from '@tidings/core/testing'

describe('smoke', () => {
  it('subscribes, publishes and receives', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const sub = await bob.subscribe('public:news')
    expect(sub.position?.offset).toBe(0)
    const r = await alice.publish('public:news', 'hello', { text: 'hi' })
    expect(r.offset).toBe(1)
    await t.settle()
    expect(bob.messages('public:news').map((m) => m.data)).toEqual([{ text: 'hi' }])
    const p = await bob.subscribe('presence:lobby', { presence: { name: 'Bob' } })
    expect(p.presence?.count).toBe(1)
  })
})
