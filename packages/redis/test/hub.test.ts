import { hubConformance } from '@tidings/core/conformance'
import { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll } from 'vitest'
import { createRedisBroker, createRedisLimitStore, createRedisPresenceStore, createRedisStore } from '../src/index.js'
import { type RedisCluster, type RedisServer, startCluster, startRedis } from './servers.js'

// The engine's own guarantees (the delivery property on one hub; three hubs as one: order and
// offsets across nodes, resume on another node, dedup, presence, broadcasts, and the
// cluster-wide operations) over the three Redis ports, unchanged: on a standalone Redis and on
// a three-master Redis Cluster.

let server: RedisServer
let cluster: RedisCluster
const clients: Array<Redis | Cluster> = []
beforeAll(async () => {
  ;[server, cluster] = await Promise.all([startRedis(), startCluster()])
}, 60_000)
afterAll(async () => {
  for (const c of clients.splice(0)) c.disconnect()
  await Promise.all([server?.stop(), cluster?.stop()])
})

const standalone = () => {
  const c = new Redis(server.port, '127.0.0.1', { maxRetriesPerRequest: null })
  clients.push(c)
  return c
}
const clustered = () => {
  const c = new Cluster(cluster.nodes)
  clients.push(c)
  return c
}

function ports(connect: () => Redis | Cluster) {
  return (nodes: number) => {
    const prefix = 'hubconf:'
    // One store and one presence store client shared by the nodes (as one database), one broker per node.
    const store = createRedisStore({ client: connect(), prefix })
    const presenceStore = createRedisPresenceStore({ client: connect(), prefix })
    const limitStore = createRedisLimitStore({ client: connect(), prefix })
    return Array.from({ length: nodes }, () => ({ broker: createRedisBroker({ client: connect(), prefix }), store, presenceStore, limitStore }))
  }
}

hubConformance('redis, standalone', ports(standalone), { timeoutMs: 30_000, deliveryRuns: 10, deliveryTimeoutMs: 180_000 })
hubConformance('redis, three-master cluster', ports(clustered), { timeoutMs: 30_000, deliveryRuns: 10, deliveryTimeoutMs: 180_000 })
