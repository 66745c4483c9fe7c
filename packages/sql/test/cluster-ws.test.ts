import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type Hub, createHub, createTokenAuthenticator, silentLogger } from '@tidings/core'
import { createWsTransport } from '@tidings/ws'
import pg from 'pg'
import WebSocket from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createPostgresBroker } from '../src/broker.js'
import { createPostgresPresenceStore } from '../src/presence.js'
import { createSqlStore } from '../src/store.js'
import { type PostgresServer, startPostgres } from './postgres.js'

// A cluster with nothing but PostgreSQL: two nodes, each with its own HTTP server and WebSocket
// transport and the three PostgreSQL ports of this package (broker, presence, message store),
// and real `ws` clients on each node.

let pgServer: PostgresServer
let url: string
const closers: Array<() => Promise<void>> = []
beforeAll(async () => {
  pgServer = await startPostgres()
  url = await pgServer.createDatabase()
}, 60_000)
afterAll(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined)
  await pgServer?.stop()
})

type Frame = Record<string, unknown> & { type: string }
const TOKENS = { 'tok-ada': { userId: 'ada' }, 'tok-bob': { userId: 'bob' } }

async function startNode(nodeId: string): Promise<{ hub: Hub; port: number }> {
  const presenceStore = createPostgresPresenceStore({ connectionString: url })
  const hub = createHub({
    nodeId,
    logger: silentLogger,
    authenticate: createTokenAuthenticator(TOKENS),
    broker: createPostgresBroker({ connectionString: url }),
    presenceStore,
    store: createSqlStore({ db: { postgres: url } }),
  })
  const transport = createWsTransport(hub)
  const server: Server = createServer((_req, res) => res.writeHead(404).end())
  transport.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  closers.push(async () => {
    await hub.close()
    await presenceStore.close()
    await new Promise((r) => server.close(r))
  })
  return { hub, port: (server.address() as AddressInfo).port }
}

function client(port: number, token: string) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/realtime?token=${token}`, 'tidings.v1.json')
  const frames: Frame[] = []
  const waiters: Array<{ match: (f: Frame) => boolean; resolve: (f: Frame) => void }> = []
  ws.on('message', (raw) => {
    const f = JSON.parse(String(raw)) as Frame
    frames.push(f)
    for (const w of [...waiters]) if (w.match(f)) waiters.splice(waiters.indexOf(w), 1) && w.resolve(f)
  })
  closers.push(async () => ws.close())
  let n = 0
  const waitFor = (match: (f: Frame) => boolean, ms = 10_000) =>
    new Promise<Frame>((resolve, reject) => {
      const found = frames.find(match)
      if (found) return resolve(found)
      const timer = setTimeout(() => reject(new Error('timed out waiting for a frame')), ms)
      waiters.push({ match, resolve: (f) => (clearTimeout(timer), resolve(f)) })
    })
  return {
    frames,
    waitFor,
    async request(frame: Record<string, unknown>) {
      const id = `r${++n}`
      ws.send(JSON.stringify({ ...frame, id }))
      return waitFor((f) => f['id'] === id && f.type !== 'message')
    },
    messages: (channel: string) => frames.filter((f) => f.type === 'message' && f['channel'] === channel),
  }
}

describe('two nodes on PostgreSQL alone, real WebSocket clients', () => {
  it('a client on one node publishes 30 messages, one over NOTIFY’s size limit: the client on the other node gets each once, in offset order, and sees the publisher’s presence', async () => {
    const a = await startNode('ws-a')
    const b = await startNode('ws-b')
    const ada = client(a.port, 'tok-ada')
    const bob = client(b.port, 'tok-bob')
    await ada.waitFor((f) => f.type === 'connected')
    await bob.waitFor((f) => f.type === 'connected')
    expect((await bob.request({ type: 'subscribe', channel: 'public:room' })).type).toBe('subscribed')
    expect((await bob.request({ type: 'subscribe', channel: 'presence:lobby' })).type).toBe('subscribed')
    expect((await ada.request({ type: 'subscribe', channel: 'presence:lobby' })).type).toBe('subscribed')
    const offsets: unknown[] = []
    for (let n = 1; n <= 30; n++) {
      const data = n === 15 ? { n, text: 'é'.repeat(10_000) } : { n }
      const reply = await ada.request({ type: 'message', channel: 'public:room', event: 'say', data })
      expect(reply.type).toBe('published')
      offsets.push(reply['offset'])
    }
    for (let i = 0; i < 200 && bob.messages('public:room').length < 30; i++) await new Promise((r) => setTimeout(r, 25))
    const got = bob.messages('public:room')
    expect(got.map((f) => (f['data'] as { n: number }).n)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1))
    expect(got.map((f) => f['offset'])).toEqual(offsets)
    expect((got[14]!['data'] as { text: string }).text).toHaveLength(10_000)
    // the large one crossed through the outbox (its row is kept for outboxTtlMs)
    const db = new pg.Client(url)
    await db.connect()
    expect((await db.query('SELECT count(*)::int AS n FROM tidings_broker_outbox')).rows[0].n).toBeGreaterThanOrEqual(1)
    await db.end()
    // ada's join on node a, announced to bob on node b through the presence store and the broker
    const presence = await bob.request({ type: 'presence:get', channel: 'presence:lobby' })
    expect(JSON.stringify(presence)).toContain('"ada"')
  }, 60_000)
})
