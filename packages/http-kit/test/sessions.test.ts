import type { IncomingMessage, ServerResponse } from 'node:http'
import { createHub, silentLogger } from '@tidings/core'
import { afterEach, describe, expect, it } from 'vitest'
import { SessionRegistry } from '../src/index.js'

// The registry's routing and answers without sockets; the SSE and long-poll suites cover it over HTTP.
const hubs: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  for (const h of hubs.splice(0)) await h.close()
})

function registry() {
  const hub = createHub({ logger: silentLogger })
  hubs.push(hub)
  return new SessionRegistry(hub, '/realtime/poll')
}
const req = (method: string, url: string, headers: Record<string, string> = {}) => ({ method, url, headers }) as unknown as IncomingMessage

function res() {
  const r = { statusCode: 0, body: '', headersSent: false, writableEnded: false, headers: {} as Record<string, unknown> }
  const api = {
    get statusCode() {
      return r.statusCode
    },
    set statusCode(v: number) {
      r.statusCode = v
    },
    get headersSent() {
      return r.headersSent
    },
    get writableEnded() {
      return r.writableEnded
    },
    setHeader: (k: string, v: unknown) => void (r.headers[k.toLowerCase()] = v),
    writeHead(status: number, headers?: Record<string, unknown>) {
      r.statusCode = status
      Object.assign(r.headers, headers)
      r.headersSent = true
      return api
    },
    end(body?: string) {
      r.body += body ?? ''
      r.headersSent = true
      r.writableEnded = true
    },
  }
  return { r, res: api as unknown as ServerResponse }
}

describe('SessionRegistry', () => {
  it('routes the opening request and a session\'s requests, and nothing else', () => {
    const reg = registry()
    const methods = ['GET', 'POST', 'DELETE']
    expect(reg.route(req('POST', '/realtime/poll?token=t'), 'POST', methods)).toMatchObject({ method: 'POST', sessionId: undefined })
    expect(reg.route(req('POST', '/realtime/poll/'), 'POST', methods)).toMatchObject({ sessionId: undefined })
    expect(reg.route(req('GET', '/realtime/poll/abc?cursor=3'), 'POST', methods)).toMatchObject({ method: 'GET', sessionId: 'abc' })
    expect(reg.route(req('GET', '/realtime/poll/abc?cursor=3'), 'POST', methods)?.query.get('cursor')).toBe('3')
    expect(reg.route(req('GET', '/realtime/poll'), 'POST', methods)).toBeNull() // wrong method to open
    expect(reg.route(req('PUT', '/realtime/poll/abc'), 'POST', methods)).toBeNull()
    expect(reg.route(req('GET', '/realtime/poll/a/b'), 'POST', methods)).toBeNull()
    expect(reg.route(req('GET', '/realtime/pollx/abc'), 'POST', methods)).toBeNull()
    expect(reg.route(req('GET', '/other'), 'POST', methods)).toBeNull()
  })

  it('answers 404 for an unknown session, 503 once closing, 500 when a handler fails', async () => {
    const reg = registry()
    const a = res()
    expect(reg.authorized(req('GET', '/realtime/poll/nope'), a.res, 'nope')).toBeUndefined()
    expect(a.r.statusCode).toBe(404)
    expect(JSON.parse(a.r.body)).toMatchObject({ type: 'error', code: 'RT_001' })

    const b = res()
    await reg.serve(req('GET', '/realtime/poll/x'), b.res, () => {
      throw new Error('boom')
    })
    expect(b.r.statusCode).toBe(500)

    reg.close(() => {})
    expect(reg.isClosing).toBe(true)
    const c = res()
    let ran = false
    await reg.serve(req('GET', '/realtime/poll/x'), c.res, () => {
      ran = true
    })
    expect(ran).toBe(false)
    expect(c.r.statusCode).toBe(503)
  })
})
