/**
 * `pnpm check:cluster`: three hub nodes as one, on one Redis, while nodes die and Redis restarts.
 *
 * A private redis-server (scripts/cluster/redis.ts) and three hub nodes in child processes
 * (scripts/cluster-node.ts: createHub on the three Redis ports, the WebSocket transport of
 * createRealtime on its own port, heartbeats every 300 ms, a silent node removed after 6 s: longer than a node takes to start again, as with the defaults (5 s, 20 s)).
 * Clients in this process (scripts/cluster/clients.ts), real `ws` connections spread over the
 * nodes: subscribers of one at-least-once channel with presence, each with a `createReceiver`
 * feeding an app-level log; publishers publishing numbered messages with idempotency keys,
 * retrying on failure; "ghost" presence members that go away with their node for good.
 * Meanwhile one node at a time (each in turn) is killed with SIGKILL and started again on its
 * port (same node id unless --fresh-ids), and Redis is killed with SIGKILL and started again.
 * Clients of a killed node reconnect to the next node and resume with `since` from their
 * receiver's position.
 *
 * Redis: by default it keeps its data across the restart (append-only file, `appendfsync always`,
 * so every acknowledged write survives the SIGKILL); `--redis-empty` runs it without persistence,
 * so it comes back empty (new epochs: what was lost must reach subscribers as `recovered: false`).
 *
 * Counted, over every (message, subscriber) pair, for the messages that got a `published` reply
 * (every subscriber is subscribed before the first publish):
 * - lost: never reached the subscriber's app, and not inside a range it was told about (a
 *   `recovered: false` / new epoch notice, or a `delivery:failed` event of a node about its
 *   connection); those told about are printed as `reported-lost`;
 * - app-duplicates: a message number handed to an app a second time (by the receiver);
 * - inversions: an offset handed to an app not above the previous one in the same epoch;
 * - unreported-gaps: offsets an app skipped with no notice covering them;
 * - zombies: after the last kill and the node TTL, presence connections listed for users
 *   beyond the connections they really have open (a ghost of a killed node still listed, or a
 *   user listed with more connections than it has).
 * Prints, last:
 *   cluster: nodes=3 messages=<m> node-kills=<k> redis-restarts=<r> lost=<l> app-duplicates=<d> inversions=<i> zombies=<z> unreported-gaps=<g>
 * and exits 1 when any of lost, app-duplicates, inversions, zombies, unreported-gaps is not 0.
 *
 * Flags: --ci (3,000 messages, 1 kill, 1 Redis restart, well under 60 s), --messages N (30,000),
 * --kills K (5), --redis-restarts R (1), --rate R (messages per second, 500), --redis-empty,
 * --fresh-ids (a restarted node takes a new node id), --subscribers S (9), --publishers P (6).
 */
import { parseArgs } from 'node:util'
import { Child, killAllChildren } from '../bench/lib/ipc.js'
import { Ghost, Publisher, Subscriber } from './cluster/clients.js'
import { freePort, redisCli, startPrivateRedis } from './cluster/redis.js'

const { values: flags } = parseArgs({
  options: {
    ci: { type: 'boolean' }, messages: { type: 'string' }, kills: { type: 'string' }, 'redis-restarts': { type: 'string' },
    rate: { type: 'string' }, 'redis-empty': { type: 'boolean' }, 'fresh-ids': { type: 'boolean' },
    subscribers: { type: 'string' }, publishers: { type: 'string' },
  },
})
const CI = flags.ci === true
const MESSAGES = Number(flags.messages ?? (CI ? 3000 : 30_000))
const KILLS = Number(flags.kills ?? (CI ? 1 : 5))
const REDIS_RESTARTS = Number(flags['redis-restarts'] ?? 1)
const RATE = Number(flags.rate ?? (CI ? 300 : 500))
const SUBSCRIBERS = Number(flags.subscribers ?? 9)
const PUBLISHERS = Number(flags.publishers ?? 6)
const GHOSTS_PER_NODE = 2
const DURABLE = flags['redis-empty'] !== true
const FRESH_IDS = flags['fresh-ids'] === true
const NODES = 3
const HEARTBEAT_MS = 300
const NODE_TTL_MS = 6000
const CHANNEL = 'cluster:main'
/** How long a node stays dead before it is started again. */
const DOWN_MS = 500

const log = (msg: string) => console.error(`[cluster ${((Date.now() - T0) / 1000).toFixed(1).padStart(5)} s] ${msg}`)
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const T0 = Date.now()

interface NodeSlot {
  index: number
  port: number
  id: string
  generation: number
  child: Child | undefined
}

async function main(): Promise<number> {
  const redis = await startPrivateRedis({ durable: DURABLE })
  log(`redis-server on ${redis.port} (${DURABLE ? 'append-only file, appendfsync always: restarts keep their data' : 'no persistence: restarts come back empty'})`)
  const slots: NodeSlot[] = []
  for (let i = 0; i < NODES; i++) slots.push({ index: i, port: await freePort(), id: `node-${i + 1}`, generation: 0, child: undefined })
  const ports = slots.map((s) => s.port)

  const subscribers: Subscriber[] = []
  const ghosts: Ghost[] = []
  const deliveryFailed: Array<{ connectionId: string; fromOffset: number; toOffset: number }> = []

  const startNode = async (slot: NodeSlot) => {
    const id = FRESH_IDS && slot.generation > 0 ? `${slot.id}.r${slot.generation}` : slot.id
    const { child } = await Child.start(id, new URL('./cluster-node.ts', import.meta.url), {
      nodeArgs: ['--conditions=source'],
      env: {
        CLUSTER_NODE_ID: id, CLUSTER_PORT: String(slot.port), CLUSTER_REDIS_PORT: String(redis.port),
        CLUSTER_HEARTBEAT_MS: String(HEARTBEAT_MS), CLUSTER_NODE_TTL_MS: String(NODE_TTL_MS),
      },
      readyTimeoutMs: 60_000,
    })
    child.proc.on('message', (m: { type?: string; kind?: string; connectionId?: string; fromOffset?: number; toOffset?: number }) => {
      if (m.type !== 'event' || m.kind !== 'delivery:failed') return
      deliveryFailed.push({ connectionId: m.connectionId!, fromOffset: m.fromOffset!, toOffset: m.toOffset! })
      const s = subscribers.find((x) => x.connectionId === m.connectionId)
      s?.deliveryFailed(m.fromOffset!, m.toOffset!)
      log(`delivery:failed on ${id}: ${JSON.stringify(m)}`)
    })
    slot.child = child
    // Ghosts on this node: presence members that will go away with it.
    for (let k = 0; k < GHOSTS_PER_NODE; k++) {
      const g = new Ghost(`ghost-${slot.index + 1}-g${slot.generation}-${k}`, ports, slot.index, CHANNEL)
      g.connect()
      ghosts.push(g)
    }
  }
  await Promise.all(slots.map(startNode))
  log(`3 nodes on ports ${ports.join(', ')}${FRESH_IDS ? ' (restarted nodes take new ids)' : ' (restarted nodes keep their ids)'}`)

  for (let i = 0; i < SUBSCRIBERS; i++) {
    const s = new Subscriber(`sub-${i}`, ports, i % NODES, CHANNEL)
    s.connect()
    subscribers.push(s)
  }
  await Promise.all(subscribers.map((s) => s.ready()))
  log(`${SUBSCRIBERS} subscribers ready`)

  const publishers: Publisher[] = []
  for (let p = 0; p < PUBLISHERS; p++) {
    const numbers: number[] = []
    for (let n = p + 1; n <= MESSAGES; n += PUBLISHERS) numbers.push(n)
    const pub = new Publisher(`pub-${p}`, ports, p % NODES, CHANNEL, numbers, 8)
    pub.connect()
    publishers.push(pub)
  }
  await sleep(300)
  for (const p of publishers) p.start(RATE / PUBLISHERS)
  log(`publishing ${MESSAGES} messages at ${RATE}/s from ${PUBLISHERS} publishers`)

  // The faults, at fractions of the publishing: kills spread over it, Redis restarts in between.
  const publishedCount = () => publishers.reduce((a, p) => a + p.published.size, 0)
  // F = kills + Redis restarts faults at 1/(F+1), 2/(F+1), ... of the messages; the Redis restarts in the middle.
  const kinds: Array<'kill' | 'redis'> = Array.from({ length: KILLS }, () => 'kill' as const)
  for (let r = 0; r < REDIS_RESTARTS; r++) kinds.splice(Math.floor(((r + 1) * (kinds.length + 1)) / (REDIS_RESTARTS + 1)), 0, 'redis')
  const faults = kinds.map((kind, i) => ({ at: (i + 1) / (kinds.length + 1), kind }))
  let kills = 0
  let redisRestarts = 0
  let lastFaultAt = Date.now()
  let victim = NODES - 1
  for (const fault of faults) {
    while (publishedCount() < fault.at * MESSAGES) await sleep(20)
    if (fault.kind === 'kill') {
      const slot = slots[victim]!
      victim = (victim + NODES - 1) % NODES
      log(`SIGKILL ${slot.child?.name} (port ${slot.port}) at ${publishedCount()} published`)
      slot.child?.kill()
      await slot.child?.exit
      await sleep(DOWN_MS)
      slot.generation++
      await startNode(slot)
      kills++
      log(`${slot.child?.name} started again`)
    } else {
      log(`SIGKILL redis-server at ${publishedCount()} published`)
      await redis.kill()
      await sleep(DOWN_MS)
      await redis.start()
      redisRestarts++
      log(`redis-server started again${DURABLE ? ' with its data' : ', empty'}`)
    }
    lastFaultAt = Date.now()
  }

  // Every publisher done (each message has its `published` reply), with a bound.
  const publishDeadline = Date.now() + 120_000 + (MESSAGES / RATE) * 2000
  while (!publishers.every((p) => p.done) && Date.now() < publishDeadline) await sleep(50)
  const published = new Map<number, number>()
  for (const p of publishers) for (const [n, o] of p.published) published.set(n, o)
  log(`${published.size}/${MESSAGES} published; retries ${publishers.reduce((a, p) => a + p.retries, 0)} (${summarize(publishers.map((p) => p.errors))}), duplicate replies ${publishers.reduce((a, p) => a + p.duplicateReplies, 0)}`)

  // Let deliveries settle: every subscriber has every message or a notice that may cover it, or 30 s without progress.
  const outstanding = () => {
    let n = 0
    for (const s of subscribers) for (const [m, o] of published) if (!s.delivered.has(m) && !s.covered(undefined, o)) n++
    return n
  }
  let last = outstanding()
  let lastChange = Date.now()
  while (last > 0 && Date.now() - lastChange < 30_000) {
    await sleep(500)
    const now = outstanding()
    if (now !== last) {
      last = now
      lastChange = Date.now()
    }
  }

  // Presence zombies: after the node TTL (and a few beats) since the last fault.
  const settle = lastFaultAt + NODE_TTL_MS + 4 * HEARTBEAT_MS + 500 - Date.now()
  if (settle > 0) await sleep(settle)
  const live = new Map<string, number>()
  for (const c of [...subscribers, ...ghosts]) if (c.open) live.set(c.userId, (live.get(c.userId) ?? 0) + 1)
  const snapshot = await slots[0]!.child!.request<{ users: Array<{ id: string; connections: number }>; count: number }>('presence', { channel: CHANNEL })
  let zombies = 0
  const zombieNotes: string[] = []
  const listed = new Set<string>()
  for (const u of snapshot.users) {
    listed.add(u.id)
    const extra = u.connections - (live.get(u.id) ?? 0)
    if (extra > 0) {
      zombies += extra
      zombieNotes.push(`${u.id} listed with ${u.connections} connection(s), has ${live.get(u.id) ?? 0}`)
    }
  }
  const missing = [...live.keys()].filter((u) => !listed.has(u))
  log(`presence: ${snapshot.count} members listed, ${live.size} users connected; ${zombies} zombie connection(s)${missing.length > 0 ? `; connected but not listed: ${missing.join(', ')}` : ''}`)
  for (const z of zombieNotes.slice(0, 10)) log(`  zombie: ${z}`)
  if (zombies > 0) {
    // Where the stale entries are: the channel's entries as Redis holds them, for the zombie users.
    const raw = (await redisCli(redis.port, '--raw', 'hgetall', `tidings:presence:{${CHANNEL}}:e`)).split('\n')
    const zombieUsers = new Set(zombieNotes.map((z) => z.split(' ')[0]))
    for (let i = 0; i + 1 < raw.length; i += 2) {
      if ([...zombieUsers].some((u) => raw[i + 1]!.includes(`"${u}"`))) log(`  entry ${raw[i]}: ${raw[i + 1]!.slice(0, 160)}`)
    }
    const open = new Set([...subscribers, ...ghosts].filter((c) => c.open).map((c) => c.connectionId))
    log(`  open connection ids: ${[...open].join(' ')}`)
  }

  // The counts.
  const witness = new Map<number, { epoch: string; offset: number }>()
  for (const s of subscribers) for (const [n, w] of s.delivered) if (!witness.has(n)) witness.set(n, w)
  let lost = 0
  let reportedLost = 0
  const lostExamples: string[] = []
  for (const s of subscribers) {
    for (const [n, replyOffset] of published) {
      if (s.delivered.has(n)) continue
      const w = witness.get(n)
      if (s.covered(w?.epoch, w?.offset ?? replyOffset)) reportedLost++
      else {
        lost++
        if (lostExamples.length < 10) lostExamples.push(`${s.userId} never got #${n} (${w ? `${w.epoch}:${w.offset}` : `reply offset ${replyOffset}, delivered to nobody`})`)
      }
    }
  }
  const sum = (f: (s: Subscriber) => number) => subscribers.reduce((a, s) => a + f(s), 0)
  const appDuplicates = sum((s) => s.duplicates)
  const inversions = sum((s) => s.inversions)
  const unreportedGaps = sum((s) => s.unreportedGaps)
  log(`subscribers: ${sum((s) => s.delivered.size)} deliveries to apps, ${sum((s) => s.reconnects)} reconnects, ${sum((s) => s.notices)} recovered:false notices, ${deliveryFailed.length} delivery:failed, ${sum((s) => s.refused)} refused (4008), ${sum((s) => s.crossEpochDuplicates)} of the duplicates across epochs, ${reportedLost} reported-lost`)
  for (const e of lostExamples) log(`  lost: ${e}`)
  for (const s of subscribers) for (const note of s.unreportedNotes.slice(0, 3)) log(`  gap: ${note}`)
  for (const slot of slots) {
    const m = await slot.child?.request('metrics', {}, 5000).catch((e: Error) => ({ error: e.message }))
    log(`${slot.child?.name}: ${JSON.stringify(m)}`)
  }

  for (const c of [...subscribers, ...publishers, ...ghosts]) c.stop()
  await Promise.all(slots.map((s) => s.child?.request('close', {}, 5000).catch(() => s.child?.kill())))
  await Promise.all(slots.map((s) => s.child?.stop(2000)))
  await redis.stop()

  console.log(`cluster: nodes=${NODES} messages=${published.size} node-kills=${kills} redis-restarts=${redisRestarts} lost=${lost} app-duplicates=${appDuplicates} inversions=${inversions} zombies=${zombies} unreported-gaps=${unreportedGaps}`)
  return lost > 0 || appDuplicates > 0 || inversions > 0 || zombies > 0 || unreportedGaps > 0 || published.size < MESSAGES ? 1 : 0
}

function summarize(maps: Array<Map<string, number>>): string {
  const total = new Map<string, number>()
  for (const m of maps) for (const [k, v] of m) total.set(k, (total.get(k) ?? 0) + v)
  return [...total].map(([k, v]) => `${k} ×${v}`).join(', ') || 'none'
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
