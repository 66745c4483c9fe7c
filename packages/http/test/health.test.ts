import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type Broker, type BrokerHealth, createMemoryBus, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import { afterEach, describe, expect, it } from 'vitest'

// GET /realtime/health is what a load balancer asks: no key, 200 while the node should get
// traffic, 503 once its broker has been down past nodes.unhealthyAfterMs or it is closing.

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** A memory bus end whose health the test sets. */
function brokerWithHealth(health: { current: BrokerHealth }): Broker {
  const inner = createMemoryBus().broker()
  return { ...inner, health: () => health.current }
}

async function serve(broker?: Broker, unhealthyAfterMs = 1_000) {
  const rt = createRealtime({ hubOptions: { logger: silentLogger, ...(broker ? { broker } : {}), nodes: { unhealthyAfterMs } } })
  const server = createServer()
  const detach = rt.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(async () => {
    detach()
    await rt.close()
    server.closeAllConnections()
    await new Promise((r) => server.close(() => r(undefined)))
  })
  return { rt, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}/realtime` }
}

describe('GET /realtime/health', () => {
  it('a single node without a broker is healthy, with no API key asked', async () => {
    const { base } = await serve()
    const res = await fetch(`${base}/health`)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ ok: true, closing: false, connections: 0, broker: { state: 'unknown' } })
  })

  it('a broker down for less than unhealthyAfterMs is still ok (a blip); past it the node answers 503 with how long', async () => {
    const health = { current: { state: 'up', since: Date.now() } as BrokerHealth }
    const { base } = await serve(brokerWithHealth(health), 1_000)
    expect((await fetch(`${base}/health`)).status).toBe(200)
    health.current = { state: 'down', since: Date.now() - 200 }
    const blip = await fetch(`${base}/health`)
    expect(blip.status).toBe(200)
    expect(await blip.json()).toMatchObject({ ok: true, broker: { state: 'down' } })
    health.current = { state: 'down', since: Date.now() - 5_000 }
    const down = await fetch(`${base}/health`)
    expect(down.status).toBe(503)
    const body = (await down.json()) as { ok: boolean; broker: { downForMs: number } }
    expect(body.ok).toBe(false)
    expect(body.broker.downForMs).toBeGreaterThanOrEqual(5_000)
    health.current = { state: 'up', since: Date.now() }
    expect((await fetch(`${base}/health`)).status).toBe(200)
  })

  it('a closing node answers 503', async () => {
    const { rt, base } = await serve()
    const closing = rt.hub.close()
    const res = await fetch(`${base}/health`)
    await closing
    expect(res.status).toBe(503)
  })
})
