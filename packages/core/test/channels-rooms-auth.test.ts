import { describe, expect, it, vi } from 'vitest'
import { z } from 'zod'
import {
  type AuthRequest,
  type AuthorizeContext,
  type ErrorCode,
  type HubEvents,
  type RoomInfo,
  type ServerFrameOf,
  CloseCode,
  RealtimeError,
  createApiKeyAuthenticator,
  createMemoryStore,
  createTokenAuthenticator,
} from '@tidings/core'
import { type MemoryClient, type MemoryConnectOptions, type TestHub, createTestHub } from '@tidings/core/testing'

// ---------------------------------------------------------------------------------------- helpers

/**
 * Runs `act` (which sends one frame), expects it to be rejected with `code`, expects the hub's
 * error counter for that code to grow by exactly one, and expects the connection to still work.
 */
async function expectRejected(t: TestHub, client: MemoryClient, act: () => Promise<unknown>, code: ErrorCode): Promise<RealtimeError> {
  const before = t.hub.metrics().errors[code]
  const err = await act().then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err, `expected a rejection with ${code}`).toBeInstanceOf(RealtimeError)
  const rte = err as RealtimeError
  expect(rte.code).toBe(code)
  expect(client.received('error').at(-1)?.code).toBe(code)
  expect(t.hub.metrics().errors[code]).toBe(before + 1)
  // the connection stays usable
  expect(client.closed).toBe(false)
  await expect(client.ping()).resolves.toMatchObject({ type: 'pong' })
  return rte
}

/** Expects `t.connect(options)` to be refused with `code` and the session closed with `closeCode`. */
async function expectRefused(t: TestHub, options: MemoryConnectOptions, code: ErrorCode, closeCode: number): Promise<MemoryClient> {
  const before = t.hub.metrics().errors[code]
  const opened = t.hub.metrics().connectionsOpened
  const err = await t.connect(options).then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err, `expected the connection to be refused with ${code}`).toBeInstanceOf(RealtimeError)
  expect((err as RealtimeError).code).toBe(code)
  const client = t.transport.clients.at(-1)!
  expect(client.closed).toBe(true)
  expect(client.closeCode).toBe(closeCode)
  expect(client.received('error').map((f) => f.code)).toEqual([code])
  expect(client.received('connected')).toEqual([])
  expect(t.hub.metrics().errors[code]).toBe(before + 1)
  expect(t.hub.metrics().connectionsOpened).toBe(opened)
  return client
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((r) => (resolve = r))
  return { promise, resolve }
}

type Recorded = { event: string; channel: string; userId?: string | undefined }

/** Records the room lifecycle events of a hub, in order. */
function recordRoomEvents(t: TestHub): Recorded[] {
  const log: Recorded[] = []
  const on = <K extends 'room:created' | 'room:emptied' | 'room:deleted'>(name: K) =>
    t.hub.on(name, ((room: RoomInfo) => log.push({ event: name, channel: room.channel })) as HubEvents[K])
  on('room:created')
  on('room:emptied')
  on('room:deleted')
  t.hub.on('room:member-joined', (e) => log.push({ event: 'room:member-joined', channel: e.room.channel, userId: e.userId }))
  t.hub.on('room:member-left', (e) => log.push({ event: 'room:member-left', channel: e.room.channel, userId: e.userId }))
  return log
}

// ---------------------------------------------------------------------------------------- channels

describe('channels by name', () => {
  it('public:* — anyone (even anonymous) subscribes; publishing needs an authenticated user', async () => {
    await using t = createTestHub()
    const anon = await t.connect()
    const alice = await t.connect({ userId: 'alice' })
    expect(anon.userId).toBeUndefined()

    await expect(anon.subscribe('public:news')).resolves.toMatchObject({ type: 'subscribed', channel: 'public:news' })
    const err = await expectRejected(t, anon, () => anon.publish('public:news', 'hello', { text: 'anon' }), 'RT_003')
    expect(err.message).toMatch(/authentication required/)
    expect(anon.received('error').at(-1)).toMatchObject({ code: 'RT_003', channel: 'public:news' })

    await expect(alice.publish('public:news', 'hello', { text: 'hi' })).resolves.toMatchObject({ type: 'published', channel: 'public:news' })
    await t.settle()
    expect(anon.messages('public:news').map((m) => [m.event, m.data, m.sender])).toEqual([['hello', { text: 'hi' }, 'alice']])
    // no echo to the publisher by default
    expect(alice.messages('public:news')).toEqual([])

    // server code may always publish
    await t.hub.publish('public:news', 'server', { n: 1 })
    await t.settle()
    expect(anon.messages('public:news').map((m) => m.event)).toEqual(['hello', 'server'])
  })

  it('private:user-<id> — only that user subscribes and publishes; server code reaches them', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    const alice2 = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const anon = await t.connect()

    await alice.subscribe('private:user-alice')
    await alice2.subscribe('private:user-alice')
    await expectRejected(t, bob, () => bob.subscribe('private:user-alice'), 'RT_003')
    await expectRejected(t, anon, () => anon.subscribe('private:user-alice'), 'RT_003')
    await expectRejected(t, bob, () => bob.publish('private:user-alice', 'spoof', {}), 'RT_003')

    await expect(alice.publish('private:user-alice', 'note', { a: 1 })).resolves.toMatchObject({ type: 'published' })
    const r = await t.hub.publish('private:user-alice', 'notify', { b: 2 })
    expect(r.recipients).toBe(2)
    await t.settle()
    expect(alice2.messages('private:user-alice').map((m) => m.event)).toEqual(['note', 'notify'])
    expect(alice.messages('private:user-alice').map((m) => m.event)).toEqual(['notify'])
    expect(bob.messages()).toEqual([])

    // the id part must be present
    await expectRejected(t, alice, () => alice.subscribe('private:user-'), 'RT_004')
  })

  it('private:room-<id> — a missing room is RT_004; members only', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })

    const err = await expectRejected(t, alice, () => alice.subscribe('private:room-42'), 'RT_004')
    expect(err.message).toMatch(/room/)
    expect(t.hub.channels.list()).toEqual([])

    t.hub.rooms.create('private:room-42', { members: ['alice'] })
    const sub = await alice.subscribe('private:room-42')
    // room channels track presence
    expect(sub.presence?.users.map((u) => u.id)).toEqual(['alice'])
    await expectRejected(t, bob, () => bob.subscribe('private:room-42'), 'RT_003')
    await expectRejected(t, bob, () => bob.publish('private:room-42', 'x', {}), 'RT_003')

    t.hub.rooms.addMember('private:room-42', 'bob')
    await expect(bob.subscribe('private:room-42')).resolves.toMatchObject({ channel: 'private:room-42' })
    await bob.publish('private:room-42', 'hi', { from: 'bob' })
    await t.settle()
    expect(alice.messages('private:room-42').map((m) => m.data)).toEqual([{ from: 'bob' }])
  })

  it('presence:* — authenticated users only; members are tracked', async () => {
    await using t = createTestHub()
    const anon = await t.connect()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })

    await expectRejected(t, anon, () => anon.subscribe('presence:lobby'), 'RT_003')
    const a = await alice.subscribe('presence:lobby', { presence: { name: 'Alice' } })
    expect(a.presence).toMatchObject({ count: 1, users: [{ id: 'alice', data: { name: 'Alice' } }] })
    const joined = alice.next('presence:join')
    const b = await bob.subscribe('presence:lobby')
    expect(b.presence?.count).toBe(2)
    expect((await joined).user.id).toBe('bob')
    expect((await t.hub.presence.get('presence:lobby')).users.map((u) => u.id).sort()).toEqual(['alice', 'bob'])
  })

  it('db:collection:* is reserved: RT_004 while no live query provider is installed', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    const err = await expectRejected(t, alice, () => alice.subscribe('db:collection:orders'), 'RT_004')
    expect(err.message).toMatch(/live query/)
    await expectRejected(t, alice, () => alice.publish('db:collection:orders', 'insert', { id: 1 }), 'RT_004')
    // other names under db: are not channels either
    await expectRejected(t, alice, () => alice.subscribe('db:other'), 'RT_004')
    await expect(t.hub.publish('db:collection:orders', 'insert', {})).rejects.toMatchObject({ code: 'RT_004' })
    expect(t.hub.channels.list()).toEqual([])
  })

  it('an unknown namespace is RT_004 (subscribe, publish, server publish)', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    await expectRejected(t, alice, () => alice.subscribe('unknown:thing'), 'RT_004')
    await expectRejected(t, alice, () => alice.subscribe('nocolon'), 'RT_004')
    await expectRejected(t, alice, () => alice.publish('unknown:thing', 'e', {}), 'RT_004')
    await expect(t.hub.publish('unknown:thing', 'e')).rejects.toMatchObject({ code: 'RT_004' })
    // a name that is not even valid is a format error, not "not found"
    await expect(t.hub.publish('bad name!', 'e')).rejects.toMatchObject({ code: 'RT_007' })
    await expectRejected(t, alice, () => alice.subscribe('has space'), 'RT_007')
  })

  it('custom {scope}:{entity}:{id} pattern: its rule gets identity, action, channel and params', async () => {
    const rule = vi.fn((ctx: AuthorizeContext) => ctx.identity.claims?.['supplierId'] === ctx.params['id'])
    await using t = createTestHub({ channels: { '{scope}:{entity}:{id}': { subscribe: rule, publish: rule } } })
    const supplier = await t.connect({ identity: { userId: 'acme-user', claims: { supplierId: '123' } } })
    const other = await t.connect({ identity: { userId: 'globex-user', claims: { supplierId: '456' } } })

    await expect(supplier.subscribe('supplier:dashboard:123')).resolves.toMatchObject({ channel: 'supplier:dashboard:123' })
    expect(rule).toHaveBeenCalledWith(
      expect.objectContaining({
        channel: 'supplier:dashboard:123',
        action: 'subscribe',
        params: { scope: 'supplier', entity: 'dashboard', id: '123' },
        identity: expect.objectContaining({ userId: 'acme-user' }),
        room: undefined,
      }),
    )
    await expectRejected(t, other, () => other.subscribe('supplier:dashboard:123'), 'RT_003')
    await expectRejected(t, other, () => other.publish('supplier:dashboard:123', 'kpi', { v: 1 }), 'RT_003')
    expect(rule).toHaveBeenLastCalledWith(expect.objectContaining({ action: 'publish', params: { scope: 'supplier', entity: 'dashboard', id: '123' } }))

    expect(t.hub.channels.list()).toEqual([
      expect.objectContaining({ name: 'supplier:dashboard:123', pattern: '{scope}:{entity}:{id}', subscribers: 1, occupants: 1 }),
    ])
    // two parts do not match a three-part pattern
    await expectRejected(t, supplier, () => supplier.subscribe('supplier:123'), 'RT_004')
  })

  it('rules may be async; a rule that throws or rejects denies', async () => {
    const slow = deferred()
    await using t = createTestHub({
      channels: {
        'async:{id}': {
          subscribe: async (ctx) => {
            await slow.promise
            return ctx.identity.userId === 'alice'
          },
          publish: async () => true,
        },
        'throws:{id}': {
          subscribe: () => {
            throw new Error('boom')
          },
        },
        'rejects:{id}': { subscribe: async () => Promise.reject(new Error('db down')) },
      },
    })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })

    let settled = false
    const p = alice.subscribe('async:1').finally(() => (settled = true))
    await t.settle()
    expect(settled).toBe(false) // waits for the rule
    slow.resolve()
    await expect(p).resolves.toMatchObject({ channel: 'async:1' })
    await expectRejected(t, bob, () => bob.subscribe('async:1'), 'RT_003')
    await expectRejected(t, alice, () => alice.subscribe('throws:1'), 'RT_003')
    await expectRejected(t, alice, () => alice.subscribe('rejects:1'), 'RT_003')
  })

  it('frames of one connection keep their order while an async rule is pending', async () => {
    const slow = deferred()
    await using t = createTestHub({
      channels: {
        'async:{id}': {
          subscribe: async () => {
            await slow.promise
            return true
          },
        },
      },
    })
    const alice = await t.connect({ userId: 'alice' })
    const order: string[] = []
    const sub = alice.subscribe('async:1').then(() => order.push('subscribed'))
    const pong = alice.ping().then(() => order.push('pong'))
    await t.settle()
    expect(order).toEqual([])
    slow.resolve()
    await Promise.all([sub, pong])
    expect(order).toEqual(['subscribed', 'pong'])
  })

  it('the subscribe `auth` string reaches the rule', async () => {
    const rule = vi.fn((ctx: AuthorizeContext) => ctx.auth === 'signed:doc-7')
    await using t = createTestHub({ channels: { 'doc:{id}': { subscribe: rule } } })
    const alice = await t.connect({ userId: 'alice' })
    await expectRejected(t, alice, () => alice.subscribe('doc:7', { auth: 'forged' }), 'RT_003')
    await expect(alice.subscribe('doc:7', { auth: 'signed:doc-7' })).resolves.toMatchObject({ channel: 'doc:7' })
    expect(rule).toHaveBeenLastCalledWith(expect.objectContaining({ auth: 'signed:doc-7', params: { id: '7' } }))
  })

  it('reserved prefixes are never captured by an app pattern like {scope}:{entity}:{id}', async () => {
    await using t = createTestHub({ channels: { '{scope}:{entity}:{id}': { subscribe: true, publish: true }, '*': { subscribe: true, publish: true } } })
    const anon = await t.connect()
    const alice = await t.connect({ userId: 'alice' })

    // would be allowed by the app patterns, but the built-in rules apply
    await expectRejected(t, anon, () => anon.subscribe('presence:lobby:x'), 'RT_003')
    await expectRejected(t, anon, () => anon.subscribe('private:user-bob'), 'RT_003')
    await expectRejected(t, anon, () => anon.publish('public:a:b', 'e', {}), 'RT_003')
    await expectRejected(t, alice, () => alice.subscribe('db:collection:users'), 'RT_004')
    await expectRejected(t, alice, () => alice.subscribe('private:room-1'), 'RT_004')
    await expectRejected(t, alice, () => alice.subscribe('private:whatever:x'), 'RT_004')

    await anon.subscribe('public:a:b')
    await anon.subscribe('supplier:dashboard:1')
    await anon.subscribe('anything-else')
    const patterns = Object.fromEntries(t.hub.channels.list().map((c) => [c.name, c.pattern]))
    expect(patterns).toEqual({ 'public:a:b': 'public:*', 'supplier:dashboard:1': '{scope}:{entity}:{id}', 'anything-else': '*' })
  })

  it('an app pattern that spells a reserved prefix out may refine it', async () => {
    await using t = createTestHub({ channels: { 'public:readonly-*': { subscribe: true, publish: false } } })
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('public:readonly-feed')
    await expectRejected(t, alice, () => alice.publish('public:readonly-feed', 'e', {}), 'RT_003')
    await expect(alice.publish('public:other', 'e', {})).resolves.toMatchObject({ type: 'published' })
    // patterns are tried in registration order; registerChannel adds at runtime
    t.hub.channels.register('tenant:{tenant}', { subscribe: (ctx) => ctx.params['tenant'] === 'acme' })
    await expect(alice.subscribe('tenant:acme')).resolves.toMatchObject({ channel: 'tenant:acme' })
    await expectRejected(t, alice, () => alice.subscribe('tenant:globex'), 'RT_003')
    expect(() => t.hub.channels.register('bad pattern', {})).toThrow(TypeError)
    expect(() => t.hub.channels.register('x:{1bad}', {})).toThrow(TypeError)
    expect(() => t.hub.channels.register('x:{a}:{a}', {})).toThrow(TypeError)
  })

  it('event schemas (zod): bad data is RT_007 and is not delivered; good data is', async () => {
    const created = z.object({ orderId: z.string(), total: z.number().nonnegative() })
    await using t = createTestHub({
      channels: {
        'orders:{id}': { subscribe: 'authenticated', publish: 'authenticated', events: { created } },
      },
    })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('orders:1')
    const err = await expectRejected(t, alice, () => alice.publish('orders:1', 'created', { orderId: 'o1', total: -5 }), 'RT_007')
    expect(err.message).toMatch(/total/)
    await expectRejected(t, alice, () => alice.publish('orders:1', 'created', 'not an object'), 'RT_007')
    await expect(alice.publish('orders:1', 'created', { orderId: 'o1', total: 5 })).resolves.toMatchObject({ type: 'published' })
    // events without a schema are free when strictEvents is off
    await expect(alice.publish('orders:1', 'note', { anything: true })).resolves.toMatchObject({ type: 'published' })
    // server publishes are validated too
    await expect(t.hub.publish('orders:1', 'created', { orderId: 1 })).rejects.toMatchObject({ code: 'RT_007' })
    await t.settle()
    expect(bob.messages('orders:1').map((m) => m.event)).toEqual(['created', 'note'])
    expect(bob.messages('orders:1')[0]?.data).toEqual({ orderId: 'o1', total: 5 })
    // nothing invalid reached the history either
    const h = await t.hub.channel('orders:1').history()
    expect(h.messages.map((m) => m.event)).toEqual(['created', 'note'])
  })

  it('strictEvents refuses events that are not listed', async () => {
    await using t = createTestHub({
      channels: { 'strict:{id}': { publish: 'authenticated', events: { ping: z.object({}).strict() }, strictEvents: true } },
    })
    const alice = await t.connect({ userId: 'alice' })
    const err = await expectRejected(t, alice, () => alice.publish('strict:1', 'other', {}), 'RT_007')
    expect(err.message).toMatch(/not allowed/)
    await expectRejected(t, alice, () => alice.publish('strict:1', 'ping', { extra: 1 }), 'RT_007')
    await expect(alice.publish('strict:1', 'ping', {})).resolves.toMatchObject({ type: 'published' })
  })

  it('per-channel maxMessageSize is RT_005 (client and server publishes)', async () => {
    await using t = createTestHub({ channels: { 'tiny:{id}': { subscribe: 'authenticated', publish: 'authenticated', maxMessageSize: 200 } } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('tiny:1')
    const err = await expectRejected(t, alice, () => alice.publish('tiny:1', 'big', { text: 'x'.repeat(300) }), 'RT_005')
    expect(err.details).toMatchObject({ limit: 200 })
    await expect(t.hub.publish('tiny:1', 'big', { text: 'x'.repeat(300) })).rejects.toMatchObject({ code: 'RT_005' })
    await expect(alice.publish('tiny:1', 'small', { text: 'ok' })).resolves.toMatchObject({ type: 'published' })
    // the hub-wide limit is unaffected on other channels
    await expect(alice.publish('public:x', 'big', { text: 'x'.repeat(300) })).resolves.toMatchObject({ type: 'published' })
    await t.settle()
    expect(bob.messages('tiny:1').map((m) => m.event)).toEqual(['small'])
  })

  it('channel capacity counts distinct users: RT_008 past it, a second tab is allowed', async () => {
    await using t = createTestHub({ channels: { 'stage:{id}': { subscribe: 'authenticated', capacity: 2 } } })
    const alice = await t.connect({ userId: 'alice' })
    const alice2 = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    await alice.subscribe('stage:1')
    await bob.subscribe('stage:1')
    await expect(alice2.subscribe('stage:1')).resolves.toMatchObject({ channel: 'stage:1' })
    const err = await expectRejected(t, carol, () => carol.subscribe('stage:1'), 'RT_008')
    expect(err.details).toMatchObject({ capacity: 2 })
    expect(t.hub.channels.list()).toEqual([expect.objectContaining({ name: 'stage:1', subscribers: 3, occupants: 2 })])
    // capacity is per channel
    await expect(carol.subscribe('stage:2')).resolves.toMatchObject({ channel: 'stage:2' })
    // one of alice's tabs leaving frees nothing; bob leaving frees a seat
    await alice.unsubscribe('stage:1')
    await expectRejected(t, carol, () => carol.subscribe('stage:1'), 'RT_008')
    bob.close()
    await expect(carol.subscribe('stage:1')).resolves.toMatchObject({ channel: 'stage:1' })
  })

  it('channels appear on first subscribe and are removed when empty', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    expect(t.hub.channels.list()).toEqual([])
    // a server publish to a channel nobody is in does not make it live
    await t.hub.publish('public:news', 'e')
    expect(t.hub.channels.list()).toEqual([])

    await alice.subscribe('public:news')
    expect(t.hub.channels.list()).toEqual([{ name: 'public:news', pattern: 'public:*', subscribers: 1, occupants: 1, room: undefined }])
    await bob.subscribe('public:news')
    await bob.subscribe('presence:lobby')
    expect(t.hub.channels.list().map((c) => [c.name, c.subscribers]).sort()).toEqual([
      ['presence:lobby', 1],
      ['public:news', 2],
    ])
    expect(t.hub.metrics()).toMatchObject({ channels: 2, subscriptions: 3, subscriptionsByChannel: { 'public:news': 2, 'presence:lobby': 1 } })

    await alice.unsubscribe('public:news')
    expect(t.hub.channels.list().find((c) => c.name === 'public:news')?.subscribers).toBe(1)
    bob.close() // disconnect removes every subscription of the connection
    expect(t.hub.channels.list()).toEqual([])
    expect(t.hub.metrics()).toMatchObject({ channels: 0, subscriptions: 0 })

    // a refused subscribe does not leave a channel behind
    await expectRejected(t, alice, () => alice.subscribe('private:user-bob'), 'RT_003')
    expect(t.hub.channels.list()).toEqual([])
    // unsubscribing from a channel one is not in is answered, not an error
    await expect(alice.unsubscribe('public:never')).resolves.toMatchObject({ type: 'unsubscribed', channel: 'public:never' })
  })
})

// ---------------------------------------------------------------------------------------- rooms

describe('rooms', () => {
  it('create / get / list / update / addMember / removeMember / delete', async () => {
    await using t = createTestHub()
    const info = t.hub.rooms.create('private:room-1', {
      metadata: { title: 'Design' },
      members: { alice: 'owner', bob: 'member' },
      capacity: 10,
    })
    expect(info).toEqual({
      channel: 'private:room-1',
      metadata: { title: 'Design' },
      members: { alice: 'owner', bob: 'member' },
      capacity: 10,
      permissions: { subscribe: 'members', publish: 'members' },
      createdAt: t.clock.now(),
      onDemand: false,
      deleteWhenEmpty: false,
    })
    // a list of members all get 'member'; non-room channels default to 'anyone'
    expect(t.hub.rooms.create('public:hall', { members: ['carol', 'dave'] })).toMatchObject({
      members: { carol: 'member', dave: 'member' },
      permissions: { subscribe: 'anyone', publish: 'anyone' },
      capacity: undefined,
      metadata: {},
    })
    expect(t.hub.rooms.get('private:room-1')).toEqual(info)
    expect(t.hub.rooms.get('private:room-nope')).toBeUndefined()
    expect(t.hub.rooms.list().map((r) => r.channel).sort()).toEqual(['private:room-1', 'public:hall'])

    // returned infos are copies
    ;(info.metadata as Record<string, unknown>)['title'] = 'hacked'
    ;(info.members as Record<string, string>)['mallory'] = 'owner'
    expect(t.hub.rooms.get('private:room-1')?.metadata).toEqual({ title: 'Design' })
    expect(t.hub.rooms.get('private:room-1')?.members).not.toHaveProperty('mallory')

    expect(() => t.hub.rooms.create('private:room-1')).toThrow(/already exists/)
    expect(() => t.hub.rooms.create('bad name!')).toThrow(expect.objectContaining({ code: 'RT_007' }))

    const updated = t.hub.rooms.update('private:room-1', { metadata: { title: 'Design v2' }, capacity: 3, permissions: { publish: ['owner'] } })
    expect(updated).toMatchObject({ metadata: { title: 'Design v2' }, capacity: 3, permissions: { subscribe: 'members', publish: ['owner'] } })
    expect(t.hub.rooms.addMember('private:room-1', 'carol', 'guest').members).toEqual({ alice: 'owner', bob: 'member', carol: 'guest' })
    expect(t.hub.rooms.addMember('private:room-1', 'dave').members['dave']).toBe('member')
    expect(t.hub.rooms.removeMember('private:room-1', 'bob').members).not.toHaveProperty('bob')
    // removing a non-member is harmless
    expect(t.hub.rooms.removeMember('private:room-1', 'nobody').members).toHaveProperty('alice')

    for (const act of [
      () => t.hub.rooms.update('private:room-x', { capacity: 1 }),
      () => t.hub.rooms.addMember('private:room-x', 'a'),
      () => t.hub.rooms.removeMember('private:room-x', 'a'),
    ]) {
      expect(act).toThrow(expect.objectContaining({ code: 'RT_004' }))
    }

    expect(t.hub.rooms.delete('private:room-1')).toBe(true)
    expect(t.hub.rooms.delete('private:room-1')).toBe(false)
    expect(t.hub.rooms.get('private:room-1')).toBeUndefined()
    expect(t.hub.rooms.list().map((r) => r.channel)).toEqual(['public:hall'])
  })

  it('room metadata and members are visible to channel rules and in hub.channels.list()', async () => {
    const rule = vi.fn((ctx: AuthorizeContext) => ctx.room?.metadata['open'] === true)
    await using t = createTestHub({ channels: { 'event:{id}': { subscribe: rule, room: 'required' } } })
    t.hub.rooms.create('event:1', { metadata: { open: false }, members: ['alice'] })
    const alice = await t.connect({ userId: 'alice' })
    await expectRejected(t, alice, () => alice.subscribe('event:1'), 'RT_003')
    expect(rule.mock.calls[0]?.[0].room?.members.get('alice')).toBe('member')
    t.hub.rooms.update('event:1', { metadata: { open: true } })
    await alice.subscribe('event:1')
    expect(t.hub.channels.list()).toEqual([
      expect.objectContaining({ name: 'event:1', room: expect.objectContaining({ channel: 'event:1', metadata: { open: true } }) }),
    ])
  })

  it("permissions: 'members', role arrays and 'anyone'", async () => {
    await using t = createTestHub()
    t.hub.rooms.create('public:panel', {
      members: { alice: 'host', bob: 'listener' },
      permissions: { subscribe: 'anyone', publish: ['host', 'speaker'] },
    })
    t.hub.rooms.create('public:club', { members: ['alice'], permissions: { subscribe: 'members' } })
    t.hub.rooms.create('private:room-staff', { members: { alice: 'admin', bob: 'member' }, permissions: { subscribe: ['admin'] } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    const anon = await t.connect()

    // 'anyone' (within the channel rule): non-members and anonymous may subscribe
    await carol.subscribe('public:panel')
    await anon.subscribe('public:panel')
    await bob.subscribe('public:panel')
    // role arrays: only hosts/speakers publish
    await expect(alice.publish('public:panel', 'talk', {})).resolves.toMatchObject({ type: 'published' })
    await expectRejected(t, bob, () => bob.publish('public:panel', 'talk', {}), 'RT_003')
    await expectRejected(t, carol, () => carol.publish('public:panel', 'talk', {}), 'RT_003')
    // promotion takes effect (denials are not cached)
    t.hub.rooms.addMember('public:panel', 'bob', 'speaker')
    await expect(bob.publish('public:panel', 'talk', {})).resolves.toMatchObject({ type: 'published' })

    // 'members': only members subscribe, even on a public channel
    await alice.subscribe('public:club')
    await expectRejected(t, carol, () => carol.subscribe('public:club'), 'RT_003')
    await expectRejected(t, anon, () => anon.subscribe('public:club'), 'RT_003')

    // roles on subscribe
    await alice.subscribe('private:room-staff')
    await expectRejected(t, bob, () => bob.subscribe('private:room-staff'), 'RT_003')
  })

  it('room capacity is RT_008 for distinct users; a second tab of a user inside is allowed; anonymous count one each', async () => {
    await using t = createTestHub()
    t.hub.rooms.create('public:booth', { capacity: 2 })
    const alice = await t.connect({ userId: 'alice' })
    const alice2 = await t.connect({ userId: 'alice' })
    const anon1 = await t.connect()
    const anon2 = await t.connect()
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('public:booth')
    await anon1.subscribe('public:booth')
    await expect(alice2.subscribe('public:booth')).resolves.toMatchObject({ channel: 'public:booth' })
    await expectRejected(t, anon2, () => anon2.subscribe('public:booth'), 'RT_008')
    await expectRejected(t, bob, () => bob.subscribe('public:booth'), 'RT_008')
    // raising the capacity lets one more in
    t.hub.rooms.update('public:booth', { capacity: 3 })
    await bob.subscribe('public:booth')
    await expectRejected(t, anon2, () => anon2.subscribe('public:booth'), 'RT_008')
  })

  it('room capacity overrides the channel capacity', async () => {
    await using t = createTestHub({ channels: { 'table:{id}': { subscribe: 'authenticated', capacity: 1 } } })
    t.hub.rooms.create('table:big', { capacity: 2 })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const carol = await t.connect({ userId: 'carol' })
    await alice.subscribe('table:big')
    await bob.subscribe('table:big')
    await expectRejected(t, carol, () => carol.subscribe('table:big'), 'RT_008')
    await alice.subscribe('table:small')
    await expectRejected(t, bob, () => bob.subscribe('table:small'), 'RT_008')
  })

  it('a room with capacity 0 admits nobody', async () => {
    await using t = createTestHub()
    t.hub.rooms.create('public:closed', { capacity: 0 })
    const alice = await t.connect({ userId: 'alice' })
    await expectRejected(t, alice, () => alice.subscribe('public:closed'), 'RT_008')
    expect(t.hub.channels.list()).toEqual([])
  })

  it('lifecycle events: created, member-joined/left once per user, emptied, deleted', async () => {
    await using t = createTestHub()
    const log = recordRoomEvents(t)
    t.hub.rooms.create('public:hall')
    const alice = await t.connect({ userId: 'alice' })
    const alice2 = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('public:hall')
    await alice2.subscribe('public:hall')
    await bob.subscribe('public:hall')
    await alice.unsubscribe('public:hall') // alice still has a tab inside
    alice2.close() // now alice has left
    await bob.unsubscribe('public:hall')
    // an explicit room outlives its occupants
    expect(t.hub.rooms.get('public:hall')).toBeDefined()
    t.hub.rooms.delete('public:hall')
    expect(log).toEqual([
      { event: 'room:created', channel: 'public:hall' },
      { event: 'room:member-joined', channel: 'public:hall', userId: 'alice' },
      { event: 'room:member-joined', channel: 'public:hall', userId: 'bob' },
      { event: 'room:member-left', channel: 'public:hall', userId: 'alice' },
      { event: 'room:member-left', channel: 'public:hall', userId: 'bob' },
      { event: 'room:emptied', channel: 'public:hall' },
      { event: 'room:deleted', channel: 'public:hall' },
    ])
  })

  it('an explicit room with deleteWhenEmpty is deleted when emptied', async () => {
    await using t = createTestHub()
    const log = recordRoomEvents(t)
    t.hub.rooms.create('public:popup', { deleteWhenEmpty: true })
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('public:popup')
    await alice.unsubscribe('public:popup')
    expect(t.hub.rooms.get('public:popup')).toBeUndefined()
    expect(log.map((e) => e.event)).toEqual(['room:created', 'room:member-joined', 'room:member-left', 'room:emptied', 'room:deleted'])
  })

  it('deleting a room tells its occupants (unsubscribed, room-deleted) and unsubscribes them', async () => {
    await using t = createTestHub()
    const log = recordRoomEvents(t)
    t.hub.rooms.create('private:room-9', { members: ['alice', 'bob'] })
    const alice = await t.connect({ userId: 'alice' })
    const alice2 = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    for (const c of [alice, alice2, bob]) await c.subscribe('private:room-9')
    const unsubscribed = vi.fn()
    t.hub.on('unsubscribe', unsubscribed)

    expect(t.hub.rooms.delete('private:room-9')).toBe(true)
    await t.settle()
    for (const c of [alice, alice2, bob]) {
      expect(c.received('unsubscribed')).toEqual([{ type: 'unsubscribed', channel: 'private:room-9', reason: 'room-deleted' }])
      expect(c.closed).toBe(false)
    }
    expect(unsubscribed).toHaveBeenCalledTimes(3)
    expect(unsubscribed).toHaveBeenCalledWith(expect.objectContaining({ channel: 'private:room-9', reason: 'room-deleted' }))
    expect(t.hub.channels.list()).toEqual([])
    expect(t.hub.connections.local({ channel: 'private:room-9' })).toEqual([])
    expect(log.at(-1)).toEqual({ event: 'room:deleted', channel: 'private:room-9' })
    expect((await t.hub.publish('private:room-9', 'late')).recipients).toBe(0)
    // the room is gone: subscribing again is RT_004; the connection still works
    await expectRejected(t, alice, () => alice.subscribe('private:room-9'), 'RT_004')
    // presence was cleaned up
    expect((await t.hub.presence.get('private:room-9')).count).toBe(0)
  })

  it("room: 'auto' creates the room on first subscribe and deletes it when emptied", async () => {
    await using t = createTestHub({ channels: { 'huddle:{id}': { subscribe: 'authenticated', publish: 'authenticated', room: 'auto' } } })
    const log = recordRoomEvents(t)
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    expect(t.hub.rooms.get('huddle:1')).toBeUndefined()
    await alice.subscribe('huddle:1')
    expect(t.hub.rooms.get('huddle:1')).toMatchObject({ channel: 'huddle:1', onDemand: true, deleteWhenEmpty: true, permissions: { subscribe: 'anyone', publish: 'anyone' } })
    expect(t.hub.channels.list()[0]?.room).toMatchObject({ onDemand: true })
    await bob.subscribe('huddle:1')
    await bob.publish('huddle:1', 'hi', {})
    await t.settle()
    expect(alice.messages('huddle:1')).toHaveLength(1)
    await alice.unsubscribe('huddle:1')
    expect(t.hub.rooms.get('huddle:1')).toBeDefined()
    bob.drop()
    expect(t.hub.rooms.get('huddle:1')).toBeUndefined()
    expect(t.hub.rooms.list()).toEqual([])
    expect(log).toEqual([
      { event: 'room:created', channel: 'huddle:1' },
      { event: 'room:member-joined', channel: 'huddle:1', userId: 'alice' },
      { event: 'room:member-joined', channel: 'huddle:1', userId: 'bob' },
      { event: 'room:member-left', channel: 'huddle:1', userId: 'alice' },
      { event: 'room:member-left', channel: 'huddle:1', userId: 'bob' },
      { event: 'room:emptied', channel: 'huddle:1' },
      { event: 'room:deleted', channel: 'huddle:1' },
    ])
    // and comes back on the next subscribe
    const carol = await t.connect({ userId: 'carol' })
    await carol.subscribe('huddle:1')
    expect(t.hub.rooms.get('huddle:1')?.onDemand).toBe(true)
    // a refused subscribe does not create a room
    const anon = await t.connect()
    await expectRejected(t, anon, () => anon.subscribe('huddle:2'), 'RT_003')
    expect(t.hub.rooms.get('huddle:2')).toBeUndefined()
  })

  it("room: 'auto' with concurrent first subscribers creates exactly one room", async () => {
    await using t = createTestHub({ channels: { 'huddle:{id}': { subscribe: 'authenticated', room: 'auto' } } })
    const created = vi.fn()
    const deleted = vi.fn()
    t.hub.on('room:created', created)
    t.hub.on('room:deleted', deleted)
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await Promise.all([alice.subscribe('huddle:1'), bob.subscribe('huddle:1')])
    expect(t.hub.rooms.list()).toHaveLength(1)
    expect(created).toHaveBeenCalledTimes(1)
    alice.close()
    bob.close()
    expect(deleted).toHaveBeenCalledTimes(1)
    expect(t.hub.rooms.list()).toEqual([])
  })

  it("a room deleted while an async subscribe rule is pending is RT_004, not a subscription to a deleted room", async () => {
    const slow = deferred()
    await using t = createTestHub({
      channels: {
        'team:{id}': {
          subscribe: async () => {
            await slow.promise
            return true
          },
          room: 'required',
        },
      },
    })
    t.hub.rooms.create('team:1', { members: ['alice'] })
    const alice = await t.connect({ userId: 'alice' })
    const p = alice.subscribe('team:1')
    await t.settle()
    t.hub.rooms.delete('team:1')
    slow.resolve()
    await expect(p).rejects.toMatchObject({ code: 'RT_004' })
    expect(t.hub.channels.list()).toEqual([])
  })

  it('removeMember kicks every connection of that user from a members-only room', async () => {
    await using t = createTestHub()
    const log = recordRoomEvents(t)
    t.hub.rooms.create('private:room-5', { members: ['alice', 'bob'] })
    const alice = await t.connect({ userId: 'alice' })
    const alice2 = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    for (const c of [alice, alice2, bob]) await c.subscribe('private:room-5')

    t.hub.rooms.removeMember('private:room-5', 'alice')
    await t.settle()
    for (const c of [alice, alice2]) {
      expect(c.received('unsubscribed')).toEqual([{ type: 'unsubscribed', channel: 'private:room-5', reason: 'removed-from-room' }])
      expect(c.closed).toBe(false)
    }
    expect(bob.received('unsubscribed')).toEqual([])
    expect(log.filter((e) => e.event === 'room:member-left')).toEqual([{ event: 'room:member-left', channel: 'private:room-5', userId: 'alice' }])
    expect(t.hub.connections.local({ channel: 'private:room-5' }).map((c) => c.userId)).toEqual(['bob'])
    // alice no longer receives and may not come back
    await t.hub.publish('private:room-5', 'after', {})
    await t.settle()
    expect(alice.messages('private:room-5')).toEqual([])
    expect(bob.messages('private:room-5')).toHaveLength(1)
    await expectRejected(t, alice, () => alice.subscribe('private:room-5'), 'RT_003')
    await expectRejected(t, alice2, () => alice2.publish('private:room-5', 'x', {}), 'RT_003')
  })

  it("removeMember on a room where anyone subscribes but only members publish: the removed member can no longer publish", async () => {
    await using t = createTestHub()
    t.hub.rooms.create('public:stage', { members: ['alice'], permissions: { subscribe: 'anyone', publish: 'members' } })
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('public:stage')
    await expect(alice.publish('public:stage', 'talk', {})).resolves.toMatchObject({ type: 'published' })
    t.hub.rooms.removeMember('public:stage', 'alice')
    // still subscribed (anyone may listen) ...
    expect(alice.received('unsubscribed')).toEqual([])
    // ... but no longer a member, so no longer a publisher
    await expectRejected(t, alice, () => alice.publish('public:stage', 'talk', {}), 'RT_003')
  })

  it('tightening room publish permissions applies to existing subscribers', async () => {
    await using t = createTestHub()
    t.hub.rooms.create('public:forum', { members: { alice: 'member' } })
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('public:forum')
    await expect(alice.publish('public:forum', 'post', {})).resolves.toMatchObject({ type: 'published' })
    t.hub.rooms.update('public:forum', { permissions: { publish: ['moderator'] } })
    await expectRejected(t, alice, () => alice.publish('public:forum', 'post', {}), 'RT_003')
  })
})

// ---------------------------------------------------------------------------------------- auth

describe('authentication', () => {
  it('createTokenAuthenticator: a known token connects as its identity; an unknown one is RT_002 + close 4001', async () => {
    await using t = createTestHub({ authenticate: createTokenAuthenticator({ 'tok-alice': { userId: 'alice', roles: ['admin'] } }) })
    const alice = await t.connect({ token: 'tok-alice' })
    expect(alice.userId).toBe('alice')
    expect(alice.received('connected')[0]).toMatchObject({ userId: 'alice', v: 1 })
    expect((await t.hub.connections.get(alice.connectionId))?.userId).toBe('alice')

    const refused = await expectRefused(t, { token: 'tok-nope' }, 'RT_002', CloseCode.AuthenticationFailed)
    expect(refused.closeCode).toBe(4001)
    // an api key is not a token
    await expectRefused(t, { apiKey: 'tok-alice' }, 'RT_002', 4001)
    await expect(alice.ping()).resolves.toMatchObject({ type: 'pong' })
  })

  it('createApiKeyAuthenticator maps keys to identities', async () => {
    await using t = createTestHub({ authenticate: createApiKeyAuthenticator({ 'key-svc': { userId: 'svc', roles: ['service'] } }) })
    const svc = await t.connect({ apiKey: 'key-svc' })
    expect(svc.userId).toBe('svc')
    await expectRefused(t, { apiKey: 'key-wrong' }, 'RT_002', 4001)
    await expectRefused(t, { token: 'key-svc' }, 'RT_002', 4001)
  })

  it('a custom async authenticator sees the request; null rejects, a throw or a rejection rejects', async () => {
    const seenRequests: AuthRequest[] = []
    await using t = createTestHub({
      authenticate: async (req) => {
        seenRequests.push(req)
        await Promise.resolve()
        if (req.token === 'sync-throw') throw new Error('kaboom')
        if (req.token === 'reject') return Promise.reject(new Error('auth service down'))
        if (req.token === 'good' && req.headers['x-tenant'] === 'acme') return { userId: 'alice', claims: { tenant: 'acme' } }
        return null
      },
    })
    const alice = await t.connect({ token: 'good', headers: { 'x-tenant': 'acme' }, ip: '10.0.0.7' })
    expect(alice.userId).toBe('alice')
    expect(seenRequests[0]).toMatchObject({ token: 'good', apiKey: undefined, headers: { 'x-tenant': 'acme' }, remoteAddress: '10.0.0.7', transport: 'memory' })
    await expectRefused(t, { token: 'good' }, 'RT_002', 4001) // wrong tenant header -> null
    await expectRefused(t, { token: 'sync-throw' }, 'RT_002', 4001)
    await expectRefused(t, { token: 'reject' }, 'RT_002', 4001)
  })

  it('a synchronously throwing authenticator is RT_002, not a crash', async () => {
    await using t = createTestHub({
      authenticate: () => {
        throw new Error('sync boom')
      },
    })
    await expectRefused(t, { token: 'x' }, 'RT_002', 4001)
    const anon = await t.connect()
    await expect(anon.ping()).resolves.toMatchObject({ type: 'pong' })
  })

  it('credentials without an authenticator are RT_002', async () => {
    await using t = createTestHub()
    await expectRefused(t, { token: 'anything' }, 'RT_002', 4001)
    await expectRefused(t, { apiKey: 'anything' }, 'RT_002', 4001)
  })

  it('allowAnonymous: false refuses a connection without credentials (RT_002); a trusted identity or a token still connects', async () => {
    const authenticate = vi.fn(createTokenAuthenticator({ t1: { userId: 'bob' } }))
    await using t = createTestHub({ allowAnonymous: false, authenticate })
    const c = await expectRefused(t, {}, 'RT_002', 4001)
    expect(c.received('error')[0]?.message).toMatch(/credentials are required/)
    // Asked anyway (it might authenticate by headers), and it said no.
    expect(authenticate).toHaveBeenCalledTimes(1)
    expect(authenticate).toHaveBeenLastCalledWith(expect.objectContaining({ token: undefined, apiKey: undefined }))

    const alice = await t.connect({ identity: { userId: 'alice', roles: ['staff'] } })
    expect(alice.userId).toBe('alice')
    expect(authenticate).toHaveBeenCalledTimes(1) // trusted identity skips the authenticator
    const bob = await t.connect({ token: 't1' })
    expect(bob.userId).toBe('bob')
    expect(authenticate).toHaveBeenCalledTimes(2)
  })

  it('an authenticator can accept a connection by its headers alone (a session cookie)', async () => {
    const authenticate = vi.fn((req: { headers: Readonly<Record<string, string | string[] | undefined>> }) =>
      req.headers.cookie === 'sid=s3cret' ? { userId: 'carol' } : null,
    )
    await using t = createTestHub({ allowAnonymous: false, authenticate })
    const carol = await t.connect({ headers: { cookie: 'sid=s3cret' } })
    expect(carol.userId).toBe('carol')
    await expectRefused(t, { headers: { cookie: 'sid=wrong' } }, 'RT_002', 4001)
  })

  it('with anonymous allowed, a connection the authenticator does not recognise and that brought no credentials is anonymous', async () => {
    await using t = createTestHub({ authenticate: () => null })
    const anon = await t.connect()
    expect(anon.userId).toBeUndefined()
    await expectRefused(t, { token: 'bad' }, 'RT_002', 4001)
  })

  it('a trusted identity wins over a token and its roles and claims reach the rules', async () => {
    const authenticate = vi.fn(createTokenAuthenticator({ t1: { userId: 'bob' } }))
    await using t = createTestHub({
      authenticate,
      channels: { 'admin:{x}': { subscribe: (ctx) => ctx.identity.roles?.includes('admin') === true && ctx.identity.claims?.['plan'] === 'pro' } },
    })
    const alice = await t.connect({ identity: { userId: 'alice', roles: ['admin'], claims: { plan: 'pro' } }, token: 't1' })
    expect(alice.userId).toBe('alice')
    expect(authenticate).not.toHaveBeenCalled()
    await expect(alice.subscribe('admin:panel')).resolves.toMatchObject({ channel: 'admin:panel' })
    const plain = await t.connect({ identity: { userId: 'carl', roles: ['admin'], claims: { plan: 'free' } } })
    await expectRejected(t, plain, () => plain.subscribe('admin:panel'), 'RT_003')
  })

  it("the 'auth' frame refreshes a token: same user -> authenticated; other user or bad token -> RT_002, connection kept", async () => {
    await using t = createTestHub({
      authenticate: createTokenAuthenticator({ a1: { userId: 'alice' }, a2: { userId: 'alice' }, b1: { userId: 'bob' } }),
    })
    const alice = await t.connect({ token: 'a1' })
    const bob = await t.connect({ token: 'b1' })
    await bob.subscribe('public:room')
    await alice.subscribe('public:room')

    await expect(alice.request<ServerFrameOf<'authenticated'>>({ type: 'auth', token: 'a2' })).resolves.toMatchObject({ type: 'authenticated', userId: 'alice' })
    const switched = await expectRejected(t, alice, () => alice.request({ type: 'auth', token: 'b1' }), 'RT_002')
    expect(switched.message).toMatch(/same user/)
    await expectRejected(t, alice, () => alice.request({ type: 'auth', token: 'expired' }), 'RT_002')
    expect(alice.closed).toBe(false)
    // still alice, still subscribed, still able to publish
    expect((await t.hub.connections.get(alice.connectionId))?.userId).toBe('alice')
    await expect(alice.publish('public:room', 'still-here', {})).resolves.toMatchObject({ type: 'published' })
    await t.settle()
    expect(bob.messages('public:room').map((m) => [m.event, m.sender])).toEqual([['still-here', 'alice']])
  })

  it("the 'auth' frame without an authenticator is RT_002; an anonymous connection cannot become a user", async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    await expectRejected(t, alice, () => alice.request({ type: 'auth', token: 'x' }), 'RT_002')
    await using t2 = createTestHub({ authenticate: createTokenAuthenticator({ b1: { userId: 'bob' } }) })
    const anon = await t2.connect()
    await expectRejected(t2, anon, () => anon.request({ type: 'auth', token: 'b1' }), 'RT_002')
    expect((await t2.hub.connections.get(anon.connectionId))?.userId).toBeUndefined()
  })

  it('a refreshed identity applies to later publish decisions (roles gained and lost)', async () => {
    await using t = createTestHub({
      authenticate: createTokenAuthenticator({ user: { userId: 'alice', roles: ['user'] }, admin: { userId: 'alice', roles: ['admin'] } }),
      channels: { 'ops:{id}': { subscribe: 'authenticated', publish: (ctx) => ctx.identity.roles?.includes('admin') === true } },
    })
    const alice = await t.connect({ token: 'user' })
    await alice.subscribe('ops:1')
    await expectRejected(t, alice, () => alice.publish('ops:1', 'deploy', {}), 'RT_003')
    await alice.request({ type: 'auth', token: 'admin' })
    await expect(alice.publish('ops:1', 'deploy', {})).resolves.toMatchObject({ type: 'published' })
    await alice.request({ type: 'auth', token: 'user' })
    await expectRejected(t, alice, () => alice.publish('ops:1', 'deploy', {}), 'RT_003')
  })

  it('a refreshed identity applies to broadcast recipient filters (user.roles)', async () => {
    await using t = createTestHub({
      authenticate: createTokenAuthenticator({ user: { userId: 'alice', roles: ['user'] }, admin: { userId: 'alice', roles: ['admin'] } }),
    })
    const alice = await t.connect({ token: 'user' })
    await alice.request({ type: 'auth', token: 'admin' })
    const r = await t.hub.broadcast({ to: 'all', event: 'admins-only', where: { field: 'user.roles', op: 'contains', value: 'admin' } })
    expect(r.recipients).toBe(1)
    await t.settle()
    expect(alice.messages().map((m) => m.event)).toEqual(['admins-only'])
  })

  it('the hub-level authorize gate applies over every channel rule and sees the action', async () => {
    const gate = vi.fn(async (ctx: AuthorizeContext) => {
      if (ctx.channel === 'public:blocked') return false
      if (ctx.channel === 'public:explodes') throw new Error('gate failed')
      if (ctx.action === 'publish' && ctx.identity.userId === 'muted') return false
      return true
    })
    await using t = createTestHub({ authorize: gate })
    const alice = await t.connect({ userId: 'alice' })
    const muted = await t.connect({ userId: 'muted' })
    const anon = await t.connect()

    await alice.subscribe('public:ok')
    expect(gate).toHaveBeenCalledWith(expect.objectContaining({ channel: 'public:ok', action: 'subscribe', identity: expect.objectContaining({ userId: 'alice' }) }))
    await expectRejected(t, alice, () => alice.subscribe('public:blocked'), 'RT_003')
    await expectRejected(t, alice, () => alice.subscribe('public:explodes'), 'RT_003')
    await muted.subscribe('public:ok')
    await expectRejected(t, muted, () => muted.publish('public:ok', 'e', {}), 'RT_003')
    await expect(alice.publish('public:ok', 'e', {})).resolves.toMatchObject({ type: 'published' })
    // the gate cannot grant what the channel rule denies
    gate.mockClear()
    await expectRejected(t, anon, () => anon.subscribe('presence:lobby'), 'RT_003')
    await expectRejected(t, alice, () => alice.subscribe('private:user-bob'), 'RT_003')
  })

  it('max connections per user (default 10): the 11th is RT_001 and closed 4008', async () => {
    await using t = createTestHub()
    const tabs: MemoryClient[] = []
    for (let i = 0; i < 10; i++) tabs.push(await t.connect({ userId: 'alice' }))
    await expectRefused(t, { userId: 'alice' }, 'RT_001', CloseCode.TooManyConnections)
    expect(t.hub.connections.local({ userId: 'alice' })).toHaveLength(10)
    // other users are unaffected; alice's open tabs still work
    const bob = await t.connect({ userId: 'bob' })
    await expect(bob.ping()).resolves.toMatchObject({ type: 'pong' })
    await expect(tabs[0]!.ping()).resolves.toMatchObject({ type: 'pong' })
    // closing one makes room for another
    tabs[3]!.close()
    await expect(t.connect({ userId: 'alice' })).resolves.toMatchObject({ userId: 'alice', closed: false })
    await expectRefused(t, { userId: 'alice' }, 'RT_001', 4008)
  })

  it('max connections per user is configurable and applies to authenticated users too', async () => {
    await using t = createTestHub({ limits: { maxConnectionsPerUser: 2 }, authenticate: createTokenAuthenticator({ a: { userId: 'alice' } }) })
    await t.connect({ token: 'a' })
    await t.connect({ userId: 'alice' })
    const refused = await expectRefused(t, { token: 'a' }, 'RT_001', 4008)
    expect(refused.received('error')[0]?.message).toMatch(/2 connections/)
    // anonymous connections are not limited per user
    for (let i = 0; i < 5; i++) await t.connect()
    expect(t.hub.metrics().connections).toBe(7)
  })
})

// ---------------------------------------------------------------------------------------- error codes

describe('error codes (each provoked, counted, and the connection kept)', () => {
  it('RT_001: an internal failure while handling a frame (the store throws)', async () => {
    const base = createMemoryStore()
    let failing = false
    const onError = vi.fn()
    await using t = createTestHub({
      onError,
      store: {
        append: (channel, message, options) => {
          if (failing) throw new Error('disk full')
          return base.append(channel, message, options)
        },
        read: (channel, options) => base.read(channel, options),
        position: (channel) => base.position(channel),
        cursor: (channel, consumer) => base.cursor(channel, consumer),
        commit: (channel, consumer, offset) => base.commit(channel, consumer, offset),
        cursors: (channel) => base.cursors(channel),
      },
    })
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('public:log')
    failing = true
    const err = await expectRejected(t, alice, () => alice.publish('public:log', 'e', {}), 'RT_001')
    expect(err.message).toMatch(/internal error/)
    expect(onError).toHaveBeenCalledWith(expect.objectContaining({ message: 'disk full' }), expect.objectContaining({ stage: 'frame:message' }))
    failing = false
    await expect(alice.publish('public:log', 'e', {})).resolves.toMatchObject({ type: 'published' })
  })

  it('RT_001: connecting to a hub that is shutting down is refused (close 1001)', async () => {
    await using t = createTestHub()
    await t.hub.close()
    await expectRefused(t, { userId: 'alice' }, 'RT_001', CloseCode.GoingAway)
  })

  it('RT_002: bad token on the auth frame', async () => {
    await using t = createTestHub({ authenticate: createTokenAuthenticator({ ok: { userId: 'alice' } }) })
    const alice = await t.connect({ token: 'ok' })
    await expectRejected(t, alice, () => alice.request({ type: 'auth', token: 'bad' }), 'RT_002')
  })

  it('RT_003: permission denied', async () => {
    await using t = createTestHub()
    const bob = await t.connect({ userId: 'bob' })
    await expectRejected(t, bob, () => bob.subscribe('private:user-alice'), 'RT_003')
  })

  it('RT_004: channel not found', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    const err = await expectRejected(t, alice, () => alice.subscribe('nowhere:at-all'), 'RT_004')
    expect(alice.received('error').at(-1)).toMatchObject({ code: 'RT_004', channel: 'nowhere:at-all', message: err.message })
  })

  it('RT_005: a frame over the hub-wide maxMessageSize (rejected before it is decoded)', async () => {
    await using t = createTestHub({ limits: { maxMessageSize: 512 } })
    const alice = await t.connect({ userId: 'alice' })
    const before = t.hub.metrics().errors.RT_005
    const error = alice.next('error')
    alice.send({ type: 'message', id: 'big', channel: 'public:x', event: 'e', data: 'x'.repeat(1000) })
    expect(await error).toMatchObject({ code: 'RT_005', details: { limit: 512 } })
    expect(t.hub.metrics().errors.RT_005).toBe(before + 1)
    await expect(alice.ping()).resolves.toMatchObject({ type: 'pong' })
    // a channel limit is reported through the request
    t.hub.channels.register('small:{id}', { publish: 'authenticated', maxMessageSize: 100 })
    await expectRejected(t, alice, () => alice.publish('small:1', 'e', 'y'.repeat(150)), 'RT_005')
  })

  it('RT_006: too many frames per second, then the bucket refills', async () => {
    await using t = createTestHub({ limits: { messagesPerSecond: 3 } })
    const alice = await t.connect({ userId: 'alice' })
    for (let i = 0; i < 3; i++) await alice.ping()
    const before = t.hub.metrics().errors.RT_006
    const err = await alice.ping().then(
      () => undefined,
      (e: unknown) => e as RealtimeError,
    )
    expect(err).toBeInstanceOf(RealtimeError)
    expect(err?.code).toBe('RT_006')
    expect(err?.details?.['retryAfterMs']).toBeGreaterThan(0)
    expect(t.hub.metrics().errors.RT_006).toBe(before + 1)
    await t.advance(1000)
    // the bucket refilled: the connection works again
    await expect(alice.publish('public:x', 'e', {})).resolves.toMatchObject({ type: 'published' })
  })

  it('RT_006: subscription limit per connection', async () => {
    await using t = createTestHub({ limits: { maxSubscriptions: 1 } })
    const alice = await t.connect({ userId: 'alice' })
    expect(alice.received('connected')[0]?.limits.maxSubscriptions).toBe(1)
    await alice.subscribe('public:a')
    const err = await expectRejected(t, alice, () => alice.subscribe('public:b'), 'RT_006')
    expect(err.details).toMatchObject({ limit: 1 })
    // re-subscribing to a channel one is in is not an error
    await expect(alice.subscribe('public:a')).resolves.toMatchObject({ channel: 'public:a' })
  })

  it('RT_007: malformed frames (bad JSON, unknown type, missing fields)', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    await expectRejected(t, alice, () => alice.request({ type: 'teleport' } as never), 'RT_007')
    await expectRejected(t, alice, () => alice.request({ type: 'subscribe' } as never), 'RT_007')
    await expectRejected(t, alice, () => alice.request({ type: 'ping', extra: true } as never), 'RT_007')
    const before = t.hub.metrics().errors.RT_007
    const error = alice.next('error')
    alice.send('{not json')
    expect(await error).toMatchObject({ code: 'RT_007' })
    expect(t.hub.metrics().errors.RT_007).toBe(before + 1)
    await expect(alice.ping()).resolves.toMatchObject({ type: 'pong' })
  })

  it('RT_008: channel capacity exceeded', async () => {
    await using t = createTestHub({ channels: { 'seat:{id}': { subscribe: 'authenticated', capacity: 1 } } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('seat:1')
    await expectRejected(t, bob, () => bob.subscribe('seat:1'), 'RT_008')
  })

  it('RT_009: presence update refused (not subscribed, not a presence channel, unknown state)', async () => {
    await using t = createTestHub({ presence: { states: ['online', 'away'] } })
    const alice = await t.connect({ userId: 'alice' })
    await expectRejected(t, alice, () => alice.updatePresence('presence:lobby', { state: 'away' }), 'RT_009')
    await alice.subscribe('public:x')
    await expectRejected(t, alice, () => alice.updatePresence('public:x', { state: 'away' }), 'RT_009')
    await alice.subscribe('presence:lobby')
    await expectRejected(t, alice, () => alice.updatePresence('presence:lobby', { state: 'sleeping' }), 'RT_009')
    await expectRejected(t, alice, () => alice.subscribe('presence:other', { state: 'sleeping' }), 'RT_009')
    // a valid update still goes through after the refusals
    const update = alice.next('presence:update')
    alice.send({ type: 'presence:update', channel: 'presence:lobby', state: 'away' })
    expect(await update).toMatchObject({ channel: 'presence:lobby', user: { id: 'alice', state: 'away' } })
  })

  it('a successful presence:update request is answered (its reply carries the request id)', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('presence:lobby')
    let reply: unknown
    void alice.updatePresence('presence:lobby', { state: 'away' }).then((f) => (reply = f))
    await t.settle()
    expect(alice.received('presence:update').at(-1)).toMatchObject({ user: { state: 'away' } })
    expect(reply).toMatchObject({ type: 'presence:update', user: { id: 'alice', state: 'away' } })
  })

  it('rejections are reported on the client:error event with the frame type', async () => {
    await using t = createTestHub()
    const events: Parameters<HubEvents['client:error']>[0][] = []
    t.hub.on('client:error', (e) => events.push(e))
    const alice = await t.connect({ userId: 'alice' })
    await expectRejected(t, alice, () => alice.subscribe('nowhere:x'), 'RT_004')
    expect(events).toEqual([expect.objectContaining({ connectionId: alice.connectionId, userId: 'alice', code: 'RT_004', frameType: 'subscribe' })])
  })
})
