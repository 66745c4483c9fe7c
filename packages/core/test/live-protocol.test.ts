import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { type LiveDoc, LIVE_QUERY_LIMITS, applyLiveChanges, applyLiveFrame, resumeOf, diffLiveResults, liveQueryKey, parseLiveQuery, parseClientFrame, serverFrameSchema } from '@tidings/core'

// The wire side of live queries: the query's shape and bounds, its normal form and key, and
// result diffs that a client can apply.

const keyOf = (q: unknown) => {
  const r = parseLiveQuery(q)
  if (!r.ok) throw new Error(r.reason)
  return liveQueryKey(r.query)
}

describe('live query shape', () => {
  it('equivalent queries written differently have one key (AND order, nesting, duplicate and in-list order), different ones do not', () => {
    const a = keyOf({ where: [['roomId', '==', 'r1'], ['score', 'in', [3, 1, 2, 1]]], orderBy: [['createdAt']], limit: 5 })
    const b = keyOf({ where: { and: [{ and: [['score', 'in', [1, 2, 3]]] }, ['roomId', '==', 'r1'], ['roomId', '==', 'r1']] }, orderBy: [['createdAt', 'asc']], limit: 5 })
    expect(a).toBe(b)
    expect(keyOf({ where: [['roomId', '==', 'r1']], limit: 5 })).not.toBe(keyOf({ where: [['roomId', '==', 'r2']], limit: 5 }))
    expect(keyOf({ where: { or: [['a', '==', 1], ['b', '==', 1]] } })).not.toBe(keyOf({ where: { and: [['a', '==', 1], ['b', '==', 1]] } }))
    expect(keyOf({ orderBy: [['a', 'desc']] })).not.toBe(keyOf({ orderBy: [['a', 'asc']] }))
  })

  it('refuses what is not a bounded query: too many conditions, too deep, long lists, bad operators, field names that are not identifiers, extra keys, a cursor without order', () => {
    const reason = (q: unknown) => {
      const r = parseLiveQuery(q)
      return r.ok ? 'accepted' : r.reason
    }
    expect(reason({ where: Array.from({ length: LIVE_QUERY_LIMITS.maxConditions + 1 }, () => ['a', '==', 1]) })).toMatch(/where/)
    const nest = (d: number): unknown => (d === 0 ? ['a', '==', 1] : { or: [nest(d - 1), ['b', '==', d]] })
    expect(reason({ where: nest(LIVE_QUERY_LIMITS.maxDepth) })).toBe('accepted')
    expect(reason({ where: nest(LIVE_QUERY_LIMITS.maxDepth + 1) })).toMatch(/nested deeper than 4/)
    expect(reason({ where: [['a', 'in', Array.from({ length: 101 }, (_, i) => i)]] })).toMatch(/where/)
    expect(reason({ where: [['a', 'in', 1]] })).toMatch(/where/)
    expect(reason({ where: [['a', 'like', 1]] })).toMatch(/where/)
    expect(reason({ where: [['a b', '==', 1]] })).toMatch(/identifiers/)
    expect(reason({ where: [['a', '<', null]] })).toMatch(/where/)
    expect(reason({ limit: 1001 })).toMatch(/limit/)
    expect(reason({ select: '*' })).toMatch(/select|Unrecognized/)
    expect(reason({ startAfter: [1] })).toMatch(/startAfter needs orderBy/)
    expect(reason({ orderBy: [['a', 'asc']], startAfter: [1, 'k', 2] })).toMatch(/startAfter takes the 1 orderBy value/)
    // And in a frame: the subscribe carries it, the schema checks it.
    expect(parseClientFrame({ type: 'subscribe', channel: 'db:collection:m', query: { where: [['a', '==', 1]] }, resume: { version: 1, hash: 'h' } }).ok).toBe(true)
    expect(parseClientFrame({ type: 'subscribe', channel: 'db:collection:m', query: { where: 'DROP TABLE x' } }).ok).toBe(false)
  })
})

describe('live result diffs', () => {
  const doc = fc.record({ id: fc.integer({ min: 0, max: 12 }).map(String), v: fc.integer({ min: 0, max: 2 }) })
  const result = fc.uniqueArray(doc, { selector: (d) => d.id, maxLength: 10 })

  it('applying the diff of two results to the first gives the second, with valid indexes and each doc at most once', () => {
    fc.assert(
      fc.property(result, result, (before: LiveDoc[], after: LiveDoc[]) => {
        const changes = diffLiveResults(before, after, 'id')
        expect(applyLiveChanges(before, changes)).toEqual(after)
        const touched = changes.map((c) => c.doc['id'])
        expect(new Set(touched).size).toBe(touched.length)
        for (const c of changes) {
          if (c.type === 'added') expect(c.oldIndex).toBe(-1)
          if (c.type === 'removed') expect(c.newIndex).toBe(-1)
          if (c.type === 'modified') expect(c.oldIndex >= 0 && c.newIndex >= 0).toBe(true)
        }
        if (JSON.stringify(before) === JSON.stringify(after)) expect(changes).toEqual([])
      }),
      { numRuns: 500 },
    )
  })

  it('a limited window: the row that leaves is removed, the one that enters added', () => {
    expect(diffLiveResults([{ id: 'c' }, { id: 'b' }], [{ id: 'd' }, { id: 'c' }], 'id')).toEqual([
      { type: 'removed', doc: { id: 'b' }, oldIndex: 1, newIndex: -1 },
      { type: 'added', doc: { id: 'd' }, oldIndex: -1, newIndex: 0 },
    ])
  })

  it('the server frames validate: query:snapshot and query:changes', () => {
    expect(serverFrameSchema.safeParse({ type: 'query:snapshot', channel: 'db:collection:m', key: 'id', version: 1, hash: 'h', docs: [{ id: 'a' }] }).success).toBe(true)
    expect(serverFrameSchema.safeParse({ type: 'query:changes', channel: 'db:collection:m', version: 2, hash: 'h2', changes: [{ type: 'added', doc: { id: 'a' }, oldIndex: -1, newIndex: 0 }] }).success).toBe(true)
    expect(serverFrameSchema.safeParse({ type: 'query:changes', channel: 'db:collection:m', version: 2, hash: 'h2', changes: [{ type: 'moved', doc: {}, oldIndex: 0, newIndex: 0 }] }).success).toBe(false)
  })
})

describe('applyLiveFrame (the client side)', () => {
  const snap = { type: 'query:snapshot' as const, key: 'id', version: 3, hash: 'h3', docs: [{ id: 'a' }, { id: 'b' }] }
  it('a snapshot lists its docs as added; changes that follow apply; resumeOf gives what to present', () => {
    const s1 = applyLiveFrame(undefined, snap)
    expect(s1).toMatchObject({ ok: true, fromScratch: true, changes: [{ type: 'added', newIndex: 0 }, { type: 'added', newIndex: 1 }] })
    if (!s1.ok) throw new Error()
    const s2 = applyLiveFrame(s1.state, { type: 'query:changes', version: 5, prev: 3, hash: 'h5', changes: [{ type: 'removed', doc: { id: 'a' }, oldIndex: 0, newIndex: -1 }] })
    expect(s2).toMatchObject({ ok: true, fromScratch: false, state: { docs: [{ id: 'b' }], version: 5, hash: 'h5' } })
    if (!s2.ok) throw new Error()
    expect(resumeOf(s2.state)).toEqual({ version: 5, hash: 'h5' })
  })
  it('a missed frame (prev is not the version held), an older version, changes that do not fit or come first are refused, never thrown', () => {
    const s1 = applyLiveFrame(undefined, snap)
    if (!s1.ok) throw new Error()
    expect(applyLiveFrame(s1.state, { type: 'query:changes', version: 9, prev: 7, hash: 'x', changes: [] })).toMatchObject({ ok: false, reason: expect.stringMatching(/version 7/) })
    expect(applyLiveFrame(s1.state, { type: 'query:changes', version: 2, hash: 'x', changes: [] })).toMatchObject({ ok: false })
    expect(applyLiveFrame(s1.state, { type: 'query:changes', version: 4, prev: 3, hash: 'x', changes: [{ type: 'removed', doc: { id: 'z' }, oldIndex: 7, newIndex: -1 }] })).toMatchObject({ ok: false })
    expect(applyLiveFrame(undefined, { type: 'query:changes', version: 4, hash: 'x', changes: [] })).toMatchObject({ ok: false })
    // A resumed frame follows the presented result whatever its version number (another node's).
    expect(applyLiveFrame(s1.state, { type: 'query:changes', version: 1, hash: 'h1', changes: [], resumed: true })).toMatchObject({ ok: true, state: { version: 1 } })
  })
})

