import { describe, expect, it } from 'vitest'
import {
  type LiveChange,
  type LiveDoc,
  type LiveQueryContext,
  type LiveQueryProvider,
  type LiveQueryUpdate,
  type LiveResume,
  type NormalizedLiveQuery,
  type ServerFrame,
  RealtimeError,
  createTokenAuthenticator,
} from '@tidings/core'
import { type MemoryClient, type TestHub, createTestHub } from '@tidings/core/testing'

// The hub side of live queries, over a scripted provider: the subscription lifecycle, the order
// of frames, refusals, the end of a query on every path, and slow consumers.

interface Opened {
  readonly ctx: LiveQueryContext
  readonly query: NormalizedLiveQuery
  readonly emit: (u: LiveQueryUpdate) => void
  readonly resume: LiveResume | undefined
  closed: number
}

function scripted(options: { refuse?: (q: NormalizedLiveQuery) => RealtimeError | undefined; gate?: Promise<void>; docs?: LiveDoc[] } = {}) {
  const opened: Opened[] = []
  let gate = options.gate
  const provider: LiveQueryProvider = {
    async open(ctx, query, emit, resume) {
      const refusal = options.refuse?.(query)
      if (refusal) throw refusal
      const rec: Opened = { ctx, query, emit, resume, closed: 0 }
      opened.push(rec)
      if (gate) await gate
      const resumed: LiveChange[] | undefined = resume?.hash === 'known' ? [{ type: 'added', doc: { id: 'z' }, oldIndex: -1, newIndex: 0 }] : undefined
      return {
        key: 'id',
        version: 5,
        hash: 'h5',
        docs: resumed ? [] : (options.docs ?? [{ id: 'a' }]),
        resumed,
        close() {
          rec.closed++
        },
      }
    },
  }
  return { provider, opened, ungate: () => (gate = undefined) }
}

const frames = (c: MemoryClient, channel: string) => c.frames.filter((f) => 'channel' in f && f.channel === channel && f.type !== 'error')
const types = (c: MemoryClient, channel: string) => frames(c, channel).map((f) => f.type)
const upd = (version: number, id: string): LiveQueryUpdate => ({ version, hash: `h${version}`, changes: [{ type: 'added', doc: { id }, oldIndex: -1, newIndex: 0 }] })

async function refused(c: MemoryClient, frame: Record<string, unknown>): Promise<RealtimeError> {
  const err = await c.request(frame as never).then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(RealtimeError)
  return err as RealtimeError
}

describe('live queries in the hub', () => {
  it('a subscribe with a query gets subscribed, then the snapshot, then each update in version order; an update older than the snapshot is dropped', async () => {
    let release!: () => void
    const s = scripted({ gate: new Promise<void>((r) => (release = r)) })
    await using t = createTestHub({ liveQueries: s.provider })
    const c = await t.connect({ userId: 'ada' })
    const reply = c.request({ type: 'subscribe', channel: 'db:collection:messages', query: { where: [['roomId', '==', 'r1']], limit: 10 } } as never)
    await t.settle()
    const o = s.opened[0]!
    expect(o.ctx).toMatchObject({ collection: 'messages', channel: 'db:collection:messages', identity: { userId: 'ada' } })
    expect(o.query).toEqual({ where: ['roomId', '==', 'r1'], orderBy: [], limit: 10, startAfter: null })
    // Updates before the first result is out wait for it; one not newer than it is dropped.
    o.emit(upd(4, 'old'))
    o.emit(upd(6, 'b'))
    release()
    await reply
    await t.settle()
    o.emit(upd(7, 'c'))
    await t.settle()
    expect(types(c, 'db:collection:messages')).toEqual(['subscribed', 'query:snapshot', 'query:changes', 'query:changes'])
    const [, snap, u6, u7] = frames(c, 'db:collection:messages') as ServerFrame[]
    expect(snap).toMatchObject({ type: 'query:snapshot', key: 'id', version: 5, hash: 'h5', docs: [{ id: 'a' }] })
    expect(snap).not.toHaveProperty('reset')
    expect(u6).toMatchObject({ version: 6, prev: 5, changes: [{ doc: { id: 'b' } }] })
    expect(u7).toMatchObject({ version: 7, prev: 6, changes: [{ doc: { id: 'c' } }] })
  })

  it('one connection follows two queries on one collection under tagged names; each ends on its own', async () => {
    const s = scripted()
    await using t = createTestHub({ liveQueries: s.provider })
    const c = await t.connect({ userId: 'ada' })
    await c.request({ type: 'subscribe', channel: 'db:collection:messages:inbox', query: { limit: 5 } } as never)
    await c.request({ type: 'subscribe', channel: 'db:collection:messages:sent', query: { limit: 6 } } as never)
    expect(s.opened.map((o) => [o.ctx.collection, o.query.limit])).toEqual([['messages', 5], ['messages', 6]])
    await c.unsubscribe('db:collection:messages:inbox')
    expect(s.opened.map((o) => o.closed)).toEqual([1, 0])
    s.opened[0]!.emit(upd(9, 'late'))
    s.opened[1]!.emit(upd(9, 'x'))
    await t.settle()
    expect(types(c, 'db:collection:messages:inbox')).toEqual(['subscribed', 'query:snapshot', 'unsubscribed'])
    expect(types(c, 'db:collection:messages:sent')).toEqual(['subscribed', 'query:snapshot', 'query:changes'])
    // Closing the hub ends the queries still open.
    await t.close()
    expect(s.opened.map((o) => o.closed)).toEqual([1, 1])
  })

  it('the query ends exactly once when the connection closes, when a kick ends the subscription, and when the provider refuses', async () => {
    const s = scripted({ refuse: (q) => (q.limit === 999 ? new RealtimeError('RT_007', "limit 999 is over the maximum of 500 for 'messages'") : undefined) })
    await using t = createTestHub({ liveQueries: s.provider })
    const a = await t.connect({ userId: 'ada' })
    const b = await t.connect({ userId: 'bob' })
    await a.request({ type: 'subscribe', channel: 'db:collection:messages', query: {} } as never)
    await b.request({ type: 'subscribe', channel: 'db:collection:messages', query: {} } as never)
    a.close()
    await t.settle()
    expect(s.opened[0]!.closed).toBe(1)
    expect(await t.hub.channel('db:collection:messages').kick('bob')).toBe(1)
    await t.settle()
    expect(s.opened[1]!.closed).toBe(1)
    expect(t.hub.channels.list()).toEqual([])
    const err = await refused(b, { type: 'subscribe', channel: 'db:collection:messages', query: { limit: 999 } })
    expect(err.code).toBe('RT_007')
    expect(err.message).toMatch(/limit 999/)
    expect(t.hub.channels.list()).toEqual([])
    expect(s.opened.every((o) => o.closed === 1)).toBe(true)
  })

  it('a repeated subscribe replaces the query (new snapshot, old query closed); a refused replacement keeps the current query', async () => {
    const s = scripted({ refuse: (q) => (q.limit === 999 ? new RealtimeError('RT_007', 'too large') : undefined) })
    await using t = createTestHub({ liveQueries: s.provider })
    const c = await t.connect({ userId: 'ada' })
    const ch = 'db:collection:messages'
    await c.request({ type: 'subscribe', channel: ch, query: { limit: 1 } } as never)
    await c.request({ type: 'subscribe', channel: ch, query: { limit: 2 } } as never)
    await t.settle()
    expect(s.opened.map((o) => o.closed)).toEqual([1, 0])
    s.opened[0]!.emit(upd(10, 'from-old'))
    expect((await refused(c, { type: 'subscribe', channel: ch, query: { limit: 999 } })).code).toBe('RT_007')
    s.opened[1]!.emit(upd(11, 'from-new'))
    await t.settle()
    expect(types(c, ch)).toEqual(['subscribed', 'query:snapshot', 'subscribed', 'query:snapshot', 'query:changes'])
    expect(frames(c, ch).at(-1)).toMatchObject({ version: 11, changes: [{ doc: { id: 'from-new' } }] })
  })

  it('resume: a result the provider still has comes as resumed changes, one it lost as a snapshot flagged reset', async () => {
    const s = scripted()
    await using t = createTestHub({ liveQueries: s.provider })
    const c = await t.connect({ userId: 'ada' })
    await c.request({ type: 'subscribe', channel: 'db:collection:a', query: {}, resume: { version: 3, hash: 'known' } } as never)
    await c.request({ type: 'subscribe', channel: 'db:collection:b', query: {}, resume: { version: 3, hash: 'lost' } } as never)
    await t.settle()
    expect(s.opened[0]!.resume).toEqual({ version: 3, hash: 'known' })
    expect(frames(c, 'db:collection:a')[1]).toEqual({ type: 'query:changes', channel: 'db:collection:a', version: 5, hash: 'h5', changes: [{ type: 'added', doc: { id: 'z' }, oldIndex: -1, newIndex: 0 }], resumed: true })
    expect(frames(c, 'db:collection:b')[1]).toMatchObject({ type: 'query:snapshot', reset: true, docs: [{ id: 'a' }] })
  })

  it('refusals: no provider RT_004, no query RT_007, a query on an ordinary channel RT_007, the channel rule RT_003, publishes and history RT_004 while a query is live', async () => {
    await using bare = createTestHub()
    const x = await bare.connect({ userId: 'ada' })
    expect((await refused(x, { type: 'subscribe', channel: 'db:collection:m', query: {} })).code).toBe('RT_004')
    const s = scripted()
    await using t = createTestHub({ liveQueries: s.provider })
    const c = await t.connect({ userId: 'ada' })
    const none = await refused(c, { type: 'subscribe', channel: 'db:collection:m' })
    expect([none.code, none.message]).toEqual(['RT_007', "'db:collection:m' is a live query channel: subscribe with a query"])
    expect((await refused(c, { type: 'subscribe', channel: 'public:news', query: {} })).code).toBe('RT_007')
    expect((await refused(c, { type: 'subscribe', channel: 'db:collection:m', query: {}, filter: { field: 'event', op: 'eq', value: 'x' } })).code).toBe('RT_007')
    expect((await refused(c, { type: 'subscribe', channel: 'db:collection:m', query: { where: [['a', 'LIKE', 'x']] } })).code).toBe('RT_007')
    const anon = await t.connect()
    expect((await refused(anon, { type: 'subscribe', channel: 'db:collection:m', query: {} })).code).toBe('RT_003')
    expect(s.opened).toHaveLength(0)
    await c.request({ type: 'subscribe', channel: 'db:collection:m', query: {} } as never)
    expect((await refused(c, { type: 'message', channel: 'db:collection:m', event: 'e', data: 1 })).code).toBe('RT_004')
    await expect(t.hub.publish('db:collection:m', 'e', 1)).rejects.toMatchObject({ code: 'RT_004' })
    await expect(t.hub.channel('db:collection:m').history()).rejects.toMatchObject({ code: 'RT_004' })
  })

  it('live queries count against the subscription limit', async () => {
    const s = scripted()
    await using t = createTestHub({ liveQueries: s.provider, limits: { maxSubscriptions: 2 } })
    const c = await t.connect({ userId: 'ada' })
    await c.request({ type: 'subscribe', channel: 'db:collection:m:1', query: {} } as never)
    await c.request({ type: 'subscribe', channel: 'db:collection:m:2', query: {} } as never)
    expect((await refused(c, { type: 'subscribe', channel: 'db:collection:m:3', query: {} })).code).toBe('RT_006')
    expect(s.opened).toHaveLength(2)
  })

  it('a client that stops reading its live query updates is a slow consumer (4009), and its query ends', async () => {
    const s = scripted()
    await using t = createTestHub({ liveQueries: s.provider, limits: { maxQueuedBytes: 4_000, highWaterMark: 500 } }) as TestHub
    const c = await t.connect({ userId: 'ada' })
    await c.request({ type: 'subscribe', channel: 'db:collection:m', query: {} } as never)
    c.pause()
    const big = 'x'.repeat(300)
    for (let v = 6; v < 60 && !c.closed; v++) {
      s.opened[0]!.emit({ version: v, hash: `h${v}`, changes: [{ type: 'added', doc: { id: String(v), big }, oldIndex: -1, newIndex: 0 }] })
      await t.settle()
    }
    expect(c.closeCode).toBe(4009)
    expect(s.opened[0]!.closed).toBe(1)
  })

  it('a refreshed identity (auth frame) reopens the query for it: the row rule sees new roles, same scope sends nothing, a refusing rule revokes', async () => {
    const opened: Array<{ roles: readonly string[]; closed: number }> = []
    const provider: LiveQueryProvider = {
      open(ctx, _query, _emit, resume) {
        const roles = ctx.identity.roles ?? []
        if (roles.includes('banned')) throw new RealtimeError('RT_003', "not allowed to read 'm'")
        const admin = roles.includes('admin')
        const docs = admin ? [{ id: 'a' }, { id: 'secret' }] : [{ id: 'a' }]
        const hash = admin ? 'hA' : 'h1'
        const rec = { roles, closed: 0 }
        opened.push(rec)
        const resumed: LiveChange[] | undefined =
          resume === undefined ? undefined : resume.hash === hash ? [] : resume.hash === 'h1' && admin ? [{ type: 'added', doc: { id: 'secret' }, oldIndex: -1, newIndex: 1 }] : undefined
        return { key: 'id', version: opened.length, hash, docs: resumed ? [] : docs, resumed, close: () => void rec.closed++ }
      },
    }
    await using t = createTestHub({
      liveQueries: provider,
      authenticate: createTokenAuthenticator({ t1: { userId: 'ada' }, t2: { userId: 'ada', roles: ['admin'] }, t3: { userId: 'ada', roles: ['admin'] }, t4: { userId: 'ada', roles: ['banned'] } }),
    })
    const c = await t.connect({ token: 't1' })
    const ch = 'db:collection:m'
    await c.request({ type: 'subscribe', channel: ch, query: {} } as never)
    await c.request({ type: 'auth', token: 't2' } as never)
    await t.settle()
    expect(opened.map((o) => [o.roles, o.closed])).toEqual([[[], 1], [['admin'], 0]])
    expect(frames(c, ch).at(-1)).toMatchObject({ type: 'query:changes', resumed: true, hash: 'hA', changes: [{ type: 'added', doc: { id: 'secret' } }] })
    const before = frames(c, ch).length
    await c.request({ type: 'auth', token: 't3' } as never)
    await t.settle()
    expect(opened).toHaveLength(3)
    expect(frames(c, ch)).toHaveLength(before)
    await c.request({ type: 'auth', token: 't4' } as never)
    await t.settle()
    expect(frames(c, ch).at(-1)).toMatchObject({ type: 'unsubscribed', reason: 'revoked' })
    expect(opened.every((o) => o.closed === 1)).toBe(true)
    expect(t.hub.channels.list()).toEqual([])
  })
})
