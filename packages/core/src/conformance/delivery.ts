/**
 * Property-based check of the delivery guarantees of at-least-once channels, end to end: hub,
 * in-memory transport with faults, and the client-side receiver.
 *
 * fast-check generates schedules; each runs on a fresh test hub with a manual clock:
 * publishers (clients, the server, and sometimes the subscribers themselves) publish with
 * idempotency keys and priorities, sometimes retrying with the same key as after a timeout;
 * subscribers get inbound/outbound faults (drop, duplicate, reorder, delay), are paused (slow
 * consumers: small buffers, so some are closed with 4009 or have their queue dropped), subscribe
 * again on a live connection, lose their connection and come back on a new client that resumes
 * with `since: receiver.position(channel)` (one receiver per logical subscriber, kept across
 * reconnects, as an app keeps it), sometimes while the server publishes; the clock moves. At the end faults are cleared, everyone reconnects and time passes until redelivery
 * is done. Then, per logical subscriber and channel:
 *
 * - lost: messages that got a `published` reply (by idempotency key; a key counts once), with an
 *   offset after the subscriber's first position, not published by that subscriber itself
 *   (echo is off), that never reached the application;
 * - appDuplicates: deliveries to the application of an offset or a key it already had;
 * - inversions: deliveries whose offset is not above the previous one.
 *
 * Used by `packages/core/test/delivery-property.test.ts`, `scripts/check-delivery.ts` and
 * `hubConformance` (over the ports of an adapter: `RunOptions.ports`). Needs `fast-check`.
 */
import fc from 'fast-check'
import { type MessageFrame, type Receiver, type ReceiverOptions, type ServerFrame, createReceiver } from '@tidings/protocol'
import type { HubOptions } from '../hub/options.js'
import type { Faults, MemoryClient } from '../memory/transport.js'
import { createTestHub } from '../testing/index.js'

// ------------------------------------------------------------------ schedules

export interface FaultSpec {
  readonly drop: number
  readonly duplicate: number
  readonly reorder: number
  /** 0: none; else frames are delayed by a random amount in [0, delay] ms. */
  readonly delay: number
}

export type Step =
  /**
   * By publisher client `who` (modulo their number), the server, or subscriber `who` on its
   * current connection (its own messages are not echoed to it). `lose`: the first attempt's
   * request or reply is lost. `retries`: the same idempotency key is sent again this many
   * times (as after a timeout).
   */
  | {
      readonly kind: 'publish'
      readonly from: 'publisher' | 'server' | 'subscriber'
      readonly who: number
      readonly channel: number
      readonly retries: number
      readonly lose: 'none' | 'request' | 'reply'
      /** High overtakes queued normal and low frames on a congested connection; low is shed first under pressure. */
      readonly priority: 'normal' | 'high' | 'low'
    }
  | { readonly kind: 'faults'; readonly sub: number; readonly inbound: FaultSpec; readonly outbound: FaultSpec }
  | { readonly kind: 'clear'; readonly sub: number }
  | { readonly kind: 'pause'; readonly sub: number }
  | { readonly kind: 'resume'; readonly sub: number }
  /** Lose the connection (`client`: network failure, 1006; `server`: hub.disconnect). `reconnect`: come back at once. */
  | { readonly kind: 'drop'; readonly sub: number; readonly how: 'client' | 'server'; readonly reconnect: boolean }
  /** Reconnect a disconnected subscriber; `race`: server publishes interleaved with its subscribe, after so many microtask turns. */
  | { readonly kind: 'reconnect'; readonly sub: number; readonly race: ReadonlyArray<{ readonly ticks: number; readonly channel: number }> }
  | { readonly kind: 'advance'; readonly ms: number }
  /**
   * Subscribe again on the live connection (with `since`, as an SDK retrying a subscribe whose
   * answer is late, or an app re-subscribing to change its filter, would).
   */
  | { readonly kind: 'resubscribe'; readonly sub: number; readonly channel: number }

export interface Schedule {
  readonly channels: number
  readonly publishers: number
  /** Per subscriber, the channels (indices, modulo `channels`) it subscribes to. */
  readonly subscribers: ReadonlyArray<readonly number[]>
  /** Server publishes before anyone subscribes (so first positions are not all 0). */
  readonly prePublish: number
  readonly slowConsumer: 'disconnect' | 'drop'
  /** Seed of the transport's fault randomness. */
  readonly faultSeed: number
  readonly steps: readonly Step[]
}

/** Most messages (distinct idempotency keys) per schedule. */
export const MAX_MESSAGES = 40

const prob = fc.constantFrom(0, 0, 0.1, 0.2, 0.4, 0.6)
const faultSpec: fc.Arbitrary<FaultSpec> = fc.record({ drop: prob, duplicate: prob, reorder: prob, delay: fc.constantFrom(0, 0, 0, 0, 5, 60) })

const STEP_ARBITRARIES: ReadonlyArray<{ readonly kind: Step['kind']; readonly weight: number; readonly arbitrary: fc.Arbitrary<Step> }> = [
  {
    kind: 'publish',
    weight: 14,
    arbitrary: fc.record({
      kind: fc.constant('publish' as const),
      from: fc.constantFrom('publisher' as const, 'publisher' as const, 'server' as const, 'subscriber' as const),
      who: fc.nat(2),
      channel: fc.nat(2),
      retries: fc.constantFrom(0, 0, 0, 1, 2),
      lose: fc.constantFrom('none' as const, 'none' as const, 'none' as const, 'request' as const, 'reply' as const),
      priority: fc.constantFrom('normal' as const, 'normal' as const, 'normal' as const, 'high' as const, 'low' as const),
    }),
  },
  { kind: 'faults', weight: 3, arbitrary: fc.record({ kind: fc.constant('faults' as const), sub: fc.nat(2), inbound: faultSpec, outbound: faultSpec }) },
  { kind: 'clear', weight: 1, arbitrary: fc.record({ kind: fc.constant('clear' as const), sub: fc.nat(2) }) },
  { kind: 'pause', weight: 2, arbitrary: fc.record({ kind: fc.constant('pause' as const), sub: fc.nat(2) }) },
  { kind: 'resume', weight: 1, arbitrary: fc.record({ kind: fc.constant('resume' as const), sub: fc.nat(2) }) },
  {
    kind: 'drop',
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('drop' as const), sub: fc.nat(2), how: fc.constantFrom('client' as const, 'server' as const), reconnect: fc.boolean() }),
  },
  {
    kind: 'reconnect',
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('reconnect' as const),
      sub: fc.nat(2),
      race: fc.array(fc.record({ ticks: fc.nat(12), channel: fc.nat(2) }), { maxLength: 3 }),
    }),
  },
  { kind: 'advance', weight: 4, arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 400 }) }) },
  { kind: 'resubscribe', weight: 1, arbitrary: fc.record({ kind: fc.constant('resubscribe' as const), sub: fc.nat(2), channel: fc.nat(2) }) },
]

export interface ScheduleShape {
  /** Step kinds never to generate (e.g. `['resubscribe']`). */
  readonly exclude?: ReadonlyArray<Step['kind']>
}

/** Schedules; the same shape always gives the same arbitrary, so a seed and a path replay a schedule. */
export function scheduleArbitrary(shape: ScheduleShape = {}): fc.Arbitrary<Schedule> {
  const exclude = new Set(shape.exclude ?? [])
  const kinds = STEP_ARBITRARIES.filter((a) => !exclude.has(a.kind)).map(({ weight, arbitrary }) => ({ weight, arbitrary }))
  if (kinds.length === 0) throw new TypeError('every step kind is excluded')
  return fc.record({
    channels: fc.integer({ min: 1, max: 3 }),
    publishers: fc.integer({ min: 1, max: 2 }),
    subscribers: fc.array(fc.uniqueArray(fc.nat(2), { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 3 }),
    prePublish: fc.nat(3),
    slowConsumer: fc.constantFrom('disconnect' as const, 'disconnect' as const, 'drop' as const),
    faultSeed: fc.integer({ min: 1, max: 0x7fffffff }),
    steps: fc.array(fc.oneof(...kinds), { maxLength: 60, size: 'max' }),
  })
}

export const scheduleArb: fc.Arbitrary<Schedule> = scheduleArbitrary()

// ------------------------------------------------------------------ running one schedule

export interface DeliveryCounts {
  schedules: number
  /** Distinct messages (idempotency keys) that got a `published` reply. */
  messages: number
  /** Deliveries to applications. */
  deliveries: number
  lost: number
  appDuplicates: number
  inversions: number
  /** Subscribers closed by the hub as slow consumers (4009). */
  slowConsumerCloses: number
  /** `delivery:failed` events (should stay 0: maxAttempts is high). */
  deliveryFailed: number
}

export interface ScheduleResult extends DeliveryCounts {
  /** Human-readable description of each violation. */
  problems: string[]
  /** With `trace`: what happened, step by step. */
  trace: string[]
}

/** The ports a schedule's hub is built on (any left out: the hub's in-memory default). */
export type DeliveryPorts = Partial<Pick<HubOptions, 'broker' | 'store' | 'presenceStore' | 'limitStore'>>

export interface RunOptions {
  /** Replace the receiver (to prove the checker can fail). */
  createReceiver?: ((options: ReceiverOptions) => Receiver) | undefined
  /** Record a step-by-step trace (frames, acks, deliveries). */
  trace?: boolean | undefined
  /** Fresh ports for each schedule's hub (called once per schedule run). Default: the hub's in-memory ones. */
  ports?: (() => DeliveryPorts | Promise<DeliveryPorts>) | undefined
  /**
   * The first part of the channel names of a schedule run (`<prefix>c0`, …; the hub's pattern is
   * `<prefix>*`); a function is called once per run, so runs over a shared store never share a
   * channel. Default `'feed:'`.
   */
  channelPrefix?: string | (() => string) | undefined
  /** The hub's node id (a function: called once per run). Default `'n1'`. */
  nodeId?: string | (() => string) | undefined
}

const ACK_TIMEOUT_MS = 100
const MAX_BACKOFF_MS = 400
const CHUNK_MS = 50

const DEFAULT_PREFIX = 'feed:'
const pick = (v: string | (() => string) | undefined, fallback: string) => (typeof v === 'function' ? v() : (v ?? fallback))

const faultsOf = (f: FaultSpec): Faults => ({
  ...(f.drop > 0 ? { drop: f.drop } : {}),
  ...(f.duplicate > 0 ? { duplicate: f.duplicate } : {}),
  ...(f.reorder > 0 ? { reorder: f.reorder } : {}),
  ...(f.delay > 0 ? { delayMs: [0, f.delay] as const } : {}),
})

interface LogicalSubscriber {
  readonly index: number
  readonly userId: string
  readonly channels: readonly string[]
  readonly receiver: Receiver
  client: MemoryClient
  /** First position per channel (offset of the first `subscribed`). */
  readonly first: Map<string, number>
  /** What the application got, per channel, in order. */
  readonly app: Map<string, Array<{ offset: number; key: string }>>
}

export async function runSchedule(schedule: Schedule, options: RunOptions = {}): Promise<ScheduleResult> {
  const trace: string[] = []
  const log = options.trace ? (line: string) => trace.push(line) : () => {}
  const makeReceiver = options.createReceiver ?? createReceiver
  const prefix = pick(options.channelPrefix, DEFAULT_PREFIX)
  const channels = Array.from({ length: schedule.channels }, (_, i) => `${prefix}c${i}`)
  const ports = options.ports ? await options.ports() : {}
  const t = createTestHub({
    ...ports,
    // The transport's fault randomness.
    seed: schedule.faultSeed,
    nodeId: pick(options.nodeId, 'n1'),
    channels: {
      [`${prefix}*`]: { subscribe: true, publish: true, delivery: 'at-least-once', history: { maxCount: 1_000_000, maxAgeMs: 365 * 24 * 3_600_000 } },
    },
    // Redelivery never gives up here (a failed delivery is a documented loss, not a bug), and backs off to at most 400 ms.
    delivery: { ackTimeoutMs: ACK_TIMEOUT_MS, backoffMultiplier: 2, maxBackoffMs: MAX_BACKOFF_MS, maxAttempts: 1_000_000 },
    // Small buffers (a message frame is ~150 bytes): a paused subscriber is congested after a few frames and a slow consumer after ~10.
    limits: { highWaterMark: 500, maxQueuedBytes: 1500, messagesPerSecond: 1_000_000, maxConnectionsPerUser: 1000, slowConsumer: schedule.slowConsumer },
  })
  let deliveryFailed = 0
  t.hub.on('delivery:failed', (e) => {
    deliveryFailed++
    log(`hub: delivery:failed ${JSON.stringify(e)}`)
  })
  let slowConsumerCloses = 0

  // key -> { channel, offsets from published replies, publisher (logical subscriber index or -1) }
  const published = new Map<string, { channel: string; offsets: Set<number>; by: number }>()
  const record = (key: string, offset: number | undefined) => {
    const p = published.get(key)
    if (p && offset !== undefined) {
      if (!p.offsets.has(offset)) log(`published ${key} -> offset ${offset}`)
      p.offsets.add(offset)
    }
  }

  const subs: LogicalSubscriber[] = []

  const attach = (s: LogicalSubscriber, client: MemoryClient) => {
    s.client = client
    const tag = `s${s.index}/${client.connectionId}`
    client.on('frame', (f: ServerFrame) => {
      if (f.type === 'subscribed') {
        log(`${tag} <- subscribed ${f.channel} position=${f.position?.offset} recovered=${f.recovered} ${f.reason ?? ''}`)
        s.receiver.subscribed(f)
        if (!s.first.has(f.channel) && f.position) s.first.set(f.channel, f.position.offset)
      } else if (f.type === 'message' && f.channel !== undefined) {
        log(`${tag} <- message ${f.channel}#${f.offset}${f.prev !== undefined ? ` prev=${f.prev}` : ''}`)
        if (s.receiver.message(f) === 0) log(`${tag}    (not released; holding ${s.receiver.held(f.channel)})`)
      }
    })
    client.onClose((code, reason) => {
      if (code === 4009) slowConsumerCloses++
      log(`${tag} closed ${code} ${reason}`)
    })
  }

  const connect = async (s: LogicalSubscriber, resume: boolean): Promise<void> => {
    const client = await t.connect({ userId: s.userId })
    attach(s, client)
    for (const ch of s.channels) {
      const since = resume ? s.receiver.position(ch) : undefined
      log(`s${s.index}/${client.connectionId} -> subscribe ${ch}${since ? ` since=${since.offset}` : ''}`)
      client.subscribe(ch, since ? { since } : {}).catch(() => {})
    }
  }

  let nextKey = 0
  const publishers: MemoryClient[] = []
  const advance = async (ms: number) => {
    for (let left = ms; left > 0; left -= CHUNK_MS) await t.advance(Math.min(CHUNK_MS, left))
  }

  const publishOne = async (step: Extract<Step, { kind: 'publish' }>) => {
    if (nextKey >= MAX_MESSAGES) return
    const channel = channels[step.channel % channels.length]!
    const bySub = step.from === 'subscriber' ? step.who % subs.length : -1
    const client = step.from === 'publisher' ? publishers[step.who % publishers.length]! : bySub >= 0 ? subs[bySub]!.client : undefined
    if (client?.closed) return
    const key = `k${nextKey++}`
    published.set(key, { channel, offsets: new Set(), by: bySub })
    const who = client ? (bySub >= 0 ? `s${bySub}/${client.connectionId}` : `p${step.who % publishers.length}`) : 'server'
    for (let attempt = 0; attempt <= step.retries; attempt++) {
      const lose = attempt === 0 ? step.lose : 'none'
      log(`${who} publish ${channel} ${key}${step.priority !== 'normal' ? ` ${step.priority}` : ''}${attempt > 0 ? ` (retry ${attempt})` : ''}${lose !== 'none' ? ` [lose ${lose}]` : ''}`)
      if (!client) {
        // The server path has no wire to lose a request on; a retry is a repeat with the same key.
        record(key, (await t.hub.publish(channel, 'm', { k: key }, { idempotencyKey: key, priority: step.priority })).offset)
        continue
      }
      if (client.closed) break
      const inbound = client.inbound
      const outbound = client.outbound
      if (lose === 'request') client.outbound = { drop: 1 }
      if (lose === 'reply') client.inbound = { drop: 1 }
      client.publish(channel, 'm', { k: key }, { idempotencyKey: key, priority: step.priority }).then(
        (f) => record(key, f.offset),
        () => {},
      )
      client.outbound = outbound
      if (lose === 'reply') {
        await t.settle()
        client.inbound = inbound
      }
    }
  }

  let step: Step | undefined
  try {
    for (let i = 0; i < schedule.prePublish; i++) {
      const key = `pre${i}`
      published.set(key, { channel: channels[i % channels.length]!, offsets: new Set(), by: -1 })
      record(key, (await t.hub.publish(channels[i % channels.length]!, 'm', { k: key }, { idempotencyKey: key })).offset)
    }

    for (let i = 0; i < schedule.publishers; i++) publishers.push(await t.connect({ userId: `p${i}` }))

    for (let i = 0; i < schedule.subscribers.length; i++) {
      const chans = [...new Set(schedule.subscribers[i]!.map((c) => channels[c % channels.length]!))]
      const s: LogicalSubscriber = {
        index: i,
        userId: `s${i}`,
        channels: chans,
        first: new Map(),
        app: new Map(chans.map((c) => [c, []])),
        client: undefined as unknown as MemoryClient,
        receiver: makeReceiver({
          deliver: (f: MessageFrame) => {
            const key = String((f.data as { k?: unknown } | null)?.k)
            log(`s${i} APP ${f.channel}#${f.offset} ${key}`)
            if (f.channel === undefined || f.offset === undefined) return
            let list = s.app.get(f.channel)
            if (!list) s.app.set(f.channel, (list = []))
            list.push({ offset: f.offset, key })
          },
          ack: (channel, offset) => {
            if (s.client.closed) return
            log(`s${i}/${s.client.connectionId} -> ack ${channel}#${offset}`)
            try {
              s.client.ack(channel, offset)
            } catch {
              // closed meanwhile
            }
          },
        }),
      }
      subs.push(s)
      await connect(s, false)
    }
    await t.settle()

    for (step of schedule.steps) {
      if (step.kind === 'publish') {
        await publishOne(step)
        await t.settle()
        continue
      }
      if (step.kind === 'advance') {
        log(`advance ${step.ms}`)
        await advance(step.ms)
        continue
      }
      const s = subs[step.sub % subs.length]!
      const c = s.client
      const tag = `s${s.index}/${c.connectionId}`
      switch (step.kind) {
        case 'faults':
          log(`${tag} faults in=${JSON.stringify(faultsOf(step.inbound))} out=${JSON.stringify(faultsOf(step.outbound))}`)
          c.inbound = faultsOf(step.inbound)
          c.outbound = faultsOf(step.outbound)
          break
        case 'clear':
          log(`${tag} clear faults`)
          c.inbound = {}
          c.outbound = {}
          break
        case 'pause':
          log(`${tag} pause`)
          c.pause()
          break
        case 'resume':
          log(`${tag} resume`)
          c.resume()
          break
        case 'drop':
          if (!c.closed) {
            log(`${tag} drop (${step.how})`)
            if (step.how === 'client') c.drop()
            else (await t.hub.connections.disconnect(c.connectionId))
          }
          if (step.reconnect) await connect(s, true)
          break
        case 'resubscribe': {
          const ch = s.channels[step.channel % s.channels.length]!
          if (c.closed) break
          const since = s.receiver.position(ch)
          log(`${tag} -> subscribe ${ch} again${since ? ` since=${since.offset}` : ''}`)
          c.subscribe(ch, since ? { since } : {}).catch(() => {})
          break
        }
        case 'reconnect': {
          if (!c.closed) break
          await connect(s, true)
          for (const r of step.race) {
            for (let i = 0; i < r.ticks; i++) await Promise.resolve()
            const channel = channels[r.channel % channels.length]!
            if (nextKey >= MAX_MESSAGES) break
            const key = `k${nextKey++}`
            published.set(key, { channel, offsets: new Set(), by: -1 })
            log(`server publish ${channel} ${key} (racing the resubscribe)`)
            record(key, (await t.hub.publish(channel, 'm', { k: key }, { idempotencyKey: key })).offset)
          }
          break
        }
      }
      await t.settle()
    }
    step = undefined

    // The end: no more faults, everyone back, time for redelivery to finish.
    log('--- end: clear faults, resume, reconnect')
    for (const s of subs) {
      if (s.client.closed) await connect(s, true)
      else {
        s.client.inbound = {}
        s.client.outbound = {}
        s.client.resume()
      }
    }
    await t.settle()
    for (const p of publishers) {
      p.inbound = {}
      p.outbound = {}
    }
    const complete = () => {
      for (const s of subs) {
        if (s.client.closed) return false
        for (const ch of s.channels) {
          const first = s.first.get(ch) ?? 0
          const got = new Set(s.app.get(ch)!.map((d) => d.key))
          for (const [key, p] of published) {
            if (p.channel !== ch || p.by === s.index || p.offsets.size === 0) continue
            if (Math.min(...p.offsets) > first && !got.has(key)) return false
          }
        }
      }
      return true
    }
    for (let i = 0; i < 200 && !complete(); i++) {
      for (const s of subs) if (s.client.closed) await connect(s, true)
      await t.advance(CHUNK_MS)
    }
    // Anything still in flight (late redeliveries, held frames) shows up now.
    await advance(2 * MAX_BACKOFF_MS + ACK_TIMEOUT_MS)
  } catch (err) {
    log(`threw ${err instanceof Error ? err.stack : String(err)}${step ? ` at step ${JSON.stringify(step)}` : ''}`)
    throw err
  } finally {
    await t.close()
  }

  // ---------------------------------------------------------------- the checks
  const problems: string[] = []
  let lost = 0
  let appDuplicates = 0
  let inversions = 0
  let deliveries = 0
  for (const [key, p] of published) {
    if (p.offsets.size > 1) problems.push(`idempotency key ${key} got ${p.offsets.size} offsets: ${[...p.offsets].join(', ')}`)
  }
  for (const s of subs) {
    for (const ch of s.channels) {
      const first = s.first.get(ch)
      const got = s.app.get(ch) ?? []
      deliveries += got.length
      const offsets = new Set<number>()
      const keys = new Set<string>()
      let last = -Infinity
      for (const d of got) {
        if (offsets.has(d.offset) || keys.has(d.key)) {
          appDuplicates++
          problems.push(`s${s.index} ${ch}: #${d.offset} (${d.key}) reached the app again`)
        }
        if (d.offset <= last) {
          inversions++
          problems.push(`s${s.index} ${ch}: #${d.offset} reached the app after #${last}`)
        }
        offsets.add(d.offset)
        keys.add(d.key)
        last = Math.max(last, d.offset)
      }
      if (first === undefined) problems.push(`s${s.index} ${ch}: never subscribed`)
      const missing: string[] = []
      for (const [key, p] of published) {
        if (p.channel !== ch || p.by === s.index || p.offsets.size === 0) continue
        if (Math.min(...p.offsets) > (first ?? 0) && !keys.has(key)) missing.push(`#${Math.min(...p.offsets)} (${key})`)
      }
      if (missing.length > 0) {
        lost += missing.length
        problems.push(`s${s.index} ${ch}: lost ${missing.join(', ')}; app got [${got.map((d) => d.offset).join(',')}] after first position ${first}; receiver at ${s.receiver.position(ch)?.offset}, holding ${s.receiver.held(ch)}`)
      }
    }
  }
  if (deliveryFailed > 0) problems.push(`${deliveryFailed} delivery:failed events`)
  let messages = 0
  for (const p of published.values()) if (p.offsets.size > 0) messages++
  return { schedules: 1, messages, deliveries, lost, appDuplicates, inversions, slowConsumerCloses, deliveryFailed, problems, trace }
}

// ------------------------------------------------------------------ many schedules

export interface DeliveryRunOptions extends RunOptions, ScheduleShape {
  seed: number
  schedules: number
  /** On a failure, shrink the first failing schedule with fast-check and report it (with a trace). Default true. */
  shrink?: boolean
  /** Called after each schedule (progress). */
  onSchedule?: (index: number, result: ScheduleResult) => void
}

export interface DeliveryReport {
  schedules: number
  messages: number
  lost: number
  appDuplicates: number
  inversions: number
  failures: string[]
  /** Extra counts, for the curious. */
  deliveries: number
  slowConsumerCloses: number
  deliveryFailed: number
  /** The minimal failing schedule, when one was found and shrunk. */
  minimal?: { schedule: Schedule; path: string; problems: string[]; trace: string[] }
}

const failed = (r: DeliveryCounts) => r.lost > 0 || r.appDuplicates > 0 || r.inversions > 0

export async function runDeliverySchedules(options: DeliveryRunOptions): Promise<DeliveryReport> {
  const { seed, schedules: n } = options
  const runOptions: RunOptions = { createReceiver: options.createReceiver, ports: options.ports, channelPrefix: options.channelPrefix, nodeId: options.nodeId }
  const arbitrary = scheduleArbitrary({ exclude: options.exclude })
  const samples = fc.sample(arbitrary, { seed, numRuns: n })
  const report: DeliveryReport = { schedules: 0, messages: 0, lost: 0, appDuplicates: 0, inversions: 0, failures: [], deliveries: 0, slowConsumerCloses: 0, deliveryFailed: 0 }
  let firstFailure = -1
  for (let i = 0; i < samples.length; i++) {
    const r = await runSchedule(samples[i]!, runOptions)
    options.onSchedule?.(i, r)
    report.schedules++
    report.messages += r.messages
    report.deliveries += r.deliveries
    report.lost += r.lost
    report.appDuplicates += r.appDuplicates
    report.inversions += r.inversions
    report.slowConsumerCloses += r.slowConsumerCloses
    report.deliveryFailed += r.deliveryFailed
    if (failed(r)) {
      if (firstFailure < 0) firstFailure = i
      report.failures.push(`schedule ${i} (seed ${seed}, path "${i}"): lost=${r.lost} app-duplicates=${r.appDuplicates} inversions=${r.inversions}\n  ${r.problems.slice(0, 8).join('\n  ')}`)
    }
  }
  if (firstFailure >= 0 && options.shrink !== false) {
    // Replay the first failing schedule (same seed, its run index as path) and let fast-check shrink it.
    const details = await fc.check(
      fc.asyncProperty(arbitrary, async (s) => !failed(await runSchedule(s, runOptions))),
      { seed, path: String(firstFailure), numRuns: n, endOnFailure: false },
    )
    if (details.failed && details.counterexample) {
      const schedule = details.counterexample[0]
      const r = await runSchedule(schedule, { ...runOptions, trace: true })
      report.minimal = { schedule, path: details.counterexamplePath ?? '', problems: r.problems, trace: r.trace }
      report.failures.push(
        `minimal failing schedule (seed ${seed}, path "${details.counterexamplePath}", ${details.numShrinks} shrinks): ${JSON.stringify(schedule)}\n  ${r.problems.join('\n  ')}\n  trace:\n    ${r.trace.join('\n    ')}`,
      )
    }
  }
  return report
}
