import { createHub, createMemoryTransport, type Hub, type HubOptions, silentLogger } from '@tidings/core'
import { Redis } from 'ioredis'
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest'
import { createRedisBroker, createRedisPresenceStore, createRedisStore } from '../src/index.js'
import { type RedisServer, startRedis, until as untilWithin } from './servers.js'

const until = (check: () => void | Promise<void>) => untilWithin(check, 15_000)

// Two hubs on one real Redis, which is killed and started again (empty) under them: nothing
// crashes or throws into the app, failures reach onError, health turns 503 past the threshold,
// local delivery goes on, and when Redis is back the nodes subscribe again, deliver across
// nodes, and tell live subscribers that the history was lost (a new epoch).

let server: RedisServer
const clients: Redis[] = []
const hubs: Hub[] = []
const unhandled: unknown[] = []
const onUnhandled = (reason: unknown) => unhandled.push(reason)

beforeAll(async () => {
  server = await startRedis()
  process.on('unhandledRejection', onUnhandled)
})
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled)
  await server.stop()
})
afterEach(async () => {
  for (const h of hubs.splice(0)) await h.close()
  for (const c of clients.splice(0)) c.disconnect()
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function node(nodeId: string, errors: string[]) {
  const connect = () => {
    // As an app would: reconnect every 100 ms, fail a command after 20 tries (~2 s), listen for errors.
    const c = new Redis(server.port, '127.0.0.1', { retryStrategy: () => 100 })
    c.on('error', () => undefined)
    clients.push(c)
    return c
  }
  const prefix = 'outage:'
  const options: HubOptions = {
    nodeId,
    logger: silentLogger,
    broker: createRedisBroker({ client: connect(), prefix }),
    store: createRedisStore({ client: connect(), prefix }),
    presenceStore: createRedisPresenceStore({ client: connect(), prefix }),
    nodes: { heartbeatMs: 200, unhealthyAfterMs: 500 },
    channels: { 'live:*': { history: false }, 'acked:*': { delivery: 'at-least-once' } },
    onError: (_err, { stage }) => errors.push(stage),
  }
  const hub = createHub(options)
  hubs.push(hub)
  return { hub, transport: createMemoryTransport(hub) }
}

describe('Redis goes away under two hubs', () => {
  it('nothing crashes or rejects unhandled; health turns 503 past the threshold; local delivery goes on; when Redis is back nodes deliver across again and subscribers learn the history was lost', async () => {
    const errorsA: string[] = []
    const errorsB: string[] = []
    const a = node('a', errorsA)
    const b = node('b', errorsB)
    const bobOnB = await b.transport.connect({ userId: 'bob' })
    await bobOnB.subscribe('live:x')
    await bobOnB.subscribe('acked:y')
    const amyOnA = await a.transport.connect({ userId: 'amy' })
    await amyOnA.subscribe('live:x')
    await a.hub.publish('acked:y', 'm', { n: 1 })
    await until(() => expect(bobOnB.messages('acked:y').map((m) => m.data)).toEqual([{ n: 1 }]))
    await until(() => expect(a.hub.health().broker.state).toBe('up'))

    await server.kill()
    // local delivery on a channel without history goes on; the broker's publish failing is reported, not thrown
    await a.hub.publish('live:x', 'm', { n: 'during' })
    expect(amyOnA.messages('live:x').map((m) => m.data)).toEqual([{ n: 'during' }])
    await until(() => expect(a.hub.health().broker.state).toBe('down'))
    await until(() => expect(a.hub.health().ok).toBe(false))
    // the broker's lost connection reaches the hub's onError (stage broker)
    await until(() => expect(errorsA).toContain('broker'))

    await server.start() // empty: the history of acked:y is gone
    await until(() => expect(a.hub.health().ok).toBe(true))
    await until(() => expect(b.hub.health().ok).toBe(true))
    // b learns at once (resubscribed) or at its next heartbeat that acked:y's history was lost
    await until(() => expect(bobOnB.received('subscribed').filter((f) => f.channel === 'acked:y' && f.recovered === false)).toHaveLength(1))
    // and delivery across nodes works again
    await until(async () => {
      await a.hub.publish('live:x', 'm', { n: 'after' })
      expect(bobOnB.messages('live:x').map((m) => m.data)).toContainEqual({ n: 'after' })
    })
    await a.hub.publish('acked:y', 'm', { n: 2 })
    await until(() => expect(bobOnB.messages('acked:y').map((m) => m.data)).toContainEqual({ n: 2 }))
    expect(unhandled).toEqual([])
  }, 60_000)
})
