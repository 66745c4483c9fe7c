import { type Hub, type HubOptions, createHub, createMemoryStore, createMemoryTransport, silentLogger } from '@tidings/core'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createPostgresBroker } from '../src/broker.js'
import { type PostgresPresenceStore, createPostgresPresenceStore } from '../src/presence.js'
import { type PostgresServer, startPostgres, until } from './postgres.js'

// Two hubs whose broker and presence store are one real PostgreSQL, which crashes and comes back
// (pg_ctl stop -m immediate, then start) under them. The message store is one both share and
// that stays up (as the app's durable store would): what a hub publishes meanwhile is stored but
// cannot cross. Nothing crashes or rejects unhandled, the outage reaches onError (stage broker)
// and health, and when PostgreSQL is back the brokers listen again, call resumed, and the hubs'
// gap detection hands the subscribers what the outage kept from them: no silent loss.

let server: PostgresServer
let url: string
const hubs: Hub[] = []
const stores: PostgresPresenceStore[] = []
const unhandled: unknown[] = []
const onUnhandled = (reason: unknown) => unhandled.push(reason)

beforeAll(async () => {
  server = await startPostgres()
  url = await server.createDatabase()
  process.on('unhandledRejection', onUnhandled)
}, 60_000)
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled)
  await server?.stop()
})
afterEach(async () => {
  for (const h of hubs.splice(0)) await h.close()
  for (const s of stores.splice(0)) await s.close()
})


function node(nodeId: string, store: ReturnType<typeof createMemoryStore>, errors: string[]) {
  const presenceStore = createPostgresPresenceStore({ connectionString: url })
  stores.push(presenceStore)
  const options: HubOptions = {
    nodeId,
    logger: silentLogger,
    broker: createPostgresBroker({ connectionString: url, reconnect: { minMs: 50, maxMs: 500 }, probeIntervalMs: 500 }),
    store,
    presenceStore,
    nodes: { heartbeatMs: 200, unhealthyAfterMs: 500 },
    channels: { 'live:*': { history: false }, 'acked:*': { delivery: 'at-least-once' } },
    onError: (_err, { stage }) => errors.push(stage),
  }
  const hub = createHub(options)
  hubs.push(hub)
  return { hub, transport: createMemoryTransport(hub) }
}

describe('PostgreSQL crashes and restarts under two hubs', () => {
  it('the outage is reported and turns health 503, nothing rejects unhandled, and afterwards messages cross again and what was published during it reaches the other hub (gap detection), each once and in order', async () => {
    const store = createMemoryStore()
    const errorsA: string[] = []
    const errorsB: string[] = []
    const a = node('a', store, errorsA)
    const b = node('b', store, errorsB)
    const bob = await b.transport.connect({ userId: 'bob' })
    await bob.subscribe('live:x')
    await bob.subscribe('acked:y')
    const amy = await a.transport.connect({ userId: 'amy' })
    await amy.subscribe('live:x')
    await until(() => expect(a.hub.health().broker.state).toBe('up'))
    await until(() => expect(b.hub.health().broker.state).toBe('up'))
    await a.hub.publish('acked:y', 'm', { n: 1 })
    await until(() => expect(bob.messages('acked:y').map((m) => m.data)).toEqual([{ n: 1 }]))

    await server.crash() // down until both hubs have reported it (a quick restart could hide the outage)
    // both brokers notice: health down past the threshold, the loss reported (stage broker)
    await until(() => expect(a.hub.health().ok).toBe(false))
    await until(() => expect(b.hub.health().ok).toBe(false))
    await until(() => expect(errorsB).toContain('broker'))
    // published while the bus is gone: local delivery goes on, the message is stored, it cannot cross
    await a.hub.publish('live:x', 'm', { n: 'during' })
    expect(amy.messages('live:x').map((m) => m.data)).toEqual([{ n: 'during' }])
    await a.hub.publish('acked:y', 'm', { n: 2 })
    await a.hub.publish('acked:y', 'm', { n: 3 })
    await server.start()

    await until(() => expect(a.hub.health().ok).toBe(true))
    await until(() => expect(b.hub.health().ok).toBe(true))
    // b listened again and looked for gaps: 2 and 3 arrive from the store, in order, once
    await until(() => expect(bob.messages('acked:y').map((m) => m.data)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]))
    // live delivery across nodes works again
    await until(async () => {
      await a.hub.publish('live:x', 'm', { n: 'after' })
      expect(bob.messages('live:x').map((m) => m.data)).toContainEqual({ n: 'after' })
    })
    await a.hub.publish('acked:y', 'm', { n: 4 })
    await until(() => expect(bob.messages('acked:y').map((m) => m.data)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]))
    // the message without history sent during the outage is the one thing lost, and it was reported
    expect(bob.messages('live:x').map((m) => m.data)).not.toContainEqual({ n: 'during' })
    expect(errorsA).toContain('broker')
    expect(unhandled).toEqual([])
  }, 60_000)
})
