import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { PGlite } from '@electric-sql/pglite'
import { type ChannelRule, createHub, createMemoryStore, createTokenAuthenticator, type Hub, type MessageStore, silentLogger } from '@tidings/core'
import { createWsTransport } from '@tidings/ws'
import pg from 'pg'
import WebSocket from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createSqlStore } from '../src/index.js'
import { type PostgresServer, startPostgres } from './postgres.js'

// Hostile clients (real `ws` sockets) against a hub whose message store is the SQL store, on
// PGlite and on a real PostgreSQL server: edits and deletes of other users' messages, hostile
// offsets, deleted words that must be gone from every row of the database, full-text search with
// tsquery syntax, backslashes, NUL, 100 KB strings and Unicode (PostgreSQL's parser and the
// core's words must agree), and the per-user channel list.

let pgServer: PostgresServer
let pgUrl: string
let pglite: PGlite
beforeAll(async () => {
  pglite = new PGlite()
  pgServer = await startPostgres()
  pgUrl = await pgServer.createDatabase()
}, 60_000)
afterAll(async () => {
  await pglite?.close()
  await pgServer?.stop()
})

type Frame = Record<string, unknown>

interface Database {
  readonly name: string
  store(): MessageStore
  /** Rows of the message table holding `text` anywhere in their data (jsonb or the text kept for data jsonb refuses). */
  rowsHolding(channel: string, text: string): Promise<number>
  /**
   * Whether the database's text search folds the case of letters beyond ASCII: PostgreSQL lowers
   * with the database's LC_CTYPE, and under the C locale (the test server's) only ASCII letters.
   */
  foldsBeyondAscii(): Promise<boolean>
  close(): Promise<void>
}

const FOLDS = `SELECT to_tsvector('simple', 'É')::text = '''é'':1' AS folds`
const ROWS_HOLDING = `SELECT count(*)::int AS n FROM tidings_messages WHERE channel = $1 AND (coalesce(data::text, '') || coalesce(data_json, '')) LIKE '%' || $2 || '%'`

const databases: Database[] = [
  {
    name: 'PGlite',
    store: () => createSqlStore({ db: { pglite }, sweepIntervalMs: false }),
    rowsHolding: async (channel, text) => (await pglite.query<{ n: number }>(ROWS_HOLDING, [channel, text])).rows[0]!.n,
    foldsBeyondAscii: async () => (await pglite.query<{ folds: boolean }>(FOLDS)).rows[0]!.folds,
    close: async () => {},
  },
  (() => {
    let pool: pg.Pool | undefined
    const query = async <T extends pg.QueryResultRow>(text: string, values: unknown[] = []) => {
      pool ??= new pg.Pool({ connectionString: pgUrl, max: 1 })
      return (await pool.query<T>(text, values)).rows
    }
    return {
      name: 'PostgreSQL',
      store: () => createSqlStore({ db: { postgres: pgUrl }, sweepIntervalMs: false }),
      rowsHolding: async (channel: string, text: string) => (await query<{ n: number }>(ROWS_HOLDING, [channel, text]))[0]!.n,
      foldsBeyondAscii: async () => (await query<{ folds: boolean }>(FOLDS))[0]!.folds,
      close: async () => {
        await pool?.end()
      },
    }
  })(),
]

interface Served {
  hub: Hub
  store: MessageStore
  port: number
  members: Set<string>
  reports: Array<{ stage: string; error: unknown }>
}

const teamRule = (members: Set<string>): ChannelRule => (ctx) => ctx.identity.userId !== undefined && members.has(ctx.identity.userId)

async function serve(db: Database, closers: Array<() => Promise<unknown>>): Promise<Served> {
  const store = db.store()
  const members = new Set(['ada', 'bob'])
  const reports: Served['reports'] = []
  const hub = createHub({
    logger: silentLogger,
    store,
    authenticate: createTokenAuthenticator({ 'tok-ada': { userId: 'ada' }, 'tok-bob': { userId: 'bob' }, 'tok-eve': { userId: 'eve' } }),
    onError: (error, context) => reports.push({ stage: context.stage, error }),
    limits: { messagesPerSecond: 10_000 },
    channels: {
      'chat:*': { subscribe: 'authenticated', publish: 'authenticated', revisions: 'own', maxMessageSize: 2_000, history: { maxCount: 10_000, maxAgeMs: 3_600_000 } },
      'drop:*': { subscribe: false, publish: 'authenticated', revisions: 'own', history: { maxCount: 10_000, maxAgeMs: 3_600_000 } },
      'team:*': { subscribe: teamRule(members), publish: teamRule(members), revisions: 'own', offline: { maxMessages: 100, ttlMs: 3_600_000 } },
    },
  })
  const transport = createWsTransport(hub)
  const server: Server = createServer((_req, res) => res.writeHead(404).end())
  transport.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  closers.push(async () => {
    await hub.close()
    await (store as { close?: () => Promise<void> }).close?.()
    await new Promise((r) => (server.closeAllConnections(), server.close(r)))
  })
  return { hub, store, port: (server.address() as AddressInfo).port, members, reports }
}

let ids = 0

async function connect(s: Served, token: string, closers: Array<() => Promise<unknown>>) {
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/realtime?token=${token}`, 'tidings.v1.json')
  closers.push(async () => ws.terminate())
  const frames: Frame[] = []
  const waiters: Array<{ match: (f: Frame) => boolean; resolve: (f: Frame) => void }> = []
  ws.on('message', (data) => {
    const f = JSON.parse(String(data)) as Frame
    frames.push(f)
    for (const w of [...waiters]) {
      if (w.match(f)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(f)
      }
    }
  })
  const next = (match: (f: Frame) => boolean, ms = 10_000) => {
    const seen = frames.find(match)
    if (seen) return Promise.resolve(seen)
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching frame within ${ms} ms; last frames: ${JSON.stringify(frames.slice(-5))}`)), ms)
      waiters.push({ match, resolve: (f) => (clearTimeout(timer), resolve(f)) })
    })
  }
  await next((f) => f.type === 'connected')
  const request = (frame: Frame) => {
    const id = frame.id ?? ++ids
    ws.send(JSON.stringify({ ...frame, id }))
    return next((f) => f.id === id && f.type !== 'message')
  }
  const publish = async (channel: string, data: unknown) => {
    const r = await request({ type: 'message', channel, event: 'note', data })
    expect(r, JSON.stringify(r)).toMatchObject({ type: 'published' })
    return r.offset as number
  }
  const search = async (channel: string, query: string, extra: Frame = {}) => {
    const r = await request({ type: 'search', channel, query, ...extra })
    expect(r, JSON.stringify(r).slice(0, 300)).toMatchObject({ type: 'search' })
    return (r.messages as Frame[]).map((m) => m.offset as number)
  }
  return { ws, frames, next, request, publish, search }
}

const expectError = (f: Frame, code: string, label = '') => expect(f, `${label} ${JSON.stringify(f)}`).toMatchObject({ type: 'error', code })

let channels = 0
/** A channel name of its own for each test (the database outlives the tests of a describe). */
const fresh = (prefix: string) => `${prefix}:h${++channels}`

describe.each(databases)('hostile revisions, search and channel lists on $name', (db) => {
  const closers: Array<() => Promise<unknown>> = []
  afterAll(async () => {
    for (const c of closers.splice(0).reverse()) await c().catch(() => undefined)
    await db.close()
  })

  it('someone else’s message (also deleted, also a revision event, also on a channel one may not read), hostile offsets: RT_003 / RT_004 / RT_007, nothing changes in the database', async () => {
    const s = await serve(db, closers)
    const ada = await connect(s, 'tok-ada', closers)
    const eve = await connect(s, 'tok-eve', closers)
    for (const channel of [fresh('chat'), fresh('drop')]) {
      const kept = await ada.publish(channel, { text: 'ada keeps this' })
      const gone = await ada.publish(channel, { text: 'ada deleted this' })
      const edit = await ada.request({ type: 'edit', channel, offset: kept, data: { text: 'ada edited this' } })
      expect(edit).toMatchObject({ type: 'revised', version: 2 })
      expect(await ada.request({ type: 'delete', channel, offset: gone })).toMatchObject({ type: 'revised', deleted: true })
      const before = (await s.hub.channel(channel).history({ after: 0 })).messages
      for (const offset of [kept, gone, edit.revision as number]) {
        expectError(await eve.request({ type: 'edit', channel, offset, data: { text: 'pwned' } }), 'RT_003', `${channel} ${offset}`)
        expectError(await eve.request({ type: 'delete', channel, offset }), 'RT_003', `${channel} ${offset}`)
      }
      for (const offset of [0, -1, 1.5, '1', 2 ** 53, 2 ** 53 + 2, null]) expectError(await ada.request({ type: 'delete', channel, offset }), 'RT_007', `offset ${String(offset)}`)
      for (const offset of [999, Number.MAX_SAFE_INTEGER]) expectError(await ada.request({ type: 'edit', channel, offset, data: { text: 'x' } }), 'RT_004', `offset ${offset}`)
      expectError(await ada.request({ type: 'edit', channel, offset: edit.revision, data: { text: 'x' } }), 'RT_007', 'her own revision event')
      expectError(await ada.request({ type: 'edit', channel, offset: gone, data: { text: 'x' } }), 'RT_004', 'deleted')
      expect((await s.hub.channel(channel).history({ after: 0 })).messages).toEqual(before)
      expect(await db.rowsHolding(channel, 'pwned')).toBe(0)
    }
    expect(s.reports).toEqual([])
  })

  it('a deleted message’s words are in no row of the database: not its own, not its earlier edit events (data kept as jsonb or, with a NUL, as text), and no search finds them', async () => {
    const s = await serve(db, closers)
    const ada = await connect(s, 'tok-ada', closers)
    const bob = await connect(s, 'tok-bob', closers)
    const channel = fresh('chat')
    const m = await ada.publish(channel, { text: 'first aardvark' })
    await ada.request({ type: 'edit', channel, offset: m, data: { text: 'second bandicoot' } })
    // jsonb refuses a NUL in a string: the store keeps such data as text
    await ada.request({ type: 'edit', channel, offset: m, data: { text: 'third\u0000capybara', nested: ['dromedary'] } })
    await bob.publish(channel, { text: 'bob says echidna' })
    // (the first words are gone with the first edit: no row held them but the message's own)
    expect(await db.rowsHolding(channel, 'aardvark')).toBe(0)
    for (const word of ['bandicoot', 'capybara', 'dromedary']) expect(await db.rowsHolding(channel, word), word).toBeGreaterThan(0)
    expect(await ada.request({ type: 'delete', channel, offset: m })).toMatchObject({ type: 'revised', deleted: true, version: 4 })
    for (const word of ['aardvark', 'bandicoot', 'capybara', 'dromedary']) {
      expect(await db.rowsHolding(channel, word), word).toBe(0)
      expect(await bob.search(channel, word), word).toEqual([])
    }
    expect(await bob.search(channel, 'echidna')).toHaveLength(1)
    const history = await bob.request({ type: 'history', channel })
    expect(JSON.stringify(history)).not.toMatch(/aardvark|bandicoot|capybara|dromedary/)
    expect(s.reports).toEqual([])
  })

  it('search frames with tsquery syntax, backslashes, NUL, quotes and Unicode are plain words: no operator, no database error; hostile limits are RT_007', async () => {
    const s = await serve(db, closers)
    const ada = await connect(s, 'tok-ada', closers)
    const channel = fresh('chat')
    const plain = await ada.publish(channel, { text: 'alpha beta gamma' })
    const ops = await ada.publish(channel, { text: "a & b | c ! d :* (e) <-> f \\ g ' h" })
    const uni = await ada.publish(channel, { text: 'école ünïcödé 日本語テキスト नमस्ते' })
    const upper = await ada.publish(channel, { text: 'GROßE ÉCOLE' })
    const accented = await ada.publish(channel, { text: 'un caf\u00e9 noir' })
    for (const q of ['&', '|', '!', ':*', '()', '<->', '\\', "'", '"', '\u0000', '!!!', "' OR 1=1 --", 'x:*', 'alpha:*', '!alpha & beta']) {
      const found = await ada.search(channel, q)
      // never more than the plain words of the query find
      if (/[a-z]/.test(q)) expect(found, q).toEqual(q.includes('alpha') ? [plain] : [])
      else expect(found, q).toEqual([])
    }
    expect(await ada.search(channel, 'A & B')).toEqual([ops])
    expect(await ada.search(channel, 'g\\h')).toEqual([ops])
    expect(await ada.search(channel, 'alpha\u0000gamma')).toEqual([plain])
    expect(await ada.search(channel, '"beta" -gamma')).toEqual([plain])
    // any case (beyond ASCII where the database's locale folds it), any script; a word with vowel
    // signs (combining marks) is one word
    expect(await ada.search(channel, 'École ÜNÏCÖDÉ')).toEqual([uni])
    // upper case beyond ASCII in the data is folded by the database only where its locale does
    const folds = await db.foldsBeyondAscii()
    expect(await ada.search(channel, 'école')).toEqual(folds ? [upper, uni] : [uni])
    expect(await ada.search(channel, '日本語テキスト')).toEqual([uni])
    expect(await ada.search(channel, 'नमस्ते')).toEqual([uni])
    // a decomposed query finds the composed word
    expect(await ada.search(channel, 'cafe\u0301')).toEqual([accented])
    expect(await ada.search(channel, 'caf\u00e9')).toEqual([accented])
    for (const [label, extra] of [['limit 0', { limit: 0 }], ['limit 101', { limit: 101 }], ['before 0', { before: 0 }], ['before 2^53', { before: 2 ** 53 }], ['257 characters', { query: 'a'.repeat(257) }], ['100 KB', { query: 'w '.repeat(50_000) }]] as const) {
      expectError(await ada.request({ type: 'search', channel, query: 'alpha', ...extra }), 'RT_007', label)
    }
    expect(s.reports).toEqual([])
  })

  it('channel lists: a revoked channel is left out and takes no place in the limit; a user id with a NUL is RT_007, not a database error', async () => {
    const s = await serve(db, closers)
    const bob = await connect(s, 'tok-bob', closers)
    const team: string[] = []
    for (let i = 0; i < 6; i++) team.push(fresh('team'))
    const chat = fresh('chat')
    await s.hub.publish(chat, 'note', { text: 'x' })
    await s.store.commit(chat, 'bob', 0)
    await new Promise((r) => setTimeout(r, 5))
    for (const name of team) {
      await s.hub.publish(name, 'note', { text: 'x' })
      await s.store.commit(name, 'bob', 0)
    }
    const names = async (limit: number) => ((await bob.request({ type: 'channels', limit })).channels as Frame[]).map((c) => c.name)
    expect(await names(2)).toHaveLength(2)
    s.members.delete('bob')
    expect(await names(1)).toEqual([chat])
    expect(await names(500)).toEqual([chat])
    await expect(s.hub.channels.forUser('bob\u0000')).rejects.toMatchObject({ code: 'RT_007' })
    expect(await s.hub.channels.forUser('bob\ud800')).toEqual([])
    expect(s.reports).toEqual([])
  })
  it('the store’s own search takes hostile input from server code without a database error (a word too long to index, lone surrogates, NaN and negative bounds, 100 KB of distinct words)', async () => {
    const s = await serve(db, closers)
    const channel = fresh('chat')
    await s.hub.publish(channel, 'note', { text: 'hello world' })
    const search = (query: string, o: { limit?: number; before?: number } = {}) => s.store.search!(channel, query, { limit: 10, ...o, now: Date.now() })
    // a word longer than PostgreSQL indexes (2,047 bytes): no error (the database ignores it)
    await expect(search(`hello ${'x'.repeat(3_000)}`)).resolves.toBeInstanceOf(Array)
    expect((await search('hello & | ! :* ( ) \\ \u0000 \ud800 \udfff world')).map((m) => m.offset)).toEqual([1])
    expect((await search('hello', { before: Number.NaN })).map((m) => m.offset)).toEqual([1])
    expect(await search('hello', { before: -5 })).toEqual([])
    expect((await search('hello', { before: 2 ** 60 })).map((m) => m.offset)).toEqual([1])
    expect(await search('hello', { limit: Number.NaN })).toEqual([])
    expect(await search('hello', { limit: -1 })).toEqual([])
    // the words agree with the memory store's on the same data
    const memory = createMemoryStore()
    const folds = await db.foldsBeyondAscii()
    const texts = [folds ? 'ÉCOLE primaire' : 'école primaire', 'नमस्ते दुनिया', 'caf\u00e9 crème', 'plain words here', 'Straße und STRASSE']
    for (const text of texts) {
      await s.hub.publish(channel, 'note', { text })
      memory.append(channel, { id: text, event: 'note', data: { text }, timestamp: Date.now() }, { retention: { maxCount: 100, maxAgeMs: 3_600_000, maxBytes: 1_000_000 }, now: Date.now() })
    }
    for (const q of ['ÉCOLE', 'नमस्ते', 'दुनिया', 'cafe\u0301 CRÈME', 'words plain', 'straße', 'PRIMAIRE']) {
      const sql = (await search(q)).map((m) => (m.data as { text: string }).text)
      const mem = memory.search(channel, q, { limit: 10, now: Date.now() }).map((m) => (m.data as { text: string }).text)
      expect(sql, q).toEqual(mem)
      expect(sql.length, q).toBe(1)
    }
    // 100 KB of distinct words: refused before PostgreSQL's tsquery size limit (a query of 1,000 still runs)
    await expect(search(Array.from({ length: 15_000 }, (_, i) => `w${i}`).join(' '))).rejects.toMatchObject({ code: 'RT_007' })
    expect(await search(Array.from({ length: 1_000 }, (_, i) => `w${i}`).join(' '))).toEqual([])
  })
})
