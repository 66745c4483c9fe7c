import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { Kysely, SqliteDialect, sql } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { createSqliteStore, migrateSqlite } from '../src/sqlite/index.js'

const dir = mkdtempSync(join(tmpdir(), 'tidings-sqlite-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let files = 0
const freshFile = () => join(dir, `db-${++files}.sqlite`)

const T0 = Date.UTC(2026, 0, 1)
const KEEP = { maxCount: 1_000_000, maxAgeMs: 86_400_000 }
const msg = (id: string, data: unknown = { id }, extra: Record<string, unknown> = {}) => ({ id, event: 'e', data, sender: 'alice', timestamp: T0, ...extra })

describe('SQLite store on a file', () => {
  it('a store closed and reopened on its file keeps history, epochs, cursors, revisions and idempotency keys (a restart loses nothing)', async () => {
    const filename = freshFile()
    const a = createSqliteStore({ db: { filename }, sweepIntervalMs: false })
    const first = await a.append('room:1', msg('m1', { text: 'héllo 😀', nul: 'a\u0000b', big: Number.MAX_SAFE_INTEGER }), { retention: KEEP, now: T0, idempotencyKey: 'k1', dedupWindowMs: 3_600_000 })
    await a.append('room:1', msg('m2', [1, { deep: [null, true] }], { exclude: { connections: ['c1'] } }), { retention: KEEP, now: T0 + 1 })
    await a.append('room:1', msg('m3', 'three'), { retention: KEEP, now: T0 + 2 })
    await a.revise('room:1', 3, { data: { text: 'edited' } }, { now: T0 + 3 })
    await a.revise('room:1', 2, { deleted: true }, { now: T0 + 4 })
    await a.commit('room:1', 'bob', 2)
    const emptyEpoch = (await a.position('never:written')).epoch
    const before = await a.read('room:1', { after: 0, limit: 100, now: T0 + 5 })
    const stats = await a.stats()
    await a.close()

    const b = createSqliteStore({ db: { filename }, sweepIntervalMs: false })
    const after = await b.read('room:1', { after: 0, limit: 100, now: T0 + 5 })
    expect(after).toEqual(before)
    expect(after.epoch).toBe(first.epoch)
    expect(after.messages.map((m) => [m.offset, m.version, m.deleted])).toEqual([
      [1, undefined, undefined],
      [2, 2, true],
      [3, 2, undefined],
    ])
    expect(after.messages[0]?.data).toEqual({ text: 'héllo 😀', nul: 'a\u0000b', big: Number.MAX_SAFE_INTEGER })
    expect(await b.position('never:written')).toEqual({ epoch: emptyEpoch, offset: 0 })
    expect(await b.cursor('room:1', 'bob')).toEqual({ offset: 2, epoch: first.epoch })
    expect(await b.cursors('room:1')).toEqual({ bob: 2 })
    expect(await b.stats()).toEqual(stats)
    // the key still answers the first append, and offsets continue after the reopen
    const again = await b.append('room:1', msg('retry'), { retention: KEEP, now: T0 + 10, idempotencyKey: 'k1', dedupWindowMs: 3_600_000 })
    expect(again).toMatchObject({ duplicate: true, epoch: first.epoch, message: { offset: 1, id: 'm1' } })
    expect((await b.append('room:1', msg('m4'), { retention: KEEP, now: T0 + 11 })).message.offset).toBe(4)
    await b.close()
  })

  it('a file database runs in WAL mode with busy_timeout and synchronous NORMAL; with pragmas: false the connection is left as it was', async () => {
    const store = createSqliteStore({ db: { filename: freshFile() }, busyTimeoutMs: 1_234, sweepIntervalMs: false })
    await store.ready
    const one = async (q: string) => Object.values((await sql.raw<Record<string, unknown>>(q).execute(store.db)).rows[0]!)[0]
    expect(await one('PRAGMA journal_mode')).toBe('wal')
    expect(await one('PRAGMA busy_timeout')).toBe(1_234)
    expect(await one('PRAGMA synchronous')).toBe(1) // NORMAL
    await store.close()

    const raw = new Database(freshFile())
    raw.pragma('busy_timeout = 42')
    const untouched = createSqliteStore({ db: { database: raw }, pragmas: false, sweepIntervalMs: false })
    await untouched.ready
    expect(raw.pragma('journal_mode', { simple: true })).toBe('delete')
    expect(raw.pragma('busy_timeout', { simple: true })).toBe(42)
    await untouched.close()
    raw.close()
  })

  it('two stores over one file (two connections) never assign an offset twice under concurrent appends to one channel', async () => {
    const filename = freshFile()
    const a = createSqliteStore({ db: { filename }, sweepIntervalMs: false })
    const b = createSqliteStore({ db: { filename }, sweepIntervalMs: false, maxBatch: 7 })
    const appendFrom = (store: typeof a, tag: string, n: number) =>
      store.append('shared', msg(`${tag}-${n}`, { tag, n }), { retention: KEEP, now: T0 + n, ...(n % 10 === 0 ? { idempotencyKey: `${tag}-key-${n}` } : {}) })
    // interleaved callers on both stores, several waves so batches of each store overlap the other's
    const results = []
    for (let wave = 0; wave < 5; wave++) {
      results.push(...(await Promise.all(Array.from({ length: 120 }, (_, i) => appendFrom(i % 2 === 0 ? a : b, i % 2 === 0 ? 'a' : 'b', wave * 1_000 + i)))))
    }
    const offsets = results.map((r) => r.message.offset).sort((x, y) => x - y)
    expect(offsets).toEqual(Array.from({ length: 600 }, (_, i) => i + 1))
    expect(new Set(results.map((r) => r.epoch)).size).toBe(1)
    for (const store of [a, b]) {
      const r = await store.read('shared', { after: 0, limit: 1_000, now: T0 })
      expect(r.top).toBe(600)
      const byOffset = new Map(results.map((x) => [x.message.offset, x.message.id]))
      expect(r.messages.map((m) => [m.offset, m.id])).toEqual([...byOffset].sort(([x], [y]) => x - y))
    }
    await Promise.all([a.close(), b.close()])
  })

  it('two stores starting at once on a new file migrate it once (no "table already exists")', async () => {
    const filename = freshFile()
    const stores = Array.from({ length: 3 }, () => createSqliteStore({ db: { filename }, sweepIntervalMs: false }))
    await Promise.all(stores.map((s) => s.ready))
    const { rows } = await sql<{ name: string }>`SELECT name FROM tidings_migrations`.execute(stores[0]!.db)
    expect(rows.map((r) => r.name)).toEqual(['0001_store'])
    expect((await stores[1]!.append('c', msg('x'), { retention: KEEP, now: T0 })).message.offset).toBe(1)
    expect((await stores[2]!.append('c', msg('y'), { retention: KEEP, now: T0 })).message.offset).toBe(2)
    await Promise.all(stores.map((s) => s.close()))
  })
})

describe('SQLite store: databases given by the app', () => {
  it('a better-sqlite3 Database given as { database } stays open after close()', async () => {
    const raw = new Database(':memory:')
    const store = createSqliteStore({ db: { database: raw }, sweepIntervalMs: false })
    await store.append('c', msg('m1'), { retention: KEEP, now: T0 })
    await store.close()
    expect(raw.open).toBe(true)
    expect(raw.prepare('SELECT count(*) AS n FROM tidings_messages').get()).toEqual({ n: 1 })
    raw.close()
  })

  it('two stores given one in-memory Database append concurrently without one running inside the other’s transaction', async () => {
    const raw = new Database(':memory:')
    const a = createSqliteStore({ db: { database: raw }, sweepIntervalMs: false })
    const b = createSqliteStore({ db: { database: raw }, sweepIntervalMs: false, maxBatch: 3 })
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? a : b).append('one', msg(`m${i}`), { retention: KEEP, now: T0 })))
    expect(results.map((r) => r.message.offset).sort((x, y) => x - y)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1))
    expect((await b.read('one', { after: 0, limit: 100, now: T0 })).top).toBe(60)
    await a.close()
    expect((await b.position('one')).offset).toBe(60) // closing one store leaves the other working
    await b.close()
    raw.close()
  })

  it('the app’s Kysely instance is shared, never destroyed; migrate: false leaves the migrations to migrateSqlite(); tablePrefix keeps two stores apart', async () => {
    const raw = new Database(':memory:')
    const db = new Kysely<any>({ dialect: new SqliteDialect({ database: raw }) })
    await expect(createSqliteStore({ db, migrate: false, sweepIntervalMs: false }).position('c')).rejects.toThrow(/no such table/)
    await migrateSqlite(db)
    await migrateSqlite(db, { tablePrefix: 'other_' })
    const one = createSqliteStore({ db, migrate: false, sweepIntervalMs: false })
    const two = createSqliteStore({ db, migrate: false, tablePrefix: 'other_', sweepIntervalMs: false })
    await one.append('c', msg('m1'), { retention: KEEP, now: T0 })
    await one.append('c', msg('m2'), { retention: KEEP, now: T0 })
    expect((await two.append('c', msg('x'), { retention: KEEP, now: T0 })).message.offset).toBe(1)
    expect((await one.position('c')).epoch).not.toBe((await two.position('c')).epoch)
    await one.close()
    await two.close()
    expect((await sql<{ n: number }>`SELECT count(*) AS n FROM tidings_messages`.execute(db)).rows[0]!.n).toBe(2)
    await db.destroy()
  })

  it('refuses a table prefix that is not an identifier (it is spliced into DDL)', () => {
    expect(() => createSqliteStore({ db: { filename: ':memory:' }, tablePrefix: 'x; DROP TABLE y; --' })).toThrow(TypeError)
  })
})

describe('SQLite store: group commit and retention', () => {
  it('concurrent appends to one channel share transactions (group commit), each answered with its own offset in call order', async () => {
    const raw = new Database(':memory:')
    let transactions = 0
    const db = new Kysely<any>({
      dialect: new SqliteDialect({ database: raw }),
      log: (event) => {
        if (event.level === 'query' && event.query.sql === 'BEGIN IMMEDIATE') transactions++
      },
    })
    const store = createSqliteStore({ db, sweepIntervalMs: false })
    await store.ready
    transactions = 0
    const results = await Promise.all(Array.from({ length: 500 }, (_, i) => store.append('busy', msg(`m${i}`), { retention: KEEP, now: T0 })))
    expect(results.map((r) => r.message.offset)).toEqual(Array.from({ length: 500 }, (_, i) => i + 1))
    expect(results.map((r) => r.message.id)).toEqual(Array.from({ length: 500 }, (_, i) => `m${i}`))
    expect(transactions).toBeLessThanOrEqual(5)

    const one = createSqliteStore({ db, sweepIntervalMs: false, maxBatch: 1 })
    await one.ready
    transactions = 0
    await Promise.all(Array.from({ length: 20 }, (_, i) => one.append('single', msg(`s${i}`), { retention: KEEP, now: T0 })))
    expect(transactions).toBe(20)
    await store.close()
    await one.close()
    await db.destroy()
  })

  it('a malformed append fails alone, not the batch it would have joined', async () => {
    const store = createSqliteStore({ db: { filename: ':memory:' }, sweepIntervalMs: false })
    const settled = await Promise.allSettled([
      store.append('c', msg('ok1'), { retention: KEEP, now: T0 }),
      store.append('c', { id: 'bad', event: 'e', data: 1, timestamp: Number.NaN }, { retention: KEEP, now: T0 }),
      store.append('c', msg('ok2'), { retention: KEEP, now: T0 }),
    ])
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
    expect((await store.read('c', { after: 0, limit: 10, now: T0 })).messages.map((m) => m.id)).toEqual(['ok1', 'ok2'])
    await store.close()
  })

  it('rows retention dropped are deleted (the file does not grow with the channel’s history) and bytes follow', async () => {
    const store = createSqliteStore({ db: { filename: ':memory:' }, sweepIntervalMs: false })
    for (let i = 0; i < 50; i++) await store.append('c', msg(`m${i}`), { retention: { maxCount: 5, maxAgeMs: 86_400_000 }, now: T0, size: 100 })
    const { rows } = await sql<{ n: number }>`SELECT count(*) AS n FROM tidings_messages`.execute(store.db)
    expect(rows[0]!.n).toBe(5)
    expect(await store.stats()).toEqual({ channels: 1, bytes: 500, messages: 5 })
    await store.close()
  })

  it('sweep() deletes what aged out on channels nobody appends to, and idempotency keys past their retention', async () => {
    const store = createSqliteStore({ db: { filename: ':memory:' }, sweepIntervalMs: false, idempotencyRetentionMs: 10_000 })
    const retention = { maxCount: 100, maxAgeMs: 1_000 }
    await store.append('quiet', msg('m1'), { retention, now: T0, size: 10, idempotencyKey: 'k' })
    await store.append('quiet', msg('m2', undefined, { timestamp: T0 + 900 }), { retention, now: T0 + 900, size: 10 })
    expect(await store.sweep(T0 + 1_500)).toEqual({ deleted: 1, keys: 0 })
    expect(await store.stats()).toEqual({ channels: 1, bytes: 10, messages: 1 })
    expect(await store.read('quiet', { after: 0, limit: 10, now: T0 + 1_500 })).toMatchObject({ top: 2, complete: false, messages: [{ offset: 2 }] })
    expect(await store.sweep(T0 + 20_000)).toEqual({ deleted: 1, keys: 1 })
    expect((await store.position('quiet')).offset).toBe(2)
    await store.close()
  })
})

describe('SQLite store: data', () => {
  it('round-trips what JSON can carry exactly: lone surrogates, control characters, deep nesting, a 1 MB string', async () => {
    const store = createSqliteStore({ db: { filename: ':memory:' }, sweepIntervalMs: false })
    let deep: unknown = 'bottom'
    for (let i = 0; i < 200; i++) deep = { d: [deep] }
    const values = ['\ud800 lone \udfff', '\u0000\u0001\u001f\u007f\u2028\u2029', deep, 'x'.repeat(1_000_000), { '\u0000key': -1.5e-300, max: 1.7976931348623157e308 }]
    for (const [i, data] of values.entries()) await store.append('data', msg(`m${i}`, data), { retention: KEEP, now: T0 })
    const r = await store.read('data', { after: 0, limit: 100, now: T0 })
    expect(r.messages.map((m) => m.data)).toEqual(values)
    await store.close()
  })
})
