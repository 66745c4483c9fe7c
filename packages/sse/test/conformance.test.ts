// The Session MUSTs (ports/session.ts) over Server-Sent Events: the shared conformance suite,
// with a streaming fetch on loopback as the far end (it stops reading when paused, so the
// server's socket fills as it would with a slow browser).
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, silentLogger } from '@tidings/core'
import { captureSessions, sessionConformance } from '@tidings/core/conformance'
import { createSseTransport } from '../src/index.js'

sessionConformance('sse', async ({ highWaterMark }) => {
  const hub = createHub({ logger: silentLogger, authenticate: () => ({ userId: 'conformance' }), limits: { highWaterMark } })
  const capture = captureSessions(hub)
  const transport = createSseTransport(capture.hub, { bufferBytes: 64 * 1024 * 1024 })
  const server = http.createServer((req, res) => {
    void transport.handle(req, res).then((handled) => {
      if (!handled) res.writeHead(404).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const ctrl = new AbortController()
  const res = await fetch(`http://127.0.0.1:${port}/realtime/sse`, { signal: ctrl.signal })
  if (res.status !== 200) throw new Error(`SSE open answered ${res.status}`)
  const frames: unknown[] = []
  let closed: { code?: number } | undefined
  let paused: Promise<void> | undefined
  let unpause: (() => void) | undefined
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
  const pump = async () => {
    let buf = ''
    try {
      for (;;) {
        if (paused) await paused
        const { value, done } = await reader.read()
        if (done) break
        buf += value
        let end: number
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end)
          buf = buf.slice(end + 2)
          let event = 'message'
          const data: string[] = []
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7)
            else if (line.startsWith('data: ')) data.push(line.slice(6))
          }
          if (data.length === 0 || event === 'session') continue
          if (event === 'close') closed = JSON.parse(data.join('\n')) as { code: number }
          else frames.push(JSON.parse(data.join('\n')))
        }
      }
    } catch {
      // aborted
    }
    closed ??= {}
  }
  void pump()
  const { session, handle, calls } = await capture.next()
  return {
    session,
    handle,
    calls,
    received: () => frames,
    pause() {
      paused = new Promise<void>((resolve) => (unpause = resolve))
    },
    resume() {
      paused = undefined
      unpause?.()
    },
    drop: () => ctrl.abort(),
    farEndClosed: () => closed,
    async dispose() {
      ctrl.abort()
      unpause?.()
      await hub.close()
      await transport.close()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
})
