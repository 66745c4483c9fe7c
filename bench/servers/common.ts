/**
 * What every server under test shares: an `http.Server` on loopback, a paced publisher that
 * measures the process's CPU (`process.cpuUsage()`, all threads) and wall time around a run,
 * and memory readings after `global.gc()` (servers start with --expose-gc).
 *
 * Requests (from bench/run.ts): `publish { channels, n, rate, settleMs }`, `count { channel }`,
 * `mem`, `snapshot { file }`, `extra`, `exit`. The payload of message i is `{ text, seq: i, t }`, `t` being the monotonic
 * clock in ms when it was published (clients compute latency from it).
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serveRequests } from '../lib/ipc.js'
import { monoMs, sleep } from '../lib/stats.js'

export interface Payload {
  readonly text: string
  readonly seq: number
  readonly t: number
}

export interface SystemServer {
  /** Publish one message to every subscriber of `channel`. */
  publish(channel: string, data: Payload): void
  /** Subscribers of `channel` as the server sees them. */
  subscribers(channel: string): number
  /** Open connections. */
  connections(): number
  /** Anything worth reporting after a run (counters that prove it was clean). */
  extra?(): Record<string, unknown>
}

export async function serveSystem(name: string, create: (server: Server) => SystemServer | Promise<SystemServer>): Promise<void> {
  const server = createServer()
  server.on('clientError', (_err, socket) => socket.destroy())
  const system = await create(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  // The loopback accept queue: bursts of connections should not be refused by the backlog.
  const port = (server.address() as AddressInfo).port
  let publishing = false

  serveRequests(async (req) => {
    switch (req.cmd) {
      case 'publish': {
        if (publishing) throw new Error('a publish run is already going')
        publishing = true
        try {
          return await publishRun(system, req.channels as string[], req.n as number, req.rate as number, (req.settleMs as number) ?? 200)
        } finally {
          publishing = false
        }
      }
      case 'count':
        return { connections: system.connections(), subscribers: typeof req.channel === 'string' ? system.subscribers(req.channel) : 0 }
      case 'mem': {
        const gc = (globalThis as { gc?: () => void }).gc
        if (!gc) throw new Error('start the server with --expose-gc')
        for (let i = 0; i < 3; i++) {
          gc()
          await sleep(30)
        }
        const m = process.memoryUsage()
        const { getHeapSpaceStatistics } = await import('node:v8')
        // Committed bytes per V8 heap space: the young generation grows with the allocation rate
        // and is not given back by gc(), so it is reported apart from what connections hold.
        const spaces = Object.fromEntries(getHeapSpaceStatistics().map((sp) => [sp.space_name, sp.physical_space_size]))
        return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, spaces, connections: system.connections() }
      }
      case 'snapshot': {
        // A heap snapshot for offline analysis (what a connection holds): `{ file }`.
        const { writeHeapSnapshot } = await import('node:v8')
        return { file: writeHeapSnapshot(req.file as string) }
      }
      case 'extra':
        return system.extra?.() ?? {}
      default:
        throw new Error(`unknown command ${req.cmd}`)
    }
  })
  process.send?.({ type: 'ready', system: name, port, pid: process.pid })
}

/**
 * Publish `n` messages at `rate` per second (paced by the clock: each wake-up sends what is due,
 * so a late timer catches up instead of stretching the run), round-robin over `channels`. The
 * CPU and wall time cover the run plus `settleMs` for the last writes to leave.
 */
async function publishRun(system: SystemServer, channels: string[], n: number, rate: number, settleMs: number) {
  if (!(n > 0 && n <= 1_000_000 && rate > 0 && channels.length > 0)) throw new Error('bad publish request')
  const subscribers = channels.reduce((a, c) => a + system.subscribers(c), 0)
  const cpu0 = process.cpuUsage()
  const t0 = monoMs()
  const deadline = t0 + (n / rate) * 1000 * 3 + 10_000 // bounded even if timers starve
  let sent = 0
  while (sent < n) {
    const elapsed = monoMs() - t0
    const due = Math.min(n, Math.floor((elapsed / 1000) * rate) + 1)
    while (sent < due) {
      system.publish(channels[sent % channels.length]!, { text: 'hello, world', seq: sent, t: monoMs() })
      sent++
    }
    if (sent >= n || monoMs() > deadline) break
    const next = (sent / rate) * 1000
    await sleep(Math.max(0, next - (monoMs() - t0)))
  }
  const publishMs = monoMs() - t0
  await sleep(settleMs)
  const cpu = process.cpuUsage(cpu0)
  const wallMs = monoMs() - t0
  return { sent, subscribers, cpuUserUs: cpu.user, cpuSystemUs: cpu.system, wallMs, publishMs, extra: system.extra?.() ?? {} }
}
