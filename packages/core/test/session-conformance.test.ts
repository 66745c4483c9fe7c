import { createHub, silentLogger } from '@tidings/core'
import { captureSessions, sessionConformance } from '@tidings/core/conformance'
import { createMemoryTransport } from '@tidings/core/testing'

// The Session MUSTs over the in-memory transport (the WebSocket, SSE and long-poll transports run
// the same suite in their own packages, over real sockets).
sessionConformance('memory transport', async ({ highWaterMark }) => {
  const hub = createHub({ logger: silentLogger, limits: { highWaterMark } })
  const capture = captureSessions(hub)
  const transport = createMemoryTransport(capture.hub)
  const client = await transport.connect({ userId: 'conformance' })
  const { session, handle, calls } = await capture.next()
  return {
    session,
    handle,
    calls,
    received: () => client.frames,
    pause: () => client.pause(),
    resume: () => client.resume(),
    drop: () => client.drop(),
    farEndClosed: () => (client.closed ? { code: client.closeCode } : undefined),
    dispose: () => hub.close(),
  }
})
