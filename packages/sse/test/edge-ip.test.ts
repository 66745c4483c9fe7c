/**
 * The edge guard's address lists on the SSE transport, over real HTTP sockets: a denied address
 * gets 403 `RT_003` on the open (and on a request of an existing session), before the hub hears
 * of it; an allowed one opens its stream; behind `trustProxy` the forwarded address decides.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, createTokenAuthenticator, type Hub } from '@tidings/core'
import { createEdgeGuard, type EdgeOptions } from '@tidings/http-kit'
import { describe, expect, it } from 'vitest'
import { cleanups, json, TOKENS } from '../../http-kit/test/support.js'
import { createSseTransport } from '../src/index.js'
import { connect } from './harness.js'

async function serve(edge: EdgeOptions, host = '127.0.0.1'): Promise<{ hub: Hub; base: string }> {
  const hub = createHub({ authenticate: createTokenAuthenticator(TOKENS) })
  const transport = createSseTransport(hub, { edge: createEdgeGuard(edge) })
  const server = http.createServer((req, res) => {
    void transport.handle(req, res).then((handled) => {
      if (!handled) res.writeHead(404).end()
    })
  })
  await new Promise<void>((r) => server.listen(0, host, r))
  const port = (server.address() as AddressInfo).port
  cleanups.push(async () => {
    await transport.close()
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
    await hub.close()
  })
  return { hub, base: host.includes(':') ? `http://[${host}]:${port}` : `http://${host}:${port}` }
}

describe('@tidings/sse: allowIps / denyIps', () => {
  it('a client in denyIps gets 403 RT_003 on the open, and the hub never hears of it', async () => {
    const { hub, base } = await serve({ denyIps: ['127.0.0.1/32'] })
    const r = await fetch(`${base}/realtime/sse`)
    expect(r.status).toBe(403)
    expect(await json(r)).toEqual({ type: 'error', code: 'RT_003', message: 'address not allowed' })
    expect(hub.connections.local()).toHaveLength(0)
  })

  it('an IPv6 client not in a non-empty allowIps gets 403 RT_003; a listed one opens its stream', async () => {
    const refused = await serve({ allowIps: ['2001:db8::/32'] }, '::1')
    const r = await fetch(`${refused.base}/realtime/sse`)
    expect(r.status).toBe(403)
    expect((await json(r)).code).toBe('RT_003')
    const allowed = await serve({ allowIps: ['::1'] }, '::1')
    const c = await connect(allowed.base)
    expect(c.connectionId).toEqual(expect.any(String))
    expect(allowed.hub.connections.local()).toHaveLength(1)
  })

  it('behind trustProxy the forwarded address decides: listed opens, denied and unlisted get 403 RT_003, also on a later POST', async () => {
    const { hub, base } = await serve({ trustProxy: 1, allowIps: ['203.0.113.0/24'], denyIps: ['203.0.113.66'] })
    const c = await connect(base, { headers: { 'x-forwarded-for': '203.0.113.9' } })
    expect(hub.connections.local().map((x) => x.ip)).toEqual(['203.0.113.9'])
    for (const xff of ['203.0.113.66', '198.51.100.1']) {
      const r = await fetch(`${base}/realtime/sse`, { headers: { 'x-forwarded-for': xff } })
      expect(r.status).toBe(403)
      expect((await json(r)).code).toBe('RT_003')
    }
    // The session's secret does not carry a denied address in: each request is checked.
    const post = await fetch(`${base}/realtime/sse/${c.session}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tidings-secret': c.secret, 'x-forwarded-for': '198.51.100.1' },
      body: '{"type":"ping"}',
    })
    expect(post.status).toBe(403)
    expect(hub.connections.local()).toHaveLength(1)
  })
})
