import { describe, expect, it } from 'vitest'
import { rejectsWith, testHubs } from './helpers.js'
import type { MemoryClient, TestHub } from '@tidings/core/testing'
import {
  type ConnectionInfo,
  FILTER_LIMITS,
  FilterError,
  type FilterNode,
  type HubOptions,
  type MessageFrame,
  RECIPIENT_FILTER_ROOTS,
  compileFilter,
  createMemoryBus,
  createMemoryPresenceStore,
} from '@tidings/core'

// ---------------------------------------------------------------------------- helpers

const makeHub = testHubs()

const PENDING = Symbol('pending')

/** What a promise settled to after the hub settled, or PENDING if it is still waiting. */
async function settleRace<T>(t: TestHub, p: Promise<T>): Promise<T | typeof PENDING> {
  let out: T | typeof PENDING = PENDING
  let error: unknown
  let failed = false
  p.then(
    (v) => {
      out = v
    },
    (e: unknown) => {
      failed = true
      error = e
    },
  )
  await t.settle()
  await t.settle()
  if (failed) throw error
  return out
}

function errors(c: MemoryClient) {
  return c.received('error')
}

function lastError(c: MemoryClient) {
  return errors(c).at(-1)
}

/** The connection still answers requests and is open. */
async function stillWorks(c: MemoryClient): Promise<void> {
  expect(c.closed).toBe(false)
  const pong = await c.ping()
  expect(pong.type).toBe('pong')
}

const start = Date.UTC(2026, 0, 1)

// ---------------------------------------------------------------------------- connection lifecycle

describe('connection lifecycle and registry', () => {
  it('sends a connected frame first, with the connection id, user id and limits', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    expect(alice.frames).toHaveLength(1)
    const f = alice.frames[0]!
    expect(f).toEqual({
      type: 'connected',
      v: 1,
      connectionId: alice.connectionId,
      userId: 'alice',
      limits: { maxMessageSize: 128 * 1024, messagesPerSecond: 100, maxSubscriptions: 100 },
    })
    expect(alice.connectionId).toMatch(new RegExp(`^${t.hub.nodeId}\\.`))
    const bob = await t.connect({ userId: 'bob' })
    expect(bob.connectionId).not.toBe(alice.connectionId)
  })

  it('anonymous connections are accepted without a user id', async () => {
    const t = makeHub()
    const anon = await t.connect()
    const f = anon.received('connected')[0]!
    expect(f.userId).toBeUndefined()
    expect((await t.hub.connections.get(anon.connectionId))?.userId).toBeUndefined()
  })

  it('lists connections, by user and by channel', async () => {
    const t = makeHub()
    const a1 = await t.connect({ userId: 'alice' })
    const a2 = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await a2.subscribe('public:news')
    await bob.subscribe('public:news')

    expect(t.hub.connections.local().map((c) => c.id).sort()).toEqual([a1.connectionId, a2.connectionId, bob.connectionId].sort())
    expect(t.hub.connections.local({ userId: 'alice' }).map((c) => c.id).sort()).toEqual([a1.connectionId, a2.connectionId].sort())
    expect(t.hub.connections.local({ userId: 'bob' }).map((c) => c.id)).toEqual([bob.connectionId])
    expect(t.hub.connections.local({ userId: 'nobody' })).toEqual([])
    expect(t.hub.connections.local({ channel: 'public:news' }).map((c) => c.id).sort()).toEqual([a2.connectionId, bob.connectionId].sort())
    expect(t.hub.connections.local({ userId: 'alice', channel: 'public:news' }).map((c) => c.id)).toEqual([a2.connectionId])
  })

  it('getConnection returns id, user, channels, times, user agent, transport and ip', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice', ip: '10.1.2.3', userAgent: 'TestAgent/1.0' })
    await t.advance(1500)
    await alice.subscribe('public:a')
    await alice.subscribe('presence:b')
    await t.advance(2500)
    await alice.ping()

    const info = (await t.hub.connections.get(alice.connectionId))!
    expect(info).toEqual<ConnectionInfo>({
      id: alice.connectionId,
      userId: 'alice',
      channels: ['public:a', 'presence:b'],
      connectedAt: start,
      lastSeen: start + 4000,
      userAgent: 'TestAgent/1.0',
      transport: 'memory',
      ip: '10.1.2.3',
      nodeId: t.hub.nodeId,
    })
    expect(await t.hub.connections.get('no-such-connection')).toBeUndefined()

    // the default memory client metadata
    const bob = await t.connect({ userId: 'bob' })
    const b = (await t.hub.connections.get(bob.connectionId))!
    expect(b.ip).toBe('127.0.0.1')
    expect(b.userAgent).toBe('tidings-memory-client')
    expect(b.channels).toEqual([])
  })

  it('the info is a copy: changing it does not change the hub', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('public:a')
    const info = (await t.hub.connections.get(alice.connectionId))!
    info.channels.push('public:fake')
    expect((await t.hub.connections.get(alice.connectionId))!.channels).toEqual(['public:a'])
  })

  it('hub.disconnect closes one connection with 4000 and forgets it', async () => {
    const t = makeHub()
    const a1 = await t.connect({ userId: 'alice' })
    const a2 = await t.connect({ userId: 'alice' })
    await a1.subscribe('public:news')
    expect(await t.hub.connections.disconnect(a1.connectionId, 'bye now')).toBe(true)
    expect(a1.closed).toBe(true)
    expect(a1.closeCode).toBe(4000)
    expect(a1.closeReason).toBe('bye now')
    expect(a2.closed).toBe(false)
    expect(await t.hub.connections.get(a1.connectionId)).toBeUndefined()
    expect(t.hub.connections.local({ userId: 'alice' }).map((c) => c.id)).toEqual([a2.connectionId])
    expect(t.hub.channels.list()).toEqual([])
    // a second time it is unknown
    expect(await t.hub.connections.disconnect(a1.connectionId)).toBe(false)
    await stillWorks(a2)
  })

  it('hub.disconnectUser closes every connection of the user and no one else', async () => {
    const t = makeHub()
    const a1 = await t.connect({ userId: 'alice' })
    const a2 = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    expect(await t.hub.connections.disconnectUser('alice', 'banned')).toBe(2)
    expect([a1.closed, a2.closed]).toEqual([true, true])
    expect([a1.closeCode, a2.closeCode]).toEqual([4000, 4000])
    expect(a1.closeReason).toBe('banned')
    expect(t.hub.connections.local({ userId: 'alice' })).toEqual([])
    expect(t.hub.connections.local().map((c) => c.id)).toEqual([bob.connectionId])
    expect(await t.hub.connections.disconnectUser('alice')).toBe(0)
    await stillWorks(bob)
  })

  it('a client close and a dropped network both unregister the connection', async () => {
    const t = makeHub()
    const a = await t.connect({ userId: 'alice' })
    const b = await t.connect({ userId: 'bob' })
    const codes: number[] = []
    t.hub.on('disconnect', (_info, close) => codes.push(close.code))
    a.close()
    b.drop()
    expect(codes).toEqual([1000, 1006])
    expect(t.hub.connections.local()).toEqual([])
    expect(t.hub.metrics().connections).toBe(0)
  })

  it('emits connection, subscribe, publish, unsubscribe and disconnect events', async () => {
    const t = makeHub()
    const log: string[] = []
    const connected: ConnectionInfo[] = []
    const published: Array<{ channel: string; message: MessageFrame; connectionId: string | undefined }> = []
    t.hub.on('connection', (info) => {
      connected.push(info)
      log.push(`connection:${info.userId}`)
    })
    t.hub.on('subscribe', (e) => log.push(`subscribe:${e.userId}:${e.channel}:${e.connectionId}`))
    t.hub.on('unsubscribe', (e) => log.push(`unsubscribe:${e.userId}:${e.channel}:${e.reason}`))
    t.hub.on('publish', (e) => {
      published.push(e)
      log.push(`publish:${e.channel}:${e.message.event}`)
    })
    t.hub.on('disconnect', (info, close) => log.push(`disconnect:${info.userId}:${close.code}:${close.reason}:${info.channels.join(',')}`))

    const alice = await t.connect({ userId: 'alice' })
    expect(connected[0]!.id).toBe(alice.connectionId)
    expect(connected[0]!.transport).toBe('memory')
    await alice.subscribe('public:a')
    await alice.subscribe('public:b')
    const r = await alice.publish('public:a', 'hello', { x: 1 })
    await t.hub.publish('public:b', 'server-side')
    await alice.unsubscribe('public:a')
    alice.close(1000, 'done')

    expect(log).toEqual([
      'connection:alice',
      `subscribe:alice:public:a:${alice.connectionId}`,
      `subscribe:alice:public:b:${alice.connectionId}`,
      'publish:public:a:hello',
      'publish:public:b:server-side',
      'unsubscribe:alice:public:a:unsubscribed',
      'unsubscribe:alice:public:b:disconnected',
      'disconnect:alice:1000:done:',
    ])
    expect(published[0]!.connectionId).toBe(alice.connectionId)
    expect(published[0]!.message).toMatchObject({ type: 'message', channel: 'public:a', event: 'hello', data: { x: 1 }, id: r.messageId, offset: 1, sender: 'alice' })
    expect(published[1]!.connectionId).toBeUndefined()
  })

  it('a listener that throws does not break the hub', async () => {
    const errs: string[] = []
    const t = makeHub({ onError: (_e, ctx) => errs.push(ctx.stage) })
    t.hub.on('subscribe', () => {
      throw new Error('listener bug')
    })
    const alice = await t.connect({ userId: 'alice' })
    const sub = await alice.subscribe('public:a')
    expect(sub.type).toBe('subscribed')
    expect(errs).toContain('listener:subscribe')
    await stillWorks(alice)
  })

  it('refuses more than maxConnectionsPerUser connections with RT_001 and close 4008', async () => {
    const t = makeHub({ limits: { maxConnectionsPerUser: 2 } })
    await t.connect({ userId: 'alice' })
    await t.connect({ userId: 'alice' })
    await rejectsWith(t.connect({ userId: 'alice' }), 'RT_001')
    const refused = t.transport.clients.at(-1)!
    expect(refused.closed).toBe(true)
    expect(refused.closeCode).toBe(4008)
    expect(t.hub.connections.local({ userId: 'alice' })).toHaveLength(2)
    expect(t.hub.metrics().errors.RT_001).toBe(1)
    await t.connect({ userId: 'bob' })
  })
})

// ---------------------------------------------------------------------------- leaks

describe('state never outlives its connection', () => {
  const channels = { 'room:*': { subscribe: true, publish: true, room: 'auto' as const } }

  function expectEmpty(t: TestHub) {
    expect(t.hub.channels.list()).toEqual([])
    expect(t.hub.connections.local()).toEqual([])
    const m = t.hub.metrics()
    expect(m.connections).toBe(0)
    expect(m.channels).toBe(0)
    expect(m.subscriptions).toBe(0)
    expect(m.subscriptionsByChannel).toEqual({})
    expect(t.hub.rooms.list()).toEqual([])
    const sizes = (t.hub as unknown as { debugSizes(): Record<string, number> }).debugSizes()
    expect(Object.keys(sizes).length).toBeGreaterThan(0)
    for (const [k, v] of Object.entries(sizes)) expect(v, `debugSizes().${k}`).toBe(0)
  }

  it('3000 connect/subscribe/publish/type/disconnect cycles leave nothing behind', async () => {
    const presenceStore = createMemoryPresenceStore()
    const t = makeHub({ channels, presenceStore })
    const CYCLES = 3000
    let prev: MemoryClient | undefined
    let delivered = 0
    for (let i = 0; i < CYCLES; i++) {
      const c = await t.connect({ userId: `user-${i % 50}` })
      const presence = `presence:leak-${i % 7}`
      await c.subscribe('public:leak')
      await c.subscribe(presence, { presence: { i } })
      const sub = await c.subscribe(`room:leak-${i % 13}`)
      expect(sub.type).toBe('subscribed')
      await c.publish('public:leak', 'tick', { i })
      await c.publish(`room:leak-${i % 13}`, 'tick', { i })
      c.typing(presence)
      // Keep the previous client open while this one works, so channels are shared.
      if (prev) {
        await t.settle()
        // prev published before c subscribed, so it holds exactly c's message
        delivered += prev.messages('public:leak').length
        const how = i % 3
        if (how === 0) prev.drop()
        else if (how === 1) (await t.hub.connections.disconnect(prev.connectionId))
        else prev.close()
      }
      prev = c
    }
    prev!.close()
    await t.settle()

    expect(delivered).toBe(CYCLES - 1)
    expectEmpty(t)
    for (let k = 0; k < 7; k++) expect(await t.hub.presence.get(`presence:leak-${k}`)).toEqual({ users: [], count: 0 })
    expect(presenceStore.channelCount()).toBe(0)
    const m = t.hub.metrics()
    expect(m.connectionsOpened).toBe(CYCLES)
    expect(m.connectionsClosed).toBe(CYCLES)
    // no typing clear timer (or any other timer) outlives its connection
    expect(t.clock.pending()).toBe(0)
  })

  it('with a leave delay, pending leaves are gone once the delay passes', async () => {
    const presenceStore = createMemoryPresenceStore()
    const t = makeHub({ channels, presenceStore, presence: { leaveDelayMs: 1000 } })
    for (let i = 0; i < 500; i++) {
      const c = await t.connect({ userId: `user-${i}` })
      await c.subscribe(`presence:d-${i % 5}`)
      await c.subscribe(`room:d-${i % 5}`)
      c.close()
    }
    const sizes = (t.hub as unknown as { debugSizes(): Record<string, number> }).debugSizes()
    expect(sizes['pendingLeaves']).toBe(500)
    expect((await t.hub.presence.get('presence:d-0')).count).toBe(100)
    await t.advance(1000)
    expectEmpty(t)
    expect((await t.hub.presence.get('presence:d-0')).count).toBe(0)
    expect(presenceStore.channelCount()).toBe(0)
    expect(t.clock.pending()).toBe(0)
  })

  it('hub.close runs pending leaves and closes every connection with 1001', async () => {
    const t = makeHub({ presence: { leaveDelayMs: 60_000 } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('presence:x')
    await bob.subscribe('presence:x')
    alice.close()
    await t.hub.close()
    expect(bob.closed).toBe(true)
    expect(bob.closeCode).toBe(1001)
    expect((await t.hub.presence.get('presence:x')).count).toBe(0)
    const sizes = (t.hub as unknown as { debugSizes(): Record<string, number> }).debugSizes()
    expect(sizes['pendingLeaves']).toBe(0)
    await rejectsWith(t.connect({ userId: 'carol' }), 'RT_001')
  })
})

// ---------------------------------------------------------------------------- pub/sub

describe('pub/sub', () => {
  it('delivers a client publish to subscribers with sender, ISO timestamp, unique id and offset', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    const sub = await bob.subscribe('public:news')
    expect(sub).toMatchObject({ type: 'subscribed', channel: 'public:news', position: { offset: 0 } })
    await carol.subscribe('public:news')
    await t.advance(1234)

    const r1 = await alice.publish('public:news', 'headline', { text: 'first' })
    const r2 = await alice.publish('public:news', 'headline', { text: 'second' })
    expect(r1).toMatchObject({ type: 'published', channel: 'public:news', offset: 1 })
    expect(r2.offset).toBe(2)
    expect(r1.messageId).not.toBe(r2.messageId)
    expect(r1.duplicate).toBeUndefined()
    await t.settle()

    const got = bob.messages('public:news')
    expect(got).toHaveLength(2)
    expect(got[0]).toEqual({
      type: 'message',
      channel: 'public:news',
      event: 'headline',
      data: { text: 'first' },
      id: r1.messageId,
      offset: 1,
      timestamp: new Date(start + 1234).toISOString(),
      sender: 'alice',
    })
    expect(new Date(got[0]!.timestamp).toISOString()).toBe(got[0]!.timestamp)
    expect(got[1]!.id).toBe(r2.messageId)
    expect(carol.messages('public:news').map((m) => m.id)).toEqual([r1.messageId, r2.messageId])
  })

  it('message ids are unique across channels and offsets are per channel', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const ids = new Set<string>()
    const offsets: Record<string, number[]> = { 'public:a': [], 'public:b': [] }
    for (let i = 0; i < 10; i++) {
      for (const ch of ['public:a', 'public:b'] as const) {
        const r = await alice.publish(ch, 'e', i)
        ids.add(r.messageId)
        offsets[ch]!.push(r.offset!)
      }
    }
    expect(ids.size).toBe(20)
    expect(offsets['public:a']).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    expect(offsets['public:b']).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
  })

  it('keeps per-channel order for a burst of messages', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:seq')
    for (let i = 0; i < 50; i++) alice.send({ type: 'message', channel: 'public:seq', event: 'n', data: i })
    // frames of one connection are handled in order: the pong comes after every publish
    await alice.ping()
    await t.settle()
    const got = bob.messages('public:seq')
    expect(got.map((m) => m.data)).toEqual(Array.from({ length: 50 }, (_, i) => i))
    expect(got.map((m) => m.offset)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
  })

  it('does not echo a publish back to the publishing connection, only a published reply', async () => {
    const t = makeHub()
    const a1 = await t.connect({ userId: 'alice' })
    const a2 = await t.connect({ userId: 'alice' })
    await a1.subscribe('public:chat')
    await a2.subscribe('public:chat')
    const r = await a1.publish('public:chat', 'say', 'hi')
    await t.settle()
    expect(a1.messages()).toEqual([])
    expect(a1.received('published').map((p) => p.messageId)).toEqual([r.messageId])
    // the user's other tab is another connection: it gets it
    expect(a2.messages().map((m) => m.id)).toEqual([r.messageId])
  })

  it('echoes to the publisher when the channel has echo: true', async () => {
    const t = makeHub({ channels: { 'chat:*': { subscribe: 'authenticated', publish: 'authenticated', echo: true } } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('chat:room1')
    await bob.subscribe('chat:room1')
    const r = await alice.publish('chat:room1', 'say', 'hi')
    await t.settle()
    expect(alice.messages('chat:room1').map((m) => m.id)).toEqual([r.messageId])
    expect(alice.received('published')).toHaveLength(1)
    expect(bob.messages('chat:room1').map((m) => m.id)).toEqual([r.messageId])
  })

  it('unsubscribe stops delivery and the channel goes away with its last subscriber', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:news')
    expect(t.hub.channels.list().map((c) => c.name)).toEqual(['public:news'])
    await alice.publish('public:news', 'one')
    const u = await bob.unsubscribe('public:news')
    expect(u).toMatchObject({ type: 'unsubscribed', channel: 'public:news' })
    await alice.publish('public:news', 'two')
    await t.settle()
    expect(bob.messages().map((m) => m.event)).toEqual(['one'])
    expect(t.hub.channels.list()).toEqual([])
    expect((await t.hub.connections.get(bob.connectionId))!.channels).toEqual([])
    // unsubscribing from something not subscribed is answered, not an error
    const again = await bob.unsubscribe('public:news')
    expect(again.type).toBe('unsubscribed')
    expect(errors(bob)).toEqual([])
  })

  it('subscribing twice keeps one subscription and delivers once', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:news')
    const again = await bob.subscribe('public:news')
    expect(again.type).toBe('subscribed')
    expect(t.hub.metrics().subscriptionsByChannel).toEqual({ 'public:news': 1 })
    await alice.publish('public:news', 'x')
    await t.settle()
    expect(bob.messages()).toHaveLength(1)
  })

  it('publishes from the server with hub.publish, channel().publish and channel().broadcast', async () => {
    const t = makeHub()
    const bob = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    await bob.subscribe('public:news')
    await carol.subscribe('public:news')

    const r1 = await t.hub.publish('public:news', 'a', { n: 1 })
    expect(r1).toEqual({ messageId: expect.any(String), offset: 1, duplicate: false, recipients: 2 })
    const ch = t.hub.channel('public:news')
    expect(ch.name).toBe('public:news')
    const r2 = await ch.publish('b', { n: 2 }, { sender: 'system' })
    const r3 = await ch.broadcast('c', { n: 3 }, { exclude: { users: ['carol'] } })
    expect(r2.offset).toBe(2)
    expect(r3).toMatchObject({ offset: 3, recipients: 1 })
    await t.settle()

    const got = bob.messages('public:news')
    expect(got.map((m) => [m.event, m.data, m.offset, m.sender])).toEqual([
      ['a', { n: 1 }, 1, undefined],
      ['b', { n: 2 }, 2, 'system'],
      ['c', { n: 3 }, 3, undefined],
    ])
    expect(got.map((m) => m.id)).toEqual([r1.messageId, r2.messageId, r3.messageId])
    expect(carol.messages().map((m) => m.event)).toEqual(['a', 'b'])
    expect(t.hub.metrics().published).toBe(3)
  })

  it('server publish to a channel with no subscribers still gets an offset', async () => {
    const t = makeHub()
    const r = await t.hub.publish('public:empty', 'e')
    expect(r).toMatchObject({ offset: 1, recipients: 0, duplicate: false })
    const h = await t.hub.channel('public:empty').history()
    expect(h.messages.map((m) => m.id)).toEqual([r.messageId])
  })

  it('server publish rejects bad names and unknown channels', async () => {
    const t = makeHub()
    await rejectsWith(t.hub.publish('bad name!', 'e'), 'RT_007')
    await rejectsWith(t.hub.publish('nopattern', 'e'), 'RT_004')
    await rejectsWith(t.hub.publish('public:x', 'e', 'x'.repeat(200 * 1024)), 'RT_005')
  })

  it('rejects client publishes that are not allowed and keeps the connection', async () => {
    const t = makeHub()
    const anon = await t.connect()
    await rejectsWith(anon.publish('public:x', 'e'), 'RT_003')
    await rejectsWith(anon.publish('nopattern', 'e'), 'RT_004')
    await stillWorks(anon)
  })
})

// ---------------------------------------------------------------------------- broadcast

describe('server broadcast', () => {
  async function setup(options: HubOptions = {}) {
    const t = makeHub(options)
    const alice = await t.connect({ userId: 'alice', identity: { userId: 'alice', roles: ['admin'], claims: { plan: 'pro' } } })
    const alice2 = await t.connect({ userId: 'alice', identity: { userId: 'alice', roles: ['admin'], claims: { plan: 'pro' } } })
    const bob = await t.connect({ identity: { userId: 'bob', claims: { plan: 'free' } } })
    const carol = await t.connect({ identity: { userId: 'carol', claims: { plan: 'pro', org: { id: 7 } } } })
    const anon = await t.connect()
    return { t, alice, alice2, bob, carol, anon, all: [alice, alice2, bob, carol, anon] }
  }

  it("to 'all' reaches every connection, subscribed or not, as a channel-less message", async () => {
    const { t, all } = await setup()
    const r = await t.hub.broadcast({ to: 'all', event: 'maintenance', data: { at: '22:00' } })
    expect(r.recipients).toBe(5)
    expect(r.messageIds).toHaveLength(1)
    await t.settle()
    for (const c of all) {
      const got = c.messages()
      expect(got).toHaveLength(1)
      expect(got[0]).toMatchObject({ type: 'message', event: 'maintenance', data: { at: '22:00' }, id: r.messageIds[0] })
      expect(got[0]!.channel).toBeUndefined()
      expect(new Date(got[0]!.timestamp).toISOString()).toBe(got[0]!.timestamp)
    }
  })

  it('to users reaches every connection of those users', async () => {
    const { t, alice, alice2, bob, carol, anon } = await setup()
    const r = await t.hub.broadcast({ to: { users: ['alice', 'carol', 'nobody'] }, event: 'dm', data: 1, sender: 'ops' })
    expect(r.recipients).toBe(3)
    await t.settle()
    expect(alice.messages()).toHaveLength(1)
    expect(alice2.messages()).toHaveLength(1)
    expect(carol.messages()[0]).toMatchObject({ event: 'dm', sender: 'ops' })
    expect(bob.messages()).toEqual([])
    expect(anon.messages()).toEqual([])
  })

  it('to connections reaches exactly those connections', async () => {
    const { t, alice, alice2, bob } = await setup()
    const r = await t.hub.broadcast({ to: { connections: [alice2.connectionId, bob.connectionId, 'gone'] }, event: 'poke' })
    expect(r.recipients).toBe(2)
    await t.settle()
    expect(alice.messages()).toEqual([])
    expect(alice2.messages()).toHaveLength(1)
    expect(bob.messages()).toHaveLength(1)
  })

  it('to channels publishes on each channel (stored, with offsets)', async () => {
    const { t, alice, bob, carol } = await setup()
    await alice.subscribe('public:a')
    await bob.subscribe('public:b')
    await carol.subscribe('public:a')
    await carol.subscribe('public:b')
    const r = await t.hub.broadcast({ to: { channels: ['public:a', 'public:b'] }, event: 'news', data: 'x' })
    expect(r.messageIds).toHaveLength(2)
    expect(r.recipients).toBe(4)
    await t.settle()
    expect(alice.messages().map((m) => [m.channel, m.offset])).toEqual([['public:a', 1]])
    expect(bob.messages().map((m) => [m.channel, m.offset])).toEqual([['public:b', 1]])
    expect(carol.messages().map((m) => m.channel).sort()).toEqual(['public:a', 'public:b'])
    await rejectsWith(t.hub.broadcast({ to: { channels: ['nopattern'] }, event: 'x' }), 'RT_004')
  })

  it('excludes connections: everyone but the sender', async () => {
    const { t, alice, alice2, bob, carol, anon } = await setup()
    const r = await t.hub.broadcast({ to: 'all', event: 'e', exclude: { connections: [alice.connectionId] } })
    expect(r.recipients).toBe(4)
    await t.settle()
    expect(alice.messages()).toEqual([])
    for (const c of [alice2, bob, carol, anon]) expect(c.messages()).toHaveLength(1)
  })

  it('excludes users, on every target kind', async () => {
    const { t, alice, alice2, bob, carol } = await setup()
    await alice.subscribe('public:a')
    await bob.subscribe('public:a')
    await t.hub.broadcast({ to: 'all', event: 'all', exclude: { users: ['alice'] } })
    await t.hub.broadcast({ to: { users: ['alice', 'bob'] }, event: 'users', exclude: { users: ['alice'] } })
    await t.hub.broadcast({ to: { channels: ['public:a'] }, event: 'chan', exclude: { users: ['alice'] } })
    await t.settle()
    expect(alice.messages()).toEqual([])
    expect(alice2.messages()).toEqual([])
    expect(bob.messages().map((m) => m.event)).toEqual(['all', 'users', 'chan'])
    expect(carol.messages().map((m) => m.event)).toEqual(['all'])
  })

  it('filters recipients with where over claims, roles, user id and transport', async () => {
    const { t, alice, alice2, bob, carol, anon } = await setup()
    const pro = await t.hub.broadcast({ to: 'all', event: 'pro-only', where: { field: 'user.claims.plan', op: 'eq', value: 'pro' } })
    expect(pro.recipients).toBe(3)
    await t.hub.broadcast({ to: 'all', event: 'admins', where: { field: 'user.roles', op: 'contains', value: 'admin' } })
    await t.hub.broadcast({ to: 'all', event: 'org7', where: { field: 'user.claims.org.id', op: 'eq', value: 7 } })
    await t.hub.broadcast({ to: 'all', event: 'not-bob', where: { not: { field: 'user.id', op: 'eq', value: 'bob' } } })
    await t.hub.broadcast({ to: 'all', event: 'memory', where: { field: 'transport', op: 'eq', value: 'memory' } })
    await t.hub.broadcast({
      to: 'all',
      event: 'pro-not-admin',
      where: { and: [{ field: 'user.claims.plan', op: 'eq', value: 'pro' }, { not: { field: 'user.roles', op: 'contains', value: 'admin' } }] },
    })
    await t.settle()
    const events = (c: MemoryClient) => c.messages().map((m) => m.event)
    expect(events(alice)).toEqual(['pro-only', 'admins', 'not-bob', 'memory'])
    expect(events(alice2)).toEqual(['pro-only', 'admins', 'not-bob', 'memory'])
    expect(events(bob)).toEqual(['memory'])
    expect(events(carol)).toEqual(['pro-only', 'org7', 'not-bob', 'memory', 'pro-not-admin'])
    expect(events(anon)).toEqual(['not-bob', 'memory'])
  })

  it('where applies to channel and user targets too', async () => {
    const { t, alice, bob, carol } = await setup()
    await alice.subscribe('public:a')
    await bob.subscribe('public:a')
    await carol.subscribe('public:a')
    const where: FilterNode = { field: 'user.claims.plan', op: 'eq', value: 'pro' }
    const r = await t.hub.broadcast({ to: { channels: ['public:a'], users: ['bob', 'carol'] }, event: 'w', where })
    await t.settle()
    expect(alice.messages().map((m) => m.channel)).toEqual(['public:a'])
    expect(bob.messages()).toEqual([])
    // carol is on the channel and a named user: she gets the channel copy and the direct one
    expect(carol.messages().map((m) => m.channel ?? 'direct').sort()).toEqual(['direct', 'public:a'])
    expect(r.recipients).toBe(3)
  })

  it('rejects an invalid where with RT_007 and delivers nothing', async () => {
    const { t, all } = await setup()
    await rejectsWith(t.hub.broadcast({ to: 'all', event: 'x', where: { field: 'data.plan', op: 'eq', value: 'pro' } }), 'RT_007')
    await rejectsWith(t.hub.broadcast({ to: 'all', event: 'x', where: { field: 'user.claims.__proto__', op: 'exists' } }), 'RT_007')
    await rejectsWith(t.hub.broadcast({ to: 'all', event: 'x', where: { field: 'user.id', op: 'like', value: 'a' } as unknown as FilterNode }), 'RT_007')
    await t.settle()
    for (const c of all) expect(c.messages()).toEqual([])
  })

  it('users and connections share one message id, and a connection reached both ways gets it once', async () => {
    const { t, alice, alice2, bob } = await setup()
    const r = await t.hub.broadcast({ to: { users: ['alice'], connections: [alice.connectionId, bob.connectionId] }, event: 'once' })
    await t.settle()
    expect(r.messageIds).toHaveLength(1)
    expect(alice.messages().map((m) => m.id)).toEqual(r.messageIds)
    expect(alice2.messages().map((m) => m.id)).toEqual(r.messageIds)
    expect(bob.messages().map((m) => m.id)).toEqual(r.messageIds)
    expect(r.recipients).toBe(3)
  })
})

// ---------------------------------------------------------------------------- subscription limits

describe('subscription limits', () => {
  it('allows 100 subscriptions per connection by default, then RT_006', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    for (let i = 0; i < 100; i++) {
      await alice.subscribe(`public:c${i}`)
      // stay under the 100 frames/s limit, which is a different RT_006
      if (i % 50 === 49) await t.advance(1000)
    }
    const err = await rejectsWith(alice.subscribe('public:c100'), 'RT_006')
    expect(err.details).toEqual({ limit: 100 })
    expect(lastError(alice)).toMatchObject({ code: 'RT_006', channel: 'public:c100' })
    expect((await t.hub.connections.get(alice.connectionId))!.channels).toHaveLength(100)
    // subscribing again to a channel it has is fine at the limit
    const again = await alice.subscribe('public:c5')
    expect(again.type).toBe('subscribed')
    // freeing one makes room
    await alice.unsubscribe('public:c0')
    const ok = await alice.subscribe('public:c100')
    expect(ok.channel).toBe('public:c100')
    expect(t.hub.metrics().errors.RT_006).toBe(1)
    await stillWorks(alice)
  })

  it('takes the limit per connection from a function of the identity (tiers)', async () => {
    const seen: Array<string | undefined> = []
    const t = makeHub({
      limits: {
        maxSubscriptions: (identity, info) => {
          seen.push(info.userId)
          return identity.claims?.['tier'] === 'paid' ? 10 : 3
        },
      },
    })
    const free = await t.connect({ identity: { userId: 'free-user', claims: { tier: 'free' } } })
    const paid = await t.connect({ identity: { userId: 'paid-user', claims: { tier: 'paid' } } })
    expect(seen).toEqual(['free-user', 'paid-user'])
    expect(free.received('connected')[0]!.limits.maxSubscriptions).toBe(3)
    expect(paid.received('connected')[0]!.limits.maxSubscriptions).toBe(10)

    for (let i = 0; i < 3; i++) await free.subscribe(`public:f${i}`)
    const e1 = await rejectsWith(free.subscribe('public:f3'), 'RT_006')
    expect(e1.details).toEqual({ limit: 3 })

    for (let i = 0; i < 10; i++) await paid.subscribe(`public:p${i}`)
    await rejectsWith(paid.subscribe('public:p10'), 'RT_006')
    expect((await t.hub.connections.get(free.connectionId))!.channels).toHaveLength(3)
    expect((await t.hub.connections.get(paid.connectionId))!.channels).toHaveLength(10)
    await stillWorks(free)
  })

  it('a numeric limit applies to everyone', async () => {
    const t = makeHub({ limits: { maxSubscriptions: 2 } })
    const a = await t.connect({ userId: 'a' })
    expect(a.received('connected')[0]!.limits.maxSubscriptions).toBe(2)
    await a.subscribe('public:1')
    await a.subscribe('presence:2')
    await rejectsWith(a.subscribe('public:3'), 'RT_006')
  })
})

// ---------------------------------------------------------------------------- idempotency

describe('publisher idempotency keys', () => {
  it('a repeated key is answered as a duplicate and delivered once', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:orders')
    const first = await alice.publish('public:orders', 'created', { id: 1 }, { idempotencyKey: 'order-1' })
    const second = await alice.publish('public:orders', 'created', { id: 1 }, { idempotencyKey: 'order-1' })
    expect(first.duplicate).toBeUndefined()
    expect(second.duplicate).toBe(true)
    expect(second.messageId).toBe(first.messageId)
    expect(second.offset).toBe(first.offset)
    const third = await alice.publish('public:orders', 'created', { id: 2 }, { idempotencyKey: 'order-2' })
    expect(third.duplicate).toBeUndefined()
    expect(third.offset).toBe(2)
    await t.settle()
    expect(bob.messages().map((m) => m.data)).toEqual([{ id: 1 }, { id: 2 }])
    expect(t.hub.metrics().published).toBe(2)
  })

  it('keys are per channel', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const a = await alice.publish('public:a', 'e', 1, { idempotencyKey: 'k' })
    const b = await alice.publish('public:b', 'e', 1, { idempotencyKey: 'k' })
    expect(a.duplicate).toBeUndefined()
    expect(b.duplicate).toBeUndefined()
    expect(b.messageId).not.toBe(a.messageId)
  })

  it('server publishes dedup too, and the key expires after the dedup window', async () => {
    const t = makeHub({ dedupWindowMs: 60_000 })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:x')
    const r1 = await t.hub.publish('public:x', 'e', 1, { idempotencyKey: 'k' })
    const r2 = await t.hub.publish('public:x', 'e', 1, { idempotencyKey: 'k' })
    expect(r2).toEqual({ messageId: r1.messageId, offset: r1.offset, duplicate: true, recipients: 0 })
    await t.advance(60_000)
    const r3 = await t.hub.publish('public:x', 'e', 1, { idempotencyKey: 'k' })
    expect(r3.duplicate).toBe(false)
    expect(r3.messageId).not.toBe(r1.messageId)
    await t.settle()
    expect(bob.messages()).toHaveLength(2)
  })

  it('dedups on channels that keep no history', async () => {
    const t = makeHub({ channels: { 'live:*': { subscribe: true, publish: true, history: false } } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const sub = await bob.subscribe('live:ticker')
    expect(sub.position).toBeUndefined()
    const r1 = await alice.publish('live:ticker', 'tick', 1, { idempotencyKey: 'k1' })
    const r2 = await alice.publish('live:ticker', 'tick', 1, { idempotencyKey: 'k1' })
    expect(r1.offset).toBeUndefined()
    expect(r2.duplicate).toBe(true)
    expect(r2.messageId).toBe(r1.messageId)
    await t.settle()
    expect(bob.messages()).toHaveLength(1)
    expect(bob.messages()[0]!.offset).toBeUndefined()
  })
})

// ---------------------------------------------------------------------------- filters

describe('compileFilter', () => {
  const msg = {
    type: 'message',
    channel: 'public:x',
    event: 'order',
    sender: 'alice',
    data: { price: 150, name: 'Widget', tags: ['red', 'sale'], nested: { a: { b: 'deep' } }, zero: 0, nil: null, flag: false, num: '10' },
  }
  const check = (f: unknown) => compileFilter(f)(msg)

  it.each<[string, FilterNode, boolean]>([
    ['eq number', { field: 'data.price', op: 'eq', value: 150 }, true],
    ['eq mismatch', { field: 'data.price', op: 'eq', value: 151 }, false],
    ['eq is strict', { field: 'data.price', op: 'eq', value: '150' }, false],
    ['eq null', { field: 'data.nil', op: 'eq', value: null }, true],
    ['eq false', { field: 'data.flag', op: 'eq', value: false }, true],
    ['ne', { field: 'data.name', op: 'ne', value: 'Gadget' }, true],
    ['ne equal', { field: 'data.name', op: 'ne', value: 'Widget' }, false],
    ['gt', { field: 'data.price', op: 'gt', value: 100 }, true],
    ['gt equal', { field: 'data.price', op: 'gt', value: 150 }, false],
    ['gte equal', { field: 'data.price', op: 'gte', value: 150 }, true],
    ['lt', { field: 'data.price', op: 'lt', value: 150 }, false],
    ['lte equal', { field: 'data.price', op: 'lte', value: 150 }, true],
    ['lt zero', { field: 'data.zero', op: 'lt', value: 1 }, true],
    ['gt strings compare lexically', { field: 'data.name', op: 'gt', value: 'A' }, true],
    ['no coercion: "10" > 9 is false', { field: 'data.num', op: 'gt', value: 9 }, false],
    ['gt on missing field', { field: 'data.missing', op: 'gt', value: 0 }, false],
    ['in', { field: 'data.name', op: 'in', value: ['Gadget', 'Widget'] }, true],
    ['in miss', { field: 'data.name', op: 'in', value: ['Gadget'] }, false],
    ['in numbers', { field: 'data.price', op: 'in', value: [1, 150] }, true],
    ['contains in array', { field: 'data.tags', op: 'contains', value: 'sale' }, true],
    ['contains in array miss', { field: 'data.tags', op: 'contains', value: 'blue' }, false],
    ['contains substring', { field: 'data.name', op: 'contains', value: 'idg' }, true],
    ['contains on a number', { field: 'data.price', op: 'contains', value: '1' }, false],
    ['exists', { field: 'data.nil', op: 'exists' }, true],
    ['exists missing', { field: 'data.missing', op: 'exists' }, false],
    ['exists false on missing', { field: 'data.missing', op: 'exists', value: false }, true],
    ['exists false on present', { field: 'data.price', op: 'exists', value: false }, false],
    ['nested path', { field: 'data.nested.a.b', op: 'eq', value: 'deep' }, true],
    ['path through a non-object', { field: 'data.price.x', op: 'exists' }, false],
    ['inherited properties are invisible', { field: 'data.name.length', op: 'exists' }, false],
    ['toString is not a field', { field: 'data.toString', op: 'exists' }, false],
    ['event', { field: 'event', op: 'eq', value: 'order' }, true],
    ['sender', { field: 'sender', op: 'in', value: ['alice', 'bob'] }, true],
    ['and', { and: [{ field: 'data.price', op: 'gt', value: 100 }, { field: 'event', op: 'eq', value: 'order' }] }, true],
    ['and short', { and: [{ field: 'data.price', op: 'gt', value: 100 }, { field: 'event', op: 'eq', value: 'x' }] }, false],
    ['or', { or: [{ field: 'data.price', op: 'gt', value: 1000 }, { field: 'data.tags', op: 'contains', value: 'red' }] }, true],
    ['or none', { or: [{ field: 'data.price', op: 'gt', value: 1000 }, { field: 'data.tags', op: 'contains', value: 'blue' }] }, false],
    ['not', { not: { field: 'data.price', op: 'lt', value: 100 } }, true],
    ['not not', { not: { not: { field: 'data.price', op: 'lt', value: 100 } } }, false],
    [
      'nested logic',
      { and: [{ or: [{ field: 'sender', op: 'eq', value: 'bob' }, { field: 'sender', op: 'eq', value: 'alice' }] }, { not: { field: 'data.tags', op: 'contains', value: 'x' } }] },
      true,
    ],
  ])('%s', (_name, filter, expected) => {
    expect(check(filter)).toBe(expected)
  })

  const deep = (levels: number): FilterNode => {
    let node: FilterNode = { field: 'event', op: 'exists' }
    for (let i = 1; i < levels; i++) node = { not: node }
    return node
  }

  it.each<[string, unknown]>([
    ['unknown op', { field: 'data.a', op: 'like', value: 'x' }],
    ['unknown root', { field: 'user.id', op: 'eq', value: 'x' }],
    ['root without path', { field: 'price', op: 'eq', value: 1 }],
    ['sub-field of a leaf root', { field: 'event.name', op: 'eq', value: 'x' }],
    ['__proto__ segment', { field: 'data.__proto__.polluted', op: 'exists' }],
    ['constructor segment', { field: 'data.constructor', op: 'exists' }],
    ['prototype segment', { field: 'data.x.prototype', op: 'exists' }],
    ['empty segment', { field: 'data..a', op: 'exists' }],
    ['in without an array', { field: 'data.a', op: 'in', value: 'x' }],
    ['eq with an array', { field: 'data.a', op: 'eq', value: ['x'] }],
    ['gt with a boolean', { field: 'data.a', op: 'gt', value: true }],
    ['missing value', { field: 'data.a', op: 'eq' }],
    ['extra keys', { field: 'data.a', op: 'eq', value: 1, extra: true }],
    ['object value', { field: 'data.a', op: 'eq', value: { x: 1 } }],
    ['empty and', { and: [] }],
    ['two logic keys', { and: [{ field: 'event', op: 'exists' }], or: [{ field: 'event', op: 'exists' }] }],
    ['too deep', deep(FILTER_LIMITS.maxDepth + 1)],
    ['too many nodes', { or: Array.from({ length: FILTER_LIMITS.maxNodes }, () => ({ field: 'event', op: 'exists' })) }],
    ['too many path segments', { field: 'data.a.b.c.d.e.f.g.h', op: 'exists' }],
    ['too many in values', { field: 'data.a', op: 'in', value: Array.from({ length: FILTER_LIMITS.maxInValues + 1 }, (_, i) => i) }],
    ['not an object', 'data.a == 1'],
    ['null', null],
  ])('rejects %s with a FilterError', (_name, filter) => {
    expect(() => compileFilter(filter)).toThrow(FilterError)
    expect(() => compileFilter(filter)).toThrow(/invalid filter/)
  })

  it('accepts the deepest and largest allowed trees', () => {
    expect(compileFilter(deep(FILTER_LIMITS.maxDepth))(msg)).toBe(FILTER_LIMITS.maxDepth % 2 === 1)
    const wide = { or: Array.from({ length: FILTER_LIMITS.maxNodes - 1 }, (_, i) => ({ field: 'data.price', op: 'eq' as const, value: i })) }
    expect(compileFilter(wide)({ data: { price: 5 } })).toBe(true)
    expect(compileFilter({ field: 'data.a.b.c.d.e.f.g', op: 'exists' })({ data: { a: { b: { c: { d: { e: { f: { g: 1 } } } } } } } })).toBe(true)
  })

  it('does not pollute prototypes and reads own properties only', () => {
    const target = JSON.parse('{"data":{"__proto__":{"polluted":true}}}') as object
    expect(() => compileFilter({ field: 'data.__proto__', op: 'exists' })).toThrow(FilterError)
    expect(compileFilter({ field: 'data.polluted', op: 'exists' })(target)).toBe(false)
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined()
  })

  it('compiles recipient filters over other roots', () => {
    const f = compileFilter({ field: 'user.claims.plan', op: 'eq', value: 'pro' }, RECIPIENT_FILTER_ROOTS)
    expect(f({ user: { id: 'a', roles: [], claims: { plan: 'pro' } }, transport: 'memory' })).toBe(true)
    expect(f({ user: { id: 'a', roles: [], claims: { plan: 'free' } }, transport: 'memory' })).toBe(false)
    expect(() => compileFilter({ field: 'data.x', op: 'exists' }, RECIPIENT_FILTER_ROOTS)).toThrow(FilterError)
    expect(() => compileFilter({ field: 'transport.x', op: 'exists' }, RECIPIENT_FILTER_ROOTS)).toThrow(FilterError)
  })
})

describe('subscription filters', () => {
  async function setup() {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    return { t, alice, bob, carol }
  }

  it('delivers only messages that pass the subscription filter', async () => {
    const { t, alice, bob, carol } = await setup()
    await bob.subscribe('public:prices', { filter: { field: 'data.price', op: 'gt', value: 100 } })
    await carol.subscribe('public:prices')
    for (const price of [50, 150, 100, 101, 1000]) await alice.publish('public:prices', 'tick', { price })
    await t.settle()
    expect(bob.messages().map((m) => (m.data as { price: number }).price)).toEqual([150, 101, 1000])
    expect(carol.messages()).toHaveLength(5)
  })

  it('filters are applied before sending: a filtered-out message costs no write', async () => {
    const { t, alice, bob } = await setup()
    await bob.subscribe('public:p', { filter: { field: 'data.keep', op: 'eq', value: true } })
    const before = t.hub.metrics()
    const bobFrames = bob.frames.length
    await alice.publish('public:p', 'e', { keep: false })
    await t.settle()
    const after = t.hub.metrics()
    // only alice's published reply went out
    expect(after.messagesOut - before.messagesOut).toBe(1)
    expect(bob.frames.length).toBe(bobFrames)
    const r = await t.hub.publish('public:p', 'e', { keep: true })
    expect(r.recipients).toBe(1)
    const r2 = await t.hub.publish('public:p', 'e', { keep: false })
    expect(r2.recipients).toBe(0)
  })

  it('filters on nested data, event, sender and logic trees', async () => {
    const { t, alice, bob, carol } = await setup()
    await bob.subscribe('public:orders', {
      filter: {
        and: [
          { field: 'data.order.customer.tier', op: 'in', value: ['gold', 'platinum'] },
          { or: [{ field: 'event', op: 'eq', value: 'created' }, { field: 'data.order.total', op: 'gte', value: 500 }] },
          { not: { field: 'sender', op: 'eq', value: 'carol' } },
        ],
      },
    })
    await alice.publish('public:orders', 'created', { order: { customer: { tier: 'gold' }, total: 10 } }) // yes
    await alice.publish('public:orders', 'updated', { order: { customer: { tier: 'gold' }, total: 10 } }) // no: event and total
    await alice.publish('public:orders', 'updated', { order: { customer: { tier: 'platinum' }, total: 500 } }) // yes
    await alice.publish('public:orders', 'created', { order: { customer: { tier: 'silver' }, total: 900 } }) // no: tier
    await carol.publish('public:orders', 'created', { order: { customer: { tier: 'gold' }, total: 900 } }) // no: sender
    await alice.publish('public:orders', 'created', { order: 'not-an-object' }) // no
    await t.settle()
    expect(bob.messages().map((m) => m.offset)).toEqual([1, 3])
  })

  it('server publishes are filtered too (sender is absent)', async () => {
    const { t, bob } = await setup()
    await bob.subscribe('public:s', { filter: { field: 'sender', op: 'exists', value: false } })
    await t.hub.publish('public:s', 'anon')
    await t.hub.publish('public:s', 'named', null, { sender: 'sys' })
    await t.settle()
    expect(bob.messages().map((m) => m.event)).toEqual(['anon'])
  })

  it.each<[string, unknown]>([
    ['a bad op', { field: 'data.a', op: 'like', value: 1 }],
    ['a bad root', { field: 'payload.a', op: 'eq', value: 1 }],
    ['a tree that is too deep', (() => {
      let n: unknown = { field: 'event', op: 'exists' }
      for (let i = 0; i < 10; i++) n = { not: n }
      return n
    })()],
    ['a __proto__ path', { field: 'data.__proto__.x', op: 'exists' }],
    ['in without an array', { field: 'data.a', op: 'in', value: 1 }],
    ['a non-object', 'price > 100'],
  ])('rejects %s with RT_007 and keeps the connection', async (_name, filter) => {
    const { t, alice, bob } = await setup()
    await rejectsWith(bob.request({ type: 'subscribe', channel: 'public:f', filter }), 'RT_007')
    expect((await t.hub.connections.get(bob.connectionId))!.channels).toEqual([])
    expect(t.hub.channels.list()).toEqual([])
    expect(t.hub.metrics().errors.RT_007).toBe(1)
    await stillWorks(bob)
    await bob.subscribe('public:f')
    await alice.publish('public:f', 'e')
    await t.settle()
    expect(bob.messages()).toHaveLength(1)
  })

  it('an invalid filter on a re-subscribe keeps the existing subscription and filter', async () => {
    const { t, alice, bob } = await setup()
    await bob.subscribe('public:f', { filter: { field: 'data.n', op: 'gt', value: 5 } })
    await rejectsWith(bob.request({ type: 'subscribe', channel: 'public:f', filter: { field: 'data.__proto__', op: 'exists' } }), 'RT_007')
    for (const n of [1, 10]) await alice.publish('public:f', 'e', { n })
    await t.settle()
    expect(bob.messages().map((m) => (m.data as { n: number }).n)).toEqual([10])
  })

  it('re-subscribing with a new filter replaces the old one', async () => {
    const { t, alice, bob } = await setup()
    await bob.subscribe('public:f', { filter: { field: 'data.color', op: 'eq', value: 'red' } })
    await alice.publish('public:f', 'e', { color: 'red' })
    await alice.publish('public:f', 'e', { color: 'blue' })
    const again = await bob.subscribe('public:f', { filter: { field: 'data.color', op: 'eq', value: 'blue' } })
    expect(again.type).toBe('subscribed')
    await alice.publish('public:f', 'e', { color: 'red' })
    await alice.publish('public:f', 'e', { color: 'blue' })
    await t.settle()
    expect(bob.messages().map((m) => [(m.data as { color: string }).color, m.offset])).toEqual([
      ['red', 1],
      ['blue', 4],
    ])
    expect(t.hub.metrics().subscriptionsByChannel).toEqual({ 'public:f': 1 })
  })
})

// ---------------------------------------------------------------------------- preferences

describe('per-user preferences', () => {
  it('muted channels and muted events are not delivered to that user', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const b1 = await t.connect({ userId: 'bob' })
    const b2 = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    for (const c of [b1, b2, carol]) {
      await c.subscribe('public:noise')
      await c.subscribe('public:news')
    }
    t.hub.preferences.set('bob', { mutedChannels: ['public:noise'], mutedEvents: ['spam'] })
    expect(t.hub.preferences.get('bob')).toEqual({ mutedChannels: ['public:noise'], mutedEvents: ['spam'] })
    expect(t.hub.preferences.get('carol')).toBeUndefined()

    await alice.publish('public:noise', 'chatter')
    await alice.publish('public:news', 'spam')
    await alice.publish('public:news', 'headline')
    await t.hub.broadcast({ to: { users: ['bob', 'carol'] }, event: 'spam' })
    await t.hub.broadcast({ to: 'all', event: 'ok' })
    await t.settle()

    for (const b of [b1, b2]) expect(b.messages().map((m) => m.event)).toEqual(['headline', 'ok'])
    expect(carol.messages().map((m) => m.event)).toEqual(['chatter', 'spam', 'headline', 'spam', 'ok'])
  })

  it('preferences set before connecting apply to new connections; clearing them restores delivery', async () => {
    const t = makeHub()
    t.hub.preferences.set('bob', { mutedEvents: ['ping'] })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:x')
    await alice.publish('public:x', 'ping')
    t.hub.preferences.set('bob', {})
    expect(t.hub.preferences.get('bob')).toBeUndefined()
    await alice.publish('public:x', 'ping')
    await t.settle()
    expect(bob.messages().map((m) => m.offset)).toEqual([2])
  })

  it('muting a channel does not mute presence or replies on it', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    t.hub.preferences.set('bob', { mutedChannels: ['presence:room'] })
    await bob.subscribe('presence:room')
    await alice.subscribe('presence:room')
    const r = await bob.publish('presence:room', 'hello')
    expect(r.type).toBe('published')
    await alice.publish('presence:room', 'hi')
    await t.settle()
    expect(bob.received('presence:join').map((f) => f.user.id)).toEqual(['alice'])
    expect(bob.messages()).toEqual([])
  })
})

// ---------------------------------------------------------------------------- routing

describe('content-based routing', () => {
  it('also publishes a message to the channels a route returns', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const ops = await t.connect({ userId: 'ops' })
    const buyer = await t.connect({ userId: 'buyer' })
    await ops.subscribe('public:alerts')
    await buyer.subscribe('public:orders')
    const off = t.hub.route((m) => ((m.data as { urgent?: boolean } | null)?.urgent ? 'public:alerts' : undefined))
    const seen: string[] = []
    t.hub.on('publish', (e) => seen.push(e.channel))

    await alice.publish('public:orders', 'order', { id: 1, urgent: true })
    await alice.publish('public:orders', 'order', { id: 2 })
    await t.settle()
    expect(buyer.messages().map((m) => (m.data as { id: number }).id)).toEqual([1, 2])
    const alerts = ops.messages('public:alerts')
    expect(alerts).toHaveLength(1)
    expect(alerts[0]).toMatchObject({ channel: 'public:alerts', event: 'order', data: { id: 1, urgent: true }, sender: 'alice', offset: 1 })
    expect(alerts[0]!.id).not.toBe(buyer.messages()[0]!.id)
    expect(seen).toEqual(['public:orders', 'public:alerts', 'public:orders'])

    off()
    await alice.publish('public:orders', 'order', { id: 3, urgent: true })
    await t.settle()
    expect(ops.messages()).toHaveLength(1)
  })

  it('routes to several channels at once, skipping repeats and the source channel', async () => {
    const t = makeHub()
    const watcher = await t.connect({ userId: 'w' })
    for (const c of ['public:src', 'public:a', 'public:b']) await watcher.subscribe(c)
    t.hub.route(() => ['public:a', 'public:b', 'public:a', 'public:src'])
    t.hub.route(() => 'public:b')
    await t.hub.publish('public:src', 'e', 1)
    await t.settle()
    expect(watcher.messages().map((m) => m.channel)).toEqual(['public:src', 'public:a', 'public:b'])
  })

  it('does not loop: routed messages are not routed again', async () => {
    const t = makeHub()
    const w = await t.connect({ userId: 'w' })
    await w.subscribe('public:a')
    await w.subscribe('public:b')
    t.hub.route((m) => (m.channel === 'public:a' ? 'public:b' : 'public:a'))
    await t.hub.publish('public:a', 'e')
    await t.settle()
    expect(w.messages().map((m) => m.channel)).toEqual(['public:a', 'public:b'])
    expect(t.hub.metrics().published).toBe(2)
  })

  it('a route that throws or names a bad channel is reported, and the publish still succeeds', async () => {
    const stages: string[] = []
    const t = makeHub({ onError: (_e, ctx) => stages.push(ctx.stage) })
    const w = await t.connect({ userId: 'w' })
    await w.subscribe('public:a')
    await w.subscribe('public:ok')
    t.hub.route(() => {
      throw new Error('route bug')
    })
    t.hub.route(() => ['nopattern', 'public:ok'])
    const r = await t.hub.publish('public:a', 'e')
    expect(r.recipients).toBe(1)
    await t.settle()
    expect(stages).toEqual(['route', 'route.publish'])
    expect(w.messages().map((m) => m.channel)).toEqual(['public:a', 'public:ok'])
  })
})

// ---------------------------------------------------------------------------- presence

describe('presence', () => {
  it('subscribed carries the presence snapshot; others get presence:join', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const s1 = await alice.subscribe('presence:lobby', { presence: { name: 'Alice' } })
    expect(s1.presence).toEqual({
      count: 1,
      users: [{ id: 'alice', state: 'online', data: { name: 'Alice' }, connections: 1, joinedAt: start, lastSeen: start }],
    })
    await t.advance(1000)
    const s2 = await bob.subscribe('presence:lobby', { presence: { name: 'Bob' }, state: 'away' })
    expect(s2.presence!.count).toBe(2)
    expect(s2.presence!.users.map((u) => [u.id, u.state]).sort()).toEqual([
      ['alice', 'online'],
      ['bob', 'away'],
    ])
    await t.settle()
    const joins = alice.received('presence:join')
    expect(joins).toEqual([
      { type: 'presence:join', channel: 'presence:lobby', user: { id: 'bob', state: 'away', data: { name: 'Bob' }, connections: 1, joinedAt: start + 1000, lastSeen: start + 1000 } },
    ])
    expect(bob.received('presence:join')).toEqual([])
    // the joiner does not get a join for itself
    expect(alice.received('presence:join').filter((f) => f.user.id === 'alice')).toEqual([])
  })

  it('others get presence:leave on unsubscribe and on disconnect', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    for (const c of [alice, bob, carol]) await c.subscribe('presence:lobby')
    await t.advance(500)
    await bob.unsubscribe('presence:lobby')
    await t.advance(500)
    carol.drop()
    await t.settle()
    const leaves = alice.received('presence:leave')
    expect(leaves.map((f) => [f.user.id, f.user.connections, f.user.lastSeen])).toEqual([
      ['bob', 0, start + 500],
      ['carol', 0, start + 1000],
    ])
    expect(await t.hub.presence.get('presence:lobby')).toMatchObject({ count: 1, users: [{ id: 'alice' }] })
  })

  it('a user with three tabs joins once and leaves when the last tab goes', async () => {
    const t = makeHub()
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('presence:doc')
    const tabs = [await t.connect({ userId: 'alice' }), await t.connect({ userId: 'alice' }), await t.connect({ userId: 'alice' })]
    const subs = []
    for (const tab of tabs) subs.push(await tab.subscribe('presence:doc'))
    await t.settle()
    expect(subs.map((s) => s.presence!.users.find((u) => u.id === 'alice')!.connections)).toEqual([1, 2, 3])
    expect(bob.received('presence:join').map((f) => f.user.id)).toEqual(['alice'])
    const snap = await t.hub.presence.get('presence:doc')
    expect(snap.count).toBe(2)
    expect(snap.users.find((u) => u.id === 'alice')!.connections).toBe(3)
    // tabs don't get joins for their own user
    for (const tab of tabs) expect(tab.received('presence:join').map((f) => f.user.id)).toEqual([])

    tabs[0]!.close()
    await tabs[1]!.unsubscribe('presence:doc')
    await t.settle()
    expect(bob.received('presence:leave')).toEqual([])
    expect((await t.hub.presence.get('presence:doc')).users.find((u) => u.id === 'alice')!.connections).toBe(1)
    expect((await bob.getPresence('presence:doc')).count).toBe(2)

    tabs[2]!.drop()
    await t.settle()
    expect(bob.received('presence:leave').map((f) => [f.user.id, f.user.connections])).toEqual([['alice', 0]])
    expect((await t.hub.presence.get('presence:doc')).count).toBe(1)
  })

  it('presence:update changes state and data in place, without leave and join', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('presence:lobby', { presence: { name: 'Alice' } })
    await bob.subscribe('presence:lobby')
    await t.advance(3000)
    alice.send({ type: 'presence:update', channel: 'presence:lobby', state: 'away', data: { name: 'Alice', status: 'lunch' } })
    await t.settle()
    expect(errors(alice)).toEqual([])
    const updates = bob.received('presence:update')
    expect(updates).toHaveLength(1)
    expect(updates[0]!.user).toEqual({ id: 'alice', state: 'away', data: { name: 'Alice', status: 'lunch' }, connections: 1, joinedAt: start, lastSeen: start + 3000 })
    expect(bob.received('presence:leave')).toEqual([])
    expect(bob.received('presence:join')).toEqual([])
    const snap = await t.hub.presence.get('presence:lobby')
    expect(snap.count).toBe(2)
    expect(snap.users.find((u) => u.id === 'alice')).toMatchObject({ state: 'away', data: { status: 'lunch' } })

    // state only keeps data; data only keeps state
    alice.send({ type: 'presence:update', channel: 'presence:lobby', state: 'online' })
    alice.send({ type: 'presence:update', channel: 'presence:lobby', data: { name: 'A.' } })
    await t.settle()
    expect(bob.received('presence:update').map((f) => [f.user.state, f.user.data])).toEqual([
      ['away', { name: 'Alice', status: 'lunch' }],
      ['online', { name: 'Alice', status: 'lunch' }],
      ['online', { name: 'A.' }],
    ])
  })

  it('when a tab leaves and the user’s merged state changes, the others are told', async () => {
    const t = makeHub()
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('presence:doc')
    const tab1 = await t.connect({ userId: 'alice' })
    const tab2 = await t.connect({ userId: 'alice' })
    await tab1.subscribe('presence:doc')
    await tab2.subscribe('presence:doc')
    await t.advance(1000)
    tab1.send({ type: 'presence:update', channel: 'presence:doc', state: 'away' })
    await t.settle()
    expect(bob.received('presence:update').map((f) => f.user.state)).toEqual(['away'])
    tab1.close()
    await t.settle()
    const server = (await t.hub.presence.get('presence:doc')).users.find((u) => u.id === 'alice')!
    expect(server.state).toBe('online')
    // bob's view, built from the frames he got, must match the server's
    const seen = [...bob.received('presence:join'), ...bob.received('presence:update')].filter((f) => f.user.id === 'alice').at(-1)!
    expect(seen.user.state).toBe(server.state)
  })

  it('updatePresence resolves with the reply to its request', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('presence:lobby')
    const result = await settleRace(t, alice.updatePresence('presence:lobby', { state: 'away' }))
    expect(result).not.toBe(PENDING)
    expect(result).toMatchObject({ type: 'presence:update', channel: 'presence:lobby', user: { id: 'alice', state: 'away' } })
  })

  it('the updater hears about its own update exactly once (with id); its other tabs get it without id', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const alice2 = await t.connect({ userId: 'alice' })
    await alice.subscribe('presence:lobby')
    await alice2.subscribe('presence:lobby')
    alice.send({ type: 'presence:update', channel: 'presence:lobby', state: 'away', id: 'up-1' })
    await t.settle()
    expect(alice.received('presence:update').map((f) => f.id)).toEqual(['up-1'])
    expect(alice2.received('presence:update')).toHaveLength(1)
    expect(alice2.received('presence:update')[0]!.id).toBeUndefined()
    expect(alice2.received('presence:update')[0]!.user.state).toBe('away')
  })

  it('accepts custom states by default and enforces presence.states when set', async () => {
    const t1 = makeHub()
    const a = await t1.connect({ userId: 'a' })
    const s = await a.subscribe('presence:x', { state: 'in-a-meeting' })
    expect(s.presence!.users[0]!.state).toBe('in-a-meeting')

    const t = makeHub({ presence: { states: ['online', 'away', 'busy'], defaultState: 'away' } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await rejectsWith(alice.subscribe('presence:x', { state: 'sleeping' }), 'RT_009')
    expect((await t.hub.connections.get(alice.connectionId))!.channels).toEqual([])
    const ok = await alice.subscribe('presence:x')
    expect(ok.presence!.users[0]!.state).toBe('away')
    await bob.subscribe('presence:x', { state: 'busy' })
    alice.send({ type: 'presence:update', channel: 'presence:x', id: 'u1', state: 'sleeping' })
    await t.settle()
    expect(lastError(alice)).toMatchObject({ id: 'u1', code: 'RT_009', channel: 'presence:x' })
    expect((await t.hub.presence.get('presence:x')).users.find((u) => u.id === 'alice')!.state).toBe('away')
    expect(bob.received('presence:update')).toEqual([])
    alice.send({ type: 'presence:update', channel: 'presence:x', state: 'busy' })
    await t.settle()
    expect(bob.received('presence:update').map((f) => f.user.state)).toEqual(['busy'])
    await stillWorks(alice)
  })

  it('presence frames on a non-presence or unsubscribed channel get RT_009', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('public:plain')
    const cases: Array<Record<string, unknown>> = [
      { type: 'presence:update', channel: 'public:plain', state: 'away' },
      { type: 'presence:update', channel: 'presence:not-joined', state: 'away' },
      { type: 'presence:update', channel: 'public:not-joined', state: 'away' },
      { type: 'presence:get', channel: 'public:plain' },
      { type: 'presence:get', channel: 'presence:not-joined' },
      { type: 'typing', channel: 'public:plain', active: true },
      { type: 'typing', channel: 'presence:not-joined', active: true },
    ]
    for (const [i, c] of cases.entries()) await rejectsWith(alice.request(c as never), 'RT_009').then((e) => expect(e.message, `case ${i}`).toBeTruthy())
    await alice.subscribe('presence:joined')
    await rejectsWith(alice.request({ type: 'presence:update', channel: 'presence:joined' }), 'RT_009')
    expect(t.hub.metrics().errors.RT_009).toBe(cases.length + 1)
    await stillWorks(alice)
  })

  it('anonymous connections may not join presence channels', async () => {
    const t = makeHub()
    const anon = await t.connect()
    await rejectsWith(anon.subscribe('presence:lobby'), 'RT_003')
    expect((await t.hub.presence.get('presence:lobby')).count).toBe(0)
  })

  it('rate-limits presence updates to 10 per second by default (RT_006), then refills', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('presence:x')
    await bob.subscribe('presence:x')
    for (let i = 0; i < 12; i++) alice.send({ type: 'presence:update', channel: 'presence:x', id: `u${i}`, data: { i } })
    await t.settle()
    expect(bob.received('presence:update')).toHaveLength(10)
    const errs = errors(alice)
    expect(errs.map((e) => [e.id, e.code, e.details])).toEqual([
      ['u10', 'RT_006', { limit: 10 }],
      ['u11', 'RT_006', { limit: 10 }],
    ])
    expect((await t.hub.presence.get('presence:x')).users.find((u) => u.id === 'alice')!.data).toEqual({ i: 9 })
    await t.advance(1000)
    alice.send({ type: 'presence:update', channel: 'presence:x', data: { i: 99 } })
    await t.settle()
    expect(bob.received('presence:update')).toHaveLength(11)
    await stillWorks(alice)
  })

  it('getPresence from the hub, a channel handle and a client agree', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('presence:room', { presence: { x: 1 } })
    await bob.subscribe('presence:room', { presence: { y: 2 } })
    const a = await t.hub.presence.get('presence:room')
    const b = await t.hub.channel('presence:room').getPresence()
    const c = await alice.getPresence('presence:room')
    expect(a.count).toBe(2)
    expect(b).toEqual(a)
    expect(c).toEqual(a)
    expect(await t.hub.presence.get('presence:empty')).toEqual({ users: [], count: 0 })
  })

  it('tracks lastSeen: join time, then the latest update', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('presence:x')
    await t.advance(10_000)
    alice.send({ type: 'presence:update', channel: 'presence:x', state: 'away' })
    await t.settle()
    const m = (await t.hub.presence.get('presence:x')).users[0]!
    expect(m.joinedAt).toBe(start)
    expect(m.lastSeen).toBe(start + 10_000)
  })

  it('with leaveDelayMs, a reconnect within the delay shows no leave and no join', async () => {
    const t = makeHub({ presence: { leaveDelayMs: 5000 } })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('presence:room')
    const a1 = await t.connect({ userId: 'alice' })
    await a1.subscribe('presence:room')
    await t.settle()
    expect(bob.received('presence:join')).toHaveLength(1)

    a1.drop()
    await t.advance(2000)
    expect(bob.received('presence:leave')).toEqual([])
    expect((await t.hub.presence.get('presence:room')).count).toBe(2)
    const a2 = await t.connect({ userId: 'alice' })
    await a2.subscribe('presence:room')
    await t.advance(10_000)
    expect(bob.received('presence:join')).toHaveLength(1)
    expect(bob.received('presence:leave')).toEqual([])
    const alice = (await t.hub.presence.get('presence:room')).users.find((u) => u.id === 'alice')!
    expect(alice.connections).toBe(1)

    // without a reconnect, the leave comes once the delay passed
    a2.close()
    await t.advance(4999)
    expect(bob.received('presence:leave')).toEqual([])
    await t.advance(1)
    expect(bob.received('presence:leave').map((f) => [f.user.id, f.user.lastSeen])).toEqual([['alice', start + 12_000 + 5000]])
    expect((await t.hub.presence.get('presence:room')).count).toBe(1)
  })

  it('with leaveDelayMs, unsubscribing and resubscribing on the same connection keeps the member', async () => {
    const t = makeHub({ presence: { leaveDelayMs: 5000 } })
    const bob = await t.connect({ userId: 'bob' })
    const alice = await t.connect({ userId: 'alice' })
    await bob.subscribe('presence:room')
    await alice.subscribe('presence:room')
    await alice.unsubscribe('presence:room')
    await t.advance(1000)
    await alice.subscribe('presence:room')
    await t.advance(10_000)
    expect(bob.received('presence:leave')).toEqual([])
    const snap = await t.hub.presence.get('presence:room')
    expect(snap.users.map((u) => u.id).sort()).toEqual(['alice', 'bob'])
  })
})

// ---------------------------------------------------------------------------- typing

describe('typing indicators', () => {
  /** Send a typing frame and let the hub handle it before the clock moves. */
  async function type(t: TestHub, c: MemoryClient, active = true) {
    c.typing('presence:chat', active)
    await t.settle()
  }

  async function room(options: HubOptions = {}) {
    const t = makeHub(options)
    const alice = await t.connect({ userId: 'alice' })
    const alice2 = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    for (const c of [alice, alice2, bob, carol]) await c.subscribe('presence:chat')
    await t.settle()
    return { t, alice, alice2, bob, carol }
  }

  it('broadcasts typing to the others, not to the typer', async () => {
    const { t, alice, alice2, bob, carol } = await room()
    alice.typing('presence:chat')
    await t.settle()
    for (const c of [bob, carol]) expect(c.received('typing')).toEqual([{ type: 'typing', channel: 'presence:chat', userId: 'alice', active: true }])
    expect(alice.received('typing')).toEqual([])
    expect(alice2.received('typing')).toEqual([])
    expect(errors(alice)).toEqual([])
  })

  it('debounces to one active event per 2 s per user', async () => {
    const { t, alice, bob } = await room()
    await type(t, alice)
    await t.advance(500)
    await type(t, alice)
    await t.advance(1000)
    await type(t, alice)
    await t.advance(499) // 1999 ms after the first
    await type(t, alice)
    expect(bob.received('typing').filter((f) => f.active)).toHaveLength(1)
    await t.advance(1) // 2000 ms
    await type(t, alice)
    expect(bob.received('typing').map((f) => f.active)).toEqual([true, true])
  })

  it('debounces per user: two users typing both show', async () => {
    const { t, alice, bob, carol } = await room()
    alice.typing('presence:chat')
    bob.typing('presence:chat')
    await t.settle()
    expect(carol.received('typing').map((f) => f.userId)).toEqual(['alice', 'bob'])
    expect(alice.received('typing').map((f) => f.userId)).toEqual(['bob'])
  })

  it('clears itself with active:false 5 s after the last refresh', async () => {
    const { t, alice, bob } = await room()
    await type(t, alice)
    await t.advance(4999)
    expect(bob.received('typing').map((f) => f.active)).toEqual([true])
    await t.advance(1)
    expect(bob.received('typing')).toEqual([
      { type: 'typing', channel: 'presence:chat', userId: 'alice', active: true },
      { type: 'typing', channel: 'presence:chat', userId: 'alice', active: false },
    ])
    // a refresh pushes the timeout back
    await type(t, alice)
    await t.advance(1000)
    await type(t, alice) // debounced, but refreshes
    await t.advance(4999)
    expect(bob.received('typing').map((f) => f.active)).toEqual([true, false, true])
    await t.advance(1)
    expect(bob.received('typing').map((f) => f.active)).toEqual([true, false, true, false])
    expect(t.clock.pending()).toBe(0)
  })

  it('stop sends active:false at once, and the next start is not debounced', async () => {
    const { t, alice, bob } = await room()
    await type(t, alice, true)
    await t.advance(100)
    await type(t, alice, false)
    expect(bob.received('typing').map((f) => f.active)).toEqual([true, false])
    // stopping again does nothing
    await type(t, alice, false)
    await t.advance(100)
    await type(t, alice, true)
    expect(bob.received('typing').map((f) => f.active)).toEqual([true, false, true])
    // the earlier timer was cancelled: only one clear, 5 s after the last start
    await t.advance(10_000)
    expect(bob.received('typing').map((f) => f.active)).toEqual([true, false, true, false])
  })

  it('typingIndicators: false suppresses the user’s typing but not what they see', async () => {
    const { t, alice, bob, carol } = await room()
    t.hub.preferences.set('alice', { typingIndicators: false })
    await type(t, alice)
    await type(t, bob)
    await t.advance(6000)
    expect(carol.received('typing').filter((f) => f.userId === 'alice')).toEqual([])
    expect(bob.received('typing')).toEqual([])
    expect(alice.received('typing').map((f) => [f.userId, f.active])).toEqual([
      ['bob', true],
      ['bob', false],
    ])
    expect(errors(alice)).toEqual([])
  })

  it('a disconnect clears the typing indicator', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('presence:chat')
    await bob.subscribe('presence:chat')
    alice.typing('presence:chat')
    await t.settle()
    alice.drop()
    await t.settle()
    expect(bob.received('typing').map((f) => [f.userId, f.active])).toEqual([
      ['alice', true],
      ['alice', false],
    ])
    expect(t.clock.pending()).toBe(0)
    await t.advance(10_000)
    expect(bob.received('typing')).toHaveLength(2)
  })

  it('unsubscribing clears typing too, but not while the user has another tab in the channel', async () => {
    const { t, alice, alice2, bob } = await room()
    alice.typing('presence:chat')
    await t.settle()
    await alice.unsubscribe('presence:chat')
    await t.settle()
    expect(bob.received('typing').map((f) => f.active)).toEqual([true])
    await alice2.unsubscribe('presence:chat')
    await t.settle()
    expect(bob.received('typing').map((f) => f.active)).toEqual([true, false])
  })

  it('typing frames count against the presence rate limit', async () => {
    const { t, alice } = await room()
    for (let i = 0; i < 11; i++) alice.typing('presence:chat')
    await t.settle()
    expect(errors(alice).map((e) => [e.code, e.channel])).toEqual([['RT_006', 'presence:chat']])
    // the presence bucket is shared: an update right after is refused too
    await rejectsWith(alice.updatePresence('presence:chat', { state: 'away' }), 'RT_006')
    await t.advance(1000)
    const ok = await alice.updatePresence('presence:chat', { state: 'away' })
    expect(ok.user.state).toBe('away')
  })
})

// ---------------------------------------------------------------------------- limits

describe('input limits', () => {
  it('rejects a frame over 128 KiB with RT_005 and keeps the connection', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:big')
    const big = JSON.stringify({ type: 'message', channel: 'public:big', event: 'e', data: 'x'.repeat(128 * 1024) })
    alice.send(big)
    await t.settle()
    expect(lastError(alice)).toMatchObject({ code: 'RT_005', details: { limit: 128 * 1024 } })
    expect(bob.messages()).toEqual([])
    expect(t.hub.metrics().errors.RT_005).toBe(1)
    await stillWorks(alice)
    // just under the limit is accepted
    const fits = await alice.publish('public:big', 'e', 'x'.repeat(100 * 1024))
    expect(fits.type).toBe('published')
  })

  it('applies a configured maxMessageSize and a channel maxMessageSize', async () => {
    const t = makeHub({ limits: { maxMessageSize: 2048 }, channels: { 'small:*': { subscribe: true, publish: true, maxMessageSize: 256 } } })
    const alice = await t.connect({ userId: 'alice' })
    expect(alice.received('connected')[0]!.limits.maxMessageSize).toBe(2048)
    alice.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(3000) }))
    await t.settle()
    expect(lastError(alice)).toMatchObject({ code: 'RT_005', details: { limit: 2048 } })
    const err = await rejectsWith(alice.publish('small:x', 'e', 'y'.repeat(500)), 'RT_005')
    expect(err.details).toEqual({ limit: 256 })
    const ok = await alice.publish('small:x', 'e', 'y')
    expect(ok.type).toBe('published')
    await rejectsWith(t.hub.publish('small:x', 'e', 'y'.repeat(500)), 'RT_005')
  })

  it('rate-limits to 100 frames per second per connection (RT_006), and tokens refill with the clock', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    for (let i = 0; i < 120; i++) alice.send({ type: 'ping', id: i })
    await t.settle()
    expect(alice.received('pong')).toHaveLength(100)
    const errs = errors(alice)
    expect(errs).toHaveLength(20)
    expect(errs.every((e) => e.code === 'RT_006')).toBe(true)
    expect(errs[0]!.id).toBe(100)
    expect(errs[0]!.details!['retryAfterMs']).toBeGreaterThan(0)
    expect(t.hub.metrics().errors.RT_006).toBe(20)
    // other connections have their own bucket
    await stillWorks(bob)
    // still limited without time passing
    await rejectsWith(alice.ping(), 'RT_006')
    await t.advance(50) // 5 tokens
    for (let i = 0; i < 5; i++) await alice.ping()
    await rejectsWith(alice.ping(), 'RT_006')
    await t.advance(1000)
    await stillWorks(alice)
  })

  it('honours a configured messagesPerSecond', async () => {
    const t = makeHub({ limits: { messagesPerSecond: 5 } })
    const alice = await t.connect({ userId: 'alice' })
    expect(alice.received('connected')[0]!.limits.messagesPerSecond).toBe(5)
    for (let i = 0; i < 7; i++) alice.send({ type: 'ping' })
    await t.settle()
    expect(alice.received('pong')).toHaveLength(5)
    expect(errors(alice).map((e) => e.code)).toEqual(['RT_006', 'RT_006'])
  })

  it.each<[string, string]>([
    ['malformed JSON', '{"type": "ping"'],
    ['plain text', 'hello'],
    ['JSON null', 'null'],
    ['a number', '42'],
    ['an array', '[1,2]'],
    ['no type', '{"channel":"public:x"}'],
    ['an unknown type', '{"type":"bogus"}'],
    ['a subscribe without a channel', '{"type":"subscribe"}'],
    ['a bad channel name', '{"type":"subscribe","channel":"bad name!"}'],
    ['an unknown field', '{"type":"ping","extra":1}'],
    ['a message without an event', '{"type":"message","channel":"public:x"}'],
    ['a wrong field type', '{"type":"typing","channel":"presence:x","active":"yes"}'],
    ['a bad protocol version', '{"type":"ping","v":2}'],
  ])('answers %s with RT_007 and keeps the connection', async (_name, raw) => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const events: string[] = []
    t.hub.on('client:error', (e) => events.push(e.code))
    alice.send(raw)
    await t.settle()
    expect(errors(alice).map((e) => e.code)).toEqual(['RT_007'])
    expect(events).toEqual(['RT_007'])
    expect(t.hub.metrics().errors.RT_007).toBe(1)
    await stillWorks(alice)
  })

  it('a schema-invalid request is answered with its id', async () => {
    const t = makeHub()
    const alice = await t.connect({ userId: 'alice' })
    const err = await rejectsWith(alice.request({ type: 'message', channel: 'public:x' } as never), 'RT_007')
    expect(err.message).toMatch(/event/)
    expect(lastError(alice)!.id).toMatch(/^r\d+$/)
  })

  it('keeps working after a mix of every kind of rejection', async () => {
    const t = makeHub({ limits: { maxMessageSize: 1024 } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:x')
    alice.send('x'.repeat(2000))
    alice.send('{oops')
    alice.send({ type: 'nope' })
    await rejectsWith(alice.subscribe('nopattern'), 'RT_004')
    await rejectsWith(alice.request({ type: 'presence:update', channel: 'public:x', state: 'a' }), 'RT_009')
    await t.settle()
    expect(errors(alice).map((e) => e.code)).toEqual(['RT_005', 'RT_007', 'RT_007', 'RT_004', 'RT_009'])
    const r = await alice.publish('public:x', 'fine')
    await t.settle()
    expect(bob.messages().map((m) => m.id)).toEqual([r.messageId])
    expect(alice.closed).toBe(false)
  })
})

// ---------------------------------------------------------------------------- metrics

describe('metrics', () => {
  it('counts connections, subscriptions per channel, frames, bytes, publishes and errors', async () => {
    const t = makeHub()
    const m0 = t.hub.metrics()
    expect(m0).toMatchObject({ nodeId: t.hub.nodeId, connections: 0, channels: 0, subscriptions: 0, messagesIn: 0, messagesOut: 0, bytesIn: 0, bytesOut: 0, published: 0, dropped: 0 })
    expect(Object.values(m0.errors).every((n) => n === 0)).toBe(true)
    expect(Object.keys(m0.errors).sort()).toEqual(['RT_001', 'RT_002', 'RT_003', 'RT_004', 'RT_005', 'RT_006', 'RT_007', 'RT_008', 'RT_009'])

    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    const sent: string[] = []
    const send = (c: MemoryClient, frame: Record<string, unknown> | string) => {
      const s = typeof frame === 'string' ? frame : JSON.stringify(frame)
      sent.push(s)
      c.send(s)
    }
    send(bob, { type: 'subscribe', channel: 'public:a', id: 1 })
    send(carol, { type: 'subscribe', channel: 'public:a', id: 1 })
    send(carol, { type: 'subscribe', channel: 'public:b', id: 2 })
    await t.settle()
    send(alice, { type: 'message', channel: 'public:a', event: 'e', data: { n: 'ü' }, id: 3 })
    send(alice, { type: 'message', channel: 'public:b', event: 'e', id: 4 })
    send(alice, '{bad json')
    send(alice, { type: 'subscribe', channel: 'nopattern', id: 5 })
    await t.settle()
    await t.hub.publish('public:a', 'server')

    const m = t.hub.metrics()
    expect(m.connections).toBe(3)
    expect(m.channels).toBe(2)
    expect(m.subscriptions).toBe(3)
    expect(m.subscriptionsByChannel).toEqual({ 'public:a': 2, 'public:b': 1 })
    expect(m.messagesIn).toBe(sent.length)
    expect(m.bytesIn).toBe(sent.reduce((n, s) => n + Buffer.byteLength(s, 'utf8'), 0))
    const frames = [alice, bob, carol].flatMap((c) => c.frames)
    expect(m.messagesOut).toBe(frames.length)
    expect(m.bytesOut).toBe(frames.reduce((n, f) => n + Buffer.byteLength(JSON.stringify(f), 'utf8'), 0))
    expect(m.published).toBe(3)
    expect(m.errors.RT_007).toBe(1)
    expect(m.errors.RT_004).toBe(1)
    expect(m.connectionsOpened).toBe(3)
    expect(m.connectionsClosed).toBe(0)

    carol.close()
    const after = t.hub.metrics()
    expect(after.connections).toBe(2)
    expect(after.connectionsClosed).toBe(1)
    expect(after.subscriptionsByChannel).toEqual({ 'public:a': 1 })
  })

  it('the snapshot is a copy', async () => {
    const t = makeHub()
    const m = t.hub.metrics()
    ;(m.errors as Record<string, number>)['RT_001'] = 99
    expect(t.hub.metrics().errors.RT_001).toBe(0)
  })
})

// ---------------------------------------------------------------------------- backpressure

describe('backpressure', () => {
  it('queues over the high-water mark, drops volatile frames and delivers the queue in order on resume', async () => {
    const t = makeHub({ limits: { highWaterMark: 1000, maxQueuedBytes: 1_000_000 } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:feed')
    await bob.subscribe('presence:chat')
    await alice.subscribe('presence:chat')
    await t.settle()
    const framesBefore = bob.frames.length

    bob.pause()
    const sizes: number[] = []
    for (let i = 0; i < 20; i++) {
      await t.hub.publish('public:feed', 'item', { i, pad: 'x'.repeat(150) })
      sizes.push(bob.bufferedBytes)
    }
    // buffered bytes grew, then stopped growing once over the high-water mark
    expect(sizes[0]).toBeGreaterThan(0)
    expect(sizes[1]).toBeGreaterThan(sizes[0]!)
    const peak = sizes.at(-1)!
    expect(peak).toBeGreaterThanOrEqual(1000)
    expect(peak).toBeLessThan(1500)
    expect(sizes.filter((s) => s === peak).length).toBeGreaterThan(10)
    expect(bob.frames.length).toBe(framesBefore)

    const droppedBefore = t.hub.metrics().dropped
    alice.typing('presence:chat')
    await t.settle()
    expect(t.hub.metrics().dropped).toBe(droppedBefore + 1)
    expect(errors(alice)).toEqual([])

    bob.resume()
    await t.settle()
    const items = bob.messages('public:feed').map((m) => (m.data as { i: number }).i)
    expect(items).toEqual(Array.from({ length: 20 }, (_, i) => i))
    expect(bob.messages('public:feed').map((m) => m.offset)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
    expect(bob.received('typing')).toEqual([])
    expect(bob.bufferedBytes).toBe(0)
    expect(bob.closed).toBe(false)

    // back to direct delivery
    await t.hub.publish('public:feed', 'item', { i: 20 })
    await t.settle()
    expect(bob.messages('public:feed')).toHaveLength(21)
  })

  it('closes a connection whose queue grows over maxQueuedBytes with 4009, others are fine', async () => {
    const t = makeHub({ limits: { highWaterMark: 500, maxQueuedBytes: 4000 } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('public:feed')
    await bob.subscribe('public:feed')
    const closes: Array<[string | undefined, number]> = []
    t.hub.on('disconnect', (info, c) => closes.push([info.userId, c.code]))
    bob.pause()
    const results: Array<{ recipients: number }> = []
    for (let i = 0; i < 30; i++) results.push(await t.hub.publish('public:feed', 'item', { i, pad: 'y'.repeat(200) }))
    expect(bob.closed).toBe(true)
    expect(bob.closeCode).toBe(4009)
    expect(closes).toEqual([['bob', 4009]])
    expect(await t.hub.connections.get(bob.connectionId)).toBeUndefined()
    expect(t.hub.metrics().subscriptionsByChannel).toEqual({ 'public:feed': 1 })
    expect(results.at(-1)!.recipients).toBe(1)
    await t.settle()
    expect(alice.messages('public:feed')).toHaveLength(30)
    expect(alice.closed).toBe(false)
  })

  it('while congested, volatile publishes are dropped and high priority overtakes queued frames', async () => {
    const t = makeHub({ limits: { highWaterMark: 300, maxQueuedBytes: 1_000_000 } })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:feed')
    bob.pause()
    const publish = (n: number, o: { priority?: 'high' | 'normal' | 'low'; volatile?: boolean } = {}) =>
      t.hub.publish('public:feed', 'item', { n, pad: 'z'.repeat(100) }, o)
    // fill the session buffer until it reports full
    let n = 0
    while (bob.bufferedBytes < 300) await publish(n++)
    const inFlight = n
    const dropped = t.hub.metrics().dropped
    await publish(n++, { priority: 'low' })
    await publish(n++)
    const v = await publish(n++, { volatile: true })
    expect(v.recipients).toBe(0)
    expect(t.hub.metrics().dropped).toBe(dropped + 1)
    await publish(n++, { priority: 'high' })
    await publish(n++)
    bob.resume()
    await t.settle()
    const order = bob.messages('public:feed').map((m) => (m.data as { n: number }).n)
    const first = Array.from({ length: inFlight }, (_, i) => i)
    // in-flight frames first, then the queue: high, normal in order, low last; the volatile one is gone
    expect(order).toEqual([...first, inFlight + 3, inFlight + 1, inFlight + 4, inFlight])
    expect(bob.messages('public:feed').find((m) => m.priority === 'high')).toBeDefined()
  })

  it('a connection congested while subscribing gets its reply on resume, then live messages', async () => {
    const t = makeHub({ limits: { highWaterMark: 200, maxQueuedBytes: 1_000_000 } })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:a')
    bob.pause()
    for (let i = 0; i < 5; i++) await t.hub.publish('public:a', 'fill', { pad: 'p'.repeat(100) })
    const sub = bob.subscribe('public:b')
    await t.settle()
    expect(await settleRace(t, sub)).toBe(PENDING)
    bob.resume()
    await t.settle()
    expect((await sub).channel).toBe('public:b')
    await t.hub.publish('public:b', 'live', 1)
    await t.hub.publish('public:a', 'live', 2)
    await t.settle()
    expect(bob.messages('public:b').map((m) => m.data)).toEqual([1])
    expect(bob.messages('public:a').map((m) => m.event)).toEqual(['fill', 'fill', 'fill', 'fill', 'fill', 'live'])
  })

  it('a paused client that stays under the limit loses nothing', async () => {
    const t = makeHub({ limits: { highWaterMark: 200, maxQueuedBytes: 100_000 } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('public:chat')
    bob.pause()
    for (let i = 0; i < 40; i++) alice.send({ type: 'message', channel: 'public:chat', event: 'm', data: i })
    await alice.ping()
    await t.settle()
    expect(bob.messages()).toEqual([])
    bob.resume()
    await t.settle()
    expect(bob.messages().map((m) => m.data)).toEqual(Array.from({ length: 40 }, (_, i) => i))
  })
})

// ---------------------------------------------------------------------------- two hubs

describe('two hubs on a memory bus', () => {
  async function cluster() {
    const bus = createMemoryBus()
    const a = makeHub({ broker: bus.broker(), nodeId: 'node-a' })
    const b = makeHub({ clock: a.clock, broker: bus.broker(), nodeId: 'node-b' })
    return { bus, a, b }
  }

  it('a publish on hub A reaches a subscriber on hub B exactly once, and is not echoed back to A', async () => {
    const { bus, a, b } = await cluster()
    const alice = await a.connect({ userId: 'alice' })
    const watcherA = await a.connect({ userId: 'wa' })
    const bob = await b.connect({ userId: 'bob' })
    await watcherA.subscribe('public:x')
    await bob.subscribe('public:x')
    const r = await alice.publish('public:x', 'hello', { n: 1 })
    await a.settle()
    await b.settle()
    expect(bob.messages('public:x')).toHaveLength(1)
    expect(bob.messages('public:x')[0]).toMatchObject({ id: r.messageId, event: 'hello', data: { n: 1 }, sender: 'alice', offset: 1 })
    expect(watcherA.messages('public:x').map((m) => m.id)).toEqual([r.messageId])
    expect(alice.messages()).toEqual([])
    expect(bus.published).toBeGreaterThanOrEqual(1)

    // and the other way round
    const r2 = await b.hub.publish('public:x', 'from-b')
    await a.settle()
    expect(watcherA.messages('public:x').map((m) => m.id)).toEqual([r.messageId, r2.messageId])
    expect(bob.messages('public:x').map((m) => m.id)).toEqual([r.messageId, r2.messageId])
  })

  it('exclusions, broadcasts and where filters cross the bus', async () => {
    const { a, b } = await cluster()
    const alice = await a.connect({ userId: 'alice' })
    const bob = await b.connect({ identity: { userId: 'bob', claims: { plan: 'pro' } } })
    const carol = await b.connect({ identity: { userId: 'carol', claims: { plan: 'free' } } })
    await a.hub.broadcast({ to: 'all', event: 'all', exclude: { users: ['carol'] } })
    await a.hub.broadcast({ to: { users: ['bob'] }, event: 'direct' })
    await a.hub.broadcast({ to: 'all', event: 'pro', where: { field: 'user.claims.plan', op: 'eq', value: 'pro' } })
    await a.hub.broadcast({ to: { connections: [carol.connectionId] }, event: 'conn' })
    await a.settle()
    expect(alice.messages().map((m) => m.event)).toEqual(['all'])
    expect(bob.messages().map((m) => m.event)).toEqual(['all', 'direct', 'pro'])
    expect(carol.messages().map((m) => m.event)).toEqual(['conn'])
  })

  it('disconnectUser on A closes the user’s connections on B', async () => {
    const { a, b } = await cluster()
    const bobA = await a.connect({ userId: 'bob' })
    const bobB = await b.connect({ userId: 'bob' })
    const carolB = await b.connect({ userId: 'carol' })
    expect(await a.hub.connections.disconnectUser('bob', 'banned')).toBe(1)
    expect(bobA.closed).toBe(true)
    await a.settle()
    await b.settle()
    expect(bobB.closed).toBe(true)
    expect(bobB.closeCode).toBe(4000)
    expect(bobB.closeReason).toBe('banned')
    expect(b.hub.connections.local({ userId: 'bob' })).toEqual([])
    expect(carolB.closed).toBe(false)
  })

  it('disconnect of a connection id held by B is forwarded from A', async () => {
    const { a, b } = await cluster()
    const bobB = await b.connect({ userId: 'bob' })
    expect(await a.hub.connections.disconnect(bobB.connectionId)).toBe(false)
    await a.settle()
    expect(bobB.closed).toBe(true)
    expect(bobB.closeCode).toBe(4000)
  })

  it('kick on A removes the user from the channel on B', async () => {
    const { a, b } = await cluster()
    const bobB = await b.connect({ userId: 'bob' })
    await bobB.subscribe('public:room')
    expect(await a.hub.channel('public:room').kick('bob', 'spam')).toBe(0)
    await a.settle()
    expect(bobB.received('unsubscribed')).toContainEqual({ type: 'unsubscribed', channel: 'public:room', reason: 'spam' })
    expect((await b.hub.connections.get(bobB.connectionId))!.channels).toEqual([])
  })
})
