/**
 * Comparison benchmark: Tidings against raw `ws`, raw `ws` with one pre-built frame, and
 * Socket.IO 4.8, each server in its own process, loaded by lean clients in other processes,
 * over loopback. Systems alternate within every phase of every round (the order rotates each
 * round); figures are medians over rounds, ratios medians of per-round ratios.
 *
 *   pnpm bench          short run (≤ 5 minutes): CPU per delivery (1 channel × 1,000
 *                       subscribers), latency (100 subscribers × 500 msg/s), idle memory per
 *                       connection (2,000), connection set-up (300 sequential, bursts of 100)
 *   pnpm bench:full     adds idle memory at 10,000 and 15,000, the highest rate with p95 < 50 ms
 *                       (1,000 subscribers), and 100 subscriptions per connection
 *
 * Environment: ROUNDS, SYSTEMS (comma list), PHASES (mem,setup,cpu,latency,maxrate,multisub),
 * CPU_SUBS, CPU_RATE, CPU_N, LAT_SUBS, LAT_RATE, LAT_N, MEM_COUNTS, MAXRATE_SUBS, MAXRATE_START,
 * MAXRATE_MAX, PROFILE (a system name: its
 * server runs with --cpu-prof, profiles in bench/results/profiles/<system>-round<n>/; read them with
 * bench/profile-top.ts).
 *
 * Writes bench/results/latest.{json,md,svg} (custom.* when SYSTEMS or PHASES restrict the run); prints, last, one `bench: <figure> …` line per figure.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { Child, killAllChildren } from './lib/ipc.js'
import { median, percentile, sleep } from './lib/stats.js'

// ---------------------------------------------------------------- configuration

const FULL = process.argv.includes('--full')
const env = process.env
const num = (name: string, fallback: number) => (env[name] !== undefined && env[name] !== '' ? Number(env[name]) : fallback)
const ROUNDS = num('ROUNDS', 3)
const MEM_COUNTS = env['MEM_COUNTS'] ? env['MEM_COUNTS'].split(',').map(Number) : FULL ? [10_000, 15_000] : [2_000]
const CPU = { subs: num('CPU_SUBS', 1000), rate: num('CPU_RATE', 50), n: num('CPU_N', 150) }
const LAT = { subs: num('LAT_SUBS', 100), rate: num('LAT_RATE', 500), n: num('LAT_N', 1000) }
const SETUP = { sequential: num('SETUP_SEQ', 300), bursts: num('SETUP_BURSTS', 3), burst: num('SETUP_BURST', 100) }
const MAXRATE = { subs: num('MAXRATE_SUBS', 1000), start: num('MAXRATE_START', 25), stepMs: 1500, p95LimitMs: 50, maxRate: num('MAXRATE_MAX', 6400) }
const MULTI = { conns: num('MULTI_CONNS', 100), channels: num('MULTI_CHANNELS', 100), rate: num('MULTI_RATE', 200), n: num('MULTI_N', 600) }
const ALL_PHASES = FULL ? ['mem', 'setup', 'cpu', 'latency', 'maxrate', 'multisub'] : ['mem', 'setup', 'cpu', 'latency']
const PHASES = env['PHASES'] ? env['PHASES'].split(',') : ALL_PHASES
/** Whole-run backstop: everything is killed past it. */
const HARD_LIMIT_MS = num('HARD_LIMIT_MS', FULL ? 90 * 60_000 : 8 * 60_000)
const RESULTS = new URL('./results/', import.meta.url)
/** Runs restricted to some systems or phases write `custom.*`, so they never replace the run of record. */
const OUT = env['SYSTEMS'] || env['PHASES'] ? 'custom' : 'latest'

type ClientKind = 'ws' | 'tidings' | 'socketio' | 'sse'
interface SystemDef {
  readonly name: string
  readonly label: string
  readonly server: string
  readonly client: ClientKind
  readonly path: string
  readonly channel: string
  /** Channel names for the many-subscriptions case; `url`: joined through the connection URL (no protocol). */
  readonly multi: (i: number) => string
  readonly multiByUrl: boolean
  readonly ackEvery: number
}

const SYSTEM_DEFS: SystemDef[] = [
  { name: 'ws', label: 'raw ws (send loop)', server: 'ws.ts', client: 'ws', path: '/', channel: 'main', multi: (i) => `bench-${i}`, multiByUrl: true, ackEvery: 0 },
  { name: 'ws-preframed', label: 'raw ws, one pre-built frame', server: 'ws-preframed.ts', client: 'ws', path: '/', channel: 'main', multi: (i) => `bench-${i}`, multiByUrl: true, ackEvery: 0 },
  { name: 'socketio', label: 'Socket.IO 4.8 (websocket)', server: 'socketio.ts', client: 'socketio', path: '/socket.io/', channel: 'bench', multi: (i) => `bench-${i}`, multiByUrl: true, ackEvery: 0 },
  { name: 'tidings', label: 'Tidings ws, at-most-once', server: 'tidings.ts', client: 'tidings', path: '/realtime', channel: 'public:bench', multi: (i) => `public:bench-${i}`, multiByUrl: false, ackEvery: 0 },
  { name: 'tidings-alo', label: 'Tidings ws, at-least-once', server: 'tidings-alo.ts', client: 'tidings', path: '/realtime', channel: 'alo:bench', multi: (i) => `public:bench-${i}`, multiByUrl: false, ackEvery: 50 },
  { name: 'tidings-sse', label: 'Tidings SSE (reference)', server: 'tidings-sse.ts', client: 'sse', path: '/realtime', channel: 'public:bench', multi: (i) => `public:bench-${i}`, multiByUrl: false, ackEvery: 0 },
]
const SYSTEMS = env['SYSTEMS'] ? SYSTEM_DEFS.filter((s) => env['SYSTEMS']!.split(',').includes(s.name)) : SYSTEM_DEFS
const CLIENT_FILES: Record<ClientKind, string> = { ws: 'lean-ws.ts', tidings: 'lean-ws.ts', socketio: 'lean-socketio.ts', sse: 'lean-sse.ts' }

// ---------------------------------------------------------------- results

/** figure → system → one value per round. */
const results: Record<string, Record<string, number[]>> = {}
const figureInfo: Record<string, { unit: string; better: 'lower' | 'higher'; what: string }> = {}
const notes: string[] = []
const loads: Array<{ at: string; loadavg: number[] }> = []

function record(figure: string, system: string, value: number): void {
  if (!Number.isFinite(value)) return
  ;((results[figure] ??= {})[system] ??= []).push(value)
}
function describe(figure: string, unit: string, better: 'lower' | 'higher', what: string): void {
  figureInfo[figure] = { unit, better, what }
}
function noteLoad(at: string): void {
  loads.push({ at, loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100) })
}
const log = (...a: unknown[]) => console.log(`[${((Date.now() - startedAt) / 1000).toFixed(0).padStart(3)}s]`, ...a)

// ---------------------------------------------------------------- processes

const clients = new Map<string, Child>()
async function clientFor(kind: ClientKind): Promise<Child> {
  const file = CLIENT_FILES[kind]
  let c = clients.get(file)
  if (!c) {
    c = (await Child.start(file, new URL(`./clients/${file}`, import.meta.url))).child
    clients.set(file, c)
  }
  return c
}

interface Running {
  readonly def: SystemDef
  readonly child: Child
  readonly port: number
}

async function startServer(def: SystemDef, round: number): Promise<Running> {
  const nodeArgs = ['--expose-gc']
  if (env['PROFILE'] === def.name) {
    // One directory per server; the main thread's profile is the largest file in it (tsx's loader thread writes its own).
    const dir = new URL(`./profiles/${def.name}-round${round + 1}/`, RESULTS)
    mkdirSync(dir, { recursive: true })
    nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${dir.pathname}`)
  }
  const { child, ready } = await Child.start(`server ${def.name}`, new URL(`./servers/${def.server}`, import.meta.url), { nodeArgs })
  return { def, child, port: ready['port'] as number }
}

// ---------------------------------------------------------------- steps

interface OpenResult {
  opened: number
  failed: number
  firstError: string
  connectMs: number[]
  readyMs: number[]
}

async function open(s: Running, count: number, o: { channels?: string[]; urlChannels?: number; mode?: 'parallel' | 'sequential' | 'bursts'; width?: number } = {}): Promise<OpenResult> {
  const c = await clientFor(s.def.client)
  const spec = {
    kind: s.def.client,
    port: s.port,
    path: s.def.path,
    channels: o.channels ?? [],
    urlChannels: o.urlChannels ?? 0,
    ackEvery: s.def.ackEvery,
    timeoutMs: 15_000,
  }
  const totalTimeoutMs = Math.max(60_000, count * 20)
  const r = await c.request<OpenResult>('open', { spec, count, mode: o.mode ?? 'parallel', width: o.width ?? 100, totalTimeoutMs }, totalTimeoutMs + 20_000)
  if (r.failed > 0) notes.push(`${s.def.name}: ${r.failed} of ${count} connections failed (${r.firstError})`)
  return r
}

async function closeAll(s: Running): Promise<void> {
  const c = await clientFor(s.def.client)
  await c.request('close', { timeoutMs: 20_000 }, 40_000)
  // Until the server has seen every connection go (bounded).
  const end = Date.now() + 10_000
  for (;;) {
    const n = await s.child.request<{ connections: number }>('count', {})
    if (n.connections === 0) return
    if (Date.now() > end) {
      notes.push(`${s.def.name}: ${n.connections} connections still open on the server 10 s after closing`)
      return
    }
    await sleep(50)
  }
}

async function waitSubscribers(s: Running, channel: string, expected: number): Promise<number> {
  const end = Date.now() + 15_000
  for (;;) {
    const n = await s.child.request<{ subscribers: number }>('count', { channel })
    if (n.subscribers >= expected || Date.now() > end) return n.subscribers
    await sleep(50)
  }
}

interface PublishResult {
  sent: number
  subscribers: number
  cpuUserUs: number
  cpuSystemUs: number
  wallMs: number
  publishMs: number
  extra: Record<string, unknown>
}
interface Report {
  /** CPU of the client process during the run (µs): it must stay below the server's. */
  cpuUs: number
  frames: number
  acks: number
  samples: number[]
  errors: number
  lastError: string
  closedEarly: number
}

/** One publish run with the clients counting; returns the server's measurements and the clients' report. */
async function publishRun(s: Running, channels: string[], n: number, rate: number, expected: number): Promise<{ pub: PublishResult; rep: Report }> {
  const c = await clientFor(s.def.client)
  await c.request('reset')
  const runMs = (n / rate) * 1000
  const pub = await s.child.request<PublishResult>('publish', { channels, n, rate, settleMs: 200 }, runMs * 3 + 30_000)
  await c.request('wait', { expected, timeoutMs: 10_000, idleMs: 1_500 }, 20_000)
  const rep = await c.request<Report>('report', { flush: true })
  if (rep.errors > 0) notes.push(`${s.def.name}: client errors (${rep.errors}), last: ${rep.lastError}`)
  return { pub, rep }
}

async function warmUp(s: Running, channels: string[], subs: number): Promise<void> {
  await publishRun(s, channels, 50, 250, 50 * subs)
}

// ---------------------------------------------------------------- phases

async function phaseMem(s: Running): Promise<void> {
  const ch = [s.def.channel]
  // A few connections first, so one-time costs (code compiled on first use, lazily built tables) are not counted.
  await open(s, 20, { channels: ch })
  await closeAll(s)
  type Mem = { rss: number; heapUsed: number; external: number; connections: number; spaces: Record<string, number> }
  const base = await s.child.request<Mem>('mem', {}, 30_000)
  let have = 0
  for (const count of MEM_COUNTS) {
    const r = await open(s, count - have, { channels: ch })
    have += r.opened
    const subs = await waitSubscribers(s, s.def.channel, have)
    await sleep(300)
    const after = await s.child.request<Mem>('mem', {}, 30_000)
    if (subs < count) notes.push(`${s.def.name}: memory at ${count}: only ${subs} subscribed`)
    record(`idle-rss-kb-per-conn@${count}`, s.def.name, (after.rss - base.rss) / 1024 / have)
    record(`idle-heap-kb-per-conn@${count}`, s.def.name, (after.heapUsed + after.external - base.heapUsed - base.external) / 1024 / have)
    // V8's young generation grows with the allocation rate while connections open and stays
    // committed after gc(): a fixed cost (tens of MB at most), not memory the connections hold.
    const young = (after.spaces['new_space'] ?? 0) - (base.spaces['new_space'] ?? 0)
    record(`idle-rss-old-kb-per-conn@${count}`, s.def.name, (after.rss - base.rss - young) / 1024 / have)
    describe(`idle-rss-old-kb-per-conn@${count}`, 'KB', 'lower', `the same RSS less the growth of V8's young generation (committed, empty after gc(), not per connection)`)
    describe(`idle-rss-kb-per-conn@${count}`, 'KB', 'lower', `server RSS per idle subscribed connection, ${count} connections, after gc()`)
    describe(`idle-heap-kb-per-conn@${count}`, 'KB', 'lower', `server heapUsed + external per idle subscribed connection, ${count} connections, after gc()`)
    log(`  mem ${s.def.name} @${count}: rss ${((after.rss - base.rss) / 1024 / have).toFixed(2)} KB/conn (${((after.rss - base.rss - young) / 1024 / have).toFixed(2)} less the young generation), heap+ext ${((after.heapUsed + after.external - base.heapUsed - base.external) / 1024 / have).toFixed(2)} KB/conn`)
  }
  await closeAll(s)
}

/**
 * Start a phase from a collected heap: closing the previous phase's connections leaves garbage
 * whose collection would otherwise land in this phase's measurements (the server's 'mem' request
 * runs gc() three times).
 */
async function settle(s: Running): Promise<void> {
  await s.child.request('mem', {}, 30_000)
}

async function phaseSetup(s: Running): Promise<void> {
  await settle(s)
  const seq = await open(s, SETUP.sequential, { mode: 'sequential' })
  await closeAll(s)
  const burst = await open(s, SETUP.bursts * SETUP.burst, { mode: 'bursts', width: SETUP.burst })
  await closeAll(s)
  record('setup-seq-p50-ms', s.def.name, percentile(seq.connectMs, 50))
  record('setup-seq-p95-ms', s.def.name, percentile(seq.connectMs, 95))
  record('setup-burst-p50-ms', s.def.name, percentile(burst.connectMs, 50))
  record('setup-burst-p95-ms', s.def.name, percentile(burst.connectMs, 95))
  describe('setup-seq-p50-ms', 'ms', 'lower', `connection set-up (connect → protocol "connected"), ${SETUP.sequential} one after another, p50`)
  describe('setup-seq-p95-ms', 'ms', 'lower', `the same, p95`)
  describe('setup-burst-p50-ms', 'ms', 'lower', `connection set-up in bursts of ${SETUP.burst} started together (${SETUP.bursts} bursts), p50`)
  describe('setup-burst-p95-ms', 'ms', 'lower', `the same, p95`)
  log(`  setup ${s.def.name}: seq p50 ${percentile(seq.connectMs, 50).toFixed(2)} p95 ${percentile(seq.connectMs, 95).toFixed(2)} ms; bursts p50 ${percentile(burst.connectMs, 50).toFixed(2)} p95 ${percentile(burst.connectMs, 95).toFixed(2)} ms`)
}

async function phaseFanout(s: Running, kind: 'cpu' | 'latency'): Promise<void> {
  const cfg = kind === 'cpu' ? CPU : LAT
  const ch = [s.def.channel]
  await settle(s)
  const r = await open(s, cfg.subs, { channels: ch })
  const subs = await waitSubscribers(s, s.def.channel, r.opened)
  await warmUp(s, ch, subs)
  const { pub, rep } = await publishRun(s, ch, cfg.n, cfg.rate, cfg.n * subs)
  await closeAll(s)
  const deliveries = pub.sent * pub.subscribers
  const cpuPer = (pub.cpuUserUs + pub.cpuSystemUs) / deliveries
  const complete = rep.frames / deliveries
  if (complete < 0.999) notes.push(`${s.def.name} ${kind}: ${rep.frames} of ${deliveries} deliveries arrived (round ${round + 1})`)
  const extra = pub.extra as { redelivered?: number; dropped?: number; failures?: number }
  if (extra.redelivered || extra.dropped || extra.failures) notes.push(`${s.def.name} ${kind}: server reports ${JSON.stringify(extra)}`)
  const p = (q: number) => percentile(rep.samples, q)
  record(`${kind}-client-cpu-us-per-delivery`, s.def.name, rep.cpuUs / deliveries)
  describe(`${kind}-client-cpu-us-per-delivery`, 'µs', 'lower', `CPU of the load generator per delivery in the ${kind} run (it must stay below the server's)`)
  if (kind === 'cpu') {
    record('cpu-us-per-delivery', s.def.name, cpuPer)
    record('cpu-user-us-per-delivery', s.def.name, pub.cpuUserUs / deliveries)
    record('cpu-system-us-per-delivery', s.def.name, pub.cpuSystemUs / deliveries)
    describe('cpu-user-us-per-delivery', 'µs', 'lower', 'of which user time (JavaScript, V8, Node internals)')
    describe('cpu-system-us-per-delivery', 'µs', 'lower', 'of which system time (the kernel: socket writes, on loopback including the receive path)')
    record('fanout1000-latency-p50-ms', s.def.name, p(50))
    record('fanout1000-latency-p95-ms', s.def.name, p(95))
    describe('cpu-us-per-delivery', 'µs', 'lower', `server CPU (user + system, all threads) per delivered message, 1 channel × ${CPU.subs} subscribers, ${CPU.rate} msg/s × ${CPU.n}`)
    describe('fanout1000-latency-p50-ms', 'ms', 'lower', `latency in the same run (${CPU.subs} subscribers × ${CPU.rate} msg/s), p50`)
    describe('fanout1000-latency-p95-ms', 'ms', 'lower', `the same, p95`)
  } else {
    record('latency-p50-ms', s.def.name, p(50))
    record('latency-p95-ms', s.def.name, p(95))
    record('latency-p99-ms', s.def.name, p(99))
    record('latency-cpu-us-per-delivery', s.def.name, cpuPer)
    describe('latency-p50-ms', 'ms', 'lower', `publish → client read, ${LAT.subs} subscribers × ${LAT.rate} msg/s × ${LAT.n}, 1 in 100 sampled, p50`)
    describe('latency-p95-ms', 'ms', 'lower', 'the same, p95')
    describe('latency-p99-ms', 'ms', 'lower', 'the same, p99')
    describe('latency-cpu-us-per-delivery', 'µs', 'lower', `server CPU per delivery in the latency run (${LAT.subs} subscribers)`)
  }
  log(
    `  ${kind} ${s.def.name}: ${cpuPer.toFixed(2)} µs/delivery (user ${(pub.cpuUserUs / deliveries).toFixed(2)}, system ${(pub.cpuSystemUs / deliveries).toFixed(2)}; ${pub.subscribers} subs, ${pub.sent} msgs, wall ${pub.wallMs.toFixed(0)} ms), ` +
      `client ${(rep.cpuUs / deliveries).toFixed(2)} µs/delivery, delivered ${(complete * 100).toFixed(1)}%, latency p50 ${p(50).toFixed(2)} p95 ${p(95).toFixed(2)} p99 ${p(99).toFixed(2)} ms (${rep.samples.length} samples)${rep.acks > 0 ? `, ${rep.acks} acks sent` : ''}`,
  )
}

async function phaseMaxRate(s: Running): Promise<void> {
  const ch = [s.def.channel]
  const r = await open(s, MAXRATE.subs, { channels: ch })
  const subs = await waitSubscribers(s, s.def.channel, r.opened)
  await warmUp(s, ch, subs)
  const tryRate = async (rate: number) => {
    const n = Math.max(20, Math.round((rate * MAXRATE.stepMs) / 1000))
    const { pub, rep } = await publishRun(s, ch, n, rate, n * subs)
    const p95 = percentile(rep.samples, 95)
    // Kept up: every message delivered, p95 under the limit, and the publisher not slowed down (its
    // event loop is the server's: a saturated server stretches the run).
    const complete = rep.frames >= 0.999 * pub.sent * pub.subscribers
    const paced = pub.publishMs < (n / rate) * 1000 * 1.2 + 50
    const ok = complete && paced && p95 < MAXRATE.p95LimitMs
    const why = ok ? 'ok' : `over (${[!complete && 'lost', !paced && `publisher lagged: ${pub.publishMs.toFixed(0)} ms for ${((n / rate) * 1000).toFixed(0)}`, p95 >= MAXRATE.p95LimitMs && 'p95'].filter(Boolean).join(', ')})`
    log(`    ${s.def.name} @${rate} msg/s: p95 ${p95.toFixed(1)} ms, delivered ${((rep.frames / (pub.sent * pub.subscribers)) * 100).toFixed(1)}% → ${why}`)
    return ok
  }
  // One noisy step (a GC pause, another process) must not end the search: a rate is over only if it fails twice.
  const holds = async (rate: number) => (await tryRate(rate)) || (await tryRate(rate))
  let good = 0
  let bad = 0
  for (let rate = MAXRATE.start; rate <= MAXRATE.maxRate; rate *= 2) {
    if (await holds(rate)) good = rate
    else {
      bad = rate
      break
    }
  }
  // Two bisection steps between the last rate that kept p95 under the limit and the first that did not.
  for (let i = 0; i < 2 && bad > 0 && good > 0; i++) {
    const mid = Math.round((good + bad) / 2)
    if (await holds(mid)) good = mid
    else bad = mid
  }
  await closeAll(s)
  record('max-rate-msg-per-s', s.def.name, good)
  record('max-rate-deliveries-per-s', s.def.name, good * subs)
  describe('max-rate-msg-per-s', 'msg/s', 'higher', `highest publish rate to one channel of ${MAXRATE.subs} subscribers keeping p95 < ${MAXRATE.p95LimitMs} ms and every message delivered`)
  describe('max-rate-deliveries-per-s', 'deliveries/s', 'higher', 'the same, in deliveries per second')
}

async function phaseMulti(s: Running): Promise<void> {
  const names = Array.from({ length: MULTI.channels }, (_, i) => s.def.multi(i))
  const r = s.def.multiByUrl ? await open(s, MULTI.conns, { urlChannels: MULTI.channels, width: 20 }) : await open(s, MULTI.conns, { channels: names, width: 20 })
  const subs = await waitSubscribers(s, names[names.length - 1]!, r.opened)
  await publishRun(s, names, 100, 500, 100 * subs) // warm-up
  const { pub, rep } = await publishRun(s, names, MULTI.n, MULTI.rate, MULTI.n * subs)
  await closeAll(s)
  // Subscribers of the first channel, as measured; every channel has the same members.
  const deliveries = pub.sent * subs
  record('multisub-cpu-us-per-delivery', s.def.name, (pub.cpuUserUs + pub.cpuSystemUs) / deliveries)
  record('multisub-latency-p95-ms', s.def.name, percentile(rep.samples, 95))
  describe('multisub-cpu-us-per-delivery', 'µs', 'lower', `server CPU per delivery, ${MULTI.conns} connections × ${MULTI.channels} subscriptions each, ${MULTI.rate} msg/s round-robin over the channels`)
  describe('multisub-latency-p95-ms', 'ms', 'lower', 'latency p95 in the same run')
  log(`  multisub ${s.def.name}: ${((pub.cpuUserUs + pub.cpuSystemUs) / deliveries).toFixed(2)} µs/delivery, delivered ${((rep.frames / deliveries) * 100).toFixed(1)}%, p95 ${percentile(rep.samples, 95).toFixed(2)} ms`)
}

// ---------------------------------------------------------------- main

const startedAt = Date.now()
let round = 0

async function main(): Promise<void> {
  noteLoad('start')
  log(`bench: ${FULL ? 'full' : 'short'} run, ${ROUNDS} rounds, systems ${SYSTEMS.map((s) => s.name).join(' ')}, phases ${PHASES.join(' ')}; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} on ${os.cpus().length} CPUs`)
  for (round = 0; round < ROUNDS; round++) {
    // Fresh servers every round (memory is measured first, on a fresh process); the order rotates.
    const order = SYSTEMS.map((_, i) => SYSTEMS[(i + round) % SYSTEMS.length]!)
    log(`round ${round + 1}/${ROUNDS}: ${order.map((s) => s.name).join(' → ')}`)
    const servers = await Promise.all(order.map((d) => startServer(d, round)))
    try {
      for (const phase of PHASES) {
        noteLoad(`round ${round + 1} ${phase}`)
        for (const s of servers) {
          if (phase === 'mem') await phaseMem(s)
          else if (phase === 'setup') await phaseSetup(s)
          else if (phase === 'cpu') await phaseFanout(s, 'cpu')
          else if (phase === 'latency') await phaseFanout(s, 'latency')
          else if (phase === 'maxrate') await phaseMaxRate(s)
          else if (phase === 'multisub') await phaseMulti(s)
        }
      }
    } finally {
      await Promise.all(servers.map((s) => s.child.stop()))
    }
  }
  noteLoad('end')
  for (const c of clients.values()) await c.stop()
  output()
}

// ---------------------------------------------------------------- output

const MAIN = ['tidings', 'ws', 'ws-preframed', 'socketio'] as const
const fmt = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? 'n/a' : Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2))

function ratio(figure: string, a: string, b: string): number {
  const xs = results[figure]?.[a] ?? []
  const ys = results[figure]?.[b] ?? []
  const per: number[] = []
  for (let i = 0; i < Math.min(xs.length, ys.length); i++) per.push(xs[i]! / ys[i]!)
  return median(per)
}
const med = (figure: string, system: string) => {
  const xs = results[figure]?.[system]
  return xs && xs.length > 0 ? median(xs) : undefined
}

interface Aim {
  readonly figure: string
  readonly system: string
  readonly vs: string
  readonly max: number
}
const AIMS: Aim[] = [
  { figure: 'cpu-us-per-delivery', system: 'tidings', vs: 'ws-preframed', max: 1.1 },
  { figure: 'cpu-us-per-delivery', system: 'tidings', vs: 'socketio', max: 0.6 },
  { figure: 'cpu-us-per-delivery', system: 'tidings-alo', vs: 'ws-preframed', max: 1.5 },
  ...MEM_COUNTS.flatMap((n) => [
    { figure: `idle-rss-kb-per-conn@${n}`, system: 'tidings', vs: 'ws', max: 1.25 },
    { figure: `idle-rss-old-kb-per-conn@${n}`, system: 'tidings', vs: 'ws', max: 1.25 },
  ]),
  { figure: 'latency-p95-ms', system: 'tidings', vs: 'ws', max: 1.2 },
  { figure: 'setup-seq-p95-ms', system: 'tidings', vs: 'ws', max: 1.5 },
  { figure: 'setup-burst-p95-ms', system: 'tidings', vs: 'ws', max: 1.5 },
]

function output(): void {
  mkdirSync(RESULTS, { recursive: true })
  const figures = Object.keys(results)
  const systems = SYSTEMS.map((s) => s.name)
  const when = new Date().toISOString()
  const aims = AIMS.filter((a) => results[a.figure]?.[a.system] && results[a.figure]?.[a.vs]).map((a) => {
    const r = ratio(a.figure, a.system, a.vs)
    return { ...a, ratio: r, met: r <= a.max }
  })

  const json = {
    when,
    mode: FULL ? 'full' : 'short',
    node: process.version,
    cpus: os.cpus().length,
    rounds: ROUNDS,
    config: { CPU, LAT, SETUP, MEM_COUNTS, ...(FULL ? { MAXRATE, MULTI } : {}) },
    loadavg: loads,
    figures: Object.fromEntries(
      figures.map((f) => [
        f,
        {
          ...figureInfo[f],
          median: Object.fromEntries(systems.map((s) => [s, med(f, s) ?? null])),
          perRound: results[f],
          ratioVsWsPreframed: ratio(f, 'tidings', 'ws-preframed'),
          ratioVsSocketio: ratio(f, 'tidings', 'socketio'),
          ratioVsWs: ratio(f, 'tidings', 'ws'),
        },
      ]),
    ),
    aims,
    notes,
    elapsedS: Math.round((Date.now() - startedAt) / 1000),
  }
  writeFileSync(new URL(`${OUT}.json`, RESULTS), `${JSON.stringify(json, null, 2)}\n`)

  const lines: string[] = []
  lines.push(`# Comparison benchmark (${FULL ? 'full' : 'short'} run)`, '')
  lines.push(`${when} · Node ${process.version} · ${os.cpus().length} CPUs · ${ROUNDS} rounds, systems alternating (order rotated each round), medians; ratios are medians of per-round ratios. Loopback; each server in its own process, lean clients in others.`, '')
  lines.push(`Load average (1/5/15 min, all processes of the machine): ${loads.map((l) => `${l.at}: ${l.loadavg.join('/')}`).join(' · ')}`, '')
  lines.push(`| figure | unit | ${systems.join(' | ')} | tidings ÷ ws-preframed | tidings ÷ socketio | tidings ÷ ws |`)
  lines.push(`|---|---|${systems.map(() => '---:').join('|')}|---:|---:|---:|`)
  for (const f of figures) {
    const info = figureInfo[f]!
    lines.push(`| ${f} | ${info.unit} | ${systems.map((s) => fmt(med(f, s))).join(' | ')} | ${fmt(ratio(f, 'tidings', 'ws-preframed'))} | ${fmt(ratio(f, 'tidings', 'socketio'))} | ${fmt(ratio(f, 'tidings', 'ws'))} |`)
  }
  lines.push('', '## Figures', '')
  for (const f of figures) lines.push(`- \`${f}\` (${figureInfo[f]!.better} is better): ${figureInfo[f]!.what}.`)
  lines.push('', '## Aims', '')
  for (const a of aims) lines.push(`- ${a.met ? 'met' : '**not met**'}: ${a.figure} ${a.system} ÷ ${a.vs} = ${fmt(a.ratio)} (aim ≤ ${a.max})`)
  lines.push('', '## Systems', '')
  for (const s of SYSTEMS) lines.push(`- \`${s.name}\`: ${s.label} (bench/servers/${s.server})`)
  if (notes.length > 0) lines.push('', '## Notes', '', ...notes.map((n) => `- ${n}`))
  lines.push('', `![chart](${OUT}.svg)`, '')
  writeFileSync(new URL(`${OUT}.md`, RESULTS), lines.join('\n'))
  writeFileSync(new URL(`${OUT}.svg`, RESULTS), chart(systems))

  console.log('')
  console.log(lines.slice(4, 6 + figures.length).join('\n'))
  console.log('')
  for (const a of aims) console.log(`aim ${a.met ? 'met' : 'NOT met'}: ${a.figure} ${a.system}/${a.vs} = ${fmt(a.ratio)} (≤ ${a.max})`)
  for (const n of notes) console.log(`note: ${n}`)
  console.log(`results: bench/results/${OUT}.md, ${OUT}.json, ${OUT}.svg (${json.elapsedS} s)`)
  for (const f of figures) {
    const vals = MAIN.map((s) => `${s}=${fmt(med(f, s))}`).join(' ')
    console.log(`bench: ${f} ${vals} ratio-vs-ws-preframed=${fmt(ratio(f, 'tidings', 'ws-preframed'))} ratio-vs-socketio=${fmt(ratio(f, 'tidings', 'socketio'))}`)
  }
}

/** Two bar groups, hand-written SVG: µs of server CPU per delivery, and latency p95, per system. */
function chart(systems: string[]): string {
  const colors: Record<string, string> = { ws: '#8c8c8c', 'ws-preframed': '#595959', socketio: '#d98c1f', tidings: '#2b6cb0', 'tidings-alo': '#4f8fd6', 'tidings-sse': '#9cc3ea' }
  const panels = [
    { figure: 'cpu-us-per-delivery', title: 'Server CPU per delivery (µs), 1 channel × 1,000 subscribers' },
    { figure: 'latency-p95-ms', title: `Latency p95 (ms), ${LAT.subs} subscribers × ${LAT.rate} msg/s` },
  ]
  const W = 720
  const rowH = 22
  const panelH = 40 + systems.length * rowH + 20
  const labelW = 120
  const barW = W - labelW - 90
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;')
  let y = 10
  const parts: string[] = []
  for (const p of panels) {
    const vals = systems.map((s) => med(p.figure, s) ?? 0)
    const max = Math.max(...vals, 1e-9)
    parts.push(`<text x="10" y="${y + 20}" font-size="14" font-weight="bold">${esc(p.title)}</text>`)
    systems.forEach((s, i) => {
      const v = vals[i]!
      const by = y + 34 + i * rowH
      const w = Math.max(1, (v / max) * barW)
      parts.push(`<text x="${labelW - 8}" y="${by + 14}" font-size="12" text-anchor="end">${esc(s)}</text>`)
      parts.push(`<rect x="${labelW}" y="${by}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${colors[s] ?? '#777'}"/>`)
      parts.push(`<text x="${(labelW + w + 6).toFixed(1)}" y="${by + 13}" font-size="12">${v > 0 ? esc(fmt(v)) : 'n/a'}</text>`)
    })
    y += panelH
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y + 10}" viewBox="0 0 ${W} ${y + 10}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${parts.join('\n')}\n</svg>\n`
}

// ---------------------------------------------------------------- stopping

const hardStop = setTimeout(() => {
  console.error(`bench: hard limit of ${HARD_LIMIT_MS / 1000} s reached; stopping every process`)
  killAllChildren()
  process.exit(3)
}, HARD_LIMIT_MS)
hardStop.unref()
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    killAllChildren()
    process.exit(130)
  })
}

main().then(
  () => {
    clearTimeout(hardStop)
    process.exit(0)
  },
  (err: unknown) => {
    console.error('bench failed:', err)
    killAllChildren()
    process.exit(1)
  },
)
