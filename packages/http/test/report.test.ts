import { createServer } from 'node:http'
import { type AddressInfo, connect as netConnect } from 'node:net'
import type { Logger } from '@tidings/core'
import { createRealtime, type RealtimeOptions } from '@tidings/http'
import { afterEach, describe, expect, it } from 'vitest'

// An adapter's failure goes through `hub.report`: the hub's `onError` option and its logger hear
// of it. `createRealtime` used to `hub.emit('error', …)` itself, which only `error` listeners saw,
// and the HTTP transports' session registry answered 500 without telling anyone.

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

interface Heard {
  readonly onError: Array<{ error: unknown; stage: string }>
  readonly logged: Array<{ message: string; fields?: Record<string, unknown> }>
  readonly events: Array<{ error: unknown; stage: string }>
}

async function serve(options: Omit<RealtimeOptions, 'hubOptions'>): Promise<{ port: number; heard: Heard }> {
  const heard: Heard = { onError: [], logged: [], events: [] }
  const logger: Logger = { debug() {}, info() {}, warn() {}, error: (fields, message) => heard.logged.push({ message: message ?? '', fields }) }
  const rt = createRealtime({ ...options, hubOptions: { logger, onError: (error, { stage }) => heard.onError.push({ error, stage }) } })
  rt.hub.on('error', (error, context) => heard.events.push({ error, stage: context.stage }))
  const server = createServer()
  const detach = rt.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(async () => {
    detach()
    await rt.close()
    server.closeAllConnections()
    await new Promise((r) => server.close(() => r(undefined)))
  })
  return { port: (server.address() as AddressInfo).port, heard }
}

/** One raw request (the target exactly as given), resolved with the status line's code. */
function rawRequest(port: number, lines: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1', () => socket.write(`${lines.join('\r\n')}\r\n\r\n`))
    let text = ''
    socket.on('data', (d) => {
      text += String(d)
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text)
      if (m) {
        resolve(Number(m[1]))
        socket.destroy()
      }
    })
    socket.on('error', reject)
    socket.on('close', () => resolve(0))
  })
}

describe('@tidings/http: failures reach the hub through report', () => {
  it("a request the router fails on (target //[ under prefix '') reaches onError with stage http, the logger and the error event, and is answered 500", async () => {
    const { port, heard } = await serve({ prefix: '', websocket: false })
    const status = await rawRequest(port, ['GET //[ HTTP/1.1', 'Host: localhost', 'Connection: close'])
    expect(status).toBe(500)
    expect(heard.onError.map((e) => e.stage)).toEqual(['http'])
    expect(heard.onError[0]!.error).toBeInstanceOf(TypeError)
    expect(heard.logged.map((l) => l.message)).toEqual(['http failed'])
    expect(heard.events.map((e) => e.stage)).toEqual(['http'])
  })

  it('an SSE open whose handler throws (a trustProxy function that fails) reaches onError with stage sse, not only a silent 500', async () => {
    const failure = new Error('proxy list unavailable')
    const { port, heard } = await serve({
      websocket: false,
      edge: {
        trustProxy: () => {
          throw failure
        },
      },
    })
    const status = await rawRequest(port, ['GET /realtime/sse HTTP/1.1', 'Host: localhost', 'Accept: text/event-stream', 'X-Forwarded-For: 203.0.113.9', 'Connection: close'])
    expect(status).toBe(500)
    expect(heard.onError).toEqual([{ error: failure, stage: 'sse' }])
    expect(heard.logged).toEqual([{ message: 'sse failed', fields: { error: 'proxy list unavailable' } }])
    expect(heard.events).toEqual([{ error: failure, stage: 'sse' }])
  })

  it('a long-poll open whose handler throws reaches onError with stage long-poll', async () => {
    const failure = new Error('proxy list unavailable')
    const { port, heard } = await serve({
      websocket: false,
      sse: false,
      edge: {
        trustProxy: () => {
          throw failure
        },
      },
    })
    const status = await rawRequest(port, ['POST /realtime/poll HTTP/1.1', 'Host: localhost', 'Content-Length: 0', 'X-Forwarded-For: 203.0.113.9', 'Connection: close'])
    expect(status).toBe(500)
    expect(heard.onError).toEqual([{ error: failure, stage: 'long-poll' }])
  })
})
