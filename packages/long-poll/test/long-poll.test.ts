import { describe, expect, it } from 'vitest'
import { json, recordSends, sleep, until } from '../../http-kit/test/support.js'
import { connect, openRaw, setup } from './harness.js'

// ------------------------------------------------------------------ tests

describe('@tidings/long-poll', () => {
  it('POST opens a session: session, secret, frames [connected], cursor, upgrade', async () => {
    const { base, hub, transport } = await setup()
    const res = await openRaw(base, 'tok-a')
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    expect(res.headers.get('cache-control')).toBe('no-store')
    const body = await json(res)
    expect(body).toEqual({
      session: expect.stringMatching(/^[\w-]{16,}$/),
      secret: expect.stringMatching(/^[\w-]{24,}$/),
      frames: [expect.objectContaining({ type: 'connected', userId: 'alice' })],
      cursor: 1,
      upgrade: 'websocket',
    })
    expect(transport.sessions).toBe(1)
    expect(hub.connections.local()).toMatchObject([{ id: body.frames[0].connectionId, transport: 'long-poll', userId: 'alice' }])
  })

  it('a poll confirms its cursor and waits for the next frame; an unconfirmed frame comes again', async () => {
    const { base } = await setup({ pollTimeoutMs: 100 })
    const c = await connect(base)
    const waiting = c.poll() // cursor 1: nothing after it yet
    await sleep(30)
    await c.post({ type: 'ping', id: 'p1' })
    const body = await waiting
    expect(body).toEqual({ frames: [{ type: 'pong', id: 'p1' }], cursor: 2, upgrade: 'websocket' })
    // Not confirmed (cursor 1 again): the same frame again, at once.
    expect(await c.poll(1)).toMatchObject({ frames: [{ type: 'pong', id: 'p1' }], cursor: 2 })
    // Confirmed (cursor 2): gone for good, even for a poll asking from 1.
    expect(await json(await c.fetchPoll(2))).toEqual({ frames: [], cursor: 2, upgrade: 'websocket' })
    await c.post({ type: 'ping', id: 'p2' })
    expect(await c.poll(1)).toMatchObject({ frames: [{ type: 'pong', id: 'p2' }], cursor: 3 })
  })

  it('a poll with nothing to deliver answers empty frames after pollTimeoutMs', async () => {
    const { base } = await setup({ pollTimeoutMs: 100 })
    const c = await connect(base)
    const started = Date.now()
    const body = await c.poll()
    expect(Date.now() - started).toBeGreaterThanOrEqual(90)
    expect(body).toEqual({ frames: [], cursor: 1, upgrade: 'websocket' })
  })

  it('carries subscribe and publish between two clients, and server publishes, frames batched per answer', async () => {
    const { base, hub } = await setup({ pollTimeoutMs: 500 })
    const a = await connect(base, 'tok-a')
    const b = await connect(base, 'tok-b')
    for (const c of [a, b]) {
      expect((await c.post({ type: 'subscribe', channel: 'public:chat', id: 's' })).status).toBe(204)
      await c.frame('subscribed')
    }
    await a.post({ type: 'message', channel: 'public:chat', event: 'say', data: 'hi bob', id: 'm1' })
    await a.frame('published', (f) => f.id === 'm1')
    expect(await b.frame('message', (f) => f.event === 'say')).toMatchObject({ data: 'hi bob', sender: 'alice' })

    // Three server publishes in one turn while b's poll is open: one answer with all three.
    const pending = b.poll()
    await sleep(30)
    void hub.publish('public:chat', 'n', 1)
    void hub.publish('public:chat', 'n', 2)
    void hub.publish('public:chat', 'n', 3)
    const body = await pending
    expect(body.frames.map((f) => f.data)).toEqual([1, 2, 3])
    await a.frame('message', (f) => f.data === 3)
  })

  it('a second poll ends the first with what it has', async () => {
    const { base, hub } = await setup()
    const c = await connect(base, 'tok-a')
    await c.post({ type: 'subscribe', channel: 'public:x', id: 's' })
    await c.frame('subscribed')
    const first = c.fetchPoll().then(json)
    await sleep(30)
    const second = c.fetchPoll().then(json)
    expect(await first).toEqual({ frames: [], cursor: c.cursor, upgrade: 'websocket' })
    await hub.publish('public:x', 'e', 'late')
    expect(await second).toMatchObject({ frames: [{ type: 'message', data: 'late' }], cursor: c.cursor + 1 })
  })

  it('DELETE closes the session and the hub connection', async () => {
    const { base, hub, transport } = await setup()
    const closes: Array<[number, string]> = []
    hub.on('disconnect', (_i, { code, reason }) => closes.push([code, reason]))
    const c = await connect(base)
    const waiting = c.fetchPoll().then(json)
    await sleep(20)
    const wrong = await fetch(c.url(), { method: 'DELETE', headers: { 'x-tidings-secret': 'nope' } })
    expect(wrong.status).toBe(403)
    const del = await fetch(c.url(), { method: 'DELETE', headers: { 'x-tidings-secret': c.secret } })
    expect(del.status).toBe(204)
    expect(await waiting).toMatchObject({ frames: [], close: { code: 1000, reason: 'closed by client' } })
    expect(hub.connections.local()).toEqual([])
    expect(closes).toEqual([[1000, 'closed by client']])
    expect(transport.sessions).toBe(0)
    expect((await c.fetchPoll()).status).toBe(404)
  })

  it('a session with no poll for sessionTimeoutMs expires: the hub connection closes', async () => {
    const { base, hub, transport } = await setup({ sessionTimeoutMs: 100 })
    const closes: number[] = []
    hub.on('disconnect', (_i, { code }) => closes.push(code))
    const c = await connect(base)
    expect(hub.connections.local()).toHaveLength(1)
    await until(() => hub.connections.local().length === 0)
    expect(closes).toEqual([1006])
    expect(transport.sessions).toBe(0)
    const late = await c.fetchPoll()
    expect(late.status).toBe(404)
    expect(await json(late)).toMatchObject({ type: 'error', code: 'RT_001' })
  })

  it('an open poll keeps the session alive past sessionTimeoutMs; a client that aborts its poll starts the clock', async () => {
    const { base, hub } = await setup({ sessionTimeoutMs: 150, pollTimeoutMs: 400 })
    const c = await connect(base)
    const body = await c.poll() // waits 400 ms > 150 ms
    expect(body.frames).toEqual([])
    expect(hub.connections.local()).toHaveLength(1)
    const ctrl = new AbortController()
    const aborted = c.fetchPoll(c.cursor, c.secret, ctrl.signal).catch(() => 'aborted')
    await sleep(30)
    ctrl.abort()
    expect(await aborted).toBe('aborted')
    await until(() => hub.connections.local().length === 0)
  })

  it('checks the secret (403 RT_003) without touching the other session; unknown session 404 RT_001', async () => {
    const { base, hub } = await setup()
    const a = await connect(base, 'tok-a')
    const b = await connect(base, 'tok-b')
    const r = await a.post({ type: 'subscribe', channel: 'public:x', id: 'evil' }, { session: b.session })
    expect(r.status).toBe(403)
    expect(await json(r)).toEqual({ type: 'error', code: 'RT_003', message: expect.any(String) })
    const stolen = await fetch(`${b.url()}?cursor=1`, { headers: { 'x-tidings-secret': a.secret } })
    expect(stolen.status).toBe(403)
    expect((await fetch(`${b.url()}?cursor=1`)).status).toBe(403)
    expect(hub.connections.local({ userId: 'bob' })[0]!.channels).toEqual([])
    await b.post({ type: 'ping', id: 'fine' })
    await b.frame('pong')
    expect(b.received.map((f) => f.type)).toEqual(['connected', 'pong'])

    const unknown = await a.post({ type: 'ping' }, { session: 'nope' })
    expect(unknown.status).toBe(404)
    expect(await json(unknown)).toMatchObject({ type: 'error', code: 'RT_001' })
    // A bad cursor is bad input.
    const badCursor = await fetch(`${a.url()}?cursor=abc`, { headers: { 'x-tidings-secret': a.secret } })
    expect(badCursor.status).toBe(400)
    expect((await json(badCursor)).code).toBe('RT_007')
  })

  it('answers bad JSON with 400 RT_007 and oversized bodies with 413 RT_005', async () => {
    const { base } = await setup({ maxBodyBytes: 1_000 })
    const c = await connect(base)
    const bad = await c.post(null, { raw: 'not json' })
    expect(bad.status).toBe(400)
    expect(await json(bad)).toEqual({ type: 'error', code: 'RT_007', message: expect.any(String) })
    const big = await c.post({ type: 'ping', pad: 'y'.repeat(3_000) })
    expect(big.status).toBe(413)
    expect(await json(big)).toEqual({ type: 'error', code: 'RT_005', message: expect.any(String) })
    await c.post({ type: 'ping', id: 'ok' })
    await c.frame('pong', (f) => f.id === 'ok')
  })

  it('refuses the opening request: 401 RT_002, 429 RT_001', async () => {
    const { base, transport } = await setup({}, { allowAnonymous: false, limits: { maxConnectionsPerUser: 1 } })
    const bad = await openRaw(base, 'wrong')
    expect(bad.status).toBe(401)
    expect(await json(bad)).toEqual({ type: 'error', code: 'RT_002', message: expect.any(String) })
    const header = await fetch(`${base}/realtime/poll`, { method: 'POST', headers: { authorization: 'Bearer tok-b' } })
    expect(header.status).toBe(200)
    expect((await fetch(`${base}/realtime/poll`, { method: 'POST' })).status).toBe(401) // no credentials, no anonymous
    const again = await fetch(`${base}/realtime/poll`, { method: 'POST', headers: { authorization: 'Bearer tok-b' } })
    expect(again.status).toBe(429)
    expect((await json(again)).code).toBe('RT_001')
    expect(transport.sessions).toBe(1)
  })

  it('backpressure: a client that does not poll makes send return false; confirming drains the hub queue; then a slow consumer is dropped', async () => {
    const { base, hub } = await setup({ pollTimeoutMs: 200 }, { limits: { highWaterMark: 2_000, maxQueuedBytes: 6_000 } })
    const sends = recordSends(hub)
    const closes: number[] = []
    hub.on('disconnect', (_i, { code }) => closes.push(code))
    const c = await connect(base, 'tok-a')
    await c.post({ type: 'subscribe', channel: 'public:flood', id: 's' })
    await c.frame('subscribed')
    const pad = 'x'.repeat(300)
    for (let i = 0; i < 10; i++) await hub.publish('public:flood', 'm', { i, pad })
    expect(sends.indexOf(false)).toBeGreaterThan(0)
    const accepted = sends.indexOf(false) + 1
    expect(sends.length).toBe(accepted) // the hub queued the rest itself

    // Polling confirms and fetches; the hub flushes its queue into the log; nothing is lost.
    while (c.received.filter((f) => f.type === 'message').length < 10) await c.poll()
    expect(c.received.filter((f) => f.type === 'message').map((f) => f.data.i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    await c.poll(c.cursor).catch(() => undefined) // confirm everything (answers empty after the poll timeout)

    // Now stop polling: past maxQueuedBytes the hub drops the connection as a slow consumer.
    for (let i = 0; i < 50 && hub.connections.local().length > 0; i++) await hub.publish('public:flood', 'm', { i, pad })
    expect(hub.connections.local()).toHaveLength(0)
    expect(closes).toEqual([4009])
    // The next poll gets what was left and the close.
    const last = await c.poll()
    expect(last.close).toMatchObject({ code: 4009 })
    expect((await c.fetchPoll()).status).toBe(404)
  })

  it('close() answers open polls with a 1001 close, closes the hub connections and refuses new requests', async () => {
    const { base, hub, transport } = await setup()
    const a = await connect(base)
    await connect(base) // no poll open: its session timer runs
    const waiting = a.fetchPoll().then(json)
    await sleep(20)
    await transport.close()
    expect(await waiting).toEqual({ frames: [], cursor: 1, upgrade: 'websocket', close: { code: 1001, reason: 'server is shutting down' } })
    expect(transport.sessions).toBe(0)
    expect(hub.connections.local()).toEqual([])
    const late = await openRaw(base)
    expect(late.status).toBe(503)
    expect((await json(late)).code).toBe('RT_001')
  })

  it('hub.disconnect reaches an open poll as a close', async () => {
    const { base, hub } = await setup()
    const c = await connect(base)
    const waiting = c.poll()
    await sleep(20)
    await hub.connections.disconnect(c.connectionId, 'bye')
    expect(await waiting).toMatchObject({ frames: [], close: { code: 4000, reason: 'bye' } })
  })
})
