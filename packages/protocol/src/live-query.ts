import { z } from 'zod'

/**
 * Live queries: the query a client sends with `subscribe` on a `db:collection:<name>` channel,
 * its normal form and canonical key, and the result changes the server sends back.
 *
 *   {
 *     where: [['roomId', '==', 'room-123'], { or: [['pinned', '==', true], ['createdAt', '>', 1700000000000]] }],
 *     orderBy: [['createdAt', 'desc']],
 *     limit: 50,
 *     startAfter: [1700000000000, 'msg-17'],
 *   }
 *
 * `where` is a condition, or a list of conditions that all hold (AND); a condition is a
 * `[field, op, value]` triple or `{ and: [...] }` / `{ or: [...] }`. The shape is checked here
 * (sizes, depth, value types); which fields and operators a collection allows is the server's
 * collection definition, checked by the live query provider. A client never sends SQL.
 */

/** Bounds that keep a hostile query cheap to validate, to key and to compile. */
export const LIVE_QUERY_LIMITS = {
  /** Conditions (`[field, op, value]`) in a query, all levels together. */
  maxConditions: 32,
  /** Nesting of `and` / `or` (a flat list of conditions is depth 1). */
  maxDepth: 4,
  /** Values of an `in` / `not-in` list. */
  maxInValues: 100,
  /** `orderBy` entries. */
  maxOrderBy: 4,
  /** Largest `limit`; a provider may allow less. */
  maxLimit: 1000,
  /** Length of a field name. */
  maxFieldLength: 64,
  /** Length of a string value. */
  maxStringLength: 1024,
} as const

export const LIVE_QUERY_OPERATORS = ['==', '!=', '<', '<=', '>', '>=', 'in', 'not-in'] as const
export type LiveQueryOperator = (typeof LIVE_QUERY_OPERATORS)[number]
/** What a collection may allow on a field: the operators above, and `orderBy`. */
export type LiveFieldCapability = LiveQueryOperator | 'orderBy'

export type LiveScalar = string | number | boolean | null
export type LiveCondition = readonly [field: string, op: LiveQueryOperator, value: LiveScalar | readonly LiveScalar[]]
export type LiveWhere = LiveCondition | { readonly and: readonly LiveWhere[] } | { readonly or: readonly LiveWhere[] }

export interface LiveQuery {
  /** A condition, or a list of conditions that must all hold. */
  readonly where?: LiveWhere | readonly LiveWhere[] | undefined
  /** Sort order; the collection's key breaks ties (in the last entry's direction). */
  readonly orderBy?: ReadonlyArray<readonly [field: string, direction?: 'asc' | 'desc']> | undefined
  readonly limit?: number | undefined
  /**
   * Keyset pagination: the `orderBy` values of the last row of the previous page, optionally
   * followed by its key (to page through rows with equal sort values). Needs `orderBy`.
   */
  readonly startAfter?: readonly LiveScalar[] | undefined
}

const fieldName = z
  .string()
  .min(1)
  .max(LIVE_QUERY_LIMITS.maxFieldLength)
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'field names are identifiers (letters, digits, _)')
const scalar = z.union([z.string().max(LIVE_QUERY_LIMITS.maxStringLength), z.number().finite(), z.boolean(), z.null()])
const cursorValue = z.union([z.string().max(LIVE_QUERY_LIMITS.maxStringLength), z.number().finite(), z.boolean()])

const conditionSchema = z
  .tuple([fieldName, z.enum(LIVE_QUERY_OPERATORS), z.union([scalar, z.array(scalar).min(1).max(LIVE_QUERY_LIMITS.maxInValues)])])
  .superRefine(([, op, value], ctx) => {
    const list = op === 'in' || op === 'not-in'
    if (list && !Array.isArray(value)) ctx.addIssue({ code: 'custom', message: `'${op}' needs a list of values` })
    if (!list && Array.isArray(value)) ctx.addIssue({ code: 'custom', message: `'${op}' takes one value, not a list` })
    if (value === null && op !== '==' && op !== '!=') ctx.addIssue({ code: 'custom', message: `null can only be compared with == or !=` })
  })

const whereSchema: z.ZodType<LiveWhere> = z.lazy(() =>
  z.union([
    conditionSchema,
    z.object({ and: z.array(whereSchema).min(1).max(LIVE_QUERY_LIMITS.maxConditions) }).strict(),
    z.object({ or: z.array(whereSchema).min(1).max(LIVE_QUERY_LIMITS.maxConditions) }).strict(),
  ]),
) as z.ZodType<LiveWhere>

/** The query's shape, bounds included (conditions, depth); the collection's own rules come later. */
export const liveQuerySchema = z
  .object({
    where: z.union([conditionSchema, z.array(whereSchema).max(LIVE_QUERY_LIMITS.maxConditions), whereSchema]).optional(),
    orderBy: z
      .array(z.union([z.tuple([fieldName]), z.tuple([fieldName, z.enum(['asc', 'desc'])])]))
      .max(LIVE_QUERY_LIMITS.maxOrderBy)
      .optional(),
    limit: z.number().int().min(1).max(LIVE_QUERY_LIMITS.maxLimit).optional(),
    startAfter: z.array(cursorValue).min(1).max(LIVE_QUERY_LIMITS.maxOrderBy + 1).optional(),
  })
  .strict()
  .superRefine((q, ctx) => {
    const problem = whereProblem(q.where as LiveQuery['where'])
    if (problem) ctx.addIssue({ code: 'custom', path: ['where'], message: problem })
    if (q.startAfter !== undefined) {
      const n = q.orderBy?.length ?? 0
      if (n === 0) ctx.addIssue({ code: 'custom', path: ['startAfter'], message: 'startAfter needs orderBy' })
      else if (q.startAfter.length !== n && q.startAfter.length !== n + 1) {
        ctx.addIssue({ code: 'custom', path: ['startAfter'], message: `startAfter takes the ${n} orderBy value(s), optionally followed by the key` })
      }
    }
  }) as unknown as z.ZodType<LiveQuery>

/** Why the `where` tree is too large or too deep, or undefined. */
function whereProblem(where: LiveQuery['where']): string | undefined {
  if (where === undefined) return undefined
  let conditions = 0
  let deepest = 0
  const walk = (node: LiveWhere, depth: number): void => {
    if (isCondition(node)) {
      conditions++
      deepest = Math.max(deepest, depth)
      return
    }
    for (const child of 'and' in node ? node.and : node.or) walk(child, depth + 1)
  }
  if (isCondition(where as LiveWhere)) walk(where as LiveWhere, 1)
  else if (Array.isArray(where)) for (const n of where as readonly LiveWhere[]) walk(n, 1)
  else walk(where as LiveWhere, 0)
  if (conditions > LIVE_QUERY_LIMITS.maxConditions) return `more than ${LIVE_QUERY_LIMITS.maxConditions} conditions`
  if (deepest > LIVE_QUERY_LIMITS.maxDepth) return `and/or nested deeper than ${LIVE_QUERY_LIMITS.maxDepth} levels`
  return undefined
}

export function isCondition(node: unknown): node is LiveCondition {
  return Array.isArray(node) && node.length === 3 && typeof node[0] === 'string' && typeof node[1] === 'string'
}

/**
 * A validated query in normal form: `where` is one node (`and` lists flattened, children
 * de-duplicated and sorted, a single child unwrapped, `in` lists sorted and unique), every
 * `orderBy` has its direction. Equivalent queries written differently normalize to the same
 * value, so they share one evaluation.
 */
export interface NormalizedLiveQuery {
  readonly where: LiveWhere | null
  readonly orderBy: ReadonlyArray<readonly [string, 'asc' | 'desc']>
  readonly limit: number | null
  readonly startAfter: readonly LiveScalar[] | null
}

const compareScalars = (a: LiveScalar, b: LiveScalar): number => {
  const ka = JSON.stringify(a)
  const kb = JSON.stringify(b)
  return ka < kb ? -1 : ka > kb ? 1 : 0
}

function normalizeWhere(node: LiveWhere): LiveWhere {
  if (isCondition(node)) {
    const [field, op, value] = node
    if (Array.isArray(value)) {
      const unique = [...new Map(value.map((v) => [JSON.stringify(v), v as LiveScalar])).values()].sort(compareScalars)
      return [field, op, unique]
    }
    return [field, op, value]
  }
  const kind = 'and' in node ? 'and' : 'or'
  const children: LiveWhere[] = []
  for (const child of 'and' in node ? node.and : node.or) {
    const n = normalizeWhere(child)
    // (a AND (b AND c)) is (a AND b AND c); the same for or.
    if (!isCondition(n) && kind in n) children.push(...((n as Record<string, readonly LiveWhere[]>)[kind] ?? []))
    else children.push(n)
  }
  const unique = [...new Map(children.map((c) => [JSON.stringify(c), c])).entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, c]) => c)
  if (unique.length === 1) return unique[0]!
  return kind === 'and' ? { and: unique } : { or: unique }
}

/** The normal form of a query that passed `liveQuerySchema`. */
export function normalizeLiveQuery(query: LiveQuery): NormalizedLiveQuery {
  let where: LiveWhere | null = null
  if (query.where !== undefined) {
    const w = query.where
    where = normalizeWhere(isCondition(w) ? w : Array.isArray(w) ? { and: w as readonly LiveWhere[] } : (w as LiveWhere))
  }
  return {
    where,
    orderBy: (query.orderBy ?? []).map(([f, d]) => [f, d ?? 'asc'] as const),
    limit: query.limit ?? null,
    startAfter: query.startAfter ?? null,
  }
}

/** A string equal for equal normal forms (and only for them): the key of shared evaluations. */
export function liveQueryKey(query: NormalizedLiveQuery): string {
  return JSON.stringify([query.where, query.orderBy, query.limit, query.startAfter])
}

/** Parses and normalizes a client's query; the reason names the offending part. */
export function parseLiveQuery(value: unknown): { ok: true; query: NormalizedLiveQuery } | { ok: false; reason: string } {
  const r = liveQuerySchema.safeParse(value)
  if (!r.success) {
    const issue = r.error.issues[0]
    const where = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : ''
    return { ok: false, reason: `invalid live query: ${where}${issue?.message ?? 'malformed'}` }
  }
  return { ok: true, query: normalizeLiveQuery(r.data) }
}

/** The fields a normalized query's `where` names, with the operator used on each. */
export function conditionsOf(where: LiveWhere | null): LiveCondition[] {
  const out: LiveCondition[] = []
  const walk = (n: LiveWhere): void => {
    if (isCondition(n)) out.push(n)
    else for (const c of 'and' in n ? n.and : n.or) walk(c)
  }
  if (where) walk(where)
  return out
}

// ---------------------------------------------------------------- results and changes (schemas; the types and steps are in live-result.ts)

export const liveDocSchema = z.record(z.string(), z.unknown())
export const liveChangeSchema = z.object({
  type: z.enum(['added', 'modified', 'removed']),
  doc: liveDocSchema,
  oldIndex: z.number().int().min(-1),
  newIndex: z.number().int().min(-1),
})

/** The `resume` field of a subscribe (see `LiveResume`). */
export const liveResumeSchema = z.object({ version: z.number().int().nonnegative(), hash: z.string().min(1).max(128) }).strict()
