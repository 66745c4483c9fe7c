import { createHash } from 'node:crypto'
import {
  type LiveChange,
  type LiveDoc,
  type LiveQueryContext,
  type LiveQueryProvider,
  type LiveQuerySubscription,
  type LiveQueryUpdate,
  type LiveResume,
  type NormalizedLiveQuery,
  RealtimeError,
  diffLiveResults,
} from '@tidings/core'
import { PGlite } from '@electric-sql/pglite'
import type { CompiledQuery, Kysely } from 'kysely'
import { sql } from 'kysely'
import { LRUCache } from 'lru-cache'
import pg from 'pg'
import { type SqlDatabase, connect } from '../connect.js'
import { type LiveCollection, type ResolvedCollection, checkQuery, compileQuery, resolveCollection } from './compile.js'
import { whereHolds } from './relevance.js'

/** The NOTIFY channel the triggers installed by `install()` use, unless told otherwise. */
export const LIVE_NOTIFY_CHANNEL = 'tidings_live'

/** A change to a row, as a trigger reports it (`pg_notify`) or a write through Tidings tells it. */
export interface LiveRowChange {
  /** The table's name (without schema). */
  readonly table: string
  /** The row's key, when known. */
  readonly key?: string | number | null | undefined
  readonly op?: 'INSERT' | 'UPDATE' | 'DELETE' | 'TRUNCATE' | undefined
  /**
   * The queryable fields of the row before and after the change (`null`: there was no row), as
   * the installed triggers send them. When both are given, queries whose `where` holds for
   * neither are not evaluated again. Absent: every query on the table is.
   */
  readonly rows?: { readonly old: Readonly<Record<string, unknown>> | null; readonly new: Readonly<Record<string, unknown>> | null } | undefined
}

export interface LiveQueriesOptions {
  /**
   * The database: the app's Kysely instance, `{ postgres: url | pg.Pool }` or `{ pglite }` (as
   * for the store). With `postgres` or `pglite` the provider also LISTENs for the triggers'
   * notifications; with a Kysely instance pass `listen` for that.
   */
  readonly db: SqlDatabase
  /** The collections clients may query, by name (`db:collection:<name>`). */
  readonly collections: Readonly<Record<string, LiveCollection>>
  /**
   * Where to hear the triggers' `pg_notify` when `db` is a Kysely instance: a PostgreSQL
   * connection string (a dedicated client LISTENs) or a PGlite instance. `false`: only `notify()`.
   */
  readonly listen?: string | { readonly pglite: { listen(channel: string, cb: (payload: string) => void): Promise<unknown> } } | false | undefined
  /** The NOTIFY channel. Default `tidings_live`. */
  readonly channel?: string | undefined
  /** Past results kept (per query and scope) so reconnecting clients can resume with a diff. Default 1,000. */
  readonly cacheSize?: number | undefined
  /** Docs kept in those results together (the least recently used go first). Default 100,000. */
  readonly cacheDocs?: number | undefined
  /** Distinct queries (query and authorization scope) evaluated at once; more are refused with `RT_008`. Default 10,000. */
  readonly maxQueries?: number | undefined
  /**
   * Live queries one user holds open at once (over all its connections; anonymous ones count
   * together), so a few accounts cannot take the `maxQueries` every user shares; more are refused
   * with `RT_006`. Default 200.
   */
  readonly maxQueriesPerUser?: number | undefined
  /** Failures outside a caller's stack (an evaluation, the LISTEN connection). */
  readonly onError?: ((error: unknown, stage: string) => void) | undefined
}

export interface LiveQueriesStats {
  /** Queries run against the database since the start (first results and re-evaluations). */
  readonly evaluations: number
  /** Distinct queries being followed (each shared by its subscribers). */
  readonly queries: number
  readonly subscribers: number
  /** Row changes heard (notifications and `notify()` calls). */
  readonly changes: number
  /** Results kept for resuming. */
  readonly cached: number
}

export interface LiveQueries extends LiveQueryProvider {
  /**
   * Installs (or replaces) the trigger function and one row trigger per collection table (and
   * watched table): after every insert, update and delete they `pg_notify` the table, key and
   * operation. PostgreSQL and PGlite; run it once at start-up (idempotent, serialized by an
   * advisory lock). Without triggers, call `notify()` after each write.
   */
  install(): Promise<void>
  /** Tell this node's provider a row changed (writes on dialects without triggers, or made where no trigger sees them), after the write committed. */
  notify(change: LiveRowChange | string): void
  /**
   * PostgreSQL and PGlite: `pg_notify` the change inside the app's transaction (`trx`), so every
   * node listening hears it when, and only if, the transaction commits (for tables without the
   * trigger). On other dialects call `notify()` after the commit instead.
   */
  notifyIn(trx: Kysely<any>, change: LiveRowChange | string): Promise<void>
  /** Starts listening (done by the first `open` too); resolves when the LISTEN is in place. */
  start(): Promise<void>
  /** Resolves when no evaluation is running or due (tests, benchmarks). */
  idle(): Promise<void>
  stats(): LiveQueriesStats
  close(): Promise<void>
}

interface Subscriber {
  readonly emit: (update: LiveQueryUpdate) => void
}

/** One distinct query in one authorization scope: evaluated once per relevant change for all its subscribers. */
interface Group {
  readonly id: string
  readonly collection: ResolvedCollection
  readonly compiled: CompiledQuery
  readonly query: NormalizedLiveQuery
  readonly subscribers: Set<Subscriber>
  docs: readonly LiveDoc[]
  version: number
  hash: string
  /** The first evaluation; the group is usable once it settles. */
  ready: Promise<void>
  running: boolean
  /** A change arrived while an evaluation ran: run again after it. */
  dirty: boolean
  closed: boolean
}

/**
 * Did a query fail because of a value the client sent (a string compared with an integer column,
 * a number past the column's range, a NUL in a string) rather than the database? PostgreSQL's
 * data exceptions (SQLSTATE class 22) and datatype mismatches (42804, 42883), and PGlite's own
 * parameter checks (`Invalid input for boolean type`), which it throws before sending anything.
 */
function isValueError(err: unknown): boolean {
  const code = err !== null && typeof err === 'object' ? (err as { code?: unknown }).code : undefined
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code.startsWith('22') || code === '42804' || code === '42883'
  return err instanceof Error && /^Invalid input for [a-z ]+ type$/.test(err.message)
}

const hashOf = (docs: readonly LiveDoc[]): string => createHash('sha256').update(JSON.stringify(docs)).digest('base64url').slice(0, 22)

/**
 * Live queries on PostgreSQL and PGlite through Kysely: the `LiveQueryProvider` for
 * `HubOptions.liveQueries`. See docs/live-queries.md.
 *
 * Identical queries whose rule compiles to the same SQL and parameters (the same normalized
 * query in the same authorization scope) share one group: a relevant row change re-runs the
 * group's query once (a change during a run makes one more run after it, however many arrive),
 * the new result is diffed against the previous one, and every subscriber of the group gets the
 * same changes. Results are cached (lru-cache) by group and hash, for resuming clients.
 */
export function createLiveQueries(options: LiveQueriesOptions): LiveQueries {
  // A PGlite given by its data directory is opened here, so the provider can LISTEN on it.
  const given = options.db
  const ownPglite = given !== null && typeof given === 'object' && 'pglite' in given && !(given.pglite instanceof PGlite) ? new PGlite(given.pglite ?? 'memory://') : undefined
  const conn = connect(ownPglite ? { pglite: ownPglite } : given, (err) => report(err, 'liveQueries.pool'))
  const db: Kysely<any> = conn.db
  const channel = options.channel ?? LIVE_NOTIFY_CHANNEL
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) throw new TypeError('channel must be a lower-case identifier')
  const maxQueries = options.maxQueries ?? 10_000
  const maxPerUser = options.maxQueriesPerUser ?? 200
  /** Open live queries per user id ('' for anonymous ones). */
  const perUser = new Map<string, number>()
  const release = (user: string) => {
    const n = (perUser.get(user) ?? 1) - 1
    if (n <= 0) perUser.delete(user)
    else perUser.set(user, n)
  }
  const collections = new Map<string, ResolvedCollection>()
  for (const [name, c] of Object.entries(options.collections)) collections.set(name, resolveCollection(name, c))
  /** Table name → groups to re-evaluate when it changes. */
  const byTable = new Map<string, Set<Group>>()
  const groups = new Map<string, Group>()
  const cache = new LRUCache<string, readonly LiveDoc[]>({
    max: options.cacheSize ?? 1000,
    maxSize: options.cacheDocs ?? 100_000,
    sizeCalculation: (docs) => Math.max(1, docs.length),
  })
  let evaluations = 0
  let changes = 0
  let versions = 0
  let closed = false
  let running = 0
  let idleWaiters: Array<() => void> = []

  function report(error: unknown, stage: string): void {
    try {
      options.onError?.(error, stage)
    } catch {}
  }

  // ------------------------------------------------------------ change capture

  let listening: Promise<void> | undefined
  let stopListening: (() => Promise<void>) | undefined

  function onPayload(payload: string): void {
    let change: LiveRowChange
    try {
      const v = JSON.parse(payload) as { t?: unknown; k?: unknown; op?: unknown; o?: unknown; n?: unknown }
      if (typeof v.t !== 'string') return
      const rowOf = (x: unknown) => (x !== null && typeof x === 'object' && !Array.isArray(x) ? (x as Record<string, unknown>) : null)
      const rows = 'o' in v && 'n' in v && (v.o === null || rowOf(v.o)) && (v.n === null || rowOf(v.n)) ? { old: rowOf(v.o), new: rowOf(v.n) } : undefined
      change = { table: v.t, key: typeof v.k === 'string' || typeof v.k === 'number' ? v.k : null, op: typeof v.op === 'string' ? (v.op as LiveRowChange['op']) : undefined, rows }
    } catch {
      return
    }
    changed(change)
  }

  function start(): Promise<void> {
    if (listening) return listening
    listening = (async () => {
      const l = options.listen
      if (l === false) return
      let pglite: { listen(channel: string, cb: (payload: string) => void): Promise<unknown> } | undefined
      let url: string | pg.Pool | undefined
      if (typeof l === 'string') url = l
      else if (l && 'pglite' in l) pglite = l.pglite
      else if (ownPglite) pglite = ownPglite
      else if (given !== null && typeof given === 'object' && 'postgres' in given) url = given.postgres
      else if (given !== null && typeof given === 'object' && 'pglite' in given && given.pglite instanceof PGlite) pglite = given.pglite
      else return
      if (pglite) {
        const unlisten = (await pglite.listen(channel, onPayload)) as (() => Promise<void>) | undefined
        stopListening = async () => {
          await unlisten?.()
        }
        return
      }
      if (url !== undefined) await listenPostgres(url)
    })()
    return listening
  }

  async function listenPostgres(url: string | pg.Pool): Promise<void> {
    let client: pg.Client | pg.PoolClient | undefined
    let stopped = false
    let retry: NodeJS.Timeout | undefined
    const attach = async (): Promise<void> => {
      const c = typeof url === 'string' ? new pg.Client({ connectionString: url }) : await url.connect()
      c.on('error', (err) => {
        report(err, 'liveQueries.listen')
        lost()
      })
      c.on('notification', (n) => {
        if (n.channel === channel && n.payload !== undefined) onPayload(n.payload)
      })
      if (c instanceof pg.Client) await c.connect()
      await c.query(`LISTEN ${channel}`)
      client = c
    }
    const lost = (): void => {
      const c = client
      client = undefined
      if (c) {
        if ('release' in c) c.release(true)
        else void c.end().catch(() => undefined)
      }
      if (stopped || retry) return
      retry = setTimeout(() => {
        retry = undefined
        attach().then(
          // Changes may have been missed while no one listened: every query is run again.
          () => everything(),
          (err) => {
            report(err, 'liveQueries.listen')
            lost()
          },
        )
      }, 500)
    }
    await attach()
    stopListening = async () => {
      stopped = true
      if (retry) clearTimeout(retry)
      const c = client
      client = undefined
      if (!c) return
      if ('release' in c) c.release()
      else await c.end().catch(() => undefined)
    }
  }

  function changed(change: LiveRowChange): void {
    changes++
    const set = byTable.get(change.table)
    if (!set) return
    for (const g of set) if (relevant(g, change)) schedule(g)
  }

  /** False only when the change cannot touch the group's result (see relevance.ts). */
  function relevant(g: Group, change: LiveRowChange): boolean {
    const rows = change.rows
    if (rows === undefined || change.table !== g.collection.tableName || g.query.where === null) return true
    if (rows.old !== null && whereHolds(rows.old, g.query.where) !== false) return true
    if (rows.new !== null && whereHolds(rows.new, g.query.where) !== false) return true
    return false
  }

  function everything(): void {
    for (const g of groups.values()) schedule(g)
  }

  // ------------------------------------------------------------ evaluation

  function schedule(g: Group): void {
    if (g.closed) return
    if (g.running) {
      g.dirty = true
      return
    }
    void evaluate(g)
  }

  async function evaluate(g: Group): Promise<void> {
    g.running = true
    running++
    try {
      do {
        g.dirty = false
        evaluations++
        let docs: LiveDoc[]
        try {
          const result = await db.executeQuery<Record<string, unknown>>(g.compiled)
          docs = result.rows.map((r) => g.collection.toDoc(r))
        } catch (err) {
          // A first evaluation's failure is the subscriber's answer (open() reports it when it is not the query's fault).
          if (g.version === 0) throw err
          report(err, 'liveQueries.evaluate')
          continue
        }
        if (g.closed) return
        if (g.version === 0) {
          g.docs = docs
          g.version = ++versions
          g.hash = hashOf(docs)
          cache.set(`${g.id}#${g.hash}`, docs)
          continue
        }
        const diff = diffLiveResults(g.docs, docs, g.collection.key)
        if (diff.length === 0) continue
        g.docs = docs
        g.version = ++versions
        g.hash = hashOf(docs)
        cache.set(`${g.id}#${g.hash}`, docs)
        const update: LiveQueryUpdate = { version: g.version, hash: g.hash, changes: diff }
        for (const s of g.subscribers) {
          try {
            s.emit(update)
          } catch (err) {
            report(err, 'liveQueries.emit')
          }
        }
      } while (g.dirty && !g.closed)
    } finally {
      g.running = false
      running--
      if (running === 0) {
        const waiters = idleWaiters
        idleWaiters = []
        for (const w of waiters) w()
      }
    }
  }

  function tables(c: ResolvedCollection): string[] {
    return [c.tableName, ...c.watch]
  }

  function dropGroup(g: Group): void {
    if (g.closed) return
    g.closed = true
    groups.delete(g.id)
    for (const t of tables(g.collection)) {
      const set = byTable.get(t)
      set?.delete(g)
      if (set?.size === 0) byTable.delete(t)
    }
  }

  // ------------------------------------------------------------ the port

  async function open(ctx: LiveQueryContext, query: NormalizedLiveQuery, emit: (u: LiveQueryUpdate) => void, resume?: LiveResume): Promise<LiveQuerySubscription> {
    if (closed) throw new RealtimeError('RT_008', 'live queries are closed')
    const c = collections.get(ctx.collection)
    if (!c) throw new RealtimeError('RT_004', `no live collection '${ctx.collection}'`)
    checkQuery(c, query)
    const user = ctx.identity.userId ?? ''
    const held = perUser.get(user) ?? 0
    if (held >= maxPerUser) throw new RealtimeError('RT_006', `too many live queries open for one user (${maxPerUser})`, { limit: maxPerUser })
    // The slot is taken now (before anything awaits), and given back if the open fails.
    perUser.set(user, held + 1)
    try {
      return await openFor(c, ctx, query, emit, resume, user)
    } catch (err) {
      release(user)
      throw err
    }
  }

  async function openFor(c: ResolvedCollection, ctx: LiveQueryContext, query: NormalizedLiveQuery, emit: (u: LiveQueryUpdate) => void, resume: LiveResume | undefined, user: string): Promise<LiveQuerySubscription> {
    const compiled = compileQuery(db, c, query, ctx.identity)
    const id = `${c.name}\n${compiled.sql}\n${JSON.stringify(compiled.parameters)}`
    void start().catch((err) => report(err, 'liveQueries.listen'))
    let g = groups.get(id)
    if (!g) {
      if (groups.size >= maxQueries) throw new RealtimeError('RT_008', `too many distinct live queries (${maxQueries})`)
      const group: Group = { id, collection: c, compiled, query, subscribers: new Set(), docs: [], version: 0, hash: '', ready: Promise.resolve(), running: false, dirty: false, closed: false }
      g = group
      groups.set(id, group)
      for (const t of tables(c)) {
        let set = byTable.get(t)
        if (!set) byTable.set(t, (set = new Set()))
        set.add(group)
      }
      group.ready = evaluate(group).catch((err) => {
        dropGroup(group)
        // A value the client sent is its own mistake (RT_007), and the database's message about
        // it stays here: a data exception can quote values the rule hides (a view's cast
        // failing on a row). Anything else is the server's failure.
        if (isValueError(err)) {
          throw new RealtimeError('RT_007', `a value of the query does not fit its field in '${c.name}' (a value of another type than the column's, a number out of its range, or a string holding a NUL character)`)
        }
        // The database's own message (table names, SQL) goes to the app, never to the client.
        report(err, 'liveQueries.evaluate')
        throw new RealtimeError('RT_008', `the live query on '${c.name}' could not be evaluated (the server reported why to the app)`)
      })
    }
    const group = g
    await group.ready
    if (group.closed) throw new RealtimeError('RT_008', 'the live query was closed')
    // From here to the return nothing awaits: the result read below and the subscriber's place
    // in the group belong together (every later update is a newer version than this result).
    const sub: Subscriber = { emit }
    group.subscribers.add(sub)
    let resumed: LiveChange[] | undefined
    if (resume !== undefined) {
      const before = resume.hash === group.hash ? group.docs : cache.get(`${id}#${resume.hash}`)
      if (before !== undefined) resumed = diffLiveResults(before, group.docs, c.key)
    }
    let open = true
    return {
      key: c.key,
      version: group.version,
      hash: group.hash,
      docs: resumed === undefined ? group.docs : [],
      resumed,
      close() {
        if (!open) return
        open = false
        release(user)
        group.subscribers.delete(sub)
        if (group.subscribers.size === 0) dropGroup(group)
      },
    }
  }

  async function install(): Promise<void> {
    const fn = sql.raw(`${channel}_notify`)
    await db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtext(${`${channel}_install`}))`.execute(trx)
      await sql`
        CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
          k text;
          fields text[] := string_to_array(coalesce(TG_ARGV[2], ''), ',');
          o jsonb := NULL;
          n jsonb := NULL;
          payload text;
        BEGIN
          IF TG_OP = 'TRUNCATE' THEN
            PERFORM pg_notify(TG_ARGV[1], json_build_object('t', TG_TABLE_NAME, 'k', NULL, 'op', TG_OP)::text);
            RETURN NULL;
          END IF;
          IF TG_OP <> 'INSERT' THEN
            o := coalesce((SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(to_jsonb(OLD)) e WHERE e.key = ANY(fields)), '{}'::jsonb);
          END IF;
          IF TG_OP <> 'DELETE' THEN
            n := coalesce((SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(to_jsonb(NEW)) e WHERE e.key = ANY(fields)), '{}'::jsonb);
            k := to_jsonb(NEW) ->> TG_ARGV[0];
          ELSE
            k := to_jsonb(OLD) ->> TG_ARGV[0];
          END IF;
          payload := json_build_object('t', TG_TABLE_NAME, 'k', k, 'op', TG_OP, 'o', o, 'n', n)::text;
          -- NOTIFY takes less than 8000 bytes: without the row values every query on the table is evaluated.
          IF octet_length(payload) > 7900 THEN
            payload := json_build_object('t', TG_TABLE_NAME, 'k', left(k, 200), 'op', TG_OP)::text;
          END IF;
          PERFORM pg_notify(TG_ARGV[1], payload);
          RETURN NULL;
        END $$`.execute(trx)
      // Per table: its key and the fields any collection on it filters by (sent with each change).
      const targets = new Map<string, { key: string; fields: Set<string> }>()
      for (const c of collections.values()) {
        const t = targets.get(c.table) ?? { key: c.key, fields: new Set<string>() }
        for (const f of c.fields.keys()) t.fields.add(f)
        targets.set(c.table, t)
      }
      for (const c of collections.values()) for (const w of c.watch) if (![...targets.keys()].some((t) => t.split('.').pop() === w)) targets.set(w, { key: 'id', fields: new Set() })
      for (const [table, { key, fields }] of targets) {
        {
          const trigger = sql.raw(`${channel}_${table.split('.').pop()}`)
          const target = sql.raw(table.split('.').map((p) => `"${p}"`).join('.'))
          await sql`DROP TRIGGER IF EXISTS ${trigger} ON ${target}`.execute(trx)
          await sql`CREATE TRIGGER ${trigger} AFTER INSERT OR UPDATE OR DELETE ON ${target} FOR EACH ROW EXECUTE FUNCTION ${fn}(${sql.lit(key)}, ${sql.lit(channel)}, ${sql.lit([...fields].join(','))})`.execute(trx)
          await sql`DROP TRIGGER IF EXISTS ${sql.raw(`${channel}_${table.split('.').pop()}_truncate`)} ON ${target}`.execute(trx)
          await sql`CREATE TRIGGER ${sql.raw(`${channel}_${table.split('.').pop()}_truncate`)} AFTER TRUNCATE ON ${target} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}(${sql.lit(key)}, ${sql.lit(channel)})`.execute(trx)
        }
      }
    })
  }

  return {
    open,
    install,
    start,
    notify(change) {
      changed(typeof change === 'string' ? { table: change } : change)
    },
    async notifyIn(trx, change) {
      const c = typeof change === 'string' ? { table: change } : change
      const payload = JSON.stringify({ t: c.table, k: c.key ?? null, op: c.op ?? 'UPDATE' })
      await sql`SELECT pg_notify(${channel}, ${payload})`.execute(trx)
    },
    idle() {
      if (running === 0) return Promise.resolve()
      return new Promise<void>((resolve) => idleWaiters.push(resolve))
    },
    stats() {
      let subscribers = 0
      for (const g of groups.values()) subscribers += g.subscribers.size
      return { evaluations, queries: groups.size, subscribers, changes, cached: cache.size }
    },
    async close() {
      if (closed) return
      closed = true
      for (const g of [...groups.values()]) dropGroup(g)
      await listening?.catch(() => undefined)
      await stopListening?.()
      await conn.close()
      if (ownPglite && !ownPglite.closed) await ownPglite.close()
    },
  }
}
