import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, type Logger } from '@tidings/core'
import { createEdgeGuard, type EdgeGuard, type EdgeOptions } from '@tidings/http-kit'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'
import { createWsTransport, JSON_SUBPROTOCOL, type WsTransport } from '../src/index.js'

// A failure of the WebSocket transport goes through `hub.report`: the hub's `onError` option and
// its logger hear of it, and the `error` event still fires. The transport used to call
// `hub.emit('error', …)` itself, which only `error` listeners saw.

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

interface Heard {
  readonly onError: Array<{ error: unknown; stage: string }>
  readonly logged: Array<{ message: string; fields?: Record<string, unknown> }>
  readonly events: Array<{ error: unknown; stage: string }>
}

async function setup(edge: EdgeGuard | EdgeOptions): Promise<{ url: string; transport: WsTransport; heard: Heard }> {
  const heard: Heard = { onError: [], logged: [], events: [] }
  const logger: Logger = { debug() {}, info() {}, warn() {}, error: (fields, message) => heard.logged.push({ message: message ?? '', fields }) }
  const hub = createHub({ logger, allowAnonymous: true, onError: (error, { stage }) => heard.onError.push({ error, stage }) })
  hub.on('error', (error, context) => heard.events.push({ error, stage: context.stage }))
  const transport = createWsTransport(hub, { edge })
  const server = createServer()
  const detach = transport.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(async () => {
    await transport.close({ timeoutMs: 200 })
    detach()
    await hub.close()
    server.closeAllConnections()
    await new Promise<void>((r) => server.close(() => r()))
  })
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/realtime`, transport, heard }
}

/** Resolves 'open' on a completed handshake, else 'lost' (no 101). */
function connect(url: string, headers: Record<string, string> = {}): { ws: WebSocket; result: Promise<'open' | 'lost'>; closed: Promise<number> } {
  const ws = new WebSocket(url, JSON_SUBPROTOCOL, { headers })
  cleanups.push(() => ws.terminate())
  ws.on('error', () => {})
  const result = new Promise<'open' | 'lost'>((resolve) => {
    ws.once('open', () => resolve('open'))
    ws.once('close', () => resolve('lost'))
  })
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)))
  return { ws, result, closed }
}

async function until(check: () => boolean, label: string, ms = 3_000): Promise<void> {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${label}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

describe('@tidings/ws: failures reach the hub through report', () => {
  it('an upgrade that throws (a trustProxy function that fails) reaches onError with stage ws.upgrade, the logger and the error event, and the socket is dropped', async () => {
    const failure = new Error('proxy list unavailable')
    const { url, heard } = await setup({
      trustProxy: () => {
        throw failure
      },
    })
    const client = connect(url, { 'x-forwarded-for': '203.0.113.9' })
    expect(await client.result).toBe('lost')
    expect(heard.onError).toEqual([{ error: failure, stage: 'ws.upgrade' }])
    expect(heard.logged).toEqual([{ message: 'ws.upgrade failed', fields: { error: 'proxy list unavailable' } }])
    expect(heard.events).toEqual([{ error: failure, stage: 'ws.upgrade' }])
  })

  it("a socket whose close fails (a shared edge guard's release throws) reaches onError with stage ws.release, and the session is still let go", async () => {
    const failure = new Error('connection counter unavailable')
    const real = createEdgeGuard()
    // A guard of the app's own making (it may count connections in a shared store) whose release fails.
    const guard: EdgeGuard = {
      ...real,
      admit: (ip) => {
        const a = real.admit(ip)
        return a.ok
          ? {
              ok: true,
              release: () => {
                a.release()
                throw failure
              },
            }
          : a
      },
    }
    const { url, transport, heard } = await setup(guard)
    const client = connect(url)
    expect(await client.result).toBe('open')
    expect(heard.onError).toEqual([])
    client.ws.close(1000, 'bye')
    expect(await client.closed).toBe(1000)
    await until(() => heard.onError.length > 0, 'onError')
    expect(heard.onError).toEqual([{ error: failure, stage: 'ws.release' }])
    expect(heard.logged.map((l) => l.message)).toEqual(['ws.release failed'])
    expect(heard.events).toEqual([{ error: failure, stage: 'ws.release' }])
    await until(() => transport.connections === 0, 'the session to be let go')
  })
})
