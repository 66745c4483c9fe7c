import { describe, expect, it } from 'vitest'
import { type MessageStore, RealtimeError, clusterMessageProblem, createManualClock, createMemoryBus, createMemoryPresenceStore, createMemoryStore } from '@tidings/core'
import { createTestHub } from '@tidings/core/testing'

// Erasing one user (GDPR) through the hub: hub.eraseUser over the memory store (the store's own
// contract is in the store conformance suite, run over every store that has eraseUser).

const CHAT = { 'chat:*': { subscribe: true, publish: 'authenticated', revisions: 'own', offline: {} } } as const

describe('hub.eraseUser', () => {
  it('makes the user’s messages tombstones in every channel, drops its offline queues, channel list and analytics; others keep theirs', async () => {
    await using t = createTestHub({ channels: CHAT })
    const erin = await t.connect({ userId: 'erin' })
    const bob = await t.connect({ userId: 'bob' })
    for (const ch of ['chat:1', 'chat:2']) {
      await erin.subscribe(ch)
      await bob.subscribe(ch)
    }
    const first = await erin.publish('chat:1', 'say', { text: 'my address is 1 Main St' })
    await erin.edit('chat:1', first.offset!, { text: 'my address is 2 Main St' })
    await bob.publish('chat:1', 'say', { text: 'hi erin' })
    await erin.publish('chat:2', 'say', { text: 'call me on 555' }, { idempotencyKey: 'k1' })
    await t.settle()
    erin.close()
    bob.close()
    await t.settle()
    expect((await t.hub.channels.forUser('erin')).map((c) => c.name).sort()).toEqual(['chat:1', 'chat:2'])
    expect(t.hub.analytics().users.top.map((u) => u.userId)).toContain('erin')

    const erased = await t.hub.eraseUser('erin')
    expect(erased).toEqual({ messages: 3, cursors: 2, keys: 1 })
    const h1 = (await t.hub.channel('chat:1').history()).messages
    expect(h1.map((m) => [m.offset, m.deleted === true, m.sender])).toEqual([
      [1, true, undefined],
      [2, true, undefined],
      [3, false, 'bob'],
    ])
    const h2 = (await t.hub.channel('chat:2').history()).messages
    expect(h2.map((m) => [m.offset, m.data, m.deleted])).toEqual([[1, null, true]])
    expect(JSON.stringify([h1, h2])).not.toMatch(/Main St|555/)
    expect(await t.hub.channels.forUser('erin')).toEqual([])
    expect((await t.hub.channels.forUser('bob')).map((c) => c.name).sort()).toEqual(['chat:1', 'chat:2'])
    expect(t.hub.analytics().users.top.map((u) => u.userId)).not.toContain('erin')
    // a client searching the history finds nothing of erin's
    const reader = await t.connect({ userId: 'bob' })
    await reader.subscribe('chat:1')
    expect(await reader.search('chat:1', 'Main')).toEqual([])
    expect((await reader.search('chat:1', 'erin')).map((m) => m.offset)).toEqual([3])
    // a second erasure finds nothing new
    expect(await t.hub.eraseUser('erin')).toEqual({ messages: 0, cursors: 0, keys: 0 })
  })

  it('refuses an empty user id and a store that cannot erase (RT_007), changing nothing', async () => {
    await using t = createTestHub({ channels: CHAT })
    for (const bad of ['', undefined, 42]) {
      const err = await t.hub.eraseUser(bad as unknown as string).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(RealtimeError)
      expect((err as RealtimeError).code).toBe('RT_007')
    }
    const inner = createMemoryStore()
    // the same store without the optional method
    const plain: MessageStore = {
      append: (c, m, o) => inner.append(c, m, o),
      read: (c, o) => inner.read(c, o),
      position: (c) => inner.position(c),
      cursor: (c, u) => inner.cursor(c, u),
      commit: (c, u, o) => inner.commit(c, u, o),
      cursors: (c) => inner.cursors(c),
    }
    await using p = createTestHub({ store: plain, channels: CHAT })
    const ada = await p.connect({ userId: 'ada' })
    await ada.subscribe('chat:1')
    await ada.publish('chat:1', 'say', { text: 'kept' })
    const err = await p.hub.eraseUser('ada').catch((e: unknown) => e)
    expect((err as RealtimeError).code).toBe('RT_007')
    expect((err as RealtimeError).message).toContain('eraseUser')
    expect((await p.hub.channel('chat:1').history()).messages.map((m) => m.data)).toEqual([{ text: 'kept' }])
  })

  it('on a cluster, one call erases the shared store once and every node forgets the user’s analytics', async () => {
    const clock = createManualClock(0)
    const bus = createMemoryBus()
    const store = createMemoryStore()
    const presenceStore = createMemoryPresenceStore()
    const make = (nodeId: string) => createTestHub({ nodeId, clock, broker: bus.broker(), store, presenceStore, channels: CHAT })
    await using a = make('a')
    await using b = make('b')
    const onA = await a.connect({ userId: 'erin' })
    const onB = await b.connect({ userId: 'erin' })
    await onB.subscribe('chat:1')
    await onB.publish('chat:1', 'say', { text: 'from b' })
    onA.close()
    onB.close()
    await a.settle()
    await b.settle()
    expect(a.hub.analytics().users.top.map((u) => u.userId)).toContain('erin')
    expect(b.hub.analytics().users.top.map((u) => u.userId)).toContain('erin')
    expect(await a.hub.eraseUser('erin')).toMatchObject({ messages: 1 })
    await a.settle()
    await b.settle()
    expect(a.hub.analytics().users.top.map((u) => u.userId)).not.toContain('erin')
    expect(b.hub.analytics().users.top.map((u) => u.userId)).not.toContain('erin')
    expect((await b.hub.channel('chat:1').history()).messages.map((m) => m.deleted)).toEqual([true])
  })

  it('the forget request is checked like every cluster message: a user id is required', () => {
    const request = (query: unknown) => ({ kind: 'request', origin: 'n1', id: 'n1:1', query })
    expect(clusterMessageProblem(request({ op: 'forget', userId: 'erin' }))).toBeUndefined()
    for (const bad of [{ op: 'forget' }, { op: 'forget', userId: '' }, { op: 'forget', userId: 7 }]) expect(clusterMessageProblem(request(bad))).toBe('invalid forget query')
  })
})
