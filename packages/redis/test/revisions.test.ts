/**
 * What the Redis store keeps for message revisions, search and consumers' channel lists, on a real
 * standalone redis-server: the keys beside each stream stay bounded by retention, entries read back
 * as they were written before revisions existed, and a consumer's list forgets lost channels.
 */
import type { StoredMessage } from '@tidings/core'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedisStore } from '../src/index.js'
import { CONSUMER_CHANNELS_LIMIT, SEARCH_SCAN_LIMIT, channelTag } from '../src/store.js'
import { type RedisServer, startRedis } from './servers.js'

let server: RedisServer
let client: Redis

beforeAll(async () => {
  server = await startRedis()
  client = new Redis(server.port, server.host, { maxRetriesPerRequest: null })
})

afterAll(async () => {
  client.disconnect()
  await server.stop()
})

const KEEP = { maxCount: 1_000, maxAgeMs: 3_600_000 }
const T0 = 1_700_000_000_000
const msg = (n: number, extra: Partial<StoredMessage> = {}) => ({ id: `m${n}`, event: 'e', data: { text: `message ${n}` }, sender: 'alice', timestamp: T0 + n, ...extra })
const keyOf = (prefix: string, channel: string, suffix: string) => `${prefix}{${channelTag(channel)}}:${suffix}`

describe('redis store: revisions beside the stream', () => {
  it('revisions of messages that retention trims by count leave Redis with them (the revisions hash never holds more than the retained messages)', async () => {
    const store = createRedisStore({ client, prefix: 'rv-count:' })
    const ch = 'trimmed'
    const revisions = keyOf('rv-count:', ch, 'r')
    const retention = { maxCount: 3, maxAgeMs: 3_600_000 }
    for (let n = 1; n <= 500; n++) {
      await store.append(ch, msg(n), { retention, now: T0 + n })
      expect(await client.hlen(revisions)).toBeLessThanOrEqual(2) // the append trimmed n - 3 with its revision
      expect((await store.revise(ch, n, { data: { text: `edited ${n}` } }, { now: T0 + n }))?.message.version).toBe(2)
      if (n % 2 === 0) await store.revise(ch, n - 1, { deleted: true }, { now: T0 + n })
      expect(await client.hlen(revisions)).toBeLessThanOrEqual(3)
    }
    expect((await client.hkeys(revisions)).map(Number).sort((a, b) => a - b)).toEqual([498, 499, 500])
    const r = await store.read(ch, { after: 0, limit: 10, now: T0 + 500 })
    expect(r.messages.map((m) => [m.offset, m.version, m.deleted ?? false, m.data])).toEqual([
      [498, 2, false, { text: 'edited 498' }],
      [499, 3, true, null],
      [500, 2, false, { text: 'edited 500' }],
    ])
    for (let n = 501; n <= 503; n++) await store.append(ch, msg(n), { retention, now: T0 + n })
    expect(await client.exists(revisions)).toBe(0)
  })

  it('revisions of messages that expire by age go when a read drops them, and the key with the last one', async () => {
    const store = createRedisStore({ client, prefix: 'rv-age:' })
    const ch = 'aged'
    const retention = { maxCount: 100, maxAgeMs: 1_000 }
    for (let n = 1; n <= 3; n++) await store.append(ch, msg(n), { retention, now: T0 + n })
    for (let n = 1; n <= 3; n++) await store.revise(ch, n, { data: 'x' }, { now: T0 + 3 })
    expect(await client.hlen(keyOf('rv-age:', ch, 'r'))).toBe(3)
    expect((await store.read(ch, { after: 0, limit: 10, now: T0 + 1_002 })).messages.map((m) => m.offset)).toEqual([2, 3])
    expect(await client.hkeys(keyOf('rv-age:', ch, 'r'))).toEqual(['2', '3'])
    expect(await store.revise(ch, 3, { data: 'y' }, { now: T0 + 5_000 })).toBeUndefined()
    expect(await client.exists(keyOf('rv-age:', ch, 'r'))).toBe(0)
  })

  it('a revision left behind by a store that knew no revisions (its message trimmed) is swept by the next revise', async () => {
    const store = createRedisStore({ client, prefix: 'rv-sweep:' })
    const ch = 'upgrade'
    for (let n = 1; n <= 6; n++) await store.append(ch, msg(n), { retention: { maxCount: 2, maxAgeMs: 3_600_000 }, now: T0 })
    await client.hset(keyOf('rv-sweep:', ch, 'r'), '1', '2|J"old"', '3', '2|D') // as if trimmed without them
    await store.revise(ch, 6, { data: 'new' }, { now: T0 })
    expect(await client.hkeys(keyOf('rv-sweep:', ch, 'r'))).toEqual(['6'])
  })

  it('a message never revised reads back exactly as before revisions existed: the same six-field entry, no version, deleted or revises key', async () => {
    const store = createRedisStore({ client, prefix: 'rv-plain:' })
    const ch = 'plain'
    await store.append(ch, msg(1), { retention: KEEP, now: T0 })
    await store.append(ch, msg(2, { data: { text: 'fixed' }, revises: { offset: 1, version: 2 } }), { retention: KEEP, now: T0 })
    const raw = await client.xrange(keyOf('rv-plain:', ch, 's'), '-', '+')
    expect(JSON.parse(raw[0]![1][1]!)).toEqual(['m1', 'e', { text: 'message 1' }, 'alice', T0 + 1, null])
    expect(JSON.parse(raw[1]![1][1]!)).toHaveLength(7)
    const [plain, event] = (await store.read(ch, { after: 0, limit: 10, now: T0 })).messages
    expect(Object.keys(plain!).sort()).toEqual(['channel', 'data', 'event', 'exclude', 'id', 'offset', 'sender', 'timestamp'])
    expect(event?.revises).toEqual({ offset: 1, version: 2 })
    expect(await client.exists(keyOf('rv-plain:', ch, 'r'))).toBe(0) // no revisions hash until a revise
  })

  it('an idempotent repeat answers the earlier message as it is now (revised), not as appended', async () => {
    const store = createRedisStore({ client, prefix: 'rv-dup:' })
    await store.append('dup', msg(1), { retention: KEEP, now: T0, idempotencyKey: 'k' })
    await store.revise('dup', 1, { data: { text: 'edited' } }, { now: T0 })
    const again = await store.append('dup', msg(9), { retention: KEEP, now: T0 + 1, idempotencyKey: 'k' })
    expect(again).toMatchObject({ duplicate: true, message: { offset: 1, version: 2, data: { text: 'edited' } } })
  })

  it('concurrent revisions from two store instances on two connections get distinct versions (the increment is in Redis, not per node)', async () => {
    const other = new Redis(server.port, server.host, { maxRetriesPerRequest: null })
    try {
      const a = createRedisStore({ client, prefix: 'rv-race:' })
      const b = createRedisStore({ client: other, prefix: 'rv-race:' })
      await a.append('race', msg(1), { retention: KEEP, now: T0 })
      const results = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? a : b).revise('race', 1, { data: { i } }, { now: T0 })))
      expect(results.map((r) => r!.message.version).sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i + 2))
      expect((await b.read('race', { after: 0, limit: 1, now: T0 })).messages[0]?.version).toBe(101)
    } finally {
      other.disconnect()
    }
  })

  it('a channel whose meta was lost (an evicted key) comes back in a new epoch without the old history’s revisions', async () => {
    const store = createRedisStore({ client, prefix: 'rv-lost:' })
    await store.append('lost', msg(1), { retention: KEEP, now: T0 })
    await store.revise('lost', 1, { deleted: true }, { now: T0 })
    const old = await store.position('lost')
    await client.del(keyOf('rv-lost:', 'lost', 'm'))
    const r = await store.append('lost', msg(5), { retention: KEEP, now: T0 })
    expect(r.epoch).not.toBe(old.epoch)
    expect(r.message.offset).toBe(1)
    const [m] = (await store.read('lost', { after: 0, limit: 10, now: T0 })).messages
    expect(m).toMatchObject({ id: 'm5', data: { text: 'message 5' } })
    expect(m?.version).toBeUndefined()
    expect(m?.deleted).toBeUndefined()
  })

  it('a read of 10,000 messages of which one is revised overlays it (no Lua unpack limit on the revisions looked up)', async () => {
    const store = createRedisStore({ client, prefix: 'rv-wide:' })
    const retention = { maxCount: 20_000, maxAgeMs: 3_600_000 }
    for (let i = 0; i < 10_000; i += 500) await Promise.all(Array.from({ length: 500 }, () => store.append('wide', msg(0), { retention, now: T0 })))
    await store.revise('wide', 9_999, { data: 'late edit' }, { now: T0 })
    const r = await store.read('wide', { after: 0, limit: 10_000, now: T0 })
    expect(r.messages).toHaveLength(10_000)
    expect(r.messages.filter((m) => m.version !== undefined).map((m) => [m.offset, m.version, m.data])).toEqual([[9_999, 2, 'late edit']])
  }, 30_000)

  it('revise latency: median of 1,000 sequential revisions (printed)', async () => {
    const store = createRedisStore({ client, prefix: 'rv-latency:' })
    for (let n = 1; n <= 100; n++) await store.append('latency', msg(n), { retention: KEEP, now: T0 })
    const times: number[] = []
    for (let i = 0; i < 1_000; i++) {
      const t = performance.now()
      const r = await store.revise('latency', (i % 100) + 1, { data: { text: `edit ${i}` } }, { now: T0 })
      times.push(performance.now() - t)
      expect(r?.message.version).toBe(Math.floor(i / 100) + 2)
    }
    times.sort((a, b) => a - b)
    const median = times[500]!
    console.log(`redis store revise latency over 1,000 revisions: median ${(median * 1000).toFixed(0)} µs, p99 ${(times[990]! * 1000).toFixed(0)} µs`)
    expect(median).toBeLessThan(20) // loose: the machine is shared
  }, 30_000)
})

describe('redis store: search', () => {
  it(`looks at the newest ${SEARCH_SCAN_LIMIT.toLocaleString('en')} messages per call at most; a match older than that is found by paging on with before`, async () => {
    const store = createRedisStore({ client, prefix: 'rv-search:' })
    const ch = 'long'
    await store.append(ch, msg(1, { data: { text: 'needle' } }), { retention: { maxCount: 20_000, maxAgeMs: 3_600_000 }, now: T0 })
    const filler = { id: 'f', event: 'e', data: { text: 'hay' }, timestamp: T0 }
    for (let i = 0; i < SEARCH_SCAN_LIMIT; i += 500) {
      await Promise.all(Array.from({ length: 500 }, () => store.append(ch, filler, { retention: { maxCount: 20_000, maxAgeMs: 3_600_000 }, now: T0 })))
    }
    expect((await store.search(ch, 'needle', { limit: 10, now: T0 })).map((m) => m.offset)).toEqual([])
    expect((await store.search(ch, 'needle', { limit: 10, before: 2, now: T0 })).map((m) => m.offset)).toEqual([1])
    expect(await store.search(ch, 'hay', { limit: 3, now: T0 })).toHaveLength(3)
  }, 60_000)
})

describe('redis store: a consumer’s channel list', () => {
  it('forgets a channel whose log was lost: it is not listed and its entry leaves the consumer’s sorted set', async () => {
    const store = createRedisStore({ client, prefix: 'rv-list:' })
    for (const ch of ['a', 'b', 'c']) {
      await store.append(ch, msg(1), { retention: KEEP, now: T0 })
      await store.commit(ch, 'alice', 1)
    }
    expect(await client.zcard('rv-list:u{alice}')).toBe(3)
    await client.del(keyOf('rv-list:', 'b', 'm'), keyOf('rv-list:', 'b', 's'))
    expect((await store.channelsOf('alice', { limit: 10 })).map((c) => c.name).sort()).toEqual(['a', 'c'])
    expect((await client.zrange('rv-list:u{alice}', '0', '-1')).sort()).toEqual(['a', 'c'])
  })

  it('counts only cursors of the current epoch as active users, and falls back to the newest message’s time when the meta has no last activity', async () => {
    const store = createRedisStore({ client, prefix: 'rv-active:' })
    await store.append('room', msg(1), { retention: KEEP, now: T0 + 50 })
    for (const u of ['alice', 'bob', 'carol']) await store.commit('room', u, 1)
    await client.hset(keyOf('rv-active:', 'room', 'c'), 'dave', 'an-old-epoch|4') // a cursor of a lost history
    await client.hdel(keyOf('rv-active:', 'room', 'm'), 'la') // meta written by an earlier version
    const [room] = await store.channelsOf('alice', { limit: 10 })
    expect(room).toMatchObject({ name: 'room', lastSeenOffset: 1, top: 1, unread: 0, activeUsers: 3, lastActivity: T0 + 1 })
  })

  it(`keeps the ${CONSUMER_CHANNELS_LIMIT.toLocaleString('en')} channels the consumer committed in most recently (a consumer’s list is bounded)`, async () => {
    const store = createRedisStore({ client, prefix: 'rv-cap:' })
    const total = CONSUMER_CHANNELS_LIMIT + 5
    for (let i = 0; i < total; i += 500) {
      await Promise.all(
        Array.from({ length: Math.min(500, total - i) }, async (_, j) => {
          const ch = `ch-${i + j}`
          await store.append(ch, msg(1), { retention: KEEP, now: T0 })
          await store.commit(ch, 'alice', 1)
        }),
      )
    }
    expect(await client.zcard('rv-cap:u{alice}')).toBe(CONSUMER_CHANNELS_LIMIT)
    expect(await store.channelsOf('alice', { limit: 5 })).toHaveLength(5)
  }, 60_000)
})
