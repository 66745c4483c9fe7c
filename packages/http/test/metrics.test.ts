import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, createMemoryStore, type Hub, type MessageStore, silentLogger } from '@tidings/core'
import { createRealtime, type RealtimeOptions } from '@tidings/http'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'

const KEY = 'admin-secret-key-0123456789'
const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function serve(options: RealtimeOptions): Promise<{ base: string; hub: Hub }> {
  const rt = createRealtime({ apiKey: KEY, ...options })
  const server = createServer()
  rt.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => new Promise((r) => server.close(() => r(undefined))))
  cleanups.push(() => rt.close())
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hub: rt.hub }
}

/** A WebSocket client that has seen `connected`; `frame(type)` waits for the next frame of a type. */
async function wsClient(base: string): Promise<{ ws: WebSocket; send: (f: object) => void; frame: (type: string) => Promise<Record<string, unknown>> }> {
  const ws = new WebSocket(`${base.replace('http', 'ws')}/realtime`, 'tidings.v1.json')
  cleanups.push(() => ws.terminate())
  const waiters: Array<{ type: string; resolve: (f: Record<string, unknown>) => void }> = []
  ws.on('message', (data) => {
    const f = JSON.parse(String(data)) as Record<string, unknown>
    const i = waiters.findIndex((w) => w.type === f.type)
    if (i >= 0) waiters.splice(i, 1)[0]!.resolve(f)
  })
  const frame = (type: string) => new Promise<Record<string, unknown>>((resolve) => waiters.push({ type, resolve }))
  const connected = frame('connected')
  await new Promise((r, j) => {
    ws.once('open', r)
    ws.once('error', j)
  })
  await connected
  return { ws, send: (f) => ws.send(JSON.stringify(f)), frame }
}

/** The value of one sample (`name{labels} value`) in a Prometheus text body; undefined when absent. */
function sample(text: string, name: string, labels = ''): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    if (line.slice(0, at) === `${name}${labels}`) return Number(line.slice(at + 1))
  }
  return undefined
}

const scrape = async (base: string, headers: Record<string, string> = {}) => {
  const r = await fetch(`${base}/realtime/metrics`, { headers })
  return { status: r.status, type: r.headers.get('content-type'), text: await r.text() }
}

describe('GET /realtime/metrics (Prometheus)', () => {
  it('serves the text format with connections per transport, publish latency, errors by code and close codes, over real sockets', async () => {
    const { base, hub } = await serve({ hubOptions: { logger: silentLogger }, metrics: { open: true } })
    const a = await wsClient(base)
    const b = await wsClient(base)
    a.send({ type: 'subscribe', id: 's', channel: 'public:news' })
    await a.frame('subscribed')
    for (let i = 0; i < 5; i++) await hub.publish('public:news', 'tick', i)
    // A frame the schema refuses: RT_007.
    b.send({ type: 'subscribe', id: 'bad', channel: '' })
    await b.frame('error')
    // Lost without a close frame: 1006.
    b.ws.terminate()
    await new Promise((r) => setTimeout(r, 100))
    const { status, type, text } = await scrape(base)
    expect(status).toBe(200)
    expect(type).toContain('text/plain; version=0.0.4')
    expect(sample(text, 'tidings_connections')).toBe(1)
    expect(sample(text, 'tidings_transport_connections', '{transport="ws"}')).toBe(1)
    expect(sample(text, 'tidings_connections_opened_total', '{transport="ws"}')).toBe(2)
    expect(sample(text, 'tidings_connections_peak')).toBe(2)
    expect(sample(text, 'tidings_publish_latency_seconds_count')).toBe(5)
    expect(sample(text, 'tidings_publish_latency_seconds_bucket', '{le="+Inf"}')).toBe(5)
    expect(sample(text, 'tidings_published_total')).toBe(5)
    expect(sample(text, 'tidings_errors_total', '{code="RT_007"}')).toBe(1)
    expect(sample(text, 'tidings_disconnects_total', '{code="1006"}')).toBe(1)
    expect(sample(text, 'tidings_connection_duration_seconds_count')).toBe(1)
    expect(sample(text, 'tidings_channel_subscriptions', '{channel="public:news"}')).toBe(1)
    expect(sample(text, 'tidings_healthy')).toBe(1)
    expect(text).toContain('# TYPE tidings_publish_latency_seconds histogram')
    expect(text).toContain('# TYPE tidings_messages_in_total counter')
    // The memory broker does not report its health: no broker series rather than a made-up one.
    expect(sample(text, 'tidings_broker_up')).toBeUndefined()
  })

  it('is not open by default: a request without a credential is an admin API request, refused 401 RT_002', async () => {
    const { base } = await serve({ hubOptions: { logger: silentLogger } })
    const r = await scrape(base)
    expect(r.status).toBe(401)
    expect(JSON.parse(r.text)).toMatchObject({ type: 'error', code: 'RT_002' })
  })

  it('serves a scrape with the configured bearer token and refuses a wrong or truncated one (401)', async () => {
    const { base } = await serve({ hubOptions: { logger: silentLogger }, metrics: { token: 'scrape-token-0123456789' } })
    expect((await scrape(base)).status).toBe(401)
    expect((await scrape(base, { authorization: 'Bearer scrape-token-012345678' })).status).toBe(401)
    expect((await scrape(base, { authorization: 'Bearer scrape-token-0123456789x' })).status).toBe(401)
    const ok = await scrape(base, { authorization: 'Bearer scrape-token-0123456789' })
    expect(ok.status).toBe(200)
    expect(ok.type).toContain('text/plain; version=0.0.4')
    expect(sample(ok.text, 'tidings_connections')).toBe(0)
    // The admin key is an admin API request: its JSON snapshot, not the scrape.
    const admin = await scrape(base, { authorization: `Bearer ${KEY}` })
    expect(admin.status).toBe(200)
    expect(admin.type).toContain('application/json')
  })

  it('keeps the admin JSON snapshot for admin callers (?format=json or x-api-key), still behind the API key', async () => {
    const { base } = await serve({ hubOptions: { logger: silentLogger }, metrics: { open: true } })
    await wsClient(base)
    const json = await fetch(`${base}/realtime/metrics?format=json`, { headers: { 'x-api-key': KEY } })
    expect(json.status).toBe(200)
    expect(((await json.json()) as { connections: number }).connections).toBe(1)
    expect((await fetch(`${base}/realtime/metrics?format=json`)).status).toBe(401)
    const viaKey = await fetch(`${base}/realtime/metrics`, { headers: { 'x-api-key': KEY } })
    expect(viaKey.headers.get('content-type')).toContain('application/json')
  })

  it('names at most channelLabels channels and sums the others under channel="other" (bounded cardinality)', async () => {
    const { base, hub } = await serve({ hubOptions: { logger: silentLogger }, metrics: { open: true, channelLabels: 2 } })
    const clients = await Promise.all(Array.from({ length: 4 }, () => wsClient(base)))
    // c0 has 4 subscribers, c1 3, c2 2, c3 1.
    for (let i = 0; i < 4; i++) {
      for (let c = 0; c <= i; c++) {
        clients[i]!.send({ type: 'subscribe', id: `s${c}`, channel: `public:c${c}` })
        await clients[i]!.frame('subscribed')
      }
    }
    expect(hub.metrics().subscriptions).toBe(10)
    const { text } = await scrape(base)
    const series = text.split('\n').filter((l) => l.startsWith('tidings_channel_subscriptions{'))
    expect(series).toHaveLength(3)
    expect(sample(text, 'tidings_channel_subscriptions', '{channel="public:c0"}')).toBe(4)
    expect(sample(text, 'tidings_channel_subscriptions', '{channel="public:c1"}')).toBe(3)
    expect(sample(text, 'tidings_channel_subscriptions', '{channel="other"}')).toBe(3)
  })

  it('takes one hub snapshot per scrape, shared by every metric (nothing is computed per message or per metric)', async () => {
    const hub = createHub({ logger: silentLogger })
    let snapshots = 0
    const metrics = hub.metrics.bind(hub)
    hub.metrics = () => {
      snapshots++
      return metrics()
    }
    const { base } = await serve({ hub, metrics: { open: true } })
    await scrape(base)
    expect(snapshots).toBe(1)
    await scrape(base)
    expect(snapshots).toBe(2)
  })

  it('reports a store that does not answer within the probe time as down (tidings_store_up 0), a working one as up', async () => {
    const inner = createMemoryStore()
    let hang = false
    const store: MessageStore = new Proxy(inner, {
      get(target, key, receiver) {
        if (key === 'position') return (channel: string) => (hang ? new Promise(() => undefined) : target.position(channel))
        return Reflect.get(target, key, receiver) as unknown
      },
    })
    const { base } = await serve({ hubOptions: { logger: silentLogger, store }, metrics: { open: true, storeProbeTimeoutMs: 200, capacity: 500 } })
    expect(sample((await scrape(base)).text, 'tidings_store_up')).toBe(1)
    hang = true
    const started = Date.now()
    const { text } = await scrape(base)
    expect(sample(text, 'tidings_store_up')).toBe(0)
    expect(Date.now() - started).toBeLessThan(2_000)
    expect(sample(text, 'tidings_connections_capacity')).toBe(500)
  })

  it('can be turned off: metrics: false leaves /metrics to the admin API', async () => {
    const { base } = await serve({ hubOptions: { logger: silentLogger }, metrics: false })
    expect((await scrape(base)).status).toBe(401)
  })
})

describe('GET /realtime/analytics (admin, scope read)', () => {
  it('answers hub.analytics() for a read key: peak connections, channel activity, per-user engagement; 401 without a key, 403 with a publish-only key', async () => {
    const { base } = await serve({
      hubOptions: { logger: silentLogger, authenticate: (r) => (r.token ? { userId: r.token } : null) },
      apiKeys: { reader: { key: 'reader-key-0123456789', scopes: ['read'] }, publisher: { key: 'publisher-key-0123456789', scopes: ['publish'] } },
    })
    const ada = new WebSocket(`${base.replace('http', 'ws')}/realtime?token=ada`, 'tidings.v1.json')
    cleanups.push(() => ada.terminate())
    const frames: Array<Record<string, unknown>> = []
    ada.on('message', (d) => frames.push(JSON.parse(String(d)) as Record<string, unknown>))
    const until = async (type: string, n = 1) => {
      for (let i = 0; i < 200 && frames.filter((f) => f.type === type).length < n; i++) await new Promise((r) => setTimeout(r, 10))
    }
    await until('connected')
    ada.send(JSON.stringify({ type: 'subscribe', id: 's', channel: 'public:lobby' }))
    await until('subscribed')
    for (let i = 0; i < 3; i++) ada.send(JSON.stringify({ type: 'message', id: `m${i}`, channel: 'public:lobby', event: 'say', data: i }))
    await until('published', 3)
    const url = `${base}/realtime/analytics?limit=5`
    expect((await fetch(url)).status).toBe(401)
    expect((await fetch(url, { headers: { 'x-api-key': 'publisher-key-0123456789' } })).status).toBe(403)
    expect((await fetch(`${base}/realtime/analytics?limit=0`, { headers: { 'x-api-key': 'reader-key-0123456789' } })).status).toBe(400)
    const r = await fetch(url, { headers: { 'x-api-key': 'reader-key-0123456789' } })
    expect(r.status).toBe(200)
    const body = (await r.json()) as { connections: { peak: number; peakAt: number }; channels: { mostActive: Array<{ channel: string; messages: number; subscribers: number }> }; users: { top: Array<{ userId: string; messagesSent: number; online: boolean }> }; hours: unknown[] }
    expect(body.connections.peak).toBe(1)
    expect(body.connections.peakAt).toBeGreaterThan(0)
    expect(body.channels.mostActive[0]).toMatchObject({ channel: 'public:lobby', messages: 3, subscribers: 1 })
    expect(body.users.top[0]).toMatchObject({ userId: 'ada', messagesSent: 3, online: true })
    expect(body.hours).toHaveLength(24)
  })
})
