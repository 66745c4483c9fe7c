/**
 * Faults a hostile tester found in the long-poll transport, each pinned over real HTTP sockets.
 */
import type { Identity } from '@tidings/core'
import { createEdgeGuard } from '@tidings/http-kit'
import { describe, expect, it } from 'vitest'
import { json, sleep, until } from '../../http-kit/test/support.js'
import { connect, openRaw, setup } from './harness.js'

const deep = (n: number) => '['.repeat(n) + ']'.repeat(n)

describe('@tidings/long-poll: deeply nested bodies (the process exited on a RangeError)', () => {
  it('a 100,000-deep POST body is 400 RT_007 with a reason; the server lives and other sessions keep receiving', async () => {
    const { base, hub } = await setup({ pollTimeoutMs: 200 })
    const victim = await connect(base) // anonymous, like the attacker
    await victim.post({ type: 'subscribe', channel: 'public:news', id: 's' })
    await victim.frame('subscribed')
    const attacker = await connect(base)
    for (const body of [deep(5_000), deep(100_000), `[${deep(40)}]`]) {
      const r = await attacker.post(null, { raw: body })
      expect(r.status).toBe(400)
      expect(await json(r)).toEqual({ type: 'error', code: 'RT_007', message: expect.stringContaining('nested deeper than 32') })
    }
    await hub.publish('public:news', 'still', 'alive')
    expect(await victim.frame('message', (f) => f.data === 'alive')).toMatchObject({ event: 'still' })
    await attacker.post({ type: 'ping', id: 'after' })
    await attacker.frame('pong', (f) => f.id === 'after')
  })
})

describe('@tidings/long-poll: a session id is not a key', () => {
  it('polls, posts and deletes without the secret (or with it only in the query) are 403 and learn nothing; the session carries on', async () => {
    const { base, hub } = await setup({ pollTimeoutMs: 200 })
    const victim = await connect(base, 'tok-a')
    await victim.post({ type: 'subscribe', channel: 'private:user-alice', id: 's' })
    await victim.frame('subscribed')
    await hub.publish('private:user-alice', 'plans', 'for alice only')
    const tries = [
      fetch(`${victim.url()}?cursor=0`),
      fetch(`${victim.url()}?cursor=0&secret=${victim.secret}`), // a poll is a fetch: the secret goes in the header
      fetch(`${victim.url()}?cursor=0`, { headers: { 'x-tidings-secret': 'x'.repeat(victim.secret.length) } }),
      fetch(victim.url(), { method: 'POST', body: '{"type":"subscribe","channel":"public:evil"}' }),
      fetch(victim.url(), { method: 'DELETE' }),
      fetch(victim.url(), { method: 'DELETE', headers: { 'x-tidings-secret': '' } }),
    ]
    for (const r of await Promise.all(tries)) {
      expect(r.status).toBe(403)
      const text = await r.text()
      expect(JSON.parse(text)).toMatchObject({ type: 'error', code: 'RT_003' })
      expect(text).not.toContain('for alice only')
    }
    expect(await victim.frame('message', (f) => f.event === 'plans')).toMatchObject({ data: 'for alice only' })
    expect(hub.connections.local()).toMatchObject([{ userId: 'alice', channels: ['private:user-alice'] }])
  })
})

describe('@tidings/long-poll: an authenticator that never answers (opens hung forever)', () => {
  it('the open is answered 503 RT_001 after handshakeTimeoutMs; an acceptance that comes later is closed, not leaked', async () => {
    let answer: (identity: Identity | null) => void = () => {}
    const edge = createEdgeGuard()
    const { base, hub, transport } = await setup({ handshakeTimeoutMs: 150, edge }, { authenticate: () => new Promise<Identity | null>((r) => (answer = r)) })
    const r = await openRaw(base, 't')
    expect(r.status).toBe(503)
    expect(await json(r)).toEqual({ type: 'error', code: 'RT_001', message: expect.stringContaining('authentication timed out') })
    expect(transport.sessions).toBe(0)
    expect(edge.openFrom('127.0.0.1')).toBe(0)
    const events: string[] = []
    hub.on('connection', () => events.push('open'))
    hub.on('disconnect', () => events.push('close'))
    answer({ userId: 'late' })
    await until(() => events.length === 2)
    expect(events).toEqual(['open', 'close'])
    expect(hub.connections.local()).toEqual([])
  })
})

describe('@tidings/long-poll: origins (any origin was accepted)', () => {
  it('a cross-origin request is 403 on open, poll, post and delete unless allowed; an allowed one gets CORS headers and its preflight', async () => {
    const evil = { origin: 'https://evil.example' }
    const { base, hub } = await setup({ pollTimeoutMs: 100 })
    expect((await openRaw(base, undefined, evil)).status).toBe(403)
    expect(hub.connections.local()).toEqual([])
    const c = await connect(base, undefined, { origin: base }) // same origin
    const withSecret = { ...evil, 'x-tidings-secret': c.secret }
    expect((await fetch(`${c.url()}?cursor=1`, { headers: withSecret })).status).toBe(403)
    expect((await fetch(c.url(), { method: 'POST', headers: withSecret, body: '{"type":"ping"}' })).status).toBe(403)
    expect((await fetch(c.url(), { method: 'DELETE', headers: withSecret })).status).toBe(403)
    expect(hub.connections.local()).toHaveLength(1)

    const app = 'https://app.example'
    const allowed = await setup({ pollTimeoutMs: 100, edge: { allowedOrigins: [app] } })
    const preflight = await fetch(`${allowed.base}/realtime/poll`, { method: 'OPTIONS', headers: { origin: app, 'access-control-request-method': 'POST' } })
    expect(preflight.status).toBe(204)
    expect(preflight.headers.get('access-control-allow-origin')).toBe(app)
    const opened = await openRaw(allowed.base, undefined, { origin: app })
    expect(opened.status).toBe(200)
    expect(opened.headers.get('access-control-allow-origin')).toBe(app)
    expect(opened.headers.get('access-control-expose-headers')).toBeTruthy()
    const body = await json(opened)
    const poll = await fetch(`${allowed.base}/realtime/poll/${body.session}?cursor=1`, { headers: { origin: app, 'x-tidings-secret': body.secret } })
    expect(poll.status).toBe(200)
    expect(poll.headers.get('access-control-allow-origin')).toBe(app)
    expect((await openRaw(allowed.base, undefined, evil)).status).toBe(403)
  })
})

describe('@tidings/long-poll: per-address limits (none before)', () => {
  it('the 101st open session from one address is 429 with Retry-After; after one closes a new one passes', async () => {
    const edge = createEdgeGuard({ maxNewConnectionsPerIpPerMinute: 0 })
    const { base, hub } = await setup({ edge })
    const clients = []
    for (let i = 0; i < 100; i++) clients.push(await connect(base))
    const over = await openRaw(base)
    expect(over.status).toBe(429)
    expect(over.headers.get('retry-after')).toBe('1')
    expect(await json(over)).toMatchObject({ type: 'error', code: 'RT_006' })
    expect(hub.connections.local()).toHaveLength(100)
    // Polls and posts of an existing session are not opens.
    await clients[0]!.post({ type: 'ping', id: 'p' })
    await clients[0]!.frame('pong')
    expect((await fetch(clients[1]!.url(), { method: 'DELETE', headers: { 'x-tidings-secret': clients[1]!.secret } })).status).toBe(204)
    expect((await openRaw(base)).status).toBe(200)
    expect((await openRaw(base)).status).toBe(429)
  })

  it('past maxNewConnectionsPerIpPerMinute an open is 429 with a Retry-After of seconds; sessions refused by the hub give their slot back', async () => {
    const edge = createEdgeGuard({ maxConnectionsPerIp: 2, maxNewConnectionsPerIpPerMinute: 4 })
    const { base } = await setup({ edge })
    expect((await openRaw(base, 'wrong')).status).toBe(401)
    expect((await openRaw(base, 'wrong')).status).toBe(401)
    expect(edge.openFrom('127.0.0.1')).toBe(0)
    await connect(base)
    await connect(base)
    expect((await openRaw(base)).status).toBe(429) // two open
    const r = await openRaw(base)
    expect(r.status).toBe(429)
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
  })
})

describe('@tidings/long-poll: closed pages (sessions held the user\'s slots and presence for 60 s)', () => {
  it('ten sessions of one user that stop polling: the 11th is 429 at first, passes after detachedTimeoutMs, and presence shows the user left', async () => {
    const { base, hub, transport } = await setup({ detachedTimeoutMs: 1_000, pollTimeoutMs: 100 }, { limits: { maxConnectionsPerUser: 10 } })
    for (let i = 0; i < 10; i++) {
      const page = await connect(base, 'tok-a')
      await page.post({ type: 'subscribe', channel: 'presence:lobby', id: 'p' })
      await page.frame('subscribed')
    }
    expect((await hub.presence.get('presence:lobby')).users.map((u) => u.id)).toEqual(['alice'])
    const eleventh = await openRaw(base, 'tok-a')
    expect(eleventh.status).toBe(429)
    await until(() => hub.connections.local({ userId: 'alice' }).length === 0, 3_000)
    expect(transport.sessions).toBe(0)
    expect((await hub.presence.get('presence:lobby')).users).toEqual([])
    expect((await openRaw(base, 'tok-a')).status).toBe(200)
  })

  it('a client that keeps polling keeps its session past detachedTimeoutMs', async () => {
    const { base, hub } = await setup({ detachedTimeoutMs: 150, pollTimeoutMs: 100 })
    const c = await connect(base)
    const until = Date.now() + 500
    while (Date.now() < until) await c.poll()
    await sleep(50)
    expect(hub.connections.local()).toHaveLength(1)
  })
})
