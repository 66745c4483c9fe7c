import { z } from 'zod'

/**
 * Server-side subscription filters: a serializable tree a client sends with `subscribe`,
 * validated here and compiled once into a predicate that the fan-out calls per message.
 *
 *   { field: 'data.price', op: 'gt', value: 100 }
 *   { and: [ ... ] } | { or: [ ... ] } | { not: { ... } }
 *
 * `field` is a dotted path into the delivered message: `event`, `sender` or `data.<path>`
 * (for example `data.order.total`).
 */
export type FilterOp = 'eq' | 'ne' | 'gt' | 'gte' | 'lt' | 'lte' | 'in' | 'contains' | 'exists'

export type FilterNode =
  | { field: string; op: FilterOp; value?: unknown }
  | { and: FilterNode[] }
  | { or: FilterNode[] }
  | { not: FilterNode }

/** Limits that keep a hostile filter from costing more than a handful of comparisons. */
export const FILTER_LIMITS = { maxNodes: 64, maxDepth: 8, maxInValues: 256, maxPathSegments: 8 } as const

const scalar = z.union([z.string().max(1024), z.number(), z.boolean(), z.null()])

const leaf = z
  .object({
    field: z.string().min(1).max(256),
    op: z.enum(['eq', 'ne', 'gt', 'gte', 'lt', 'lte', 'in', 'contains', 'exists']),
    value: z.union([scalar, z.array(scalar).max(FILTER_LIMITS.maxInValues)]).optional(),
  })
  .strict()
  .superRefine((node, ctx) => {
    if (node.field.split('.').length > FILTER_LIMITS.maxPathSegments) {
      ctx.addIssue({ code: 'custom', message: `field path has more than ${FILTER_LIMITS.maxPathSegments} segments` })
    }
    if (node.op === 'in' && !Array.isArray(node.value)) {
      ctx.addIssue({ code: 'custom', message: "'in' needs an array value" })
    }
    if (node.op !== 'in' && Array.isArray(node.value)) {
      ctx.addIssue({ code: 'custom', message: `'${node.op}' needs a scalar value` })
    }
    if ((node.op === 'gt' || node.op === 'gte' || node.op === 'lt' || node.op === 'lte') &&
        typeof node.value !== 'number' && typeof node.value !== 'string') {
      ctx.addIssue({ code: 'custom', message: `'${node.op}' needs a number or string value` })
    }
    if (node.op !== 'exists' && node.value === undefined) {
      ctx.addIssue({ code: 'custom', message: `'${node.op}' needs a value` })
    }
  })

export const filterSchema: z.ZodType<FilterNode> = z.lazy(() =>
  z.union([
    leaf,
    z.object({ and: z.array(filterSchema).min(1).max(FILTER_LIMITS.maxNodes) }).strict(),
    z.object({ or: z.array(filterSchema).min(1).max(FILTER_LIMITS.maxNodes) }).strict(),
    z.object({ not: filterSchema }).strict(),
  ]),
) as z.ZodType<FilterNode>

export type FilterPredicate = (message: FilterTarget) => boolean

/** What a filter looks at: a message frame, or a recipient view for broadcast `where` filters. */
export type FilterTarget = object

/** Roots a field path may start with, and whether they have sub-fields. */
export type FilterRoots = Readonly<Record<string, 'leaf' | 'object'>>

/** Message filters (subscriptions): `event`, `sender`, `data.*`. */
export const MESSAGE_FILTER_ROOTS: FilterRoots = { event: 'leaf', sender: 'leaf', data: 'object' }
/** Recipient filters (broadcast `where`): `user.id`, `user.roles`, `user.claims.*`, `transport`. */
export const RECIPIENT_FILTER_ROOTS: FilterRoots = { user: 'object', transport: 'leaf' }

export class FilterError extends Error {
  override readonly name = 'FilterError'
}

/**
 * Validates a filter tree and compiles it into a predicate. Throws `FilterError` with a
 * readable reason when the tree is malformed or over the limits.
 */
export function compileFilter(input: unknown, roots: FilterRoots = MESSAGE_FILTER_ROOTS): FilterPredicate {
  const parsed = filterSchema.safeParse(input)
  if (!parsed.success) {
    const first = parsed.error.issues[0]
    throw new FilterError(`invalid filter: ${first ? `${first.path.join('.') || 'root'}: ${first.message}` : 'malformed'}`)
  }
  const stats = { nodes: 0 }
  return compileNode(parsed.data, 1, stats, roots)
}

function compileNode(node: FilterNode, depth: number, stats: { nodes: number }, roots: FilterRoots): FilterPredicate {
  if (depth > FILTER_LIMITS.maxDepth) throw new FilterError(`invalid filter: deeper than ${FILTER_LIMITS.maxDepth} levels`)
  if (++stats.nodes > FILTER_LIMITS.maxNodes) throw new FilterError(`invalid filter: more than ${FILTER_LIMITS.maxNodes} nodes`)
  if ('and' in node) {
    const parts = node.and.map((n) => compileNode(n, depth + 1, stats, roots))
    return (m) => {
      for (const p of parts) if (!p(m)) return false
      return true
    }
  }
  if ('or' in node) {
    const parts = node.or.map((n) => compileNode(n, depth + 1, stats, roots))
    return (m) => {
      for (const p of parts) if (p(m)) return true
      return false
    }
  }
  if ('not' in node) {
    const inner = compileNode(node.not, depth + 1, stats, roots)
    return (m) => !inner(m)
  }
  return compileLeaf(compilePath(node.field, roots), node.op, node.value)
}

function compileLeaf(get: (m: FilterTarget) => unknown, op: FilterOp, value: unknown): FilterPredicate {
  switch (op) {
    case 'exists':
      return value === false ? (m) => get(m) === undefined : (m) => get(m) !== undefined
    case 'eq':
      return (m) => get(m) === value
    case 'ne':
      return (m) => get(m) !== value
    case 'gt':
      return (m) => comparable(get(m), value) && (get(m) as number) > (value as number)
    case 'gte':
      return (m) => comparable(get(m), value) && (get(m) as number) >= (value as number)
    case 'lt':
      return (m) => comparable(get(m), value) && (get(m) as number) < (value as number)
    case 'lte':
      return (m) => comparable(get(m), value) && (get(m) as number) <= (value as number)
    case 'in': {
      const set = new Set(value as unknown[])
      return (m) => set.has(get(m))
    }
    case 'contains':
      return (m) => {
        const v = get(m)
        if (typeof v === 'string') return typeof value === 'string' && v.includes(value)
        if (Array.isArray(v)) return v.includes(value)
        return false
      }
  }
}

/** Only compare values of one primitive type: `'10' > 9` must not be true by coercion. */
function comparable(a: unknown, b: unknown): boolean {
  return typeof a === typeof b && (typeof a === 'number' || typeof a === 'string')
}

const FORBIDDEN_SEGMENTS = new Set(['__proto__', 'prototype', 'constructor'])

function compilePath(field: string, roots: FilterRoots): (m: FilterTarget) => unknown {
  const segments = field.split('.')
  for (const s of segments) {
    if (s === '' || FORBIDDEN_SEGMENTS.has(s)) throw new FilterError(`invalid filter: bad field path '${field}'`)
  }
  const [root = '', ...rest] = segments
  const kind = Object.prototype.hasOwnProperty.call(roots, root) ? roots[root] : undefined
  if (kind === undefined) {
    throw new FilterError(`invalid filter: field must start with ${Object.keys(roots).join(', ')} (got '${field}')`)
  }
  if (kind === 'leaf' && rest.length > 0) throw new FilterError(`invalid filter: '${root}' has no sub-fields`)
  return (m) => {
    let v: unknown = (m as Record<string, unknown>)[root]
    for (const s of rest) {
      if (v === null || typeof v !== 'object' || !Object.prototype.hasOwnProperty.call(v, s)) return undefined
      v = (v as Record<string, unknown>)[s]
    }
    return v
  }
}
