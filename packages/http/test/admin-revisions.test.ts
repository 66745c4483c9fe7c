import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, createMemoryStore, createTokenAuthenticator, type Hub, type MemoryMessageStore, type MessageStore, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import WebSocket from 'ws'
import { z } from 'zod'
import { afterEach, describe, expect, it } from 'vitest'

// The admin routes of message revisions, search and the per-user channel list, over a real HTTP
// server (and a real WebSocket client where a revision reaches subscribers).

const KEY = 'admin-secret-0123456789'
const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** A memory store without the optional methods: revise, search, channelsOf. */
function plainStore(store: MemoryMessageStore): MessageStore {
  const hidden = new Set<PropertyKey>(['revise', 'search', 'channelsOf'])
  return new Proxy(store, {
    get: (t, k) => (hidden.has(k) ? undefined : (Reflect.get(t, k, t) as unknown)),
    has: (t, k) => !hidden.has(k) && Reflect.has(t, k),
  })
}

interface Served {
  base: string
  port: number
  hub: Hub
  store: MemoryMessageStore
}

async function serve(options: { plain?: boolean; maxBodyBytes?: number } = {}): Promise<Served> {
  const store = createMemoryStore()
  const hub = createHub({
    logger: silentLogger,
    store: options.plain ? plainStore(store) : store,
    authenticate: createTokenAuthenticator({ 'tok-ada': { userId: 'ada' }, 'tok-bob': { userId: 'bob' } }),
  })
  cleanups.push(() => hub.close())
  hub.channels.register('chat:*', { subscribe: 'authenticated', maxMessageSize: 300, events: { note: z.object({ text: z.string() }) } })
  hub.channels.register('nohist:*', { subscribe: 'authenticated', history: false })
  hub.channels.register('inbox:*', { subscribe: 'authenticated', offline: { maxMessages: 50, ttlMs: 60_000 } })
  const rt = createRealtime({ hub, apiKey: KEY, ...(options.maxBodyBytes !== undefined ? { maxBodyBytes: options.maxBodyBytes } : {}) })
  cleanups.push(() => rt.close())
  const server = createServer()
  rt.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => new Promise((r) => (server.closeAllConnections(), server.close(r))))
  const port = (server.address() as AddressInfo).port
  return { base: `http://127.0.0.1:${port}/realtime`, port, hub, store }
}

const enc = encodeURIComponent

async function call(base: string, path: string, init: RequestInit = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, { ...init, headers: { 'x-api-key': KEY, ...(init.headers as Record<string, string> | undefined) } })
  const text = await res.text()
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} }
}

const patch = (base: string, channel: string, offset: string | number, body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  call(base, `/channels/${enc(channel)}/messages/${offset}`, { method: 'PATCH', headers, body: typeof body === 'string' ? body : JSON.stringify(body) })

const del = (base: string, channel: string, offset: string | number, query = '') => call(base, `/channels/${enc(channel)}/messages/${offset}${query}`, { method: 'DELETE' })

async function history(hub: Hub, channel: string) {
  return (await hub.channel(channel).history({ limit: 100 })).messages
}

/** A raw request (no client-side normalization of the path), answering status and body. */
function raw(port: number, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers: { 'x-api-key': KEY, ...headers, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function wsClient(base: string, token: string) {
  const ws = new WebSocket(`${base.replace('http', 'ws')}?token=${token}`, 'tidings.v1.json')
  cleanups.push(() => ws.terminate())
  const frames: Array<Record<string, unknown>> = []
  const waiters: Array<{ match: (f: Record<string, unknown>) => boolean; resolve: (f: Record<string, unknown>) => void }> = []
  ws.on('message', (data) => {
    const f = JSON.parse(String(data)) as Record<string, unknown>
    frames.push(f)
    for (const w of [...waiters]) if (w.match(f)) {
      waiters.splice(waiters.indexOf(w), 1)
      w.resolve(f)
    }
  })
  const next = (match: (f: Record<string, unknown>) => boolean) => {
    const seen = frames.find(match)
    if (seen) return Promise.resolve(seen)
    return new Promise<Record<string, unknown>>((resolve) => waiters.push({ match, resolve }))
  }
  await next((f) => f.type === 'connected')
  return { ws, frames, next }
}

// ------------------------------------------------------------------------------------------

describe('PATCH / DELETE <prefix>/channels/:id/messages/:offset', () => {
  it('edits then deletes a message: RevisionResult answered, the revision reaches a WebSocket subscriber, history shows the new version', async () => {
    const s = await serve()
    const ada = await wsClient(s.base, 'tok-ada')
    ada.ws.send(JSON.stringify({ type: 'subscribe', id: 1, channel: 'chat:room' }))
    await ada.next((f) => f.type === 'subscribed')
    const first = await s.hub.publish('chat:room', 'note', { text: 'helo' }, { sender: 'ada' })
    await s.hub.publish('chat:room', 'note', { text: 'second' }, { sender: 'bob' })

    const edited = await patch(s.base, 'chat:room', first.offset!, { data: { text: 'hello' }, by: 'ada' })
    expect(edited.status).toBe(200)
    expect(edited.body).toEqual({ offset: first.offset, version: 2, deleted: false, revision: 3, messageId: expect.any(String), recipients: 1 })
    const event = await ada.next((f) => f.type === 'message' && f.revises !== undefined)
    expect(event).toMatchObject({ channel: 'chat:room', offset: 3, data: { text: 'hello' }, revises: { offset: first.offset, version: 2 } })

    const h = await history(s.hub, 'chat:room')
    expect(h.find((m) => m.offset === first.offset)).toMatchObject({ data: { text: 'hello' }, version: 2, sender: 'ada' })

    const deleted = await del(s.base, 'chat:room', first.offset!)
    expect(deleted.status).toBe(200)
    expect(deleted.body).toMatchObject({ offset: first.offset, version: 3, deleted: true, revision: 4 })
    expect((await history(s.hub, 'chat:room')).find((m) => m.offset === first.offset)).toMatchObject({ data: null, deleted: true, version: 3 })

    // Gone: a second delete or an edit of the tombstone is 404 RT_004.
    for (const r of [await del(s.base, 'chat:room', first.offset!), await patch(s.base, 'chat:room', first.offset!, { data: { text: 'again' } })]) {
      expect(r.status).toBe(404)
      expect(r.body).toMatchObject({ type: 'error', code: 'RT_004' })
    }
  })

  it('another user’s message with `by` is 403 RT_003 (PATCH body and DELETE ?by=), and the message is left as it was', async () => {
    const s = await serve()
    const m = await s.hub.publish('chat:room', 'note', { text: 'mine' }, { sender: 'ada' })
    const anon = await s.hub.publish('chat:room', 'note', { text: 'server' })
    for (const r of [
      await patch(s.base, 'chat:room', m.offset!, { data: { text: 'hijacked' }, by: 'bob' }),
      await del(s.base, 'chat:room', m.offset!, '?by=bob'),
      // A message without a sender belongs to no user.
      await del(s.base, 'chat:room', anon.offset!, '?by=ada'),
      // Case and look-alikes are other users.
      await del(s.base, 'chat:room', m.offset!, `?by=${enc('Ada')}`),
      await del(s.base, 'chat:room', m.offset!, `?by=${enc('ada ')}`),
    ]) {
      expect(r.status).toBe(403)
      expect(r.body).toMatchObject({ type: 'error', code: 'RT_003' })
    }
    const h = await history(s.hub, 'chat:room')
    expect(h.map((x) => [x.offset, x.data, x.version, x.deleted])).toEqual([
      [m.offset, { text: 'mine' }, undefined, undefined],
      [anon.offset, { text: 'server' }, undefined, undefined],
    ])
    // Without `by`, server code may revise anyone's message.
    expect((await del(s.base, 'chat:room', anon.offset!)).status).toBe(200)
  })

  it('hostile offsets (0, -1, 1e3, abc, 2^53+1, 01, 0x10, 1.0, " 1", %31) are 400 RT_007 and revise nothing; an offset never written is 404 RT_004', async () => {
    const s = await serve()
    for (let i = 0; i < 3; i++) await s.hub.publish('chat:room', 'note', { text: `m${i}` })
    const bad = ['0', '-1', '1e3', '1e0', 'abc', '9007199254740993', '9007199254740992', '01', '0x10', '1.0', '%201', '1%20', '%2B1', 'Infinity', 'NaN', '%E0%A4%A']
    for (const offset of bad) {
      for (const r of [await patch(s.base, 'chat:room', offset, { data: { text: 'x' } }), await del(s.base, 'chat:room', offset)]) {
        expect(r.status, offset).toBe(400)
        expect(r.body, offset).toMatchObject({ type: 'error', code: 'RT_007' })
      }
    }
    // `%31` is "1" percent-encoded: the same offset, decoded as any path segment is.
    expect((await patch(s.base, 'chat:room', '%31', { data: { text: 'one' } })).status).toBe(200)
    for (const r of [await patch(s.base, 'chat:room', 999, { data: { text: 'x' } }), await del(s.base, 'chat:room', 9007199254740991)]) {
      expect(r.status).toBe(404)
      expect(r.body).toMatchObject({ code: 'RT_004' })
    }
    expect((await history(s.hub, 'chat:room')).filter((m) => m.version !== undefined).map((m) => m.offset)).toEqual([1])
  })

  it('channel names with path tricks are 400 RT_007 or 404 RT_004, never another channel; an unknown pattern is 404, a channel without history 400 RT_007', async () => {
    const s = await serve()
    await s.hub.publish('chat:room', 'note', { text: 'keep' })
    const cases: Array<[string, number, string]> = [
      ['..%2Fchat%3Aroom', 400, 'RT_007'],
      ['chat%3Aroom%2F..%2F..', 400, 'RT_007'],
      ['chat%3Aroom%2Fmessages%2F1', 400, 'RT_007'],
      ['...', 404, 'RT_004'],
      ['chat%3Aroom%00', 400, 'RT_007'],
      ['%ZZ', 400, 'RT_007'],
      [enc('x'.repeat(201)), 400, 'RT_007'],
      ['nowhere', 404, 'RT_004'],
    ]
    for (const [channel, status, code] of cases) {
      for (const r of [
        await call(s.base, `/channels/${channel}/messages/1`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ data: { text: 'x' } }) }),
        await call(s.base, `/channels/${channel}/messages/1`, { method: 'DELETE' }),
      ]) {
        expect(r.status, channel).toBe(status)
        expect(r.body, channel).toMatchObject({ type: 'error', code })
      }
    }
    // Dot segments in the raw path are resolved before routing: they end on another route, which
    // answers for itself (405 here), and nothing is revised.
    const dotted = await raw(s.port, 'PATCH', '/realtime/channels/chat:room/messages/1/../../../../connections', JSON.stringify({ data: { text: 'x' } }), { 'content-type': 'application/json' })
    expect(dotted.status).toBe(405)
    expect((await history(s.hub, 'chat:room'))[0]).toMatchObject({ data: { text: 'keep' } })
    expect((await history(s.hub, 'chat:room'))[0]!.version).toBeUndefined()

    await s.hub.publish('nohist:x', 'e', 1)
    for (const r of [await patch(s.base, 'nohist:x', 1, { data: 2 }), await del(s.base, 'nohist:x', 1)]) {
      expect(r.status).toBe(404)
      expect(r.body).toMatchObject({ code: 'RT_004' })
    }
  })

  it('bodies: missing, not JSON, not an object, without data, with extra keys, a bad `by`, a non-JSON content type are 400 RT_007; over maxBodyBytes 413 RT_005; over the channel size 413; failing the event schema 400', async () => {
    const s = await serve({ maxBodyBytes: 4096 })
    const m = await s.hub.publish('chat:room', 'note', { text: 'orig' }, { sender: 'ada' })
    const json = { 'content-type': 'application/json' }
    const cases: Array<[string, unknown, Record<string, string>, number, string]> = [
      ['missing body', '', json, 400, 'RT_007'],
      ['not JSON', '{data:', json, 400, 'RT_007'],
      ['a JSON string', '"x"', json, 400, 'RT_007'],
      ['an array', '[{"data":1}]', json, 400, 'RT_007'],
      ['null', 'null', json, 400, 'RT_007'],
      ['no data', {}, json, 400, 'RT_007'],
      ['extra key', { data: { text: 'x' }, sender: 'eve' }, json, 400, 'RT_007'],
      ['by empty', { data: { text: 'x' }, by: '' }, json, 400, 'RT_007'],
      ['by a number', { data: { text: 'x' }, by: 42 }, json, 400, 'RT_007'],
      ['by too long', { data: { text: 'x' }, by: 'a'.repeat(257) }, json, 400, 'RT_007'],
      ['text/plain', { data: { text: 'x' } }, { 'content-type': 'text/plain' }, 400, 'RT_007'],
      ['a form', { data: { text: 'x' } }, { 'content-type': 'application/x-www-form-urlencoded' }, 400, 'RT_007'],
      ['over maxBodyBytes', { data: { text: 'y'.repeat(5000) } }, json, 413, 'RT_005'],
      ['over the channel maxMessageSize', { data: { text: 'y'.repeat(1000) } }, json, 413, 'RT_005'],
      ['failing the event schema', { data: { text: 42 } }, json, 400, 'RT_007'],
      ['deeper than the decode budget', `{"data":${'['.repeat(200)}${']'.repeat(200)}}`, json, 400, 'RT_007'],
    ]
    for (const [label, body, headers, status, code] of cases) {
      const r = await patch(s.base, 'chat:room', m.offset!, body, headers)
      expect(r.status, label).toBe(status)
      expect(r.body, label).toMatchObject({ type: 'error', code })
    }
    expect((await history(s.hub, 'chat:room'))[0]).toMatchObject({ data: { text: 'orig' } })
    // A JSON type with parameters, or a +json type, is JSON; data may be null.
    expect((await patch(s.base, 'chat:room', m.offset!, { data: { text: 'ok' } }, { 'content-type': 'application/json; charset=utf-8' })).status).toBe(200)
    expect((await patch(s.base, 'chat:room', m.offset!, { data: { text: 'ok2' } }, { 'content-type': 'application/merge-patch+json' })).status).toBe(200)
    // The server keeps serving after a 413 that closed its connection.
    expect((await history(s.hub, 'chat:room'))[0]).toMatchObject({ data: { text: 'ok2' }, version: 3 })
  })

  it('a DELETE body is drained and ignored (no reset); a bad ?by= is 400 RT_007', async () => {
    const s = await serve()
    const m = await s.hub.publish('chat:room', 'note', { text: 'x' }, { sender: 'ada' })
    const bad = await del(s.base, 'chat:room', m.offset!, `?by=${'a'.repeat(257)}`)
    expect(bad.status).toBe(400)
    expect(bad.body).toMatchObject({ code: 'RT_007' })
    const emptyBy = await del(s.base, 'chat:room', m.offset!, '?by=')
    expect(emptyBy.status).toBe(400)
    const r = await raw(s.port, 'DELETE', `/realtime/channels/chat:room/messages/${m.offset}?by=ada`, JSON.stringify({ data: 'y'.repeat(100_000) }), { 'content-type': 'application/json' })
    expect(r.status).toBe(200)
    expect(JSON.parse(r.body)).toMatchObject({ deleted: true, version: 2 })
  })

  it('a revision event itself cannot be revised (400 RT_007): the message it revises can', async () => {
    const s = await serve()
    const m = await s.hub.publish('chat:room', 'note', { text: 'a' })
    const r = await patch(s.base, 'chat:room', m.offset!, { data: { text: 'b' } })
    expect(r.status).toBe(200)
    const revision = (r.body as { revision: number }).revision
    for (const again of [await patch(s.base, 'chat:room', revision, { data: { text: 'c' } }), await del(s.base, 'chat:room', revision)]) {
      expect(again).toMatchObject({ status: 400, body: { type: 'error', code: 'RT_007' } })
    }
    expect(await patch(s.base, 'chat:room', m.offset!, { data: { text: 'c' } })).toMatchObject({ status: 200, body: { version: 3 } })
  })

  it('concurrent edits of one message over HTTP each get their own version and revision offset (none lost, none twice)', async () => {
    const s = await serve()
    const m = await s.hub.publish('chat:room', 'note', { text: 'v1' })
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => patch(s.base, 'chat:room', m.offset!, { data: { text: `edit ${i}` } })))
    expect(answers.map((a) => a.status)).toEqual(Array(12).fill(200))
    const versions = answers.map((a) => (a.body as { version: number }).version).sort((a, b) => a - b)
    expect(versions).toEqual(Array.from({ length: 12 }, (_, i) => i + 2))
    expect(new Set(answers.map((a) => (a.body as { revision: number }).revision)).size).toBe(12)
    const latest = answers.find((a) => (a.body as { version: number }).version === 13)!
    const h = await history(s.hub, 'chat:room')
    // The message holds the data of the edit that got the highest version.
    const winner = h.find((x) => x.offset === (latest.body as { revision: number }).revision)!
    expect(h[0]).toMatchObject({ version: 13, data: winner.data })
  })

  it('a store without revise answers 400 RT_007 for edit and delete', async () => {
    const s = await serve({ plain: true })
    const m = await s.hub.publish('chat:room', 'note', { text: 'x' })
    for (const r of [await patch(s.base, 'chat:room', m.offset!, { data: { text: 'y' } }), await del(s.base, 'chat:room', m.offset!)]) {
      expect(r.status).toBe(400)
      expect(r.body).toMatchObject({ type: 'error', code: 'RT_007' })
    }
  })
})

// ------------------------------------------------------------------------------------------

describe('GET <prefix>/channels/:id/search', () => {
  it('answers { messages } newest first in the history shape (version, deleted and revision events kept out), with limit and before paging', async () => {
    const s = await serve()
    const offsets: number[] = []
    for (const text of ['apple pie', 'banana', 'Apple tart', 'cherry', 'apple juice']) offsets.push((await s.hub.publish('chat:room', 'note', { text }, { sender: 'ada' })).offset!)
    await patch(s.base, 'chat:room', offsets[1]!, { data: { text: 'apple banana' } })
    await del(s.base, 'chat:room', offsets[4]!)

    const r = await call(s.base, `/channels/${enc('chat:room')}/search?q=apple`)
    expect(r.status).toBe(200)
    const messages = r.body.messages as Array<Record<string, unknown>>
    expect(messages.map((m) => m.offset)).toEqual([offsets[2], offsets[1], offsets[0]])
    // The same fields history answers, with `version` on the edited one.
    const h = await history(s.hub, 'chat:room')
    expect(messages[1]).toEqual(JSON.parse(JSON.stringify(h.find((m) => m.offset === offsets[1]))))
    expect(messages[1]).toMatchObject({ version: 2, data: { text: 'apple banana' }, event: 'note', sender: 'ada', channel: 'chat:room' })

    const page1 = (await call(s.base, `/channels/${enc('chat:room')}/search?q=apple&limit=2`)).body.messages as Array<{ offset: number }>
    expect(page1.map((m) => m.offset)).toEqual([offsets[2], offsets[1]])
    const page2 = (await call(s.base, `/channels/${enc('chat:room')}/search?q=apple&limit=2&before=${page1[1]!.offset}`)).body.messages as Array<{ offset: number }>
    expect(page2.map((m) => m.offset)).toEqual([offsets[0]])
    // Words, any case; nothing matches → an empty list, not an error.
    expect(((await call(s.base, `/channels/${enc('chat:room')}/search?q=${enc('APPLE Pie')}`)).body.messages as unknown[]).length).toBe(1)
    expect((await call(s.base, `/channels/${enc('chat:room')}/search?q=durian`)).body).toEqual({ messages: [] })
  })

  it('hostile queries: missing, empty, 257 characters, 10 KB are 400 RT_007; limit 0/101/1e1/-1 and before 0/abc too; 256 characters are fine', async () => {
    const s = await serve()
    await s.hub.publish('chat:room', 'note', { text: 'hello' })
    const path = (q: string) => `/channels/${enc('chat:room')}/search${q}`
    for (const q of ['', '?q=', '?limit=5', `?q=${'a'.repeat(257)}`, `?q=${'a'.repeat(10 * 1024)}`, '?q=hello&limit=0', '?q=hello&limit=101', '?q=hello&limit=1e1', '?q=hello&limit=-1', '?q=hello&limit=', '?q=hello&before=0', '?q=hello&before=abc', '?q=hello&before=9007199254740993']) {
      const r = await call(s.base, path(q))
      expect(r.status, q.slice(0, 40)).toBe(400)
      expect(r.body, q.slice(0, 40)).toMatchObject({ type: 'error', code: 'RT_007' })
    }
    expect((await call(s.base, path(`?q=${'a'.repeat(256)}`))).status).toBe(200)
    // Characters that mean something elsewhere (regex, SQL, LIKE) are words or nothing here.
    for (const q of ['%', '.*', "' OR 1=1 --", '\\', '_', '()[]']) {
      const r = await call(s.base, path(`?q=${enc(q)}`))
      expect(r.status, q).toBe(200)
      expect(r.body, q).toEqual({ messages: [] })
    }
    expect((await call(s.base, path('?q=hello&limit=100'))).status).toBe(200)
  })

  it('an unknown channel is 404 RT_004 (and one without history, as the history route), a bad name 400 RT_007, an encrypted channel or a store without search 400 RT_007', async () => {
    const s = await serve()
    s.hub.channels.register('secret:*', { subscribe: 'authenticated', encrypted: true })
    expect(await call(s.base, '/channels/secret%3Ax/search?q=x')).toMatchObject({ status: 400, body: { code: 'RT_007' } })
    expect(await call(s.base, '/channels/nohist%3Ax/search?q=x')).toMatchObject({ status: 404, body: { code: 'RT_004' } })
    expect(await call(s.base, '/channels/nohist%3Ax/history')).toMatchObject({ status: 404, body: { code: 'RT_004' } })
    expect(await call(s.base, '/channels/nowhere/search?q=x')).toMatchObject({ status: 404, body: { code: 'RT_004' } })
    expect(await call(s.base, '/channels/..%2Fchat%3Aroom/search?q=x')).toMatchObject({ status: 400, body: { code: 'RT_007' } })
    const p = await serve({ plain: true })
    await p.hub.publish('chat:room', 'note', { text: 'hello' })
    expect(await call(p.base, `/channels/${enc('chat:room')}/search?q=hello`)).toMatchObject({ status: 400, body: { type: 'error', code: 'RT_007' } })
  })
})

// ------------------------------------------------------------------------------------------

describe('GET <prefix>/users/:id/channels', () => {
  it('lists a user’s channels with unread counts, most recently active first, at most limit; another user’s cursors never show', async () => {
    const s = await serve()
    for (let i = 0; i < 3; i++) await s.hub.publish('inbox:a', 'e', i)
    await s.hub.publish('inbox:b', 'e', 0)
    await s.store.commit('inbox:a', 'ada', 1)
    await s.store.commit('inbox:b', 'ada', 1)
    await s.store.commit('inbox:a', 'bob', 3)
    await new Promise((r) => setTimeout(r, 5))
    await s.hub.publish('inbox:b', 'e', 1)

    const r = await call(s.base, '/users/ada/channels')
    expect(r.status).toBe(200)
    const channels = r.body.channels as Array<Record<string, unknown>>
    expect(channels.map((c) => [c.name, c.lastSeenOffset, c.top, c.unread])).toEqual([
      ['inbox:b', 1, 2, 1],
      ['inbox:a', 1, 3, 2],
    ])
    expect(typeof channels[0]!.lastActivity).toBe('number')
    expect(((await call(s.base, '/users/ada/channels?limit=1')).body.channels as unknown[]).length).toBe(1)
    expect(((await call(s.base, '/users/bob/channels')).body.channels as Array<{ name: string }>).map((c) => c.name)).toEqual(['inbox:a'])
    expect(await call(s.base, '/users/nobody/channels')).toEqual({ status: 200, body: { channels: [] } })
  })

  it('user ids with odd characters round-trip exactly (slash, space, percent, unicode, dot segments, a prefix of another id); bad ones are 400 RT_007', async () => {
    const s = await serve()
    await s.hub.publish('inbox:a', 'e', 1)
    const odd = ['a/b c', '100%', 'zoë 👩‍💻', '...', 'ada/../bob', "'; DROP TABLE users; --", 'ad']
    for (const id of odd) await s.store.commit('inbox:a', id, 1)
    for (const id of odd) {
      const r = await call(s.base, `/users/${enc(id)}/channels`)
      expect(r.status, id).toBe(200)
      expect((r.body.channels as Array<{ name: string }>).map((c) => c.name), id).toEqual(['inbox:a'])
    }
    // `ada` has no cursor: neither `ad` nor `ada/../bob` leaks into its list.
    expect(await call(s.base, '/users/ada/channels')).toEqual({ status: 200, body: { channels: [] } })
    for (const [path, status] of [
      [`/users/${'u'.repeat(257)}/channels`, 400],
      ['/users/%ZZ/channels', 400],
      ['/users/ada/channels?limit=0', 400],
      ['/users/ada/channels?limit=501', 400],
      ['/users/ada/channels?limit=abc', 400],
    ] as const) {
      const r = await call(s.base, path)
      expect(r.status, path).toBe(status)
      expect(r.body, path).toMatchObject({ type: 'error', code: 'RT_007' })
    }
    expect((await call(s.base, '/users/ada/channels?limit=500')).status).toBe(200)
    // `.` and `..` are dot segments, resolved before routing (by the server too, for a raw
    // request): such an id cannot be named in a path, and the request ends on another route.
    await s.store.commit('inbox:a', '..', 1)
    const dots = await raw(s.port, 'GET', '/realtime/users/%2E%2E/channels')
    expect(dots.status).toBe(404)
    expect(dots.body).not.toContain('inbox:a')
  })

  it('a store without channelsOf answers 400 RT_007', async () => {
    const s = await serve({ plain: true })
    expect(await call(s.base, '/users/ada/channels')).toMatchObject({ status: 400, body: { type: 'error', code: 'RT_007' } })
  })
})

// ------------------------------------------------------------------------------------------

describe('OpenAPI document of the new routes', () => {
  it('lists the four operations with their parameters, the edit body schema requiring data, and the scopes', async () => {
    const s = await serve()
    const doc = (await (await fetch(`${s.base}/openapi.json`)).json()) as { paths: Record<string, Record<string, { parameters?: Array<{ name: string; in: string; required?: boolean; schema: Record<string, unknown> }>; requestBody?: { content: Record<string, { schema: { required?: string[]; properties?: Record<string, unknown> } }> }; description?: string; responses: Record<string, unknown> }>> }
    const messages = doc.paths['/channels/{id}/messages/{offset}']
    expect(Object.keys(messages ?? {}).sort()).toEqual(['delete', 'patch'])
    expect(messages!.patch!.requestBody!.content['application/json']!.schema.required).toEqual(['data'])
    expect(Object.keys(messages!.patch!.requestBody!.content['application/json']!.schema.properties!)).toEqual(['data', 'by'])
    expect(messages!.patch!.parameters!.find((p) => p.name === 'offset')).toMatchObject({ in: 'path', required: true, schema: { type: 'integer', minimum: 1 } })
    expect(messages!.delete!.parameters!.map((p) => p.name)).toEqual(['id', 'offset', 'by'])
    const search = doc.paths['/channels/{id}/search']!.get!
    expect(search.parameters!.find((p) => p.name === 'q')).toMatchObject({ in: 'query', required: true, schema: { minLength: 1, maxLength: 256 } })
    expect(search.parameters!.find((p) => p.name === 'limit')!.schema).toMatchObject({ minimum: 1, maximum: 100 })
    const users = doc.paths['/users/{id}/channels']!.get!
    expect(users.parameters!.find((p) => p.name === 'limit')!.schema).toMatchObject({ minimum: 1, maximum: 500 })
    for (const [op, scope] of [[messages!.patch!, 'publish'], [messages!.delete!, 'publish'], [search, 'read'], [users, 'read']] as const) {
      expect(op.description).toContain(`\`${scope}\``)
      expect(Object.keys(op.responses)).toEqual(expect.arrayContaining(['200', '400', '401', '403', '404']))
    }
    expect(Object.keys(messages!.patch!.responses)).toContain('413')
  })
})

// ------------------------------------------------------------------------------------------

describe('behind Express (express.json() parsed the body already)', () => {
  it('edits with req.body; a text/plain body is still 400 RT_007 and revises nothing', async () => {
    const { default: express } = await import('express')
    const hub = createHub({ logger: silentLogger })
    cleanups.push(() => hub.close())
    const rt = createRealtime({ hub, apiKey: KEY })
    cleanups.push(() => rt.close())
    const app = express()
    app.use(express.json())
    app.use(express.text())
    app.use(rt.express())
    const server = createServer(app)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    cleanups.push(() => new Promise((r) => (server.closeAllConnections(), server.close(r))))
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/realtime`
    const m = await hub.publish('public:news', 'e', { v: 1 })
    const plain = await patch(base, 'public:news', m.offset!, { data: { v: 2 } }, { 'content-type': 'text/plain' })
    expect(plain).toMatchObject({ status: 400, body: { code: 'RT_007' } })
    const ok = await patch(base, 'public:news', m.offset!, { data: { v: 3 } })
    expect(ok).toMatchObject({ status: 200, body: { offset: m.offset, version: 2, deleted: false } })
    const noData = await patch(base, 'public:news', m.offset!, '')
    expect(noData).toMatchObject({ status: 400, body: { code: 'RT_007' } })
    expect((await history(hub, 'public:news'))[0]).toMatchObject({ data: { v: 3 }, version: 2 })
  })
})

describe('behind Fastify (the raw request, hijacked)', () => {
  it('edits and deletes through realtime.fastify()', async () => {
    const { default: Fastify } = await import('fastify')
    const hub = createHub({ logger: silentLogger })
    cleanups.push(() => hub.close())
    const rt = createRealtime({ hub, apiKey: KEY })
    cleanups.push(() => rt.close())
    const app = Fastify()
    await app.register(rt.fastify())
    await app.listen({ port: 0, host: '127.0.0.1' })
    cleanups.push(() => app.close())
    const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/realtime`
    const m = await hub.publish('public:news', 'e', { v: 1 }, { sender: 'ada' })
    expect(await patch(base, 'public:news', m.offset!, { data: { v: 2 }, by: 'ada' })).toMatchObject({ status: 200, body: { version: 2 } })
    expect(await patch(base, 'public:news', m.offset!, '{bad')).toMatchObject({ status: 400, body: { code: 'RT_007' } })
    expect(await del(base, 'public:news', m.offset!, '?by=bob')).toMatchObject({ status: 403, body: { code: 'RT_003' } })
    expect(await del(base, 'public:news', m.offset!)).toMatchObject({ status: 200, body: { deleted: true, version: 3 } })
  })
})

describe('route table and OpenAPI document agree', () => {
  it('every admin route is in the OpenAPI document under its method, and its description or summary names its scope for the new ones', async () => {
    const { createAdminApi } = await import('../src/admin.js')
    const { openApiDocument } = await import('../src/openapi.js')
    const hub = createHub({ logger: silentLogger })
    cleanups.push(() => hub.close())
    const doc = openApiDocument('/realtime') as { paths: Record<string, Record<string, unknown>> }
    const missing = createAdminApi(hub, undefined, 1024)
      .routes.map((r) => [r.method.toLowerCase(), r.path.replace(/:([a-z]+)/g, '{$1}')] as const)
      .filter(([method, path]) => doc.paths[path]?.[method] === undefined)
    expect(missing).toEqual([])
  })
})
