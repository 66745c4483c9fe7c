import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { silentLogger } from '@tidings/core'
import { createRealtime, type Realtime } from '@tidings/http'
import WebSocket from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

// A real Prometheus (2.42, Debian's package) scrapes a real server every second with the alert
// rules of ops/prometheus loaded, and answers PromQL over its HTTP API. A missing `prometheus`
// binary fails this suite: it does not skip.

const RULES = fileURLToPath(new URL('../../../ops/prometheus/alerts.yml', import.meta.url))
const CAPACITY = 4

async function freePort(): Promise<number> {
  const s = createNetServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as AddressInfo).port
  await new Promise((r) => s.close(r))
  return port
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

let rt: Realtime
let server: Server
let base: string
let prom: ChildProcess | undefined
let promExit: Promise<void> | undefined
let promUrl: string
let promLog = ''
let dir: string
const sockets: WebSocket[] = []
let traffic: NodeJS.Timeout | undefined

/** A WebSocket client on the realtime endpoint, connected (`connected` seen). */
async function client(): Promise<{ ws: WebSocket; send: (f: object) => void; next: (type: string) => Promise<Record<string, unknown>> }> {
  const ws = new WebSocket(`${base.replace('http', 'ws')}/realtime`, 'tidings.v1.json')
  sockets.push(ws)
  const waiters: Array<{ type: string; resolve: (f: Record<string, unknown>) => void }> = []
  ws.on('message', (data) => {
    const f = JSON.parse(String(data)) as Record<string, unknown>
    const i = waiters.findIndex((w) => w.type === f.type)
    if (i >= 0) waiters.splice(i, 1)[0]!.resolve(f)
  })
  ws.on('error', () => undefined)
  const next = (type: string) => new Promise<Record<string, unknown>>((resolve) => waiters.push({ type, resolve }))
  const connected = next('connected')
  await connected
  return { ws, send: (f) => ws.send(JSON.stringify(f)), next }
}

async function query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
  const r = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`)
  const body = (await r.json()) as { status: string; data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> }; error?: string }
  if (body.status !== 'success') throw new Error(`query ${expr}: ${body.error}`)
  return body.data.result
}

/** Polls `fn` until it returns a value other than undefined, or fails after `ms`. */
async function eventually<T>(what: string, ms: number, fn: () => Promise<T | undefined>): Promise<T> {
  const until = Date.now() + ms
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v !== undefined) return v
    } catch (err) {
      last = err
    }
    if (Date.now() > until) throw new Error(`${what}: not within ${ms} ms (${String(last ?? 'no value')}); prometheus log:\n${promLog.slice(-2000)}`)
    await sleep(250)
  }
}

beforeAll(async () => {
  rt = createRealtime({ hubOptions: { logger: silentLogger, history: { maxCount: 100_000 } }, metrics: { open: true, capacity: CAPACITY } })
  server = createServer()
  rt.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

  dir = mkdtempSync(join(tmpdir(), 'tidings-prometheus-'))
  const port = await freePort()
  promUrl = `http://127.0.0.1:${port}`
  writeFileSync(
    join(dir, 'prometheus.yml'),
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'rule_files:',
      `  - ${JSON.stringify(RULES)}`,
      'scrape_configs:',
      '  - job_name: tidings',
      '    metrics_path: /realtime/metrics',
      '    static_configs:',
      `      - targets: ['${new URL(base).host}']`,
      '',
    ].join('\n'),
  )
  // Spawned directly (no shell): ENOENT when prometheus is not installed, which fails the suite.
  const child = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: ['ignore', 'pipe', 'pipe'] })
  prom = child
  child.stdout.on('data', (d: Buffer) => (promLog += d.toString()))
  child.stderr.on('data', (d: Buffer) => (promLog += d.toString()))
  promExit = new Promise((resolve) => child.once('exit', () => resolve()))
  const spawned = await new Promise<Error | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined))
    child.once('error', (err) => resolve(err))
  })
  if (spawned) throw new Error(`cannot start prometheus (apt-get install -y prometheus): ${spawned.message}`)
  await eventually('prometheus ready', 15_000, async () => ((await fetch(`${promUrl}/-/ready`)).ok ? true : undefined))

  // Traffic: subscribers, client and server publishes, refused frames, a lost connection and a
  // client coming back with its position.
  const subs = await Promise.all(Array.from({ length: CAPACITY }, () => client()))
  for (const [i, c] of subs.entries()) {
    c.send({ type: 'subscribe', id: `s${i}`, channel: 'public:prices' })
    await c.next('subscribed')
  }
  const publisher = subs[0]!
  let n = 0
  traffic = setInterval(() => {
    for (let i = 0; i < 5; i++) void rt.hub.publish('public:prices', 'tick', { n: n++ }).catch(() => undefined)
    publisher.send({ type: 'message', id: `p${n}`, channel: 'public:prices', event: 'quote', data: { n } })
    publisher.send({ type: 'subscribe', id: `bad${n}`, channel: '' })
  }, 50)
  const leaving = subs[CAPACITY - 1]!
  const position = (await rt.hub.channel('public:prices').history({ limit: 1 })).top
  leaving.ws.terminate()
  const back = await client()
  const epoch = (await rt.hub.channel('public:prices').history({ limit: 1 })).epoch
  back.send({ type: 'subscribe', id: 'again', channel: 'public:prices', since: { epoch, offset: position } })
  await back.next('subscribed')
}, 30_000)

afterAll(async () => {
  if (traffic) clearInterval(traffic)
  if (prom && prom.exitCode === null) {
    prom.kill('SIGTERM')
    await Promise.race([promExit, sleep(5_000)])
    if (prom.exitCode === null) prom.kill('SIGKILL')
  }
  for (const ws of sockets) ws.terminate()
  await rt?.close()
  await new Promise((r) => server?.close(r))
  if (dir) rmSync(dir, { recursive: true, force: true })
})

describe('a real Prometheus scraping a real server', () => {
  it('answers the p95 publish latency (histogram_quantile over the scraped buckets) with a sane number', async () => {
    const p95 = await eventually('p95 publish latency', 15_000, async () => {
      const r = await query('histogram_quantile(0.95, sum by (le) (rate(tidings_publish_latency_seconds_bucket[5s])))')
      const v = r.length === 1 ? Number(r[0]!.value[1]) : Number.NaN
      return Number.isFinite(v) ? v : undefined
    })
    // Memory store, one node: far under a second, and a positive interpolation within the buckets.
    expect(p95).toBeGreaterThan(0)
    expect(p95).toBeLessThan(1)
    const published = await query('sum(tidings_published_total)')
    expect(Number(published[0]!.value[1])).toBeGreaterThan(0)
  }, 20_000)

  it('scraped the traffic figures: connections per transport, errors by code, the lost connection, the resume', async () => {
    const value = async (expr: string) => {
      const r = await query(expr)
      return r.length > 0 ? Number(r[0]!.value[1]) : undefined
    }
    await eventually('resume scraped', 10_000, async () => ((await value('tidings_resumes_total{recovered="true"}')) === 1 ? true : undefined))
    expect(await value('tidings_transport_connections{transport="ws"}')).toBe(CAPACITY)
    expect(await value('tidings_disconnects_total{code="1006"}')).toBe(1)
    expect(await value('tidings_reconnections_total')).toBe(1)
    expect(await value('tidings_errors_total{code="RT_007"}')).toBeGreaterThan(0)
    expect(await value('rate(tidings_messages_in_total[5s])')).toBeGreaterThan(0)
  }, 15_000)

  it('loaded every alert rule without evaluation errors, and the capacity alert is active (connections > 80% of capacity)', async () => {
    const rules = await eventually('rules evaluated', 10_000, async () => {
      const body = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as { data: { groups: Array<{ name: string; rules: Array<{ name: string; health: string; lastError?: string }> }> } }
      const rs = body.data.groups.flatMap((g) => g.rules)
      return rs.length > 0 && rs.every((r) => r.health === 'ok') ? rs : undefined
    })
    expect(rules.map((r) => r.name).sort()).toEqual([
      'TidingsAbnormalDisconnects',
      'TidingsBrokerDown',
      'TidingsConnectionsNearCapacity',
      'TidingsHighErrorRate',
      'TidingsHighPublishLatency',
      'TidingsNodeUnhealthy',
      'TidingsStoreDown',
    ])
    // The alert waits `for: 2m` before firing: pending is what a 30 s test can see of it.
    const alert = await eventually('capacity alert active', 10_000, async () => {
      const body = (await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as { data: { alerts: Array<{ labels: Record<string, string>; state: string }> } }
      return body.data.alerts.find((a) => a.labels.alertname === 'TidingsConnectionsNearCapacity')
    })
    expect(['pending', 'firing']).toContain(alert.state)
    // The error rate is well over 5% (a refused frame for every client publish): active too.
    const ratio = await query('sum(rate(tidings_errors_total[5m])) / (sum(rate(tidings_messages_in_total[5m])) + sum(rate(tidings_connections_opened_total[5m])))')
    expect(Number(ratio[0]?.value[1])).toBeGreaterThan(0.05)
    await eventually('error rate alert active', 5_000, async () => {
      const body = (await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as { data: { alerts: Array<{ labels: Record<string, string>; state: string }> } }
      return body.data.alerts.find((a) => a.labels.alertname === 'TidingsHighErrorRate')
    })
  }, 15_000)
})
