/**
 * The edge guard's address lists on the WebSocket transport, over real sockets with the real
 * `ws` client: a denied address is refused with 403 before the upgrade (the hub never hears of
 * it, no slot is taken), an allowed one connects, and behind `trustProxy` the forwarded address
 * decides.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, type Hub, silentLogger } from '@tidings/core'
import { createEdgeGuard, type EdgeOptions } from '@tidings/http-kit'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'
import { createWsTransport, JSON_SUBPROTOCOL } from '../src/index.js'

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function serve(edge: EdgeOptions, host = '127.0.0.1'): Promise<{ hub: Hub; url: string; guard: ReturnType<typeof createEdgeGuard> }> {
  const hub = createHub({ logger: silentLogger })
  const guard = createEdgeGuard(edge)
  const transport = createWsTransport(hub, { edge: guard })
  const server = createServer((_req, res) => res.end('app'))
  const detach = transport.attach(server)
  await new Promise<void>((r) => server.listen(0, host, r))
  const port = (server.address() as AddressInfo).port
  cleanups.push(async () => {
    await transport.close({ timeoutMs: 200 })
    detach()
    await hub.close()
    server.closeAllConnections()
    await new Promise<void>((r) => server.close(() => r()))
  })
  return { hub, guard, url: host.includes(':') ? `ws://[${host}]:${port}/realtime` : `ws://${host}:${port}/realtime` }
}

/** 'open' with the first frame, or the refusal's status and body. */
function attempt(url: string, headers: Record<string, string> = {}): Promise<{ status: 'open'; frame: { type: string } } | { status: number; body: string }> {
  const ws = new WebSocket(url, JSON_SUBPROTOCOL, { perMessageDeflate: false, headers })
  cleanups.push(() => ws.terminate())
  ws.on('error', () => {})
  return new Promise((resolve) => {
    ws.once('message', (data) => resolve({ status: 'open', frame: JSON.parse(String(data)) }))
    ws.once('unexpected-response', (req, res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body })
        req.destroy()
      })
    })
    ws.once('close', () => resolve({ status: 0, body: '' }))
  })
}

describe('ws edge: allowIps / denyIps', () => {
  it('a client in denyIps gets 403 before the upgrade: the hub never counts a connection and no slot is taken', async () => {
    const { hub, guard, url } = await serve({ denyIps: ['127.0.0.0/8'] })
    const r = await attempt(url)
    expect(r.status).toBe(403)
    expect(hub.connections.local()).toHaveLength(0)
    expect(guard.openFrom('127.0.0.1')).toBe(0)
  })

  it('an IPv6 client not in a non-empty allowIps gets 403; one listed connects', async () => {
    const refused = await serve({ allowIps: ['2001:db8::/32'] }, '::1')
    expect((await attempt(refused.url)).status).toBe(403)
    const allowed = await serve({ allowIps: ['::1/128'] }, '::1')
    const r = await attempt(allowed.url)
    expect(r.status).toBe('open')
    expect(r.status === 'open' && r.frame.type).toBe('connected')
  })

  it('an allowed IPv4 client (listed, not denied) connects and gets connected', async () => {
    const { url } = await serve({ allowIps: ['127.0.0.0/8'], denyIps: ['127.0.0.2'] })
    const r = await attempt(url)
    expect(r.status).toBe('open')
    expect(r.status === 'open' && r.frame.type).toBe('connected')
  })

  it('behind trustProxy the forwarded address decides: a listed X-Forwarded-For connects from a peer not listed, a denied one is refused', async () => {
    const { hub, url } = await serve({ trustProxy: 1, allowIps: ['203.0.113.0/24'], denyIps: ['203.0.113.66'] })
    expect((await attempt(url, { 'x-forwarded-for': '203.0.113.9' })).status).toBe('open')
    expect(hub.connections.local().map((c) => c.ip)).toEqual(['203.0.113.9'])
    expect((await attempt(url, { 'x-forwarded-for': '203.0.113.66' })).status).toBe(403)
    expect((await attempt(url, { 'x-forwarded-for': '198.51.100.1' })).status).toBe(403)
    expect((await attempt(url)).status).toBe(403) // no header: the loopback peer, not listed
  })
})
