/**
 * The load-generator side shared by the lean clients: opening K connections (all at once with a
 * concurrency cap, one after another, or in bursts) while timing each set-up, counting delivered
 * messages, and sampling latency from 1 in `SAMPLE_EVERY` messages (the publisher's `t`, on the
 * monotonic clock shared by every process, against the time the frame is read here).
 *
 * Requests: `open`, `reset`, `wait`, `report`, `close` (see `runClientWorker`).
 */
import { type Request, serveRequests } from '../lib/ipc.js'
import { monoMs, sleep } from '../lib/stats.js'

export const SAMPLE_EVERY = Number(process.env.SAMPLE_EVERY ?? 100)

export interface OpenSpec {
  readonly kind: 'ws' | 'tidings' | 'socketio' | 'sse'
  readonly port: number
  /** Upgrade (or stream) path. */
  readonly path: string
  /** Channels (or rooms) to subscribe to; empty: connect only (raw ws and Socket.IO join in the URL). */
  readonly channels: readonly string[]
  /** With `channels` on the raw servers and Socket.IO: how many channels to join through the URL. */
  readonly urlChannels: number
  /** Acknowledge every this many messages (at-least-once), 0 for none. */
  readonly ackEvery: number
  readonly timeoutMs: number
}

export interface Conn {
  /** Close it now (and tell the server where the protocol wants that). */
  close(): void | Promise<void>
}

export interface Opened {
  readonly conn: Conn
  /** ms from the connect call to the protocol's "connected". */
  readonly connectMs: number
  /** ms from the connect call to "subscribed" (same as connectMs when nothing is subscribed). */
  readonly readyMs: number
}

/** Counters every kind of client adds to. */
export const counters = { frames: 0, acks: 0, sampleTick: 0, closedEarly: 0, errors: 0, lastError: '' }
export let samples: number[] = []

/** One delivered message; for 1 in SAMPLE_EVERY, `t()` returns the publisher's timestamp (parse only then). */
export function delivered(t: () => number | undefined): void {
  counters.frames++
  if (++counters.sampleTick >= SAMPLE_EVERY) {
    counters.sampleTick = 0
    const sent = t()
    if (sent !== undefined) samples.push(monoMs() - sent)
  }
}

export function noteError(err: unknown): void {
  counters.errors++
  counters.lastError = err instanceof Error ? err.message : String(err)
}

/** Position of `"t":` in a JSON payload, parsed as a number; undefined if absent. */
export function timestampIn(text: string): number | undefined {
  try {
    const v = JSON.parse(text) as { data?: { t?: unknown } } | [string, { t?: unknown }]
    const t = Array.isArray(v) ? v[1]?.t : v.data?.t
    return typeof t === 'number' ? t : undefined
  } catch {
    return undefined
  }
}

export type OpenOne = (spec: OpenSpec) => Promise<Opened>

/** Run a client worker process for one kind of connection. */
export function runClientWorker(kind: string, openOne: OpenOne, hooks: { flush?: () => void; afterClose?: () => Promise<void> } = {}): void {
  const conns = new Set<Conn>()

  const openMany = async (req: Request) => {
    const spec = req['spec'] as OpenSpec
    const count = req['count'] as number
    const mode = req['mode'] as 'parallel' | 'sequential' | 'bursts'
    const width = mode === 'sequential' ? 1 : (req['width'] as number | undefined) ?? 100
    const deadline = Date.now() + ((req['totalTimeoutMs'] as number | undefined) ?? 60_000)
    const connectMs: number[] = []
    const readyMs: number[] = []
    let failed = 0
    let firstError = ''
    const one = async () => {
      try {
        const o = await openOne(spec)
        conns.add(o.conn)
        connectMs.push(o.connectMs)
        readyMs.push(o.readyMs)
      } catch (err) {
        failed++
        firstError ||= err instanceof Error ? err.message : String(err)
      }
    }
    if (mode === 'bursts') {
      // `width` connections started together; the next burst after the whole burst is up.
      for (let started = 0; started < count && Date.now() < deadline; started += width) {
        await Promise.all(Array.from({ length: Math.min(width, count - started) }, one))
      }
    } else {
      let next = 0
      const lane = async () => {
        while (next < count && Date.now() < deadline) {
          next++
          await one()
        }
      }
      await Promise.all(Array.from({ length: Math.min(width, count) }, lane))
    }
    return { opened: connectMs.length, failed, firstError, connectMs, readyMs }
  }

  let cpuAtReset = process.cpuUsage()
  serveRequests(async (req) => {
    switch (req.cmd) {
      case 'open':
        return openMany(req)
      case 'reset':
        cpuAtReset = process.cpuUsage()
        counters.frames = 0
        counters.acks = 0
        counters.sampleTick = 0
        samples = []
        return {}
      case 'wait': {
        // Until `expected` messages arrived, nothing arrived for `idleMs`, or `timeoutMs` passed.
        const expected = req['expected'] as number
        const end = Date.now() + ((req['timeoutMs'] as number | undefined) ?? 10_000)
        const idleMs = (req['idleMs'] as number | undefined) ?? 1_500
        let last = counters.frames
        let lastChange = Date.now()
        while (counters.frames < expected && Date.now() < end && Date.now() - lastChange < idleMs) {
          await sleep(20)
          if (counters.frames !== last) {
            last = counters.frames
            lastChange = Date.now()
          }
        }
        return { frames: counters.frames }
      }
      case 'report': {
        // Final cumulative acks for what arrived since the last one (at-least-once).
        if (req['flush'] === true) hooks.flush?.()
        // The client process's own CPU since `reset`: the load generator must stay cheaper than the server.
        const cpu = process.cpuUsage(cpuAtReset)
        return { kind, frames: counters.frames, acks: counters.acks, samples, open: conns.size, errors: counters.errors, lastError: counters.lastError, closedEarly: counters.closedEarly, cpuUs: cpu.user + cpu.system }
      }
      case 'close': {
        const all = [...conns]
        conns.clear()
        // Bounded: closing (with any goodbye request) gets `timeoutMs` before we answer anyway.
        const closing = Promise.allSettled(all.map((c) => c.close()))
        await Promise.race([closing, sleep((req['timeoutMs'] as number | undefined) ?? 15_000)])
        await hooks.afterClose?.()
        return { closed: all.length }
      }
      default:
        throw new Error(`unknown command ${req.cmd}`)
    }
  })
  process.send?.({ type: 'ready', kind, pid: process.pid })
}

/** Wrap a connection attempt: fails after `ms`, running `cancel` (destroy the socket). */
export function withTimeout<T>(p: Promise<T>, ms: number, cancel: () => void, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      cancel()
      reject(new Error(`${what}: no answer within ${ms} ms`))
    }, ms)
    p.then(
      (v) => {
        clearTimeout(timer)
        resolve(v)
      },
      (e: unknown) => {
        clearTimeout(timer)
        reject(e)
      },
    )
  })
}
