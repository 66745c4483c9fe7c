/**
 * Core fan-out: one channel, 10,000 subscribers, in memory. Measures what the hub costs per
 * delivered message (routing, encoding once, per-subscriber checks, the session write) against
 * a bare loop that calls 10,000 callbacks with the same payload: the floor for any fan-out in JS.
 *
 * Rounds alternate baseline and hub, and medians across rounds are reported, because this
 * machine is shared and noisy. Prints, last:
 *   core-fanout: subscribers=10000 deliveries/s=<n> ratio-vs-loop=<r>
 */
import { Bench } from 'tinybench'
import { type ConnectionHandle, createHub, type Hub, Outbound, type Session, silentLogger } from '@tidings/core'

const SUBSCRIBERS = Number(process.env.SUBSCRIBERS ?? 10_000)
const ROUNDS = Number(process.env.ROUNDS ?? 5)
const TIME_MS = Number(process.env.TIME_MS ?? 400)
const payload = { text: 'hello, world', n: 42, tags: ['a', 'b'] }

/** A session that does what a socket write costs at the least: keep a reference and count bytes. */
class SinkSession implements Session {
  readonly transport = 'bench'
  readonly headers = {}
  constructor(private readonly sink: { bytes: number; last: Outbound | undefined }) {}
  send(frame: Outbound): boolean {
    this.sink.bytes += frame.bytes
    this.sink.last = frame
    return true
  }
  bufferedAmount(): number {
    return 0
  }
  close(): void {}
}

async function hubWithSubscribers(
  channel: string,
  options: Parameters<typeof createHub>[0] = {},
): Promise<{ hub: Hub; sink: { bytes: number; last: Outbound | undefined }; handles: ConnectionHandle[] }> {
  const hub = createHub({ logger: silentLogger, limits: { maxConnectionsPerUser: SUBSCRIBERS + 1 }, ...options })
  const sink = { bytes: 0, last: undefined as Outbound | undefined }
  const handles: ConnectionHandle[] = []
  for (let i = 0; i < SUBSCRIBERS; i++) {
    const handle = await hub.connect(new SinkSession(sink), { identity: { userId: `u${i}` } })
    handle.receive(JSON.stringify({ type: 'subscribe', channel }))
    handles.push(handle)
  }
  await new Promise((r) => setTimeout(r, 10))
  const subs = hub.metrics().subscriptionsByChannel[channel]
  if (subs !== SUBSCRIBERS) throw new Error(`expected ${SUBSCRIBERS} subscribers, got ${subs}`)
  return { hub, sink, handles }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

async function main() {
  const callbacks: Array<(p: unknown) => void> = []
  const baselineSink = { count: 0, last: undefined as unknown }
  for (let i = 0; i < SUBSCRIBERS; i++) {
    callbacks.push((p) => {
      baselineSink.count++
      baselineSink.last = p
    })
  }
  const live = await hubWithSubscribers('public:bench')
  // The same 10,000 sessions the hub writes to, written to by a bare loop: the floor for this design.
  const sessions: SinkSession[] = []
  const sessionSink = { bytes: 0, last: undefined as Outbound | undefined }
  for (let i = 0; i < SUBSCRIBERS; i++) sessions.push(new SinkSession(sessionSink))
  const frame = new Outbound(JSON.stringify({ type: 'message', channel: 'public:bench', event: 'tick', data: payload }), 100)
  const noHistory = await hubWithSubscribers('public:bench', { channels: { 'public:*': { subscribe: true, publish: 'authenticated', history: false } } })
  // At-least-once: every message tracked for acknowledgment; each subscriber acks cumulatively
  // every ACK_EVERY messages through the real inbound path (decode, validate, ack bookkeeping).
  const ACK_EVERY = Number(process.env.ACK_EVERY ?? 50)
  const reliable = await hubWithSubscribers('public:bench', {
    channels: { 'public:*': { subscribe: true, publish: 'authenticated', delivery: 'at-least-once', history: { maxCount: 1000 } } },
    delivery: { ackTimeoutMs: 600_000 },
    limits: { maxConnectionsPerUser: SUBSCRIBERS + 1, messagesPerSecond: 1_000_000 },
  })
  let reliableSent = 0

  const perRound: Record<string, number[]> = { loop: [], 'session-loop': [], hub: [], 'hub-no-history': [], 'hub-at-least-once': [] }
  for (let round = 0; round < ROUNDS; round++) {
    const bench = new Bench({ time: TIME_MS, warmupTime: 100 })
    bench.add('loop', () => {
      for (let i = 0; i < callbacks.length; i++) callbacks[i]!(payload)
    })
    bench.add('session-loop', () => {
      for (let i = 0; i < sessions.length; i++) sessions[i]!.send(frame)
    })
    bench.add('hub', async () => {
      await live.hub.publish('public:bench', 'tick', payload)
    })
    bench.add('hub-no-history', async () => {
      await noHistory.hub.publish('public:bench', 'tick', payload)
    })
    bench.add('hub-at-least-once', async () => {
      const r = await reliable.hub.publish('public:bench', 'tick', payload)
      if (++reliableSent % ACK_EVERY === 0) {
        const ack = JSON.stringify({ type: 'ack', channel: 'public:bench', offset: r.offset })
        for (const h of reliable.handles) h.receive(ack)
      }
    })
    await bench.run()
    for (const task of bench.tasks) {
      const r = task.result
      if (r.state !== 'completed') throw new Error(`${task.name}: ${r.state}`)
      perRound[task.name]!.push((SUBSCRIBERS * 1000) / r.latency.p50!)
    }
  }
  for (const [name, xs] of Object.entries(perRound)) {
    console.log(`${name.padEnd(16)} deliveries/s per round: ${xs.map((x) => Math.round(x).toLocaleString('en-US')).join(', ')}`)
  }
  if (live.sink.bytes === 0 || noHistory.sink.bytes === 0) throw new Error('no bytes delivered')
  // Each round measures the loop and the hub back to back, so per-round ratios cancel most noise.
  const ratio = (name: string) => median(perRound[name]!.map((x, i) => x / perRound.loop![i]!))
  const figure = (name: string) => Math.round(median(perRound[name]!))
  console.log(`session-loop (floor of this design): deliveries/s=${figure('session-loop')} ratio-vs-loop=${ratio('session-loop').toFixed(2)}`)
  console.log(`core-fanout-no-history: subscribers=${SUBSCRIBERS} deliveries/s=${figure('hub-no-history')} ratio-vs-loop=${ratio('hub-no-history').toFixed(2)}`)
  const aloVsAmo = median(perRound['hub-at-least-once']!.map((x, i) => perRound.hub![i]! / x))
  console.log(`core-fanout-at-least-once: subscribers=${SUBSCRIBERS} deliveries/s=${figure('hub-at-least-once')} ratio-vs-loop=${ratio('hub-at-least-once').toFixed(2)} cost-vs-at-most-once=${aloVsAmo.toFixed(2)}x (acks every ${ACK_EVERY})`)
  console.log(`core-fanout: subscribers=${SUBSCRIBERS} deliveries/s=${figure('hub')} ratio-vs-loop=${ratio('hub').toFixed(2)}`)
  const m = reliable.hub.metrics()
  if (m.redelivered !== 0 || m.errors.RT_006 !== 0) throw new Error(`at-least-once bench was not clean: ${m.redelivered} redelivered, ${m.errors.RT_006} rate-limited`)
  await live.hub.close()
  await noHistory.hub.close()
  await reliable.hub.close()
}

await main()
