/**
 * Channel authorization from the app's endpoint (an `auth` function per channel) over a real hub
 * and real sockets: called on every subscribe with the connection it is for; on `unsubscribed`
 * reason 'expired' called again and the stream resumed from its last offset (nothing lost or
 * repeated); 'revoked' is final; concurrent refreshes share one call; a failing endpoint or
 * grants that expire at once do not make the client spin.
 */
import type { HubOptions } from '@tidings/core'
import { createChannelTokens } from '@tidings/jwt'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'
import { type ChannelAuthContext, type ChannelState, type MessageFrame, Realtime, type RealtimeOptions, RealtimeError } from '../src/index.js'
import { MAX_AUTH_FAILURES, MAX_SHORT_EXPIRIES } from '../src/channel-registry.js'
import { sleep, until } from './memory-network.js'
import { type RealServer, recordingWebSocket, startRealServer } from './real-hub.js'

/** Channel tokens `ch:<channel>:<user>:<n>`; the rule accepts one for this channel and user. */
const valid = (auth: string | undefined, channel: string, userId: string | undefined) => auth?.startsWith(`ch:${channel}:${userId}:`) === true

let grantMs: number | undefined
const channels: HubOptions['channels'] = {
  'grant:*': { subscribe: (ctx) => (valid(ctx.auth, ctx.channel, ctx.identity.userId) ? (grantMs === undefined ? true : { expiresAt: Date.now() + grantMs }) : false) },
}

let server: RealServer | undefined
const clients: Realtime[] = []

afterEach(async () => {
  grantMs = undefined
  for (const c of clients.splice(0)) c.close()
  await server?.close()
  server = undefined
})

async function start(): Promise<RealServer> {
  server = await startRealServer({ options: { channels } })
  return server
}

function client(user: string, sent: Array<Record<string, unknown>> = [], options: Partial<RealtimeOptions> = {}): Realtime {
  const rt = new Realtime({ url: server!.url, auth: `user:${user}`, transports: ['websocket'], WebSocket: recordingWebSocket(sent), reconnectDelay: 20, maxReconnectDelay: 100, heartbeatIntervalMs: 0, ...options })
  clients.push(rt)
  return rt
}

/** An auth function that hands out numbered tokens and records what it was asked; `hold()` makes the next calls wait for `release()`. */
function endpoint(user: string) {
  const calls: ChannelAuthContext[] = []
  let gate: Promise<void> | undefined
  let open: (() => void) | undefined
  let failing = false
  const auth = async (ctx: ChannelAuthContext) => {
    calls.push(ctx)
    const n = calls.length
    if (gate) await gate
    if (failing) throw new Error('endpoint down')
    return `ch:${ctx.channel}:${user}:${n}`
  }
  return {
    auth,
    calls,
    hold() {
      gate = new Promise((r) => (open = r))
    },
    release() {
      gate = undefined
      open?.()
    },
    fail(on = true) {
      failing = on
    },
  }
}

const subscribes = (sent: Array<Record<string, unknown>>, channel: string) => sent.filter((f) => f['type'] === 'subscribe' && f['channel'] === channel)

function watch(ch: ReturnType<Realtime['channel']>) {
  const got: MessageFrame[] = []
  const states: ChannelState[] = []
  const ended: Array<string | undefined> = []
  const errors: RealtimeError[] = []
  ch.on('message', (m) => got.push(m))
  ch.on('state', (s) => states.push(s))
  ch.on('unsubscribed', (i) => ended.push(i.reason))
  ch.on('error', (e) => errors.push(e as RealtimeError))
  return { got, states, ended, errors }
}

describe('channel auth functions', () => {
  it('stale token on a new connection: the function is called on every subscribe with the connection it is for, and its token reaches the rule', async () => {
    const s = await start()
    const sent: Array<Record<string, unknown>> = []
    const rt = client('alice', sent)
    const ep = endpoint('alice')
    const ch = rt.channel('grant:a', { auth: ep.auth })
    await ch.subscribe()
    const first = rt.connectionId
    expect(ep.calls).toEqual([{ channel: 'grant:a', connectionId: first, userId: 'alice' }])
    expect(subscribes(sent, 'grant:a').map((f) => f['auth'])).toEqual(['ch:grant:a:alice:1'])
    // A reconnect subscribes again with a fresh token, asked for the new connection.
    const again = new Promise((r) => ch.once('subscribed', r))
    s.cut()
    await again
    expect(rt.connectionId).not.toBe(first)
    expect(ep.calls.map((c) => c.connectionId)).toEqual([first, rt.connectionId])
    expect(subscribes(sent, 'grant:a').map((f) => f['auth'])).toEqual(['ch:grant:a:alice:1', 'ch:grant:a:alice:2'])
    // A plain string still works, and a wrong one is refused by the rule.
    await expect(rt.channel('grant:b', { auth: 'ch:grant:b:mallory:1' }).subscribe()).rejects.toMatchObject({ code: 'RT_003' })
    await rt.channel('grant:c', { auth: 'ch:grant:c:alice:1' }).subscribe()
  })

  it("'expired': the function is called again and the stream resumes from its last offset, nothing lost or repeated, no 'unsubscribed' event", async () => {
    const s = await start()
    const sent: Array<Record<string, unknown>> = []
    const rt = client('alice', sent)
    const ep = endpoint('alice')
    const ch = rt.channel('grant:x', { auth: ep.auth })
    const w = watch(ch)
    await ch.subscribe()
    for (let i = 1; i <= 5; i++) await s.hub.channel('grant:x').publish('n', i)
    await until(() => w.got.length === 5, 3000, 'five messages')
    // The endpoint is slow: what is published while the channel re-authorizes must be replayed.
    ep.hold()
    expect(await s.hub.channel('grant:x').kick('alice', 'expired')).toBe(1)
    for (let i = 6; i <= 10; i++) await s.hub.channel('grant:x').publish('n', i)
    await until(() => ep.calls.length === 2, 3000, 'the second auth call')
    expect(ch.state).toBe('subscribing')
    ep.release()
    await until(() => w.got.length >= 10, 3000, 'ten messages')
    await s.hub.channel('grant:x').publish('n', 11)
    await until(() => w.got.length >= 11, 3000, 'the live message after the resubscribe')
    await sleep(30)
    expect(w.got.map((m) => m.data)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    expect(w.ended).toEqual([])
    expect(w.states).toEqual(['subscribing', 'subscribed', 'subscribing', 'subscribed'])
    const subs = subscribes(sent, 'grant:x')
    expect(subs.map((f) => f['auth'])).toEqual(['ch:grant:x:alice:1', 'ch:grant:x:alice:2'])
    expect(subs[1]!['since']).toMatchObject({ offset: 5 })
    expect(ch.state).toBe('subscribed')
  })

  it("a grant's own end (expiresAt from the rule) is renewed with a fresh token, in place", async () => {
    const s = await start()
    grantMs = 1100
    const sent: Array<Record<string, unknown>> = []
    const rt = client('alice', sent)
    const ep = endpoint('alice')
    const ch = rt.channel('grant:g', { auth: ep.auth })
    const w = watch(ch)
    await ch.subscribe()
    await s.hub.channel('grant:g').publish('n', 1)
    await until(() => ep.calls.length === 2 && ch.state === 'subscribed', 4000, 'the renewal after the grant ended')
    await s.hub.channel('grant:g').publish('n', 2)
    await until(() => w.got.length === 2, 3000, 'the message after the renewal')
    expect(w.got.map((m) => m.data)).toEqual([1, 2])
    expect(w.ended).toEqual([])
    expect(subscribes(sent, 'grant:g').map((f) => f['auth'])).toEqual(['ch:grant:g:alice:1', 'ch:grant:g:alice:2'])
  })

  it('expired channel JWT (@tidings/jwt) signed by the app endpoint: renewed with a freshly signed one, the stream goes on', async () => {
    const tokens = createChannelTokens({ secret: 'a-channel-token-secret-of-32-bytes!!', algorithms: ['HS256'], clockToleranceSec: 0 })
    server = await startRealServer({
      options: { channels: { 'orders:{id}': { subscribe: tokens.rule } } },
      app: async (req, res) => {
        const u = new URL(req.url ?? '/', 'http://x')
        if (u.pathname !== '/app/channel-token') return false
        // The app's own checks go here (session cookie, order ownership); the user comes from its session.
        const token = await tokens.sign({ channel: u.searchParams.get('channel')!, userId: String(req.headers['x-user']), ttlSeconds: 2 })
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token }))
        return true
      },
    })
    const s = server
    const sent: Array<Record<string, unknown>> = []
    const rt = client('alice', sent)
    const calls: ChannelAuthContext[] = []
    const ch = rt.channel('orders:42', {
      auth: async (ctx) => {
        calls.push(ctx)
        const r = await fetch(`${s.url.replace(/\/realtime$/, '')}/app/channel-token?channel=${encodeURIComponent(ctx.channel)}`, { headers: { 'x-user': ctx.userId ?? '' } })
        return ((await r.json()) as { token: string }).token
      },
    })
    const w = watch(ch)
    await ch.subscribe()
    await s.hub.channel('orders:42').publish('status', 'paid')
    await until(() => calls.length === 2 && ch.state === 'subscribed', 5000, 'the renewal after the token expired')
    await s.hub.channel('orders:42').publish('status', 'shipped')
    await until(() => w.got.length === 2, 3000, 'the message after the renewal')
    expect(w.got.map((m) => m.data)).toEqual(['paid', 'shipped'])
    expect(w.ended).toEqual([])
    const tokensSent = subscribes(sent, 'orders:42').map((f) => f['auth'])
    expect(tokensSent).toHaveLength(2)
    expect(tokensSent[0]).not.toBe(tokensSent[1])
    // A token for another channel is refused by the rule.
    const other = await tokens.sign({ channel: 'orders:42', userId: 'alice' })
    await expect(rt.channel('orders:43', { auth: other }).subscribe()).rejects.toMatchObject({ code: 'RT_003' })
  })

  it("'revoked' is final: 'unsubscribed' with the reason, no auth call, no resubscribe, not even after a reconnect", async () => {
    const s = await start()
    const sent: Array<Record<string, unknown>> = []
    const rt = client('alice', sent)
    const ep = endpoint('alice')
    const ch = rt.channel('grant:r', { auth: ep.auth })
    const w = watch(ch)
    await ch.subscribe()
    await s.hub.channel('grant:r').kick('alice', 'revoked')
    await until(() => w.ended.length === 1, 3000, 'the unsubscribed event')
    expect(w.ended).toEqual(['revoked'])
    expect(ch.state).toBe('unsubscribed')
    const reconnected = new Promise((r) => rt.once('connected', r))
    s.cut()
    await reconnected
    await sleep(100)
    await s.hub.channel('grant:r').publish('n', 'after revocation')
    await sleep(50)
    expect(ep.calls).toHaveLength(1)
    expect(subscribes(sent, 'grant:r')).toHaveLength(1)
    expect(w.got).toEqual([])
  })

  it('refresh races: an expiry and a send needing the key while the auth call is pending share that call; one subscribe goes out', async () => {
    const s = await start()
    const sent: Array<Record<string, unknown>> = []
    const rt = client('alice', sent)
    const ep = endpoint('alice')
    const key = { id: 'k1', key: new Uint8Array(32).fill(7) }
    // The key comes only with the auth result.
    const ch = rt.channel('grant:c', { auth: async (ctx) => ({ token: await ep.auth(ctx), key }), encryption: true })
    const w = watch(ch)
    await ch.subscribe()
    ep.hold()
    await s.hub.channel('grant:c').kick('alice', 'expired')
    await until(() => ep.calls.length === 2, 3000, 'the auth call after the expiry')
    ch.refreshKey()
    const sending = ch.send('m', 'sealed after the refresh')
    const alsoSending = ch.send('m', 'second')
    await sleep(50)
    expect(ep.calls).toHaveLength(2)
    ep.release()
    await Promise.all([sending, alsoSending])
    await until(() => ch.state === 'subscribed', 3000, 'subscribed again')
    await sleep(30)
    expect(ep.calls).toHaveLength(2)
    expect(subscribes(sent, 'grant:c')).toHaveLength(2)
    expect(w.errors).toEqual([])
    const stored = (await s.hub.channel('grant:c').history()).messages.map((m) => (m.data as { kid?: string }).kid)
    expect(stored).toEqual(['k1', 'k1'])
  })

  it('stale connection id: a token asked for a connection that dropped meanwhile is not used; the function is asked again for the new one', async () => {
    const s = await start()
    const sent: Array<Record<string, unknown>> = []
    const rt = client('alice', sent)
    const ep = endpoint('alice')
    const ch = rt.channel('grant:s', { auth: ep.auth })
    await ch.subscribe()
    const old = rt.connectionId
    ep.hold()
    await s.hub.channel('grant:s').kick('alice', 'expired')
    await until(() => ep.calls.length === 2, 3000, 'the auth call after the expiry')
    expect(ep.calls[1]!.connectionId).toBe(old)
    const reconnected = new Promise((r) => rt.once('connected', r))
    s.cut()
    await reconnected
    expect(rt.connectionId).not.toBe(old)
    ep.release()
    await until(() => ch.state === 'subscribed', 3000, 'subscribed on the new connection')
    expect(ep.calls.map((c) => c.connectionId)).toEqual([old, old, rt.connectionId])
    // Only the token asked for the new connection was sent on it.
    expect(subscribes(sent, 'grant:s').map((f) => f['auth'])).toEqual(['ch:grant:s:alice:1', 'ch:grant:s:alice:3'])
  })

  it(`a failing endpoint does not spin: retried with backoff, given up after ${MAX_AUTH_FAILURES} failures in a row ('auth-failed')`, async () => {
    const s = await start()
    const sent: Array<Record<string, unknown>> = []
    const rt = client('alice', sent)
    const ep = endpoint('alice')
    const ch = rt.channel('grant:f', { auth: ep.auth })
    const w = watch(ch)
    await ch.subscribe()
    ep.fail()
    const t0 = Date.now()
    await s.hub.channel('grant:f').kick('alice', 'expired')
    await until(() => w.ended.length === 1, 5000, 'giving up')
    const elapsed = Date.now() - t0
    expect(w.ended).toEqual(['auth-failed'])
    expect(ep.calls).toHaveLength(1 + MAX_AUTH_FAILURES)
    expect(w.errors.every((e) => e.code === 'RT_002')).toBe(true)
    expect(w.errors).toHaveLength(MAX_AUTH_FAILURES)
    expect(w.errors.at(-1)!.message).toMatch(/not trying again/)
    // Backoff with equal jitter (base 20 ms, cap 100 ms): at least 10 + 20 + 40 + 50 ms between the five calls.
    expect(elapsed).toBeGreaterThanOrEqual(120)
    expect(ch.state).toBe('unsubscribed')
    await sleep(200)
    expect(ep.calls).toHaveLength(1 + MAX_AUTH_FAILURES)
    expect(subscribes(sent, 'grant:f')).toHaveLength(1)
    // The application may try again once the endpoint works.
    ep.fail(false)
    await ch.subscribe()
    expect(ch.state).toBe('subscribed')
  })

  it('a first subscribe whose auth function throws rejects with RT_002 and stops there', async () => {
    await start()
    const sent: Array<Record<string, unknown>> = []
    const rt = client('alice', sent)
    let calls = 0
    const ch = rt.channel('grant:t', {
      auth: () => {
        calls++
        throw new Error('no session')
      },
    })
    const e = await ch.subscribe().then(() => undefined, (err: unknown) => err)
    expect(e).toBeInstanceOf(RealtimeError)
    expect((e as RealtimeError).code).toBe('RT_002')
    expect((e as RealtimeError).message).toMatch(/no session/)
    await sleep(100)
    expect(calls).toBe(1)
    expect(ch.state).toBe('unsubscribed')
    expect(subscribes(sent, 'grant:t')).toHaveLength(0)
  })

  it(`grants that expire at once: resubscribes back off and stop after ${MAX_SHORT_EXPIRIES} in a row`, async () => {
    const s = await start()
    const sent: Array<Record<string, unknown>> = []
    const rt = client('alice', sent)
    const ep = endpoint('alice')
    const ch = rt.channel('grant:z', { auth: ep.auth })
    const w = watch(ch)
    await ch.subscribe()
    const at: number[] = []
    s.hub.on('subscribe', (e) => {
      if (e.channel !== 'grant:z') return
      at.push(Date.now())
      setTimeout(() => void s.hub.channel('grant:z').kick('alice', 'expired'), 1)
    })
    await s.hub.channel('grant:z').kick('alice', 'expired')
    await until(() => w.ended.length === 1, 5000, 'giving up')
    expect(w.ended).toEqual(['expired'])
    expect(w.errors.at(-1)!.message).toMatch(/expired \d+ times in a row/)
    // Each subscription lived less than a second: every renewal waits longer than the one before.
    expect(subscribes(sent, 'grant:z')).toHaveLength(1 + MAX_SHORT_EXPIRIES)
    const gaps = at.slice(1).map((t, i) => t - at[i]!)
    expect(gaps.slice(-2).every((g) => g >= 40)).toBe(true)
    await sleep(200)
    expect(subscribes(sent, 'grant:z')).toHaveLength(1 + MAX_SHORT_EXPIRIES)
  })
})
