import type { LiveChange, LiveDoc, LiveResultFrame, LiveResultState, LiveResultStep, LiveResume } from '@tidings/protocol'

/*
 * The client's step for live query frames: the same functions as `applyLiveFrame`,
 * `applyLiveChanges`, `diffLiveResults` and `resumeOf` of `@tidings/protocol` (live-query.ts),
 * kept here because that module also defines the zod schemas of queries, and importing
 * anything from it puts zod (about 60 KB gzipped) into the browser build. A test
 * (packages/sql/test/live-client-sdk.test.ts) checks they give what the protocol's give on
 * random results; drop this file once the protocol has them in a module without zod.
 */

const keyOf = (doc: LiveDoc, key: string): string => JSON.stringify(doc[key] ?? null)

/** The changes that turn `before` into `after` (as `diffLiveResults` in the protocol). */
export function diffResults(before: readonly LiveDoc[], after: readonly LiveDoc[], key: string): LiveChange[] {
  const changes: LiveChange[] = []
  const afterKeys = new Set(after.map((d) => keyOf(d, key)))
  const working: Array<{ k: string; doc: LiveDoc }> = before.map((doc) => ({ k: keyOf(doc, key), doc }))
  for (let i = working.length - 1; i >= 0; i--) {
    const w = working[i]!
    if (!afterKeys.has(w.k)) {
      working.splice(i, 1)
      changes.push({ type: 'removed', doc: w.doc, oldIndex: i, newIndex: -1 })
    }
  }
  const present = new Set(working.map((w) => w.k))
  for (let i = 0; i < after.length; i++) {
    const doc = after[i]!
    const k = keyOf(doc, key)
    let at = -1
    if (present.has(k)) {
      for (let j = i; j < working.length; j++) {
        if (working[j]!.k === k) {
          at = j
          break
        }
      }
    }
    if (at < 0) {
      working.splice(i, 0, { k, doc })
      changes.push({ type: 'added', doc, oldIndex: -1, newIndex: i })
      continue
    }
    const was = working[at]!
    if (at === i && (was.doc === doc || JSON.stringify(was.doc) === JSON.stringify(doc))) continue
    working.splice(at, 1)
    working.splice(i, 0, { k, doc })
    changes.push({ type: 'modified', doc, oldIndex: at, newIndex: i })
  }
  return changes
}

/** Applies changes to a result; throws when they do not fit it (as `applyLiveChanges`). */
export function applyChanges(docs: readonly LiveDoc[], changes: readonly LiveChange[]): LiveDoc[] {
  const out = [...docs]
  for (const c of changes) {
    if (c.oldIndex >= 0) {
      if (c.oldIndex >= out.length) throw new RangeError(`change ${c.type} at ${c.oldIndex} outside a result of ${out.length}`)
      out.splice(c.oldIndex, 1)
    }
    if (c.newIndex >= 0) {
      if (c.newIndex > out.length) throw new RangeError(`change ${c.type} to ${c.newIndex} outside a result of ${out.length}`)
      out.splice(c.newIndex, 0, c.doc)
    }
  }
  return out
}

/** A snapshot replaces the result; changes apply when they follow it (as `applyLiveFrame`). Never throws. */
export function applyFrame(state: LiveResultState | undefined, frame: LiveResultFrame): LiveResultStep {
  if (frame.type === 'query:snapshot') {
    const docs = [...frame.docs]
    return {
      ok: true,
      state: { key: frame.key, docs, version: frame.version, hash: frame.hash },
      changes: docs.map((doc, i) => ({ type: 'added' as const, doc, oldIndex: -1, newIndex: i })),
      fromScratch: true,
    }
  }
  if (state === undefined) return { ok: false, reason: 'changes before any snapshot' }
  if (!frame.resumed && frame.prev !== undefined && frame.prev !== state.version) {
    return { ok: false, reason: `changes follow version ${frame.prev}, the result held is version ${state.version}` }
  }
  if (!frame.resumed && !(frame.version > state.version)) return { ok: false, reason: `version ${frame.version} is not newer than ${state.version}` }
  try {
    const docs = applyChanges(state.docs, frame.changes)
    return { ok: true, state: { key: state.key, docs, version: frame.version, hash: frame.hash }, changes: frame.changes, fromScratch: false }
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : 'changes do not fit the result held' }
  }
}

/** What to send as `resume` (as `resumeOf`). */
export function resumeFrom(state: LiveResultState): LiveResume {
  return { version: state.version, hash: state.hash }
}
