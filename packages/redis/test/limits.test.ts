import { limitConformance } from '@tidings/core/conformance'
import { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RedisClient, createRedisLimitStore } from '../src/index.js'
import { type RedisCluster, type RedisServer, startCluster, startRedis, until } from './servers.js'

let server: RedisServer
let cluster: RedisCluster
/** Four connections per topology: each store of the suite is a node with its own connection. */
let standalone: Redis[] = []
let clustered: Cluster[] = []

beforeAll(async () => {
  ;[server, cluster] = await Promise.all([startRedis(), startCluster()])
  standalone = Array.from({ length: 4 }, () => new Redis(server.port, '127.0.0.1', { maxRetriesPerRequest: null }))
  clustered = Array.from({ length: 4 }, () => new Cluster(cluster.nodes))
}, 60_000)

afterAll(async () => {
  for (const c of [...standalone, ...clustered]) c.disconnect()
  await Promise.all([server?.stop(), cluster?.stop()])
})

const nodes = (clients: RedisClient[], count: number) => {
  expect(count).toBeLessThanOrEqual(clients.length)
  return clients.slice(0, count).map((client) => createRedisLimitStore({ client }))
}
limitConformance('redis, standalone', (count) => nodes(standalone, count))
limitConformance('redis, cluster', (count) => nodes(clustered, count), { timeoutMs: 20_000 })

describe.each([
  ['standalone', () => standalone[0]!],
  ['cluster', () => clustered[0]!],
])('createRedisLimitStore (%s)', (_kind, client) => {
  const T0 = Date.UTC(2026, 0, 1)
  let run = 0
  const keyOf = (prefix: string, key: string, windowMs: number, now: number) => `${prefix}limit:{${key}}:${windowMs}:${Math.floor(now / windowMs)}`

  it("an ended window's key expires from Redis (windowMs plus the margin after its first hit), a later hit does not push it back", async () => {
    const prefix = `own:${Date.now().toString(36)}:${++run}:`
    const store = createRedisLimitStore({ client: client(), prefix, expiryMarginMs: 100 })
    const key = 'expiring'
    const w = 300
    expect(await store.hit(key, w, T0)).toBe(1)
    const redisKey = keyOf(prefix, key, w, T0)
    const first = await client().pttl(redisKey)
    expect(first).toBeGreaterThan(0)
    expect(first).toBeLessThanOrEqual(w + 100)
    await new Promise((r) => setTimeout(r, 50))
    expect(await store.hit(key, w, T0 + 1)).toBe(2)
    expect(await client().pttl(redisKey)).toBeLessThan(first) // not renewed by the second hit
    // the next window has its own key with its own expiry
    expect(await store.hit(key, w, T0 + w)).toBe(1)
    expect(await client().pttl(keyOf(prefix, key, w, T0 + w))).toBeGreaterThan(0)
    await until(async () => expect(await client().exists(redisKey, keyOf(prefix, key, w, T0 + w))).toBe(0), 5_000)
  })

  it('keeps a key for the default margin past its window (a node with a clock slightly behind still counts in it)', async () => {
    const prefix = `own:${Date.now().toString(36)}:${++run}:`
    const store = createRedisLimitStore({ client: client(), prefix })
    expect(await store.hit('k', 60_000, T0)).toBe(1)
    const ttl = await client().pttl(keyOf(prefix, 'k', 60_000, T0))
    expect(ttl).toBeGreaterThan(60_000)
    expect(ttl).toBeLessThanOrEqual(61_000)
  })

  it("close() leaves the app's client open", async () => {
    const store = createRedisLimitStore({ client: client(), prefix: `own:${++run}:` })
    await store.close?.()
    await store.close?.()
    expect(await client().ping()).toBe('PONG')
  })

  it('refuses a window that is not a positive number (rejects, sends nothing)', async () => {
    const store = createRedisLimitStore({ client: client(), prefix: `own:${++run}:` })
    await expect(Promise.resolve().then(() => store.hit('k', 0, T0))).rejects.toThrow(RangeError)
    await expect(Promise.resolve().then(() => store.hit('k', 1_000, Number.NaN))).rejects.toThrow(RangeError)
  })
})
