import { connect as netConnect, type Socket } from 'node:net'
import { describe, expect, it } from 'vitest'
import { onCleanup, serve, sleep } from './support.js'

/* Request bodies of the HTTP transports: a deadline on each, and a bound on how many one address sends at once. */

async function pollSession(base: string): Promise<{ session: string; secret: string }> {
  const res = await fetch(`${base}/realtime/poll`, { method: 'POST' })
  expect(res.status).toBe(200)
  return (await res.json()) as { session: string; secret: string }
}

/** Send the head of a POST that declares `declared` bytes and `sent` of them, then stall. */
function stalledPost(port: number, path: string, secret: string, declared: number, sent: number): { socket: Socket; answer: Promise<string> } {
  const socket = netConnect(port, '127.0.0.1')
  onCleanup(() => socket.destroy())
  socket.on('error', () => {})
  let data = ''
  const answer = new Promise<string>((resolve) => {
    socket.on('data', (d: Buffer) => (data += d.toString()))
    socket.on('close', () => resolve(data))
  })
  socket.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-tidings-secret: ${secret}\r\nContent-Length: ${declared}\r\n\r\n${' '.repeat(sent)}`)
  return { socket, answer }
}

describe('request bodies', () => {
  it('a body that stops arriving (body slowloris) is answered 408 within the deadline and its connection closed', async () => {
    const s = await serve({}, { longPoll: { handshakeTimeoutMs: 300 } })
    const port = Number(new URL(s.base).port)
    const { session, secret } = await pollSession(s.base)
    const t0 = Date.now()
    const { answer } = stalledPost(port, `/realtime/poll/${session}`, secret, 512 * 1024, 1024)
    const text = await answer
    expect(text).toMatch(/^HTTP\/1\.1 408/)
    expect(text).toContain('RT_001')
    expect(Date.now() - t0).toBeLessThan(2_000)
  })

  it('one address may send at most maxBodiesInFlightPerIp bodies at once: the next is 429, and the slots come back', async () => {
    const s = await serve({}, { edge: { maxBodiesInFlightPerIp: 3 }, longPoll: { handshakeTimeoutMs: 400 } })
    const port = Number(new URL(s.base).port)
    const { session, secret } = await pollSession(s.base)
    const stalled = [0, 1, 2].map(() => stalledPost(port, `/realtime/poll/${session}`, secret, 4096, 10))
    await sleep(100)
    const refused = await fetch(`${s.base}/realtime/poll/${session}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tidings-secret': secret }, body: '{"type":"ping"}' })
    expect(refused.status).toBe(429)
    expect(refused.headers.get('retry-after')).toBe('1')
    for (const st of stalled) expect(await st.answer).toMatch(/^HTTP\/1\.1 408/)
    const ok = await fetch(`${s.base}/realtime/poll/${session}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tidings-secret': secret }, body: '{"type":"ping"}' })
    expect(ok.status).toBe(204)
  })

  it('the default body limit is 1 MiB (not 100 frames of the largest size): a larger declared body is 413 at once', async () => {
    const s = await serve()
    const port = Number(new URL(s.base).port)
    const { session, secret } = await pollSession(s.base)
    const { answer } = stalledPost(port, `/realtime/poll/${session}`, secret, 1024 * 1024 + 1, 0)
    expect(await answer).toMatch(/^HTTP\/1\.1 413/)
  })
})

describe('requests Node cannot parse', () => {
  it('a negative Content-Length with a body still gets its 400, closed gracefully (no reset that could swallow the answer)', async () => {
    const s = await serve()
    const port = Number(new URL(s.base).port)
    for (let i = 0; i < 5; i++) {
      const socket = netConnect(port, '127.0.0.1')
      onCleanup(() => socket.destroy())
      let data = ''
      let reset = false
      const closed = new Promise<void>((resolve) => {
        socket.on('data', (d: Buffer) => (data += d.toString()))
        socket.on('error', (err: NodeJS.ErrnoException) => {
          if (err.code === 'ECONNRESET' || err.code === 'EPIPE') reset = true
        })
        socket.on('close', () => resolve())
      })
      socket.write(`POST /realtime/channels/nope/kick HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: -1\r\n\r\n${'{"event":"x"}'.repeat(100_000)}`)
      await closed
      expect(data).toMatch(/^HTTP\/1\.1 400 Bad Request/)
      expect(reset).toBe(false)
    }
  })
})
