import { type LiveScalar, type LiveWhere, isCondition } from '@tidings/core'

/**
 * Can a changed row affect a query's result? The triggers send the values of the collection's
 * queryable fields of the row before and after the change; a query whose `where` holds for
 * neither cannot see the change (its rule only narrows further), so it is not evaluated again.
 *
 * Three answers: true, false, or maybe (undefined) when JavaScript cannot decide exactly as
 * PostgreSQL would (a field not in the payload, a string ordered by a collation, values of
 * different types such as a timestamp against a number). Only a definite false skips an
 * evaluation. SQL's NULL comparisons are false here: queries have no NOT, so a row is in a
 * result only when its condition is TRUE.
 */
type Tri = boolean | undefined

const exactNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && Math.abs(v) <= Number.MAX_SAFE_INTEGER

function equal(v: unknown, value: LiveScalar): Tri {
  if (typeof v === 'string' && typeof value === 'string') return v === value
  if (typeof v === 'boolean' && typeof value === 'boolean') return v === value
  if (exactNumber(v) && exactNumber(value)) return v === value
  return undefined
}

function condition(row: Readonly<Record<string, unknown>>, [field, op, value]: readonly [string, string, unknown]): Tri {
  if (!(field in row)) return undefined
  const v = row[field]
  if (value === null) return op === '==' ? v === null : v !== null
  if (v === null) return false
  if (op === 'in' || op === 'not-in') {
    const list = value as readonly LiveScalar[]
    let any: Tri = false
    for (const item of list) {
      if (item === null) continue
      const e = equal(v, item)
      if (e === true) {
        any = true
        break
      }
      if (e === undefined) any = undefined
    }
    if (op === 'in') return any
    return any === undefined ? undefined : !any
  }
  if (op === '==' || op === '!=') {
    const e = equal(v, value as LiveScalar)
    return e === undefined ? undefined : op === '==' ? e : !e
  }
  if (!exactNumber(v) || !exactNumber(value)) return undefined
  switch (op) {
    case '<': return v < value
    case '<=': return v <= value
    case '>': return v > value
    case '>=': return v >= value
  }
  return undefined
}

export function whereHolds(row: Readonly<Record<string, unknown>>, where: LiveWhere | null): Tri {
  if (where === null) return true
  if (isCondition(where)) return condition(row, where)
  if ('and' in where) {
    let out: Tri = true
    for (const c of where.and) {
      const r = whereHolds(row, c)
      if (r === false) return false
      if (r === undefined) out = undefined
    }
    return out
  }
  let out: Tri = false
  for (const c of where.or) {
    const r = whereHolds(row, c)
    if (r === true) return true
    if (r === undefined) out = undefined
  }
  return out
}
