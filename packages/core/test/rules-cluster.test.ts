import { createMemoryBus, createMemoryPresenceStore, createMemoryStore } from '@tidings/core'
import { type TestHub, createTestHub } from '@tidings/core/testing'
import { afterEach, describe, expect, it } from 'vitest'

let open: TestHub[] = []
afterEach(async () => {
  for (const t of open) await t.close()
  open = []
})

describe('channel rules on a cluster', () => {
  it('a subscriber whose presence rule denies it gets no presence or typing frames from members on another node', async () => {
    const bus = createMemoryBus()
    const store = createMemoryStore()
    const presenceStore = createMemoryPresenceStore()
    const channels = { 'lobby:*': { subscribe: 'authenticated', presence: true, rules: { presence: "auth.roles.includes('staff')" } } } as const
    const make = (nodeId: string) => createTestHub({ nodeId, broker: bus.broker(), store, presenceStore, channels, nodes: { heartbeatMs: 0 } })
    const [a, b] = [make('a'), make('b')]
    open.push(a, b)
    // on node b: bob may not see presence, carol (staff) may
    const bob = await b.connect({ userId: 'bob' })
    const carol = await b.connect({ identity: { userId: 'carol', roles: ['staff'] } })
    await bob.subscribe('lobby:1')
    await carol.subscribe('lobby:1')
    await b.settle()
    // on node a: alice (staff) joins, updates, types, leaves
    const alice = await a.connect({ identity: { userId: 'alice', roles: ['staff'] } })
    await alice.subscribe('lobby:1', { presence: { name: 'Alice' } })
    await a.settle()
    await b.settle()
    await alice.updatePresence('lobby:1', { state: 'away' })
    alice.typing('lobby:1', true)
    await a.settle()
    await b.settle()
    await alice.unsubscribe('lobby:1')
    await a.settle()
    await b.settle()
    // the staff member on node b saw it all (so the frames did cross), bob saw none of it
    expect(carol.received('presence:join').map((f) => f.user.id)).toContain('alice')
    expect(carol.received('presence:update').length).toBeGreaterThan(0)
    expect(carol.received('typing').length).toBeGreaterThan(0)
    expect(carol.received('presence:leave').map((f) => f.user.id)).toContain('alice')
    expect(bob.received('presence:join')).toEqual([])
    expect(bob.received('presence:update')).toEqual([])
    expect(bob.received('presence:leave')).toEqual([])
    expect(bob.received('typing')).toEqual([])
    // messages still reach bob across nodes
    const again = await a.connect({ identity: { userId: 'alice', roles: ['staff'] } })
    await again.subscribe('lobby:1')
    await again.publish('lobby:1', 'hello', {})
    await a.settle()
    await b.settle()
    expect(bob.messages('lobby:1').map((m) => m.event)).toContain('hello')
  })
})
