import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, createTokenAuthenticator, type Hub, silentLogger } from '@tidings/core'
import { createRealtime, type Realtime } from '@tidings/http'
import express from 'express'
import Fastify from 'fastify'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'

const KEY = 'admin-secret'
const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

function hub(): Hub {
  const h = createHub({ logger: silentLogger, authenticate: createTokenAuthenticator({ 'tok-ada': { userId: 'ada' }, 'tok-bob': { userId: 'bob' } }) })
  cleanups.push(() => h.close())
  return h
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => new Promise((r) => server.close(() => r(undefined))))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

function realtime(h: Hub, extra: Parameters<typeof createRealtime>[0] = {}): Realtime {
  const rt = createRealtime({ hub: h, apiKey: KEY, ...extra })
  cleanups.push(() => rt.close())
  return rt
}

/** A hub's realtime endpoints on a plain http.Server; returns the server's base URL. */
async function serve(h: Hub): Promise<string> {
  const server = createServer()
  realtime(h).attach(server)
  return listen(server)
}

async function wsClient(base: string, token: string): Promise<{ ws: WebSocket; frames: Array<Record<string, unknown>>; next: (type: string) => Promise<Record<string, unknown>> }> {
  const ws = new WebSocket(`${base.replace('http', 'ws')}/realtime?token=${token}`, 'tidings.v1.json')
  cleanups.push(() => ws.terminate())
  const frames: Array<Record<string, unknown>> = []
  const waiters: Array<{ type: string; resolve: (f: Record<string, unknown>) => void }> = []
  ws.on('message', (data) => {
    const f = JSON.parse(String(data)) as Record<string, unknown>
    frames.push(f)
    for (const w of [...waiters]) if (w.type === f.type) {
      waiters.splice(waiters.indexOf(w), 1)
      w.resolve(f)
    }
  })
  const next = (type: string) => new Promise<Record<string, unknown>>((resolve) => waiters.push({ type, resolve }))
  const connected = next('connected')
  await new Promise((r, j) => {
    ws.once('open', r)
    ws.once('error', j)
  })
  await connected
  return { ws, frames, next }
}

const admin = (base: string, path: string, init: RequestInit = {}) =>
  fetch(`${base}/realtime${path}`, { ...init, headers: { 'content-type': 'application/json', 'x-api-key': KEY, ...(init.headers as Record<string, string> | undefined) } })

describe('admin API', () => {
  it('needs the API key: none or a wrong one is 401 RT_002; without a configured key it is 403', async () => {
    const h = hub()
    const base = await listen(createServer())
    const server = createServer()
    const rt = realtime(h)
    rt.attach(server)
    const url = await listen(server)
    for (const headers of [{}, { 'x-api-key': 'wrong' }, { authorization: 'Bearer wrong' }] as Array<Record<string, string>>) {
      const r = await fetch(`${url}/realtime/connections`, { headers })
      expect(r.status).toBe(401)
      expect(await r.json()).toMatchObject({ type: 'error', code: 'RT_002' })
    }
    const ok = await fetch(`${url}/realtime/connections`, { headers: { authorization: `Bearer ${KEY}` } })
    expect(ok.status).toBe(200)
    const noKey = createRealtime({ hub: h })
    cleanups.push(() => noKey.close())
    const s2 = createServer()
    noKey.attach(s2)
    const url2 = await listen(s2)
    const r = await fetch(`${url2}/realtime/connections`, { headers: { 'x-api-key': KEY } })
    expect(r.status).toBe(403)
    expect(base).toMatch(/^http/)
  })

  it('broadcasts to a channel, lists presence and connections, kicks, reads history, disconnects', async () => {
    const h = hub()
    const base = await serve(h)
    const ada = await wsClient(base, 'tok-ada')
    const bob = await wsClient(base, 'tok-bob')
    ada.ws.send(JSON.stringify({ type: 'subscribe', id: 1, channel: 'presence:lobby' }))
    await ada.next('subscribed')
    bob.ws.send(JSON.stringify({ type: 'subscribe', id: 1, channel: 'presence:lobby' }))
    await bob.next('subscribed')

    const got = bob.next('message')
    const b = await admin(base, `/channels/${encodeURIComponent('presence:lobby')}/broadcast`, { method: 'POST', body: JSON.stringify({ event: 'news', data: { n: 1 } }) })
    expect(b.status).toBe(200)
    expect(await b.json()).toMatchObject({ offset: 1, duplicate: false, recipients: 2 })
    expect(await got).toMatchObject({ type: 'message', channel: 'presence:lobby', event: 'news', data: { n: 1 } })

    const p = (await (await admin(base, `/channels/${encodeURIComponent('presence:lobby')}/presence`)).json()) as { count: number; users: Array<{ id: string }> }
    expect(p.count).toBe(2)
    expect(p.users.map((u: { id: string }) => u.id).sort()).toEqual(['ada', 'bob'])

    const list = (await (await admin(base, '/connections?userId=ada')).json()) as { count: number; connections: Array<{ id: string }> }
    expect(list.count).toBe(1)
    expect(list.connections[0]).toMatchObject({ userId: 'ada', transport: 'ws', channels: ['presence:lobby'] })

    const history = (await (await admin(base, `/channels/${encodeURIComponent('presence:lobby')}/history?limit=10`)).json()) as { messages: Array<{ event: string }> }
    expect(history.messages.map((m: { event: string }) => m.event)).toEqual(['news'])

    const unsub = bob.next('unsubscribed')
    const k = await admin(base, `/channels/${encodeURIComponent('presence:lobby')}/kick`, { method: 'POST', body: JSON.stringify({ userId: 'bob' }) })
    expect(await k.json()).toEqual({ removed: 1 })
    expect(await unsub).toMatchObject({ channel: 'presence:lobby', reason: 'kicked' })

    const closed = new Promise<number>((r) => ada.ws.once('close', (code) => r(code)))
    const d = await admin(base, `/connections/${encodeURIComponent(list.connections[0]!.id)}`, { method: 'DELETE' })
    expect(d.status).toBe(204)
    expect(await closed).toBe(4000)
    const again = await admin(base, `/connections/${encodeURIComponent(list.connections[0]!.id)}`, { method: 'DELETE' })
    expect(again.status).toBe(404)
  })

  it('disconnects every connection of one user, and only that user', async () => {
    const h = hub()
    const base = await serve(h)
    const ada1 = await wsClient(base, 'tok-ada')
    const ada2 = await wsClient(base, 'tok-ada')
    const bob = await wsClient(base, 'tok-bob')
    const codes = Promise.all([ada1, ada2].map((c) => new Promise<number>((r) => c.ws.once('close', (code) => r(code)))))
    const r = await admin(base, '/users/ada/connections', { method: 'DELETE' })
    expect(r.status).toBe(200)
    expect(await r.json()).toEqual({ disconnected: 2 })
    expect(await codes).toEqual([4000, 4000])
    expect(bob.ws.readyState).toBe(WebSocket.OPEN)
    expect(h.connections.local().map((c) => c.userId)).toEqual(['bob'])
    // A user with no connections here: nothing to do, still a clear answer.
    const none = await admin(base, `/users/${encodeURIComponent('nobody@example')}/connections`, { method: 'DELETE' })
    expect(await none.json()).toEqual({ disconnected: 0 })
  })

  it('validates bodies and parameters with clear errors, and keeps serving', async () => {
    const h = hub()
    const base = await serve(h)
    const cases: Array<[string, RequestInit, number, string]> = [
      [`/channels/public%3Anews/broadcast`, { method: 'POST', body: '{not json' }, 400, 'RT_007'],
      [`/channels/public%3Anews/broadcast`, { method: 'POST', body: JSON.stringify({ data: 1 }) }, 400, 'RT_007'],
      [`/channels/public%3Anews/broadcast`, { method: 'POST', body: JSON.stringify({ event: 'x', extra: true }) }, 400, 'RT_007'],
      [`/channels/nowhere/broadcast`, { method: 'POST', body: JSON.stringify({ event: 'x' }) }, 404, 'RT_004'],
      [`/channels/bad%20name/presence`, {}, 400, 'RT_007'],
      [`/channels/public%3Anews/history?limit=0`, {}, 400, 'RT_007'],
      [`/channels/public%3Anews/kick`, { method: 'POST', body: JSON.stringify({}) }, 400, 'RT_007'],
      [`/channels/public%3Anews/broadcast`, { method: 'POST', body: JSON.stringify({ event: 'x', data: 'y'.repeat(2 * 1024 * 1024) }) }, 413, 'RT_005'],
      [`/broadcast`, { method: 'POST', body: JSON.stringify({ event: 'x', to: 'everyone' }) }, 400, 'RT_007'],
      [`/nothing-here`, {}, 404, 'RT_004'],
    ]
    for (const [path, init, status, code] of cases) {
      const r = await admin(base, path, init)
      expect(r.status, path).toBe(status)
      expect(await r.json(), path).toMatchObject({ type: 'error', code })
    }
    const wrongMethod = await admin(base, '/connections', { method: 'POST', body: '{}' })
    expect(wrongMethod.status).toBe(405)
    const ok = await admin(base, '/broadcast', { method: 'POST', body: JSON.stringify({ event: 'x', to: 'all' }) })
    expect(ok.status).toBe(200)
  })

  it('serves metrics as JSON and in the Prometheus text format', async () => {
    const h = hub()
    const base = await serve(h)
    await wsClient(base, 'tok-ada')
    const m = (await (await admin(base, '/metrics')).json()) as { connections: number }
    expect(m.connections).toBe(1)
    const text = await (await admin(base, '/metrics?format=prometheus')).text()
    expect(text).toContain('tidings_connections 1')
    expect(text).toMatch(/tidings_errors_total\{code="RT_001"\} 0/)
  })

  it('serves an OpenAPI 3.1 document with every route and the body schemas', async () => {
    const h = hub()
    const base = await serve(h)
    const doc = (await (await fetch(`${base}/realtime/openapi.json`)).json()) as { openapi: string; paths: Record<string, { post: { requestBody: { content: Record<string, { schema: { required: string[] } }> } } }> }
    expect(doc.openapi).toBe('3.1.0')
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/channels/{id}/broadcast', '/channels/{id}/presence', '/channels/{id}/kick', '/channels/{id}/history', '/channels/{id}/messages/{offset}', '/channels/{id}/search', '/broadcast', '/connections', '/connections/{id}', '/users/{id}/connections', '/users/{id}/channels', '/metrics']),
    )
    const schema = doc.paths['/channels/{id}/broadcast']!.post.requestBody.content['application/json']!.schema
    expect(schema.required).toContain('event')
  })
})

describe('mounting', () => {
  it('on a plain http.Server, leaving other requests to the app', async () => {
    const h = hub()
    const server = createServer((_req, res) => res.end('app'))
    realtime(h).attach(server)
    const base = await listen(server)
    expect(await (await fetch(`${base}/hello`)).text()).toBe('app')
    expect((await fetch(`${base}/realtime/openapi.json`)).status).toBe(200)
    const c = await wsClient(base, 'tok-ada')
    expect(c.frames[0]).toMatchObject({ type: 'connected', userId: 'ada' })
  })

  it('on Express: app.use(realtime.express()) plus upgrades on the server', async () => {
    const h = hub()
    const app = express()
    app.use(express.json())
    const rt = realtime(h)
    app.use(rt.express())
    app.get('/hello', (_req, res) => res.send('express'))
    const server = createServer(app)
    rt.upgrades(server)
    const base = await listen(server)
    expect(await (await fetch(`${base}/hello`)).text()).toBe('express')
    // express.json() already parsed the body: the admin API uses req.body.
    const r = await admin(base, '/broadcast', { method: 'POST', body: JSON.stringify({ event: 'x', to: 'all' }) })
    expect(r.status).toBe(200)
    const c = await wsClient(base, 'tok-bob')
    expect(c.frames[0]).toMatchObject({ type: 'connected', userId: 'bob' })
  })

  it('on Fastify: await app.register(realtime.fastify())', async () => {
    const h = hub()
    const app = Fastify()
    const rt = realtime(h)
    await app.register(rt.fastify())
    app.get('/hello', async () => 'fastify')
    await app.listen({ port: 0, host: '127.0.0.1' })
    cleanups.push(() => app.close())
    const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
    expect(await (await fetch(`${base}/hello`)).text()).toBe('fastify')
    const r = await admin(base, '/broadcast', { method: 'POST', body: JSON.stringify({ event: 'x', to: 'all' }) })
    expect(r.status).toBe(200)
    const c = await wsClient(base, 'tok-ada')
    expect(c.frames[0]).toMatchObject({ type: 'connected', userId: 'ada' })
  })
})
