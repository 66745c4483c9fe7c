/**
 * Credentials refresh over the in-memory network (a real hub; `auth:expiring` is injected where
 * the hub does not schedule it itself): the auth function is called, an `auth` frame goes out,
 * the hub's `authenticated` answer completes it; a refused refresh is an error event; a 4001
 * close is not retried with the token the hub just refused.
 */
import { describe, expect, it } from 'vitest'
import { RealtimeError } from '../src/index.js'
import { MemoryNetwork, sleep, trackClients, until } from './memory-network.js'

/** Tokens `user:<id>` or `user:<id>;<version>` (versions: refreshed tokens of the same user). */
const userTokens = { authenticate: async (r: { token?: string | undefined }) => (r.token?.startsWith('user:') ? { userId: r.token.slice(5).split(';')[0]! } : null) }

let net: MemoryNetwork
const track = trackClients(() => net)

describe('credentials refresh', () => {
  it('auth:expiring: the auth function is called and an auth frame refreshes the connection in place', async () => {
    net = new MemoryNetwork(userTokens)
    let calls = 0
    const rt = track(net.client({ auth: () => `user:alice;${++calls}` }))
    const refreshed: unknown[] = []
    rt.on('authenticated', (i) => refreshed.push(i))
    await new Promise((r) => rt.once('connected', r))
    const link = net.last()
    expect(calls).toBe(1)
    link.inject({ type: 'auth:expiring', expiresAt: Date.now() + 1000, closesAt: Date.now() + 2000 })
    await until(() => refreshed.length === 1, 3000, 'the authenticated answer')
    const auth = link.sent.filter((f) => f.type === 'auth')
    expect(auth).toEqual([{ type: 'auth', id: expect.any(Number), token: 'user:alice;2' }])
    expect(refreshed).toEqual([{ userId: 'alice', expiresAt: undefined }])
    // The same connection: no reconnect happened.
    expect(net.links).toHaveLength(1)
    expect(rt.state).toBe('connected')
  })

  it('reauthenticate() with a token the hub refuses rejects RT_002 and leaves the connection working', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: () => 'user:alice' }))
    await new Promise((r) => rt.once('connected', r))
    const e = await rt.reauthenticate('nonsense').then(() => undefined, (err: unknown) => err)
    expect(e).toBeInstanceOf(RealtimeError)
    expect((e as RealtimeError).code).toBe('RT_002')
    expect((await rt.reauthenticate()).userId).toBe('alice')
    const ch = rt.channel('public:x')
    await ch.subscribe()
    expect((await ch.send('e', 1)).offset).toBe(1)
  })

  it('a refresh that fails (auth function throws) is surfaced as an error event, not swallowed', async () => {
    net = new MemoryNetwork(userTokens)
    let fail = false
    const rt = track(net.client({ auth: () => {
      if (fail) throw new Error('identity provider down')
      return 'user:alice'
    } }))
    const errors: RealtimeError[] = []
    rt.on('error', (e) => errors.push(e as RealtimeError))
    await new Promise((r) => rt.once('connected', r))
    fail = true
    net.last().inject({ type: 'auth:expiring', expiresAt: Date.now() + 1000, closesAt: Date.now() + 2000 })
    await until(() => errors.length === 1, 3000, 'the error event')
    expect(errors[0]!.code).toBe('RT_002')
    expect(errors[0]!.message).toMatch(/could not refresh credentials.*identity provider down/)
  })

  it('a fixed token cannot be refreshed: auth:expiring says so on the error event', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    const errors: RealtimeError[] = []
    rt.on('error', (e) => errors.push(e as RealtimeError))
    await new Promise((r) => rt.once('connected', r))
    net.last().inject({ type: 'auth:expiring', expiresAt: Date.now() + 1000, closesAt: Date.now() + 2000 })
    await until(() => errors.length === 1)
    expect(errors[0]!.message).toMatch(/cannot be refreshed/)
    expect(net.last().sent.some((f) => f.type === 'auth')).toBe(false)
  })

  it('4001 with a stale token: not reconnected with the same token in a tight loop; a fresh token reconnects', async () => {
    net = new MemoryNetwork(userTokens)
    let token = 'user:alice'
    const rt = track(net.client({ auth: () => token, reconnectDelay: 20, maxReconnectDelay: 200 }))
    const errors: string[] = []
    rt.on('error', (e) => errors.push(e.message))
    await new Promise((r) => rt.once('connected', r))
    expect(net.links).toHaveLength(1)
    net.last().closeFromServer(4001, 'credentials expired')
    await sleep(400)
    // The function kept giving the refused token: no connection was opened with it.
    expect(net.links).toHaveLength(1)
    expect(rt.state).toBe('reconnecting')
    expect(errors.some((m) => /expired or refused/.test(m))).toBe(true)
    expect(errors.filter((m) => /refused last time/.test(m)).length).toBeGreaterThan(0)
    // Backoff, not a tight loop (which would make hundreds): with full jitter from a 20 ms base, a dozen at most in 400 ms.
    expect(errors.filter((m) => /refused last time/.test(m)).length).toBeLessThan(15)
    // A different token from the function: reconnected at once (on the next backoff step).
    token = 'user:alice;v2'
    await until(() => rt.state === 'connected', 3000, 'the reconnect with a fresh token')
    expect(net.links).toHaveLength(2)
    expect(rt.userId).toBe('alice')
  })
})
