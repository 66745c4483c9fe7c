/**
 * Live query results and their changes: diffing two results, applying changes, and the client's
 * step for each `query:snapshot` / `query:changes` frame. No zod here, so a browser bundle that
 * uses only these (the client SDK) does not carry the schemas.
 */

/** One row of a result, as the collection exposes it (JSON values). */
export type LiveDoc = Readonly<Record<string, unknown>>

/**
 * One change of a result, in the order they apply: remove the doc at `oldIndex` (when ≥ 0),
 * then insert `doc` at `newIndex` (when ≥ 0), each index counted with every earlier change of
 * the same frame applied (Firestore's `docChanges()` rule). `added` has `oldIndex: -1`,
 * `removed` has `newIndex: -1`. A row that leaves a limited window is `removed`, one that
 * enters it `added`.
 */
export interface LiveChange {
  readonly type: 'added' | 'modified' | 'removed'
  readonly doc: LiveDoc
  readonly oldIndex: number
  readonly newIndex: number
}

/** What a client presents to resume a live query: the version and hash of the last result it holds. */
export interface LiveResume {
  readonly version: number
  readonly hash: string
}

const keyOf = (doc: LiveDoc, key: string): string => JSON.stringify(doc[key] ?? null)

/** Same content (JSON, key order included: rows of one query have their columns in one order). */
function sameDoc(a: LiveDoc, b: LiveDoc): boolean {
  if (a === b) return true
  return JSON.stringify(a) === JSON.stringify(b)
}

/** The changes that turn `before` into `after` (ordered lists of docs with a unique `key` field). */
export function diffLiveResults(before: readonly LiveDoc[], after: readonly LiveDoc[], key: string): LiveChange[] {
  const changes: LiveChange[] = []
  const afterKeys = new Set(after.map((d) => keyOf(d, key)))
  const working: Array<{ k: string; doc: LiveDoc }> = before.map((doc) => ({ k: keyOf(doc, key), doc }))
  // Removals first, from the end, so each index is the one in the list as it stands.
  for (let i = working.length - 1; i >= 0; i--) {
    const w = working[i]!
    if (!afterKeys.has(w.k)) {
      working.splice(i, 1)
      changes.push({ type: 'removed', doc: w.doc, oldIndex: i, newIndex: -1 })
    }
  }
  // Removals were found from the end; report them in ascending position order of the list as
  // it stood before each (equivalent: from the end keeps later indexes valid). Keep them as is.
  const position = new Map<string, number>()
  working.forEach((w, i) => position.set(w.k, i))
  for (let i = 0; i < after.length; i++) {
    const doc = after[i]!
    const k = keyOf(doc, key)
    const at = position.has(k) ? indexFrom(working, k, i) : -1
    if (at < 0) {
      working.splice(i, 0, { k, doc })
      changes.push({ type: 'added', doc, oldIndex: -1, newIndex: i })
      continue
    }
    const was = working[at]!
    if (at === i && sameDoc(was.doc, doc)) continue
    working.splice(at, 1)
    working.splice(i, 0, { k, doc })
    changes.push({ type: 'modified', doc, oldIndex: at, newIndex: i })
  }
  return changes
}

/** Where key `k` is in `working`, looking from `from` on (everything before `from` is already in place). */
function indexFrom(working: ReadonlyArray<{ k: string }>, k: string, from: number): number {
  for (let j = from; j < working.length; j++) if (working[j]!.k === k) return j
  return -1
}

/** Applies changes (as `diffLiveResults` makes them) to a result; throws when they do not fit it. */
export function applyLiveChanges(docs: readonly LiveDoc[], changes: readonly LiveChange[]): LiveDoc[] {
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

// ---------------------------------------------------------------- the client's side

/** A live query result as a client holds it. */
export interface LiveResultState {
  readonly key: string
  readonly docs: readonly LiveDoc[]
  readonly version: number
  readonly hash: string
}

/** The `query:snapshot` and `query:changes` frames as far as a result needs them. */
export type LiveResultFrame =
  | { readonly type: 'query:snapshot'; readonly key: string; readonly version: number; readonly hash: string; readonly docs: readonly LiveDoc[]; readonly reset?: true | undefined }
  | { readonly type: 'query:changes'; readonly version: number; readonly hash: string; readonly changes: readonly LiveChange[]; readonly prev?: number | undefined; readonly resumed?: true | undefined }

export type LiveResultStep =
  /** The new result and what changed (a snapshot lists every doc as `added`; `fromScratch` then). */
  | { readonly ok: true; readonly state: LiveResultState; readonly changes: readonly LiveChange[]; readonly fromScratch: boolean }
  /** The frame does not follow the result held (a frame was missed): subscribe again with `resumeOf(state)`. */
  | { readonly ok: false; readonly reason: string }

/**
 * What a client SDK does with each live query frame: a snapshot replaces the result, changes
 * apply to it when they follow it (`prev` is the version held; a resumed frame follows the
 * result presented with `resume`). Pure; never throws.
 */
export function applyLiveFrame(state: LiveResultState | undefined, frame: LiveResultFrame): LiveResultStep {
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
    const docs = applyLiveChanges(state.docs, frame.changes)
    return { ok: true, state: { key: state.key, docs, version: frame.version, hash: frame.hash }, changes: frame.changes, fromScratch: false }
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : 'changes do not fit the result held' }
  }
}

/** What to send as `resume` when subscribing again with the same query. */
export function resumeOf(state: LiveResultState): LiveResume {
  return { version: state.version, hash: state.hash }
}
