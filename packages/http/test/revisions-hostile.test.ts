import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type ChannelRule, createHub, createMemoryStore, createTokenAuthenticator, type Hub, type HubOptions, type MemoryMessageStore, type MessageStore, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import WebSocket from 'ws'
import { z } from 'zod'
import { afterEach, describe, expect, it } from 'vitest'

// Message revisions (edit/delete frames and the admin routes), history search and per-user
// channel lists attacked by hostile clients over real WebSockets and a hostile admin-API caller
// over real HTTP, against the memory store. Every attack must be answered with a clear RT_00x
// error or HTTP status, change nothing, leak nothing of another user's, and leave the server
// serving everyone else.

const KEY = 'admin-secret-0123456789'
const READER_KEY = 'reader-secret-0123456789'
const PUBLISHER_KEY = 'publisher-secret-0123456789'
/** A long user id (a hashed or e-mail id): its `sender` field makes a revision event longer. */
const LONG_USER = `user-${'0123456789abcdef'.repeat(6)}`

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

type Frame = Record<string, unknown>

interface Served {
  base: string
  port: number
  hub: Hub
  store: MemoryMessageStore
  /** The users `team:*` admits now (a revocable membership). */
  members: Set<string>
  /** Errors the hub reported (revision.publish, frame:receive, …): none are expected. */
  reports: Array<{ stage: string; error: unknown }>
}

/** `team:*`: members only, decided by the app on every request (membership can be revoked). */
const teamRule = (members: Set<string>): ChannelRule => (ctx) => ctx.identity.userId !== undefined && members.has(ctx.identity.userId)

async function serve(o: { limits?: HubOptions['limits']; store?: (s: MemoryMessageStore) => MessageStore } = {}): Promise<Served> {
  const store = createMemoryStore()
  const members = new Set(['ada', 'bob'])
  const reports: Served['reports'] = []
  const hub = createHub({
    logger: silentLogger,
    store: o.store ? o.store(store) : store,
    allowAnonymous: true,
    authenticate: createTokenAuthenticator({ 'tok-ada': { userId: 'ada' }, 'tok-bob': { userId: 'bob' }, 'tok-eve': { userId: 'eve' }, 'tok-long': { userId: LONG_USER } }),
    onError: (error, context) => reports.push({ stage: context.stage, error }),
    ...(o.limits ? { limits: o.limits } : {}),
    channels: {
      'chat:*': { subscribe: 'authenticated', publish: 'authenticated', revisions: 'own', maxMessageSize: 600, events: { note: z.object({ text: z.string() }) }, history: { maxCount: 10_000 } },
      'plain:*': { subscribe: 'authenticated', publish: 'authenticated' },
      'nohist:*': { subscribe: 'authenticated', publish: 'authenticated', revisions: 'own', history: false },
      // A write-only box: anyone may drop a message (and edit its own), nobody may read.
      'drop:*': { subscribe: false, publish: 'authenticated', revisions: 'own' },
      'team:*': { subscribe: teamRule(members), publish: teamRule(members), revisions: 'own', offline: { maxMessages: 100, ttlMs: 3_600_000 } },
      'alo:*': { subscribe: 'authenticated', publish: 'authenticated', revisions: 'own', delivery: 'at-least-once', maxMessageSize: 700 },
      'secret:*': { subscribe: 'authenticated', publish: 'authenticated', revisions: 'own', encrypted: true },
    },
  })
  cleanups.push(() => hub.close())
  const rt = createRealtime({
    hub,
    apiKey: KEY,
    apiKeys: { reader: { key: READER_KEY, scopes: ['read'] }, publisher: { key: PUBLISHER_KEY, scopes: ['publish'] } },
    maxBodyBytes: 16 * 1024,
  })
  cleanups.push(() => rt.close())
  const server = createServer()
  rt.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => new Promise((r) => (server.closeAllConnections(), server.close(r))))
  const port = (server.address() as AddressInfo).port
  return { base: `http://127.0.0.1:${port}/realtime`, port, hub, store, members, reports }
}

interface Client {
  ws: WebSocket
  frames: Frame[]
  next(match: (f: Frame) => boolean, ms?: number): Promise<Frame>
  /** Sends a frame (an id is added when it has none) and waits for the answer with that id. */
  request(frame: Frame): Promise<Frame>
  /** Sends text as it is (not JSON-encoded by the test) and waits for the answer with `id`. */
  raw(text: string, id: number | string): Promise<Frame>
  send(frame: Frame): void
}

let ids = 0

async function connect(s: Served, token?: string): Promise<Client> {
  const ws = new WebSocket(`${s.base.replace('http', 'ws')}${token ? `?token=${token}` : ''}`, 'tidings.v1.json')
  cleanups.push(() => ws.terminate())
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
  const next = (match: (f: Frame) => boolean, ms = 5_000) => {
    const seen = frames.find(match)
    if (seen) return Promise.resolve(seen)
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching frame within ${ms} ms; last frames: ${JSON.stringify(frames.slice(-5))}`)), ms)
      waiters.push({ match, resolve: (f) => (clearTimeout(timer), resolve(f)) })
    })
  }
  const answerTo = (id: unknown) => next((f) => f.id === id && f.type !== 'message')
  await next((f) => f.type === 'connected')
  return {
    ws,
    frames,
    next,
    send: (frame) => ws.send(JSON.stringify(frame)),
    request: (frame) => {
      const id = frame.id ?? ++ids
      ws.send(JSON.stringify({ ...frame, id }))
      return answerTo(id)
    },
    raw: (text, id) => {
      ws.send(text)
      return answerTo(id)
    },
  }
}

async function subscribe(c: Client, channel: string): Promise<void> {
  expect(await c.request({ type: 'subscribe', channel })).toMatchObject({ type: 'subscribed', channel })
}

/** A client publish, answered `published` with its offset. */
async function publish(c: Client, channel: string, data: unknown, event = 'note'): Promise<number> {
  const r = await c.request({ type: 'message', channel, event, data })
  expect(r, JSON.stringify(r)).toMatchObject({ type: 'published' })
  return r.offset as number
}

async function log(s: Served, channel: string) {
  return (await s.hub.channel(channel).history({ after: 0, limit: 1000 })).messages
}

/** The channel's log as offset → [data, version, deleted]: what must not change under a refused attack. */
async function snapshot(s: Served, channel: string) {
  return (await log(s, channel)).map((m) => [m.offset, m.data, m.version, m.deleted, m.revises])
}

/** Other clients keep working: bob publishes on a fresh channel and ada, subscribed, receives it. */
async function stillServing(s: Served): Promise<void> {
  const ada = await connect(s, 'tok-ada')
  const bob = await connect(s, 'tok-bob')
  const channel = `chat:alive-${++ids}`
  await subscribe(ada, channel)
  const offset = await publish(bob, channel, { text: 'still here' })
  expect(await ada.next((f) => f.type === 'message' && f.channel === channel)).toMatchObject({ offset, data: { text: 'still here' } })
  expect(await bob.request({ type: 'ping' })).toMatchObject({ type: 'pong' })
}

const expectError = (f: Frame, code: string, label = '') => expect(f, `${label} ${JSON.stringify(f)}`).toMatchObject({ type: 'error', code })

// ------------------------------------------------------------------------------------------

describe('hostile edit and delete frames', () => {
  it('someone else’s message, anonymous, a channel without revisions, without history, unknown: RT_003 / RT_004, and nothing changes', async () => {
    const s = await serve()
    const ada = await connect(s, 'tok-ada')
    const eve = await connect(s, 'tok-eve')
    const anon = await connect(s)
    const bob = await connect(s, 'tok-bob')
    await subscribe(bob, 'chat:1')
    const mine = await publish(ada, 'chat:1', { text: 'ada wrote this' })
    const server = (await s.hub.publish('chat:1', 'note', { text: 'from the server' })).offset!
    const asAda = (await s.hub.publish('chat:1', 'note', { text: 'server, as ada' }, { sender: 'ada' })).offset!
    await publish(ada, 'plain:1', { text: 'no revisions here' })
    const before = await snapshot(s, 'chat:1')

    for (const [who, c, channel, offset, code] of [
      ['eve edits ada’s', eve, 'chat:1', mine, 'RT_003'],
      ['eve edits the server’s', eve, 'chat:1', server, 'RT_003'],
      ['eve edits one sent as ada', eve, 'chat:1', asAda, 'RT_003'],
      ['anonymous', anon, 'chat:1', mine, 'RT_003'],
      ['no revisions on plain:*', ada, 'plain:1', 1, 'RT_003'],
      ['no pattern', ada, 'nowhere', 1, 'RT_004'],
      ['private:user-bob', ada, 'private:user-bob', 1, 'RT_003'],
    ] as const) {
      for (const type of ['edit', 'delete'] as const) {
        const r = await c.request({ type, channel, offset, ...(type === 'edit' ? { data: { text: 'pwned' } } : {}) })
        expectError(r, code, `${who} (${type})`)
      }
    }
    expect(await snapshot(s, 'chat:1')).toEqual(before)
    // bob, subscribed, saw no revision event of any of it
    await new Promise((r) => setTimeout(r, 50))
    expect(bob.frames.filter((f) => f.type === 'message' && f.revises !== undefined)).toEqual([])
    // a channel that keeps no history: nothing to revise (RT_004), for its own sender too
    await publish(ada, 'nohist:1', { text: 'gone at once' })
    expectError(await ada.request({ type: 'edit', channel: 'nohist:1', offset: 1, data: { text: 'x' } }), 'RT_004')
    expectError(await ada.request({ type: 'delete', channel: 'nohist:1', offset: 1 }), 'RT_004')
    // ada may revise her own (the server's message sent as her too)
    expect(await ada.request({ type: 'edit', channel: 'chat:1', offset: asAda, data: { text: 'mine indeed' } })).toMatchObject({ type: 'revised', offset: asAda, version: 2 })
    expect(s.reports).toEqual([])
    await stillServing(s)
  })

  it('hostile offsets (0, negative, fractional, strings, null, 2^53 and past it, 1e400, beyond the log, a revision event, a deleted message) are answered by id and revise nothing', async () => {
    const s = await serve()
    const ada = await connect(s, 'tok-ada')
    const m = await publish(ada, 'chat:o', { text: 'one' })
    const gone = await publish(ada, 'chat:o', { text: 'two' })
    const edited = await ada.request({ type: 'edit', channel: 'chat:o', offset: m, data: { text: 'one, edited' } })
    expect(edited).toMatchObject({ type: 'revised', version: 2 })
    expect(await ada.request({ type: 'delete', channel: 'chat:o', offset: gone })).toMatchObject({ type: 'revised', deleted: true })
    const before = await snapshot(s, 'chat:o')

    for (const offset of [0, -1, -0.5, 1.5, '1', '', null, true, [1], { n: 1 }, 2 ** 53, 2 ** 53 + 2, Number.MAX_VALUE]) {
      expectError(await ada.request({ type: 'edit', channel: 'chat:o', offset, data: { text: 'x' } }), 'RT_007', `edit ${String(offset)}`)
      expectError(await ada.request({ type: 'delete', channel: 'chat:o', offset }), 'RT_007', `delete ${String(offset)}`)
    }
    // Without an offset, or with a number JSON cannot hold (1e400 parses as Infinity), written raw.
    expectError(await ada.request({ type: 'edit', channel: 'chat:o', data: { text: 'x' } }), 'RT_007', 'no offset')
    expectError(await ada.raw('{"type":"delete","id":9001,"channel":"chat:o","offset":1e400}', 9001), 'RT_007', '1e400')
    expectError(await ada.raw('{"type":"delete","id":9002,"channel":"chat:o","offset":-0}', 9002), 'RT_007', '-0')
    // Beyond the log, and the largest safe integer: not retained.
    for (const offset of [99, Number.MAX_SAFE_INTEGER]) expectError(await ada.request({ type: 'delete', channel: 'chat:o', offset }), 'RT_004', String(offset))
    // The revision event itself (her own edit): revise the message it revises instead.
    const revision = edited.revision as number
    expectError(await ada.request({ type: 'edit', channel: 'chat:o', offset: revision, data: { text: 'x' } }), 'RT_007', 'revision event')
    expectError(await ada.request({ type: 'delete', channel: 'chat:o', offset: revision }), 'RT_007', 'revision event')
    // A deleted message: gone for good, a second delete too.
    expectError(await ada.request({ type: 'edit', channel: 'chat:o', offset: gone, data: { text: 'back from the dead' } }), 'RT_004', 'deleted')
    expectError(await ada.request({ type: 'delete', channel: 'chat:o', offset: gone }), 'RT_004', 'deleted twice')
    // Extra keys (a forged sender or version) are not part of the frame.
    for (const extra of [{ sender: 'bob' }, { version: 99 }, { revises: { offset: m, version: 9 } }]) {
      expectError(await ada.request({ type: 'edit', channel: 'chat:o', offset: m, data: { text: 'x' }, ...extra }), 'RT_007', JSON.stringify(extra))
    }
    expect(await snapshot(s, 'chat:o')).toEqual(before)
    expect(ada.ws.readyState).toBe(WebSocket.OPEN)
    await stillServing(s)
  })

  it('on a channel the user may publish to but not read, someone else’s message says only "not yours" (RT_003): never whether it was deleted or is a revision', async () => {
    const s = await serve()
    const ada = await connect(s, 'tok-ada')
    const eve = await connect(s, 'tok-eve')
    const kept = await publish(ada, 'drop:box', { text: 'ada’s private note' })
    const deleted = await publish(ada, 'drop:box', { text: 'ada’s deleted note' })
    expect(await ada.request({ type: 'delete', channel: 'drop:box', offset: deleted })).toMatchObject({ type: 'revised', deleted: true })
    const edit = await ada.request({ type: 'edit', channel: 'drop:box', offset: kept, data: { text: 'ada’s private note, edited' } })
    const serverDeletion = (await s.hub.channel('drop:box').delete((await s.hub.publish('drop:box', 'note', { text: 'moderated' })).offset!)).revision
    // eve may drop messages here, and read nothing: each of these is someone else's message
    const answers: Frame[] = []
    for (const offset of [kept, deleted, edit.revision as number, serverDeletion]) {
      answers.push(await eve.request({ type: 'edit', channel: 'drop:box', offset, data: { text: 'x' } }))
      answers.push(await eve.request({ type: 'delete', channel: 'drop:box', offset }))
    }
    for (const a of answers) expectError(a, 'RT_003')
    // No answer carries another user's data, a version or a sender.
    const text = JSON.stringify(answers)
    expect(text).not.toContain('private note')
    expect(text).not.toContain('deleted note')
    // Nor can she read it another way.
    expectError(await eve.request({ type: 'history', channel: 'drop:box' }), 'RT_003')
    expectError(await eve.request({ type: 'search', channel: 'drop:box', query: 'note' }), 'RT_003')
  })

  it('edits over the channel’s maxMessageSize (RT_005), over the frame limit (RT_005, by id), failing the schema or plaintext on an encrypted channel (RT_007) change nothing', async () => {
    const s = await serve({ limits: { maxMessageSize: 8 * 1024 } })
    const ada = await connect(s, 'tok-ada')
    const bob = await connect(s, 'tok-bob')
    await subscribe(bob, 'chat:big')
    const m = await publish(ada, 'chat:big', { text: 'small' })
    const envelope = { e2e: 1, kid: 'k1', iv: 'AAAAAAAAAAAAAAAA', ct: 'Y2lwaGVydGV4dC1vZi1hdC1sZWFzdC0yMi1ieXRlcw' }
    const enc = await publish(ada, 'secret:1', envelope)
    const before = await snapshot(s, 'chat:big')
    expectError(await ada.request({ type: 'edit', channel: 'chat:big', offset: m, data: { text: 'x'.repeat(700) } }), 'RT_005', 'over the channel limit')
    expectError(await ada.request({ type: 'edit', channel: 'chat:big', offset: m, data: { text: 'x'.repeat(20_000) } }), 'RT_005', 'over the frame limit')
    expectError(await ada.request({ type: 'edit', channel: 'chat:big', offset: m, data: { text: 42 } }), 'RT_007', 'schema')
    expectError(await ada.request({ type: 'edit', channel: 'chat:big', offset: m, data: { text: 'x'.repeat(30_000) }, id: 'by-id' }), 'RT_005', 'over 4× the frame limit')
    expectError(await ada.request({ type: 'edit', channel: 'secret:1', offset: enc, data: { text: 'plaintext' } }), 'RT_007', 'plaintext on an encrypted channel')
    expect(await snapshot(s, 'chat:big')).toEqual(before)
    expect((await log(s, 'secret:1'))[0]).toMatchObject({ data: envelope })
    await new Promise((r) => setTimeout(r, 50))
    expect(bob.frames.filter((f) => f.type === 'message' && f.revises !== undefined)).toEqual([])
    expect(s.reports).toEqual([])
  })

  it('an edit just under the size limit with a long sender id: either refused with nothing changed, or revised and delivered, never the store changed and the event refused', async () => {
    const s = await serve({ limits: { messagesPerSecond: 10_000 } })
    const long = await connect(s, 'tok-long')
    const bob = await connect(s, 'tok-bob')
    for (const channel of ['chat:edge', 'alo:edge']) {
      await subscribe(bob, channel)
      const limit = channel.startsWith('alo') ? 700 : 600
      const m = await publish(long, channel, { text: 'start' })
      let refused = 0
      let revised = 0
      // Paddings around the limit: the revision event is the data plus its frame, `sender` and `revises`.
      for (let pad = limit - 420; pad <= limit - 260; pad += 2) {
        const before = (await log(s, channel)).find((x) => x.offset === m)!
        const r = await long.request({ type: 'edit', channel, offset: m, data: { text: 'y'.repeat(pad) } })
        const after = (await log(s, channel)).find((x) => x.offset === m)!
        if (r.type === 'error') {
          refused++
          expectError(r, 'RT_005', `pad ${pad}`)
          // A refused revision changes nothing.
          expect([after.version, after.data], `pad ${pad}`).toEqual([before.version, before.data])
        } else {
          revised++
          expect(r).toMatchObject({ type: 'revised', version: (before.version ?? 1) + 1 })
          expect(await bob.next((f) => f.type === 'message' && f.offset === r.revision)).toMatchObject({ revises: { offset: m, version: r.version }, sender: LONG_USER })
        }
      }
      expect(refused, channel).toBeGreaterThan(0)
      expect(revised, channel).toBeGreaterThan(0)
    }
    expect(s.reports.map((r) => r.stage)).toEqual([])
  })

  it('edit and delete floods are rate-limited like publishes (RT_006, every request answered); what was answered revised is exactly what subscribers got; others keep working', async () => {
    const s = await serve()
    const ada = await connect(s, 'tok-ada')
    const bob = await connect(s, 'tok-bob')
    await subscribe(bob, 'chat:flood')
    const offsets: number[] = []
    for (let i = 0; i < 20; i++) offsets.push(await publish(ada, 'chat:flood', { text: `m${i}` }))
    await new Promise((r) => setTimeout(r, 1_100)) // a full frame budget again
    // 300 frames at once: edits of one message, then deletes of the others
    const requests: Array<Promise<Frame>> = []
    for (let i = 0; i < 280; i++) requests.push(ada.request({ type: 'edit', channel: 'chat:flood', offset: offsets[0], data: { text: `edit ${i}` } }))
    for (const offset of offsets.slice(1)) requests.push(ada.request({ type: 'delete', channel: 'chat:flood', offset }))
    const answers = await Promise.all(requests)
    const ok = answers.filter((a) => a.type === 'revised')
    const limited = answers.filter((a) => a.type === 'error')
    for (const a of limited) expectError(a, 'RT_006')
    expect(limited.length).toBeGreaterThan(150)
    expect(ok.length).toBeGreaterThan(0)
    expect(ok.length).toBeLessThanOrEqual(110)
    expect(limited[0]!.details).toMatchObject({ retryAfterMs: expect.any(Number) })
    // The versions of the message are exactly the accepted edits, and bob got exactly those events.
    const edits = ok.filter((a) => a.offset === offsets[0])
    expect(edits.map((a) => a.version)).toEqual(edits.map((_, i) => i + 2))
    await bob.next((f) => f.type === 'message' && f.offset === ok.at(-1)!.revision)
    const events = bob.frames.filter((f) => f.type === 'message' && f.revises !== undefined)
    expect(events.map((f) => f.offset)).toEqual(ok.map((a) => a.revision))
    expect((await log(s, 'chat:flood')).find((m) => m.offset === offsets[0])!.version).toBe(edits.length + 1)
    expect(ada.ws.readyState).toBe(WebSocket.OPEN)
    await stillServing(s)
  })

  it('a channel’s publish budget (publishesPerMinute) holds for edits and deletes too', async () => {
    const s = await serve()
    s.hub.channels.register('slow:*', { subscribe: 'authenticated', publish: 'authenticated', revisions: 'own', publishesPerMinute: 5 })
    const ada = await connect(s, 'tok-ada')
    const m = await publish(ada, 'slow:1', { text: 'a' })
    const answers: Frame[] = []
    for (let i = 0; i < 8; i++) answers.push(await ada.request({ type: 'edit', channel: 'slow:1', offset: m, data: { text: `e${i}` } }))
    expect(answers.map((a) => a.type)).toEqual(['revised', 'revised', 'revised', 'revised', 'error', 'error', 'error', 'error'])
    for (const a of answers.slice(4)) expectError(a, 'RT_006')
    expectError(await ada.request({ type: 'delete', channel: 'slow:1', offset: m }), 'RT_006')
    // Refused by the budget: the message is at the version of the last accepted edit.
    expect((await log(s, 'slow:1'))[0]).toMatchObject({ version: 5, data: { text: 'e3' } })
  })

  it('deleting a message that was never edited does not read through the rest of the log; deleting an edited one stops once its edits are blanked', async () => {
    let reads = 0
    const s = await serve({
      limits: { messagesPerSecond: 10_000 },
      store: (store) =>
        new Proxy(store, {
          get: (t, k) => {
            const v = Reflect.get(t, k, t) as unknown
            if (k === 'read' && typeof v === 'function') return (...args: unknown[]) => (reads++, (v as (...a: unknown[]) => unknown).apply(t, args))
            return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v
          },
        }),
    })
    const ada = await connect(s, 'tok-ada')
    const first = await publish(ada, 'chat:long', { text: 'first' })
    const edited = await publish(ada, 'chat:long', { text: 'to edit' })
    const e1 = await ada.request({ type: 'edit', channel: 'chat:long', offset: edited, data: { text: 'edited once' } })
    for (let i = 0; i < 3_000; i++) await s.hub.publish('chat:long', 'note', { text: `filler ${i}` })
    reads = 0
    expect(await ada.request({ type: 'delete', channel: 'chat:long', offset: first })).toMatchObject({ type: 'revised', deleted: true })
    // The message and a look after the revision event; no scan of 3,000 offsets in pages of 500.
    expect(reads).toBeLessThanOrEqual(2)
    reads = 0
    expect(await ada.request({ type: 'delete', channel: 'chat:long', offset: edited })).toMatchObject({ type: 'revised', deleted: true, version: 3 })
    expect(reads).toBeLessThanOrEqual(3)
    // and the edit event was blanked
    expect((await log(s, 'chat:long')).find((m) => m.offset === e1.revision)).toMatchObject({ data: null, deleted: true })
  })
})

// ------------------------------------------------------------------------------------------

describe('hostile search frames', () => {
  it('hostile queries, limits and befores: RT_007 by id, or plain words (never operators); the connection stays open', async () => {
    const s = await serve({ limits: { messagesPerSecond: 10_000 } })
    const ada = await connect(s, 'tok-ada')
    await publish(ada, 'chat:s', { text: 'alpha beta' })
    await publish(ada, 'chat:s', { text: 'a & b | c ! d :* ( e ) \\ f' })
    await publish(ada, 'chat:s', { text: 'Ünïcödé 日本語 ÉCOLE' })
    const search = (query: unknown, extra: Frame = {}) => ada.request({ type: 'search', channel: 'chat:s', query, ...extra })
    for (const [label, query, extra] of [
      ['empty', '', {}],
      ['257 characters', 'a'.repeat(257), {}],
      ['100 KB', 'a '.repeat(50_000), {}],
      ['not a string', 42, {}],
      ['an array', ['alpha'], {}],
      ['null', null, {}],
      ['limit 0', 'alpha', { limit: 0 }],
      ['limit 101', 'alpha', { limit: 101 }],
      ['limit 1.5', 'alpha', { limit: 1.5 }],
      ['limit -1', 'alpha', { limit: -1 }],
      ['limit "5"', 'alpha', { limit: '5' }],
      ['before 0', 'alpha', { before: 0 }],
      ['before -3', 'alpha', { before: -3 }],
      ['before 2^53', 'alpha', { before: 2 ** 53 }],
      ['before "9"', 'alpha', { before: '9' }],
    ] as const) {
      expectError(await search(query, extra as Frame), 'RT_007', label)
    }
    // Operators of other search languages are not operators: they are no words, or words.
    const offsets = async (query: string, extra: Frame = {}) => {
      const r = await search(query, extra)
      expect(r, query).toMatchObject({ type: 'search', channel: 'chat:s' })
      return (r.messages as Frame[]).map((m) => m.offset)
    }
    for (const q of ['&', '|', '!', ':*', '( )', '\\', '\u0000', "' OR 1=1 --", '%', '.*', '"', '<->', '!!!!']) expect(await offsets(q), q).toEqual([])
    expect(await offsets('a & b')).toEqual([2])
    expect(await offsets('!alpha')).toEqual([1])
    expect(await offsets('alpha:*')).toEqual([1])
    expect(await offsets('alpha\u0000beta')).toEqual([1])
    expect(await offsets('ÜNÏCÖDÉ')).toEqual([3])
    expect(await offsets('école 日本語')).toEqual([3])
    expect(await offsets('alpha', { limit: 1, before: 1 })).toEqual([])
    expect(await offsets('alpha', { before: Number.MAX_SAFE_INTEGER })).toEqual([1])
    expect(ada.ws.readyState).toBe(WebSocket.OPEN)
    expect(s.reports).toEqual([])
  })

  it('the same words in any Unicode form: a decomposed "café" and a composed one find each other; combining marks do not split words', async () => {
    const s = await serve()
    const ada = await connect(s, 'tok-ada')
    const composed = await publish(ada, 'chat:u', { text: 'un caf\u00e9 noir' })
    const decomposed = await publish(ada, 'chat:u', { text: 'un cafe\u0301 cr\u00e8me' })
    await publish(ada, 'chat:u', { text: 'cafe sans accent' })
    const offsets = async (query: string) => ((await ada.request({ type: 'search', channel: 'chat:u', query })).messages as Frame[]).map((m) => m.offset)
    expect(await offsets('caf\u00e9')).toEqual([decomposed, composed])
    expect(await offsets('cafe\u0301')).toEqual([decomposed, composed])
    expect(await offsets('CAF\u00c9')).toEqual([decomposed, composed])
    // "café" is not "cafe": the accent is part of the word, in either form
    expect(await offsets('cafe')).toEqual([3])
  })

  it('channels the caller may not read: RT_003 or RT_004 and no message in any answer', async () => {
    const s = await serve()
    const ada = await connect(s, 'tok-ada')
    const eve = await connect(s, 'tok-eve')
    const anon = await connect(s)
    await publish(ada, 'team:x', { text: 'confidential plan' })
    await s.hub.publish('private:user-ada', 'note', { text: 'confidential dm' })
    await publish(ada, 'drop:x', { text: 'confidential drop' })
    s.hub.channels.register('hidden:*', { subscribe: 'authenticated', rules: { history: false } })
    await s.hub.publish('hidden:x', 'note', { text: 'confidential history' })
    const answers: Frame[] = []
    for (const [c, channel, code] of [
      [eve, 'team:x', 'RT_003'],
      [eve, 'private:user-ada', 'RT_003'],
      [eve, 'drop:x', 'RT_003'],
      [eve, 'hidden:x', 'RT_003'],
      [anon, 'chat:x', 'RT_003'],
      [anon, 'team:x', 'RT_003'],
      [eve, 'nohist:x', 'RT_004'],
      [eve, 'nowhere', 'RT_004'],
    ] as const) {
      const r = await c.request({ type: 'search', channel, query: 'confidential' })
      expectError(r, code, channel)
      answers.push(r)
    }
    expect(JSON.stringify(answers)).not.toContain('confidential')
    // revoked: bob could search team:x, and cannot once he is out
    const bob = await connect(s, 'tok-bob')
    expect(((await bob.request({ type: 'search', channel: 'team:x', query: 'plan' })).messages as unknown[]).length).toBe(1)
    s.members.delete('bob')
    expectError(await bob.request({ type: 'search', channel: 'team:x', query: 'plan' }), 'RT_003')
    // an encrypted channel: the server cannot search it
    expectError(await ada.request({ type: 'search', channel: 'secret:x', query: 'x' }), 'RT_007')
  })

  it('after a delete, the deleted words are found nowhere: not in the message, not in its earlier edit events, not in history or a replay', async () => {
    const s = await serve()
    const ada = await connect(s, 'tok-ada')
    const bob = await connect(s, 'tok-bob')
    const m = await publish(ada, 'chat:d', { text: 'original zebra' })
    await ada.request({ type: 'edit', channel: 'chat:d', offset: m, data: { text: 'edited giraffe' } })
    await ada.request({ type: 'edit', channel: 'chat:d', offset: m, data: { text: 'edited again okapi' } })
    await publish(bob, 'chat:d', { text: 'bob mentions nothing' })
    const search = async (query: string) => ((await bob.request({ type: 'search', channel: 'chat:d', query })).messages as Frame[]).map((x) => x.offset)
    expect(await search('okapi')).toEqual([m])
    expect(await search('giraffe')).toEqual([])
    expect(await search('zebra')).toEqual([])
    expect(await ada.request({ type: 'delete', channel: 'chat:d', offset: m })).toMatchObject({ type: 'revised', deleted: true })
    for (const word of ['okapi', 'giraffe', 'zebra', 'edited', 'original']) expect(await search(word), word).toEqual([])
    const history = await bob.request({ type: 'history', channel: 'chat:d', since: undefined })
    const text = JSON.stringify(history)
    for (const word of ['okapi', 'giraffe', 'zebra']) expect(text).not.toContain(word)
    // a subscriber resuming from the start is replayed no deleted word either
    const carol = await connect(s, 'tok-eve')
    carol.send({ type: 'subscribe', id: 'resume', channel: 'chat:d', since: { epoch: history.position && (history.position as Frame).epoch, offset: 0 } })
    await carol.next((f) => f.type === 'subscribed')
    await carol.next((f) => f.type === 'message' && f.offset === (history.top as number))
    const replay = JSON.stringify(carol.frames)
    for (const word of ['okapi', 'giraffe', 'zebra']) expect(replay).not.toContain(word)
  })

  it('a search flood costs ten frames each (RT_006 past the budget), every request answered', async () => {
    const s = await serve()
    const ada = await connect(s, 'tok-ada')
    await publish(ada, 'chat:sf', { text: 'hello' })
    await new Promise((r) => setTimeout(r, 1_100))
    const answers = await Promise.all(Array.from({ length: 40 }, () => ada.request({ type: 'search', channel: 'chat:sf', query: 'hello' })))
    const ok = answers.filter((a) => a.type === 'search').length
    expect(ok).toBeGreaterThanOrEqual(9)
    expect(ok).toBeLessThanOrEqual(11)
    for (const a of answers.filter((x) => x.type === 'error')) expectError(a, 'RT_006')
    expect(ada.ws.readyState).toBe(WebSocket.OPEN)
  })
})

// ------------------------------------------------------------------------------------------

describe('hostile channels frames', () => {
  it('anonymous: RT_003; hostile limits: RT_007; another user’s channels never show', async () => {
    const s = await serve({ limits: { messagesPerSecond: 10_000 } })
    const anon = await connect(s)
    expectError(await anon.request({ type: 'channels' }), 'RT_003')
    const ada = await connect(s, 'tok-ada')
    await s.hub.publish('team:ada-only', 'note', { text: 'x' })
    await s.store.commit('team:ada-only', 'ada', 0)
    for (const limit of [0, 501, 1.5, -1, '5', null, 2 ** 53]) expectError(await ada.request({ type: 'channels', limit }), 'RT_007', String(limit))
    expect(((await ada.request({ type: 'channels', limit: 500 })).channels as Frame[]).map((c) => c.name)).toEqual(['team:ada-only'])
    const bob = await connect(s, 'tok-bob')
    expect(await bob.request({ type: 'channels' })).toMatchObject({ type: 'channels', channels: [] })
    // An extra key (another user's id) is not part of the frame.
    expectError(await bob.request({ type: 'channels', userId: 'ada' }), 'RT_007')
  })

  it('channels the user may no longer subscribe to are left out, and do not take places of the ones it may (limit)', async () => {
    const s = await serve()
    const bob = await connect(s, 'tok-bob')
    // bob's cursors: 12 team channels, then, active earlier, 3 chat channels
    for (let i = 0; i < 3; i++) {
      await s.hub.publish(`chat:old-${i}`, 'note', { text: 'x' })
      await s.store.commit(`chat:old-${i}`, 'bob', 0)
    }
    await new Promise((r) => setTimeout(r, 5))
    for (let i = 0; i < 12; i++) {
      await s.hub.publish(`team:t${i}`, 'note', { text: 'x' })
      await s.store.commit(`team:t${i}`, 'bob', 0)
    }
    const names = async (limit?: number) => ((await bob.request({ type: 'channels', ...(limit !== undefined ? { limit } : {}) })).channels as Frame[]).map((c) => c.name as string)
    expect((await names()).length).toBe(15)
    s.members.delete('bob')
    // none of the team channels, and the three bob may still subscribe to, within a limit of 3
    expect((await names()).sort()).toEqual(['chat:old-0', 'chat:old-1', 'chat:old-2'])
    expect((await names(3)).sort()).toEqual(['chat:old-0', 'chat:old-1', 'chat:old-2'])
    expect(await names(2)).toHaveLength(2)
    // the admin route lists what the store keeps (server code decides what it shows)
    const admin = await fetch(`${s.base}/users/bob/channels`, { headers: { 'x-api-key': KEY } })
    expect(((await admin.json()) as { channels: unknown[] }).channels).toHaveLength(15)
  })

  it('a rule that throws or hangs leaves its channel out and the answer still comes', async () => {
    const s = await serve({ limits: { ruleTimeoutMs: 200 } })
    s.hub.channels.register('throws:*', { subscribe: () => { throw new Error('rule bug') } })
    s.hub.channels.register('hangs:*', { subscribe: () => new Promise<boolean>(() => {}) })
    for (const name of ['throws:a', 'hangs:a', 'chat:ok']) {
      await s.hub.publish(name, 'note', { text: 'x' })
      await s.store.commit(name, 'ada', 0)
    }
    const ada = await connect(s, 'tok-ada')
    const r = await ada.request({ type: 'channels' })
    expect((r.channels as Frame[]).map((c) => c.name)).toEqual(['chat:ok'])
    await stillServing(s)
  })
})

// ------------------------------------------------------------------------------------------

const enc = encodeURIComponent

async function call(s: Served, path: string, init: RequestInit & { key?: string | null } = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const key = init.key === undefined ? KEY : init.key
  const res = await fetch(`${s.base}${path}`, { ...init, headers: { ...(key !== null ? { 'x-api-key': key } : {}), ...(init.headers as Record<string, string> | undefined) } })
  const text = await res.text()
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} }
}

/** A raw request with a body sent in chunks without a length (Transfer-Encoding: chunked). */
function chunked(s: Served, method: string, path: string, chunks: string[], headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: s.port, method, path: `/realtime${path}`, headers: { 'x-api-key': KEY, 'content-type': 'application/json', ...headers } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
    })
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? resolve({ status: -1, body: err.code }) : reject(err)))
    for (const c of chunks) req.write(c)
    req.end()
  })
}

describe('hostile admin-API callers', () => {
  it('keys: none or a wrong one 401 RT_002, a read key cannot edit or delete, a publish key cannot search or list; nothing changes', async () => {
    const s = await serve()
    const m = (await s.hub.publish('chat:k', 'note', { text: 'keep me' }, { sender: 'ada' })).offset!
    await s.store.commit('chat:k', 'ada', 0)
    const json = { 'content-type': 'application/json' }
    const edit = (key: string | null, headers: Record<string, string> = {}) => call(s, `/channels/chat%3Ak/messages/${m}`, { method: 'PATCH', key, headers: { ...json, ...headers }, body: JSON.stringify({ data: { text: 'pwned' } }) })
    const remove = (key: string | null, headers: Record<string, string> = {}) => call(s, `/channels/chat%3Ak/messages/${m}`, { method: 'DELETE', key, headers })
    const search = (key: string | null) => call(s, '/channels/chat%3Ak/search?q=keep', { key })
    const list = (key: string | null) => call(s, '/users/ada/channels', { key })
    for (const [label, r, status, code] of [
      ['no key', await edit(null), 401, 'RT_002'],
      ['wrong key', await remove('nope'), 401, 'RT_002'],
      ['a key differing in case', await remove(KEY.toUpperCase()), 401, 'RT_002'],
      ['a prefix of the key', await remove(KEY.slice(0, -1)), 401, 'RT_002'],
      ['bearer with a wrong key', await remove(null, { authorization: 'Bearer nope' }), 401, 'RT_002'],
      ['the key in the query string', await call(s, `/channels/chat%3Ak/messages/${m}?apiKey=${KEY}&api_key=${KEY}&key=${KEY}`, { method: 'DELETE', key: null }), 401, 'RT_002'],
      ['read key edits', await edit(READER_KEY), 403, 'RT_003'],
      ['read key deletes', await remove(READER_KEY), 403, 'RT_003'],
      ['publish key searches', await search(PUBLISHER_KEY), 403, 'RT_003'],
      ['publish key lists', await list(PUBLISHER_KEY), 403, 'RT_003'],
      ['no key searches', await search(null), 401, 'RT_002'],
      ['no key lists', await list(null), 401, 'RT_002'],
    ] as const) {
      expect(r.status, label).toBe(status)
      expect(r.body, label).toMatchObject({ type: 'error', code })
      expect(JSON.stringify(r.body), label).not.toContain('keep me')
    }
    expect((await log(s, 'chat:k'))[0]).toMatchObject({ data: { text: 'keep me' } })
    expect((await log(s, 'chat:k'))[0]!.version).toBeUndefined()
    // the right scopes work
    expect((await search(READER_KEY)).status).toBe(200)
    expect((await list(READER_KEY)).status).toBe(200)
    expect((await edit(PUBLISHER_KEY)).status).toBe(200)
  })

  it('bad ids, bad JSON, odd content types, huge and endless bodies: 400 / 413, nothing revised, the server keeps serving', async () => {
    const s = await serve()
    const m = (await s.hub.publish('chat:b', 'note', { text: 'orig' }, { sender: 'ada' })).offset!
    const path = `/channels/chat%3Ab/messages/${m}`
    const json = { 'content-type': 'application/json' }
    const cases: Array<[string, Promise<{ status: number; body: Record<string, unknown> }>, number, string]> = [
      ['JSON with a trailing comma', call(s, path, { method: 'PATCH', headers: json, body: '{"data":1,}' }), 400, 'RT_007'],
      ['two JSON values', call(s, path, { method: 'PATCH', headers: json, body: '{"data":1}{"data":2}' }), 400, 'RT_007'],
      ['a lone surrogate', call(s, path, { method: 'PATCH', headers: json, body: '{"data":{"text":"\\ud800"},"by":"\\ud800"}' }), 403, 'RT_003'],
      ['a BOM and JSON', call(s, path, { method: 'PATCH', headers: json, body: '\ufeff{"data":{"text":"x"}}' }), 400, 'RT_007'],
      ['__proto__ key', call(s, path, { method: 'PATCH', headers: json, body: '{"data":{"text":"x"},"__proto__":{"by":"ada"}}' }), 400, 'RT_007'],
      ['by with a NUL', call(s, path, { method: 'PATCH', headers: json, body: JSON.stringify({ data: { text: 'x' }, by: 'ada\u0000' }) }), 403, 'RT_003'],
      ['a multipart type', call(s, path, { method: 'PATCH', headers: { 'content-type': 'multipart/form-data; boundary=x' }, body: '--x--' }), 400, 'RT_007'],
      ['application/jsonp', call(s, path, { method: 'PATCH', headers: { 'content-type': 'application/jsonp' }, body: '{"data":{"text":"x"}}' }), 400, 'RT_007'],
      ['over maxBodyBytes by its length', call(s, path, { method: 'PATCH', headers: json, body: JSON.stringify({ data: { text: 'z'.repeat(20_000) } }) }), 413, 'RT_005'],
      ['a million nested arrays', call(s, path, { method: 'PATCH', headers: json, body: `{"data":${'['.repeat(5_000)}${']'.repeat(5_000)}}` }), 400, 'RT_007'],
      ['a user id of 257', call(s, `/users/${'u'.repeat(257)}/channels`), 400, 'RT_007'],
      ['a bad user id encoding', call(s, '/users/%C0%AF/channels'), 400, 'RT_007'],
      ['a limit with a sign', call(s, '/users/ada/channels?limit=%2B5'), 400, 'RT_007'],
      ['two limits', call(s, '/users/ada/channels?limit=5&limit=6000'), 200, ''],
      ['a q of 257 in two parts', call(s, `/channels/chat%3Ab/search?q=${'a'.repeat(200)}&q=${'b'.repeat(200)}`), 200, ''],
      ['a huge URL', call(s, `/channels/chat%3Ab/search?q=${'a'.repeat(100_000)}`), 431, ''],
    ]
    for (const [label, pending, status, code] of cases) {
      const r = await pending
      expect(r.status, label).toBe(status)
      if (code) expect(r.body, label).toMatchObject({ type: 'error', code })
    }
    // A chunked body that passes the limit is cut off with 413 (or the connection), never read whole.
    const endless = await chunked(s, 'PATCH', path, ['{"data":{"text":"', ...Array.from({ length: 40 }, () => 'w'.repeat(4_096)), '"}}'])
    expect([413, -1]).toContain(endless.status)
    if (endless.status === 413) expect(JSON.parse(endless.body)).toMatchObject({ code: 'RT_005' })
    expect((await log(s, 'chat:b'))[0]).toMatchObject({ data: { text: 'orig' } })
    expect((await log(s, 'chat:b'))[0]!.version).toBeUndefined()
    expect(s.reports).toEqual([])
    await stillServing(s)
    expect((await call(s, path, { method: 'PATCH', headers: json, body: JSON.stringify({ data: { text: 'fine' } }) })).status).toBe(200)
  })

  it('search and channel-list routes with hostile queries and ids answer words only and leak nothing', async () => {
    const s = await serve()
    await s.hub.publish('chat:q', 'note', { text: 'alpha beta' })
    const search = (q: string) => call(s, `/channels/chat%3Aq/search?q=${enc(q)}`)
    for (const q of ['a & | ! :* ( )', '\\', '\u0000', "'; DROP TABLE x; --", '\u202e', '👩‍💻']) {
      const r = await search(q)
      expect(r, q).toEqual({ status: 200, body: { messages: [] } })
    }
    expect(((await search('ALPHA\u0000beta')).body.messages as unknown[]).length).toBe(1)
    // a user id that is another's with something appended names nobody's list; one with a NUL
    // (which no store keeps: PostgreSQL text cannot hold it) is 400 RT_007
    await s.store.commit('chat:q', 'ada', 0)
    for (const id of ['ada%', 'ADA', ' ada', 'ad']) expect(await call(s, `/users/${enc(id)}/channels`), id).toEqual({ status: 200, body: { channels: [] } })
    expect(await call(s, `/users/${enc('ada\u0000')}/channels`)).toMatchObject({ status: 400, body: { type: 'error', code: 'RT_007' } })
    expect(((await call(s, '/users/ada/channels')).body.channels as unknown[]).length).toBe(1)
  })
})
