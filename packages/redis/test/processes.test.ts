import { type ChildProcess, spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { Realtime } from '@tidings/client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { type RedisServer, startRedis, until } from './servers.js'

// Three hub nodes in three Node processes (packages/redis/test/node-process.ts: the Redis ports,
// the WebSocket transport and the admin API through createRealtime), on one real redis-server;
// real WebSocket clients spread over them. What holds on one hub holds across the processes:
// delivery, presence, kicks, the per-user limit; and a node killed with SIGKILL loses nothing.

const API_KEY = 'processes-test-key'

interface Node {
  readonly id: string
  readonly port: number
  readonly child: ChildProcess
}

let redis: RedisServer
let nodes: Node[] = []
const sockets: Client[] = []
const sdks: Realtime[] = []

function startNode(id: string): Promise<Node> {
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', new URL('./node-process.ts', import.meta.url).pathname], {
    env: { ...process.env, REDIS_PORT: String(redis.port), NODE_ID: id, API_KEY },
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${id} exited (${code}) before listening`)))
    createInterface({ input: child.stdout! }).once('line', (line) => resolve({ id, port: (JSON.parse(line) as { port: number }).port, child }))
  })
}

beforeAll(async () => {
  redis = await startRedis()
  nodes = await Promise.all(['n1', 'n2', 'n3'].map(startNode))
}, 60_000)

afterAll(async () => {
  for (const s of sdks.splice(0)) s.disconnect()
  for (const c of sockets.splice(0)) c.close()
  await Promise.all(
    nodes.map(({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return undefined
      const gone = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      return gone
    }),
  )
  await redis?.stop()
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

type Frame = { type: string; channel?: string; [key: string]: any }

/** A raw `ws` client: every frame kept, messages of at-least-once channels acknowledged. */
interface Client {
  readonly frames: Frame[]
  readonly closed: Promise<{ code: number; reason: string }>
  send(frame: Record<string, unknown>): void
  next(match: (f: Frame) => boolean, ms?: number): Promise<Frame>
  subscribe(channel: string): Promise<Frame>
  close(): void
}

let requestId = 0
async function connect(node: Node, userId: string): Promise<Client> {
  const socket = new WebSocket(`ws://127.0.0.1:${node.port}/realtime?token=${encodeURIComponent(userId)}`, 'tidings.v1.json')
  const frames: Frame[] = []
  const waiters = new Set<() => void>()
  const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
  socket.on('message', (raw) => {
    const frame = JSON.parse(raw.toString()) as Frame
    frames.push(frame)
    if (frame.type === 'message' && typeof frame.offset === 'number') socket.send(JSON.stringify({ type: 'ack', v: 1, channel: frame.channel, offset: frame.offset }))
    for (const w of waiters) w()
  })
  const client: Client = {
    frames,
    closed,
    send: (frame) => socket.send(JSON.stringify({ v: 1, ...frame })),
    next(match, ms = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = frames.find(match)
          if (!found) return
          waiters.delete(check)
          clearTimeout(timer)
          resolve(found)
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`no matching frame; got ${JSON.stringify(frames.map((f) => f.type))}`))
        }, ms)
        waiters.add(check)
        check()
      })
    },
    async subscribe(channel) {
      const id = `s${++requestId}`
      client.send({ type: 'subscribe', id, channel })
      const answer = await client.next((f) => f.id === id)
      expect(answer.type).toBe('subscribed')
      return answer
    },
    close: () => socket.close(),
  }
  sockets.push(client)
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve())
    socket.once('error', reject)
  })
  return client
}

/** A client that is in: its `connected` frame came. */
async function connected(node: Node, userId: string): Promise<Client> {
  const c = await connect(node, userId)
  await c.next((f) => f.type === 'connected')
  return c
}

async function admin(node: Node, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`http://127.0.0.1:${node.port}/realtime${path}`, {
    method,
    headers: { 'x-api-key': API_KEY, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  expect(res.status).toBe(200)
  return res.json()
}


const data = (c: Client, channel: string) => c.frames.filter((f) => f.type === 'message' && f.channel === channel).map((f) => f.data)
const joins = (c: Client, channel: string, user: string) => c.frames.filter((f) => f.type === 'presence:join' && f.channel === channel && f.user.id === user).length
const leaves = (c: Client, channel: string, user: string) => c.frames.filter((f) => f.type === 'presence:leave' && f.channel === channel && f.user.id === user).length

describe('three hub nodes in three processes on one Redis', () => {
  it('a publish on node 1 reaches the subscribers on nodes 2 and 3 in order, once each (no loss, duplicate or reordering between processes)', async () => {
    const [n1, n2, n3] = nodes as [Node, Node, Node]
    const pub = await connected(n1, 'pub')
    const b = await connected(n2, 'bea')
    const c = await connected(n3, 'cid')
    await b.subscribe('room:order')
    await c.subscribe('room:order')
    for (let n = 0; n < 40; n++) pub.send({ type: 'message', channel: 'room:order', event: 'n', data: n })
    // and one from the admin API of node 2, after them
    await until(() => expect(data(c, 'room:order')).toHaveLength(40))
    await admin(n2, 'POST', '/channels/room:order/broadcast', { event: 'n', data: 40 })
    const expected = Array.from({ length: 41 }, (_, n) => n)
    await until(() => expect(data(b, 'room:order')).toEqual(expected))
    await until(() => expect(data(c, 'room:order')).toEqual(expected))
    const offsets = c.frames.filter((f) => f.type === 'message' && f.channel === 'room:order').map((f) => f.offset)
    expect(offsets).toEqual(expected.map((n) => n + 1))
    await sleep(300) // nothing more comes (a second copy through another path)
    expect(data(b, 'room:order')).toEqual(expected)
    expect(data(c, 'room:order')).toEqual(expected)
  })

  it('a join on node 2 is seen on node 3 once; a user with tabs on two nodes is one member, and leaves once when the last tab closes', async () => {
    const [n1, n2, n3] = nodes as [Node, Node, Node]
    const watcher = await connected(n3, 'wes')
    await watcher.subscribe('room:presence')
    const tab1 = await connected(n2, 'bob')
    await tab1.subscribe('room:presence')
    await until(() => expect(joins(watcher, 'room:presence', 'bob')).toBe(1))
    const tab2 = await connected(n1, 'bob')
    const second = await tab2.subscribe('room:presence')
    // the second tab's snapshot lists bob once, and the presence query on any node too
    expect(second.presence.users.map((u: { id: string }) => u.id).sort()).toEqual(['bob', 'wes'])
    const everywhere = await Promise.all(nodes.map((n) => admin(n, 'GET', '/channels/room:presence/presence')))
    for (const p of everywhere) expect({ count: p.count, users: p.users.map((u: { id: string }) => u.id).sort() }).toEqual({ count: 2, users: ['bob', 'wes'] })
    tab1.close()
    await sleep(400)
    expect(leaves(watcher, 'room:presence', 'bob')).toBe(0) // still there, on node 1
    tab2.close()
    await until(() => expect(leaves(watcher, 'room:presence', 'bob')).toBe(1))
    await sleep(300)
    expect(joins(watcher, 'room:presence', 'bob')).toBe(1)
    expect(leaves(watcher, 'room:presence', 'bob')).toBe(1)
  })

  it('a kick through the admin API of node 1 removes the user from the channel on nodes 2 and 3, and only that user', async () => {
    const [n1, n2, n3] = nodes as [Node, Node, Node]
    const kimOn2 = await connected(n2, 'kim')
    const kimOn3 = await connected(n3, 'kim')
    const other = await connected(n3, 'oli')
    for (const c of [kimOn2, kimOn3, other]) await c.subscribe('room:kick')
    const answer = await admin(n1, 'POST', '/channels/room:kick/kick', { userId: 'kim', reason: 'spam' })
    expect(answer.removed).toBe(2)
    for (const kim of [kimOn2, kimOn3]) await kim.next((f) => f.type === 'unsubscribed' && f.channel === 'room:kick')
    await until(() => expect(leaves(other, 'room:kick', 'kim')).toBe(1))
    // oli is still subscribed: a publish reaches oli, not kim
    await admin(n1, 'POST', '/channels/room:kick/broadcast', { event: 'after', data: 'x' })
    await until(() => expect(data(other, 'room:kick')).toEqual(['x']))
    await sleep(200)
    expect(data(kimOn2, 'room:kick')).toEqual([])
    expect(data(kimOn3, 'room:kick')).toEqual([])
  })

  it('the per-user limit (2) holds across nodes: a third connection on another node is refused, and a place freed on one node is usable on another', async () => {
    const [n1, n2, n3] = nodes as [Node, Node, Node]
    const first = await connected(n1, 'lim')
    await connected(n2, 'lim')
    const third = await connect(n3, 'lim')
    const refused = await third.next((f) => f.type === 'error')
    expect(refused.code).toBe('RT_001')
    expect((await third.closed).code).toBe(4008)
    first.close()
    await first.closed
    await until(async () => {
      const again = await connect(n3, 'lim')
      const answer = await again.next((f) => f.type === 'connected' || f.type === 'error')
      expect(answer.type).toBe('connected')
    })
  })

  it('a node killed with SIGKILL: its members leave once (on every other node) within the TTL, and its clients resume on another node with nothing lost or duplicated', async () => {
    const [n1, n2, n3] = nodes as [Node, Node, Node]
    const w1 = await connected(n1, 'w1')
    const w2 = await connected(n2, 'w2')
    await w1.subscribe('room:crash')
    await w2.subscribe('room:crash')
    // zed stays with node 3 (a raw socket, no reconnect): it must leave once when node 3 dies
    const zed = await connected(n3, 'zed')
    await zed.subscribe('room:crash')
    // vic uses the SDK, and its WebSocket goes to node 3, then to the next node once one is gone
    const order = [n3, n1, n2]
    let at = 0
    class FailoverWebSocket extends WebSocket {
      constructor(url: string, protocols?: string | string[]) {
        const target = new URL(url)
        target.port = String(order[at]!.port)
        super(target, protocols)
        this.once('close', () => (at = (at + 1) % order.length))
      }
    }
    const vic = new Realtime({ url: `http://127.0.0.1:${n3.port}/realtime`, auth: 'vic', WebSocket: FailoverWebSocket, transports: ['websocket'], reconnectDelay: 100, maxReconnectDelay: 300 })
    sdks.push(vic)
    const got: number[] = []
    const connectedTo: string[] = []
    vic.on('connected', () => connectedTo.push(String(order[at]!.id)))
    const channel = vic.channel('room:crash')
    channel.on('n', (n: number) => got.push(n))
    await channel.subscribe()
    await until(() => expect(joins(w1, 'room:crash', 'zed') + joins(w1, 'room:crash', 'vic')).toBe(2))

    const pub = await connected(n2, 'pub')
    const total = 120
    let killedAt = 0
    for (let n = 0; n < total; n++) {
      if (n === 40) {
        n3.child.kill('SIGKILL')
        killedAt = Date.now()
      }
      pub.send({ type: 'message', channel: 'room:crash', event: 'n', data: n })
      await sleep(10)
    }
    // vic moved to another node and has every message, once, in order
    await until(() => expect(got).toEqual(Array.from({ length: total }, (_, n) => n)), 15_000)
    expect(connectedTo[0]).toBe('n3')
    expect(connectedTo.length).toBeGreaterThanOrEqual(2)
    expect(connectedTo.at(-1)).not.toBe('n3')
    // zed (gone with its node) leaves once on each surviving node, within the TTL (1 s) and a few heartbeats
    await until(() => expect([leaves(w1, 'room:crash', 'zed'), leaves(w2, 'room:crash', 'zed')]).toEqual([1, 1]), 5_000)
    expect(Date.now() - killedAt).toBeLessThan(6_000)
    await sleep(1_000)
    expect([leaves(w1, 'room:crash', 'zed'), leaves(w2, 'room:crash', 'zed')]).toEqual([1, 1])
    // vic, back on another node, is still a member; zed is not
    const p = await admin(n1, 'GET', '/channels/room:crash/presence')
    expect(p.users.map((u: { id: string }) => u.id).sort()).toEqual(['vic', 'w1', 'w2'])
    expect(got).toHaveLength(total)
  }, 30_000)
})
