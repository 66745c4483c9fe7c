/**
 * Connection set-up, server side, in one process: how long a server's `upgrade` handling takes
 * (the synchronous part: ws's handshake, and for Tidings the session, the hub's accept and the
 * `connected` frame) and the whole open as a minimal client sees it (connect → 101, and for
 * Tidings → `connected`, which travels in the same write). Tidings (`createRealtime`, no
 * authenticator) against a raw `ws` server, one connection at a time, alternating in rounds.
 * Both clients are the same hand-written upgrade request over `net`, so the difference is the
 * servers'. The comparison harness (bench/run.ts) measures set-up across processes; this one
 * isolates the server's share of it.
 *
 *   pnpm bench:setup          ROUNDS (6) × PER_ROUND (300) connections per system
 */
import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { type AddressInfo, connect } from 'node:net'
import { createHub, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import { WebSocketServer } from 'ws'
import { median, percentile } from './lib/stats.js'

const ROUNDS = Number(process.env['ROUNDS'] ?? 6)
const PER_ROUND = Number(process.env['PER_ROUND'] ?? 300)

interface Target {
  readonly name: string
  readonly port: number
  readonly path: string
  readonly protocol: string | undefined
  /** The bytes that end the open, as the client sees it. */
  readonly until: string
  /** Time spent in the server's `upgrade` listeners, per connection (ms). */
  readonly handler: number[]
  readonly open: number[]
}

async function listen(server: Server, t: Omit<Target, 'port' | 'handler' | 'open'>): Promise<Target> {
  const target: Target = { ...t, port: 0, handler: [], open: [] }
  let t0 = 0
  server.prependListener('upgrade', () => {
    t0 = performance.now()
  })
  server.on('upgrade', () => target.handler.push(performance.now() - t0))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return { ...target, port: (server.address() as AddressInfo).port }
}

async function tidings(): Promise<Target> {
  const server = createServer()
  // One loopback address opens every connection: no per-address limits.
  createRealtime({ hub: createHub({ logger: silentLogger }), edge: { maxConnectionsPerIp: 0, maxNewConnectionsPerIpPerMinute: 0 } }).attach(server)
  return listen(server, { name: 'tidings', path: '/realtime', protocol: 'tidings.v1.json', until: '"connected"' })
}

async function rawWs(): Promise<Target> {
  const server = createServer()
  const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: false })
  wss.on('connection', (ws) => ws.on('error', () => {}))
  return listen(server, { name: 'ws', path: '/', protocol: undefined, until: '\r\n\r\n' })
}

function openOne(t: Target): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const socket = connect(t.port, '127.0.0.1', () => {
      socket.write(
        `GET ${t.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
          `${t.protocol ? `Sec-WebSocket-Protocol: ${t.protocol}\r\n` : ''}\r\n`,
      )
    })
    const timer = setTimeout(() => reject(new Error(`${t.name}: no answer in 5 s`)), 5_000)
    let got = ''
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1')
      if (!got.includes(t.until)) return
      clearTimeout(timer)
      resolve(performance.now() - t0)
      socket.destroy()
    })
    socket.on('error', reject)
  })
}

const targets = [await tidings(), await rawWs()]
for (let round = 0; round < ROUNDS; round++) {
  for (const t of round % 2 === 0 ? targets : [...targets].reverse()) {
    for (let i = 0; i < PER_ROUND; i++) t.open.push(await openOne(t))
  }
}
const us = (ms: number) => (ms * 1000).toFixed(0)
const [tid, ws] = targets as [Target, Target]
for (const t of targets) {
  console.log(`setup-inprocess ${t.name}: upgrade handler p50 ${us(median(t.handler))} µs, p95 ${us(percentile(t.handler, 95))} µs; open p50 ${us(median(t.open))} µs, p95 ${us(percentile(t.open, 95))} µs (${t.open.length} connections)`)
}
console.log(`setup-inprocess: handler-p50 tidings=${us(median(tid.handler))}µs ws=${us(median(ws.handler))}µs ratio=${(median(tid.handler) / median(ws.handler)).toFixed(2)}; open-p95 ratio=${(percentile(tid.open, 95) / percentile(ws.open, 95)).toFixed(2)}`)
process.exit(0)
