import { describe, expect, it } from 'vitest'
import { createMemoryPresenceStore } from '@tidings/core'
import { delayed, presenceConformance } from '@tidings/core/conformance'

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
