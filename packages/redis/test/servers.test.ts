import { Cluster, Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { startCluster, startRedis } from './servers.js'

describe('the test harness starts real Redis', () => {
  it('a private redis-server answers, restarts empty on the same port, and stops', async () => {
    const server = await startRedis()
    const client = new Redis(server.port, '127.0.0.1', { maxRetriesPerRequest: null, lazyConnect: true })
    await client.connect()
    await client.set('k', 'v')
    expect(await client.get('k')).toBe('v')
    await server.restart()
    await new Promise((r) => setTimeout(r, 200))
    expect(await client.get('k')).toBeNull()
    client.disconnect()
    await server.stop()
  })

  it('a three-master Redis Cluster serves keys on every slot', async () => {
    const cluster = await startCluster()
    const client = new Cluster(cluster.nodes)
    for (let i = 0; i < 30; i++) await client.set(`key-${i}`, String(i))
    expect(await client.get('key-29')).toBe('29')
    const masters = await client.nodes('master')
    expect(masters).toHaveLength(3)
    client.disconnect()
    await cluster.stop()
  }, 60_000)
})
