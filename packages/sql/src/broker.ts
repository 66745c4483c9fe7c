import { createHash, randomUUID } from 'node:crypto'
import { type Broker, ClusterArrivals } from '@tidings/core'
import pg from 'pg'
import { clusterTables, clusterTablesOnce } from './migrations/0002_cluster.js'
import { schemaContext } from './names.js'
import { type Envelope, type FenceEnvelope, NOTIFY_PAYLOAD_LIMIT, type OutboxEnvelope, checkChannelPrefix, notifyChannel, parseEnvelope } from './notify.js'

/**
 * The broker on PostgreSQL LISTEN/NOTIFY, for a cluster that has PostgreSQL and nothing else.
 *
 * Topics, each a NOTIFY channel named `<channelPrefix>_<hash of the topic>` (see notify.ts):
 * - `ch:<channel>`: the dispatches to one hub channel; a node LISTENs to it while it has local
 *   subscribers for the channel, so a node receives only the channels it has interest in;
 * - `all`: every other dispatch (to users, connections, everyone) and every request;
 * - `node:<nodeId>`: replies addressed to that node.
 *
 * Each node holds one dedicated connection for LISTEN (a `pg.Client`, reconnected with backoff
 * when it drops); publishes and outbox reads go through a pool. A message whose envelope is
 * larger than `inlineLimit` bytes is written to the outbox table in the same statement as its
 * NOTIFY, which then carries only the row's id.
 */
export interface PostgresBrokerOptions {
  /** Where the database is: the broker makes its own pool (ended by `close()`) and its LISTEN connection. */
  readonly connectionString?: string | undefined
  /** The app's pool, for publishes and outbox reads (never ended by the broker). The LISTEN connection uses its settings. */
  readonly pool?: pg.Pool | undefined
  /** Settings of the LISTEN connection. Default: those of `connectionString`, else of `pool`. */
  readonly listen?: pg.ClientConfig | undefined
  /** First part of every NOTIFY channel: `[a-z][a-z0-9_]{0,19}`. Default `'tidings'`. Brokers share messages only with the same prefix. */
  readonly channelPrefix?: string | undefined
  /**
   * Hash hub channels into this many NOTIFY channels (`0`: one NOTIFY channel per hub channel,
   * the default). A node then LISTENs to at most this many channel topics however many channels
   * it has subscribers for, and drops on arrival the dispatches of channels it does not want:
   * fewer LISTENs (PostgreSQL 15–17 check each notification against a backend's channels one by one)
   * for more traffic per node. Every node of a cluster must use the same value.
   */
  readonly channelBuckets?: number | undefined
  /**
   * Largest envelope (bytes of UTF-8 JSON) sent inline in the NOTIFY payload; larger ones go
   * through the outbox. At most 7,999 (NOTIFY's limit is 8,000). Default 7,000.
   */
  readonly inlineLimit?: number | undefined
  /** How long outbox rows are kept (ms): a node that reads a reference later than this finds nothing and reports it. Default 60,000. */
  readonly outboxTtlMs?: number | undefined
  /** PostgreSQL schema of the outbox table. Default: the connection's search path. */
  readonly schema?: string | undefined
  /** Prefix of the outbox table's name (`<prefix>broker_outbox`). Default `tidings_`, as the package's migrations. */
  readonly tablePrefix?: string | undefined
  /** Create the outbox table on start when it is missing (idempotent). Default true; false when the app runs the package's migrations. */
  readonly createTables?: boolean | undefined
  /** Check the frame of each dispatch against the protocol's schema on arrival. Default true. */
  readonly validateFrames?: boolean | undefined
  /**
   * How often (ms) the LISTEN connection is asked a `SELECT 1`: one that has not answered by the
   * next probe is taken as wedged and replaced. 0 turns probes off. Default 5,000.
   */
  readonly probeIntervalMs?: number | undefined
  /** Delays between reconnection attempts of the LISTEN connection: doubling from `minMs` up to `maxMs` (ms). Default 100 and 5,000. */
  readonly reconnect?: { readonly minMs?: number | undefined; readonly maxMs?: number | undefined } | undefined
  /**
   * A publish answers once its NOTIFY committed and the node's own LISTEN connection received
   * the fence sent in the same statement (so the other nodes' connections have been signalled
   * too), or after this many ms (ms; also at once while the LISTEN connection is down). Default 1,000.
   */
  readonly fenceTimeoutMs?: number | undefined
  /** Messages per publishing statement at most (publishes made while one is in flight go together). Default 500. */
  readonly maxBatch?: number | undefined
  /** Where the broker reports failures outside the hub's calls (besides the hub's own `error` hook). Default: `console.warn` when there is no hub hook. */
  readonly onError?: ((err: Error) => void) | undefined
  /** The time source of `health().since` (ms). Default `Date.now`. */
  readonly now?: (() => number) | undefined
}

export interface PostgresBrokerHealth {
  /** `up`: started, the LISTEN connection open and every channel listened to. */
  readonly state: 'up' | 'down'
  readonly since: number
  readonly reason?: string | undefined
}

export interface PostgresBrokerStats {
  /** Messages PostgreSQL accepted from this node (inline and through the outbox). */
  readonly published: number
  /** Of those, written to the outbox. */
  readonly outboxWrites: number
  /** Notifications that arrived on the LISTEN connection. */
  readonly received: number
  /** Messages handed to the hub. */
  readonly delivered: number
  /** Outbox rows read. */
  readonly outboxReads: number
  /** Outbox references whose row was gone (read after the TTL) or could not be read: lost, each reported. */
  readonly outboxMisses: number
  /** Dropped because malformed or on the wrong channel (each reported). */
  readonly malformed: number
  /** This node's own, a reply to another node, or a channel no longer wanted (dropped, as they should be). */
  readonly ignored: number
  /** Times the LISTEN connection was opened again after a loss. */
  readonly reconnects: number
  /** Publishes rejected (PostgreSQL unreachable or refusing). */
  readonly rejected: number
}

export interface PostgresBroker extends Broker {
  health(): PostgresBrokerHealth
  stats(): PostgresBrokerStats
}

export class PostgresBrokerError extends Error {
  override readonly name = 'PostgresBrokerError'
  constructor(
    message: string,
    /** `unavailable`, `malformed`, `misrouted`, `listener`, `listen`, `outbox`, `probe`, `deliver`. */
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

const asError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)))
const LISTEN_CHUNK = 200
const MAX_BATCH_BYTES = 4 * 1024 * 1024

interface Pending {
  readonly topic: string
  readonly inline: string | undefined
  readonly outbox: { readonly id: string; readonly payload: string; readonly ref: string } | undefined
  readonly bytes: number
  readonly resolve: () => void
  readonly reject: (err: Error) => void
}

interface Arrival {
  readonly channel: string
  readonly envelope: Envelope | undefined
  /** The message, once known (inline, or read from the outbox). */
  message?: unknown
}

export function createPostgresBroker(options: PostgresBrokerOptions): PostgresBroker {
  if (!options.pool && !options.connectionString) throw new TypeError('createPostgresBroker needs a pool or a connectionString')
  const prefix = checkChannelPrefix(options.channelPrefix ?? 'tidings')
  const inlineLimit = options.inlineLimit ?? 7_000
  if (!Number.isInteger(inlineLimit) || inlineLimit < 64 || inlineLimit >= NOTIFY_PAYLOAD_LIMIT) throw new RangeError(`inlineLimit must be an integer in [64, ${NOTIFY_PAYLOAD_LIMIT - 1}]`)
  const ttlMs = options.outboxTtlMs ?? 60_000
  const tableOptions = { schema: options.schema, prefix: options.tablePrefix }
  const OUTBOX = clusterTables(schemaContext(tableOptions)).outbox
  const probeEvery = options.probeIntervalMs ?? 5_000
  const minDelay = options.reconnect?.minMs ?? 100
  const maxDelay = options.reconnect?.maxMs ?? 5_000
  const maxBatch = options.maxBatch ?? 500
  const buckets = options.channelBuckets ?? 0
  if (!Number.isInteger(buckets) || buckets < 0 || buckets > 65_536) throw new RangeError('channelBuckets must be an integer in [0, 65536]')
  const fenceTimeoutMs = options.fenceTimeoutMs ?? 1_000
  const now = options.now ?? Date.now
  const ownPool = !options.pool
  const pool = options.pool ?? new pg.Pool({ connectionString: options.connectionString, max: 4 })
  // An idle client of our own pool losing its server must not crash the process (pg emits 'error' on the pool).
  if (ownPool) pool.on('error', () => undefined)
  const listenConfig: pg.ClientConfig = options.listen ?? (options.connectionString ? { connectionString: options.connectionString } : { ...(pool as unknown as { options: pg.ClientConfig }).options })

  const allTopic = 'all'
  const nodeTopic = (id: string) => `node:${id}`
  const channelTopic = (channel: string) => (buckets > 0 ? `chb:${createHash('sha256').update(channel).digest().readUInt32BE(0) % buckets}` : `ch:${channel}`)
  /** The node, the hub channels it wants (kept across reconnects), arrivals handed to the hub, reports. */
  const arrivals = new ClusterArrivals({
    topics: { all: allTopic, node: nodeTopic, channel: channelTopic },
    validateFrames: options.validateFrames ?? true,
    error: (message, reason, cause) => new PostgresBrokerError(message, reason, cause === undefined ? undefined : { cause }),
    onError: options.onError,
    label: '[tidings/sql broker]',
  })
  const { channels } = arrivals
  const report = (err: Error) => arrivals.report(err)
  const idents = new Map<string, string>()
  const identOf = (topic: string): string => {
    let id = idents.get(topic)
    if (id === undefined) {
      id = notifyChannel(prefix, topic)
      if (idents.size > 10_000) idents.clear()
      idents.set(topic, id)
    }
    return id
  }
  const listenSql = (topic: string) => `LISTEN ${pg.escapeIdentifier(identOf(topic))}`
  const unlistenSql = (topic: string) => `UNLISTEN ${pg.escapeIdentifier(identOf(topic))}`

  let nodeId: string | undefined
  let started = false
  let closed = false
  /** How many wanted channels each channel topic carries (one each, unless channels share buckets). */
  const topicUse = new Map<string, number>()
  /** The last LISTEN/UNLISTEN of a topic still in flight (a second subscribe answers when the first took effect). */
  const inFlight = new Map<string, Promise<void>>()
  const track = (topic: string, p: Promise<void>): Promise<void> => {
    const tracked = p.finally(() => {
      if (inFlight.get(topic) === tracked) inFlight.delete(topic)
    })
    inFlight.set(topic, tracked)
    return tracked
  }

  let listener: pg.Client | undefined
  /** Queries on the LISTEN connection run one after the other, in call order (pg deprecates overlapping queries on a client). */
  let chain: Promise<unknown> = Promise.resolve()
  const onListener = (client: pg.Client, text: string): Promise<unknown> => {
    const run = chain.then(
      () => client.query(text),
      () => client.query(text),
    )
    chain = run.catch(() => undefined)
    return run
  }
  /** Every wanted topic is listened to on `listener`. */
  let listening = false
  let connecting = false
  let everListened = false
  let attempts = 0
  let reconnectTimer: ReturnType<typeof setTimeout> | undefined
  let lossReported = false
  let probeTimer: ReturnType<typeof setInterval> | undefined
  let probePending = false
  let cleanupTimer: ReturnType<typeof setInterval> | undefined
  let seq = 0

  const stats = { published: 0, outboxWrites: 0, received: 0, outboxReads: 0, outboxMisses: 0, reconnects: 0, rejected: 0 }
  let health: PostgresBrokerHealth = { state: 'down', since: now(), reason: 'not started' }
  let lastProblem: string | undefined
  const downReason = (): string | undefined => {
    if (closed) return 'closed'
    if (!started) return 'not started'
    if (!listener) return lastProblem ? `LISTEN connection lost: ${lastProblem}` : 'LISTEN connection not open'
    if (!listening) return 'listening'
    return undefined
  }
  const refresh = () => {
    const reason = downReason()
    const state = reason === undefined ? 'up' : 'down'
    if (state !== health.state) health = { state, since: now(), reason }
    else if (reason !== health.reason) health = { ...health, reason }
  }

  // ------------------------------------------------------------------ tables

  const ensureTables = clusterTablesOnce(pool, { ...tableOptions, createTables: options.createTables })

  // ------------------------------------------------------------------ the LISTEN connection

  const wantedTopics = (): string[] => [allTopic, nodeTopic(nodeId!), ...topicUse.keys()]

  const lost = (client: pg.Client, err: Error | undefined) => {
    if (client !== listener) return
    listener = undefined
    listening = false
    probePending = false
    lastProblem = err?.message ?? 'connection ended'
    client.removeAllListeners('notification')
    client.on('error', () => undefined)
    client.end().catch(() => undefined)
    if (closed) return
    if (!lossReported) {
      lossReported = true
      report(new PostgresBrokerError(`LISTEN connection: ${lastProblem} (reported once until it is back; reconnecting)`, 'listener', { cause: err }))
    }
    refresh()
    scheduleReconnect()
  }

  const scheduleReconnect = () => {
    if (closed || reconnectTimer !== undefined || connecting) return
    const base = Math.min(maxDelay, minDelay * 2 ** Math.min(attempts, 16))
    attempts++
    reconnectTimer = setTimeout(
      () => {
        reconnectTimer = undefined
        void connect()
      },
      Math.round(base * (0.75 + Math.random() * 0.5)),
    )
    reconnectTimer.unref?.()
  }

  const connect = async (): Promise<void> => {
    if (closed || connecting || listener) return
    connecting = true
    const client = new pg.Client({ keepAlive: true, ...listenConfig, application_name: `tidings-broker:${nodeId}`.slice(0, 63) })
    client.on('error', (err) => lost(client, err))
    client.on('end', () => lost(client, undefined))
    client.on('notification', (n) => arrived(n.channel, n.payload ?? ''))
    try {
      await client.connect()
      if (closed) {
        await client.end().catch(() => undefined)
        return
      }
      listener = client
      chain = Promise.resolve()
      refresh()
      const topics = wantedTopics()
      for (let i = 0; i < topics.length; i += LISTEN_CHUNK) {
        await onListener(client, topics.slice(i, i + LISTEN_CHUNK).map(listenSql).join('; '))
      }
      if (client !== listener || closed) return
      listening = true
      attempts = 0
      lossReported = false
      lastProblem = undefined
      refresh()
      if (everListened) {
        stats.reconnects++
        // Messages published while the connection was gone are lost: the hub looks for gaps.
        arrivals.resumed()
      }
      everListened = true
    } catch (err) {
      if (closed) return
      if (client === listener) {
        lost(client, asError(err))
        return
      }
      client.end().catch(() => undefined)
      lastProblem = asError(err).message
      if (!lossReported) {
        lossReported = true
        report(new PostgresBrokerError(`LISTEN connection: ${lastProblem} (reported once until it is back; reconnecting)`, 'listener', { cause: err }))
      }
      refresh()
    } finally {
      connecting = false
      if (!closed && !listener) scheduleReconnect()
    }
  }

  const probe = () => {
    const client = listener
    if (closed || !client || !listening) return
    if (probePending) {
      report(new PostgresBrokerError(`the LISTEN connection did not answer within ${probeEvery} ms: replacing it`, 'probe'))
      lost(client, new Error('probe unanswered'))
      return
    }
    probePending = true
    onListener(client, 'SELECT 1').then(
      () => {
        if (client === listener) probePending = false
      },
      (err: unknown) => lost(client, asError(err)),
    )
  }

  // ------------------------------------------------------------------ arrivals

  const inbox: Arrival[] = []
  let draining = false

  const arrived = (channel: string, payload: string) => {
    if (closed || !arrivals.delivering) return
    stats.received++
    const parsed = parseEnvelope(payload)
    if (!parsed.ok) return arrivals.malformed(`notification on ${channel}: ${parsed.reason}`)
    const e = parsed.envelope
    if ('f' in e) {
      if (nodeId !== undefined && e.t === nodeTopic(nodeId) && identOf(e.t) === channel) fenceSeen(e)
      return
    }
    if (identOf(e.t) !== channel) {
      arrivals.counts.malformed++
      report(new PostgresBrokerError(`dropped a message for ${e.t} that arrived on ${channel}`, 'misrouted'))
      return
    }
    if ('m' in e) inbox.push({ channel, envelope: e, message: e.m })
    else if (e.o === nodeId) arrivals.ignore()
    else inbox.push({ channel, envelope: e })
    if (!draining) void drain()
  }

  /** Hand arrivals to the hub in arrival order; outbox references are read first (all waiting ones in one query). */
  const drain = async () => {
    draining = true
    try {
      while (inbox.length > 0 && !closed) {
        // The references waiting now (more may arrive while they are read: the next round reads those).
        const waiting = inbox.filter((a) => a.message === undefined)
        if (waiting.length > 0) {
          const refs = waiting.map((a) => (a.envelope as OutboxEnvelope).x)
          let rows: Map<string, string> | undefined
          try {
            const r = await pool.query<{ id: string; payload: string }>(`SELECT id, payload FROM ${OUTBOX} WHERE id = ANY($1::text[])`, [refs])
            rows = new Map(r.rows.map((row) => [row.id, row.payload]))
          } catch (err) {
            report(new PostgresBrokerError(`reading ${refs.length} message(s) from the outbox failed: ${asError(err).message}`, 'outbox', { cause: err }))
          }
          let missing = 0
          for (const a of waiting) {
            const x = (a.envelope as OutboxEnvelope).x
            const text = rows?.get(x)
            if (text === undefined) {
              missing++
              a.message = null
              continue
            }
            stats.outboxReads++
            try {
              a.message = JSON.parse(text) as unknown
            } catch {
              a.message = null
              arrivals.malformed(`outbox row ${x}`)
            }
          }
          if (missing > 0) {
            stats.outboxMisses += missing
            if (rows) report(new PostgresBrokerError(`${missing} outbox message(s) were gone when read (older than outboxTtlMs?): lost`, 'outbox'))
            // Messages are missing: let the hub compare its live channels with their streams.
            arrivals.resumed()
          }
        }
        // Hand on everything up to the first arrival still unread (it arrived during the read).
        let ready = 0
        while (ready < inbox.length && inbox[ready]!.message !== undefined) ready++
        const batch = inbox.splice(0, ready)
        for (const a of batch) {
          if (closed) return
          if (a.message !== null) arrivals.take(a.message, a.envelope!.t, a.channel)
        }
      }
    } finally {
      draining = false
    }
  }

  // ------------------------------------------------------------------ publishing

  const queue: Pending[] = []
  let sending: Promise<void> | undefined
  let fenceNo = 0
  /** Batches waiting for their fence's echo: number → answer its publishes. */
  const fences = new Map<number, () => void>()
  const fenceSeen = (e: FenceEnvelope) => {
    for (const [n, done] of fences) {
      if (n > e.f) break
      fences.delete(n)
      done()
    }
  }
  /** Resolves when the fence `n` comes back (registered before its statement is sent: the echo may beat the answer). */
  const expectFence = (n: number): Promise<void> => new Promise<void>((resolve) => fences.set(n, resolve))
  const within = (p: Promise<void>, ms: number): Promise<void> => {
    let timer: ReturnType<typeof setTimeout> | undefined
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms)
      timer.unref?.()
    })
    return Promise.race([p, late]).finally(() => clearTimeout(timer))
  }

  /** One statement per batch, one batch at a time: NOTIFYs of one publisher commit in publish order. */
  const flush = () => {
    if (sending || queue.length === 0) return
    let bytes = 0
    let n = 0
    while (n < queue.length && n < maxBatch && (n === 0 || bytes + queue[n]!.bytes <= MAX_BATCH_BYTES)) bytes += queue[n++]!.bytes
    const batch = queue.splice(0, n)
    sending = send(batch).finally(() => {
      sending = undefined
      flush()
    })
  }

  const send = async (batch: Pending[]) => {
    const chans: string[] = []
    const payloads: string[] = []
    const ids: string[] = []
    const rows: string[] = []
    for (const p of batch) {
      chans.push(identOf(p.topic))
      if (p.outbox) {
        payloads.push(p.outbox.ref)
        ids.push(p.outbox.id)
        rows.push(p.outbox.payload)
      } else payloads.push(p.inline!)
    }
    // The fence: only while this node listens (its echo is how the publishes are answered).
    const fence = nodeId !== undefined && listening && fenceTimeoutMs > 0 ? ++fenceNo : 0
    if (fence > 0) {
      const t = nodeTopic(nodeId!)
      chans.push(identOf(t))
      payloads.push(JSON.stringify({ t, s: 0, f: fence }))
    }
    const echo = fence > 0 ? expectFence(fence) : undefined
    try {
      if (ids.length > 0) {
        await ensureTables()
        await pool.query(
          `WITH o AS (INSERT INTO ${OUTBOX} (id, payload) SELECT * FROM unnest($3::text[], $4::text[]) RETURNING 1)
           SELECT (SELECT count(*) FROM o) AS written, count(pg_notify(c, p)) AS sent FROM unnest($1::text[], $2::text[]) AS t(c, p)`,
          [chans, payloads, ids, rows],
        )
        stats.outboxWrites += ids.length
      } else {
        await pool.query('SELECT count(pg_notify(c, p)) AS sent FROM unnest($1::text[], $2::text[]) AS t(c, p)', [chans, payloads])
      }
      stats.published += batch.length
      const answer = () => {
        for (const p of batch) p.resolve()
      }
      if (echo && !closed)
        void within(echo, fenceTimeoutMs).then(() => {
          fences.delete(fence)
          answer()
        })
      else answer()
    } catch (err) {
      fences.delete(fence)
      stats.rejected += batch.length
      const e = new PostgresBrokerError(`publishing ${batch.length} message(s) failed: ${asError(err).message}`, 'unavailable', { cause: err })
      for (const p of batch) p.reject(e)
    }
  }

  // ------------------------------------------------------------------ the port

  return {
    async start(id, fn, hooks) {
      if (closed || started) return
      nodeId = id
      arrivals.start(id, fn, hooks)
      started = true
      refresh()
      try {
        await ensureTables()
      } catch (err) {
        // PostgreSQL is down at start: tables are made before the first outbox write.
        report(new PostgresBrokerError(`creating the outbox table: ${asError(err).message}`, 'outbox', { cause: err }))
      }
      await connect()
      if (probeEvery > 0) {
        probeTimer = setInterval(probe, probeEvery)
        probeTimer.unref?.()
      }
      cleanupTimer = setInterval(
        () => {
          if (closed) return
          pool.query(`DELETE FROM ${OUTBOX} WHERE created_at < now() - $1::double precision * interval '1 millisecond'`, [ttlMs]).catch(() => undefined)
        },
        Math.max(1_000, Math.floor(ttlMs / 2)),
      )
      cleanupTimer.unref?.()
      refresh()
    },

    publish(message) {
      if (closed) return
      try {
        const topic = arrivals.topicOf(message)
        const s = ++seq
        const body = JSON.stringify(message)
        if (typeof body !== 'string') throw new TypeError('not a message')
        const inline = `{"t":${JSON.stringify(topic)},"s":${s},"m":${body}}`
        const size = Buffer.byteLength(inline)
        return new Promise<void>((resolve, reject) => {
          if (size <= inlineLimit) queue.push({ topic, inline, outbox: undefined, bytes: size, resolve, reject })
          else {
            const x = randomUUID()
            const ref = JSON.stringify({ t: topic, s, o: message.origin, x })
            queue.push({ topic, inline: undefined, outbox: { id: x, payload: body, ref }, bytes: size, resolve, reject })
          }
          flush()
        })
      } catch (err) {
        return Promise.reject(asError(err))
      }
    },

    subscribe(channel) {
      if (closed) return
      const topic = channelTopic(channel)
      if (channels.has(channel)) return inFlight.get(topic)
      channels.add(channel)
      const uses = (topicUse.get(topic) ?? 0) + 1
      topicUse.set(topic, uses)
      if (uses > 1) return inFlight.get(topic) // its topic is listened to already (a shared bucket)
      const client = listener
      if (!started || !client) return // listened to on the next (re)connect
      const p = onListener(client, listenSql(topic)).then(
        () => undefined,
        (err: unknown) => {
          // The connection dropped: the reconnect listens to it with everything else.
          if (closed || client !== listener) return
          channels.delete(channel)
          const left = (topicUse.get(topic) ?? 1) - 1
          if (left > 0) topicUse.set(topic, left)
          else topicUse.delete(topic)
          throw new PostgresBrokerError(`LISTEN for ${channel} failed: ${asError(err).message}`, 'listen', { cause: err })
        },
      )
      return track(topic, p)
    },

    unsubscribe(channel) {
      if (!channels.delete(channel)) return
      const topic = channelTopic(channel)
      const left = (topicUse.get(topic) ?? 1) - 1
      if (left > 0) {
        topicUse.set(topic, left) // other wanted channels share its bucket: still listened to
        return
      }
      topicUse.delete(topic)
      const client = listener
      if (closed || !started || !client) return
      // A failure leaves a LISTEN in place: its messages are dropped on arrival.
      return track(
        topic,
        onListener(client, unlistenSql(topic)).then(
          () => undefined,
          () => undefined,
        ),
      )
    },

    async close() {
      if (closed) return
      closed = true
      arrivals.stop()
      topicUse.clear()
      if (probeTimer !== undefined) clearInterval(probeTimer)
      if (cleanupTimer !== undefined) clearInterval(cleanupTimer)
      if (reconnectTimer !== undefined) clearTimeout(reconnectTimer)
      inbox.length = 0
      // Not sent yet: dropped (a closed broker delivers nothing).
      for (const p of queue.splice(0)) p.resolve()
      for (const done of [...fences.values()]) done()
      refresh()
      const client = listener
      listener = undefined
      listening = false
      if (client) {
        client.removeAllListeners('notification')
        client.on('error', () => undefined)
        await client.end().catch(() => undefined)
      }
      await sending?.catch(() => undefined)
      if (ownPool) await pool.end().catch(() => undefined)
    },

    health() {
      refresh()
      return health
    },

    stats() {
      return { ...stats, ...arrivals.counts }
    },
  }
}
