import { afterEach, describe, expect, it } from 'vitest'
import { createReceiver, RealtimeError, type MessageFrame, type Receiver, type ServerFrame } from '@tidings/protocol'
import type { PublishResult } from '../hub/api.js'
import type { ConnectionInfo } from '../hub/connection.js'
import type { HubOptions } from '../hub/options.js'
import { createMemoryBus } from '../memory/broker.js'
import { createManualClock, type ManualClock } from '../memory/clock.js'
import { createMemoryLimitStore } from '../memory/limits.js'
import { createMemoryPresenceStore } from '../memory/presence.js'
import { createMemoryStore } from '../memory/store.js'
import type { MemoryClient } from '../memory/transport.js'
import { createTestHub, type TestHub } from '../testing/index.js'
import { randomId } from '../util.js'
import { type DeliveryPorts, runDeliverySchedules } from './delivery.js'

/** The shared ports of one hub node: any left out is filled in by the suite (see `hubConformance`). */
export type HubPorts = DeliveryPorts

export interface HubConformanceOptions {
  /** Timeout of each multi-hub test, in ms. Default 20,000. */
  readonly timeoutMs?: number | undefined
  /** Random schedules of the delivery property run over one hub on these ports. Default 15. */
  readonly deliveryRuns?: number | undefined
  /** Seed of those schedules (a failure names it, with the schedule's index as its path). Default 20,260,101. */
  readonly deliverySeed?: number | undefined
  /** Timeout of the delivery property test, in ms. Default 120,000. */
  readonly deliveryTimeoutMs?: number | undefined
  /** First part of the node ids, channel names and user ids the suite uses (each run and test adds a random part). Default `'conformance'`. */
  readonly prefix?: string | undefined
  /**
   * Wall-clock quiet time (ms) settling waits for besides the hubs' own work: a bus whose
   * deliveries to other nodes can land after the publisher's answer (PostgreSQL LISTEN
   * connections are processes of their own) is given this long to deliver before a test looks.
   * Default 0 (settled when the hubs are).
   */
  readonly settleMs?: number | undefined
}

/** Acknowledgment timeout of the suite's hubs: redelivery (the only thing that fills a gap) runs within seconds of clock time. */
const ACK_TIMEOUT_MS = 500

/**
 * The engine's guarantees over a set of ports, as a vitest suite: run it over every adapter
 * (a broker, a message store, a presence store, or all three) to check that hubs sharing them
 * behave as one.
 *
 *   hubConformance('memory', (nodes) => {
 *     const bus = createMemoryBus()
 *     const store = createMemoryStore()
 *     const presenceStore = createMemoryPresenceStore()
 *     return Array.from({ length: nodes }, () => ({ broker: bus.broker(), store, presenceStore }))
 *   })
 *
 * `makePorts(nodes)` gives, for each of `nodes` hub nodes, the ports it is built on; nodes that
 * share a store or presence store are given the same object (or clients of the same database),
 * and each node its own broker on one bus. A port given to no node is filled in by the suite
 * with a memory one shared by all nodes (one memory bus, one memory store, one memory presence
 * store), so an adapter of one port runs the suite alone; giving a port to some nodes and not
 * others is an error. `makePorts(1)` is called once per schedule of the delivery property, and
 * `makePorts(3)` once per multi-hub test. Every hub closes its ports on `hub.close()` at the end
 * of a test (shared ones once per node, so their `close` must be idempotent).
 *
 * Hubs are test hubs (`createTestHub`) on one manual clock, with distinct node ids; node ids,
 * channel names and user ids are random per run and test, so the suite runs on a shared,
 * non-empty database. Clients are in-memory clients speaking real frames.
 */
export function hubConformance(name: string, makePorts: (nodes: number) => HubPorts[] | Promise<HubPorts[]>, options: HubConformanceOptions = {}): void {
  const timeout = options.timeoutMs ?? 20_000
  const deliveryRuns = options.deliveryRuns ?? 15
  const settleMs = options.settleMs ?? 0
  const deliverySeed = options.deliverySeed ?? 20_260_101
  const run = `${options.prefix ?? 'conformance'}-${randomId()}`
  let counter = 0
  const next = () => `${run}-${(++counter).toString(36)}`

  /** The ports of `nodes` nodes, with what `makePorts` left out filled in by shared memory ports (for several nodes). */
  const portsFor = async (nodes: number): Promise<HubPorts[]> => {
    const given = await makePorts(nodes)
    expect(given, 'makePorts(nodes) answers one set of ports per node').toHaveLength(nodes)
    const out = given.map((p) => ({ ...p }))
    const kinds = ['broker', 'store', 'presenceStore', 'limitStore'] as const
    for (const kind of kinds) {
      const have = out.filter((p) => p[kind] !== undefined).length
      if (have !== 0 && have !== nodes) throw new TypeError(`hubConformance: makePorts gave a ${kind} to ${have} of ${nodes} nodes (give it to every node or to none)`)
    }
    if (nodes > 1) {
      if (out.every((p) => p.broker === undefined)) {
        const bus = createMemoryBus()
        for (const p of out) p.broker = bus.broker()
      }
      if (out.every((p) => p.store === undefined)) {
        const store = createMemoryStore()
        for (const p of out) p.store = store
      }
      if (out.every((p) => p.presenceStore === undefined)) {
        const presenceStore = createMemoryPresenceStore()
        for (const p of out) p.presenceStore = presenceStore
      }
      if (out.every((p) => p.limitStore === undefined)) {
        const limitStore = createMemoryLimitStore()
        for (const p of out) p.limitStore = limitStore
      }
    }
    return out
  }

  describe(`Hub conformance: ${name}`, () => {
    let open: TestHub[] = []

    afterEach(async () => {
      const hubs = open
      open = []
      for (const h of hubs) await h.close()
    }, timeout)

    /** Three hubs (or `nodes`) on the ports, one manual clock, settled. */
    const cluster = async (nodes = 3, extra: HubOptions = {}) => {
      const id = next()
      const ports = await portsFor(nodes)
      const clock: ManualClock = createManualClock()
      const options: HubOptions = {
        ...extra,
        clock,
        channels: {
          // a capacity of two occupants (users once, across hubs)
          'seats:*': { subscribe: 'authenticated', capacity: 2 },
          // a publish budget of three messages a minute (across hubs)
          'budget:*': { subscribe: 'authenticated', publish: 'authenticated', publishesPerMinute: 3 },
          // at-least-once with a long history (resume, ordering across nodes)
          'room:*': { subscribe: 'authenticated', publish: 'authenticated', delivery: 'at-least-once', history: { maxCount: 10_000, maxAgeMs: 24 * 3_600_000 } },
          // at-least-once with a history of 3 messages (a resume the store cannot serve)
          'short:*': { subscribe: 'authenticated', publish: 'authenticated', delivery: 'at-least-once', history: { maxCount: 3, maxAgeMs: 24 * 3_600_000 } },
        },
        delivery: { ackTimeoutMs: ACK_TIMEOUT_MS, maxBackoffMs: 2 * ACK_TIMEOUT_MS, maxAttempts: 1_000 },
      }
      const hubs = ports.map((p, i) => createTestHub({ ...options, ...p, nodeId: `${id}-n${i}` }))
      open.push(...hubs)
      /** Frames received by every client of every hub so far (settling goes on until it stops moving). */
      const received = () => hubs.reduce((n, h) => n + h.transport.clients.reduce((m, c) => m + c.frames.length, 0), 0)
      /**
       * Settle every hub, round after round, until a whole round changed nothing a client can see
       * (work on one hub, a bus delivery, starts work on another).
       */
      const settle = async () => {
        let before = -1
        for (let round = 0; round < 20; round++) {
          for (const h of hubs) await h.settle()
          const now = received()
          if (now === before && round >= 1) {
            if (!(settleMs > 0)) return
            // Quiet by the hubs' account: give the bus its latency, and go on if anything landed.
            await new Promise((r) => setTimeout(r, settleMs))
            for (const h of hubs) await h.settle()
            if (received() === now) return
          }
          before = received()
        }
      }
      /** Move the shared clock by `ms` in steps, settling every hub before and after each. */
      const advance = async (ms: number, step = 100) => {
        for (let left = ms; left > 0; left -= step) {
          await settle()
          clock.advance(Math.min(step, left))
        }
        await settle()
      }
      await settle()
      return {
        hubs: hubs as [TestHub, TestHub, TestHub, ...TestHub[]],
        settle,
        advance,
        /** A user id of this test. */
        user: (label: string) => `${label}-${id}`,
        /** A channel name of this test under `prefix` (`public:`, `presence:`, `room:`, `short:`). */
        channel: (prefix: string) => `${prefix}${id}`,
      }
    }

    /** What an application got through a receiver (exactly-once, in order, on at-least-once channels). */
    interface App {
      readonly receiver: Receiver
      readonly got: Array<{ offset: number; n: number }>
      /** Feed this client's frames of the channel to the receiver, acknowledging on it (a reconnect brings a new client, the receiver stays). */
      listen(client: MemoryClient): void
    }
    const app = (channel: string): App => {
      let client: MemoryClient | undefined
      const got: Array<{ offset: number; n: number }> = []
      const receiver = createReceiver({
        deliver: (f) => got.push({ offset: f.offset ?? -1, n: (f.data as { n: number }).n }),
        ack: (ch, offset) => {
          if (client && !client.closed) client.ack(ch, offset)
        },
      })
      return {
        receiver,
        got,
        listen(c) {
          client = c
          c.on('frame', (f: ServerFrame) => {
            if (c !== client) return
            if (f.type === 'subscribed' && f.channel === channel) receiver.subscribed(f)
            else if (f.type === 'message' && f.channel === channel) receiver.message(f)
          })
        },
      }
    }

    const numbers = (frames: MessageFrame[]) => frames.map((m) => (m.data as { n: number }).n)
    const offsets = (frames: MessageFrame[]) => frames.map((m) => m.offset)
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
    const ids = (members: ReadonlyArray<{ id: string }>) => members.map((m) => m.id).sort()

    // ---------------------------------------------------------------- one hub: the delivery property

    it(
      `delivery on one hub over these ports: nothing lost, duplicated or reordered for the application over ${deliveryRuns} random fault schedules`,
      async () => {
        const r = await runDeliverySchedules({
          seed: deliverySeed,
          schedules: deliveryRuns,
          shrink: false,
          ports: async () => (await portsFor(1))[0]!,
          channelPrefix: () => `feed:${next()}:`,
          nodeId: () => next(),
        })
        const summary = { schedules: r.schedules, lost: r.lost, appDuplicates: r.appDuplicates, inversions: r.inversions }
        expect(r.schedules).toBe(deliveryRuns)
        // the schedules published something (a property over nothing proves nothing)
        expect(r.messages).toBeGreaterThan(deliveryRuns)
        expect({ ...summary, failures: r.failures.join('\n\n') }).toEqual({ ...summary, lost: 0, appDuplicates: 0, inversions: 0, failures: '' })
      },
      options.deliveryTimeoutMs ?? 120_000,
    )

    // ---------------------------------------------------------------- several hubs

    it('a message published on one hub, by a client or by hub.publish, reaches the subscribers on every other hub once, in publish order, with the offsets the publisher got', async () => {
      const { hubs, settle, user, channel } = await cluster()
      const [a, b, c] = hubs
      const ch = channel('public:')
      const alice = await a.connect({ userId: user('alice') })
      const subscribers = [await b.connect({ userId: user('bob') }), await c.connect({ userId: user('carol') }), await a.connect({ userId: user('dave') })]
      for (const s of subscribers) await s.subscribe(ch)
      await settle()
      const published: Array<number | undefined> = []
      // awaited one by one, alternating the client and the server
      for (let n = 1; n <= 6; n++) published.push(n % 2 === 1 ? (await alice.publish(ch, 'say', { n })).offset : (await a.hub.publish(ch, 'say', { n })).offset)
      // then ten frames in a row without waiting for their replies
      for (let n = 7; n <= 16; n++) alice.send({ type: 'message', channel: ch, event: 'say', data: { n }, id: `p${n}` })
      await settle()
      const replies = new Map(alice.received('published').map((f) => [f.id, f.offset]))
      for (let n = 7; n <= 16; n++) published.push(replies.get(`p${n}`))
      expect(published.every((o) => typeof o === 'number')).toBe(true)
      const first = published[0]!
      expect(published, 'offsets of the publishes, one after the other').toEqual(range(first, first + 15))
      for (const s of subscribers) {
        expect(numbers(s.messages(ch)), `${s.userId} on its hub`).toEqual(range(1, 16))
        expect(offsets(s.messages(ch)), `${s.userId}'s offsets`).toEqual(published)
      }
      expect(alice.messages(ch)).toEqual([])
    }, timeout)

    // Pins the per-node order of at-least-once channels (Channel.sequence in hub/delivery/recovery.ts):
    // an offset that overtakes one still on its way from another node waits for it (or for the
    // store, after the gap wait), so `prev` never names a range this node has not seen go by.
    it('messages published at once on two hubs to one at-least-once channel reach every subscriber’s application in one order, offset order, with no gap', async () => {
      const { hubs, settle, advance, user, channel } = await cluster()
      const [a, b, c] = hubs
      const ch = channel('room:')
      const apps: App[] = []
      for (const [i, h] of [a, b, c, c].entries()) {
        const x = app(ch)
        const client = await h.connect({ userId: user(`s${i}`) })
        x.listen(client)
        await client.subscribe(ch)
        apps.push(x)
      }
      const alice = await a.connect({ userId: user('alice') })
      const bob = await b.connect({ userId: user('bob') })
      await settle()
      const server: Array<Promise<{ offset: number | undefined }>> = []
      let n = 0
      for (let i = 0; i < 10; i++) {
        alice.send({ type: 'message', channel: ch, event: 'say', data: { n: ++n }, id: `a${n}` })
        bob.send({ type: 'message', channel: ch, event: 'say', data: { n: ++n }, id: `b${n}` })
        server.push(a.hub.publish(ch, 'say', { n: ++n }))
        server.push(b.hub.publish(ch, 'say', { n: ++n }))
      }
      const serverOffsets = (await Promise.all(server)).map((r) => r.offset)
      await settle()
      // time for redelivery, the only thing that fills a gap
      await advance(20 * ACK_TIMEOUT_MS)
      const all = [...serverOffsets, ...alice.received('published').map((f) => f.offset), ...bob.received('published').map((f) => f.offset)]
      expect(all).toHaveLength(n)
      const sorted = [...(all as number[])].sort((x, y) => x - y)
      expect(sorted, 'one offset per message, no gap').toEqual(range(sorted[0]!, sorted[0]! + n - 1))
      const order = apps[0]!.got.map((d) => d.n)
      for (const [i, x] of apps.entries()) {
        expect(x.got.map((d) => d.offset), `subscriber ${i}: offsets reaching the application`).toEqual(sorted)
        expect(x.got.map((d) => d.n), `subscriber ${i}: the same order as subscriber 0`).toEqual(order)
      }
    }, timeout)

    it('an at-least-once subscriber that leaves one hub and resumes on another with since gets exactly what it missed (shared store)', async () => {
      const { hubs, settle, advance, user, channel } = await cluster()
      const [a, b, c] = hubs
      const ch = channel('room:')
      const carol = await c.connect({ userId: user('carol') })
      const sam = app(ch)
      const first = await a.connect({ userId: user('sam') })
      sam.listen(first)
      await first.subscribe(ch)
      for (const n of [1, 2, 3]) await carol.publish(ch, 'say', { n })
      await settle()
      expect(sam.got.map((d) => d.n)).toEqual([1, 2, 3])
      first.drop()
      await settle()
      await carol.publish(ch, 'say', { n: 4 })
      await a.hub.publish(ch, 'say', { n: 5 })
      await b.hub.publish(ch, 'say', { n: 6 })
      await settle()
      const since = sam.receiver.position(ch)
      expect(since?.offset).toBe(sam.got[2]!.offset)
      const second = await b.connect({ userId: user('sam') })
      sam.listen(second)
      const resumed = await second.subscribe(ch, { since: since! })
      expect(resumed.recovered, resumed.reason).toBe(true)
      await carol.publish(ch, 'say', { n: 7 })
      await advance(4 * ACK_TIMEOUT_MS)
      expect(sam.got.map((d) => d.n)).toEqual([1, 2, 3, 4, 5, 6, 7])
      expect(sam.got.map((d) => d.offset)).toEqual(range(sam.got[0]!.offset, sam.got[0]!.offset + 6))
      // nothing was sent twice on the wire either: the new connection got 4 to 7, once each
      expect(numbers(second.messages(ch))).toEqual([4, 5, 6, 7])
    }, timeout)

    it('a subscriber resuming on another hub from a position the store no longer holds (trimmed, or of another epoch) is told recovered: false', async () => {
      const { hubs, settle, advance, user, channel } = await cluster()
      const [a, b, c] = hubs
      const ch = channel('short:') // keeps 3 messages
      const carol = await c.connect({ userId: user('carol') })
      const sam = app(ch)
      const first = await a.connect({ userId: user('sam') })
      sam.listen(first)
      await first.subscribe(ch)
      await carol.publish(ch, 'say', { n: 1 })
      await settle()
      expect(sam.got.map((d) => d.n)).toEqual([1])
      const since = sam.receiver.position(ch)!
      first.drop()
      await settle()
      let newest: number | undefined
      for (const n of [2, 3, 4, 5, 6]) newest = (await carol.publish(ch, 'say', { n })).offset
      await settle()
      const second = await b.connect({ userId: user('sam') })
      sam.listen(second)
      const resumed = await second.subscribe(ch, { since })
      expect(resumed.recovered).toBe(false)
      expect(resumed.reason).toEqual(expect.any(String))
      // no silent partial replay: the stream goes on from the newest position
      expect(resumed.position?.offset).toBe(newest)
      await carol.publish(ch, 'say', { n: 7 })
      await advance(4 * ACK_TIMEOUT_MS)
      expect(sam.got.map((d) => d.n)).toEqual([1, 7])

      const third = await c.connect({ userId: user('tom') })
      const other = await third.subscribe(ch, { since: { epoch: `not-an-epoch-${randomId()}`, offset: 1 } })
      expect(other.recovered).toBe(false)
    }, timeout)

    it('one idempotency key published on two hubs, and by the server on a third, gives one message (shared store dedup)', async () => {
      const { hubs, settle, user, channel } = await cluster()
      const [a, b, c] = hubs
      const ch = channel('public:')
      const subscribers = [await a.connect({ userId: user('sa') }), await b.connect({ userId: user('sb') }), await c.connect({ userId: user('sc') })]
      for (const s of subscribers) await s.subscribe(ch)
      const alice = await a.connect({ userId: user('alice') })
      const bob = await b.connect({ userId: user('bob') })
      const key = `order-${randomId()}`
      const one = await alice.publish(ch, 'created', { n: 1 }, { idempotencyKey: key })
      await settle()
      const two = await bob.publish(ch, 'created', { n: 2 }, { idempotencyKey: key })
      const three = await c.hub.publish(ch, 'created', { n: 3 }, { idempotencyKey: key })
      await settle()
      expect(one.duplicate ?? false).toBe(false)
      expect(one.offset).toEqual(expect.any(Number))
      expect([two.duplicate, two.offset]).toEqual([true, one.offset])
      expect([three.duplicate, three.offset]).toEqual([true, one.offset])
      for (const s of subscribers) expect(s.messages(ch).map((m) => [m.offset, (m.data as { n: number }).n]), s.userId).toEqual([[one.offset, 1]])
    }, timeout)

    it('a user joining a presence channel on one hub is announced to a client on another, and listed by presence:get on every hub', async () => {
      const { hubs, settle, user, channel } = await cluster()
      const [a, b, c] = hubs
      const ch = channel('presence:')
      const watcher = await c.connect({ userId: user('watcher') })
      await watcher.subscribe(ch)
      await settle()
      const alice = await a.connect({ userId: user('alice') })
      await alice.subscribe(ch, { presence: { name: 'Alice' } })
      await settle()
      expect(watcher.received('presence:join').map((f) => f.user.id)).toEqual([user('alice')])
      const bob = await b.connect({ userId: user('bob') })
      await bob.subscribe(ch)
      await settle()
      expect(watcher.received('presence:join').map((f) => f.user.id)).toEqual([user('alice'), user('bob')])
      expect(alice.received('presence:join').map((f) => f.user.id)).toEqual([user('bob')])
      const everyone = [user('alice'), user('bob'), user('watcher')].sort()
      for (const client of [watcher, alice, bob]) expect(ids((await client.getPresence(ch)).users), `presence:get on ${client.userId}'s hub`).toEqual(everyone)
      expect((await watcher.getPresence(ch)).users.find((u) => u.id === user('alice'))?.data).toEqual({ name: 'Alice' })
    }, timeout)

    it('a user with tabs on two hubs joins once and leaves once, after the last tab', async () => {
      const { hubs, settle, advance, user, channel } = await cluster()
      const [a, b, c] = hubs
      const ch = channel('presence:')
      const watcher = await c.connect({ userId: user('watcher') })
      await watcher.subscribe(ch)
      const joins = () => watcher.received('presence:join').map((f) => f.user.id)
      const leaves = () => watcher.received('presence:leave').map((f) => f.user.id)
      const bob = user('bob')
      const tab1 = await a.connect({ userId: bob })
      await tab1.subscribe(ch)
      await settle()
      const tab2 = await b.connect({ userId: bob })
      await tab2.subscribe(ch)
      await advance(1_000)
      expect(joins()).toEqual([bob])
      expect((await watcher.getPresence(ch)).users.find((u) => u.id === bob)?.connections).toBe(2)
      tab1.close()
      await advance(1_000)
      expect(leaves(), 'no leave while a tab is left').toEqual([])
      expect(ids((await watcher.getPresence(ch)).users)).toEqual([bob, user('watcher')].sort())
      tab2.close()
      await advance(1_000)
      expect(leaves()).toEqual([bob])
      expect(joins()).toEqual([bob])
      expect(ids((await watcher.getPresence(ch)).users)).toEqual([user('watcher')])
    }, timeout)

    it('a broadcast to a user reaches that user’s connections on every hub, once each, and nobody else', async () => {
      const { hubs, settle, user } = await cluster()
      const [a, b, c] = hubs
      const carol = user('carol')
      const tabs = [await a.connect({ userId: carol }), await b.connect({ userId: carol }), await b.connect({ userId: carol }), await c.connect({ userId: carol })]
      const dave = await b.connect({ userId: user('dave') })
      await settle()
      await a.hub.broadcast({ to: { users: [carol] }, event: 'direct', data: { n: 1 } })
      await settle()
      await c.hub.broadcast({ to: { users: [carol] }, event: 'direct', data: { n: 2 } })
      await settle()
      for (const [i, tab] of tabs.entries()) expect(numbers(tab.messages().filter((m) => m.event === 'direct')), `carol's connection ${i}`).toEqual([1, 2])
      expect(dave.messages()).toEqual([])
    }, timeout)

    it('the last subscriber leaving a channel on one hub does not stop delivery to the subscribers on the other hubs', async () => {
      const { hubs, settle, user, channel } = await cluster()
      const [a, b, c] = hubs
      for (const ch of [channel('public:'), channel('room:')]) {
        const x = await a.connect({ userId: user('x') })
        const y = await b.connect({ userId: user('y') })
        const z = await c.connect({ userId: user('z') })
        const publisher = await a.connect({ userId: user('p') })
        for (const s of [x, y, z]) await s.subscribe(ch)
        await publisher.publish(ch, 'say', { n: 1 })
        await settle()
        await x.unsubscribe(ch) // the last subscriber on a
        await settle()
        await publisher.publish(ch, 'say', { n: 2 })
        await a.hub.publish(ch, 'say', { n: 3 })
        await settle()
        y.close() // the last subscriber on b
        await settle()
        await b.hub.publish(ch, 'say', { n: 4 })
        await publisher.publish(ch, 'say', { n: 5 })
        await settle()
        await x.subscribe(ch) // back on a
        await settle()
        await c.hub.publish(ch, 'say', { n: 6 })
        await settle()
        expect(numbers(z.messages(ch)), `${ch}: z on c`).toEqual([1, 2, 3, 4, 5, 6])
        expect(numbers(y.messages(ch)), `${ch}: y on b`).toEqual([1, 2, 3])
        expect(numbers(x.messages(ch)), `${ch}: x on a`).toEqual([1, 6])
        for (const client of [x, z, publisher]) client.close()
        await settle()
      }
    }, timeout)

    // ---------------------------------------------------------------- cluster-wide operations

    const refusal = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as RealtimeError)

    it('connections.list on any hub lists every hub’s connections, each with its node, filtered by user or channel; get finds one on any hub', async () => {
      const { hubs, settle, user, channel } = await cluster()
      const [a, b, c] = hubs
      const ch = channel('public:')
      const alice1 = await a.connect({ userId: user('alice') })
      const alice2 = await c.connect({ userId: user('alice') })
      const bob = await b.connect({ userId: user('bob') })
      await bob.subscribe(ch)
      await settle()
      const mine = (list: ConnectionInfo[]) => list.filter((x) => x.userId?.endsWith(user('')))
      for (const t of hubs) {
        const all = mine(await t.hub.connections.list())
        expect(all.map((x) => `${x.nodeId}/${x.userId}`).sort()).toEqual([`${a.hub.nodeId}/${user('alice')}`, `${b.hub.nodeId}/${user('bob')}`, `${c.hub.nodeId}/${user('alice')}`].sort())
      }
      expect((await b.hub.connections.list({ userId: user('alice') })).map((x) => x.id).sort()).toEqual([alice1.connectionId, alice2.connectionId].sort())
      expect((await a.hub.connections.list({ channel: ch })).map((x) => x.id)).toEqual([bob.connectionId])
      expect(await a.hub.connections.get(alice2.connectionId)).toMatchObject({ userId: user('alice'), nodeId: c.hub.nodeId })
      expect(await a.hub.connections.get(`${c.hub.nodeId}.no-such`)).toBeUndefined()
      expect(a.hub.connections.local({ userId: user('alice') }).map((x) => x.id)).toEqual([alice1.connectionId])
    }, timeout)

    it('disconnectUser on one hub closes the user’s connections on every hub and counts them all; disconnect finds a connection on another hub', async () => {
      const { hubs, settle, user } = await cluster()
      const [a, b, c] = hubs
      const tabs = [await a.connect({ userId: user('alice') }), await b.connect({ userId: user('alice') }), await c.connect({ userId: user('alice') })]
      const bob = await c.connect({ userId: user('bob') })
      await settle()
      expect(await b.hub.connections.disconnectUser(user('alice'), 'bye')).toBe(3)
      await settle()
      expect(tabs.map((t) => t.closeCode)).toEqual([4000, 4000, 4000])
      expect(bob.closed).toBe(false)
      expect(await a.hub.connections.disconnect(bob.connectionId, 'admin')).toBe(true)
      await settle()
      expect(bob.closeCode).toBe(4000)
      expect(await a.hub.connections.disconnect(bob.connectionId, 'again')).toBe(false)
    }, timeout)

    it('the per-user connection limit holds across hubs, and a place is freed when a connection closes', async () => {
      const { hubs, settle, user } = await cluster(3, { limits: { maxConnectionsPerUser: 2 } })
      const [a, b, c] = hubs
      const first = await a.connect({ userId: user('alice') })
      await b.connect({ userId: user('alice') })
      const refused = await refusal(c.connect({ userId: user('alice') }))
      expect(refused).toBeInstanceOf(RealtimeError)
      expect(refused?.code).toBe('RT_001')
      await c.connect({ userId: user('bob') }) // another user is not affected
      first.drop()
      await settle()
      await c.connect({ userId: user('alice') })
      expect((await a.hub.connections.list({ userId: user('alice') })).map((x) => x.nodeId).sort()).toEqual([b.hub.nodeId, c.hub.nodeId].sort())
    }, timeout)

    it('kick on one hub ends the user’s subscriptions on every hub and counts them', async () => {
      const { hubs, settle, user, channel } = await cluster()
      const [a, b, c] = hubs
      const ch = channel('public:')
      const onA = await a.connect({ userId: user('bob') })
      const onC = await c.connect({ userId: user('bob') })
      const carol = await c.connect({ userId: user('carol') })
      for (const x of [onA, onC, carol]) await x.subscribe(ch)
      await settle()
      expect(await b.hub.channel(ch).kick(user('bob'), 'spam')).toBe(2)
      await settle()
      for (const x of [onA, onC]) expect(x.received('unsubscribed').map((f) => f.reason)).toEqual(['spam'])
      expect(carol.received('unsubscribed')).toEqual([])
      expect((await a.hub.connections.list({ channel: ch })).map((x) => x.userId)).toEqual([user('carol')])
    }, timeout)

    it('room capacity holds across hubs: a third user is refused with RT_008 on any hub, a second tab of a seated user is not, and a seat frees on leave', async () => {
      const { hubs, settle, user, channel } = await cluster()
      const [a, b, c] = hubs
      const ch = channel('seats:')
      const alice = await a.connect({ userId: user('alice') })
      await alice.subscribe(ch)
      await (await b.connect({ userId: user('bob') })).subscribe(ch)
      await settle()
      const carol = await c.connect({ userId: user('carol') })
      expect((await refusal(carol.subscribe(ch)))?.code).toBe('RT_008')
      const aliceTab = await c.connect({ userId: user('alice') })
      await aliceTab.subscribe(ch)
      alice.send({ type: 'unsubscribe', channel: ch, id: 'u1' })
      aliceTab.send({ type: 'unsubscribe', channel: ch, id: 'u2' })
      await settle()
      await carol.subscribe(ch)
      expect(carol.received('subscribed').map((f) => f.channel)).toEqual([ch])
    }, timeout)

    it('awaitAcks waits for the recipients on every hub and says who acknowledged, and resolves at once when all did', async () => {
      const { hubs, settle, advance, user, channel } = await cluster()
      const [a, b, c] = hubs
      const ch = channel('room:')
      const onB = await b.connect({ userId: user('bob') })
      const onC = await c.connect({ userId: user('carol') })
      await onB.subscribe(ch)
      await onC.subscribe(ch)
      await settle()
      const got: { result?: PublishResult | undefined } = {}
      /** The last publish's result (read through a function: each call sees the current value). */
      const result = (): PublishResult | undefined => got.result
      void a.hub.publish(ch, 'm', { n: 1 }, { awaitAcks: 300 }).then((r) => (got.result = r))
      await settle()
      onB.ack(ch, onB.messages(ch)[0]!.offset!)
      await settle()
      expect(result()).toBeUndefined()
      await advance(400)
      expect(result()?.recipients).toBe(2)
      expect(result()?.acknowledged).toEqual([{ connectionId: onB.connectionId, userId: user('bob') }])
      expect(result()?.unacknowledged).toEqual([{ connectionId: onC.connectionId, userId: user('carol') }])
      got.result = undefined
      void b.hub.publish(ch, 'm', { n: 2 }, { awaitAcks: 60_000 }).then((r) => (got.result = r))
      await settle()
      for (const s of [onB, onC]) s.ack(ch, s.messages(ch).at(-1)!.offset!)
      await settle()
      expect(result()?.acknowledged?.map((x) => x.userId).sort()).toEqual([user('bob'), user('carol')])
      expect(result()?.unacknowledged).toEqual([])
    }, timeout)

    it('one notification badge across hubs: sent on one, read on another, seen on the third', async () => {
      const { hubs, settle, user } = await cluster()
      const [a, b, c] = hubs
      const bob = user('bob')
      const bobOnB = await b.connect({ userId: bob })
      await a.hub.notifications.send(bob, { text: 'one' })
      const second = await c.hub.notifications.send(bob, { text: 'two' })
      expect(second.badge).toBe(2)
      expect(await b.hub.notifications.unread(bob)).toBe(2)
      expect(await c.hub.notifications.markRead(bob, [second.offset!])).toBe(1)
      await settle()
      expect(await a.hub.notifications.unread(bob)).toBe(1)
      expect(bobOnB.messages().filter((m) => m.event === 'notifications:badge').map((m) => m.data)).toEqual([{ count: 1 }])
      expect(await a.hub.notifications.markRead(bob)).toBe(0)
      expect(await b.hub.notifications.unread(bob)).toBe(0)
    }, timeout)

    it('the per-address connection limit holds across hubs (IPv6 counted by /64), and a place is freed when a connection closes', async () => {
      const { hubs, settle, user } = await cluster(3, { limits: { maxConnectionsPerAddress: 2 } })
      const [a, b, c] = hubs
      const ip = `2001:db8:${Math.floor(Math.random() * 0xffff).toString(16)}:1::` // a /64 of its own (a shared database)
      const first = await a.connect({ userId: user('alice'), ip: `${ip}1` })
      await b.connect({ userId: user('bob'), ip: `${ip}2` })
      expect((await refusal(c.connect({ userId: user('carol'), ip: `${ip}3` })))?.code).toBe('RT_001')
      await c.connect({ userId: user('dave'), ip: '192.0.2.7' }) // another address is not affected
      first.drop()
      await settle()
      await c.connect({ userId: user('carol'), ip: `${ip}3` })
    }, timeout)

    it('a channel’s publish budget (publishesPerMinute) holds across hubs, and a new minute brings a new budget', async () => {
      const { hubs, settle, advance, user, channel } = await cluster()
      const [a, b] = hubs
      const ch = channel('budget:')
      const onA = await a.connect({ userId: user('alice') })
      const onB = await b.connect({ userId: user('bob') })
      await onA.publish(ch, 'say', { n: 1 })
      await onB.publish(ch, 'say', { n: 2 })
      await onA.publish(ch, 'say', { n: 3 })
      const over = await refusal(onB.publish(ch, 'say', { n: 4 }))
      expect(over?.code).toBe('RT_006')
      await settle()
      await advance(60_000, 10_000)
      await onB.publish(ch, 'say', { n: 5 })
    }, timeout)
  })
}
