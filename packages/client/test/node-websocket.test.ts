/**
 * Node 20 has no global WebSocket: a client given no `WebSocket` option imports the `ws`
 * package itself (it is installed here) instead of silently falling back to SSE; and when a
 * WebSocket cannot be used, the `fallback` event says why.
 */
import { createServer } from 'node:http'
import { createHub, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import { afterEach, describe, expect, it } from 'vitest'
import { Realtime } from '../src/index.js'
import { listenTracked, userTokens } from './memory-network.js'

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function serve() {
  const hub = createHub({ logger: silentLogger, ...userTokens })
  const realtime = createRealtime({ hub })
  const server = createServer()
  realtime.attach(server)
  const s = await listenTracked(server, async () => {
    await realtime.close()
    await hub.close()
  })
  cleanups.push(() => s.close())
  return { hub, url: s.url }
}

describe('Node without a global WebSocket', () => {
  it('uses the ws package by itself (not SSE) when no WebSocket option is given', async () => {
    expect((globalThis as { WebSocket?: unknown }).WebSocket).toBeUndefined()
    const { hub, url } = await serve()
    const rt = new Realtime({ url, auth: 'user:alice', heartbeatIntervalMs: 0 })
    cleanups.push(() => rt.disconnect())
    const fallbacks: unknown[] = []
    rt.on('fallback', (f) => fallbacks.push(f))
    await new Promise((r) => rt.once('connected', r))
    expect(rt.transport).toBe('websocket')
    expect(hub.connections.local({ userId: 'alice' }).map((c) => c.transport)).toEqual(['ws'])
    expect(fallbacks).toEqual([])
  })

  it('a WebSocket that cannot be used: the fallback event names the transport and the reason', async () => {
    const { url } = await serve()
    class Broken {
      constructor() {
        throw new Error('WebSocket blocked by policy')
      }
    }
    const rt = new Realtime({ url, auth: 'user:alice', heartbeatIntervalMs: 0, upgradeIntervalMs: 0, WebSocket: Broken as never })
    cleanups.push(() => rt.disconnect())
    const fallbacks: Array<{ from: string; to: string; reason: string }> = []
    rt.on('fallback', (f) => fallbacks.push(f))
    await new Promise((r) => rt.once('connected', r))
    expect(rt.transport).toBe('sse')
    expect(fallbacks).toEqual([{ from: 'websocket', to: 'sse', reason: 'WebSocket blocked by policy' }])
  })
})
