import type { Identity } from '@tidings/core'
import { describe, expect, it } from 'vitest'
import { Client, nested, serve, sleep, until } from './support.js'

/*
 * The hub's edge beyond the rows of issue #9 (those are in rows.test.ts): depth, rates,
 * expiring credentials, reply budgets and losses, over real
 * WebSocket connections to a real server.
 */

describe('the decode budget', () => {
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
        await until(() => s.hub.connections.local({ userId: 'ada' }).length === 0, 5_000, 'connection removed')
      }
    } finally {
      store.leave = leave
    }
    expect(errors.length).toBeGreaterThan(0)
  })
})

describe('rates and budgets', () => {
  it('per-channel publish rate (publishesPerMinute) refuses the publish past it with RT_006, across publishers', async () => {
    const s = await serve()
    s.hub.channels.register('limited:*', { subscribe: 'authenticated', publish: 'authenticated', publishesPerMinute: 5 })
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

describe('credentials that expire on open connections', () => {
  it('a refresh (auth frame) moves the expiry, re-checks every subscription and recomputes per-identity limits', async () => {
    const s = await serve({
      authenticate: (req) => {
        if (req.token === 'first') return { userId: 'ada', expiresAt: Date.now() + 500, claims: { plan: 'paid', team: 'a' } }
        if (req.token === 'second') return { userId: 'ada', expiresAt: Date.now() + 60_000, claims: { plan: 'free', team: 'b' } }
        return null
      },
      credentials: { refreshBeforeMs: 400, graceMs: 200 },
      limits: { maxSubscriptions: (identity: Identity) => (identity.claims?.plan === 'paid' ? 10 : 2) },
    })
    s.hub.channels.register('team:{id}', { subscribe: (ctx) => ctx.identity.claims?.team === ctx.params.id })
    const c = await Client.open(s.ws, 'first')
    await c.request({ type: 'subscribe', channel: 'team:a' })
    await c.request({ type: 'subscribe', channel: 'public:1' })
    await c.next((f) => f.type === 'auth:expiring', 2_000)
    const answer = await c.request({ type: 'auth', token: 'second' })
    expect(answer).toMatchObject({ type: 'authenticated', userId: 'ada', expiresAt: expect.any(Number) })
    await c.next((f) => f.type === 'unsubscribed' && f.channel === 'team:a')
    expect(c.of('unsubscribed')[0]!.reason).toBe('revoked')
    await sleep(900) // past the first token's expiry and grace: still open
    expect(c.closed).toBeUndefined()
    expect((await c.request({ type: 'subscribe', channel: 'public:2' })).type).toBe('subscribed')
    // the free plan allows 2 per connection
    expect(await c.request({ type: 'subscribe', channel: 'public:3' })).toMatchObject({ code: 'RT_006' })
  })

  it('an already-expired identity is refused at connect with RT_002', async () => {
    const s = await serve({ authenticate: () => ({ userId: 'ada', expiresAt: Date.now() - 1 }) })
    const c = await Client.open(s.ws, 'any')
    expect(c.of('error')[0]).toMatchObject({ code: 'RT_002', message: 'credentials expired' })
    expect((await c.whenClosed()).code).toBe(4001)
  })
})

describe('replies have a byte budget', () => {
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


describe('memory bounded by configuration, losses never silent', () => {
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
