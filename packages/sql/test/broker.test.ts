import type { ClusterMessage, Dispatch } from '@tidings/core'
import { brokerConformance } from '@tidings/core/conformance'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type PostgresBroker, PostgresBrokerError, createPostgresBroker } from '../src/broker.js'
import { notifyChannel } from '../src/notify.js'
import { type PostgresServer, sleep, startPostgres, until } from './postgres.js'

let server: PostgresServer
let url: string
beforeAll(async () => {
  server = await startPostgres()
  url = await server.createDatabase()
}, 60_000)
afterAll(async () => {
  await server?.stop()
})

const reported: Error[] = []
afterEach(() => {
  // Nothing the conformance suite publishes is ever malformed or misrouted.
  expect(reported.filter((e) => e instanceof PostgresBrokerError && (e.reason === 'malformed' || e.reason === 'misrouted'))).toEqual([])
  reported.length = 0
})

// Each node its own pool and LISTEN connection, as separate processes would have.
brokerConformance('PostgreSQL LISTEN/NOTIFY', (n) => Array.from({ length: n }, () => createPostgresBroker({ connectionString: url, onError: (e) => reported.push(e) })), { prefix: 'pg', timeoutMs: 15_000 })
// The same with a tiny inline limit: every message travels through the outbox.
brokerConformance('PostgreSQL LISTEN/NOTIFY, everything through the outbox', (n) => Array.from({ length: n }, () => createPostgresBroker({ connectionString: url, inlineLimit: 64, onError: (e) => reported.push(e) })), { prefix: 'pg-outbox', timeoutMs: 15_000 })

// Hub channels hashed into 4 NOTIFY channels: interest holds by filtering on arrival.
brokerConformance('PostgreSQL LISTEN/NOTIFY, channels in 4 buckets', (n) => Array.from({ length: n }, () => createPostgresBroker({ connectionString: url, channelBuckets: 4, onError: (e) => reported.push(e) })), { prefix: 'pg-buckets', timeoutMs: 15_000 })

// ---------------------------------------------------------------------- the broker's own guarantees

interface Node {
  readonly id: string
  readonly broker: PostgresBroker
  readonly got: ClusterMessage[]
  readonly errors: Error[]
  resumed: number
}
let seq = 0
const open: PostgresBroker[] = []
const pools: pg.Pool[] = []
afterEach(async () => {
  for (const b of open.splice(0)) await b.close()
  for (const p of pools.splice(0)) await p.end()
})
async function node(extra: Partial<Parameters<typeof createPostgresBroker>[0]> = {}, channels: string[] = []): Promise<Node> {
  const errors: Error[] = []
  const broker = createPostgresBroker({ connectionString: url, onError: (e) => errors.push(e), ...extra })
  open.push(broker)
  const n: Node = { id: `own-${process.pid}-${++seq}`, broker, got: [], errors, resumed: 0 }
  await broker.start(n.id, (m) => n.got.push(m), { resumed: () => n.resumed++ })
  for (const c of channels) await broker.subscribe(c)
  return n
}
const say = (origin: string, channel: string, data: unknown, id = 'm'): Dispatch => ({
  kind: 'dispatch',
  origin,
  target: { kind: 'channel', channel },
  frame: { type: 'message', channel, event: 'say', data, id, timestamp: new Date(1_767_225_600_000).toISOString() } as Dispatch['frame'],
})
const dataOf = (m: ClusterMessage) => (m.kind === 'dispatch' ? (m.frame as { data: unknown }).data : undefined)
const admin = async () => {
  const p = new pg.Pool({ connectionString: url, max: 2 })
  pools.push(p)
  return p
}

describe('payloads over NOTIFY’s limit', () => {
  it('a 200 KB message between small ones arrives intact and in publish order (outbox), and the outbox is emptied after its TTL', async () => {
    const a = await node({ outboxTtlMs: 1_000 }, ['big'])
    const b = await node({}, ['big'])
    const big = { text: 'é'.repeat(100_000), list: Array.from({ length: 100 }, (_, i) => ({ i })) }
    const sent = [{ n: 1 }, big, { n: 2 }, { n: 3, text: 'x'.repeat(7_990) }, { n: 4 }]
    // not awaited one by one: publishes that wait for a statement go together, still in order
    await Promise.all(sent.map((d, i) => a.broker.publish(say(a.id, 'big', d, `m${i}`))))
    await until(() => expect(b.got.map(dataOf)).toEqual(sent))
    expect(a.broker.stats()).toMatchObject({ published: 5, outboxWrites: 2 })
    expect(b.broker.stats()).toMatchObject({ outboxReads: 2, outboxMisses: 0 })
    const db = await admin()
    await until(async () => expect((await db.query('SELECT count(*)::int AS n FROM tidings_broker_outbox')).rows[0].n).toBe(0), 5_000)
  }, 20_000)

  it('an outbox reference whose row is gone (read after the TTL) is reported as lost and makes the hub look for gaps, never dropped silently', async () => {
    const b = await node({}, ['gone'])
    const db = await admin()
    await db.query('SELECT pg_notify($1, $2)', [notifyChannel('tidings', 'ch:gone'), JSON.stringify({ t: 'ch:gone', s: 1, o: 'someone', x: 'no-such-row' })])
    await until(() => expect(b.broker.stats().outboxMisses).toBe(1))
    expect(b.resumed).toBe(1)
    expect(b.errors.map((e) => (e as PostgresBrokerError).reason)).toContain('outbox')
    expect(b.got).toEqual([])
  })
})

describe('what arrives on a NOTIFY channel is checked', () => {
  it('a malformed or misrouted notification from another client is reported and dropped, and later messages still arrive', async () => {
    const b = await node({}, ['checked'])
    const a = await node()
    const db = await admin()
    const ch = notifyChannel('tidings', 'ch:checked')
    await db.query('SELECT pg_notify($1, $2)', [ch, 'not json'])
    await db.query('SELECT pg_notify($1, $2)', [ch, JSON.stringify({ t: 'ch:other', s: 1, m: say('x', 'other', 1) })])
    await db.query('SELECT pg_notify($1, $2)', [ch, JSON.stringify({ t: 'ch:checked', s: 2, m: { ...say('x', 'checked', 1), frame: { type: 'nonsense' } } })])
    await a.broker.publish(say(a.id, 'checked', 'fine'))
    await until(() => expect(b.got.map(dataOf)).toEqual(['fine']))
    expect(b.broker.stats().malformed).toBe(3)
    expect(b.errors.map((e) => (e as PostgresBrokerError).reason).sort()).toEqual(['malformed', 'malformed', 'misrouted'])
  })

  it('channel names of any length and content (quotes, semicolons, unicode, 1,000 characters) are listened to safely and stay apart', async () => {
    const names = [`x"; DROP TABLE tidings_broker_outbox; --`, "it's", 'ünï/cödé 💬', 'c'.repeat(1_000), 'C'.repeat(1_000)]
    const b = await node({}, names)
    const a = await node()
    for (const [i, name] of names.entries()) await a.broker.publish(say(a.id, name, i))
    await until(() => expect(b.got.map((m) => (m.kind === 'dispatch' && m.target.kind === 'channel' ? [m.target.channel, dataOf(m)] : null))).toEqual(names.map((n, i) => [n, i])))
    const db = await admin()
    expect((await db.query(`SELECT to_regclass('tidings_broker_outbox') IS NOT NULL AS ok`)).rows[0].ok).toBe(true)
    await b.broker.unsubscribe(names[3]!)
    await a.broker.publish(say(a.id, names[3]!, 'after'))
    await a.broker.publish(say(a.id, names[4]!, 'after'))
    await until(() => expect(b.got.map(dataOf)).toContain('after'))
    await sleep(100)
    expect(b.got.filter((m) => dataOf(m) === 'after')).toHaveLength(1)
  })

  it('with channelBuckets a node listens per bucket: another channel of its bucket arrives and is dropped, and the last unsubscribe of the bucket stops it', async () => {
    const b = await node({ channelBuckets: 1 }, ['x', 'z'])
    const a = await node({ channelBuckets: 1 })
    await a.broker.publish(say(a.id, 'y', 'unwanted'))
    await a.broker.publish(say(a.id, 'x', 'wanted'))
    await until(() => expect(b.got.map(dataOf)).toEqual(['wanted']))
    expect(b.broker.stats()).toMatchObject({ received: 2, ignored: 1, delivered: 1 })
    await b.broker.unsubscribe('x')
    await a.broker.publish(say(a.id, 'x', 'still listened (z shares the bucket), dropped'))
    await until(() => expect(b.broker.stats().ignored).toBe(2))
    await b.broker.unsubscribe('z')
    await a.broker.publish(say(a.id, 'x', 'not listened'))
    await a.broker.publish({ kind: 'request', origin: a.id, id: 'q', query: { op: 'kick', channel: 'x', userId: 'u', reason: 'r' } })
    await until(() => expect(b.got).toHaveLength(2))
    // the request on the all-nodes channel arrived; the dispatch to the unlistened bucket never did
    expect(b.broker.stats().received).toBe(4)
  })

  it('brokers with another channelPrefix are another cluster: they never hear each other', async () => {
    const a = await node({ channelPrefix: 'blue' }, ['shared'])
    const b = await node({ channelPrefix: 'green' }, ['shared'])
    const c = await node({ channelPrefix: 'blue' }, ['shared'])
    await a.broker.publish(say(a.id, 'shared', 'blue'))
    await until(() => expect(c.got.map(dataOf)).toEqual(['blue']))
    await sleep(100)
    expect(b.got).toEqual([])
    expect(() => createPostgresBroker({ connectionString: url, channelPrefix: 'Bad-Prefix' })).toThrow(TypeError)
  })
})

describe('the LISTEN connection', () => {
  it('killed by the server (pg_terminate_backend): reported once, health down, reconnected with every channel, resumed called, messages flow again', async () => {
    const b = await node({ reconnect: { minMs: 50, maxMs: 200 } }, ['k1', 'k2'])
    const a = await node()
    expect(b.broker.health().state).toBe('up')
    const db = await admin()
    const killed = await db.query(`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1`, [`tidings-broker:${b.id}`])
    expect(killed.rows).toEqual([{ ok: true }])
    await until(() => expect(b.errors.map((e) => (e as PostgresBrokerError).reason)).toContain('listener'))
    await until(() => expect(b.resumed).toBe(1))
    expect(b.broker.health().state).toBe('up')
    expect(b.broker.stats().reconnects).toBe(1)
    await a.broker.publish(say(a.id, 'k1', 1))
    await a.broker.publish(say(a.id, 'k2', 2))
    await a.broker.publish({ kind: 'request', origin: a.id, id: 'q', query: { op: 'kick', channel: 'k1', userId: 'u', reason: 'r' } })
    await until(() => expect(b.got).toHaveLength(3))
    expect(b.errors.filter((e) => (e as PostgresBrokerError).reason === 'listener')).toHaveLength(1)
  })

  it('while its own LISTEN connection is down a publish answers at commit (no fence to wait for), and the others still get it', async () => {
    const a = await node({ reconnect: { minMs: 3_000, maxMs: 3_000 }, fenceTimeoutMs: 10_000 })
    const b = await node({}, ['fenced'])
    const db = await admin()
    await db.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [`tidings-broker:${a.id}`])
    await until(() => expect(a.broker.health().state).toBe('down'))
    const t0 = Date.now()
    await a.broker.publish(say(a.id, 'fenced', 1))
    expect(Date.now() - t0).toBeLessThan(2_000)
    await until(() => expect(b.got.map(dataOf)).toEqual([1]))
  })

  it('health is down before start and after close, with the reason', async () => {
    const broker = createPostgresBroker({ connectionString: url })
    expect(broker.health()).toMatchObject({ state: 'down', reason: 'not started' })
    await broker.start(`own-${process.pid}-h`, () => undefined)
    expect(broker.health().state).toBe('up')
    await broker.close()
    expect(broker.health()).toMatchObject({ state: 'down', reason: 'closed' })
  })

  it('a publish that PostgreSQL refuses (no outbox table) rejects with the cause, and later publishes still go out', async () => {
    const a = await node({ createTables: false, tablePrefix: 'missing_' })
    const b = await node({}, ['r'])
    const refused: unknown = await Promise.resolve(a.broker.publish(say(a.id, 'r', 'x'.repeat(10_000)))).then(
      () => 'accepted',
      (e: unknown) => e,
    )
    expect(refused).toBeInstanceOf(PostgresBrokerError)
    expect((refused as PostgresBrokerError).reason).toBe('unavailable')
    expect(a.broker.stats().rejected).toBe(1)
    await a.broker.publish(say(a.id, 'r', 'small'))
    await until(() => expect(b.got.map(dataOf)).toEqual(['small']))
  })
})
