import { storeConformance } from '@tidings/core/conformance'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedisStore } from '../src/index.js'
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

storeConformance('redis (standalone)', () => createRedisStore({ client, prefix: 'conf:' }), {
  channelPrefix: 'redis',
  reset: async () => {
    await client.flushall()
  },
  capabilities: ['revise', 'search', 'channelsOf'],
})

describe('redis store on a standalone server', () => {
  it('close() leaves the app’s client open (the store must not quit the connection it was given)', async () => {
    const store = createRedisStore({ client })
    await store.append('close-check', { id: 'a', event: 'e', data: 1, timestamp: 1 }, { retention: { maxCount: 10, maxAgeMs: 60_000 }, now: 1 })
    await store.close()
    expect(client.status).toBe('ready')
    expect(await client.ping()).toBe('PONG')
  })

  it('reads, positions, cursors and commits of 2,000 unknown channels create no key at all (DBSIZE unchanged)', async () => {
    const store = createRedisStore({ client, prefix: 'junk:' })
    await store.position('warm-up') // the one store-identity key
    const before = await client.dbsize()
    await Promise.all(
      Array.from({ length: 2_000 }, async (_, i) => {
        const ch = `junk-${i}`
        await store.read(ch, { after: 0, limit: 10, now: Date.now() })
        await store.position(ch)
        await store.cursor(ch, 'alice')
        await store.cursors(ch)
        await store.commit(ch, 'alice', 3)
      }),
    )
    expect(await client.dbsize()).toBe(before)
  })

  it('channel names with braces, percent signs and the empty name are distinct channels (the hash tag escape is injective)', async () => {
    const store = createRedisStore({ client, prefix: 'names:' })
    const names = ['', '%', '%25', '}', '%7D', 'a}b', 'a{b}c', '{x}', 'x']
    const opts = { retention: { maxCount: 10, maxAgeMs: 60_000 }, now: 1 }
    for (const [i, name] of names.entries()) for (let n = 0; n <= i; n++) await store.append(name, { id: `${i}-${n}`, event: 'e', data: n, timestamp: 1 }, opts)
    for (const [i, name] of names.entries()) {
      expect((await store.position(name)).offset).toBe(i + 1)
      const r = await store.read(name, { after: 0, limit: 100, now: 1 })
      expect(r.messages.map((m) => m.id)).toEqual(Array.from({ length: i + 1 }, (_, n) => `${i}-${n}`))
    }
  })

  it('appends per second on one channel, sequential and 100 in flight (printed; 20,000 appends in flight all land, trimmed to the count)', async () => {
    const store = createRedisStore({ client, prefix: 'rate:' })
    const retention = { maxCount: 1_000, maxAgeMs: 3_600_000 }
    const input = (n: number) => ({ id: `m${n}`, event: 'chat', data: { text: 'hello world, a typical short chat line', n }, sender: 'alice', timestamp: Date.now() })
    const sequentialCount = 5_000
    let t = performance.now()
    for (let n = 0; n < sequentialCount; n++) await store.append('rate-seq', input(n), { retention, now: Date.now() })
    const sequential = sequentialCount / ((performance.now() - t) / 1000)
    const parallelCount = 20_000
    let next = 0
    t = performance.now()
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        while (next < parallelCount) {
          const n = next++
          await store.append('rate-par', input(n), { retention, now: Date.now() })
        }
      }),
    )
    const parallel = parallelCount / ((performance.now() - t) / 1000)
    console.log(`redis store appends/s on one channel: sequential ${Math.round(sequential)}, 100 in flight ${Math.round(parallel)}`)
    expect((await store.position('rate-par')).offset).toBe(parallelCount)
    expect((await store.read('rate-par', { after: 0, limit: 2_000, now: Date.now() })).messages).toHaveLength(1_000)
    // Loose floors (the machine is shared): far below what one round trip per append gives.
    expect(sequential).toBeGreaterThan(500)
    expect(parallel).toBeGreaterThan(1_000)
  }, 60_000)
})
