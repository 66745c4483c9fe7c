import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import express from 'express'
import { SignJWT } from 'jose'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'
import { createChannelTokens, createJwtAuthenticator } from '../src/index.js'

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

// Two keys: one for connection tokens (the identity provider), one for channel tokens (the app's backend).
const CONNECTION_SECRET = new TextEncoder().encode('c'.repeat(48))
const CHANNEL_SECRET = new TextEncoder().encode('h'.repeat(48))

type Frame = Record<string, unknown>

/** A real `ws` client on the realtime endpoint; `reply(id)` waits for the answer to a request id. */
async function connect(base: string, token: string) {
  const ws = new WebSocket(`${base.replace('http', 'ws')}/realtime?token=${token}`, 'tidings.v1.json')
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
  const wait = (match: (f: Frame) => boolean, ms = 5000) =>
    new Promise<Frame>((resolve, reject) => {
      const found = frames.find(match)
      if (found) return resolve(found)
      const t = setTimeout(() => reject(new Error(`no matching frame in ${ms} ms; got ${JSON.stringify(frames)}`)), ms)
      waiters.push({ match, resolve: (f) => (clearTimeout(t), resolve(f)) })
    })
  await wait((f) => f.type === 'connected')
  let next = 0
  const subscribe = (channel: string, extra: Frame = {}) => {
    const id = `s${++next}`
    ws.send(JSON.stringify({ type: 'subscribe', v: 1, id, channel, ...extra }))
    return wait((f) => f.id === id)
  }
  return { ws, frames, wait, subscribe }
}

/**
 * The app: its own sessions (a cookie), its own idea of who may see which order, and the
 * endpoint that signs a channel token after checking both, next to Tidings on the same server.
 */
async function app() {
  const users = { 'sid-ada': { id: 'ada', name: 'Ada Lovelace' }, 'sid-bob': { id: 'bob', name: 'Bob' } } as const
  const owners: Record<string, string> = { '42': 'ada', '43': 'bob' }
  const tokens = createChannelTokens({ secret: CHANNEL_SECRET, algorithms: ['HS256'], maxTtlSec: 900 })
  const hub = createHub({
    logger: silentLogger,
    allowAnonymous: false,
    authenticate: createJwtAuthenticator({ secret: CONNECTION_SECRET, algorithms: ['HS256'] }),
    channels: { 'private:orders-{id}': { subscribe: tokens.rule, presence: true } },
  })
  cleanups.push(() => hub.close())

  const web = express()
  web.use(express.json())
  web.post('/auth/channel', async (req, res) => {
    const sid = /(?:^|;\s*)sid=([^;]+)/.exec(req.headers.cookie ?? '')?.[1]
    const user = sid !== undefined ? users[sid as keyof typeof users] : undefined
    if (!user) return void res.status(401).json({ error: 'not signed in' })
    const channel = String(req.body?.channel ?? '')
    const order = /^private:orders-(\d+)$/.exec(channel)?.[1]
    if (order === undefined || owners[order] !== user.id) return void res.status(403).json({ error: 'forbidden' })
    const ttlSeconds = typeof req.body?.ttlSeconds === 'number' ? req.body.ttlSeconds : undefined
    res.json({ token: await tokens.sign({ channel, userId: user.id, presence: { name: user.name }, ...(ttlSeconds ? { ttlSeconds } : {}) }) })
  })
  const server = createServer(web)
  const realtime = createRealtime({ hub })
  realtime.attach(server)
  cleanups.push(() => realtime.close())
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => new Promise((r) => (server.closeAllConnections(), server.close(r))))
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

  const connectionToken = (userId: string) =>
    new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(userId).setIssuedAt().setExpirationTime('10m').sign(CONNECTION_SECRET)
  const channelToken = async (sid: string, channel: string, ttlSeconds?: number) => {
    const r = await fetch(`${base}/auth/channel`, { method: 'POST', headers: { cookie: `sid=${sid}`, 'content-type': 'application/json' }, body: JSON.stringify({ channel, ttlSeconds }) })
    return { status: r.status, token: r.ok ? ((await r.json()) as { token: string }).token : undefined }
  }
  return { hub, base, connectionToken, channelToken }
}

describe('channel tokens through a real hub, the ws transport and an Express endpoint', () => {
  it('the presence the subscriber joins with is the one the app signed, not the one the client sends or updates', async () => {
    const a = await app()
    const { token, status } = await a.channelToken('sid-ada', 'private:orders-42')
    expect(status).toBe(200)
    const ada = await connect(a.base, await a.connectionToken('ada'))
    const answer = await ada.subscribe('private:orders-42', { auth: token, presence: { name: 'Admin (forged)', role: 'owner' } })
    expect(answer).toMatchObject({ type: 'subscribed', channel: 'private:orders-42' })
    const members = (await a.hub.presence.get('private:orders-42')).users
    expect(members).toHaveLength(1)
    expect(members[0]).toMatchObject({ id: 'ada', data: { name: 'Ada Lovelace' } })
    expect(members[0]!.data).not.toHaveProperty('role')
    // Nor can it be changed afterwards with a presence update.
    ada.ws.send(JSON.stringify({ type: 'presence:update', v: 1, id: 'p1', channel: 'private:orders-42', data: { name: 'Admin (forged)' } }))
    expect(await ada.wait((f) => f.id === 'p1')).toMatchObject({ type: 'error', code: 'RT_003' })
    expect((await a.hub.presence.get('private:orders-42')).users[0]).toMatchObject({ id: 'ada', data: { name: 'Ada Lovelace' } })
  })

  it('the endpoint refuses another user the token; a stolen token, a token for another channel and no token are refused by the hub (RT_003)', async () => {
    const a = await app()
    expect((await a.channelToken('sid-bob', 'private:orders-42')).status).toBe(403)
    expect((await a.channelToken('sid-nobody', 'private:orders-42')).status).toBe(401)
    const adas = (await a.channelToken('sid-ada', 'private:orders-42')).token!
    const bob = await connect(a.base, await a.connectionToken('bob'))
    expect(await bob.subscribe('private:orders-42', { auth: adas })).toMatchObject({ type: 'error', code: 'RT_003' })
    expect(await bob.subscribe('private:orders-42')).toMatchObject({ type: 'error', code: 'RT_003' })
    const bobs = (await a.channelToken('sid-bob', 'private:orders-43')).token!
    expect(await bob.subscribe('private:orders-42', { auth: bobs })).toMatchObject({ type: 'error', code: 'RT_003' })
    expect(await bob.subscribe('private:orders-43', { auth: bobs })).toMatchObject({ type: 'subscribed' })
    // A channel token is not a connection token.
    const stolen = new WebSocket(`${a.base.replace('http', 'ws')}/realtime?token=${adas}`, 'tidings.v1.json')
    cleanups.push(() => stolen.terminate())
    const first = await new Promise<Frame>((resolve) => stolen.once('message', (d) => resolve(JSON.parse(String(d)) as Frame)))
    expect(first).toMatchObject({ type: 'error', code: 'RT_002' })
  })

  it('the subscription ends with reason expired when the channel token does', async () => {
    const a = await app()
    const { token } = await a.channelToken('sid-ada', 'private:orders-42', 2)
    const ada = await connect(a.base, await a.connectionToken('ada'))
    expect(await ada.subscribe('private:orders-42', { auth: token })).toMatchObject({ type: 'subscribed' })
    const ended = await ada.wait((f) => f.type === 'unsubscribed' && f.channel === 'private:orders-42', 6000)
    expect(ended).toMatchObject({ reason: 'expired' })
  })
})
