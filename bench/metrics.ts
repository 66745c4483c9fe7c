/**
 * What metrics cost the hot path. The same in-memory fan-out (one channel; 10,000 subscribers,
 * and 10 subscribers where the per-publish part weighs most) runs on:
 *
 *   base        the core before the metrics of #13 (extracted from git at BASE_REF, default
 *               8413df9^; skipped when git or the ref is not there). Other work on the core since
 *               then is in the difference too;
 *   no-record   the current core with the per-publish recording switched off (a copy of
 *               packages/core/src whose Metrics.start/delivered do nothing): the cost of the
 *               publish latency histogram and the channel analytics alone;
 *   hub         the current core (every counter, both histograms, the analytics), a copy of
 *               packages/core/src like the two above,
 *   hub+scrape  the current core (the workspace package) while a prom-client registry (`createMetricsRegistry`) is
 *               scraped every SCRAPE_MS (default 100 ms, 150 times Prometheus's default rate),
 *               in the same thread, between publishes.
 *
 * Rounds interleave the variants (tinybench, TIME_MS each) and medians over rounds are printed,
 * with per-round ratios (noise on this shared machine cancels within a round). Last lines:
 *   metrics: subscribers=<n> hub-vs-base=<r> hub-vs-no-record=<r> scrape-vs-hub=<r>
 * (throughput ratios: 1.000 is no cost, 0.980 is 2 % fewer deliveries per second), then what the
 * scrapes themselves take: median ms per scrape and the share of one core at SCRAPE_MS and at
 * Prometheus's default 15 s. Throughput is from the median time per publish (robust on a shared
 * machine), so a scrape, which runs between two publishes, shows in its own line, not in it.
 *
 *   pnpm exec tsx --conditions=source bench/metrics.ts
 */
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Bench } from 'tinybench'
import * as current from '@tidings/core'
import type { ConnectionHandle, Hub, Outbound, Session } from '@tidings/core'
import { createMetricsRegistry } from '@tidings/http'

const ROUNDS = Number(process.env.ROUNDS ?? 7)
const TIME_MS = Number(process.env.TIME_MS ?? 400)
const SCRAPE_MS = Number(process.env.SCRAPE_MS ?? 100)
const BASE_REF = process.env.BASE_REF ?? '8413df9^'
const SIZES = (process.env.SIZES ?? '10000,10').split(',').map(Number)
const payload = { text: 'hello, world', n: 42, tags: ['a', 'b'] }

type Core = Pick<typeof current, 'createHub' | 'silentLogger'>

/** A session that does what a socket write costs at the least: keep a reference and count bytes. */
class SinkSession implements Session {
  readonly transport = 'bench'
  readonly headers = {}
  constructor(private readonly sink: { bytes: number }) {}
  send(frame: Outbound): boolean {
    this.sink.bytes += frame.bytes
    return true
  }
  bufferedAmount(): number {
    return 0
  }
  close(): void {}
}

async function hubWith(core: Core, subscribers: number): Promise<{ hub: Hub; sink: { bytes: number }; handles: ConnectionHandle[] }> {
  const hub = core.createHub({ logger: core.silentLogger, limits: { maxConnectionsPerUser: subscribers + 1 } }) as Hub
  const sink = { bytes: 0 }
  const handles: ConnectionHandle[] = []
  for (let i = 0; i < subscribers; i++) {
    const handle = await hub.connect(new SinkSession(sink), { identity: { userId: `u${i}` } })
    handle.receive(JSON.stringify({ type: 'subscribe', channel: 'public:bench' }))
    handles.push(handle)
  }
  await new Promise((r) => setTimeout(r, 20))
  if (hub.metrics().subscriptionsByChannel['public:bench'] !== subscribers) throw new Error('subscriptions missing')
  return { hub, sink, handles }
}

/** The core at BASE_REF, extracted next to this checkout's dependencies; undefined when it cannot be had. */
async function baseCore(): Promise<{ core: Core; sha: string } | undefined> {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', BASE_REF], { encoding: 'utf8' }).trim()
    const dir = join(tmpdir(), `tidings-bench-base-${sha}`)
    if (!existsSync(join(dir, 'packages/core/src/index.ts'))) {
      mkdirSync(dir, { recursive: true })
      const archive = execFileSync('git', ['archive', sha, 'packages/core/src'], { maxBuffer: 64 * 1024 * 1024 })
      execFileSync('tar', ['-x', '-C', dir], { input: archive })
    }
    // Its imports (@tidings/protocol, eventemitter3, lru-cache) resolve as the current core's do.
    const modules = join(dir, 'packages/core/node_modules')
    if (!existsSync(modules)) symlinkSync(join(process.cwd(), 'packages/core/node_modules'), modules)
    const core = (await import(pathToFileURL(join(dir, 'packages/core/src/index.ts')).href)) as Core
    return { core, sha }
  } catch (err) {
    console.log(`base: not measured (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`)
    return undefined
  }
}

/**
 * A copy of the current core (its own module instance, so its code is compiled and optimized on
 * its own, as every other variant's is); with `noRecord`, Metrics.start/delivered do nothing.
 */
async function copyOfCore(name: string, noRecord: boolean): Promise<Core> {
  const dir = join(tmpdir(), `tidings-bench-${name}-${process.pid}`)
  mkdirSync(join(dir, 'packages/core'), { recursive: true })
  cpSync(join(process.cwd(), 'packages/core/src'), join(dir, 'packages/core/src'), { recursive: true })
  const file = join(dir, 'packages/core/src/hub/metrics.ts')
  const src = readFileSync(file, 'utf8')
  const patched = src.replace(/  start\(\): number \{[^}]*\}/, '  start(): number {\n    return 0\n  }').replace(/  delivered\(channel: string, start: number, now: number\): void \{[^}]*\}/, '  delivered(_channel: string, _start: number, _now: number): void {}')
  if (patched === src || !patched.includes('return 0')) throw new Error('no-record: Metrics.start/delivered not found')
  if (noRecord) writeFileSync(file, patched)
  symlinkSync(join(process.cwd(), 'packages/core/node_modules'), join(dir, 'packages/core/node_modules'))
  return (await import(pathToFileURL(join(dir, 'packages/core/src/index.ts')).href)) as Core
}

/**
 * The recording alone, without a hub around it: what one publish adds (a high-resolution time at
 * its start, the latency histogram, the channel's activity and hour) and what one connection
 * adds (opened and closed: per transport, peak, close code, duration histogram, the user's engagement).
 */
async function recordingCost(): Promise<void> {
  const { Metrics } = (await import(pathToFileURL(join(tmpdir(), `tidings-bench-hub-${process.pid}`, 'packages/core/src/hub/metrics.ts')).href)) as {
    Metrics: new () => { start(): number; delivered(channel: string, start: number, now: number): void; connectionOpened(t: string, u: string | undefined, now: number): void; connectionClosed(t: string, u: string | undefined, code: number, at: number, sent: number, now: number): void }
  }
  const m = new Metrics()
  const channels = Array.from({ length: 100 }, (_, i) => `public:c${i}`)
  const users = Array.from({ length: 1000 }, (_, i) => `u${i}`)
  const N = 2_000_000
  const perOp: Record<string, number[]> = { publish: [], connection: [] }
  for (let round = 0; round < ROUNDS; round++) {
    let t0 = performance.now()
    const at = Date.now()
    for (let i = 0; i < N; i++) m.delivered(channels[i % 100]!, m.start(), at)
    perOp.publish!.push(((performance.now() - t0) * 1e6) / N)
    const now = Date.now()
    t0 = performance.now()
    for (let i = 0; i < N / 10; i++) {
      m.connectionOpened('ws', users[i % 1000], now)
      m.connectionClosed('ws', users[i % 1000], 1000, now - 60_000, 3, now)
    }
    perOp.connection!.push(((performance.now() - t0) * 1e6) / (N / 10))
  }
  console.log(`recording alone (median of ${ROUNDS}): ${median(perOp.publish!).toFixed(0)} ns per publish (start + delivered, 100 channels); ${median(perOp.connection!).toFixed(0)} ns per connection (opened + closed, 1,000 users)`)
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

const fmt = (x: number) => Math.round(x).toLocaleString('en-US')

async function main() {
  const base = await baseCore()
  const noRecord = await copyOfCore('no-record', true)
  const recording = await copyOfCore('hub', false)
  await recordingCost()
  console.log(`node ${process.version}; rounds=${ROUNDS} time=${TIME_MS} ms; scrape every ${SCRAPE_MS} ms; base=${base ? `${BASE_REF} (${base.sha})` : 'none'}`)
  const summary: string[] = []
  for (const subscribers of SIZES) {
    const variants: Array<{ name: string; hub: Hub; sink: { bytes: number } }> = []
    if (base) variants.push({ name: 'base', ...(await hubWith(base.core, subscribers)) })
    variants.push({ name: 'no-record', ...(await hubWith(noRecord, subscribers)) })
    variants.push({ name: 'hub', ...(await hubWith(recording, subscribers)) })
    const scraped = await hubWith(current, subscribers)
    variants.push({ name: 'hub+scrape', ...scraped })
    const registry = createMetricsRegistry(scraped.hub, { channelLabels: 10 })
    let scrapes = 0
    const scrapeMs: number[] = []
    let nextScrape = 0
    /** A scrape when one is due: in the same thread, between publishes, as a server's would be. */
    const scrape = async () => {
      const now = performance.now()
      nextScrape = now + SCRAPE_MS
      await registry.metrics()
      scrapeMs.push(performance.now() - now)
      scrapes++
    }

    const perRound: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v.name, []]))
    for (let round = 0; round < ROUNDS; round++) {
      const bench = new Bench({ time: TIME_MS, warmupTime: 100 })
      // The order rotates each round, so no variant always runs first (or last) on a warm or busy machine.
      const order = variants.map((_, i) => variants[(i + round) % variants.length]!)
      for (const v of order) {
        bench.add(
          v.name,
          v.name === 'hub+scrape'
            ? async () => {
                await v.hub.publish('public:bench', 'tick', payload)
                if (performance.now() >= nextScrape) await scrape()
              }
            : async () => {
                await v.hub.publish('public:bench', 'tick', payload)
              },
        )
      }
      await bench.run()
      for (const task of bench.tasks) {
        const r = task.result
        if (r.state !== 'completed') throw new Error(`${task.name}: ${r.state}`)
        perRound[task.name]!.push((subscribers * 1000) / r.latency.p50!)
      }
    }
    for (const v of variants) if (v.sink.bytes === 0) throw new Error(`${v.name}: nothing delivered`)
    const ratio = (a: string, b: string) => median(perRound[a]!.map((x, i) => x / perRound[b]![i]!))
    console.log(`\nsubscribers=${subscribers} (deliveries/s from the median time per publish, median of ${ROUNDS} rounds; per round in brackets)`)
    for (const v of variants) console.log(`  ${v.name.padEnd(11)} ${fmt(median(perRound[v.name]!)).padStart(12)}   [${perRound[v.name]!.map(fmt).join(', ')}]`)
    const m = scraped.hub.metrics()
    const perScrape = median(scrapeMs)
    console.log(`  scrapes: ${scrapes}, median ${perScrape.toFixed(3)} ms each (max ${Math.max(...scrapeMs).toFixed(2)} ms): ${((perScrape / SCRAPE_MS) * 100).toFixed(3)} % of a core every ${SCRAPE_MS} ms, ${((perScrape / 15_000) * 100).toFixed(4)} % at a 15 s scrape interval`)
    console.log(`  hub's own publish latency histogram: ${m.publishLatency.count} publishes, mean ${((m.publishLatency.sum / Math.max(1, m.publishLatency.count)) * 1e6).toFixed(1)} µs`)
    const hubVsBase = base ? ratio('hub', 'base').toFixed(3) : 'n/a'
    summary.push(`metrics: subscribers=${subscribers} hub-vs-base=${hubVsBase} hub-vs-no-record=${ratio('hub', 'no-record').toFixed(3)} scrape-vs-hub=${ratio('hub+scrape', 'hub').toFixed(3)}`)
    for (const v of variants) await v.hub.close()
  }
  for (const name of ['no-record', 'hub']) rmSync(join(tmpdir(), `tidings-bench-${name}-${process.pid}`), { recursive: true, force: true })
  console.log('')
  for (const line of summary) console.log(line)
}

await main()
