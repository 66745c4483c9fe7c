import { describe, expect, it } from 'vitest'
import { createMemoryPresenceStore } from '@tidings/core'
import { delayed, presenceConformance } from '@tidings/core/conformance'
import { createTestHub } from '@tidings/core/testing'

presenceConformance('memory', () => createMemoryPresenceStore())

// The same contract when every answer comes late, as from a presence store across a network.
presenceConformance('memory, answering 2 ms late', () => delayed(createMemoryPresenceStore(), 2), { timeoutMs: 30_000 })

describe('createMemoryPresenceStore (memory only)', () => {
  it('forgets the heartbeat of a silent node that holds nothing (no unbounded growth)', () => {
    const p = createMemoryPresenceStore()
    for (let i = 0; i < 1000; i++) p.heartbeat(`node-${i}`, 0)
    expect(p.deadNodes(60_000, 30_000)).toEqual([])
    // a node forgotten that way and joining later is judged by its entries, not a stale heartbeat
    p.join({ channel: 'presence:x', connectionId: 'c1', userId: 'u', nodeId: 'node-1', state: 'online', data: {}, joinedAt: 100_000, updatedAt: 100_000 })
    expect(p.deadNodes(120_000, 30_000)).toEqual([])
    expect(p.deadNodes(130_001, 30_000)).toEqual(['node-1'])
  })
})

describe('a hub over a presence store answering 20 ms late (settle waits for the real work)', () => {
  it('settle() returns only once a join and a leave made over the slow store are announced', async () => {
    await using t = createTestHub({ presenceStore: delayed(createMemoryPresenceStore(), 20) })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('presence:lobby')
    bob.send({ type: 'subscribe', channel: 'presence:lobby', id: 'b1' })
    await t.settle()
    expect(alice.received('presence:join').map((f) => f.user.id)).toEqual(['bob'])
    bob.close()
    await t.settle()
    expect(alice.received('presence:leave').map((f) => f.user.id)).toEqual(['bob'])
    expect((await t.hub.presence.get('presence:lobby')).users.map((u) => u.id)).toEqual(['alice'])
  })
})
