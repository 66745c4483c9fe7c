import type { MessageFrame } from '@tidings/core'
import { describe, expect, it } from 'vitest'
import { RealtimeError } from '../src/index.js'
import { MemoryNetwork, sleep, until, trackClients, userTokens } from './memory-network.js'


let net: MemoryNetwork
const track = trackClients(() => net)

describe('Realtime over an in-memory hub', () => {
  it('connects, subscribes, receives messages by event name, publishes with an answer', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    const states: string[] = []
    rt.on('state', (s) => states.push(s))
    const connected = new Promise((r) => rt.once('connected', r))
    const ch = rt.channel('public:news')
    const sub = await ch.subscribe()
    expect(sub.position).toEqual({ epoch: expect.any(String), offset: 0 })
    expect(await connected).toMatchObject({ userId: 'alice', transport: 'websocket' })
    expect(rt.state).toBe('connected')
    expect(rt.transport).toBe('websocket')
    expect(states).toEqual(['connected'])

    const got: unknown[] = []
    const all: MessageFrame[] = []
    ch.on('post', (data: unknown) => got.push(data))
    ch.on('message', (m) => all.push(m))
    await net.hub.publish('public:news', 'post', { n: 1 })
    await net.hub.publish('public:news', 'other', { n: 2 })
    await until(() => all.length === 2)
    expect(got).toEqual([{ n: 1 }])
    expect(all.map((m) => m.offset)).toEqual([1, 2])

    const r = await ch.send('post', { n: 3 })
    expect(r).toMatchObject({ offset: 3, messageId: expect.any(String), duplicate: false })
  })

  it('rejects a refused request with a RealtimeError and a refused subscribe too', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    await expect(rt.channel('nope:x').send('e', 1)).rejects.toMatchObject({ name: 'RealtimeError', code: 'RT_004' })
    const err = await rt.channel('private:user-bob').subscribe().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(RealtimeError)
    expect((err as RealtimeError).code).toBe('RT_003')
    expect(rt.channel('private:user-bob').state).toBe('unsubscribed')
    expect(rt.state).toBe('connected')
  })

  it('presence: join, update, typing, get, leave', async () => {
    net = new MemoryNetwork(userTokens)
    const alice = track(net.client({ auth: 'user:alice' }))
    const bob = track(net.client({ auth: 'user:bob' }))
    const a = alice.channel('presence:lobby', { presence: { name: 'Alice' } })
    const b = bob.channel('presence:lobby', { presence: { name: 'Bob' } })
    const first = await a.subscribe()
    expect(first.presence?.count).toBe(1)
    const joins: string[] = []
    const updates: unknown[] = []
    const typing: unknown[] = []
    const leaves: string[] = []
    a.on('presence:join', (m) => joins.push(m.id))
    a.on('presence:update', (m) => updates.push([m.id, m.state, m.data]))
    a.on('typing', (t) => typing.push(t))
    a.on('presence:leave', (m) => leaves.push(m.id))
    await b.subscribe()
    await until(() => joins.length === 1)
    expect(joins).toEqual(['bob'])
    const me = await b.updatePresence({ name: 'Bobby' }, 'away')
    expect(me).toMatchObject({ id: 'bob', state: 'away', data: { name: 'Bobby' } })
    await until(() => updates.length === 1)
    expect(updates).toEqual([['bob', 'away', { name: 'Bobby' }]])
    b.typing()
    await until(() => typing.length === 1)
    expect(typing).toEqual([{ userId: 'bob', active: true }])
    const snapshot = await a.getPresence()
    expect(snapshot.users.map((u) => u.id).sort()).toEqual(['alice', 'bob'])
    await b.unsubscribe()
    await until(() => leaves.length === 1)
    expect(b.state).toBe('unsubscribed')
  })

  it('applies the server-side filter and the client-side filter', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    const ch = rt.channel('public:prices', {
      filter: { field: 'data.price', op: 'gt', value: 10 },
      clientFilter: (m) => (m.data as { price: number }).price !== 20,
    })
    const seen: number[] = []
    ch.on('message', (m) => seen.push((m.data as { price: number }).price))
    await ch.subscribe()
    for (const price of [5, 20, 30, 8, 40]) await net.hub.publish('public:prices', 'tick', { price })
    await until(() => seen.length === 2)
    await sleep(10)
    expect(seen).toEqual([30, 40])
  })

  it('drops duplicate frames (receiver dedup) and acknowledges at-least-once messages in batches', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice', ackIntervalMs: 30 }))
    await until(() => rt.state === 'connected')
    const link = net.last()
    link.duplicateMessages = true
    const ch = rt.channel('private:user-alice')
    const got: number[] = []
    ch.on('message', (m) => got.push(m.offset!))
    const sub = await ch.subscribe()
    expect(sub.delivery).toBe('at-least-once')
    for (let i = 0; i < 5; i++) await net.hub.publish('private:user-alice', 'n', { i })
    await until(() => got.length === 5)
    await until(() => link.sent.some((f) => f.type === 'ack'))
    await sleep(60)
    expect(got).toEqual([1, 2, 3, 4, 5])
    const acks = link.sent.filter((f) => f.type === 'ack')
    // One batch for the burst (duplicates re-acknowledge the same offset in the same batch).
    expect(acks.length).toBeLessThanOrEqual(2)
    expect(acks.at(-1)).toEqual({ type: 'ack', channel: 'private:user-alice', offset: 5 })
    expect(await net.hub.channel('private:user-alice').deliveredTo(5)).toEqual(['alice'])
  })

  it('sends read receipts and receives them', async () => {
    net = new MemoryNetwork({ ...userTokens, channels: { 'chat:*': { subscribe: 'authenticated', publish: 'authenticated', receipts: true } } })
    const alice = track(net.client({ auth: 'user:alice' }))
    const bob = track(net.client({ auth: 'user:bob' }))
    const a = alice.channel('chat:1')
    const b = bob.channel('chat:1')
    await a.subscribe()
    await b.subscribe()
    const receipts: unknown[] = []
    a.on('receipt', (r) => receipts.push([r.status, r.userId, r.offsets]))
    const got: number[] = []
    b.on('message', (m) => got.push(m.offset!))
    const { offset } = await a.send('text', 'hi')
    await until(() => got.length === 1)
    b.read([offset!])
    await until(() => receipts.length === 1)
    expect(receipts).toEqual([['read', 'bob', [1]]])
  })

  it('routes messages without a channel to the client', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    await until(() => rt.state === 'connected')
    const direct: string[] = []
    rt.on('message', (m) => direct.push(m.event))
    await net.hub.broadcast({ to: { users: ['alice'] }, event: 'hello', data: 1 })
    await until(() => direct.length === 1)
    expect(direct).toEqual(['hello'])
  })

  it('a listener that throws reaches the error listeners; the others still run', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    const ch = rt.channel('public:x')
    const errors: unknown[] = []
    const seen: number[] = []
    rt.on('error', (e) => errors.push(e))
    ch.on('message', () => {
      throw new Error('boom')
    })
    ch.on('message', (m) => seen.push(m.offset!))
    rt.on('connected', () => {
      throw new Error('boom 2')
    })
    await ch.subscribe()
    await net.hub.publish('public:x', 'e', 1)
    await net.hub.publish('public:x', 'e', 2)
    await until(() => seen.length === 2)
    expect(errors.map((e) => (e as Error).message).sort()).toEqual(['boom', 'boom', 'boom 2'])
    // An error listener that throws is swallowed.
    rt.on('error', () => {
      throw new Error('in error listener')
    })
    await net.hub.publish('public:x', 'e', 3)
    await until(() => seen.length === 3)
  })

  it('a kick ends the subscription and it is not made again after a reconnect', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    const ch = rt.channel('presence:room')
    await ch.subscribe()
    const ended: unknown[] = []
    ch.on('unsubscribed', (i) => ended.push(i.reason))
    await net.hub.channel('presence:room').kick('alice', 'bye')
    await until(() => ended.length === 1)
    expect(ended).toEqual(['bye'])
    expect(ch.state).toBe('unsubscribed')
    net.last().kill()
    await until(() => rt.state === 'connected' && net.open.length === 1)
    await sleep(20)
    expect(net.last().sent.filter((f) => f.type === 'subscribe')).toEqual([])
  })
})
