import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedisStore } from '../src/index.js'
import { type RedisServer, startRedis } from './servers.js'

const retention = { maxCount: 10_000, maxAgeMs: 3_600_000 }
const msg = (id: string, timestamp = Date.now()) => ({ id, event: 'e', data: { id }, sender: 'alice', timestamp })

let server: RedisServer
/** Two nodes: each its own connection and its own store instance. */
let clientA: Redis
let clientB: Redis

beforeAll(async () => {
  server = await startRedis()
  const connect = () => new Redis(server.port, server.host, { maxRetriesPerRequest: null, retryStrategy: () => 50 })
  clientA = connect()
  clientB = connect()
  // The outage tests refuse connections on purpose: the app's listener, not ioredis' console warning.
  for (const c of [clientA, clientB]) c.on('error', () => {})
})

afterAll(async () => {
  clientA.disconnect()
  clientB.disconnect()
  await server.stop()
})

const ready = async (client: Redis) => {
  for (let i = 0; i < 200 && client.status !== 'ready'; i++) await new Promise((r) => setTimeout(r, 25))
  expect(await client.ping()).toBe('PONG')
}

describe('redis store: two nodes on one Redis', () => {
  it('appends from two store instances at once get dense, distinct offsets, each stored at the offset its append reported (no offset counter kept per node)', async () => {
    const a = createRedisStore({ client: clientA })
    const b = createRedisStore({ client: clientB })
    const ch = 'two-nodes'
    const perNode = 500
    const burst = (store: typeof a, node: string) =>
      Promise.all(Array.from({ length: perNode }, (_, i) => store.append(ch, msg(`${node}-${i}`), { retention, now: Date.now() })))
    const [ra, rb] = await Promise.all([burst(a, 'a'), burst(b, 'b')])
    const all = [...ra, ...rb]
    expect(all.map((r) => r.message.offset).sort((x, y) => x - y)).toEqual(Array.from({ length: 2 * perNode }, (_, i) => i + 1))
    expect(new Set(all.map((r) => r.epoch)).size).toBe(1)
    const byOffset = new Map(all.map((r) => [r.message.offset, r.message.id]))
    const read = await b.read(ch, { after: 0, limit: 5_000, now: Date.now() })
    expect(read.messages).toHaveLength(2 * perNode)
    for (const m of read.messages) expect(m.id).toBe(byOffset.get(m.offset))
    expect(await a.position(ch)).toEqual({ epoch: all[0]!.epoch, offset: 2 * perNode })
  })

  it('the same idempotency key appended from two nodes at once stores one message (the dedup key is shared in Redis, not per node)', async () => {
    const a = createRedisStore({ client: clientA })
    const b = createRedisStore({ client: clientB })
    const ch = 'two-nodes-dedup'
    const dedup = { retention, now: Date.now(), idempotencyKey: 'publish-7', dedupWindowMs: 60_000 }
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).append(ch, msg(`try-${i}`), dedup)))
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1)
    const winner = results.find((r) => !r.duplicate)!.message
    for (const r of results) expect(r.message).toEqual(winner)
    expect((await a.position(ch)).offset).toBe(1)
    // a retry from the other node later, still within the window
    const later = await (winner.id.endsWith('0') || winner.id.endsWith('2') ? a : b).append(ch, msg('retry'), { ...dedup, now: dedup.now + 1_000 })
    expect(later).toMatchObject({ duplicate: true, message: { offset: 1, id: winner.id } })
  })

  it('an idempotency key leaves Redis when its window has passed (remembered keys do not grow without bound)', async () => {
    const a = createRedisStore({ client: clientA, prefix: 'ttl:' })
    await a.append('ttl-channel', msg('m1'), { retention, now: Date.now(), idempotencyKey: 'short', dedupWindowMs: 100 })
    const pattern = 'ttl:{ttl-channel}:k:short'
    expect(await clientA.exists(pattern)).toBe(1)
    expect(await clientA.pttl(pattern)).toBeLessThanOrEqual(100)
    await new Promise((r) => setTimeout(r, 250))
    expect(await clientA.exists(pattern)).toBe(0)
  })
})

describe('redis store: Redis restarts empty', () => {
  it('every channel comes back in a new epoch, offsets from 1, cursors gone; a reader at its old position sees the epoch change (never offsets restarting under the old epoch)', async () => {
    const a = createRedisStore({ client: clientA, prefix: 'restart:' })
    const b = createRedisStore({ client: clientB, prefix: 'restart:' })
    const channels = ['r-1', 'r-2', 'r-3']
    const before = new Map<string, { epoch: string; offset: number }>()
    for (const ch of channels) {
      for (let n = 1; n <= 3; n++) await a.append(ch, msg(`${ch}-${n}`), { retention, now: Date.now() })
      await a.commit(ch, 'alice', 2)
      before.set(ch, await a.position(ch))
    }
    const empty = await a.position('r-never-written') // an empty channel's epoch, too, belongs to the lost history

    await server.restart()
    await ready(clientA)
    await ready(clientB)

    for (const ch of channels) {
      const old = before.get(ch)!
      // node B, a reader resuming from its old position
      const r = await b.read(ch, { after: old.offset, limit: 100, now: Date.now() })
      expect(r.epoch).not.toBe(old.epoch)
      expect(r.top).toBe(0)
      expect(r.messages).toEqual([])
      expect(await b.cursor(ch, 'alice')).toBeUndefined()
      expect(await b.cursors(ch)).toEqual({})
      // node A appends next: offset 1 in the new epoch, the one B reported
      const next = await a.append(ch, msg(`${ch}-after`), { retention, now: Date.now() })
      expect(next.message.offset).toBe(1)
      expect(next.epoch).toBe(r.epoch)
      expect(next.epoch).not.toBe(old.epoch)
    }
    expect((await b.position('r-never-written')).epoch).not.toBe(empty.epoch)
  })

  it('an append issued while Redis is down completes once it is back, in a new epoch (the script is loaded again on the restarted server)', async () => {
    const a = createRedisStore({ client: clientA, prefix: 'outage:' })
    const first = await a.append('o-1', msg('before'), { retention, now: Date.now() })
    await server.kill()
    const pending = a.append('o-1', msg('during'), { retention, now: Date.now() })
    await new Promise((r) => setTimeout(r, 200))
    await server.start()
    const during = await pending
    expect(during.message.offset).toBe(1)
    expect(during.epoch).not.toBe(first.epoch)
    const r = await a.read('o-1', { after: 0, limit: 10, now: Date.now() })
    expect(r.messages.map((m) => m.id)).toEqual(['during'])
  })
})
