import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { connect as netConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHub, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import WebSocket from 'ws'
import { beforeAll, describe, expect, it } from 'vitest'
import { onCleanup, serve, sleep } from './support.js'

/* The handshake deadline on HTTPS servers and on keep-alive connections. */

let key: Buffer
let cert: Buffer
beforeAll(() => {
  const dir = mkdtempSync(join(tmpdir(), 'tidings-tls-'))
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' })
  key = readFileSync(join(dir, 'key.pem'))
  cert = readFileSync(join(dir, 'cert.pem'))
})

describe('the handshake deadline', () => {
  it('on an HTTPS server, a connection that completed its handshake is not cut at the deadline (the TLS socket is matched to its TCP socket)', async () => {
    const hub = createHub({ logger: silentLogger })
    const realtime = createRealtime({ hub, websocket: { handshakeTimeoutMs: 300 } })
    const server = createHttpsServer({ key, cert })
    realtime.attach(server)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    onCleanup(async () => {
      await realtime.close()
      await hub.close()
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    })
    const port = (server.address() as AddressInfo).port
    const ws = new WebSocket(`wss://127.0.0.1:${port}/realtime`, 'tidings.v1.json', { rejectUnauthorized: false })
    onCleanup(() => ws.terminate())
    const frames: string[] = []
    ws.on('message', (d) => frames.push(String(d)))
    let closed: number | undefined
    ws.on('close', (code) => (closed = code))
    await new Promise((resolve, reject) => {
      ws.once('open', resolve)
      ws.once('error', reject)
    })
    await sleep(700) // more than twice the deadline
    expect(closed).toBeUndefined()
    ws.send(JSON.stringify({ type: 'ping', id: 1 }))
    await sleep(100)
    expect(frames.some((f) => f.includes('"pong"'))).toBe(true)
  })

  it('a keep-alive connection that dribbles the headers of its second request is cut at the deadline too', async () => {
    const s = await serve({}, { websocket: { handshakeTimeoutMs: 400 } })
    const port = Number(new URL(s.base).port)
    const socket = netConnect(port, '127.0.0.1')
    onCleanup(() => socket.destroy())
    socket.on('error', () => {})
    let data = ''
    socket.on('data', (d: Buffer) => (data += d.toString()))
    const closedAt = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now())))
    socket.write('GET /realtime/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n')
    await sleep(200)
    expect(data).toMatch(/^HTTP\/1\.1 200/)
    // the second request never completes its headers
    const start = Date.now()
    const dribble = setInterval(() => socket.writable && socket.write('X'), 100)
    onCleanup(() => clearInterval(dribble))
    socket.write('GET /realtime/openapi.json HTTP/1.1\r\nX-Slow: ')
    const at = await closedAt
    clearInterval(dribble)
    // the keep-alive deadline is the longer of the handshake deadline and keepAliveTimeout (5 s) + 1 s
    expect(at - start).toBeLessThan(8_000)
  }, 15_000)
})
