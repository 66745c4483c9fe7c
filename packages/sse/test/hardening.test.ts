/**
 * Faults a hostile tester found in the SSE transport, each pinned over real HTTP sockets.
 */
import { createHub, type Identity } from '@tidings/core'
import { createEdgeGuard } from '@tidings/http-kit'
import express from 'express'
import { describe, expect, it } from 'vitest'
import { cleanups, json, sleep, until } from '../../http-kit/test/support.js'
import { createSseTransport } from '../src/index.js'
import { connect, open, setup } from './harness.js'

const deep = (n: number) => '['.repeat(n) + ']'.repeat(n)
const nested = (depth: number): unknown => {
  let v: unknown = 'x'
  for (let i = 1; i < depth; i++) v = [v]
  return { type: 'ping', pad: v } // depth: 1 (object) + depth - 1 arrays
}

describe('@tidings/sse: deeply nested bodies (the process exited on a RangeError)', () => {
  it('a 100,000-deep POST body is 400 RT_007 with a reason; the server lives and other sessions keep receiving', async () => {
    const { base, hub } = await setup()
    const victim = await connect(base) // anonymous, like the attacker
    await victim.post({ type: 'subscribe', channel: 'public:news', id: 's' })
    await victim.stream.frame('subscribed')
    const attacker = await connect(base)

    for (const body of [deep(5_000), deep(100_000), `[${deep(5_000)}]`, `{"type":"ping","x":${deep(100_000)}}`]) {
      const r = await attacker.post(null, { raw: body })
      expect(r.status).toBe(400)
      const err = await json(r)
      expect(err).toEqual({ type: 'error', code: 'RT_007', message: expect.stringContaining('nested deeper than 32') })
    }

    await hub.publish('public:news', 'still', 'alive')
    await victim.stream.frame('message', (f) => f.data === 'alive')
    await attacker.post({ type: 'ping', id: 'after' })
    await attacker.stream.frame('pong', (f) => f.id === 'after')
  })

  it('maxDepth: a frame may be maxDepth deep, one level more inside a batch array; deeper is 400', async () => {
    const { base } = await setup({ maxDepth: 4 })
    const c = await connect(base)
    expect((await c.post(nested(4))).status).toBe(204)
    expect((await c.post([nested(4), nested(4)])).status).toBe(204)
    const single = await c.post(nested(5))
    expect(single.status).toBe(400)
    expect((await json(single)).message).toContain('nested deeper than 4')
    expect((await c.post([nested(5)])).status).toBe(400)
    // The three accepted frames reached the hub (which answers each: its schema wants no `pad`).
    await c.stream.until(() => c.stream.frames().length === 4)
    expect(c.stream.frames().slice(1).map((f) => f.code)).toEqual(['RT_007', 'RT_007', 'RT_007'])
    expect(c.stream.frames().slice(1).map((f) => f.message)).toEqual(Array(3).fill(expect.stringContaining('pad')))
  })

  it('a body Express already parsed is walked for depth before it is serialised again; one that cannot be serialised is 400', async () => {
    const { base } = await setup({}, {}, (t) => {
      const app = express()
      app.use(express.json({ limit: '10mb' }))
      app.use((req, _res, next) => {
        if (req.headers['x-test-bigint'] !== undefined) req.body = { type: 'ping', n: 1n }
        next()
      })
      app.use((req, res, next) => {
        t.handle(req, res).then((h) => (h ? undefined : next()), next)
      })
      return app
    })
    const c = await connect(base)
    for (const body of [deep(5_000), deep(100_000)]) {
      const r = await c.post(null, { raw: body })
      expect(r.status).toBe(400)
      expect(await json(r)).toMatchObject({ type: 'error', code: 'RT_007' })
    }
    const bigint = await fetch(`${base}/realtime/sse/${c.session}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tidings-secret': c.secret, 'x-test-bigint': '1' },
      body: '{}',
    })
    expect(bigint.status).toBe(400)
    await c.post({ type: 'ping', id: 'alive' })
    await c.stream.frame('pong', (f) => f.id === 'alive')
  })

  it('a hub that throws while connecting: the open is answered and the process survives', async () => {
    const { base, hub } = await setup()
    hub.connect = () => {
      throw new Error('boom')
    }
    const r = await fetch(`${base}/realtime/sse`)
    expect(r.status).toBe(503)
    expect(await json(r)).toMatchObject({ type: 'error', code: 'RT_001' })
  })
})

describe('@tidings/sse: a session id is not a key (a resume with the id alone took over the victim\'s session)', () => {
  it('a resume without or with a wrong secret is 403 and the attacker gets no frame and no secret; the victim keeps its stream', async () => {
    const { base, hub } = await setup({}, { limits: { maxConnectionsPerUser: 10 } })
    const victim = await connect(base, { token: 'tok-a' })
    await victim.post({ type: 'subscribe', channel: 'private:user-alice', id: 's' })
    await victim.stream.frame('subscribed')

    const attempts: Array<{ headers?: Record<string, string>; query?: string }> = [
      { headers: { 'last-event-id': `${victim.session}:0` } },
      { headers: { 'last-event-id': `${victim.session}:1`, 'x-tidings-secret': 'x'.repeat(victim.secret.length) } },
      { headers: { 'last-event-id': `${victim.session}:1`, 'x-tidings-secret': '' } },
      { query: `lastEventId=${victim.session}:0` },
      { query: `lastEventId=${victim.session}:0&secret=nope` },
      { headers: { 'last-event-id': `${victim.session}:0` }, query: 'token=tok-b' }, // the attacker's own credentials change nothing
    ]
    for (const a of attempts) {
      const r = await fetch(`${base}/realtime/sse${a.query ? `?${a.query}` : ''}`, { headers: a.headers ?? {} })
      expect(r.status).toBe(403)
      expect(r.headers.get('content-type')).toMatch(/^application\/json/)
      const text = await r.text()
      expect(JSON.parse(text)).toEqual({ type: 'error', code: 'RT_003', message: expect.any(String) })
      expect(text).not.toContain(victim.secret)
    }
    // The victim's stream was not taken over, and its private messages still reach only it.
    await hub.publish('private:user-alice', 'secret-plans', 'for alice')
    await victim.stream.frame('message', (f) => f.event === 'secret-plans')
    expect(victim.stream.ended).toBe(false)
    expect(hub.connections.local()).toHaveLength(1)

    // Posting or deleting with the id alone is refused too.
    expect((await fetch(`${base}/realtime/sse/${victim.session}`, { method: 'POST', body: '{"type":"ping"}' })).status).toBe(403)
    expect((await fetch(`${base}/realtime/sse/${victim.session}`, { method: 'DELETE' })).status).toBe(403)
    expect(hub.connections.local()).toHaveLength(1)
  })

  it('a resume with the secret header re-attaches, and the resumed stream never repeats the secret; a secret in the URL is never accepted', async () => {
    const { base, hub } = await setup({ sessionTimeoutMs: 5_000 })
    const c = await connect(base, { token: 'tok-a' })
    c.stream.abort()
    await sleep(30)
    await hub.broadcast({ to: 'all', event: 'while-away', data: null })
    const viaHeader = await open(base, { headers: { 'last-event-id': `${c.session}:1`, 'x-tidings-secret': c.secret } })
    await viaHeader.frame('message', (f) => f.event === 'while-away')
    const announced = JSON.parse(viaHeader.events.find((e) => e.event === 'session')!.data)
    expect(announced).toEqual({ session: c.session })
    viaHeader.abort()
    await sleep(30)
    // URLs reach access logs: a secret there opens nothing
    const viaQuery = await fetch(`${base}/realtime/sse?lastEventId=${c.session}:2&secret=${c.secret}`)
    expect(viaQuery.status).toBe(403)
    const again = await open(base, { headers: { 'last-event-id': `${c.session}:2`, 'x-tidings-secret': c.secret } })
    await c.post({ type: 'ping', id: 'back' })
    await again.frame('pong', (f) => f.id === 'back')
    for (const e of [...viaHeader.events, ...again.events]) expect(e.data).not.toContain(c.secret)
    expect(hub.connections.local()).toHaveLength(1)
  })

  it('a resume of an unknown session is 404 with or without a secret', async () => {
    const { base } = await setup()
    const r = await fetch(`${base}/realtime/sse`, { headers: { 'last-event-id': 'nope:3', 'x-tidings-secret': 'whatever' } })
    expect(r.status).toBe(404)
    expect(await json(r)).toMatchObject({ type: 'error', code: 'RT_001' })
  })
})

describe('@tidings/sse: an authenticator that never answers (opens hung forever)', () => {
  it('the open is answered 503 RT_001 after handshakeTimeoutMs; an acceptance that comes later is closed, not leaked', async () => {
    let answer: (identity: Identity | null) => void = () => {}
    const edge = createEdgeGuard()
    const { base, hub, transport } = await setup(
      { handshakeTimeoutMs: 150, edge },
      { authenticate: () => new Promise<Identity | null>((r) => (answer = r)) },
    )
    const started = Date.now()
    const r = await fetch(`${base}/realtime/sse?token=t`)
    expect(r.status).toBe(503)
    expect(Date.now() - started).toBeGreaterThanOrEqual(140)
    expect(await json(r)).toEqual({ type: 'error', code: 'RT_001', message: expect.stringContaining('authentication timed out') })
    expect(transport.sessions).toBe(0)
    expect(edge.openFrom('127.0.0.1')).toBe(0)

    const opened: string[] = []
    const closed: string[] = []
    hub.on('connection', (info) => opened.push(info.id))
    hub.on('disconnect', (info) => closed.push(info.id))
    answer({ userId: 'late' })
    await until(() => opened.length === 1 && closed.length === 1)
    expect(closed).toEqual(opened)
    expect(hub.connections.local()).toEqual([])
  })
})

describe('@tidings/sse: origins (any origin was accepted)', () => {
  it('with nothing configured, a cross-origin browser request is 403 on every route; same-origin and Origin-less pass', async () => {
    const { base, hub } = await setup()
    const evil = { origin: 'https://evil.example' }
    const refused = await fetch(`${base}/realtime/sse`, { headers: evil })
    expect(refused.status).toBe(403)
    expect(await json(refused)).toEqual({ type: 'error', code: 'RT_003', message: expect.stringContaining('origin') })
    expect(refused.headers.get('access-control-allow-origin')).toBeNull()
    expect(hub.connections.local()).toEqual([])

    const same = await connect(base, { headers: { origin: base } })
    const none = await connect(base)
    expect(hub.connections.local()).toHaveLength(2)
    // Even with the secret, another origin cannot post, delete or resume.
    expect((await fetch(`${base}/realtime/sse/${none.session}`, { method: 'POST', headers: { ...evil, 'x-tidings-secret': none.secret }, body: '{"type":"ping"}' })).status).toBe(403)
    expect((await fetch(`${base}/realtime/sse/${none.session}`, { method: 'DELETE', headers: { ...evil, 'x-tidings-secret': none.secret } })).status).toBe(403)
    expect((await fetch(`${base}/realtime/sse`, { headers: { ...evil, 'last-event-id': `${same.session}:1`, 'x-tidings-secret': same.secret } })).status).toBe(403)
    expect((await fetch(`${base}/realtime/sse/${none.session}`, { method: 'OPTIONS', headers: evil })).status).toBe(403)
    expect(hub.connections.local()).toHaveLength(2)
    expect(same.stream.ended).toBe(false)
  })

  it('an allowed cross origin gets its preflight answered (204) and CORS headers on its responses; ["*"] opts out', async () => {
    const app = 'https://app.example'
    const { base } = await setup({ edge: { allowedOrigins: [app] } })
    const preflight = await fetch(`${base}/realtime/sse/some-session`, {
      method: 'OPTIONS',
      headers: { origin: app, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, x-tidings-secret' },
    })
    expect(preflight.status).toBe(204)
    expect(preflight.headers.get('access-control-allow-origin')).toBe(app)
    expect(preflight.headers.get('access-control-allow-methods')).toContain('POST')
    expect(preflight.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('x-tidings-secret')

    const c = await connect(base, { headers: { origin: app } })
    expect(c.stream.res.headers.get('access-control-allow-origin')).toBe(app)
    expect(c.stream.res.headers.get('vary')).toBe('Origin')
    const posted = await fetch(`${base}/realtime/sse/${c.session}`, { method: 'POST', headers: { origin: app, 'x-tidings-secret': c.secret }, body: '{"type":"ping","id":"x"}' })
    expect(posted.status).toBe(204)
    expect(posted.headers.get('access-control-allow-origin')).toBe(app)
    const wrongSecret = await fetch(`${base}/realtime/sse/${c.session}`, { method: 'POST', headers: { origin: app }, body: '{}' })
    expect(wrongSecret.status).toBe(403)
    expect(wrongSecret.headers.get('access-control-allow-origin')).toBe(app) // the page can read why
    expect((await fetch(`${base}/realtime/sse`, { headers: { origin: 'https://evil.example' } })).status).toBe(403)

    const any = await setup({ edge: { allowedOrigins: ['*'] } })
    const anywhere = await connect(any.base, { headers: { origin: 'https://evil.example' } })
    expect(anywhere.stream.res.status).toBe(200)
  })
})

describe('@tidings/sse: per-address limits (none before)', () => {
  it('past maxConnectionsPerIp an open is 429 with Retry-After before the hub hears of it; a closed session gives its slot back', async () => {
    const edge = createEdgeGuard({ maxConnectionsPerIp: 3, maxNewConnectionsPerIpPerMinute: 0 })
    const { base, hub } = await setup({ edge, detachedTimeoutMs: 500 })
    let authenticated = 0
    const counting = hub.connect.bind(hub)
    hub.connect = (s, o) => {
      authenticated++
      return counting(s, o)
    }
    // Refused by the hub: the slot is given back at once.
    for (let i = 0; i < 4; i++) expect((await fetch(`${base}/realtime/sse?token=wrong`)).status).toBe(401)
    expect(edge.openFrom('127.0.0.1')).toBe(0)
    const clients = [await connect(base), await connect(base), await connect(base)]
    const before = authenticated
    const over = await fetch(`${base}/realtime/sse`)
    expect(over.status).toBe(429)
    expect(Number(over.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(await json(over)).toEqual({ type: 'error', code: 'RT_006', message: expect.stringContaining('too many connections from this address') })
    expect(authenticated).toBe(before)
    // A resume is not a new session.
    clients[0]!.stream.abort()
    const resumed = await open(base, { headers: { 'last-event-id': `${clients[0]!.session}:1`, 'x-tidings-secret': clients[0]!.secret } })
    expect(resumed.res.status).toBe(200)
    // DELETE gives the slot back now; a stream that goes away, after the detached timeout.
    expect((await fetch(`${base}/realtime/sse/${clients[1]!.session}`, { method: 'DELETE', headers: { 'x-tidings-secret': clients[1]!.secret } })).status).toBe(204)
    expect(edge.openFrom('127.0.0.1')).toBe(2)
    await connect(base)
    clients[2]!.stream.abort()
    resumed.abort()
    await until(() => edge.openFrom('127.0.0.1') === 1)
    expect(hub.connections.local()).toHaveLength(1)
    await connect(base)
    await connect(base)
  })

  it('the default: the 101st open session from one address is 429', async () => {
    const edge = createEdgeGuard({ maxNewConnectionsPerIpPerMinute: 0 })
    const { base } = await setup({ edge })
    const first = await connect(base)
    for (let i = 1; i < 100; i++) expect((await open(base)).res.status).toBe(200)
    expect(edge.openFrom('127.0.0.1')).toBe(100)
    const over = await fetch(`${base}/realtime/sse`)
    expect(over.status).toBe(429)
    expect(over.headers.get('retry-after')).toBe('1')
    expect((await fetch(`${base}/realtime/sse/${first.session}`, { method: 'DELETE', headers: { 'x-tidings-secret': first.secret } })).status).toBe(204)
    expect((await open(base)).res.status).toBe(200)
  })

  it('past maxNewConnectionsPerIpPerMinute an open is 429 with a Retry-After of seconds', async () => {
    const { base } = await setup({ edge: { maxNewConnectionsPerIpPerMinute: 2 } })
    await connect(base)
    await connect(base)
    const r = await fetch(`${base}/realtime/sse`)
    expect(r.status).toBe(429)
    const retry = Number(r.headers.get('retry-after'))
    expect(retry).toBeGreaterThanOrEqual(20)
    expect(retry).toBeLessThanOrEqual(30)
    expect((await json(r)).message).toContain('per minute')
  })
})

describe('@tidings/sse: page reloads (detached sessions held the user\'s slots and presence for 30 s)', () => {
  it('ten opens and aborts by one user: the 11th open is 429 at first, passes after detachedTimeoutMs, and presence shows the user left', async () => {
    const { base, hub, transport } = await setup({ detachedTimeoutMs: 1_000 }, { limits: { maxConnectionsPerUser: 10 } })
    for (let i = 0; i < 10; i++) {
      const page = await connect(base, { token: 'tok-a' })
      expect((await page.post({ type: 'subscribe', channel: 'presence:lobby', id: 'p' })).status).toBe(204)
      await page.stream.frame('subscribed')
      page.stream.abort()
    }
    const present = await hub.presence.get('presence:lobby')
    expect(present.users.map((u) => u.id)).toEqual(['alice'])
    const eleventh = await fetch(`${base}/realtime/sse?token=tok-a`)
    expect(eleventh.status).toBe(429) // the hub's per-user limit (close 4008)
    expect((await json(eleventh)).code).toBe('RT_001')

    await until(() => hub.connections.local({ userId: 'alice' }).length === 0, 3_000)
    expect(transport.sessions).toBe(0)
    expect((await hub.presence.get('presence:lobby')).users).toEqual([])
    const again = await connect(base, { token: 'tok-a' })
    expect(again.stream.res.status).toBe(200)
  })

  it('the detached timeout is min(sessionTimeoutMs, detachedTimeoutMs): the default 5 s, never longer than sessionTimeoutMs', async () => {
    const hub = createHub()
    cleanups.push(() => hub.close())
    expect(() => createSseTransport(hub, { detachedTimeoutMs: -1 })).toThrow(/detachedTimeoutMs/)
    const { base, hub: h2 } = await setup({ sessionTimeoutMs: 100, detachedTimeoutMs: 10_000 })
    const c = await connect(base)
    c.stream.abort()
    await until(() => h2.connections.local().length === 0, 2_000)
  })
})
