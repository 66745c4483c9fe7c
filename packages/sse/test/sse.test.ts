import express from 'express'
import { describe, expect, it } from 'vitest'
import { json, recordSends, sleep, until } from '../../http-kit/test/support.js'
import { OutboundLog } from '@tidings/core'
import { connect, open, setup } from './harness.js'

// ------------------------------------------------------------------ tests

describe('@tidings/sse', () => {
  it('opens a stream: headers, retry, the session event, then connected with id <session>:1', async () => {
    const { base, transport, hub } = await setup()
    const c = await connect(base, { token: 'tok-a' })
    const h = c.stream.res.headers
    expect(h.get('content-type')).toBe('text/event-stream')
    expect(h.get('cache-control')).toBe('no-cache, no-transform')
    expect(h.get('connection')).toBe('keep-alive')
    expect(h.get('x-accel-buffering')).toBe('no')
    expect(c.stream.retry).toBe(1000)
    const [first, second] = c.stream.events
    expect(first).toMatchObject({ event: 'session', id: undefined })
    expect(c.session).toMatch(/^[\w-]{16,}$/)
    expect(c.secret).toMatch(/^[\w-]{24,}$/)
    expect(second).toMatchObject({ event: 'connected', id: `${c.session}:1` })
    expect(JSON.parse(second!.data)).toMatchObject({ type: 'connected', userId: 'alice' })
    expect(transport.sessions).toBe(1)
    expect(hub.connections.local()).toMatchObject([{ id: c.connectionId, transport: 'sse', userId: 'alice' }])
  })

  it('reads credentials from the Authorization header and the custom prefix', async () => {
    const { base } = await setup({ prefix: '/rt/' })
    const stream = await open(base, { prefix: '/rt', headers: { authorization: 'Bearer tok-b' } })
    expect((await stream.frame('connected')).userId).toBe('bob')
    expect((await fetch(`${base}/realtime/sse`)).status).toBe(404) // not ours: handle() resolved false
  })

  it('carries subscribe and publish between two clients, and server publishes, in order with increasing ids', async () => {
    const { base, hub } = await setup()
    const a = await connect(base, { token: 'tok-a' })
    const b = await connect(base, { token: 'tok-b' })
    for (const c of [a, b]) {
      const r = await c.post({ type: 'subscribe', channel: 'public:chat', id: 's1' })
      expect(r.status).toBe(204)
      await c.stream.frame('subscribed', (f) => f.id === 's1')
    }
    expect((await a.post({ type: 'message', channel: 'public:chat', event: 'say', data: { text: 'hi bob' }, id: 'p1' })).status).toBe(204)
    await a.stream.frame('published', (f) => f.id === 'p1')
    const got = await b.stream.frame('message', (f) => f.event === 'say')
    expect(got).toMatchObject({ channel: 'public:chat', data: { text: 'hi bob' }, sender: 'alice' })

    await hub.publish('public:chat', 'news', { n: 1 })
    for (const c of [a, b]) await c.stream.frame('message', (f) => f.event === 'news')

    // An array body: several frames, answered in order on the stream.
    expect((await b.post([{ type: 'ping', id: 'x1' }, { type: 'ping', id: 'x2' }])).status).toBe(204)
    await b.stream.frame('pong', (f) => f.id === 'x2')
    const pongs = b.stream.frames().filter((f) => f.type === 'pong').map((f) => f.id)
    expect(pongs).toEqual(['x1', 'x2'])

    const seqs = b.stream.events.filter((e) => e.id).map((e) => Number(e.id!.split(':')[1]))
    expect(seqs).toEqual(seqs.map((_, i) => i + 1))
    // The event name is the frame type.
    for (const e of b.stream.events.filter((x) => x.id)) expect(JSON.parse(e.data).type).toBe(e.event)
  })

  it('sends a `: ping` comment every heartbeatMs', async () => {
    const { base } = await setup({ heartbeatMs: 40 })
    const c = await connect(base)
    await c.stream.until(() => c.stream.comments.filter((x) => x === 'ping').length >= 2)
  })

  it('resumes with Last-Event-ID: the same connection, exactly the unconfirmed frames', async () => {
    const { base, hub, transport } = await setup({ sessionTimeoutMs: 5_000 })
    const a = await connect(base, { token: 'tok-a' })
    await a.post({ type: 'subscribe', channel: 'public:feed', id: 's' })
    await a.stream.frame('subscribed') // seq 2
    await hub.publish('public:feed', 'm', 1) // seq 3, written on the open stream
    await a.stream.frame('message', (f) => f.data === 1)
    a.stream.abort()
    await until(() => hub.connections.local().length === 1 && transport.sessions === 1)
    await sleep(50)
    await hub.publish('public:feed', 'm', 2) // seq 4, buffered while no stream is open
    await hub.publish('public:feed', 'm', 3) // seq 5

    // The client confirms up to 3: it gets 4 and 5, not 1–3 again.
    const again = await open(base, { headers: { 'last-event-id': `${a.session}:3`, 'x-tidings-secret': a.secret } })
    expect(again.res.status).toBe(200)
    await again.frame('message', (f) => f.data === 3)
    const withIds = again.events.filter((e) => e.id)
    expect(withIds.map((e) => e.id)).toEqual([`${a.session}:4`, `${a.session}:5`])
    expect(JSON.parse(again.events.find((e) => e.event === 'session')!.data).session).toBe(a.session)
    expect(again.frames().some((f) => f.type === 'connected')).toBe(false)

    // Same hub connection, subscriptions intact, the secret still works.
    expect(hub.connections.local()).toMatchObject([{ id: a.connectionId, channels: ['public:feed'] }])
    await a.post({ type: 'ping', id: 'after' })
    await again.frame('pong', (f) => f.id === 'after')

    // Resuming from an earlier position resends the frames written before but not confirmed.
    again.abort()
    await sleep(50)
    const third = await open(base, { headers: { 'last-event-id': `${a.session}:3`, 'x-tidings-secret': a.secret } })
    await third.frame('pong', (f) => f.id === 'after')
    expect(third.events.filter((e) => e.id).map((e) => Number(e.id!.split(':')[1]))).toEqual([4, 5, 6])
  })

  it('a second stream on the same session takes over from the first', async () => {
    const { base, hub } = await setup()
    const a = await connect(base)
    const b = await open(base, { headers: { 'last-event-id': `${a.session}:1`, 'x-tidings-secret': a.secret } })
    await b.until(() => b.events.find((e) => e.event === 'session'))
    await a.stream.waitEnd()
    await hub.broadcast({ to: 'all', event: 'hello', data: null })
    await b.frame('message', (f) => f.event === 'hello')
    expect(hub.connections.local()).toHaveLength(1)
  })

  it('an expired session closes the hub connection; a late Last-Event-ID gets 404 and the client opens a new session', async () => {
    const { base, hub, transport } = await setup({ sessionTimeoutMs: 100 })
    const closes: number[] = []
    hub.on('disconnect', (_info, { code }) => closes.push(code))
    const a = await connect(base)
    a.stream.abort()
    await until(() => hub.connections.local().length === 0)
    expect(closes).toEqual([1006])
    expect(transport.sessions).toBe(0)
    expect((await a.post({ type: 'ping' })).status).toBe(404)

    // The session is gone: a resume is 404 (the client opens a new session and resumes its channels by offset).
    const late = await fetch(`${base}/realtime/sse`, { headers: { 'last-event-id': `${a.session}:1`, 'x-tidings-secret': a.secret } })
    expect(late.status).toBe(404)
    expect(await json(late)).toMatchObject({ type: 'error', code: 'RT_001' })
    const again = await open(base)
    const connected = await again.frame('connected')
    const session = JSON.parse(again.events.find((e) => e.event === 'session')!.data).session
    expect(session).not.toBe(a.session)
    expect(connected.connectionId).not.toBe(a.connectionId)
    expect(again.events.find((e) => e.id)!.id).toBe(`${session}:1`)
  })

  it('opens a new session when the frames after Last-Event-ID were already trimmed (bufferBytes)', async () => {
    const { base, hub } = await setup({ bufferBytes: 2_000 })
    const a = await connect(base)
    await a.post({ type: 'subscribe', channel: 'public:big', id: 's' })
    await a.stream.frame('subscribed')
    for (let i = 0; i < 20; i++) await hub.publish('public:big', 'm', 'x'.repeat(200))
    await a.stream.until(() => a.stream.frames().filter((f) => f.type === 'message').length === 20)
    a.stream.abort()
    const again = await open(base, { headers: { 'last-event-id': `${a.session}:1`, 'x-tidings-secret': a.secret } })
    const connected = await again.frame('connected')
    expect(connected.connectionId).not.toBe(a.connectionId)
    await until(() => hub.connections.local().length === 1)
    expect(hub.connections.local()[0]!.id).toBe(connected.connectionId)
  })

  it("refuses another session's id with its own secret (403 RT_003) and leaves that session alone", async () => {
    const { base, hub } = await setup()
    const a = await connect(base, { token: 'tok-a' })
    const b = await connect(base, { token: 'tok-b' })
    const r = await a.post({ type: 'subscribe', channel: 'public:x', id: 'evil' }, { session: b.session })
    expect(r.status).toBe(403)
    expect(await json(r)).toEqual({ type: 'error', code: 'RT_003', message: expect.any(String) })
    const missing = await fetch(`${base}/realtime/sse/${b.session}`, { method: 'POST', body: '{"type":"ping"}' })
    expect(missing.status).toBe(403)
    expect(hub.connections.local({ userId: 'bob' })[0]!.channels).toEqual([])
    await b.post({ type: 'ping', id: 'still-fine' })
    await b.stream.frame('pong', (f) => f.id === 'still-fine')
    expect(b.stream.frames().map((f) => f.type)).toEqual(['connected', 'pong'])
    expect(a.stream.frames().map((f) => f.type)).toEqual(['connected'])

    const unknown = await a.post({ type: 'ping' }, { session: 'nope' })
    expect(unknown.status).toBe(404)
    expect(await json(unknown)).toMatchObject({ type: 'error', code: 'RT_001' })
  })

  it('answers a bad JSON body with 400 RT_007 and an oversized one with 413 RT_005; the session carries on', async () => {
    const { base } = await setup({ maxBodyBytes: 1_000 })
    const c = await connect(base)
    const bad = await c.post(null, { raw: '{"type":' })
    expect(bad.status).toBe(400)
    expect(await json(bad)).toEqual({ type: 'error', code: 'RT_007', message: expect.any(String) })

    const big = await c.post({ type: 'ping', pad: 'x'.repeat(5_000) })
    expect(big.status).toBe(413)
    expect(await json(big)).toEqual({ type: 'error', code: 'RT_005', message: expect.any(String) })

    // Chunked (no Content-Length) and over the limit.
    const chunked = await fetch(`${base}/realtime/sse/${c.session}`, {
      method: 'POST',
      headers: { 'x-tidings-secret': c.secret },
      body: new ReadableStream({
        start(ctrl) {
          for (let i = 0; i < 5; i++) ctrl.enqueue(new TextEncoder().encode('x'.repeat(500)))
          ctrl.close()
        },
      }),
      duplex: 'half',
    } as RequestInit)
    expect(chunked.status).toBe(413)

    const many = await c.post(Array.from({ length: 101 }, () => ({ type: 'ping' })), {})
    expect(many.status).toBe(413)
    expect((await json(many)).code).toBe('RT_005')

    // A body that is JSON but not a frame is the hub's to answer, on the stream.
    expect((await c.post({ type: 'nonsense', id: 'n1' })).status).toBe(204)
    expect(await c.stream.frame('error', (f) => f.id === 'n1')).toMatchObject({ code: 'RT_007' })
    await c.post({ type: 'ping', id: 'ok' })
    await c.stream.frame('pong', (f) => f.id === 'ok')
  })

  it('refuses the opening request: 401 RT_002 for bad credentials, 429 RT_001 past the per-user limit', async () => {
    const { base, transport } = await setup({}, { allowAnonymous: false, limits: { maxConnectionsPerUser: 1 } })
    const bad = await fetch(`${base}/realtime/sse?token=wrong`)
    expect(bad.status).toBe(401)
    expect(bad.headers.get('content-type')).toMatch(/^application\/json/)
    expect(await json(bad)).toEqual({ type: 'error', code: 'RT_002', message: expect.any(String) })
    const none = await fetch(`${base}/realtime/sse`)
    expect(none.status).toBe(401)

    await connect(base, { token: 'tok-a' })
    const second = await fetch(`${base}/realtime/sse?token=tok-a`)
    expect(second.status).toBe(429)
    expect(await json(second)).toMatchObject({ type: 'error', code: 'RT_001' })
    expect(transport.sessions).toBe(1)
  })

  it('tells the client when the hub closes the connection (event: close) and ends the stream', async () => {
    const { base, hub, transport } = await setup()
    const c = await connect(base)
    await hub.connections.disconnect(c.connectionId, 'bye')
    await c.stream.waitEnd()
    const close = c.stream.events.find((e) => e.event === 'close')!
    expect(close.id).toBeUndefined()
    expect(JSON.parse(close.data)).toEqual({ code: 4000, reason: 'bye' })
    expect(transport.sessions).toBe(0)
    expect((await c.post({ type: 'ping' })).status).toBe(404)
  })

  it('a session closed while its stream is away still gets its frames and the close on resume', async () => {
    const { base, hub } = await setup({ sessionTimeoutMs: 5_000 })
    const c = await connect(base)
    c.stream.abort()
    await sleep(50)
    await hub.broadcast({ to: 'all', event: 'last-words', data: null })
    await hub.connections.disconnect(c.connectionId, 'kicked')
    const again = await open(base, { headers: { 'last-event-id': `${c.session}:1`, 'x-tidings-secret': c.secret } })
    await again.waitEnd()
    expect(again.events.map((e) => e.event)).toEqual(['session', 'message', 'close'])
    expect(JSON.parse(again.events[2]!.data).code).toBe(4000)
  })

  it('backpressure: a session without a stream reports false past the high-water mark; the hub drops it as a slow consumer', async () => {
    const { base, hub } = await setup({}, { limits: { highWaterMark: 2_000, maxQueuedBytes: 6_000 } })
    const sends = recordSends(hub)
    const closes: number[] = []
    hub.on('disconnect', (_i, { code }) => closes.push(code))
    const c = await connect(base, { token: 'tok-a' })
    await c.post({ type: 'subscribe', channel: 'public:flood', id: 's' })
    await c.stream.frame('subscribed')
    c.stream.abort()
    await sleep(50)
    for (let i = 0; i < 10; i++) await hub.publish('public:flood', 'm', 'x'.repeat(300))
    expect(sends).toContain(false)
    expect(hub.connections.local()).toHaveLength(1) // queued by the hub, not dropped yet
    for (let i = 0; i < 40 && hub.connections.local().length > 0; i++) await hub.publish('public:flood', 'm', 'x'.repeat(300))
    expect(hub.connections.local()).toHaveLength(0)
    expect(closes).toEqual([4009])
  })

  it('backpressure drains: a resumed stream flushes what the hub queued, in order', async () => {
    const { base, hub } = await setup({ sessionTimeoutMs: 5_000 }, { limits: { highWaterMark: 1_000, maxQueuedBytes: 100_000 } })
    const c = await connect(base, { token: 'tok-a' })
    await c.post({ type: 'subscribe', channel: 'public:q', id: 's' })
    await c.stream.frame('subscribed')
    c.stream.abort()
    await sleep(50)
    for (let i = 0; i < 20; i++) await hub.publish('public:q', 'm', i, { sender: 'x'.repeat(100) })
    const again = await open(base, { headers: { 'last-event-id': `${c.session}:2`, 'x-tidings-secret': c.secret } })
    await again.until(() => again.frames().filter((f) => f.type === 'message').length === 20)
    expect(again.frames().map((f) => f.data)).toEqual(Array.from({ length: 20 }, (_, i) => i))
    const seqs = again.events.filter((e) => e.id).map((e) => Number(e.id!.split(':')[1]))
    expect(seqs).toEqual(Array.from({ length: 20 }, (_, i) => i + 3))
  })

  it('uses req.body when a body parser already ran (Express)', async () => {
    const { base } = await setup({}, {}, (t) => {
      const app = express()
      app.use(express.json())
      app.use((req, res, next) => {
        t.handle(req, res).then((h) => (h ? undefined : next()), next)
      })
      return app
    })
    const c = await connect(base)
    expect((await c.post({ type: 'ping', id: 'via-express' })).status).toBe(204)
    await c.stream.frame('pong', (f) => f.id === 'via-express')
  })

  it('close() ends every stream with a 1001 close, closes the hub connections and refuses new requests', async () => {
    const { base, hub, transport } = await setup({ heartbeatMs: 20 })
    const a = await connect(base)
    const b = await connect(base)
    b.stream.abort() // a detached session, with its timeout timer running
    await sleep(50)
    await transport.close()
    await a.stream.waitEnd()
    expect(JSON.parse(a.stream.events.find((e) => e.event === 'close')!.data)).toEqual({ code: 1001, reason: 'server is shutting down' })
    expect(transport.sessions).toBe(0)
    expect(hub.connections.local()).toEqual([])
    const late = await fetch(`${base}/realtime/sse`)
    expect(late.status).toBe(503)
    expect((await json(late)).code).toBe('RT_001')
  })

  it('hub.close() ends the streams with 1001', async () => {
    const { base, hub } = await setup()
    const c = await connect(base)
    await hub.close()
    await c.stream.waitEnd()
    expect(JSON.parse(c.stream.events.find((e) => e.event === 'close')!.data).code).toBe(1001)
  })
})

describe('@tidings/sse: ending a session', () => {
  it('DELETE with the secret ends the session now: the hub sees the connection close; a wrong secret is 403', async () => {
    const { hub, base } = await setup()
    const c = await connect(base)
    expect(hub.connections.local()).toHaveLength(1)
    const wrong = await fetch(`${base}/realtime/sse/${c.session}`, { method: 'DELETE', headers: { 'x-tidings-secret': 'nope' } })
    expect(wrong.status).toBe(403)
    expect(hub.connections.local()).toHaveLength(1)
    const ok = await fetch(`${base}/realtime/sse/${c.session}`, { method: 'DELETE', headers: { 'x-tidings-secret': c.secret } })
    expect(ok.status).toBe(204)
    expect(hub.connections.local()).toHaveLength(0)
    const again = await fetch(`${base}/realtime/sse/${c.session}`, { method: 'DELETE', headers: { 'x-tidings-secret': c.secret } })
    expect(again.status).toBe(404)
  })
})

describe('OutboundLog', () => {
  it('numbers, confirms, trims and counts bytes', () => {
    const log = new OutboundLog<string>()
    expect([log.first, log.last, log.size]).toEqual([1, 0, 0])
    for (let i = 1; i <= 200; i++) expect(log.push(`f${i}`, 10)).toBe(i)
    expect(log.bytes).toBe(2000)
    log.confirm(150)
    expect([log.first, log.last, log.size, log.bytes]).toEqual([151, 200, 50, 500])
    const seen: Array<[string, number]> = []
    log.forEachAfter(197, (f, seq) => seen.push([f, seq]))
    expect(seen).toEqual([['f198', 198], ['f199', 199], ['f200', 200]])
    expect(log.bytesAfter(190)).toBe(100)
    log.trim(100, 195) // never drops 195 or later
    expect([log.first, log.bytes]).toEqual([191, 100])
    log.trim(0, 195)
    expect(log.first).toBe(195)
    log.confirm(1_000)
    expect([log.first, log.last, log.size, log.bytes]).toEqual([201, 200, 0, 0])
    expect(log.push('next', 1)).toBe(201)
  })
})
