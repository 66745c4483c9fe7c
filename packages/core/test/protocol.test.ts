import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  ALL_ERROR_CODES,
  ERROR_MESSAGES,
  ErrorCode,
  PROTOCOL_VERSION,
  RealtimeError,
  type ServerFrame,
  channelNameSchema,
  clampCloseReason,
  clientFrameSchema,
  createTokenAuthenticator,
  jsonCodec,
  parseClientFrame,
  serverFrameSchema,
  utf8Length,
  wireLength,
} from '@tidings/core'
import { createTestHub } from '@tidings/core/testing'

const ok = (value: unknown) => clientFrameSchema.safeParse(value).success
const utf8 = (s: string) => new TextEncoder().encode(s).length

/** One valid example of every client frame type. */
const VALID: Record<string, Record<string, unknown>> = {
  subscribe: { type: 'subscribe', channel: 'public:news' },
  unsubscribe: { type: 'unsubscribe', channel: 'public:news' },
  message: { type: 'message', channel: 'public:news', event: 'post', data: { text: 'hi' } },
  'presence:update': { type: 'presence:update', channel: 'presence:lobby', state: 'away' },
  'presence:get': { type: 'presence:get', channel: 'presence:lobby' },
  typing: { type: 'typing', channel: 'presence:lobby', active: true },
  ack: { type: 'ack', channel: 'public:news', offset: 3 },
  read: { type: 'read', channel: 'public:news', offsets: [1] },
  history: { type: 'history', channel: 'public:news' },
  edit: { type: 'edit', channel: 'public:news', offset: 1, data: { text: 'hello' } },
  delete: { type: 'delete', channel: 'public:news', offset: 1 },
  search: { type: 'search', channel: 'public:news', query: 'hello' },
  channels: { type: 'channels' },
  ping: { type: 'ping' },
  auth: { type: 'auth', token: 'tok' },
}
const TYPES = Object.keys(VALID)
const WITH_CHANNEL = TYPES.filter((t) => t !== 'ping' && t !== 'auth' && t !== 'channels')
const WITH_ID = TYPES.filter((t) => t !== 'ack' && t !== 'read')

describe('client frame schemas', () => {
  it('covers every client frame type', () => {
    const schemaTypes = clientFrameSchema.options.map((o) => o.shape.type.value).sort()
    expect(schemaTypes).toEqual([...TYPES].sort())
  })

  it.each(TYPES)('accepts a minimal valid %s frame, with and without v: 1', (type) => {
    const frame = VALID[type]!
    expect(clientFrameSchema.parse(frame)).toEqual(frame)
    expect(ok({ ...frame, v: PROTOCOL_VERSION })).toBe(true)
  })

  it.each(TYPES)('rejects a %s frame with a wrong protocol version', (type) => {
    for (const v of [0, 2, '1', null, 1.5]) expect(ok({ ...VALID[type], v })).toBe(false)
  })

  it.each(TYPES)('rejects a %s frame with an unknown key (schemas are strict)', (type) => {
    expect(ok({ ...VALID[type], extra: 1 })).toBe(false)
    const r = parseClientFrame({ ...VALID[type], extra: 1 })
    expect(r.ok).toBe(false)
  })

  it.each(WITH_CHANNEL)('rejects a %s frame without a channel', (type) => {
    const { channel: _drop, ...rest } = VALID[type]!
    const r = parseClientFrame(rest)
    expect(r.ok).toBe(false)
    if (!r.ok) expect(r.reason).toMatch(/^channel: /)
  })

  it.each(WITH_CHANNEL)('rejects bad channel names in a %s frame', (type) => {
    for (const channel of ['', 'public:a b', 'public:a/b', 'public:a#b', 'public:*', 'public:é', 'public:\n', 'x'.repeat(201), 42, null]) {
      expect(ok({ ...VALID[type], channel }), `channel ${JSON.stringify(channel)}`).toBe(false)
    }
    expect(ok({ ...VALID[type], channel: 'x'.repeat(200) })).toBe(true)
    expect(ok({ ...VALID[type], channel: 'Aa0_-:.@=,+~' })).toBe(true)
  })

  it.each(WITH_ID)('accepts good request ids and rejects bad ones in a %s frame', (type) => {
    for (const id of ['a', 'x'.repeat(64), 0, 7, 2 ** 40]) expect(ok({ ...VALID[type], id }), `id ${JSON.stringify(id)}`).toBe(true)
    for (const id of ['', 'x'.repeat(65), -1, 1.5, Number.NaN, true, null, {}, []]) {
      expect(ok({ ...VALID[type], id }), `id ${JSON.stringify(id)}`).toBe(false)
    }
  })

  it('ack and read frames carry no request id', () => {
    expect(ok({ ...VALID.ack, id: 'r1' })).toBe(false)
    expect(ok({ ...VALID.read, id: 'r1' })).toBe(false)
  })

  it('rejects unknown or missing frame types and non-objects', () => {
    for (const bad of [{ type: 'nope', channel: 'public:x' }, { channel: 'public:x' }, { type: 'SUBSCRIBE', channel: 'public:x' }, { type: 42 }, null, 'ping', 7, []]) {
      expect(ok(bad), JSON.stringify(bad)).toBe(false)
    }
    expect(parseClientFrame({ type: 'nope' })).toMatchObject({ ok: false })
  })

  it('subscribe: validates auth, filter, since, presence and state', () => {
    const base = VALID.subscribe!
    expect(ok({ ...base, auth: 'x'.repeat(8192), filter: { field: 'data.price', op: 'gt', value: 100 }, since: { epoch: 'e1', offset: 0 }, presence: { name: 'A' }, state: 'away' })).toBe(true)
    expect(ok({ ...base, auth: 'x'.repeat(8193) })).toBe(false)
    expect(ok({ ...base, filter: { field: 'data.price', op: 'gt' } })).toBe(false)
    expect(ok({ ...base, filter: { field: 'data.x', op: 'like', value: 1 } })).toBe(false)
    expect(ok({ ...base, since: { epoch: '', offset: 1 } })).toBe(false)
    expect(ok({ ...base, since: { epoch: 'e', offset: -1 } })).toBe(false)
    expect(ok({ ...base, since: { epoch: 'e', offset: 1.5 } })).toBe(false)
    expect(ok({ ...base, since: { offset: 1 } })).toBe(false)
    expect(ok({ ...base, presence: ['not', 'a', 'record'] })).toBe(false)
    expect(ok({ ...base, state: '' })).toBe(false)
    expect(ok({ ...base, state: 's'.repeat(33) })).toBe(false)
    expect(ok({ ...base, state: 's'.repeat(32) })).toBe(true)
  })

  it('message: validates event, idempotencyKey and priority; data is optional and free-form', () => {
    const base = VALID.message!
    expect(ok({ type: 'message', channel: 'public:news', event: 'e' })).toBe(true)
    expect(ok({ ...base, data: null })).toBe(true)
    expect(ok({ ...base, data: [1, 'two', { three: 3 }] })).toBe(true)
    expect(ok({ ...base, event: 'e'.repeat(128) })).toBe(true)
    expect(ok({ ...base, event: 'e'.repeat(129) })).toBe(false)
    expect(ok({ ...base, event: '' })).toBe(false)
    expect(ok({ type: 'message', channel: 'public:news', data: 1 })).toBe(false)
    expect(ok({ ...base, idempotencyKey: 'k'.repeat(128) })).toBe(true)
    expect(ok({ ...base, idempotencyKey: 'k'.repeat(129) })).toBe(false)
    expect(ok({ ...base, idempotencyKey: '' })).toBe(false)
    for (const priority of ['high', 'normal', 'low']) expect(ok({ ...base, priority })).toBe(true)
    expect(ok({ ...base, priority: 'urgent' })).toBe(false)
  })

  it('presence:update, typing, ack, read, history and auth validate their fields', () => {
    expect(ok({ type: 'presence:update', channel: 'presence:x', data: { a: 1 } })).toBe(true)
    expect(ok({ type: 'presence:update', channel: 'presence:x', data: 'str' })).toBe(false)
    expect(ok({ type: 'presence:update', channel: 'presence:x', state: 's'.repeat(33) })).toBe(false)

    expect(ok({ type: 'typing', channel: 'presence:x', active: false })).toBe(true)
    expect(ok({ type: 'typing', channel: 'presence:x' })).toBe(false)
    expect(ok({ type: 'typing', channel: 'presence:x', active: 'yes' })).toBe(false)

    expect(ok({ type: 'ack', channel: 'public:x', offset: 0 })).toBe(true)
    expect(ok({ type: 'ack', channel: 'public:x', offset: -1 })).toBe(false)
    expect(ok({ type: 'ack', channel: 'public:x', offset: 1.5 })).toBe(false)
    expect(ok({ type: 'ack', channel: 'public:x' })).toBe(false)

    expect(ok({ type: 'read', channel: 'public:x', offsets: [1, 2, 9] })).toBe(true)
    expect(ok({ type: 'read', channel: 'public:x', offsets: [2 ** 40] })).toBe(true)
    expect(ok({ type: 'read', channel: 'public:x', offsets: [] })).toBe(false)
    expect(ok({ type: 'read', channel: 'public:x' })).toBe(false)
    for (const bad of [0, -1, 1.5, '1', null, Number.NaN]) expect(ok({ type: 'read', channel: 'public:x', offsets: [bad] }), `offset ${String(bad)}`).toBe(false)
    expect(ok({ type: 'read', channel: 'public:x', offsets: 3 })).toBe(false)
    expect(ok({ type: 'read', channel: 'public:x', offsets: Array.from({ length: 500 }, (_, i) => i + 1) })).toBe(true)
    expect(ok({ type: 'read', channel: 'public:x', offsets: Array.from({ length: 501 }, (_, i) => i + 1) })).toBe(false)
    // the old shape (message ids) is gone
    expect(ok({ type: 'read', channel: 'public:x', ids: ['m1'] })).toBe(false)
    expect(ok({ type: 'read', channel: 'public:x', offsets: [1], ids: ['m1'] })).toBe(false)

    expect(ok({ type: 'history', channel: 'public:x', since: { epoch: 'e', offset: 4 }, limit: 1000 })).toBe(true)
    expect(ok({ type: 'history', channel: 'public:x', limit: 0 })).toBe(false)
    expect(ok({ type: 'history', channel: 'public:x', limit: 1001 })).toBe(false)
    expect(ok({ type: 'history', channel: 'public:x', limit: 2.5 })).toBe(false)
    expect(ok({ type: 'history', channel: 'public:x', reverse: true })).toBe(false)

    expect(ok({ type: 'auth', token: 't'.repeat(8192) })).toBe(true)
    expect(ok({ type: 'auth', token: 't'.repeat(8193) })).toBe(false)
    expect(ok({ type: 'auth', token: '' })).toBe(false)
    expect(ok({ type: 'auth' })).toBe(false)
  })

  it('channelNameSchema is the same rule the frames use', () => {
    expect(channelNameSchema.safeParse('supplier:dashboard:123').success).toBe(true)
    expect(channelNameSchema.safeParse('a'.repeat(200)).success).toBe(true)
    expect(channelNameSchema.safeParse('a'.repeat(201)).success).toBe(false)
    expect(channelNameSchema.safeParse('a b').success).toBe(false)
  })

  it('parseClientFrame reports where a frame went wrong', () => {
    const good = parseClientFrame({ type: 'ping', id: 1 })
    expect(good).toEqual({ ok: true, frame: { type: 'ping', id: 1 } })
    const bad = parseClientFrame({ type: 'history', channel: 'public:x', limit: 0 })
    expect(bad.ok).toBe(false)
    if (!bad.ok) expect(bad.reason).toMatch(/^limit: /)
  })
})

// ------------------------------------------------------------------ server frames

describe('serverFrameSchema', () => {
  it('accepts every frame the hub sends in a real session', async () => {
    await using t = createTestHub({
      authenticate: createTokenAuthenticator({ 'tok-alice': { userId: 'alice' }, 'tok-alice-2': { userId: 'alice' }, 'tok-bob': { userId: 'bob' } }),
      limits: { presenceUpdatesPerSecond: 3, maxMessageSize: 4096, maxConnectionsPerUser: 2 },
      channels: { 'quiet:*': { subscribe: true, publish: true, history: false }, 'cap:*': { subscribe: true, capacity: 1 } },
      // a scripted live query provider: a snapshot, then one change
      liveQueries: {
        open: (_ctx, _query, emit) => {
          queueMicrotask(() => emit({ version: 2, hash: 'h2', changes: [{ type: 'added', doc: { id: 'b' }, oldIndex: -1, newIndex: 0 }] }))
          return { key: 'id', version: 1, hash: 'h1', docs: [{ id: 'a' }], close: () => {} }
        },
      },
    })
    const alice = await t.connect({ token: 'tok-alice' })
    const bob = await t.connect({ token: 'tok-bob' })
    const anon = await t.connect()

    // subscribe / publish / history / resume
    const sub = await bob.subscribe('public:news')
    await anon.subscribe('public:news')
    await alice.publish('public:news', 'post', { text: 'one' })
    await alice.publish('public:news', 'post', { text: 'two' }, { idempotencyKey: 'k1', priority: 'high' })
    await alice.publish('public:news', 'post', { text: 'two' }, { idempotencyKey: 'k1' }) // duplicate: true
    await bob.request({ type: 'history', channel: 'public:news', limit: 10 })
    await anon.subscribe('public:news', { since: sub.position! }) // already subscribed: plain subscribed
    await anon.unsubscribe('public:news')
    await anon.subscribe('public:news', { since: sub.position! }) // recovered: true + replay
    await anon.unsubscribe('public:news')
    await anon.subscribe('public:news', { since: { epoch: 'other-epoch', offset: 1 } }) // recovered: false + reason
    await bob.subscribe('quiet:room')
    await alice.subscribe('quiet:room', { since: { epoch: 'e', offset: 0 } }) // no history: recovered false
    await alice.publish('quiet:room', 'chat', 'volatile-ish') // no offset
    await t.hub.publish('public:news', 'server', { from: 'server' }) // no sender
    await t.hub.broadcast({ to: { users: ['bob'] }, event: 'direct', data: 1 }) // no channel
    await t.hub.broadcast({ to: 'all', event: 'everyone' })

    // at-least-once delivery with receipts: acked messages, a prev link, delivered and read receipts
    t.hub.channels.register('chat:*', { subscribe: true, publish: 'authenticated', receipts: true, delivery: 'at-least-once' })
    const chatSub = await bob.subscribe('chat:room')
    expect(chatSub).toMatchObject({ delivery: 'at-least-once', position: { offset: 0 } })
    const c1 = await alice.publish('chat:room', 'say', 'one')
    await bob.publish('chat:room', 'say', 'mine') // not sent back to bob: his next message links over it
    const c3 = await alice.publish('chat:room', 'say', 'three')
    await t.settle()
    expect(bob.messages('chat:room').map((m) => [m.offset, m.ack, m.prev])).toEqual([
      [1, true, undefined],
      [3, true, 1],
    ])
    expect(alice.received('receipt')).toEqual([])
    bob.ack('chat:room', c3.offset!) // cumulative: 1..3, of which alice sent 1 and 3
    await t.settle()
    expect(alice.received('receipt')).toEqual([{ type: 'receipt', channel: 'chat:room', status: 'delivered', userId: 'bob', offsets: [c1.offset, c3.offset] }])
    bob.send({ type: 'read', channel: 'chat:room', offsets: [c3.offset!] })
    await t.settle()
    expect(alice.received('receipt').at(-1)).toEqual({ type: 'receipt', channel: 'chat:room', status: 'read', userId: 'bob', offsets: [c3.offset] })
    expect(bob.received('receipt')).toEqual([]) // nobody is told about their own messages

    // revisions, search and the channel list
    t.hub.channels.register('edits:*', { subscribe: true, publish: 'authenticated', revisions: 'own', offline: { maxMessages: 50 } })
    await bob.subscribe('edits:room')
    const e1 = await alice.publish('edits:room', 'say', { text: 'helo world' })
    await alice.edit('edits:room', e1.offset!, { text: 'hello world' }) // revised + a revision event to bob
    await alice.delete('edits:room', e1.offset!) // revised with deleted + a deletion event
    await bob.request({ type: 'history', channel: 'edits:room' }) // a tombstone with version and deleted
    await alice.publish('edits:room', 'say', { text: 'hello again' })
    expect(await bob.search('edits:room', 'hello')).toHaveLength(1)
    await bob.unsubscribe('edits:room') // what was written to bob is committed as his cursor
    expect((await bob.channels()).map((c) => [c.name, c.unread])).toEqual([['edits:room', 0]])

    // presence and typing
    await alice.subscribe('presence:lobby', { presence: { name: 'Alice' }, state: 'busy' })
    await bob.subscribe('presence:lobby')
    const alice2 = await t.connect({ token: 'tok-alice-2' })
    await alice2.subscribe('presence:lobby')
    await alice.updatePresence('presence:lobby', { state: 'away', data: { name: 'Alice A.' } })
    await bob.getPresence('presence:lobby')
    alice.typing('presence:lobby', true)
    await t.settle()
    alice.typing('presence:lobby', false)
    await t.settle()
    bob.typing('presence:lobby')
    await t.advance(10_000) // typing auto-clears
    alice2.close()
    await t.settle()
    await alice.unsubscribe('presence:lobby') // presence:leave

    // live queries: query:snapshot, query:changes
    await bob.request({ type: 'subscribe', channel: 'db:collection:things', query: { where: [['kind', '==', 'x']], limit: 5 } })
    await t.settle()

    // auth, ping
    await alice.request({ type: 'auth', token: 'tok-alice' })
    await alice.ping()
    // credentials that expire on an open connection are announced before they do
    const carol = await t.connect({ identity: { userId: 'carol', expiresAt: t.clock.now() + 120_000 } })
    await t.advance(61_000)
    expect(carol.received('auth:expiring')).toHaveLength(1)

    // errors of every kind the session can provoke
    const errors = [
      bob.request({ type: 'auth', token: 'tok-alice' }), // RT_002 (different user)
      anon.publish('public:news', 'x'), // RT_003
      bob.subscribe('nowhere'), // RT_004
      bob.request({ type: 'bogus' } as never), // RT_007
      bob.request({ type: 'read', channel: 'public:news', offsets: [1] }), // RT_007 (read frames take no request id)
      bob.request({ type: 'presence:update', channel: 'public:news', state: 'x' }), // RT_009
      bob.getPresence('presence:elsewhere'), // RT_009
      bob.subscribe('cap:one').then(() => anon.subscribe('cap:one')), // RT_008
      t.connect({ token: 'nope' }), // RT_002 on connect, then closed
      t.connect({ token: 'tok-alice' }).then(() => t.connect({ token: 'tok-alice' })), // RT_001: too many connections
    ]
    bob.send({ type: 'message', channel: 'public:news', event: 'big', data: 'x'.repeat(5000) }) // RT_005 (frame over limit, with details)
    bob.send('{not json')
    bob.send({ type: 'read', channel: 'public:news', offsets: [1] }) // RT_007: no receipts on this channel
    const settled = await Promise.allSettled(errors)
    for (const r of settled) {
      expect(r.status).toBe('rejected')
      if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(RealtimeError)
    }
    for (let i = 0; i < 5; i++) bob.send({ type: 'presence:update', channel: 'presence:lobby', state: 'x' }) // RT_006 with details
    await t.settle()
    t.hub.channel('public:news').kick('bob', 'behave') // unsubscribed with reason
    await t.settle()

    const all: ServerFrame[] = t.transport.clients.flatMap((c) => c.frames)
    const seen = new Set(all.map((f) => f.type))
    // the scenario really produced every server frame type
    const schemaTypes = serverFrameSchema.options.map((o) => o.shape.type.value)
    expect([...seen].sort()).toEqual([...schemaTypes].sort())
    const codes = new Set(all.flatMap((f) => (f.type === 'error' ? [f.code] : [])))
    for (const code of ['RT_001', 'RT_002', 'RT_003', 'RT_004', 'RT_005', 'RT_006', 'RT_007', 'RT_008', 'RT_009']) expect(codes, code).toContain(code)
    expect(all.some((f) => f.type === 'subscribed' && f.recovered === false && typeof f.reason === 'string')).toBe(true)
    expect(all.some((f) => f.type === 'subscribed' && f.recovered === true)).toBe(true)
    expect(all.some((f) => f.type === 'published' && f.duplicate === true)).toBe(true)
    expect(all.some((f) => f.type === 'message' && f.channel === undefined)).toBe(true)
    expect(all.some((f) => f.type === 'subscribed' && f.delivery === 'at-least-once')).toBe(true)
    expect(all.some((f) => f.type === 'subscribed' && f.delivery === 'at-most-once')).toBe(true)
    expect(all.some((f) => f.type === 'message' && f.ack === true && f.prev !== undefined)).toBe(true)
    expect(all.filter((f) => f.type === 'receipt').map((f) => f.type === 'receipt' && f.status)).toEqual(['delivered', 'read'])
    expect(all.some((f) => f.type === 'error' && f.code === 'RT_007' && /receipts are not enabled/.test(f.message))).toBe(true)

    for (const frame of all) {
      expect(() => serverFrameSchema.parse(frame), JSON.stringify(frame)).not.toThrow()
    }
  })

  it('replies to request frames carry the request id (presence:update)', async () => {
    await using t = createTestHub()
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('presence:lobby')
    await alice.subscribe('presence:lobby')
    let reply: unknown
    alice.updatePresence('presence:lobby', { state: 'away' }).then((f) => (reply = f), (e) => (reply = e))
    await t.settle()
    // the updater gets exactly one presence:update: the reply, correlated with its request
    // (without the id, updatePresence() would never settle)
    const updates = alice.received('presence:update')
    expect(updates).toHaveLength(1)
    expect(updates[0]).toMatchObject({ id: 'r2', user: { id: 'alice', state: 'away' } })
    expect(serverFrameSchema.parse(updates[0])).toMatchObject({ id: 'r2' })
    expect(reply).toMatchObject({ type: 'presence:update', channel: 'presence:lobby', user: { id: 'alice', state: 'away' } })
    // the others get the announcement, without an id
    expect(bob.received('presence:update').map((f) => [f.user.id, f.user.state, 'id' in f])).toEqual([['alice', 'away', false]])
  })

  it('replies to request frames carry the request id (oversized publish)', async () => {
    await using t = createTestHub({ limits: { maxMessageSize: 1024 } })
    const alice = await t.connect({ userId: 'alice' })
    let outcome: unknown
    alice.publish('public:news', 'big', 'x'.repeat(2000)).then((f) => (outcome = f), (e) => (outcome = e))
    await t.settle()
    const error = alice.received('error').at(-1)
    expect(error?.code).toBe('RT_005')
    expect(error?.id).toBe('r1')
    expect(outcome).toBeInstanceOf(RealtimeError)
  })

  it('rejects malformed server frames', () => {
    const member = { id: 'u', state: 'online', data: {}, connections: 1, joinedAt: 0, lastSeen: 0 }
    expect(serverFrameSchema.safeParse({ type: 'presence:join', channel: 'c', user: member }).success).toBe(true)
    expect(serverFrameSchema.safeParse({ type: 'presence:join', channel: 'c', user: { ...member, connections: -1 } }).success).toBe(false)
    expect(serverFrameSchema.safeParse({ type: 'error', code: 'RT_010', message: 'x' }).success).toBe(false)
    expect(serverFrameSchema.safeParse({ type: 'error', code: 'RT_001', message: 'x' }).success).toBe(true)
    expect(serverFrameSchema.safeParse({ type: 'connected', v: 2, connectionId: 'c', limits: { maxMessageSize: 1, messagesPerSecond: 1, maxSubscriptions: 1 } }).success).toBe(false)
    expect(serverFrameSchema.safeParse({ type: 'message', event: 'e', data: 1, id: 'm', timestamp: 't', offset: 1.5 }).success).toBe(false)
    expect(serverFrameSchema.safeParse({ type: 'nope' }).success).toBe(false)
  })

  it('validates the delivery fields: receipt, history, message prev/ack, subscribed delivery', () => {
    const parses = (f: unknown) => serverFrameSchema.safeParse(f).success
    const receipt = { type: 'receipt', channel: 'c', status: 'delivered', userId: 'bob', offsets: [1, 3] }
    expect(parses(receipt)).toBe(true)
    expect(parses({ ...receipt, status: 'read' })).toBe(true)
    expect(parses({ ...receipt, status: 'seen' })).toBe(false)
    expect(parses({ ...receipt, offsets: [0] })).toBe(false)
    expect(parses({ ...receipt, offsets: [1.5] })).toBe(false)
    const { userId: _u, ...noUser } = receipt
    expect(parses(noUser)).toBe(false)

    const message = { type: 'message', channel: 'c', event: 'e', data: 1, id: 'm3', offset: 3, timestamp: 't' }
    expect(parses({ ...message, prev: 1, ack: true })).toBe(true)
    expect(parses({ ...message, prev: 0 })).toBe(true)
    expect(parses({ ...message, prev: -1 })).toBe(false)
    expect(parses({ ...message, prev: 1.5 })).toBe(false)
    expect(parses({ ...message, ack: false })).toBe(false)

    const history = { type: 'history', id: 'r1', channel: 'c', messages: [message], position: { epoch: 'e', offset: 3 }, top: 3, complete: true }
    expect(parses(history)).toBe(true)
    expect(parses({ ...history, messages: [{ ...message, id: undefined }] })).toBe(false)
    expect(parses({ ...history, position: { epoch: '', offset: 3 } })).toBe(false)
    expect(parses({ ...history, complete: undefined })).toBe(false)
    expect(parses({ ...history, top: -1 })).toBe(false)

    const subscribed = { type: 'subscribed', channel: 'c' }
    for (const delivery of ['at-most-once', 'at-least-once']) expect(parses({ ...subscribed, delivery })).toBe(true)
    expect(parses({ ...subscribed, delivery: 'exactly-once' })).toBe(false)
  })
})

// ------------------------------------------------------------------ codec

describe('jsonCodec', () => {
  const frames: ServerFrame[] = [
    { type: 'pong', id: 3 },
    { type: 'message', channel: 'public:x', event: 'e', data: { nested: [1, 'ü', null, { 'emoji😀': true }] }, id: 'm1', offset: 9, timestamp: '2026-01-01T00:00:00.000Z' },
    { type: 'error', code: 'RT_007', message: 'bad', details: { limit: 5 } },
  ]

  it('round-trips frames as text', () => {
    expect(jsonCodec.name).toBe('json')
    for (const f of frames) {
      const data = jsonCodec.encode(f)
      expect(typeof data).toBe('string')
      expect(jsonCodec.decode(data)).toEqual(f)
      expect(jsonCodec.encode(f)).toEqual(data) // pure
    }
  })

  it('decodes UTF-8 bytes', () => {
    for (const f of frames) {
      const bytes = new TextEncoder().encode(jsonCodec.encode(f) as string)
      expect(jsonCodec.decode(bytes)).toEqual(f)
      expect(wireLength(bytes)).toBe(bytes.byteLength)
    }
  })

  it('throws on invalid UTF-8 bytes and on invalid JSON', () => {
    expect(() => jsonCodec.decode(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))).toThrow()
    expect(() => jsonCodec.decode(new Uint8Array([0x22, 0xc3, 0x22]))).toThrow() // truncated 2-byte sequence
    expect(() => jsonCodec.decode(new Uint8Array([0x22, 0xed, 0xa0, 0x80, 0x22]))).toThrow() // encoded surrogate
    expect(() => jsonCodec.decode('{not json')).toThrow()
    expect(() => jsonCodec.decode('')).toThrow()
  })
})

describe('utf8Length', () => {
  const cases: Array<[string, string]> = [
    ['empty', ''],
    ['ascii', 'hello, world ~'],
    ['2-byte', 'éüßñ¢'],
    ['3-byte', '€中文字'],
    ['emoji', '😀🎉👍🏽'],
    ['mixed', 'a é € 😀 z'],
    ['boundaries', '\u007f\u0080\u07ff\u0800\uffff\u{10000}\u{10ffff}'],
  ]

  it.each(cases)('matches TextEncoder for %s', (_name, s) => {
    expect(utf8Length(s)).toBe(utf8(s))
    expect(wireLength(s)).toBe(utf8(s))
  })

  it('counts lone surrogates as TextEncoder does (U+FFFD, 3 bytes)', () => {
    for (const s of ['\ud800', '\udc00', 'a\ud800', '\ud800a', '\ud800é', '\ud800€', '\udc00\ud800']) {
      expect(utf8Length(s), JSON.stringify(s)).toBe(utf8(s))
    }
  })

  it('matches TextEncoder on long strings too (past the reused buffer: ASCII check, then counting)', () => {
    const long = (unit: string, n: number) => unit.repeat(n)
    for (const s of [long('a', 1024), long('a', 1025), long('a', 5000), long('é', 1025), long('😀', 600), `${long('a', 2000)}\ud800`, `${long('€', 700)}x${long('a', 400)}`]) {
      expect(utf8Length(s), `length ${s.length}`).toBe(utf8(s))
    }
    fc.assert(
      fc.property(fc.string({ unit: 'binary', minLength: 900, maxLength: 2200 }), fc.string({ unit: 'grapheme', maxLength: 40 }), (a, b) => {
        const s = a + b
        expect(utf8Length(s)).toBe(utf8(s))
      }),
      { numRuns: 200 },
    )
  })
})

describe('clampCloseReason', () => {
  const isWellFormed = (s: string) => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s)

  it('keeps reasons of at most 123 bytes unchanged', () => {
    for (const s of ['', 'bye', 'x'.repeat(123), 'é'.repeat(61) + 'x', '😀'.repeat(30) + 'abc']) {
      expect(clampCloseReason(s)).toBe(s)
    }
  })

  it.each([
    ['ascii', 'x'.repeat(500)],
    ['2-byte', 'é'.repeat(100)],
    ['3-byte', '€'.repeat(100)],
    ['emoji', '😀'.repeat(40)],
    ['emoji after odd ascii', 'x' + '😀'.repeat(40)],
    ['mixed', 'ab€😀é'.repeat(20)],
  ])('clamps %s to <= 123 bytes without splitting a character', (_name, s) => {
    const out = clampCloseReason(s)
    expect(utf8(out)).toBeLessThanOrEqual(123)
    expect(utf8Length(out)).toBeLessThanOrEqual(123)
    expect(s.startsWith(out)).toBe(true)
    expect(isWellFormed(out), JSON.stringify(out.slice(-4))).toBe(true)
    // it keeps as much as fits: one more whole character would not
    const nextChar = String.fromCodePoint(s.slice(out.length).codePointAt(0)!)
    expect(utf8(out + nextChar)).toBeGreaterThan(123)
  })
})

describe('error codes', () => {
  it('ERROR_MESSAGES covers RT_001..RT_009 and nothing else', () => {
    const expected = Array.from({ length: 9 }, (_, i) => `RT_00${i + 1}`)
    expect(Object.keys(ERROR_MESSAGES).sort()).toEqual(expected)
    expect([...ALL_ERROR_CODES].sort()).toEqual(expected)
    expect(Object.values(ErrorCode).sort()).toEqual(expected)
    for (const code of expected) expect(ERROR_MESSAGES[code as ErrorCode]).toMatch(/\S/)
  })

  it('names match the codes as documented', () => {
    expect(ErrorCode).toEqual({
      ConnectionFailed: 'RT_001',
      AuthenticationFailed: 'RT_002',
      PermissionDenied: 'RT_003',
      ChannelNotFound: 'RT_004',
      MessageTooLarge: 'RT_005',
      RateLimitExceeded: 'RT_006',
      InvalidMessageFormat: 'RT_007',
      ChannelCapacityExceeded: 'RT_008',
      PresenceUpdateFailed: 'RT_009',
    })
  })

  it('RealtimeError defaults its message from the table', () => {
    for (const code of ALL_ERROR_CODES) {
      const e = new RealtimeError(code)
      expect(e.message).toBe(ERROR_MESSAGES[code])
      expect(e.code).toBe(code)
      expect(e.name).toBe('RealtimeError')
    }
    expect(new RealtimeError('RT_005', 'too big', { limit: 1 }).details).toEqual({ limit: 1 })
  })
})
