import {
  type Identity,
  type LiveCondition,
  type LiveDoc,
  type LiveFieldCapability,
  type LiveScalar,
  type LiveWhere,
  type NormalizedLiveQuery,
  RealtimeError,
  isCondition,
} from '@tidings/core'
import type { CompiledQuery, Expression, ExpressionBuilder, Kysely, SqlBool } from 'kysely'

/** The per-user row rule: a Kysely condition on the collection's rows, compiled into the query's SQL. */
export type LiveRowRule = (eb: ExpressionBuilder<any, any>) => Expression<SqlBool>

/** A collection clients may query live: its table and exactly what they may ask of it. */
export interface LiveCollection {
  /** The table (optionally `schema.table`). */
  readonly table: string
  /** The column that identifies a row (unique, never null). Default `id`. */
  readonly key?: string | undefined
  /**
   * The fields clients may use, each with the operators allowed on it (`'=='`, `'!='`, `'<'`,
   * `'<='`, `'>'`, `'>='`, `'in'`, `'not-in'`) and `'orderBy'` when they may sort by it. A field
   * or operator not listed is refused (`RT_007`). The key may always break ties and page.
   */
  readonly fields: Readonly<Record<string, readonly LiveFieldCapability[]>>
  /** The columns each doc carries. Default: every column of the table. */
  readonly columns?: readonly string[] | undefined
  /**
   * The per-user row rule: given the subscriber's identity, a Kysely condition its rows must
   * meet (compiled into the query, so the database applies it on every evaluation), `true` for
   * every row, `false` to refuse the subscription (`RT_003`). Default: every row. Subscribers
   * whose rule compiles to the same SQL and parameters share evaluations; so a rule that only
   * depends on, say, `identity.userId` groups per user.
   */
  readonly rule?: ((identity: Identity) => LiveRowRule | boolean) | undefined
  /** Largest `limit` a query may ask for; also the limit of a query without one. Default 500. */
  readonly maxLimit?: number | undefined
  /**
   * Other tables whose changes can change this collection's results through the rule (e.g. a
   * room membership table): a change there re-evaluates the collection's queries too.
   */
  readonly watch?: readonly string[] | undefined
  /** Turns a row into the doc sent to clients. Default: the row with `Date` as ISO strings and `bigint` as strings. */
  readonly toDoc?: ((row: Record<string, unknown>) => LiveDoc) | undefined
}

/** A collection as the provider uses it. */
export interface ResolvedCollection {
  readonly name: string
  readonly table: string
  /** The table's name without a schema (what triggers report as `TG_TABLE_NAME`). */
  readonly tableName: string
  readonly key: string
  readonly fields: ReadonlyMap<string, ReadonlySet<LiveFieldCapability>>
  readonly columns: readonly string[] | undefined
  readonly rule: LiveCollection['rule']
  readonly maxLimit: number
  readonly watch: readonly string[]
  readonly toDoc: (row: Record<string, unknown>) => LiveDoc
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/

export function resolveCollection(name: string, c: LiveCollection): ResolvedCollection {
  const where = `live collection '${name}'`
  if (typeof c?.table !== 'string' || !/^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$/.test(c.table)) throw new TypeError(`${where}: table must be an identifier (optionally schema.table)`)
  const key = c.key ?? 'id'
  if (!IDENTIFIER.test(key)) throw new TypeError(`${where}: key must be an identifier`)
  const fields = new Map<string, ReadonlySet<LiveFieldCapability>>()
  for (const [field, caps] of Object.entries(c.fields ?? {})) {
    if (!IDENTIFIER.test(field)) throw new TypeError(`${where}: field '${field}' is not an identifier`)
    fields.set(field, new Set(caps))
  }
  for (const col of c.columns ?? []) if (!IDENTIFIER.test(col)) throw new TypeError(`${where}: column '${col}' is not an identifier`)
  const maxLimit = c.maxLimit ?? 500
  if (!Number.isInteger(maxLimit) || maxLimit < 1 || maxLimit > 1000) throw new TypeError(`${where}: maxLimit must be an integer from 1 to 1000`)
  for (const t of c.watch ?? []) if (!IDENTIFIER.test(t.split('.').pop() ?? '')) throw new TypeError(`${where}: watch lists table names`)
  return {
    name,
    table: c.table,
    tableName: c.table.split('.').pop()!,
    key,
    fields,
    columns: c.columns === undefined ? undefined : c.columns.includes(key) ? [...c.columns] : [key, ...c.columns],
    rule: c.rule,
    maxLimit,
    watch: (c.watch ?? []).map((t) => t.split('.').pop()!),
    toDoc: c.toDoc ?? defaultDoc,
  }
}

export function defaultDoc(row: Record<string, unknown>): LiveDoc {
  let out: Record<string, unknown> | undefined
  for (const k in row) {
    const v = row[k]
    if (v instanceof Date || typeof v === 'bigint') {
      out ??= { ...row }
      out[k] = v instanceof Date ? v.toISOString() : v.toString()
    }
  }
  return out ?? row
}

const invalid = (message: string) => new RealtimeError('RT_007', message)

/** Checks the query against what the collection allows; `RT_007` naming the offending field or operator. */
export function checkQuery(c: ResolvedCollection, q: NormalizedLiveQuery): void {
  const walk = (n: LiveWhere): void => {
    if (isCondition(n)) {
      const [field, op] = n
      const caps = c.fields.get(field)
      if (!caps) throw invalid(`collection '${c.name}' has no field '${field}' clients may query (fields: ${[...c.fields.keys()].join(', ') || 'none'})`)
      if (!caps.has(op)) throw invalid(`operator '${op}' is not allowed on '${c.name}.${field}' (allowed: ${[...caps].filter((x) => x !== 'orderBy').join(', ') || 'none'})`)
      return
    }
    for (const child of 'and' in n ? n.and : n.or) walk(child)
  }
  if (q.where) walk(q.where)
  for (const [field] of q.orderBy) {
    if (field === c.key) continue
    if (!c.fields.get(field)?.has('orderBy')) throw invalid(`'${c.name}' cannot be ordered by '${field}'`)
  }
  if (q.limit !== null && q.limit > c.maxLimit) throw invalid(`limit ${q.limit} is over the maximum of ${c.maxLimit} for '${c.name}'`)
}

function condition(eb: ExpressionBuilder<any, any>, [field, op, value]: LiveCondition): Expression<SqlBool> {
  const ref = eb.ref(field)
  if (op === 'in' || op === 'not-in') {
    const values = value as readonly LiveScalar[]
    const present = values.filter((v) => v !== null)
    const withNull = present.length < values.length
    if (op === 'in') {
      const parts: Expression<SqlBool>[] = []
      if (present.length > 0) parts.push(eb(ref, 'in', present as never))
      if (withNull) parts.push(eb(ref, 'is', null))
      return parts.length === 1 ? parts[0]! : eb.or(parts)
    }
    const parts: Expression<SqlBool>[] = []
    if (present.length > 0) parts.push(eb(ref, 'not in', present as never))
    if (withNull) parts.push(eb(ref, 'is not', null))
    return parts.length === 1 ? parts[0]! : eb.and(parts)
  }
  if (value === null) return eb(ref, op === '==' ? 'is' : 'is not', null)
  const sqlOp = op === '==' ? '=' : op === '!=' ? '<>' : op
  return eb(ref, sqlOp as '=', value as never)
}

function whereOf(eb: ExpressionBuilder<any, any>, n: LiveWhere): Expression<SqlBool> {
  if (isCondition(n)) return condition(eb, n)
  return 'and' in n ? eb.and(n.and.map((c) => whereOf(eb, c))) : eb.or(n.or.map((c) => whereOf(eb, c)))
}

/**
 * The sort of a query: its `orderBy`, then the key (in the last entry's direction). An entry on
 * the key ends the sort where the client put it (the key is unique: nothing after it can order
 * two rows), so `[['id', 'desc'], ['createdAt', 'asc']]` sorts by the key alone.
 */
export function sortOf(c: ResolvedCollection, q: NormalizedLiveQuery): Array<readonly [string, 'asc' | 'desc']> {
  const at = q.orderBy.findIndex(([f]) => f === c.key)
  if (at >= 0) return q.orderBy.slice(0, at + 1)
  const last = q.orderBy.length > 0 ? q.orderBy[q.orderBy.length - 1]![1] : 'asc'
  return [...q.orderBy, [c.key, last]]
}

/**
 * The SQL of a query for one subscriber: the collection's columns, the rule for its identity,
 * the client's conditions, the order (ties broken by the key), the cursor and the limit.
 */
export function compileQuery(db: Kysely<any>, c: ResolvedCollection, q: NormalizedLiveQuery, identity: Identity): CompiledQuery {
  let rule: LiveRowRule | boolean = true
  if (c.rule) {
    try {
      rule = c.rule(identity)
    } catch {
      throw new RealtimeError('RT_003', `not allowed to read '${c.name}' (its rule failed)`)
    }
    if (rule === false) throw new RealtimeError('RT_003', `not allowed to read '${c.name}'`)
  }
  const query = db.selectFrom(c.table)
  let select = c.columns === undefined ? query.selectAll() : query.select(c.columns as string[])
  if (typeof rule === 'function') {
    const r = rule
    select = select.where((eb) => r(eb))
  }
  if (q.where) {
    const w = q.where
    select = select.where((eb) => whereOf(eb, w))
  }
  const sort = sortOf(c, q)
  if (q.startAfter) {
    // Keyset pagination: rows strictly after the cursor in the query's order. The cursor's values
    // are those of the sort's entries in order (the `orderBy` ones, then the key); values past
    // the sort (after an `orderBy` entry on the key) order nothing.
    const cursor = q.startAfter
    const entries = sort.slice(0, cursor.length)
    select = select.where((eb) =>
      eb.or(
        entries.map(([field, dir], i) =>
          eb.and([
            ...entries.slice(0, i).map(([f], j) => eb(eb.ref(f), '=', cursor[j] as never)),
            eb(eb.ref(field), dir === 'asc' ? '>' : '<', cursor[i] as never),
          ]),
        ),
      ),
    )
  }
  for (const [field, dir] of sort) select = select.orderBy(field, dir)
  select = select.limit(q.limit ?? c.maxLimit)
  return select.compile()
}
