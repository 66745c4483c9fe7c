import type { ClusterMessage, Dispatch } from '@tidings/core'
import { brokerConformance } from '@tidings/core/conformance'
import { Cluster, Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type RedisBroker, RedisBrokerError, createRedisBroker } from '../src/index.js'
import { type RedisCluster, type RedisServer, startCluster, startRedis, until } from './servers.js'

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

let server: RedisServer
let cluster: RedisCluster
/** Every client a test made (the app's connections), disconnected after each test. */
let clients: Array<Redis | Cluster> = []

beforeAll(async () => {
  server = await startRedis()
  cluster = await startCluster()
}, 90_000)
afterAll(async () => {
  await server?.stop()
  await cluster?.stop()
})
afterEach(() => {
  for (const c of clients) c.disconnect()
  clients = []
})

/** An app's connection to the standalone server, reconnecting quickly (as a test wants). */
const standalone = (): Redis => {
  const c = new Redis(server.port, '127.0.0.1', { retryStrategy: () => 50, lazyConnect: false })
  c.on('error', () => undefined)
  clients.push(c)
  return c
}
const clusterClient = (): Cluster => {
  const c = new Cluster(cluster.nodes, { clusterRetryStrategy: () => 100 })
  c.on('error', () => undefined)
  clients.push(c)
  return c
}

const reported: Error[] = []
afterEach(() => {
  // Nothing the conformance suites publish is ever malformed or misrouted.
  expect(reported.filter((e) => e instanceof RedisBrokerError && (e.reason === 'malformed' || e.reason === 'misrouted'))).toEqual([])
  reported.length = 0
})

brokerConformance('Redis (standalone)', (n) => Array.from({ length: n }, () => createRedisBroker({ client: standalone(), onError: (e) => reported.push(e) })), { prefix: 'redis', timeoutMs: 15_000 })
brokerConformance('Redis Cluster (sharded pub/sub)', (n) => Array.from({ length: n }, () => createRedisBroker({ client: clusterClient(), onError: (e) => reported.push(e) })), { prefix: 'redis-cluster', timeoutMs: 20_000, quietMs: 100 })

// ---------------------------------------------------------------------- the broker's own guarantees

interface Node {
  readonly id: string
  readonly broker: RedisBroker
  readonly got: ClusterMessage[]
  readonly errors: Error[]
  /** Times the broker told the hub it is subscribed again after a loss (`hooks.resumed`). */
  resumed: number
}

let seq = 0
const brokers: RedisBroker[] = []
afterEach(async () => {
  for (const b of brokers.splice(0)) await b.close()
})

/** A started node with its own app connection, on a prefix of its own test. */
async function node(prefix: string, client: Redis | Cluster = standalone(), extra: Partial<Parameters<typeof createRedisBroker>[0]> = {}): Promise<Node> {
  const errors: Error[] = []
  const broker = createRedisBroker({ client, prefix, onError: (e) => errors.push(e), ...extra })
  brokers.push(broker)
  const n: Node = { id: `n${++seq}`, broker, got: [], errors, resumed: 0 }
  await broker.start(n.id, (m) => n.got.push(m), { resumed: () => n.resumed++ })
  return n
}

const channelDispatch = (origin: string, channel: string, i: number): Dispatch => ({
  kind: 'dispatch',
  origin,
  target: { kind: 'channel', channel },
  frame: { type: 'message', channel, event: 'say', data: { i }, id: `${origin}-${i}`, timestamp: new Date(0).toISOString() },
})
const numbers = (n: Node, channel?: string) =>
  n.got.filter((m): m is Dispatch => m.kind === 'dispatch' && (channel === undefined || (m.target.kind === 'channel' && m.target.channel === channel))).map((m) => (m.frame as { data: { i: number } }).data.i)


describe('Redis broker: interest', () => {
  for (const kind of ['standalone', 'cluster'] as const) {
    it(`a node without local subscribers of a channel receives none of its messages, not even at its subscriber connection (${kind})`, async () => {
      const prefix = `interest-${kind}-${seq}:`
      const make = () => node(prefix, kind === 'cluster' ? clusterClient() : standalone())
      const a = await make()
      const b = await make()
      const c = await make()
      await b.broker.subscribe('room:1')
      for (let i = 1; i <= 30; i++) await a.broker.publish(channelDispatch(a.id, 'room:1', i))
      await until(() => expect(numbers(b)).toHaveLength(30))
      await sleep(200)
      expect(numbers(b)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1))
      // c never had interest: Redis sent it nothing (counted where messages arrive, before any filter)
      expect(c.broker.stats().received).toBe(0)
      expect(c.got).toEqual([])
      // a publishes, but is not subscribed either: its own channel messages do not come back to it
      expect(a.broker.stats().received).toBe(0)
      expect(b.broker.stats()).toMatchObject({ received: 30, delivered: 30, ignored: 0, malformed: 0 })
      // once b's interest ends, nothing more reaches its connection
      await b.broker.unsubscribe('room:1')
      for (let i = 31; i <= 40; i++) await a.broker.publish(channelDispatch(a.id, 'room:1', i))
      await sleep(200)
      expect(b.broker.stats().received).toBe(30)
    }, 30_000)
  }

  it('Redis counts one subscriber of a channel topic per interested node, and every node on the shared topic', async () => {
    const prefix = `numsub-${seq}:`
    const a = await node(prefix)
    const b = await node(prefix)
    await b.broker.subscribe('room:x')
    const raw = standalone()
    const counts = (await raw.call('PUBSUB', 'NUMSUB', `${prefix}ch:room:x`, `${prefix}all`, `${prefix}node:${a.id}`)) as Array<string | number>
    expect(counts).toEqual([`${prefix}ch:room:x`, 1, `${prefix}all`, 2, `${prefix}node:${a.id}`, 1])
  })
})

describe('Redis broker: outages', () => {
  it('resubscribes after Redis restarts: delivery resumes, including channels subscribed while Redis was down, and not those left while down', async () => {
    const prefix = `restart-${seq}:`
    const a = await node(prefix)
    const b = await node(prefix)
    await b.broker.subscribe('room:before')
    await b.broker.subscribe('room:left-while-down')
    await a.broker.publish(channelDispatch(a.id, 'room:before', 1))
    await until(() => expect(numbers(b, 'room:before')).toEqual([1]))

    await server.kill()
    await until(() => expect(b.broker.health().state).toBe('down'))
    // interest changes while Redis is down answer at once (they do not wait for Redis)
    const during = b.broker.subscribe('room:during')
    await Promise.race([Promise.resolve(during), sleep(1_000).then(() => Promise.reject(new Error('subscribe waited for Redis')))])
    await b.broker.unsubscribe('room:left-while-down')
    await server.start()

    await until(() => {
      expect(a.broker.health().state).toBe('up')
      expect(b.broker.health().state).toBe('up')
    })
    await a.broker.publish(channelDispatch(a.id, 'room:before', 2))
    await a.broker.publish(channelDispatch(a.id, 'room:during', 3))
    await a.broker.publish(channelDispatch(a.id, 'room:left-while-down', 4))
    await a.broker.publish({ kind: 'request', origin: a.id, id: 'q1', query: { op: 'disconnect', userId: 'u', reason: 'r' } })
    await until(() => {
      expect(numbers(b, 'room:before')).toEqual([1, 2])
      expect(numbers(b, 'room:during')).toEqual([3])
      expect(b.got.filter((m) => m.kind === 'request')).toHaveLength(1)
    })
    await sleep(100)
    expect(numbers(b, 'room:left-while-down')).toEqual([])
    expect(b.broker.stats().resubscribes).toBeGreaterThanOrEqual(2)
    // Redis itself has b on the channel subscribed while down, and nobody on the one left
    const raw = standalone()
    expect(await raw.call('PUBSUB', 'NUMSUB', `${prefix}ch:room:during`, `${prefix}ch:room:left-while-down`)).toEqual([`${prefix}ch:room:during`, 1, `${prefix}ch:room:left-while-down`, 0])
  }, 30_000)

  it('a subscriber connection killed by Redis (CLIENT KILL) reconnects and subscribes everything again', async () => {
    const prefix = `kill-${seq}:`
    const a = await node(prefix)
    const b = await node(prefix)
    await b.broker.subscribe('room:k')
    const raw = standalone()
    const before = b.broker.stats().resubscribes
    expect(b.resumed).toBe(0)
    await raw.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
    await until(() => expect(b.broker.stats().resubscribes).toBeGreaterThan(before))
    await until(() => expect(b.broker.health().state).toBe('up'))
    // the hub is told, so it looks at once for what the bus may have dropped meanwhile
    expect(b.resumed).toBeGreaterThanOrEqual(1)
    await a.broker.publish(channelDispatch(a.id, 'room:k', 1))
    await until(() => expect(numbers(b, 'room:k')).toEqual([1]))
  }, 20_000)

  it('while Redis is down nothing throws or crashes and nothing is left unhandled: publish rejects, health says down, errors are reported once, then up again', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const prefix = `down-${seq}:`
      const a = await node(prefix)
      const b = await node(prefix)
      await b.broker.subscribe('room:d')
      expect(a.broker.health().state).toBe('up')
      const upSince = a.broker.health().since

      await server.kill()
      await until(() => expect(a.broker.health().state).toBe('down'))
      const down = a.broker.health()
      expect(down.since).toBeGreaterThanOrEqual(upSince)
      expect(down.reason).toBeTruthy()

      // publish: never a synchronous throw, a rejection with the cause, at once (not queued until Redis returns)
      let answer: unknown
      expect(() => {
        answer = a.broker.publish(channelDispatch(a.id, 'room:d', 1))
      }).not.toThrow()
      const asked = Date.now()
      await expect(Promise.resolve(answer)).rejects.toMatchObject({ name: 'RedisBrokerError', reason: 'unavailable' })
      // A queued publish would wait for Redis, which stays down until later in this test; the
      // bound is below ioredis's 10 s connect timeout and leaves room for a loaded machine.
      expect(Date.now() - asked).toBeLessThan(3_000)
      // fire-and-forget publishes, as the hub makes them, while Redis stays down for a while
      for (let i = 0; i < 20; i++) void Promise.resolve(a.broker.publish(channelDispatch(a.id, 'room:d', 100 + i))).catch(() => undefined)
      await sleep(1_500)
      expect(a.broker.health()).toMatchObject({ state: 'down', since: down.since })
      // the subscriber's reconnect attempts (every 50 ms or so) are reported once per outage, not each time
      expect(b.errors.filter((e) => (e as RedisBrokerError).reason === 'subscriber').length).toBeLessThanOrEqual(1)
      expect(a.broker.stats().rejected).toBeGreaterThanOrEqual(21)

      await server.start()
      await until(() => expect(a.broker.health().state).toBe('up'))
      expect(a.broker.health().since).toBeGreaterThan(down.since)
      await a.broker.publish(channelDispatch(a.id, 'room:d', 2))
      await until(() => expect(numbers(b, 'room:d')).toEqual([2]))
      await sleep(50)
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  }, 30_000)

  it('a broker started while Redis is down answers start, reports it, and subscribes once Redis is back', async () => {
    const prefix = `late-${seq}:`
    const a = await node(prefix)
    await server.kill()
    const errors: Error[] = []
    const late = createRedisBroker({ client: standalone(), prefix, onError: (e) => errors.push(e) })
    brokers.push(late)
    const got: ClusterMessage[] = []
    await late.start('late', (m) => got.push(m))
    await late.subscribe('room:l')
    expect(late.health().state).toBe('down')
    expect(errors.length).toBeGreaterThanOrEqual(1)
    await server.start()
    await until(() => {
      expect(late.health().state).toBe('up')
      expect(a.broker.health().state).toBe('up')
    })
    await a.broker.publish(channelDispatch(a.id, 'room:l', 1))
    await until(() => expect(got).toHaveLength(1))
  }, 30_000)
})

describe('Redis broker: probes (health that does not stay green over a dead subscription)', () => {
  it('subscriptions lost without a reconnect are noticed by the probe (Redis reports no subscriber) and made again', async () => {
    const prefix = `probe-gone-${seq}:`
    const given = standalone()
    const a = await node(prefix)
    const b = await node(prefix, standalone(), { subscriber: given, probeIntervalMs: 100 })
    await b.broker.subscribe('room:p')
    const before = b.broker.stats().resubscribes
    // someone else unsubscribes the connection behind the broker's back: no reconnect, no event
    await given.unsubscribe()
    await until(() => expect(b.broker.stats().resubscribes).toBeGreaterThan(before), 5_000)
    expect(b.errors.some((e) => (e as RedisBrokerError).reason === 'probe')).toBe(true)
    await until(() => expect(b.broker.health().state).toBe('up'))
    await a.broker.publish(channelDispatch(a.id, 'room:p', 1))
    await until(() => expect(numbers(b, 'room:p')).toEqual([1]))
  }, 20_000)

  it('a wedged subscriber connection (open, but nothing arrives) turns health down and is reconnected', async () => {
    const prefix = `probe-wedged-${seq}:`
    const given = standalone()
    const a = await node(prefix)
    const b = await node(prefix, standalone(), { subscriber: given, probeIntervalMs: 100 })
    await b.broker.subscribe('room:w')
    await until(() => expect(b.broker.health().state).toBe('up'))
    // this process stops reading the subscriber's socket: Redis still sends, nothing arrives
    given.stream.pause()
    const seen: string[] = []
    await until(() => {
      seen.push(b.broker.health().state)
      expect(seen).toContain('down')
    }, 5_000)
    expect(b.errors.some((e) => (e as RedisBrokerError).reason === 'probe')).toBe(true)
    await until(() => expect(b.broker.health().state).toBe('up'), 5_000)
    await a.broker.publish(channelDispatch(a.id, 'room:w', 1))
    await until(() => expect(numbers(b, 'room:w')).toEqual([1]))
  }, 20_000)
})

describe('Redis broker: what arrives', () => {
  it('malformed envelopes published by a raw client are dropped and reported, never handed to the hub', async () => {
    const prefix = `malformed-${seq}:`
    const b = await node(prefix)
    await b.broker.subscribe('room:m')
    const raw = standalone()
    const good = channelDispatch('someone', 'room:m', 1)
    const bad: Array<[string, string]> = [
      [`${prefix}all`, 'not json {'],
      [`${prefix}all`, '[1,2,3]'],
      [`${prefix}all`, JSON.stringify({ kind: 'dispatch' })],
      [`${prefix}all`, JSON.stringify({ kind: 'gossip', origin: 'x' })],
      [`${prefix}all`, JSON.stringify({ kind: 'dispatch', origin: 'x', target: { kind: 'all' }, frame: { type: 'not-a-frame' } })],
      [`${prefix}all`, JSON.stringify({ kind: 'dispatch', origin: 'x', target: { kind: 'direct', users: 'bob' }, frame: good.frame })],
      [`${prefix}all`, JSON.stringify({ kind: 'request', origin: 'x', id: 'q', query: { op: 'drop-tables' } })],
      [`${prefix}all`, JSON.stringify({ kind: 'reply', origin: 'x', to: b.id, result: 1 })],
      // well formed, but on a topic it does not belong on
      [`${prefix}all`, JSON.stringify(good)],
      [`${prefix}node:${b.id}`, JSON.stringify({ kind: 'request', origin: 'x', id: 'q', query: { op: 'kick', channel: 'c', userId: 'u', reason: 'r' } })],
    ]
    for (const [topic, payload] of bad) await raw.publish(topic, payload)
    await raw.publish(`${prefix}ch:room:m`, JSON.stringify(good))
    await until(() => expect(b.got).toHaveLength(1))
    await sleep(100)
    expect(b.got).toEqual([good])
    expect(b.broker.stats()).toMatchObject({ received: bad.length + 1, malformed: bad.length, delivered: 1 })
    const dropped = b.errors.filter((e) => e instanceof RedisBrokerError && (e.reason === 'malformed' || e.reason === 'misrouted'))
    expect(dropped).toHaveLength(bad.length)
    expect(dropped.filter((e) => (e as RedisBrokerError).reason === 'misrouted')).toHaveLength(2)
  })

  it('a message for a channel the node left is not delivered even if Redis still sends it (a node re-delivers nothing it does not want)', async () => {
    const prefix = `stray-${seq}:`
    const b = await node(prefix)
    // a subscription Redis has that the broker does not want (as one left over from before a reconnect)
    const raw = standalone()
    await b.broker.subscribe('room:s')
    await b.broker.unsubscribe('room:s')
    await raw.publish(`${prefix}ch:room:s`, JSON.stringify(channelDispatch('x', 'room:s', 1)))
    await b.broker.publish(channelDispatch(b.id, 'room:own', 2))
    await sleep(150)
    expect(b.got).toEqual([])
  })

  it('close is idempotent and closes only the connections it made: the app client and a given subscriber stay open', async () => {
    const prefix = `close-${seq}:`
    const app = standalone()
    const given = standalone()
    const own = await node(prefix, app)
    const withGiven = await node(prefix, app, { subscriber: given })
    await withGiven.broker.subscribe('room:c')
    const names = async () => ((await app.client('LIST')) as string).split('\n').filter((l) => l.includes(`name=tidings-broker:${own.id}`)).length
    expect(await names()).toBe(1)
    await own.broker.close()
    await own.broker.close()
    await withGiven.broker.close()
    await withGiven.broker.close()
    await until(async () => expect(await names()).toBe(0))
    expect(app.status).toBe('ready')
    expect(await app.ping()).toBe('PONG')
    expect(given.status).toBe('ready')
    // the given subscriber was handed back without the broker's topics
    expect(await app.call('PUBSUB', 'NUMSUB', `${prefix}ch:room:c`)).toEqual([`${prefix}ch:room:c`, 0])
    expect(own.broker.health()).toMatchObject({ state: 'down', reason: 'closed' })
    // publishing after close: nothing, no throw
    expect(() => own.broker.publish(channelDispatch(own.id, 'room:c', 1))).not.toThrow()
  })
})
