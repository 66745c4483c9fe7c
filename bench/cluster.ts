/**
 * `pnpm bench:cluster`: what crossing nodes costs, against single-node delivery measured in the
 * same run. A private redis-server (no persistence) and three hub nodes in child processes
 * (scripts/cluster-node.ts: the Redis broker, store and presence store, the WebSocket transport);
 * the publishers (PUBS connections, 20, all on node 1) and the subscribers are real `ws` clients in this process, speaking the protocol.
 * Channels `bench:*` are at-most-once with a log (every message is appended to a Redis Stream and
 * carries its offset), in both configurations:
 *
 * - single-node: the publishers and the subscribers on node 1 (the store append is on the path,
 *   but no message crosses Redis pub/sub to another node);
 * - cross-node: the publishers on node 1, the subscribers on nodes 2 and 3.
 *
 * Latency is measured from a publisher's send to each subscriber's receipt (one clock, this
 * process), at a fixed rate (RATE, 1,000 msg/s; N messages per phase, 3,000), the two
 * configurations interleaved in every round (ROUNDS, 3; the order alternates); figures are
 * medians over rounds, the added latency the median of per-round differences. Then the highest
 * rate one Redis carries to three nodes (subscribers on nodes 1, 2 and 3, the publishers on
 * node 1): the rate steps up (×1.5 from MAXRATE_START, 250, for STEP_MS, 2,000 ms, each) until
 * the p95 passes 50 ms or fewer than 99 % of the deliveries arrive; `max-rate` is the last step
 * that passed, and `limited-by` names the process that used the most CPU in the step that failed
 * (each process's CPU time over the step: Redis from INFO, nodes from process.cpuUsage), or
 * `shared-machine` when this run's processes together used under 75 % of the cores (the rest
 * went to other work on the machine).
 *
 * Prints per-figure lines, then, last:
 *   bench-cluster: added-p50-ms=… added-p95-ms=… max-rate=… limited-by=…
 *
 * Environment: ROUNDS, RATE, N, SUBS (subscribers per configuration, 10), MAXRATE_START,
 * MAXRATE_MAX (64,000), STEP_MS, PUBS.
 */
import os from 'node:os'
import WebSocket from 'ws'
import { Child, killAllChildren } from './lib/ipc.js'
import { median, percentile, sleep } from './lib/stats.js'
import { freePort, redisCli, startPrivateRedis } from '../scripts/cluster/redis.js'

const env = process.env
const num = (name: string, fallback: number) => (env[name] ? Number(env[name]) : fallback)
const ROUNDS = num('ROUNDS', 3)
const RATE = num('RATE', 1000)
const N = num('N', 3000)
const SUBS = num('SUBS', 10)
const PUBS = num('PUBS', 20)
const MAXRATE = { start: num('MAXRATE_START', 250), max: num('MAXRATE_MAX', 64_000), stepMs: num('STEP_MS', 2000), p95LimitMs: 50 }
const T0 = Date.now()
const log = (msg: string) => console.error(`[bench-cluster ${((Date.now() - T0) / 1000).toFixed(0).padStart(3)} s] ${msg}`)
const now = () => performance.timeOrigin + performance.now()

/** A `ws` client of one node, user `tok-<user>`; resolves when `connected` arrived. */
function client(port: number, user: string, onFrame: (f: { type: string; [k: string]: unknown }, at: number) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/realtime?token=tok-${user}`, 'tidings.v1.json')
    ws.on('error', reject)
    ws.on('message', (raw) => {
      const at = now()
      const text = raw.toString()
      // Messages are parsed only as far as needed: most frames here are `message`.
      const f = JSON.parse(text) as { type: string; [k: string]: unknown }
      if (f.type === 'connected') resolve(ws)
      onFrame(f, at)
    })
  })
}

/** Subscribers of `channel` spread over `ports`; their latencies land in `sink` while it is set. */
class Audience {
  sink: { lat: number[]; phase: string } | undefined
  readonly sockets: WebSocket[] = []
  constructor(readonly channel: string) {}

  async open(ports: number[], count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      let done: () => void = () => undefined
      const subscribed = new Promise<void>((r) => (done = r))
      const ws = await client(ports[i % ports.length]!, `${this.channel.replace(/[^a-z0-9]/gi, '')}-sub${i}`, (f, at) => {
        if (f.type === 'subscribed') done()
        else if (f.type === 'message' && this.sink) {
          const d = f.data as { t: number; phase: string }
          if (d.phase === this.sink.phase) this.sink.lat.push(at - d.t)
        }
      })
      ws.send(JSON.stringify({ type: 'subscribe', id: 1, channel: this.channel }))
      await subscribed
      this.sockets.push(ws)
    }
  }
}

/**
 * Publish `count` messages at `rate`, paced every 5 ms, round-robin over the publisher
 * connections: the hub handles one connection's frames in order, each publish waiting for its
 * Redis append, so one connection alone publishes at most one message per Redis round trip.
 */
async function publish(pubs: WebSocket[], channel: string, rate: number, count: number, phase: string): Promise<number> {
  let sent = 0
  const start = now()
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      const due = Math.min(count, Math.floor(((now() - start) / 1000) * rate))
      while (sent < due) {
        sent++
        pubs[sent % pubs.length]!.send(JSON.stringify({ type: 'message', channel, event: 'b', data: { t: now(), phase } }))
      }
      if (sent >= count) {
        clearInterval(timer)
        resolve(sent)
      }
    }, 5)
  })
}

async function main(): Promise<void> {
  log(`machine: ${os.cpus().length} cores (${os.cpus()[0]?.model}), load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} (shared with other work: figures are noisy)`)
  const redis = await startPrivateRedis({ durable: false })
  const ports = [await freePort(), await freePort(), await freePort()]
  const nodes = await Promise.all(ports.map(async (port, i) => (await Child.start(`node-${i + 1}`, new URL('../scripts/cluster-node.ts', import.meta.url), {
    nodeArgs: ['--conditions=source'],
    env: { CLUSTER_NODE_ID: `node-${i + 1}`, CLUSTER_PORT: String(port), CLUSTER_REDIS_PORT: String(redis.port), CLUSTER_HEARTBEAT_MS: '1000', CLUSTER_NODE_TTL_MS: '5000' },
    readyTimeoutMs: 60_000,
  })).child))
  log(`redis-server on ${redis.port}, nodes on ${ports.join(', ')}`)

  const single = new Audience('bench:single')
  await single.open([ports[0]!], SUBS)
  const cross = new Audience('bench:cross')
  await cross.open([ports[1]!, ports[2]!], SUBS)
  const publishers: WebSocket[] = []
  for (let i = 0; i < PUBS; i++) publishers.push(await client(ports[0]!, `bench-pub${i}`, () => undefined))
  // Warm up both paths.
  for (const a of [single, cross]) await publish(publishers, a.channel, RATE, 500, 'warm')
  await sleep(500)

  const fig: Record<string, number[]> = { 'single-p50': [], 'single-p95': [], 'cross-p50': [], 'cross-p95': [], 'added-p50': [], 'added-p95': [] }
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 ? [single, cross] : [cross, single]
    const r: Record<string, { p50: number; p95: number; got: number }> = {}
    for (const a of order) {
      const phase = `r${round}`
      a.sink = { lat: [], phase }
      await publish(publishers, a.channel, RATE, N, phase)
      await sleep(500)
      const lat = a.sink.lat
      a.sink = undefined
      r[a === single ? 'single' : 'cross'] = { p50: percentile(lat, 50), p95: percentile(lat, 95), got: lat.length / (N * SUBS) }
    }
    const s = r.single!
    const c = r.cross!
    fig['single-p50']!.push(s.p50)
    fig['single-p95']!.push(s.p95)
    fig['cross-p50']!.push(c.p50)
    fig['cross-p95']!.push(c.p95)
    fig['added-p50']!.push(c.p50 - s.p50)
    fig['added-p95']!.push(c.p95 - s.p95)
    log(`round ${round}: single-node p50 ${s.p50.toFixed(2)} p95 ${s.p95.toFixed(2)} ms (${(s.got * 100).toFixed(1)} % delivered), cross-node p50 ${c.p50.toFixed(2)} p95 ${c.p95.toFixed(2)} ms (${(c.got * 100).toFixed(1)} % delivered)`)
  }

  // The highest rate to three nodes.
  const three = new Audience('bench:three')
  await three.open(ports, SUBS)
  const cpu = async () => {
    const info = await redisCli(redis.port, 'info', 'cpu')
    const redisS = Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1]) + Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1])
    const out: Record<string, number> = { redis: redisS * 1000 }
    for (const [i, n] of nodes.entries()) {
      const m = await n.request<{ cpu: { user: number; system: number } }>('metrics')
      out[`node-${i + 1}`] = (m.cpu.user + m.cpu.system) / 1000
    }
    const self = process.cpuUsage()
    out.clients = (self.user + self.system) / 1000
    return out
  }
  let maxRate = 0
  let limitedBy = `none up to ${MAXRATE.max}/s`
  for (let rate = MAXRATE.start; rate <= MAXRATE.max; rate = Math.round(rate * 1.5)) {
    const phase = `rate${rate}`
    const before = await cpu()
    const t = now()
    three.sink = { lat: [], phase }
    const count = Math.round((rate * MAXRATE.stepMs) / 1000)
    await publish(publishers, three.channel, rate, count, phase)
    await sleep(1000)
    const lat = three.sink.lat
    three.sink = undefined
    const after = await cpu()
    const wall = now() - t
    const use = Object.fromEntries(Object.keys(after).map((k) => [k, (after[k]! - before[k]!) / wall]))
    const p95 = percentile(lat, 95)
    const got = lat.length / (count * SUBS)
    const ok = p95 < MAXRATE.p95LimitMs && got >= 0.99
    log(`${rate} msg/s to 3 nodes: p50 ${percentile(lat, 50).toFixed(1)} p95 ${p95.toFixed(1)} ms, ${(got * 100).toFixed(1)} % delivered; CPU (cores): ${Object.entries(use).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')} ${ok ? '' : '← over the limit'}`)
    if (!ok) {
      const [busiest, share] = Object.entries(use).sort((a, b) => b[1] - a[1])[0]!
      const total = Object.values(use).reduce((a, b) => a + b, 0)
      const cores = os.cpus().length
      limitedBy = total >= 0.75 * cores
        ? `${busiest}-cpu(${share.toFixed(2)}-cores;this-run-${total.toFixed(2)}-of-${cores})`
        : `shared-machine(this-run-${total.toFixed(2)}-of-${cores}-cores;busiest-${busiest}-${share.toFixed(2)};load-${os.loadavg()[0]!.toFixed(1)})`
      break
    }
    maxRate = rate
    await sleep(500)
  }

  for (const ws of [...publishers, ...single.sockets, ...cross.sockets, ...three.sockets]) ws.close()
  await Promise.all(nodes.map((n) => n.request('close', {}, 5000).catch(() => n.kill())))
  await Promise.all(nodes.map((n) => n.stop(2000)))
  await redis.stop()

  const m = (k: string) => median(fig[k]!)
  const f = (x: number) => x.toFixed(2)
  console.log(`bench: latency-p50-ms single-node=${f(m('single-p50'))} cross-node=${f(m('cross-p50'))} added=${f(m('added-p50'))} (${RATE} msg/s × ${SUBS} subscribers, median of ${ROUNDS} rounds)`)
  console.log(`bench: latency-p95-ms single-node=${f(m('single-p95'))} cross-node=${f(m('cross-p95'))} added=${f(m('added-p95'))} (aim: added ≤ 2)`)
  console.log(`bench: max-rate-three-nodes=${maxRate} msg/s (p95 < ${MAXRATE.p95LimitMs} ms, ${SUBS} subscribers over 3 nodes) limited-by=${limitedBy}`)
  console.log(`bench-cluster: added-p50-ms=${f(m('added-p50'))} added-p95-ms=${f(m('added-p95'))} max-rate=${maxRate} limited-by=${limitedBy}`)
}

main().then(
  () => setTimeout(() => process.exit(0), 200),
  (err: unknown) => {
    console.error(err)
    killAllChildren()
    process.exit(2)
  },
)
