import { storeConformance } from '@tidings/core/conformance'
import { Cluster } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedisStore } from '../src/index.js'
import { channelTag } from '../src/store.js'
import { slotTag, tagSlot } from '../src/store-slot.js'
import { type RedisCluster, startCluster } from './servers.js'

let cluster: RedisCluster
let client: Cluster

beforeAll(async () => {
  cluster = await startCluster()
  client = new Cluster(cluster.nodes, { redisOptions: { maxRetriesPerRequest: null } })
}, 60_000)

afterAll(async () => {
  client.disconnect()
  await cluster.stop()
})

/** Every key of one node matching a pattern. */
async function scanAll(node: ReturnType<Cluster['nodes']>[number], pattern: string): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, found] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    keys.push(...found)
  } while (cursor !== '0')
  return keys
}

const flushAll = async () => {
  await Promise.all(client.nodes('master').map((node) => node.flushall()))
}

storeConformance('redis (three-master cluster)', () => createRedisStore({ client, prefix: 'conf:' }), {
  channelPrefix: 'redis-cluster',
  // A lost Redis: every master loses its data.
  reset: flushAll,
  capabilities: ['revise', 'search', 'channelsOf'],
})

describe('redis store on a Redis Cluster', () => {
  it('the slot the store computes is the one the server computes (a wrong CRC16 would put a channel’s identity key in another slot: CROSSSLOT)', async () => {
    const node = client.nodes('master')[0]!
    for (const tag of ['%', 'a', 'chat:room-1', 'héllo 😀', '%7D', 'x'.repeat(300)]) {
      expect(tagSlot(tag)).toBe(Number(await node.call('CLUSTER', 'KEYSLOT', tag)))
    }
    for (const slot of [0, 1, 5_000, 16_383]) expect(tagSlot(slotTag(slot))).toBe(slot)
  })

  it('every key of a channel lives in one slot, with its slot’s identity key, spread over the masters', async () => {
    const store = createRedisStore({ client, prefix: 'slots:' })
    const retention = { maxCount: 100, maxAgeMs: 60_000 }
    const channels = Array.from({ length: 30 }, (_, i) => `room-${i}`).concat(['', 'a}b', '{odd}'])
    for (const ch of channels) {
      await store.append(ch, { id: 'm1', event: 'e', data: 1, timestamp: 1 }, { retention, now: 1, idempotencyKey: 'k}:m', dedupWindowMs: 60_000 })
      await store.commit(ch, 'alice', 1)
    }
    const slotsOfMasters: number[] = []
    for (const node of client.nodes('master')) {
      const keys = await scanAll(node, 'slots:*')
      slotsOfMasters.push(keys.length)
      for (const ch of channels) {
        const base = `slots:{${channelTag(ch)}}:`
        const own = keys.filter((k) => k.startsWith(base))
        if (own.length === 0) continue
        // meta, stream, cursors and the idempotency key, all on this master, in one slot
        expect(own.sort()).toEqual([`${base}c`, `${base}k:k}:m`, `${base}m`, `${base}s`])
        const slots = new Set(await Promise.all(own.map(async (k) => Number(await node.call('CLUSTER', 'KEYSLOT', k)))))
        expect(slots.size).toBe(1)
        const identity = `slots:store{${slotTag([...slots][0]!)}}`
        expect(keys).toContain(identity)
      }
    }
    expect(slotsOfMasters.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2) // the channels spread over masters
    const stats = await store.stats()
    expect(stats.channels).toBeGreaterThanOrEqual(channels.length) // the idempotency key ending in "}:m" is not taken for a channel's meta
  })

  it('one master losing its data gives its channels a new epoch and leaves the others’ epochs alone', async () => {
    const store = createRedisStore({ client, prefix: 'partial:' })
    const retention = { maxCount: 100, maxAgeMs: 60_000 }
    const channels = Array.from({ length: 30 }, (_, i) => `room-${i}`)
    const before = new Map<string, string>()
    for (const ch of channels) before.set(ch, (await store.append(ch, { id: 'm1', event: 'e', data: 1, timestamp: 1 }, { retention, now: 1 })).epoch)
    const lost = client.nodes('master')[0]!
    const held = await scanAll(lost, 'partial:*')
    const lostSlots = new Set<number>()
    for (const ch of channels) if (held.includes(`partial:{${channelTag(ch)}}:m`)) lostSlots.add(tagSlot(channelTag(ch)))
    expect(lostSlots.size).toBeGreaterThan(0)
    await lost.flushall()
    for (const ch of channels) {
      const p = await store.position(ch)
      if (lostSlots.has(tagSlot(channelTag(ch)))) {
        expect(p.offset).toBe(0)
        expect(p.epoch).not.toBe(before.get(ch))
      } else expect(p).toEqual({ epoch: before.get(ch), offset: 1 })
    }
  })

  it('a channel’s revisions hash lives in the channel’s slot (a revise touching another slot would fail with CROSSSLOT)', async () => {
    const store = createRedisStore({ client, prefix: 'revslot:' })
    const retention = { maxCount: 100, maxAgeMs: 60_000 }
    for (const ch of ['room-1', 'room-2', 'a}b', '']) {
      await store.append(ch, { id: 'm1', event: 'e', data: { text: 'hello' }, timestamp: 1 }, { retention, now: 1 })
      expect((await store.revise(ch, 1, { data: { text: 'edited hello' } }, { now: 1 }))?.message.version).toBe(2)
      expect((await store.search(ch, 'edited', { limit: 5, now: 1 })).map((m) => m.offset)).toEqual([1])
      const base = `revslot:{${channelTag(ch)}}:`
      const node = client.nodes('master')[0]!
      expect(Number(await node.call('CLUSTER', 'KEYSLOT', `${base}r`))).toBe(Number(await node.call('CLUSTER', 'KEYSLOT', `${base}s`)))
    }
  })

  it('a consumer’s channel list spans masters, and forgets the channels of a master that lost its data', async () => {
    const store = createRedisStore({ client, prefix: 'lists:' })
    const retention = { maxCount: 100, maxAgeMs: 60_000 }
    const channels = Array.from({ length: 30 }, (_, i) => `room-${i}`)
    for (const [i, ch] of channels.entries()) {
      await store.append(ch, { id: 'm1', event: 'e', data: 1, timestamp: 1 }, { retention, now: 100 + i })
      await store.commit(ch, 'alice', 1)
    }
    const listed = await store.channelsOf('alice', { limit: 100 })
    expect(listed.map((c) => c.name)).toEqual([...channels].reverse()) // most recently active first
    // flush a master that holds channels but not alice's list
    const list = `lists:u{alice}`
    let lost: ReturnType<Cluster['nodes']>[number] | undefined
    let lostChannels: string[] = []
    for (const node of client.nodes('master')) {
      const keys = await scanAll(node, 'lists:*')
      if (keys.includes(list)) continue
      lostChannels = channels.filter((ch) => keys.includes(`lists:{${channelTag(ch)}}:m`))
      if (lostChannels.length > 0) {
        lost = node
        break
      }
    }
    expect(lost).toBeDefined()
    await lost!.flushall()
    const kept = channels.filter((ch) => !lostChannels.includes(ch))
    expect((await store.channelsOf('alice', { limit: 100 })).map((c) => c.name)).toEqual([...kept].reverse())
    expect((await client.zrange(list, '0', '-1')).sort()).toEqual([...kept].sort())
  })
})
