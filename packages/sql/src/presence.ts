import { createHash } from 'node:crypto'
import { type PresenceChange, type PresenceEntry, type PresenceStore, presenceMember, presenceMembers, presenceRemoval } from '@tidings/core'
import pg from 'pg'
import { clusterTables, clusterTablesOnce } from './migrations/0002_cluster.js'
import { schemaContext } from './names.js'

export interface PostgresPresenceStoreOptions {
  /** Where the database is: the store makes its own pool (ended by `close()`). */
  readonly connectionString?: string | undefined
  /** The app's pool (never ended by the store). */
  readonly pool?: pg.Pool | undefined
  /** PostgreSQL schema of the tables. Default: the connection's search path. */
  readonly schema?: string | undefined
  /** Prefix of the tables' names. Default `tidings_`, as the package's migrations. */
  readonly tablePrefix?: string | undefined
  /** Create the tables on first use when they are missing (idempotent). Default true; false when the app runs the package's migrations. */
  readonly createTables?: boolean | undefined
  /**
   * Called by `heartbeat` when the node's previous heartbeat (made through this store) is gone:
   * another node judged this one dead and removed its entries (or the data was lost). The node
   * should join its entries again (the hub does so when `heartbeat` answers false).
   */
  readonly onLost?: ((nodeId: string) => void) | undefined
  /** Transactions retried after a deadlock or serialization failure. Default 5. */
  readonly retries?: number | undefined
}

export interface PostgresPresenceStore extends PresenceStore {
  /** End the store's own pool (a given pool is left open). Idempotent. */
  close(): Promise<void>
}

interface Row {
  channel: string
  connection_id: string
  user_id: string
  node_id: string
  state: string
  data: string
  joined_at: number
  updated_at: number
}

const COLUMNS = 'channel, connection_id, user_id, node_id, state, data, joined_at, updated_at'
type Tx = pg.PoolClient

/** A key in PostgreSQL's advisory lock space for one user in one channel (64 bits of SHA-256: collisions only serialize more). */
function lockKey(channel: string, userId: string): string {
  return createHash('sha256').update(`tidings-presence\u0000${channel}\u0000${userId}`).digest().readBigInt64BE(0).toString()
}

const toEntry = (r: Row): PresenceEntry => ({
  channel: r.channel,
  connectionId: r.connection_id,
  userId: r.user_id,
  nodeId: r.node_id,
  state: r.state,
  data: JSON.parse(r.data) as Record<string, unknown>,
  joinedAt: r.joined_at,
  updatedAt: r.updated_at,
})

const RETRYABLE = new Set(['40P01', '40001'])

/**
 * A PresenceStore on PostgreSQL (tables `tidings_presence`, `tidings_presence_nodes`,
 * `tidings_presence_seen` with the default prefix), for hubs on several nodes that share one database.
 *
 * Every change of a user's entries in a channel runs in a transaction holding an advisory lock
 * of that (channel, user): the user-level edges (first join, last leave) are decided by exactly
 * one of any concurrent calls. `removeNode` deletes a dead node's rows with `DELETE … RETURNING`,
 * so of several nodes racing to remove it each row is reported by the one call that deleted it.
 */
export function createPostgresPresenceStore(options: PostgresPresenceStoreOptions): PostgresPresenceStore {
  if (!options.pool && !options.connectionString) throw new TypeError('createPostgresPresenceStore needs a pool or a connectionString')
  const ownPool = !options.pool
  const pool = options.pool ?? new pg.Pool({ connectionString: options.connectionString, max: 8 })
  if (ownPool) pool.on('error', () => undefined)
  const retries = options.retries ?? 5
  const tableOptions = { schema: options.schema, prefix: options.tablePrefix }
  const { presence: P, nodes: NODES, seen: SEEN, seq: SEQ } = clusterTables(schemaContext(tableOptions))
  let closed = false

  const ready = clusterTablesOnce(pool, { ...tableOptions, createTables: options.createTables })
  const query = async <R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<R[]> => {
    await ready()
    return (await pool.query<R>(text, values)).rows
  }

  /** Run `fn` in a transaction, retried after a deadlock. */
  const tx = async <T>(fn: (c: Tx) => Promise<T>): Promise<T> => {
    await ready()
    for (let attempt = 0; ; attempt++) {
      const c = await pool.connect()
      let broken: Error | undefined
      try {
        await c.query('BEGIN')
        const out = await fn(c)
        await c.query('COMMIT')
        return out
      } catch (err) {
        await c.query('ROLLBACK').catch((e: unknown) => (broken = e instanceof Error ? e : new Error(String(e))))
        const code = (err as { code?: string }).code
        if (code !== undefined && RETRYABLE.has(code) && attempt < retries) continue
        throw err
      } finally {
        c.release(broken)
      }
    }
  }
  const lock = async (c: Tx, channel: string, userId: string) => {
    await c.query('SELECT pg_advisory_xact_lock($1::bigint)', [lockKey(channel, userId)])
  }
  const userRows = async (c: Tx | pg.Pool, channel: string, userId: string): Promise<PresenceEntry[]> =>
    (await c.query<Row>(`SELECT ${COLUMNS} FROM ${P} WHERE channel = $1 AND user_id = $2 ORDER BY seq`, [channel, userId])).rows.map(toEntry)
  const seen = async (c: Tx | pg.Pool, users: string[], at: number[]) => {
    if (users.length === 0) return
    await c.query(
      `INSERT INTO ${SEEN} (user_id, seen) SELECT DISTINCT ON (u) u, s FROM unnest($1::text[], $2::double precision[]) WITH ORDINALITY AS t(u, s, i) ORDER BY u, i DESC
       ON CONFLICT (user_id) DO UPDATE SET seen = excluded.seen`,
      [users, at],
    )
  }

  /** A user's entries in a channel, removed by `remove` (under the lock): one change per removed entry, the edge where none is left. */
  const removals = (removed: PresenceEntry[], remaining: PresenceEntry[], now: number): PresenceChange[] => {
    return removed.map((entry, i) => presenceRemoval(entry, [...remaining, ...removed.slice(i + 1)], now))
  }

  /** The nodes this store has heartbeated (to notice that their heartbeat vanished). */
  const beating = new Set<string>()

  return {
    join(entry) {
      return tx(async (c) => {
        await lock(c, entry.channel, entry.userId)
        const [before] = (
          await c.query<{ old: string | null; others: boolean }>(
            `SELECT (SELECT user_id FROM ${P} WHERE channel = $1 AND connection_id = $2) AS old,
                    EXISTS (SELECT 1 FROM ${P} WHERE channel = $1 AND user_id = $3 AND connection_id <> $2) AS others`,
            [entry.channel, entry.connectionId, entry.userId],
          )
        ).rows
        // The connection joined before as another user: that user's entries change too.
        if (before!.old !== null && before!.old !== entry.userId) await lock(c, entry.channel, before!.old)
        await c.query(
          `INSERT INTO ${P} (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (channel, connection_id) DO UPDATE SET user_id = excluded.user_id, node_id = excluded.node_id, state = excluded.state,
             data = excluded.data, joined_at = excluded.joined_at, updated_at = excluded.updated_at, seq = nextval('${SEQ}')`,
          [entry.channel, entry.connectionId, entry.userId, entry.nodeId, entry.state, JSON.stringify(entry.data ?? {}), entry.joinedAt, entry.updatedAt],
        )
        const edge = !before!.others && before!.old !== entry.userId
        return { edge, member: presenceMember(await userRows(c, entry.channel, entry.userId)) }
      })
    },

    async update(channel, connectionId, patch) {
      const data = patch.data === undefined ? null : JSON.stringify(patch.data)
      const [row] = await query<{ user_id: string }>(
        `WITH u AS (
           UPDATE ${P} SET state = coalesce($3, state), data = coalesce($4, data), updated_at = $5, seq = nextval('${SEQ}')
           WHERE channel = $1 AND connection_id = $2 RETURNING user_id
         ), s AS (
           INSERT INTO ${SEEN} (user_id, seen) SELECT user_id, $5 FROM u ON CONFLICT (user_id) DO UPDATE SET seen = excluded.seen
         )
         SELECT user_id FROM u`,
        [channel, connectionId, patch.state ?? null, data, patch.now],
      )
      if (!row) return undefined
      const rows = await userRows(pool, channel, row.user_id)
      return rows.length > 0 ? presenceMember(rows) : undefined
    },

    async leave(channel, connectionId, now) {
      const [found] = await query<{ user_id: string }>(`SELECT user_id FROM ${P} WHERE channel = $1 AND connection_id = $2`, [channel, connectionId])
      if (!found) return undefined
      return tx(async (c) => {
        await lock(c, channel, found.user_id)
        const removed = (await c.query<Row>(`DELETE FROM ${P} WHERE channel = $1 AND connection_id = $2 AND user_id = $3 RETURNING ${COLUMNS}`, [channel, connectionId, found.user_id])).rows.map(toEntry)
        if (removed.length === 0) return undefined // left (or joined again as another user) meanwhile
        const remaining = await userRows(c, channel, found.user_id)
        await seen(c, [found.user_id], [now])
        return removals(removed, remaining, now)[0]
      })
    },

    async members(channel) {
      return presenceMembers((await query<Row>(`SELECT ${COLUMNS} FROM ${P} WHERE channel = $1 ORDER BY seq`, [channel])).map(toEntry))
    },

    async entries(channel) {
      return (await query<Row>(`SELECT ${COLUMNS} FROM ${P} WHERE channel = $1 ORDER BY seq`, [channel])).map(toEntry)
    },

    async lastSeen(userId) {
      const [row] = await query<{ seen: number }>(`SELECT seen FROM ${SEEN} WHERE user_id = $1`, [userId])
      return row?.seen
    },

    async removeNode(nodeId, now) {
      await query(`DELETE FROM ${NODES} WHERE node_id = $1`, [nodeId])
      const groups = await query<{ channel: string; user_id: string }>(`SELECT DISTINCT channel, user_id FROM ${P} WHERE node_id = $1`, [nodeId])
      const out: Array<{ channel: string; change: PresenceChange }> = []
      const users: string[] = []
      const at: number[] = []
      const one = (channel: string, userId: string) =>
        tx(async (c) => {
          await lock(c, channel, userId)
          const removed = (await c.query<Row>(`DELETE FROM ${P} WHERE channel = $1 AND user_id = $2 AND node_id = $3 RETURNING ${COLUMNS}, seq`, [channel, userId, nodeId])).rows
          if (removed.length === 0) return [] // another node removed them first
          removed.sort((a, b) => Number((a as unknown as { seq: string }).seq) - Number((b as unknown as { seq: string }).seq))
          const remaining = await userRows(c, channel, userId)
          return removals(removed.map(toEntry), remaining, now)
        })
      // A few groups at a time: each is its own short transaction.
      for (let i = 0; i < groups.length; i += 8) {
        const slice = groups.slice(i, i + 8)
        const results = await Promise.all(slice.map((g) => one(g.channel, g.user_id)))
        results.forEach((changes, k) => {
          for (const change of changes) out.push({ channel: slice[k]!.channel, change })
          if (changes.length > 0) {
            users.push(slice[k]!.user_id)
            at.push(now)
          }
        })
      }
      await ready()
      await seen(pool, users, at)
      return out
    },

    async heartbeat(nodeId, now) {
      const had = beating.has(nodeId)
      // xmax is 0 on a freshly inserted row: the store did not know the node.
      const [row] = await query<{ known: boolean }>(
        `INSERT INTO ${NODES} (node_id, beat) VALUES ($1, $2)
         ON CONFLICT (node_id) DO UPDATE SET beat = GREATEST(${NODES}.beat, excluded.beat)
         RETURNING (xmax <> 0) AS known`,
        [nodeId, now],
      )
      const known = row!.known
      beating.add(nodeId)
      if (had && !known) {
        try {
          options.onLost?.(nodeId)
        } catch {
          // the app's callback must not fail the heartbeat
        }
      }
      return known
    },

    async deadNodes(now, ttlMs) {
      const rows = await query<{ node_id: string }>(
        `SELECT a.node_id FROM (SELECT node_id, max(GREATEST(joined_at, updated_at)) AS act FROM ${P} GROUP BY node_id) a
         LEFT JOIN ${NODES} n ON n.node_id = a.node_id
         WHERE $1::double precision - coalesce(n.beat, a.act) > $2::double precision`,
        [now, ttlMs],
      )
      // Heartbeats of nodes that hold nothing and went silent are forgotten (no unbounded growth).
      await query(
        `DELETE FROM ${NODES} n WHERE $1::double precision - n.beat > $2::double precision
           AND NOT EXISTS (SELECT 1 FROM ${P} p WHERE p.node_id = n.node_id)`,
        [now, ttlMs],
      )
      return rows.map((r) => r.node_id)
    },

    async liveNodes(now, ttlMs) {
      return (await query<{ node_id: string }>(`SELECT node_id FROM ${NODES} WHERE beat >= $1::double precision - $2::double precision ORDER BY node_id`, [now, ttlMs])).map((r) => r.node_id)
    },

    async close() {
      if (closed) return
      closed = true
      if (ownPool) await pool.end().catch(() => undefined)
    },
  }
}
