import { createHub, type Identity } from '@tidings/core'
import { describe, expect, it } from 'vitest'
import { Client, nested, serve, sleep, TOKENS, until } from './support.js'

/*
 * Faults a hostile client found in the hub's handling of frames, each pinned over real
 * WebSocket connections to a real server.
 */

describe('the decode budget', () => {
  it('deeply nested filter in subscribe (not 5,000 deep) is answered RT_007, and the connection and server go on', async () => {
    const s = await serve()
    const c = await Client.open(s.ws, 'tok-ada')
    let filter = '{"field":"data.x","op":"eq","value":1}'
    for (let i = 0; i < 5_000; i++) filter = `{"not":${filter}}`
    c.send(`{"type":"subscribe","id":"deep","channel":"public:a","filter":${filter}}`)
    const answer = await c.next((f) => f.type === 'error')
    expect(answer).toMatchObject({ code: 'RT_007' })
    expect(String(answer.message)).toMatch(/nested deeper than 32/)
    expect(await c.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
  })

  it('frames 100,000 deep (arrays and objects, in any field) are refused by the scan before parsing', async () => {
    const s = await serve()
    const c = await Client.open(s.ws, 'tok-ada')
    c.send(`{"type":"message","id":1,"channel":"public:a","event":"e","data":${nested(100_000)}}`)
    c.send(`{"type":"message","id":2,"channel":"public:a","event":"e","data":${nested(50_000, `{"a":`, "}")}}`)
    const errors = [await c.next((f) => f.id === 1), await c.next((f) => f.id === 2)]
    for (const e of errors) expect(e).toMatchObject({ type: 'error', code: expect.stringMatching(/RT_00[57]/) })
    expect(await c.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
  })

  it('brackets inside strings do not count as nesting', async () => {
    const s = await serve()
    const c = await Client.open(s.ws, 'tok-ada')
    await c.request({ type: 'subscribe', channel: 'public:a' })
    const answer = await c.request({ type: 'message', channel: 'public:a', event: 'e', data: { text: '['.repeat(10_000) + '"\\' } })
    expect(answer).toMatchObject({ type: 'published' })
  })

  it('the depth limit is configurable (limits.maxDepth)', async () => {
    const s = await serve({ limits: { maxDepth: 4 } })
    const c = await Client.open(s.ws, 'tok-ada')
    const ok = await c.request({ type: 'message', channel: 'public:a', event: 'e', data: [[1]] })
    expect(ok.type).toBe('published')
    const refused = await c.request({ type: 'message', channel: 'public:a', event: 'e', data: [[[[1]]]] })
    expect(refused).toMatchObject({ type: 'error', code: 'RT_007' })
  })

  it('deeply nested presence:update data is refused, never stored: the channel, the admin presence route and the user stay usable', async () => {
    const s = await serve({ limits: { maxConnectionsPerUser: 2 } })
    const ada = await Client.open(s.ws, 'tok-ada')
    await ada.request({ type: 'subscribe', channel: 'presence:room' })
    const answer = await ada.request({ type: 'presence:update', channel: 'presence:room', data: JSON.parse(`{"x":${nested(40)}}`) })
    expect(answer).toMatchObject({ type: 'error', code: 'RT_007' })
    const bob = await Client.open(s.ws, 'tok-bob')
    const sub = await bob.request({ type: 'subscribe', channel: 'presence:room' })
    expect(sub.type).toBe('subscribed')
    const res = await fetch(`${s.base}/realtime/channels/presence:room/presence`, { headers: { 'x-api-key': 'admin-key' } })
    expect(res.status).toBe(200)
    // the user's connections are let go of on close: ten reconnects never lock it out
    for (let i = 0; i < 10; i++) {
      const c = await Client.open(s.ws, 'tok-ada')
      await c.request({ type: 'subscribe', channel: 'presence:room' })
      c.socket.close()
      await c.whenClosed()
    }
    ada.socket.close()
    await until(() => s.hub.getConnections({ userId: 'ada' }).length === 0, 5_000, 'ada gone')
    const again = await Client.open(s.ws, 'tok-ada')
    expect(again.of('connected')).toHaveLength(1)
  })
})

describe('exception safety', () => {
  it('a presence store that throws while a connection leaves does not leave the connection half-removed', async () => {
    const s = await serve()
    const store = (s.hub as unknown as { options: { presenceStore: { leave: (...a: unknown[]) => unknown } } }).options.presenceStore
    const leave = store.leave
    store.leave = () => {
      throw new Error('presence store down')
    }
    const errors: string[] = []
    s.hub.on('error', (_e, ctx) => errors.push(ctx.stage))
    try {
      for (let i = 0; i < 12; i++) {
        const c = await Client.open(s.ws, 'tok-ada')
        expect(c.of('connected')).toHaveLength(1)
        await c.request({ type: 'subscribe', channel: 'presence:room' })
        c.socket.close()
        await c.whenClosed()
        await until(() => s.hub.getConnections({ userId: 'ada' }).length === 0, 5_000, 'connection removed')
      }
    } finally {
      store.leave = leave
    }
    expect(errors.length).toBeGreaterThan(0)
  })
})

describe('rates and budgets', () => {
  it('ten busy at-least-once channels on one client: acks do not eat the frame budget (no RT_006, no needless redelivery)', async () => {
    const s = await serve({ limits: { messagesPerSecond: 100 }, delivery: { ackTimeoutMs: 2_000 } })
    s.hub.registerChannel('busy:*', { subscribe: 'authenticated', delivery: 'at-least-once' })
    const c = await Client.open(s.ws, 'tok-ada')
    for (let i = 0; i < 10; i++) await c.request({ type: 'subscribe', channel: `busy:${i}` })
    c.socket.on('message', (data) => {
      const f = JSON.parse(String(data)) as { type: string; ack?: boolean; channel: string; offset: number }
      if (f.type === 'message' && f.ack) c.send({ type: 'ack', channel: f.channel, offset: f.offset })
    })
    // 10 channels × 40 messages in ~1 s: 400 acks a second, four times the frame budget
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 10; i++) await s.hub.publish(`busy:${i}`, 'tick', { round })
      await sleep(25)
    }
    await until(() => c.of('message').length >= 400, 10_000, '400 messages')
    await sleep(300)
    expect(c.of('error')).toEqual([])
    expect(s.hub.metrics().redelivered).toBe(0)
  })

  it('a request answered RT_006 carries its id and is never dropped, even on a congested connection', async () => {
    const s = await serve({ limits: { messagesPerSecond: 5 } })
    const c = await Client.open(s.ws, 'tok-ada')
    const answers = await Promise.all(Array.from({ length: 20 }, () => c.request({ type: 'ping' })))
    const limited = answers.filter((a) => a.type === 'error')
    expect(limited.length).toBeGreaterThan(0)
    for (const a of limited) expect(a).toMatchObject({ code: 'RT_006', details: { retryAfterMs: expect.any(Number) } })
  })

  it('per-channel publish rate (publishesPerMinute) refuses the publish past it with RT_006, across publishers', async () => {
    const s = await serve()
    s.hub.registerChannel('limited:*', { subscribe: 'authenticated', publish: 'authenticated', publishesPerMinute: 5 })
    const ada = await Client.open(s.ws, 'tok-ada')
    const bob = await Client.open(s.ws, 'tok-bob')
    const results: string[] = []
    for (let i = 0; i < 4; i++) results.push((await ada.request({ type: 'message', channel: 'limited:x', event: 'e' })).type)
    for (let i = 0; i < 3; i++) results.push((await bob.request({ type: 'message', channel: 'limited:x', event: 'e' })).type)
    expect(results).toEqual(['published', 'published', 'published', 'published', 'published', 'error', 'error'])
    const refused = bob.of('error').at(-1)!
    expect(refused).toMatchObject({ code: 'RT_006', details: { limit: 5, scope: 'channel' } })
    // another channel of the same pattern has its own budget
    expect((await ada.request({ type: 'message', channel: 'limited:y', event: 'e' })).type).toBe('published')
  })

  it('subscriptions per user across connections, as a function of the identity (free 3, paid 10)', async () => {
    const s = await serve({
      authenticate: (req) => (req.token === 'free' ? { userId: 'f', claims: { plan: 'free' } } : req.token === 'paid' ? { userId: 'p', claims: { plan: 'paid' } } : null),
      limits: { maxSubscriptionsPerUser: (identity: Identity) => (identity.claims?.plan === 'paid' ? 10 : 3) },
    })
    const f1 = await Client.open(s.ws, 'free')
    const f2 = await Client.open(s.ws, 'free')
    expect((await f1.request({ type: 'subscribe', channel: 'public:1' })).type).toBe('subscribed')
    expect((await f2.request({ type: 'subscribe', channel: 'public:2' })).type).toBe('subscribed')
    expect((await f1.request({ type: 'subscribe', channel: 'public:3' })).type).toBe('subscribed')
    expect(await f2.request({ type: 'subscribe', channel: 'public:4' })).toMatchObject({ type: 'error', code: 'RT_006', details: { limit: 3, scope: 'user' } })
    const p = await Client.open(s.ws, 'paid')
    for (let i = 0; i < 10; i++) expect((await p.request({ type: 'subscribe', channel: `public:${i}` })).type).toBe('subscribed')
    expect(await p.request({ type: 'subscribe', channel: 'public:10' })).toMatchObject({ code: 'RT_006' })
  })
})

describe('answers in frame order', () => {
  it('several frames in one TCP read: an error found after validation (RT_003 / RT_004) comes before the answers to later frames', async () => {
    const s = await serve()
    s.hub.registerChannel('slow:*', { subscribe: async () => (await sleep(30), false) })
    const c = await Client.open(s.ws, 'tok-ada')
    const ids: unknown[] = []
    c.socket.on('message', (d) => ids.push((JSON.parse(String(d)) as { id?: unknown }).id))
    // one write, three frames each in its own WebSocket message
    c.socket.send(JSON.stringify({ type: 'subscribe', id: 'a', channel: 'slow:1' }))
    c.socket.send(JSON.stringify({ type: 'subscribe', id: 'b', channel: 'nosuch' }))
    c.socket.send(JSON.stringify({ type: 'ping', id: 'c' }))
    await until(() => ids.includes('c'), 5_000, 'pong')
    expect(ids.filter((i) => i !== undefined)).toEqual(['a', 'b', 'c'])
    expect(c.frames.filter((f) => f.id === 'a' || f.id === 'b').map((f) => f.code)).toEqual(['RT_003', 'RT_004'])
  })
})

describe('repeated subscribe', () => {
  it('the answer to a second subscribe carries no delivery and no recovered (protocol.md §4.1), and the stream goes on', async () => {
    const s = await serve()
    const c = await Client.open(s.ws, 'tok-ada')
    const first = await c.request({ type: 'subscribe', channel: 'public:news' })
    expect(first).toMatchObject({ delivery: 'at-most-once' })
    await s.hub.publish('public:news', 'e', 1)
    await c.next((f) => f.type === 'message')
    const second = await c.request({ type: 'subscribe', channel: 'public:news', since: { epoch: 'x', offset: 0 } })
    expect(second).toMatchObject({ type: 'subscribed', channel: 'public:news', position: { offset: 1 } })
    expect(second).not.toHaveProperty('delivery')
    expect(second).not.toHaveProperty('recovered')
    await s.hub.publish('public:news', 'e', 2)
    await until(() => c.of('message').length === 2, 2_000, 'second message')
  })
})

describe('channel rules', () => {
  it('a channel rule given as a string (the seeds\' expression form) is refused at registration with a clear error', () => {
    const hub = createHub()
    expect(() => hub.registerChannel('team:{id}', { subscribe: 'auth.uid != null && data.members.includes(auth.uid)' as never })).toThrow(
      /subscribe rule is the string .*true, false, 'authenticated' or a function/,
    )
    expect(() => createHub({ channels: { 'team:{id}': { publish: 42 as never } } })).toThrow(/publish rule is a number/)
    void hub.close()
  })
})

describe('refused connects', () => {
  it('a refused connect (bad token) is logged without the token and emitted as connection:refused', async () => {
    const lines: Array<[string, unknown]> = []
    const logger = { debug() {}, info() {}, warn: (m: string, f?: unknown) => lines.push([m, f]), error: (m: string, f?: unknown) => lines.push([m, f]) }
    const s = await serve({ logger })
    const refused: unknown[] = []
    s.hub.on('connection:refused', (e) => refused.push(e))
    const c = await Client.open(s.ws, 'secret-bad-token')
    expect(await c.whenClosed()).toMatchObject({ code: 4001 })
    expect(refused).toEqual([expect.objectContaining({ transport: 'ws', code: 'RT_002', closeCode: 4001, remoteAddress: expect.stringContaining('127.0.0.1') })])
    expect(lines.some(([m]) => m === 'connection refused')).toBe(true)
    expect(JSON.stringify(lines)).not.toContain('secret-bad-token')
  })
})

describe('credentials that expire on open connections', () => {
  it('an identity whose credential has expired stops: warned, then (no refresh) its subscriptions end and it is closed 4001', async () => {
    const s = await serve({
      authenticate: (req) => (req.token === 'short' ? { userId: 'ada', expiresAt: Date.now() + 400 } : null),
      credentials: { refreshBeforeMs: 300, graceMs: 300 },
    })
    const c = await Client.open(s.ws, 'short')
    expect(c.of('connected')[0]).toMatchObject({ expiresAt: expect.any(Number) })
    await c.request({ type: 'subscribe', channel: 'private:user-ada' })
    const warning = await c.next((f) => f.type === 'auth:expiring', 2_000)
    expect(warning).toMatchObject({ expiresAt: expect.any(Number), closesAt: expect.any(Number) })
    await sleep(Math.max(0, (warning.expiresAt as number) - Date.now() + 20))
    // past expiry, within the grace period: nothing new may start
    expect(await c.request({ type: 'message', channel: 'public:x', event: 'e' })).toMatchObject({ code: 'RT_002' })
    expect(await c.request({ type: 'subscribe', channel: 'public:x' })).toMatchObject({ code: 'RT_002' })
    const closed = await c.whenClosed(3_000)
    expect(closed.code).toBe(4001)
    expect(c.of('unsubscribed')).toEqual([expect.objectContaining({ channel: 'private:user-ada', reason: 'credentials expired' })])
    expect(s.hub.getConnections({ userId: 'ada' })).toEqual([])
  })

  it('a refresh (auth frame) moves the expiry, re-checks every subscription and recomputes per-identity limits', async () => {
    let n = 0
    const s = await serve({
      authenticate: (req) => {
        if (req.token === 'first') return { userId: 'ada', expiresAt: Date.now() + 500, claims: { plan: 'paid', team: 'a' } }
        if (req.token === 'second') return { userId: 'ada', expiresAt: Date.now() + 60_000, claims: { plan: 'free', team: 'b' } }
        return null
      },
      credentials: { refreshBeforeMs: 400, graceMs: 200 },
      limits: { maxSubscriptions: (identity: Identity) => (identity.claims?.plan === 'paid' ? 10 : 2) },
    })
    s.hub.registerChannel('team:{id}', { subscribe: (ctx) => ctx.identity.claims?.team === ctx.params.id })
    const c = await Client.open(s.ws, 'first')
    await c.request({ type: 'subscribe', channel: 'team:a' })
    await c.request({ type: 'subscribe', channel: 'public:1' })
    await c.next((f) => f.type === 'auth:expiring', 2_000)
    const answer = await c.request({ type: 'auth', token: 'second' })
    expect(answer).toMatchObject({ type: 'authenticated', userId: 'ada', expiresAt: expect.any(Number) })
    await c.next((f) => f.type === 'unsubscribed' && f.channel === 'team:a')
    expect(c.of('unsubscribed')[0]!.reason).toMatch(/not allowed after re-authentication/)
    await sleep(900) // past the first token's expiry and grace: still open
    expect(c.closed).toBeUndefined()
    expect((await c.request({ type: 'subscribe', channel: 'public:2' })).type).toBe('subscribed')
    // the free plan allows 2 per connection
    expect(await c.request({ type: 'subscribe', channel: 'public:3' })).toMatchObject({ code: 'RT_006' })
    n++
    expect(n).toBe(1)
  })

  it('an already-expired identity is refused at connect with RT_002', async () => {
    const s = await serve({ authenticate: () => ({ userId: 'ada', expiresAt: Date.now() - 1 }) })
    const c = await Client.open(s.ws, 'any')
    expect(c.of('error')[0]).toMatchObject({ code: 'RT_002', message: 'credentials expired' })
    expect((await c.whenClosed()).code).toBe(4001)
  })
})

describe('replies have a byte budget', () => {
  it('a 70-byte history frame (limit 1000) on a channel of large messages gets one page within maxReplyBytes, complete: false, and pages on', async () => {
    const s = await serve({ history: { maxCount: 1000 }, limits: { maxReplyBytes: 1024 * 1024 } })
    const big = 'x'.repeat(100 * 1024)
    for (let i = 0; i < 30; i++) await s.hub.publish('public:big', 'e', { big, i })
    const c = await Client.open(s.ws, 'tok-ada')
    const frame = JSON.stringify({ type: 'history', id: 1, channel: 'public:big', since: undefined, limit: 1000 })
    expect(frame.length).toBeLessThan(80)
    c.send(frame)
    const page = await c.next((f) => f.id === 1)
    const messages = page.messages as Array<{ offset: number }>
    expect(messages.length).toBeGreaterThan(0)
    expect(messages.length).toBeLessThan(30)
    expect(JSON.stringify(page).length).toBeLessThanOrEqual(1024 * 1024)
    expect(page.complete).toBe(false)
    // paging on from the position reaches the end
    let got = messages.length
    let position = page.position as { epoch: string; offset: number }
    while (got < 30) {
      const next = await c.request({ type: 'history', channel: 'public:big', since: position, limit: 1000 })
      got += (next.messages as unknown[]).length
      position = next.position as { epoch: string; offset: number }
    }
    expect(got).toBe(30)
    expect(position.offset).toBe(30)
  })

  it('presence snapshots stay within maxReplyBytes: fewer members listed, count is the total', async () => {
    const s = await serve({ limits: { maxReplyBytes: 4096 }, authenticate: (req) => ({ userId: req.token ?? 'x' }) })
    const clients: Client[] = []
    for (let i = 0; i < 20; i++) {
      const c = await Client.open(s.ws, `user-${i}`)
      await c.request({ type: 'subscribe', channel: 'presence:big', presence: { bio: 'y'.repeat(400) } })
      clients.push(c)
    }
    const snap = await clients[0]!.request({ type: 'presence:get', channel: 'presence:big' })
    expect(snap.count).toBe(20)
    expect((snap.users as unknown[]).length).toBeLessThan(20)
    expect(JSON.stringify(snap).length).toBeLessThanOrEqual(4096)
  })
})

void TOKENS

describe('memory bounded by configuration, losses never silent', () => {
  it('history frames for thousands of distinct channel names create no store log: public:important keeps its history', async () => {
    const { createMemoryStore } = await import('@tidings/core')
    const store = createMemoryStore({ maxChannels: 50 })
    const s = await serve({ store })
    await s.hub.publish('public:important', 'e', { keep: true })
    const clients = await Promise.all(Array.from({ length: 10 }, () => Client.open(s.ws)))
    await Promise.all(
      clients.map(async (c, k) => {
        for (let i = 0; i < 200; i++) c.send({ type: 'history', channel: `public:junk-${k}-${i}` })
        await c.request({ type: 'ping' }, 10_000)
      }),
    )
    expect(store.stats().channels).toBe(1)
    const page = await clients[0]!.request({ type: 'history', channel: 'public:important' })
    expect(page.messages).toEqual([expect.objectContaining({ data: { keep: true }, offset: 1 })])
  })

  it('an offline queue lost to eviction is reported recovered: false (never recovered: true), and what the channel kept since is delivered', async () => {
    const { createMemoryStore } = await import('@tidings/core')
    const store = createMemoryStore({ maxChannels: 2 })
    const s = await serve({ store })
    const first = await Client.open(s.ws, 'tok-ada')
    await first.request({ type: 'subscribe', channel: 'private:user-ada' })
    await s.hub.publish('private:user-ada', 'note', { n: 1 })
    const m = await first.next((f) => f.type === 'message')
    first.send({ type: 'ack', channel: 'private:user-ada', offset: m.offset })
    await first.request({ type: 'ping' })
    first.socket.close()
    await first.whenClosed()
    await s.hub.publish('private:user-ada', 'note', { n: 2 }) // queued while offline
    for (const c of ['public:a', 'public:b', 'public:c']) await s.hub.publish(c, 'e', 1) // evicts ada's log
    await s.hub.publish('private:user-ada', 'note', { n: 3 }) // after the loss
    const again = await Client.open(s.ws, 'tok-ada')
    const answer = await again.request({ type: 'subscribe', channel: 'private:user-ada' })
    expect(answer).toMatchObject({ recovered: false, reason: expect.stringMatching(/offline queue was lost/) })
    await again.next((f) => f.type === 'message')
    expect(again.of('message').map((f) => f.data)).toEqual([{ n: 3 }])
    again.socket.close()
    await again.whenClosed()
    // reported once: the cursor now lives in the current epoch
    const third = await Client.open(s.ws, 'tok-ada')
    const later = await third.request({ type: 'subscribe', channel: 'private:user-ada' })
    expect(later.reason ?? '').not.toMatch(/lost/)
  })
})
