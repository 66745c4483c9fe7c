import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, createMemoryStore, type Hub, type MemoryMessageStore, type MessageStore, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import { afterEach, describe, expect, it } from 'vitest'

// POST <prefix>/users/:id/erase (hub.eraseUser) over a real HTTP server: scope admin, the
// counts, what a read and a search show afterwards, and the refusals.

const ADMIN = 'admin-key-0123456789abcdef'
const READER = 'read-key-0123456789abcdef'
const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function serve(store: MessageStore): Promise<{ base: string; hub: Hub }> {
  const hub = createHub({ logger: silentLogger, store })
  cleanups.push(() => hub.close())
  hub.channels.register('chat:*', { subscribe: true, offline: { maxMessages: 100, ttlMs: 60_000 } })
  const rt = createRealtime({ hub, apiKeys: { ops: { key: ADMIN, scopes: ['admin'] }, dashboard: { key: READER, scopes: ['read', 'publish'] } } })
  cleanups.push(() => rt.close())
  const server = createServer()
  rt.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => new Promise((r) => (server.closeAllConnections(), server.close(r))))
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}/realtime`, hub }
}

async function erase(base: string, userId: string, key = ADMIN, init: RequestInit = {}) {
  const res = await fetch(`${base}/users/${encodeURIComponent(userId)}/erase`, { method: 'POST', ...init, headers: { 'x-api-key': key, ...(init.headers as Record<string, string> | undefined) } })
  const text = await res.text()
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} }
}

const say = (hub: Hub, channel: string, text: string, sender: string) => hub.publish(channel, 'say', { text }, { sender })

describe('POST <prefix>/users/:id/erase', () => {
  it('erases the user’s messages in every channel and its cursors, answers the counts; other users’ messages stay; a second call finds nothing', async () => {
    const store = createMemoryStore()
    const { base, hub } = await serve(store)
    await say(hub, 'chat:1', 'erin lives at 1 Main St', 'erin')
    await say(hub, 'chat:1', 'hello erin', 'bob')
    await say(hub, 'chat:2', 'erin again', 'erin')
    store.commit('chat:1', 'erin', 2)
    store.commit('chat:1', 'bob', 2)
    const r = await erase(base, 'erin')
    expect(r).toEqual({ status: 200, body: { messages: 2, cursors: 1, keys: 0 } })
    const h1 = (await hub.channel('chat:1').history()).messages
    expect(h1.map((m) => [m.offset, m.sender ?? null, m.deleted === true])).toEqual([
      [1, null, true],
      [2, 'bob', false],
    ])
    expect(JSON.stringify(h1)).not.toContain('Main St')
    expect(store.cursor('chat:1', 'erin')).toBeUndefined()
    expect(store.cursor('chat:1', 'bob')).toMatchObject({ offset: 2 })
    expect(await erase(base, 'erin')).toEqual({ status: 200, body: { messages: 0, cursors: 0, keys: 0 } })
  })

  it('needs the admin scope (403 for a read/publish key, 401 without a key) and erases nothing then', async () => {
    const store = createMemoryStore()
    const { base, hub } = await serve(store)
    await say(hub, 'chat:1', 'kept', 'erin')
    expect((await erase(base, 'erin', READER)).status).toBe(403)
    expect((await erase(base, 'erin', 'not-a-key-0123456789')).status).toBe(401)
    const res = await fetch(`${base}/users/erin/erase`, { method: 'POST' })
    expect(res.status).toBe(401)
    await res.text()
    expect((await hub.channel('chat:1').history()).messages.map((m) => m.data)).toEqual([{ text: 'kept' }])
    // GET is not the route's method
    const get = await fetch(`${base}/users/erin/erase`, { headers: { 'x-api-key': ADMIN } })
    expect(get.status).toBe(405)
    await get.text()
  })

  it('odd user ids erase exactly that user; a bad id is 400 RT_007; a store without eraseUser is 400 RT_007', async () => {
    const store = createMemoryStore()
    const { base, hub } = await serve(store)
    for (const id of ['a/b', 'a b', '100%', 'ü', 'erin']) await say(hub, 'chat:ids', `from ${id}`, id)
    expect(await erase(base, 'a/b')).toMatchObject({ status: 200, body: { messages: 1 } })
    expect(await erase(base, 'eri')).toMatchObject({ status: 200, body: { messages: 0 } })
    const left = (await hub.channel('chat:ids').history()).messages.filter((m) => m.deleted !== true).map((m) => m.sender)
    expect(left).toEqual(['a b', '100%', 'ü', 'erin'])
    const tooLong = await erase(base, 'x'.repeat(257))
    expect(tooLong.status).toBe(400)
    expect(tooLong.body).toMatchObject({ code: 'RT_007' })

    const memory: MemoryMessageStore = createMemoryStore()
    const without = new Proxy(memory, { get: (t, k) => (k === 'eraseUser' ? undefined : (Reflect.get(t, k, t) as unknown)) }) as MessageStore
    const other = await serve(without)
    const refused = await erase(other.base, 'erin')
    expect(refused.status).toBe(400)
    expect(refused.body).toMatchObject({ code: 'RT_007', message: expect.stringContaining('eraseUser') })
  })
})
