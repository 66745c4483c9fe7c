/**
 * `pnpm check:fuzz`: a real server (scripts/attack/server.ts: createRealtime on node:http,
 * loopback, default limits) in a child process, attacked from this one:
 *
 * - WebSocket: mutated frames of every client frame type over several real `ws` connections
 *   (authenticated and anonymous), one at a time or many in one TCP write, plus hand-made frames
 *   that break RFC 6455 (lying lengths, reserved bits, unmasked, bad opcodes) on raw sockets;
 * - HTTP: mutated requests to SSE, long-poll and the admin API (scripts/attack/http-fuzz.ts);
 * - meanwhile a canary subscriber on an at-least-once channel the server publishes on every 10 ms,
 *   and a health ping (IPC and HTTP) every second.
 *
 * Counted: `crashes` (the child exited, or missed two health pings in a row), `unanswered`
 * (id-carrying frames and HTTP requests with no answer: a frame with that id, an HTTP status, or a
 * close with a documented code), `canary-lost` (canary offsets that never arrived) and the child's
 * RSS growth after GC. Last stdout line:
 *   fuzz: frames=<n> requests=<m> crashes=<c> unanswered=<u> canary-lost=<l> rss-growth-mb=<x>
 * Exit 1 when crashes, unanswered or canary-lost is not 0, or RSS grew by more than 100 MB.
 *
 * Flags: --frames N (100,000) --requests M (10,000) --seed S --ci (20,000 frames, 3,000 requests).
 * Per-IP limits: the server's `edge` allows 5,000 open and 1,000,000 new connections per minute
 * from one address (every attack comes from 127.0.0.1).
 */
import { writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Child, killAllChildren } from '../bench/lib/ipc.js'
import { Canary } from './attack/canary.js'
import { httpMutant, openSessions } from './attack/http-fuzz.js'
import { chance, int, type Mutant, mutant, pick, rngFor } from './attack/mutate.js'
import { httpRequest, rawHttp, rawWebSocket, wsFrame } from './attack/raw.js'
import { ADMIN_KEY } from './attack/config.js'
import { newStats, WsPeer } from './attack/ws-peer.js'

const { values: flags } = parseArgs({
  options: { frames: { type: 'string' }, requests: { type: 'string' }, seed: { type: 'string' }, ci: { type: 'boolean' }, rate: { type: 'string' } },
})
const FRAMES = Number(flags.frames ?? (flags.ci ? 20_000 : 100_000))
const REQUESTS = Number(flags.requests ?? (flags.ci ? 3_000 : 10_000))
const SEED = Number(flags.seed ?? 20_260_101)
/** Frames per second per fuzzing connection: above the hub's 100/s, so the rate limit is attacked too. */
const RATE = Number(flags.rate ?? 150)
const PREFIX = '/realtime'
const ANSWER_TIMEOUT_MS = 5000
const HTTP_CONCURRENCY = 16
/** Fuzzing connections: per user at most 3 (the hub allows 10), the rest anonymous. */
const PEER_TOKENS = ['tok-alice', 'tok-alice', 'tok-alice', 'tok-bob', 'tok-bob', 'tok-bob', 'tok-carol', 'tok-carol', 'tok-carol', 'tok-dave', '', '', '', '', '', '', '', '', '', ''] as const
/** Share of the frames sent on raw sockets, breaking the WebSocket framing itself. */
const RAW_SHARE = 0.01
const MB = 1024 * 1024

const log = (msg: string) => console.error(`[fuzz] ${msg}`)
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** The last inputs sent, to name the culprit when the server dies. */
const recent: Array<{ transport: string; kind: string; at: number; data: Buffer }> = []
function remember(transport: string, kind: string, data: Buffer): void {
  recent.push({ transport, kind, at: Date.now(), data: data.length > 1 << 20 ? data.subarray(0, 1 << 20) : data })
  if (recent.length > 200) recent.shift()
}

async function main(): Promise<number> {
  log(`seed ${SEED}: ${FRAMES} frames, ${REQUESTS} requests, ${PEER_TOKENS.length} connections at ${RATE}/s`)
  const { child, ready } = await Child.start('fuzz-server', new URL('./attack/server.ts', import.meta.url), { nodeArgs: ['--conditions=source', '--expose-gc'] })
  const port = ready.port as number
  const wsUrl = (token: string) => `ws://127.0.0.1:${port}${PREFIX}${token ? `?token=${token}` : ''}`

  let crashes = 0
  let crashNote = ''
  let stop = false // stop attacking
  let crashed = false // the child died or stalled
  let finished = false // the check is over: the child is being stopped
  void child.exit.then((code) => {
    if (finished) return
    crashes++
    crashNote = `server exited with code ${code}`
    stop = crashed = true
  })

  // Health: IPC and an HTTP request (426 on the prefix) every second; two misses in a row = stalled.
  let missed = 0
  const health = setInterval(() => {
    if (crashed || finished) return
    void Promise.all([
      child.request('health', {}, 4000).then(() => true, () => false),
      rawHttp(port, httpRequest('GET', PREFIX, {}), { timeoutMs: 4000 }).then((a) => a.status === 426),
    ]).then(([ipc, http]) => {
      if (ipc && http) missed = 0
      else if (++missed >= 2 && !crashed && !finished) {
        crashes++
        crashNote = `server stopped answering its health ping (ipc ${ipc}, http ${http})`
        stop = crashed = true
      }
    })
  }, 1000)

  const canary = new Canary(wsUrl('tok-canary'), 'canary:main')
  await canary.start()
  const base = await child.request<{ rss: number }>('mem')
  log(`baseline RSS ${(base.rss / MB).toFixed(1)} MB`)
  await child.request('canary-start', { channel: 'canary:main', intervalMs: 10 })
  log('canary started')
  const started = Date.now()
  // A bound on the whole attack, whatever happens: twice the paced time, plus a minute.
  const budgetMs = (FRAMES / (PEER_TOKENS.length * RATE)) * 2000 + 60_000
  const deadline = setTimeout(() => {
    log(`the attack took over ${(budgetMs / 1000).toFixed(0)} s: stopped`)
    stop = true
  }, budgetMs)

  const r = rngFor(SEED)
  const stats = newStats()
  let framesSent = 0
  let rawFrames = 0
  let rawUnanswered = 0
  let nextId = 1

  // ------------------------------------------------------------------ WebSocket frames
  const peers: WsPeer[] = []
  async function openPeer(token: string): Promise<WsPeer> {
    for (let attempt = 1; ; attempt++) {
      const peer = new WsPeer(wsUrl(token), stats)
      if (await peer.connected) return peer
      if (attempt % 20 === 0) log(`connection ${token || 'anonymous'}: ${attempt} failed attempts`)
      // 4008 (too many connections for the user, e.g. after `auth` frames moved others to it): go anonymous.
      token = ''
      if (stop) return peer
      await sleep(50)
    }
  }
  const perPeer = Math.ceil((FRAMES * (1 - RAW_SHARE)) / PEER_TOKENS.length)
  const rawQuota = FRAMES - perPeer * PEER_TOKENS.length
  async function runPeer(index: number, token: string): Promise<void> {
    const pr = rngFor(SEED * 31 + index)
    let peer = await openPeer(token)
    peers[index] = peer
    let sent = 0
    const t0 = Date.now()
    while (sent < perPeer && !stop) {
      if (peer.closed) {
        peer = await openPeer(token)
        peers[index] = peer
        continue
      }
      if (chance(pr, 0.02)) {
        // Many frames in one TCP write.
        const batch: Mutant[] = Array.from({ length: Math.min(perPeer - sent, int(pr, 20, 200)) }, () => mutant(pr, nextId++))
        for (const m of batch) remember(`ws#${index} batch`, m.kind, m.data)
        const n = peer.sendBatch(batch)
        sent += n
        if (n === 0) await sleep(10)
      } else {
        const m = mutant(pr, chance(pr, 0.5) ? nextId++ : `s${nextId++}`)
        remember(`ws#${index}${m.binary ? ' binary' : ' text'}`, m.kind, m.data)
        if (peer.send(m.data, m.binary)) sent++
        // Not open (closing): let the close arrive rather than spin.
        else await sleep(10)
      }
      // Pace to RATE per second (the backlog is caught up, so the rate holds on average).
      const ahead = sent / RATE - (Date.now() - t0) / 1000
      if (ahead > 0) await sleep(ahead * 1000)
      // The socket's own write buffer bounds what is in flight.
      while (peer.ws.bufferedAmount > 4 * MB && !peer.closed && !stop) await sleep(10)
    }
    framesSent += sent
    await peer.settle(ANSWER_TIMEOUT_MS)
  }

  // Raw sockets: frames that break RFC 6455. Each must end with the server closing the socket.
  async function runRaw(): Promise<void> {
    const rr = rngFor(SEED * 7 + 1)
    const kinds = ['huge-declared-length', 'reserved-bits', 'unmasked', 'bad-opcode', 'long-control', 'fragmented-control', 'orphan-continuation'] as const
    for (let i = 0; i < rawQuota && !stop; i++) {
      const kind = pick(rr, kinds)
      const payload = Buffer.from(JSON.stringify({ type: 'ping', id: i }))
      const frame =
        kind === 'huge-declared-length' ? wsFrame(payload, { declaredLength: pick(rr, [2 ** 31, 2 ** 53 - 1, 2 ** 62, 600_000]) })
        : kind === 'reserved-bits' ? wsFrame(payload, { rsv: int(rr, 1, 7) })
        : kind === 'unmasked' ? wsFrame(payload, { unmasked: true })
        : kind === 'bad-opcode' ? wsFrame(payload, { opcode: pick(rr, [3, 4, 5, 6, 7, 0xb, 0xc, 0xf]) })
        : kind === 'long-control' ? wsFrame(Buffer.alloc(200, 1), { opcode: 0x9 })
        : kind === 'fragmented-control' ? wsFrame(Buffer.alloc(4), { opcode: 0x9, fin: false })
        : wsFrame(payload, { opcode: 0x0 })
      remember('raw-ws', kind, frame)
      rawFrames++
      try {
        const { socket } = await rawWebSocket(port, `${PREFIX}?token=tok-dave`)
        const closed = new Promise<boolean>((resolve) => {
          const t = setTimeout(() => resolve(false), ANSWER_TIMEOUT_MS)
          socket.on('close', () => {
            clearTimeout(t)
            resolve(true)
          })
          socket.on('error', () => {})
          socket.resume()
        })
        socket.write(frame)
        if (!(await closed)) {
          rawUnanswered++
          log(`raw frame '${kind}' left the socket open for ${ANSWER_TIMEOUT_MS} ms`)
        }
        socket.destroy()
      } catch (err) {
        // The handshake failed: refused with a status is an answer; no answer at all is not.
        if (String(err).includes('timed out')) rawUnanswered++
      }
      await sleep(5)
    }
  }

  // ------------------------------------------------------------------ HTTP
  const pool = await openSessions(port, PREFIX, 'tok-erin', 2)
  log(`${pool.sessions.length} HTTP sessions open`)
  let requestsSent = 0
  let httpUnanswered = 0
  const statuses = new Map<string, number>()
  const unansweredKinds = new Map<string, number>()
  async function runHttp(worker: number): Promise<void> {
    const hr = rngFor(SEED * 13 + worker)
    const quota = Math.floor(REQUESTS / HTTP_CONCURRENCY) + (worker < REQUESTS % HTTP_CONCURRENCY ? 1 : 0)
    const spread = (FRAMES / (PEER_TOKENS.length * RATE)) * 1000 * 0.9
    const t0 = Date.now()
    for (let i = 0; i < quota && !stop; i++) {
      const m = httpMutant(hr, port, PREFIX, ADMIN_KEY, pool.sessions)
      remember(`http#${worker}`, m.kind, m.request)
      requestsSent++
      const a = await rawHttp(port, m.request, { halfClose: m.halfClose, timeoutMs: ANSWER_TIMEOUT_MS })
      const ok = a.status !== undefined || (m.expect === 'status-or-close' && a.closedByServer)
      if (!ok) {
        httpUnanswered++
        unansweredKinds.set(m.kind, (unansweredKinds.get(m.kind) ?? 0) + 1)
        if (unansweredKinds.get(m.kind) === 1) log(`no answer to ${m.kind}: ${m.request.subarray(0, 300).toString('latin1').replace(/\r\n/g, ' | ')}`)
      } else {
        const key = `${m.kind.split('/')[0]} ${a.status ?? 'closed'}`
        statuses.set(key, (statuses.get(key) ?? 0) + 1)
      }
      // Spread the requests over the time the frames take.
      const ahead = ((i + 1) / quota) * spread - (Date.now() - t0)
      if (ahead > 0) await sleep(ahead)
    }
  }

  const progress = setInterval(() => {
    const pending = peers.reduce((a, p) => a + (p?.pending ?? 0), 0)
    log(`${((Date.now() - started) / 1000).toFixed(0)} s: frames ${stats.sent + rawFrames}, requests ${requestsSent}, answered ${stats.answered}/${stats.owed} (pending ${pending}), canary ${canary.received.size}`)
  }, 5000)

  await Promise.all([...PEER_TOKENS.map((t, i) => runPeer(i, t)), runRaw(), ...Array.from({ length: HTTP_CONCURRENCY }, (_, w) => runHttp(w))])
  clearInterval(progress)
  clearTimeout(deadline)

  // Frames still owed after the settle: unanswered.
  const wsUnanswered = peers.reduce((a, p) => a + (p?.pending ?? 0), 0) + stats.lostInClose
  for (const p of peers) p?.close()
  for (const s of pool.sockets) s.destroy()

  let canaryLost = 0
  let rssGrowthMb = 0
  if (!crashed) {
    const c = await child.request<{ published: number; failed: number; top: number }>('canary-stop')
    // At-least-once: give redelivery a chance (ack timeout 5 s) before counting.
    const until = Date.now() + 12_000
    while (canary.lost(c.top) > 0 && Date.now() < until && !crashed) await sleep(100)
    canaryLost = canary.lost(c.top)
    log(`canary: published ${c.published} (failed ${c.failed}), top offset ${c.top}, received ${canary.received.size}, lost ${canaryLost}, reconnects ${canary.disconnects}`)
    canary.stop()
    await sleep(1000)
  }
  if (!crashed) {
    const m = await child.request<{ rss: number; heapUsed: number; connections: number }>('mem')
    rssGrowthMb = (m.rss - base.rss) / MB
    log(`RSS ${(m.rss / MB).toFixed(1)} MB after GC (heap ${(m.heapUsed / MB).toFixed(1)} MB, ${m.connections} connections still open)`)
    const metrics = await child.request('metrics')
    log(`server: ${JSON.stringify(metrics)}`)
  }
  clearInterval(health)
  finished = stop = true

  const closes = [...stats.closes].map(([c, n]) => `${c}×${n}`).join(' ')
  log(`ws: ${stats.sent} frames, ${stats.owed} owed an answer, ${stats.answered} answered, ${stats.settledByClose} settled by a documented close, ${wsUnanswered} unanswered; closes ${closes || 'none'}`)
  if (stats.badCloses.size > 0) log(`undocumented close codes: ${[...stats.badCloses].map(([c, n]) => `${c}×${n}`).join(' ')}`)
  log(`raw ws: ${rawFrames} frames, ${rawUnanswered} left open`)
  log(`http: ${requestsSent} requests, ${httpUnanswered} unanswered ${JSON.stringify(Object.fromEntries(unansweredKinds))}`)
  log(`http answers: ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`)
  if (crashes > 0) {
    const file = join(tmpdir(), `tidings-fuzz-crash-${SEED}-${Date.now()}.json`)
    writeFileSync(file, JSON.stringify(recent.map((x) => ({ ...x, data: x.data.toString('base64') }))))
    log(`CRASH: ${crashNote}. The last inputs (newest last; all 200 in ${file}, data base64):`)
    for (const x of recent.slice(-15)) log(`  ${x.transport} ${x.kind} (${x.data.length} B): ${x.data.subarray(0, 200).toString('latin1').replace(/[\r\n]/g, ' ')}`)
  }
  await child.stop()
  const unanswered = wsUnanswered + rawUnanswered + httpUnanswered
  const frames = stats.sent + rawFrames
  console.log(`fuzz: frames=${frames} requests=${requestsSent} crashes=${crashes} unanswered=${unanswered} canary-lost=${canaryLost} rss-growth-mb=${rssGrowthMb.toFixed(1)}`)
  return crashes > 0 || unanswered > 0 || canaryLost > 0 || rssGrowthMb > 100 ? 1 : 0
}

main().then(
  (code) => {
    process.exitCode = code
    // Sockets of the attack may still be open: end now.
    setTimeout(() => process.exit(code), 200)
  },
  (err: unknown) => {
    console.error(err)
    killAllChildren()
    process.exit(2)
  },
)
