// The Session MUSTs (ports/session.ts) over a real WebSocket: the shared conformance suite,
// with a real `ws` client on loopback as the far end.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, silentLogger } from '@tidings/core'
import { captureSessions, sessionConformance } from '@tidings/core/conformance'
import WebSocket from 'ws'
import { createWsTransport, JSON_SUBPROTOCOL } from '../src/index.js'

sessionConformance('ws', async ({ highWaterMark }) => {
  const hub = createHub({ logger: silentLogger, authenticate: () => ({ userId: 'conformance' }), limits: { highWaterMark } })
  const capture = captureSessions(hub)
  const transport = createWsTransport(capture.hub)
  const server = createServer((_req, res) => res.writeHead(404).end())
  const detach = transport.attach(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const client = new WebSocket(`ws://127.0.0.1:${port}/realtime`, JSON_SUBPROTOCOL)
  const frames: unknown[] = []
  let closed: { code: number } | undefined
  client.on('message', (data: Buffer) => frames.push(JSON.parse(data.toString('utf8'))))
  client.on('close', (code) => (closed = { code }))
  client.on('error', () => {})
  const { session, handle, calls } = await capture.next()
  return {
    session,
    handle,
    calls,
    received: () => frames,
    pause: () => client.pause(),
    resume: () => client.resume(),
    drop: () => client.terminate(),
    farEndClosed: () => closed,
    async dispose() {
      client.terminate()
      await hub.close()
      await transport.close()
      detach()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
})
