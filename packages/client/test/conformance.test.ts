/**
 * Client conformance: the same behaviour over every transport, against a real HTTP server
 * (127.0.0.1, port 0) served by `createRealtime(...).attach(server)`: connecting, pub/sub,
 * server publishes (hub and admin API), presence, typing, acknowledgments and receipts on an
 * at-least-once channel, resume after a forced disconnect, and every error code as the client
 * API surfaces it (each followed by a publish that still works).
 */
import { createServer } from 'node:http'
import { type Hub, type HubOptions, RealtimeError, createHub, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'
// zod is a dependency of @tidings/core (not of the client package): take it from there.
import { z } from 'zod'
import { type Channel, type MessageFrame, Realtime, type RealtimeOptions, type TransportName } from '../src/index.js'
import { listenTracked, sleep, until } from './memory-network.js'

const API_KEY = 'conformance-admin-key'

/** Tokens are `user:<id>`; anything else is refused. */
const authenticate: HubOptions['authenticate'] = async (r) => (r.token?.startsWith('user:') ? { userId: r.token.slice(5) } : null)

/** Channel patterns used below (app patterns are tried before the built-in ones). */
const CHANNELS: HubOptions['channels'] = {
  'alo:*': { subscribe: 'authenticated', publish: 'authenticated', delivery: 'at-least-once', receipts: true },
  'typed:*': { events: { e: z.object({ n: z.number() }) } },
  'cap:*': { capacity: 1 },
}

async function startServer(options: HubOptions = {}, spy?: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => boolean) {
  const hub: Hub = createHub({ logger: silentLogger, authenticate, ...options, channels: { ...CHANNELS, ...options.channels } })
  const realtime = createRealtime({
    hub,
    apiKey: API_KEY,
    websocket: { pingIntervalMs: 0 },
    sse: { reconnectMs: 20 },
    longPoll: { pollTimeoutMs: 1000 },
  })
  const server = createServer()
  realtime.attach(server)
  if (spy) {
    // Sees every request first; a spy that answers it (returns true) keeps it from Tidings.
    const ours = server.listeners('request') as Array<(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void>
    server.removeAllListeners('request')
    server.on('request', (req, res) => {
      if (!spy(req, res)) for (const l of ours) l.call(server, req, res)
    })
  }
  const { url: base, cut, close } = await listenTracked(server, async () => {
    await realtime.close()
    await hub.close()
  })
  return {
    hub,
    url: base,
    /** Destroy every TCP connection from the server side (sockets, event streams, polls). */
    cut,
    /** A call to the admin API with the API key. */
    async admin(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
      const res = await fetch(`${base}${path}`, {
        method,
        headers: { 'x-api-key': API_KEY, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      })
      const text = await res.text()
      return { status: res.status, json: text ? (JSON.parse(text) as unknown) : undefined }
    },
    close,
  }
}

type Server = Awaited<ReturnType<typeof startServer>>
let server: Server | undefined
const clients: Realtime[] = []

afterEach(async () => {
  for (const c of clients.splice(0)) c.disconnect()
  await server?.close()
  server = undefined
})

/** The transport name the hub records for each client transport. */
const HUB_TRANSPORT: Record<TransportName, string> = { websocket: 'ws', sse: 'sse', 'long-poll': 'long-poll' }

/** The rejection of a promise (fails when it resolves), as a RealtimeError. */
async function refusal(p: Promise<unknown>): Promise<RealtimeError> {
  const result = await p.then(
    (v) => ({ ok: true as const, v }),
    (e: unknown) => ({ ok: false as const, e }),
  )
  if (result.ok) throw new Error(`expected a rejection, got ${JSON.stringify(result.v)}`)
  expect(result.e).toBeInstanceOf(RealtimeError)
  return result.e as RealtimeError
}

/** Collect a channel's messages by event. */
function collect(ch: Channel): MessageFrame[] {
  const got: MessageFrame[] = []
  ch.on('message', (m) => got.push(m))
  return got
}

/** 1..n */
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

for (const transport of ['websocket', 'sse', 'long-poll'] as const) {
  describe(transport, () => {
    function client(options: Partial<RealtimeOptions> = {}): Realtime {
      const rt = new Realtime({
        url: server!.url,
        transports: [transport],
        WebSocket,
        reconnectDelay: 20,
        maxReconnectDelay: 100,
        heartbeatIntervalMs: 0,
        upgradeIntervalMs: 0,
        ...options,
      })
      clients.push(rt)
      return rt
    }

    /** A client that is connected (and the connected event it got). */
    async function connected(options: Partial<RealtimeOptions> = {}) {
      const rt = client({ ...options, autoConnect: false })
      const info = new Promise<{ connectionId: string; userId: string | undefined; transport: string }>((r) => rt.once('connected', r))
      rt.connect()
      return { rt, info: await info }
    }

    // ------------------------------------------------------------ credentials, handles, secrets, limits

    it('reauthenticate(): an auth frame with a fresh token from the auth function; a refused token leaves the connection working', async () => {
      server = await startServer({ authenticate: async (r) => (r.token?.startsWith('user:') ? { userId: r.token.slice(5).split(';')[0]! } : null) })
      let n = 0
      const { rt } = await connected({ auth: () => `user:alice;${++n}` })
      const refreshed: unknown[] = []
      rt.on('authenticated', (i) => refreshed.push(i))
      expect(await rt.reauthenticate()).toEqual({ userId: 'alice', expiresAt: undefined })
      expect(n).toBe(2)
      expect(refreshed).toHaveLength(1)
      expect((await refusal(rt.reauthenticate('user:mallory'))).code).toBe('RT_002')
      expect((await refusal(rt.reauthenticate('garbage'))).code).toBe('RT_002')
      const ch = rt.channel('public:after-auth')
      await ch.subscribe()
      expect((await ch.send('e', 1)).offset).toBe(1)
      expect(server.hub.connections.local({ userId: 'alice' })).toHaveLength(1)
    })

    it('expiring credentials (the hub sends auth:expiring): the auth function refreshes them in place; a fixed token ends with 4001', async () => {
      // Every identity expires 500 ms after it was issued; the hub warns 400 ms before and closes 300 ms after.
      server = await startServer({
        authenticate: async (r) => (r.token?.startsWith('user:') ? { userId: r.token.slice(5).split(';')[0]!, expiresAt: Date.now() + 500 } : null),
        credentials: { refreshBeforeMs: 400, graceMs: 300 },
      })
      let n = 0
      const { rt, info } = await connected({ auth: () => `user:alice;${++n}` })
      const refreshed: Array<{ expiresAt: number | undefined }> = []
      rt.on('authenticated', (i) => refreshed.push(i))
      const ch = rt.channel('public:long-lived')
      await ch.subscribe()
      await until(() => refreshed.length >= 2, 5000, 'two refreshes')
      // Still the same hub connection, still subscribed, and the expiry moved on.
      expect(rt.connectionId).toBe(info.connectionId)
      expect(rt.state).toBe('connected')
      expect(refreshed[1]!.expiresAt).toBeGreaterThan(refreshed[0]!.expiresAt!)
      expect((await ch.send('e', 1)).offset).toBe(1)

      const fixed = client({ auth: 'user:bob' })
      const errors: string[] = []
      fixed.on('error', (e) => errors.push(e.message))
      const closed = new Promise<{ code: number }>((r) => fixed.once('disconnected', r))
      expect((await closed).code).toBe(4001)
      expect(errors.some((m) => /cannot be refreshed/.test(m))).toBe(true)
      await until(() => fixed.state === 'disconnected', 3000, 'the fixed-token client to stop')
    })

    it('a disposed channel handle keeps no listeners: visiting a room three times shows each message once', async () => {
      server = await startServer()
      const { rt: alice } = await connected({ auth: 'user:alice' })
      const { rt: bob } = await connected({ auth: 'user:bob' })
      const seen: string[] = []
      let room = alice.channel('public:room')
      for (let visit = 0; visit < 3; visit++) {
        room.dispose()
        room = alice.channel('public:room')
        room.on('chat', (d: string) => seen.push(d))
        await room.subscribe()
      }
      expect(room.listenerCount('chat')).toBe(1)
      await bob.channel('public:room').send('chat', 'once')
      await until(() => seen.length >= 1, 3000, 'the message')
      await sleep(50)
      expect(seen).toEqual(['once'])
      // The off function returned by on() removes exactly that listener.
      const off = room.on('chat', (d: string) => seen.push(`second ${d}`))
      off()
      await bob.channel('public:room').send('chat', 'again')
      await until(() => seen.length >= 2, 3000, 'the second message')
      await sleep(50)
      expect(seen).toEqual(['once', 'again'])
      // A disposed handle refuses to subscribe (its listeners are gone): a clear error, not silence.
      const old = alice.channel('public:room')
      old.dispose()
      expect((await refusal(old.subscribe())).message).toMatch(/disposed/)
    })

    if (transport !== 'websocket') {
      it('every request of an HTTP session carries the session secret (SSE re-attach and polls, POSTs, DELETE)', async () => {
        const seen: Array<{ method: string; path: string; secret: string | undefined; resume: boolean }> = []
        server = await startServer({}, (req) => {
          const path = (req.url ?? '').split('?')[0]!
          const secret = req.headers['x-tidings-secret']
          seen.push({ method: req.method!, path, secret: typeof secret === 'string' ? secret : undefined, resume: req.headers['last-event-id'] !== undefined })
          return false
        })
        const { rt } = await connected({ auth: 'user:alice' })
        const ch = rt.channel('public:s')
        await ch.subscribe()
        if (transport === 'sse') {
          // Break the event stream: the client re-attaches to the same session with Last-Event-ID.
          const before = seen.length
          server.cut()
          await until(() => seen.slice(before).some((r) => r.method === 'GET' && r.resume), 5000, 'the re-attach')
        } else await sleep(150)
        await ch.send('e', 1)
        rt.disconnect()
        await until(() => seen.some((r) => r.method === 'DELETE'), 3000, 'the DELETE')
        const sessionRequests = seen.filter((r) => /\/(sse|poll)\/[^/]+$/.test(r.path) || (r.method === 'GET' && r.resume))
        expect(sessionRequests.length).toBeGreaterThanOrEqual(3)
        const secrets = new Set(sessionRequests.map((r) => r.secret))
        expect(secrets.has(undefined)).toBe(false)
        expect(sessionRequests.filter((r) => r.method === 'POST').length).toBeGreaterThan(0)
      })

      it('an opening answered 429 with Retry-After is tried again after the wait (not given up, not hammered)', async () => {
        const opens: number[] = []
        let refuse = 2
        server = await startServer({}, (req, res) => {
          const path = (req.url ?? '').split('?')[0]!
          const opening = (req.method === 'GET' && path.endsWith('/sse') && req.headers['last-event-id'] === undefined) || (req.method === 'POST' && path.endsWith('/poll'))
          if (!opening) return false
          opens.push(Date.now())
          if (refuse-- <= 0) return false
          res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' })
          res.end(JSON.stringify({ type: 'error', code: 'RT_006', message: 'too many requests from this address' }))
          return true
        })
        const rt = client({ auth: 'user:alice', reconnectDelay: 10, maxReconnectDelay: 20 })
        const states: string[] = []
        rt.on('state', (s) => states.push(s))
        await until(() => rt.state === 'connected', 8000, 'the connection after the 429s')
        expect(opens.length).toBe(3)
        // Each retry waited the second the server asked for, although the backoff alone is 10-20 ms.
        expect(opens[1]! - opens[0]!).toBeGreaterThanOrEqual(950)
        expect(opens[2]! - opens[1]!).toBeGreaterThanOrEqual(950)
        expect(states).not.toContain('disconnected')
      })
    }

    // ------------------------------------------------------------ connecting

    it('connects: state, connectionId, userId and transport, as the hub sees them', async () => {
      server = await startServer()
      const rt = client({ auth: 'user:alice', autoConnect: false })
      const states: string[] = []
      rt.on('state', (s) => states.push(s))
      expect(rt.state).toBe('idle')
      const info = new Promise<{ connectionId: string; userId: string | undefined; transport: string }>((r) => rt.once('connected', r))
      rt.connect()
      expect(rt.state).toBe('connecting')
      const i = await info
      expect(states).toEqual(['connecting', 'connected'])
      expect(rt.state).toBe('connected')
      expect(rt.transport).toBe(transport)
      expect(rt.userId).toBe('alice')
      expect(rt.connectionId).toMatch(/\S/)
      expect(i).toEqual({ connectionId: rt.connectionId, userId: 'alice', transport })
      const seen = server.hub.connections.local({ userId: 'alice' })
      expect(seen.map((c) => [c.id, c.transport])).toEqual([[rt.connectionId, HUB_TRANSPORT[transport]]])

      // Anonymous: no credentials, no userId.
      const { rt: anon } = await connected()
      expect(anon.userId).toBeUndefined()
      expect(anon.connectionId).not.toBe(rt.connectionId)
      expect((await server.hub.connections.get(anon.connectionId!))?.userId).toBeUndefined()

      rt.disconnect()
      expect(rt.state).toBe('disconnected')
      await until(() => server!.hub.connections.local({ userId: 'alice' }).length === 0, 3000, 'the hub to see the close')
    })

    // ------------------------------------------------------------ pub/sub

    it('subscribe and publish between two clients (no echo to the publisher)', async () => {
      server = await startServer()
      const { rt: alice } = await connected({ auth: 'user:alice' })
      const { rt: bob } = await connected({ auth: 'user:bob' })
      const a = alice.channel('public:chat')
      const b = bob.channel('public:chat')
      const sub = await a.subscribe()
      expect(sub).toMatchObject({ type: 'subscribed', channel: 'public:chat', position: { offset: 0 }, delivery: 'at-most-once' })
      expect(a.state).toBe('subscribed')
      await b.subscribe()
      const gotA = collect(a)
      const gotB = collect(b)
      const byEvent: unknown[] = []
      a.on('chat', (data: unknown, m: MessageFrame) => byEvent.push([data, m.offset]))

      const r1 = await b.send('chat', { text: 'hi' })
      const r2 = await b.send('chat', { text: 'there' })
      expect(r1).toMatchObject({ offset: 1, duplicate: false })
      expect(r2.offset).toBe(2)
      const r3 = await a.send('reply', 'yo')
      await until(() => gotA.length === 2 && gotB.length === 1, 3000, 'messages')
      await sleep(30)
      expect(gotA.map((m) => [m.event, m.data, m.sender, m.offset])).toEqual([
        ['chat', { text: 'hi' }, 'bob', 1],
        ['chat', { text: 'there' }, 'bob', 2],
      ])
      expect(gotA[0]!.id).toBe(r1.messageId)
      expect(byEvent).toEqual([[{ text: 'hi' }, 1], [{ text: 'there' }, 2]])
      expect(gotB.map((m) => [m.event, m.data, m.sender, m.offset])).toEqual([['reply', 'yo', 'alice', r3.offset]])

      // Unsubscribed: nothing more arrives.
      await a.unsubscribe()
      expect(a.state).toBe('unsubscribed')
      await b.send('chat', 'after')
      await sleep(50)
      expect(gotA).toHaveLength(2)
    })

    it('server publishes reach subscribers: hub.publish and the admin API', async () => {
      server = await startServer()
      const { rt } = await connected({ auth: 'user:alice' })
      const ch = rt.channel('public:news')
      const got = collect(ch)
      await ch.subscribe()
      const p1 = await server.hub.publish('public:news', 'post', { n: 1 })
      const viaApi = await server.admin('POST', '/channels/public:news/broadcast', { event: 'post', data: { n: 2 }, sender: 'editor' })
      expect(viaApi.status).toBe(200)
      expect(viaApi.json).toMatchObject({ offset: 2, recipients: 1 })
      // The admin API needs the key.
      const refused = await fetch(`${server.url}/channels/public:news/broadcast`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"event":"post"}' })
      expect(refused.status).toBe(401)
      await refused.text()
      await until(() => got.length === 2, 3000, 'server messages')
      expect(got.map((m) => [m.event, m.data, m.offset, m.sender])).toEqual([
        ['post', { n: 1 }, p1.offset, undefined],
        ['post', { n: 2 }, 2, 'editor'],
      ])
    })

    // ------------------------------------------------------------ presence and typing

    it('presence: join, update, getPresence, leave (unsubscribe and disconnect)', async () => {
      server = await startServer()
      const { rt: alice } = await connected({ auth: 'user:alice' })
      const a = alice.channel('presence:lobby', { presence: { name: 'Alice' } })
      const events: Array<[string, string, string, number]> = []
      for (const type of ['presence:join', 'presence:leave', 'presence:update'] as const) {
        a.on(type, (m) => events.push([type, m.id, m.state, m.connections]))
      }
      const first = await a.subscribe()
      expect(first.presence?.users.map((u) => [u.id, u.data])).toEqual([['alice', { name: 'Alice' }]])

      const { rt: bob } = await connected({ auth: 'user:bob' })
      const b = bob.channel('presence:lobby', { presence: { name: 'Bob' } })
      const bobSub = await b.subscribe()
      expect(bobSub.presence?.users.map((u) => u.id).sort()).toEqual(['alice', 'bob'])
      expect(bobSub.presence?.count).toBe(2)
      await until(() => events.length === 1, 3000, 'join')
      expect(events).toEqual([['presence:join', 'bob', 'online', 1]])

      const me = await b.updatePresence({ name: 'Bob 2' }, 'away')
      expect(me).toMatchObject({ id: 'bob', state: 'away', data: { name: 'Bob 2' }, connections: 1 })
      await until(() => events.length === 2, 3000, 'update')
      expect(events[1]).toEqual(['presence:update', 'bob', 'away', 1])

      const snapshot = await a.getPresence()
      expect(snapshot.count).toBe(2)
      expect(snapshot.users.map((u) => [u.id, u.state, u.data]).sort()).toEqual([
        ['alice', 'online', { name: 'Alice' }],
        ['bob', 'away', { name: 'Bob 2' }],
      ])

      await b.unsubscribe()
      await until(() => events.length === 3, 3000, 'leave on unsubscribe')
      expect(events[2]).toEqual(['presence:leave', 'bob', 'away', 0])
      expect((await a.getPresence()).users.map((u) => u.id)).toEqual(['alice'])

      // Back in, then gone with the connection. The resubscribe sends the presence kept by updatePresence.
      await b.subscribe()
      await until(() => events.length === 4, 3000, 'join again')
      expect(events[3]).toEqual(['presence:join', 'bob', 'away', 1])
      expect((await a.getPresence()).users.find((u) => u.id === 'bob')?.data).toEqual({ name: 'Bob 2' })
      bob.disconnect()
      await until(() => events.length === 5, 3000, 'leave on disconnect')
      expect(events[4]).toEqual(['presence:leave', 'bob', 'away', 0])
      expect((await a.getPresence()).count).toBe(1)
    })

    it('typing indicators reach the others, not the typist', async () => {
      server = await startServer()
      const { rt: alice } = await connected({ auth: 'user:alice' })
      const { rt: bob } = await connected({ auth: 'user:bob' })
      const a = alice.channel('presence:doc')
      const b = bob.channel('presence:doc')
      await a.subscribe()
      await b.subscribe()
      const seenByAlice: Array<[string, boolean]> = []
      const seenByBob: Array<[string, boolean]> = []
      a.on('typing', (t) => seenByAlice.push([t.userId, t.active]))
      b.on('typing', (t) => seenByBob.push([t.userId, t.active]))
      b.typing(true)
      await until(() => seenByAlice.length === 1, 3000, 'typing on')
      b.typing(false)
      await until(() => seenByAlice.length === 2, 3000, 'typing off')
      a.typing()
      await until(() => seenByBob.length === 1, 3000, 'alice typing')
      await sleep(30)
      expect(seenByAlice).toEqual([['bob', true], ['bob', false]])
      expect(seenByBob).toEqual([['alice', true]])
    })

    // ------------------------------------------------------------ at-least-once

    it('at-least-once: messages carry ack, the hub gets the acks (no redelivery), receipts reach the sender', async () => {
      const ackTimeoutMs = 150
      server = await startServer({ delivery: { ackTimeoutMs } })
      const hub = server.hub
      const { rt: alice } = await connected({ auth: 'user:alice', ackIntervalMs: 10 })
      const { rt: bob } = await connected({ auth: 'user:bob' })
      const a = alice.channel('alo:orders')
      const got = collect(a)
      const sub = await a.subscribe()
      expect(sub.delivery).toBe('at-least-once')
      const b = bob.channel('alo:orders')
      const receipts: Array<{ status: string; userId: string; offsets: number[] }> = []
      b.on('receipt', (r) => receipts.push({ status: r.status, userId: r.userId, offsets: [...r.offsets] }))

      for (let i = 1; i <= 5; i++) await b.send('order', i)
      await until(() => got.length === 5, 3000, 'messages')
      expect(got.map((m) => [m.offset, m.data, m.ack])).toEqual(range(1, 5).map((i) => [i, i, true]))
      const delivered = () => new Set(receipts.filter((r) => r.status === 'delivered' && r.userId === 'alice').flatMap((r) => r.offsets))
      await until(() => delivered().size === 5, 3000, 'delivered receipts')
      expect([...delivered()].sort((x, y) => x - y)).toEqual(range(1, 5))

      // A server publish waiting for acks sees alice's.
      const waited = await hub.publish('alo:orders', 'order', 6, { awaitAcks: 3000 })
      expect(waited.acknowledged?.map((r) => r.connectionId)).toEqual([alice.connectionId])
      expect(waited.unacknowledged).toEqual([])

      // Well past the ack timeout (several sweeps): nothing was sent again.
      await sleep(ackTimeoutMs * 5)
      expect(hub.metrics().redelivered).toBe(0)
      expect(hub.metrics().deliveryFailed).toBe(0)
      expect(got.map((m) => m.offset)).toEqual(range(1, 6))

      // Read receipts.
      a.read([1, 2, 3])
      await until(() => receipts.some((r) => r.status === 'read'), 3000, 'read receipt')
      expect(receipts.filter((r) => r.status === 'read')).toEqual([{ status: 'read', userId: 'alice', offsets: [1, 2, 3] }])
    })

    it('at-least-once: a subscriber that does not acknowledge gets redeliveries (the metric above can fail)', async () => {
      const ackTimeoutMs = 100
      server = await startServer({ delivery: { ackTimeoutMs } })
      // Acks batched far beyond the ack timeout: the hub must resend.
      const { rt } = await connected({ auth: 'user:alice', ackIntervalMs: 60_000 })
      const ch = rt.channel('alo:slow')
      const got = collect(ch)
      await ch.subscribe()
      await server.hub.publish('alo:slow', 'x', 1)
      await until(() => server!.hub.metrics().redelivered > 0, 3000, 'a redelivery')
      // The redelivered copy is dropped by the receiver: the application saw it once.
      expect(got.map((m) => m.offset)).toEqual([1])
    })

    // ------------------------------------------------------------ resume

    it('resumes after hub.disconnect and connect(): what was published meanwhile arrives once, in order', async () => {
      server = await startServer()
      const hub = server.hub
      const { rt: alice } = await connected({ auth: 'user:alice', ackIntervalMs: 10 })
      const { rt: bob } = await connected({ auth: 'user:bob' })
      const feed = alice.channel('public:feed')
      const orders = alice.channel('alo:feed')
      const gotFeed = collect(feed)
      const gotOrders = collect(orders)
      await feed.subscribe()
      await orders.subscribe()
      const gaps: unknown[] = []
      feed.on('gap', (g) => gaps.push(g))
      orders.on('gap', (g) => gaps.push(g))
      let n = 0
      const publish = async (count: number) => {
        for (let i = 0; i < count; i++) {
          n++
          // Alternate server and client publishers.
          if (n % 2) {
            await hub.publish('public:feed', 'tick', n)
            await hub.publish('alo:feed', 'tick', n)
          } else {
            await bob.channel('public:feed').send('tick', n)
            await bob.channel('alo:feed').send('tick', n)
          }
        }
      }
      await publish(10)
      await until(() => gotFeed.length === 10 && gotOrders.length === 10, 3000, 'first messages')
      const before = alice.connectionId!
      const closes: number[] = []
      const errors: string[] = []
      alice.on('disconnected', (i) => closes.push(i.code))
      alice.on('error', (e) => errors.push((e as RealtimeError).code))
      expect(await hub.connections.disconnect(before, 'test')).toBe(true)
      await until(() => alice.state === 'disconnected', 3000, 'the close')
      expect(closes).toEqual([4000])
      expect(errors).toEqual(['RT_001'])
      await publish(15)
      await sleep(30)
      expect(gotFeed).toHaveLength(10)

      alice.connect()
      await until(() => alice.state === 'connected', 3000, 'reconnect')
      expect(alice.connectionId).not.toBe(before)
      await publish(5)
      await until(() => gotFeed.length === 30 && gotOrders.length === 30, 5000, 'all messages')
      await sleep(50)
      expect(gotFeed.map((m) => m.data)).toEqual(range(1, 30))
      expect(gotFeed.map((m) => m.offset)).toEqual(range(1, 30))
      expect(gotOrders.map((m) => m.data)).toEqual(range(1, 30))
      expect(gaps).toEqual([])
    })

    it('resumes after the server destroys the connection mid-stream, with a continuous publisher', async () => {
      server = await startServer({ delivery: { ackTimeoutMs: 300 } })
      const s = server
      const { rt: alice } = await connected({ auth: 'user:alice', ackIntervalMs: 10 })
      const { rt: bob } = await connected({ auth: 'user:bob' })
      const orders = alice.channel('alo:stream')
      const news = alice.channel('public:stream')
      const gotOrders = collect(orders)
      const gotNews = collect(news)
      await orders.subscribe()
      await news.subscribe()
      const TOTAL = 60
      const sent: number[] = []
      const publishing = (async () => {
        for (let i = 1; i <= TOTAL; i++) {
          await s.hub.publish('alo:stream', 'tick', i)
          // The second publisher is a client: its own connection may be cut too; sends are resent, once.
          void bob.channel('public:stream').send('tick', i).then(() => sent.push(i))
          if (i === 20 || i === 40) s.cut()
          await sleep(5)
        }
      })()
      await publishing
      await until(() => sent.length === TOTAL, 8000, `bob's sends (${sent.length})`)
      await until(() => gotOrders.length >= TOTAL && gotNews.length >= TOTAL, 8000, `messages (${gotOrders.length}, ${gotNews.length})`)
      await sleep(100)
      expect(gotOrders.map((m) => m.data)).toEqual(range(1, TOTAL))
      expect(gotOrders.map((m) => m.offset)).toEqual(range(1, TOTAL))
      // Bob's sends may be answered out of order across a cut, but each is published once and the
      // channel's order is the offsets' order.
      expect(gotNews.map((m) => m.offset)).toEqual(range(1, TOTAL))
      expect(gotNews.map((m) => m.data as number).sort((x, y) => x - y)).toEqual(range(1, TOTAL))
      expect(alice.state).toBe('connected')
    })

    // ------------------------------------------------------------ errors

    describe('errors reach the client API with their code, and the client keeps working', () => {
      it('RT_001: too many connections for the user', async () => {
        server = await startServer({ limits: { maxConnectionsPerUser: 1 } })
        const { rt: first } = await connected({ auth: 'user:alice' })
        const second = client({ auth: 'user:alice', autoConnect: false })
        const errors: RealtimeError[] = []
        second.on('error', (e) => errors.push(e as RealtimeError))
        // A subscribe waiting for the connection fails with the refusal.
        const waiting = refusal(second.channel('public:x').subscribe())
        second.connect()
        await until(() => second.state === 'disconnected', 3000, 'the refusal')
        expect(errors.map((e) => e.code)).toEqual(['RT_001'])
        expect((await waiting).code).toBe('RT_001')
        expect(server.hub.connections.local({ userId: 'alice' }).map((c) => c.id)).toEqual([first.connectionId])
        // The first connection is unaffected.
        expect((await first.channel('public:x').send('after', 1)).offset).toBe(1)
        // Once the first one is gone, the second can connect and publish.
        first.disconnect()
        await until(() => server!.hub.connections.local({ userId: 'alice' }).length === 0, 3000, 'the first connection to close')
        second.connect()
        await until(() => second.state === 'connected', 3000, 'the second connection')
        expect((await second.channel('public:x').send('after', 2)).offset).toBe(2)
      })

      it('RT_002: a refused token; a token function gets another try', async () => {
        server = await startServer()
        // A fixed bad token: reported, not retried.
        const fixed = client({ auth: 'bad-token' })
        const fixedErrors: string[] = []
        fixed.on('error', (e) => fixedErrors.push((e as RealtimeError).code))
        await until(() => fixed.state === 'disconnected', 3000, 'the refusal')
        expect(fixedErrors).toEqual(['RT_002'])

        let token = 'bad-token'
        const rt = client({ auth: () => token })
        const errors: string[] = []
        rt.on('error', (e) => errors.push((e as RealtimeError).code))
        await until(() => errors.length >= 1, 3000, 'the refusal')
        expect(errors[0]).toBe('RT_002')
        expect(rt.state).not.toBe('connected')
        token = 'user:alice'
        await until(() => rt.state === 'connected', 3000, 'a connection with the fresh token')
        expect(rt.userId).toBe('alice')
        expect(new Set(errors)).toEqual(new Set(['RT_002']))
        expect((await rt.channel('public:x').send('after', 1)).offset).toBe(1)
      })

      it('RT_003: subscribing to another user\'s private channel', async () => {
        server = await startServer()
        const { rt } = await connected({ auth: 'user:alice' })
        const ch = rt.channel('private:user-bob')
        const e = await refusal(ch.subscribe())
        expect(e.code).toBe('RT_003')
        expect(ch.state).toBe('unsubscribed')
        expect(rt.state).toBe('connected')
        // Anonymous publishers are refused too.
        const { rt: anon } = await connected()
        expect((await refusal(anon.channel('public:x').send('e', 1))).code).toBe('RT_003')
        expect((await rt.channel('public:x').send('after', 1)).offset).toBe(1)
        expect((await rt.channel('private:user-alice').subscribe()).delivery).toBe('at-least-once')
      })

      it('RT_004: an unknown channel', async () => {
        server = await startServer()
        const { rt } = await connected({ auth: 'user:alice' })
        expect((await refusal(rt.channel('nowhere:1').subscribe())).code).toBe('RT_004')
        expect((await refusal(rt.channel('nowhere:1').send('e', 1))).code).toBe('RT_004')
        expect((await refusal(rt.channel('nowhere:1').history())).code).toBe('RT_004')
        expect((await rt.channel('public:x').send('after', 1)).offset).toBe(1)
      })

      it('RT_005: a message over limits.maxMessageSize', async () => {
        const limit = 4096
        server = await startServer({ limits: { maxMessageSize: limit } })
        const { rt } = await connected({ auth: 'user:alice' })
        const ch = rt.channel('public:big')
        await ch.subscribe()
        const e = await refusal(ch.send('big', 'x'.repeat(limit * 2)))
        expect(e.code).toBe('RT_005')
        expect(e.details).toMatchObject({ limit })
        expect(rt.state).toBe('connected')
        expect((await ch.send('after', 'small')).offset).toBe(1)
      })

      // The hub does not decode frames over 4× its limit, so its RT_005 carries no request id
      // (protocol §1): the client must not wait for an answer that cannot come. The client knows
      // the limit from `connected.limits.maxMessageSize`.
      it('RT_005: send() of a message far over the limit (more than 4× maxMessageSize) rejects, it does not hang', async () => {
        const limit = 4096
        server = await startServer({ limits: { maxMessageSize: limit } })
        const { rt } = await connected({ auth: 'user:alice' })
        const ch = rt.channel('public:huge')
        await ch.subscribe()
        const connections: string[] = []
        rt.on('connected', (i) => connections.push(i.connectionId))
        const outcome = await Promise.race([
          ch.send('huge', 'x'.repeat(limit * 10)).then(
            () => 'published',
            (err: unknown) => (err as RealtimeError).code ?? String(err),
          ),
          sleep(2000).then(() => 'no answer within 2 s'),
        ])
        expect({ outcome, reconnects: connections.length }).toEqual({ outcome: 'RT_005', reconnects: 0 })
        expect((await ch.send('after', 'small')).offset).toBe(1)
      })

      it('RT_006: the subscription limit', async () => {
        server = await startServer({ limits: { maxSubscriptions: 1 } })
        const { rt } = await connected({ auth: 'user:alice' })
        await rt.channel('public:one').subscribe()
        const e = await refusal(rt.channel('public:two').subscribe())
        expect(e.code).toBe('RT_006')
        expect(e.details).toMatchObject({ limit: 1 })
        expect(rt.channel('public:two').state).toBe('unsubscribed')
        expect((await rt.channel('public:one').send('after', 1)).offset).toBe(1)
      })

      it('RT_006: the presence update rate', async () => {
        server = await startServer({ limits: { presenceUpdatesPerSecond: 1 } })
        const { rt } = await connected({ auth: 'user:alice' })
        const ch = rt.channel('presence:rate')
        await ch.subscribe()
        const results = await Promise.allSettled([ch.updatePresence({ n: 1 }), ch.updatePresence({ n: 2 }), ch.updatePresence({ n: 3 })])
        expect(results[0]!.status).toBe('fulfilled')
        const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
        expect(refused.length).toBeGreaterThanOrEqual(1)
        for (const r of refused) {
          expect(r.reason).toBeInstanceOf(RealtimeError)
          expect((r.reason as RealtimeError).code).toBe('RT_006')
        }
        expect((await ch.send('after', 1)).offset).toBe(1)
      })

      it('RT_006: the message rate: sends are retried after retryAfterMs; the ones given up on reject with RT_006 and were not published', async () => {
        server = await startServer({ limits: { messagesPerSecond: 20 } })
        const { rt } = await connected({ auth: 'user:alice' })
        const ch = rt.channel('public:rate')
        const COUNT = 60
        const results = await Promise.allSettled(range(1, COUNT).map((i) => ch.send('burst', i)))
        const hubErrors = server.hub.metrics().errors.RT_006
        expect(hubErrors).toBeGreaterThan(0)
        const rejected = results.flatMap((r, i) => (r.status === 'rejected' ? [[i + 1, r.reason] as const] : []))
        for (const [, reason] of rejected) expect((reason as RealtimeError).code).toBe('RT_006')
        const published = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i + 1] : []))
        expect(published.length).toBeGreaterThan(0)
        const history = await server.hub.channel('public:rate').history({ limit: 1000 })
        // Each send that resolved is in the log exactly once, and nothing else is.
        expect(history.messages.map((m) => m.data as number).sort((x, y) => x - y)).toEqual(published)
        expect((await ch.send('after', 1)).offset).toBe(published.length + 1)
      })

      it('RT_007: data that fails the event schema', async () => {
        server = await startServer()
        const { rt } = await connected({ auth: 'user:alice' })
        const { rt: bob } = await connected({ auth: 'user:bob' })
        const seen = collect(bob.channel('typed:1'))
        await bob.channel('typed:1').subscribe()
        const ch = rt.channel('typed:1')
        const e = await refusal(ch.send('e', { n: 'not a number' }))
        expect(e.code).toBe('RT_007')
        expect((await ch.send('e', { n: 1 })).offset).toBe(1)
        await until(() => seen.length === 1, 3000, 'the valid message')
        expect(seen.map((m) => m.data)).toEqual([{ n: 1 }])
      })

      it('RT_008: a channel at capacity', async () => {
        server = await startServer()
        const { rt: alice } = await connected({ auth: 'user:alice' })
        const { rt: bob } = await connected({ auth: 'user:bob' })
        await alice.channel('cap:room').subscribe()
        const e = await refusal(bob.channel('cap:room').subscribe())
        expect(e.code).toBe('RT_008')
        expect(e.details).toMatchObject({ capacity: 1 })
        // Alice's second connection is admitted (same user).
        const { rt: alice2 } = await connected({ auth: 'user:alice' })
        await alice2.channel('cap:room').subscribe()
        // Bob still works; publishing does not need a subscription.
        expect((await bob.channel('cap:room').send('after', 1)).offset).toBe(1)
        // Once alice left, bob gets in.
        await alice.channel('cap:room').unsubscribe()
        await alice2.channel('cap:room').unsubscribe()
        expect((await bob.channel('cap:room').subscribe()).channel).toBe('cap:room')
      })

      it('RT_009: presence on a channel that has none, or before subscribing', async () => {
        server = await startServer()
        const { rt } = await connected({ auth: 'user:alice' })
        const plain = rt.channel('public:plain')
        await plain.subscribe()
        expect((await refusal(plain.updatePresence({ x: 1 }))).code).toBe('RT_009')
        expect((await refusal(plain.getPresence())).code).toBe('RT_009')
        expect((await refusal(rt.channel('presence:elsewhere').getPresence())).code).toBe('RT_009')
        // A typing frame has no answer: its refusal goes to the channel's error listeners.
        const channelErrors: string[] = []
        plain.on('error', (e) => channelErrors.push((e as RealtimeError).code))
        plain.typing(true)
        await until(() => channelErrors.length === 1, 3000, 'the typing refusal')
        expect(channelErrors).toEqual(['RT_009'])
        expect((await plain.send('after', 1)).offset).toBe(1)
      })
    })
  })
}
