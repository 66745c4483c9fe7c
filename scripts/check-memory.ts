/**
 * `pnpm check:memory`: three memory attacks, each against a fresh real server in a child process
 * (scripts/attack/server.ts, run with --expose-gc), each measured as the child's RSS growth over
 * its baseline, both after GC:
 *
 * (a) history amplification: a channel holding 100 messages of ~120 KB; 60 raw sockets that never
 *     read each send one ~70-byte `history` frame with `limit: 1000`;
 * (b) channel-name churn: 110,000 `history` frames for distinct `public:junk-N` names from 100
 *     anonymous connections (each paced under the 100 frames/s limit); then `public:important` must
 *     still have its history, and user x's offline queue (private:user-x, written before the churn)
 *     must be delivered, or reported `recovered: false` — never lost with `recovered: true`;
 * (c) retention flood: one user publishing 3,100 messages of 127 KB in ~5 s, over 10 connections
 *     (62 frames/s each, under the 100/s limit) and 31 channels `public:flood-N`.
 *
 * Last stdout line:
 *   memory: history-amplification-mb=<a> name-churn-mb=<b> retention-flood-mb=<c> silent-loss=<0|1>
 * Exit 1 when any growth is over 100 MB or something was lost silently.
 * `--only a|b|c` runs one attack (the others print as -1).
 */
import type { Socket } from 'node:net'
import { parseArgs } from 'node:util'
import { Child, killAllChildren } from '../bench/lib/ipc.js'
import { ADMIN_KEY } from './attack/config.js'
import { rawWebSocket, wsFrame } from './attack/raw.js'
import { newStats, WsPeer } from './attack/ws-peer.js'

const { values: flags } = parseArgs({ options: { only: { type: 'string' } } })
const PREFIX = '/realtime'
const MB = 1024 * 1024
const LIMIT_MB = 100
const log = (msg: string) => console.error(`[memory] ${msg}`)
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

interface Mem {
  rss: number
  heapUsed: number
  external: number
  connections: number
}

async function withServer<T>(name: string, run: (child: Child, port: number) => Promise<T>): Promise<T> {
  const { child, ready } = await Child.start(name, new URL('./attack/server.ts', import.meta.url), { nodeArgs: ['--conditions=source', '--expose-gc'] })
  let exited = false
  void child.exit.then((code) => {
    if (!exited) log(`${name}: THE SERVER EXITED (code ${code}) during the attack`)
  })
  try {
    return await run(child, ready.port as number)
  } finally {
    exited = true
    await child.stop()
  }
}

const mem = (child: Child) => child.request<Mem>('mem', {}, 60_000)
const growth = (after: Mem, before: Mem) => (after.rss - before.rss) / MB
const describe = (m: Mem) => `RSS ${(m.rss / MB).toFixed(1)} MB, heap ${(m.heapUsed / MB).toFixed(1)} MB, external ${(m.external / MB).toFixed(1)} MB, ${m.connections} connections`

/** Open a peer and wait for `connected`; throws if refused. */
async function peer(port: number, token = ''): Promise<WsPeer> {
  const p = new WsPeer(`ws://127.0.0.1:${port}${PREFIX}${token ? `?token=${token}` : ''}`, newStats())
  if (!(await p.connected)) throw new Error(`connection ${token || 'anonymous'} refused`)
  return p
}

/** Send `frame` and resolve with the first frame answering its id (or undefined after `timeoutMs`). */
function request(p: WsPeer, frame: Record<string, unknown>, timeoutMs = 10_000): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve) => {
    const prev = p.onFrame
    const timer = setTimeout(() => done(undefined), timeoutMs)
    const done = (f: Record<string, unknown> | undefined) => {
      clearTimeout(timer)
      p.onFrame = prev
      resolve(f)
    }
    p.onFrame = (f) => {
      prev?.(f)
      if (f.id === frame.id) done(f)
    }
    p.send(JSON.stringify(frame))
  })
}

// ------------------------------------------------------------------ (a)
async function historyAmplification(): Promise<number> {
  return withServer('history-amplification', async (child, port) => {
    const fill = await child.request<{ top: number }>('fill', { channel: 'big:1', count: 100, bytes: 120_000 }, 120_000)
    const base = await mem(child)
    log(`(a) big:1 holds ${fill.top} messages of 120 KB; baseline ${describe(base)}`)
    const sockets: Socket[] = []
    for (let i = 0; i < 60; i++) {
      const { socket } = await rawWebSocket(port, PREFIX)
      socket.pause() // never read: whatever the server answers stays on its side
      socket.on('error', () => {})
      sockets.push(socket)
    }
    const frame = wsFrame(Buffer.from(JSON.stringify({ type: 'history', id: 1, channel: 'big:1', limit: 1000 })))
    log(`(a) 60 sockets that never read send a ${frame.length - 6}-byte history frame each`)
    for (const s of sockets) s.write(frame)
    await sleep(3000)
    const after = await mem(child)
    const mb = growth(after, base)
    log(`(a) with the 60 sockets still open: ${describe(after)}: +${mb.toFixed(1)} MB`)
    for (const s of sockets) s.destroy()
    return mb
  })
}

// ------------------------------------------------------------------ (b)
async function nameChurn(): Promise<{ mb: number; silentLoss: boolean }> {
  return withServer('name-churn', async (child, port) => {
    // User x subscribes to its private channel once (the hub then knows where it got to), leaves,
    // and 5 messages are queued for it while it is away; public:important gets 20 messages.
    const x = await peer(port, 'tok-x')
    const sub = await request(x, { type: 'subscribe', id: 'x1', channel: 'private:user-x' })
    if (sub?.type !== 'subscribed') throw new Error(`x could not subscribe: ${JSON.stringify(sub)}`)
    x.close()
    await x.closedWith
    const queued: number[] = []
    for (let i = 0; i < 5; i++) queued.push((await child.request<{ offset: number }>('publish', { channel: 'private:user-x', event: 'queued', data: { i } })).offset)
    for (let i = 0; i < 20; i++) await child.request('publish', { channel: 'public:important', event: 'note', data: { i } })
    const base = await mem(child)
    log(`(b) private:user-x has offsets ${queued.join(',')} queued, public:important 20 messages; baseline ${describe(base)}`)

    const CONNS = 100
    const PER = 1100
    const RATE = 90 // frames per second per connection, under the hub's 100
    const stats = newStats()
    const t0 = Date.now()
    let n = 0
    await Promise.all(
      Array.from({ length: CONNS }, async (_, c) => {
        const p = new WsPeer(`ws://127.0.0.1:${port}${PREFIX}`, stats)
        if (!(await p.connected)) throw new Error('an anonymous churn connection was refused')
        const start = Date.now()
        for (let i = 0; i < PER && !p.closed; i++) {
          p.send(JSON.stringify({ type: 'history', id: i, channel: `public:junk-${c * PER + i}` }))
          n++
          const ahead = (i + 1) / RATE - (Date.now() - start) / 1000
          if (ahead > 0) await sleep(ahead * 1000)
        }
        await p.settle(10_000)
        p.close()
      }),
    )
    log(`(b) ${n} history frames for distinct names in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${stats.answered}/${stats.owed} answered; closes ${JSON.stringify(Object.fromEntries(stats.closes))}`)
    const after = await mem(child)
    const mb = growth(after, base)
    log(`(b) after the churn: ${describe(after)}: +${mb.toFixed(1)} MB`)

    const res = await fetch(`http://127.0.0.1:${port}${PREFIX}/channels/public%3Aimportant/history?limit=1000`, { headers: { 'x-api-key': ADMIN_KEY } })
    const important = (await res.json()) as { messages?: unknown[]; epoch?: string }
    const importantKept = important.messages?.length ?? 0
    log(`(b) public:important: ${importantKept}/20 messages in its history (epoch ${important.epoch})`)

    const x2 = await peer(port, 'tok-x')
    const got: number[] = []
    x2.onFrame = (f) => {
      if (f.type === 'message' && f.channel === 'private:user-x' && typeof f.offset === 'number') got.push(f.offset)
    }
    const resub = await request(x2, { type: 'subscribe', id: 'x2', channel: 'private:user-x' })
    await sleep(1000)
    x2.close()
    const missing = queued.filter((o) => !got.includes(o))
    const recovered = resub?.recovered
    log(`(b) x resubscribed: ${JSON.stringify(resub)}; got offsets [${got.join(',')}], missing [${missing.join(',')}]`)
    const queueLostSilently = missing.length > 0 && recovered !== false
    if (queueLostSilently) log(`(b) SILENT LOSS: x's offline queue lost ${missing.length} of 5 messages, and the subscribe said recovered: ${recovered}`)
    if (importantKept < 20) log(`(b) SILENT LOSS: public:important lost ${20 - importantKept} of 20 messages of its history to other channels' names`)
    return { mb, silentLoss: queueLostSilently || importantKept < 20 }
  })
}

// ------------------------------------------------------------------ (c)
async function retentionFlood(): Promise<number> {
  return withServer('retention-flood', async (child, port) => {
    const base = await mem(child)
    log(`(c) baseline ${describe(base)}`)
    const CONNS = 10 // the hub's maxConnectionsPerUser
    const TOTAL = 3100
    const CHANNELS = 31
    const RATE = TOTAL / CONNS / 5 // 62 per second per connection: 3,100 in ~5 s, under the 100/s limit
    const data = 'x'.repeat(127_000)
    const peers = await Promise.all(Array.from({ length: CONNS }, () => peer(port, 'tok-flood')))
    const outcomes = new Map<string, number>()
    let firstError: Record<string, unknown> | undefined
    for (const p of peers) p.onFrame = (f) => {
      if (f.type === 'published' || f.type === 'error') {
        if (f.type === 'error') firstError ??= f
        const k = f.type === 'error' ? `error ${String(f.code)}` : 'published'
        outcomes.set(k, (outcomes.get(k) ?? 0) + 1)
      }
    }
    const t0 = Date.now()
    let next = 0
    await Promise.all(
      peers.map(async (p) => {
        for (let i = 0; next < TOTAL && !p.closed; i++) {
          const n = next++
          p.send(JSON.stringify({ type: 'message', id: n, channel: `public:flood-${n % CHANNELS}`, event: 'flood', data }))
          const ahead = (i + 1) / RATE - (Date.now() - t0) / 1000
          if (ahead > 0) await sleep(ahead * 1000)
        }
        await p.settle(20_000)
      }),
    )
    log(`(c) ${TOTAL} × 127 KB in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${JSON.stringify(Object.fromEntries(outcomes))}${firstError ? `; first error ${JSON.stringify(firstError)}` : ''}`)
    const after = await mem(child)
    const mb = growth(after, base)
    log(`(c) after the flood: ${describe(after)}: +${mb.toFixed(1)} MB`)
    for (const p of peers) p.close()
    return mb
  })
}

async function main(): Promise<number> {
  const only = flags.only
  const a = only === undefined || only === 'a' ? await historyAmplification() : -1
  const b = only === undefined || only === 'b' ? await nameChurn() : { mb: -1, silentLoss: false }
  const c = only === undefined || only === 'c' ? await retentionFlood() : -1
  console.log(`memory: history-amplification-mb=${a.toFixed(1)} name-churn-mb=${b.mb.toFixed(1)} retention-flood-mb=${c.toFixed(1)} silent-loss=${b.silentLoss ? 1 : 0}`)
  return a > LIMIT_MB || b.mb > LIMIT_MB || c > LIMIT_MB || b.silentLoss ? 1 : 0
}

main().then(
  (code) => {
    process.exitCode = code
    setTimeout(() => process.exit(code), 200)
  },
  (err: unknown) => {
    console.error(err)
    killAllChildren()
    process.exit(2)
  },
)
