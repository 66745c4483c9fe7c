// The Session MUSTs (ports/session.ts) over long-polling: the shared conformance suite, with a
// polling fetch client on loopback as the far end (paused, it stops polling, so nothing it was
// sent is confirmed and the session's buffer grows).
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, silentLogger } from '@tidings/core'
import { captureSessions, sessionConformance } from '@tidings/core/conformance'
import { createLongPollTransport } from '../src/index.js'

interface PollBody {
  session?: string
  secret?: string
  frames: unknown[]
  cursor: number
  close?: { code: number; reason: string }
}

sessionConformance('long-poll', async ({ highWaterMark }) => {
  const hub = createHub({ logger: silentLogger, authenticate: () => ({ userId: 'conformance' }), limits: { highWaterMark } })
  const capture = captureSessions(hub)
  const transport = createLongPollTransport(capture.hub, { bufferBytes: 64 * 1024 * 1024, pollTimeoutMs: 1_000 })
  const server = http.createServer((req, res) => {
    void transport.handle(req, res).then((handled) => {
      if (!handled) res.writeHead(404).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const base = `http://127.0.0.1:${port}/realtime/poll`
  const opened = (await (await fetch(base, { method: 'POST' })).json()) as PollBody
  const frames: unknown[] = [...opened.frames]
  let cursor = opened.cursor
  let closed: { code?: number } | undefined
  let stopped = false
  let paused: Promise<void> | undefined
  let unpause: (() => void) | undefined
  const ctrl = new AbortController()
  const loop = async () => {
    try {
      while (!stopped && !closed) {
        if (paused) await paused
        if (stopped) break
        const res = await fetch(`${base}/${opened.session}?cursor=${cursor}`, { headers: { 'x-tidings-secret': opened.secret! }, signal: ctrl.signal })
        if (res.status !== 200) {
          closed = {}
          break
        }
        const body = (await res.json()) as PollBody
        frames.push(...body.frames)
        cursor = body.cursor
        if (body.close) closed = { code: body.close.code }
      }
    } catch {
      // aborted
    }
  }
  void loop()
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
    drop() {
      stopped = true
      ctrl.abort()
    },
    farEndClosed: () => closed,
    async dispose() {
      stopped = true
      ctrl.abort()
      unpause?.()
      await hub.close()
      await transport.close()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
})
