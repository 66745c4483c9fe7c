/**
 * Request timeouts: an answer that never comes (dropped by a congested connection) rejects the
 * request with RT_001 `details.timeout` instead of leaving `send()` hanging until a reconnect;
 * time spent queued while disconnected does not count (the outbox semantics hold).
 */
import { describe, expect, it } from 'vitest'
import { RealtimeError } from '../src/index.js'
import { MemoryNetwork, sleep, trackClients, until, userTokens } from './memory-network.js'

let net: MemoryNetwork
const track = trackClients(() => net)

describe('request timeouts', () => {
  it('a publish whose answer is dropped rejects with RT_001 (timeout) instead of hanging', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice', requestTimeoutMs: 150 }))
    const ch = rt.channel('public:x')
    await ch.subscribe()
    net.last().dropInbound = (f) => f.type === 'published'
    const started = Date.now()
    const e = await ch.send('e', 1).then(() => undefined, (err: unknown) => err)
    expect(e).toBeInstanceOf(RealtimeError)
    expect((e as RealtimeError).code).toBe('RT_001')
    expect((e as RealtimeError).details).toMatchObject({ timeout: true, timeoutMs: 150 })
    expect(Date.now() - started).toBeGreaterThanOrEqual(140)
    // The connection still works once answers come through again.
    net.last().dropInbound = undefined
    expect((await ch.send('e', 2)).offset).toBe(2)
  })

  it('a history request and a presence request time out too', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice', requestTimeoutMs: 100 }))
    const ch = rt.channel('presence:room')
    await ch.subscribe()
    net.last().dropInbound = (f) => f.type === 'presence' || f.type === 'history' || f.type === 'error'
    expect((await ch.getPresence().then(() => undefined, (e: RealtimeError) => e))?.details).toMatchObject({ timeout: true })
    expect((await ch.history().then(() => undefined, (e: RealtimeError) => e))?.code).toBe('RT_001')
  })

  it('a request queued while disconnected does not time out: it is sent on reconnect and answered', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice', requestTimeoutMs: 100, reconnectDelay: 300, maxReconnectDelay: 300, random: () => 0.99 }))
    const ch = rt.channel('public:x')
    await ch.subscribe()
    net.last().kill()
    const sent = ch.send('e', 'queued')
    await sleep(200)
    expect(rt.queued).toBe(1)
    const r = await sent
    expect(r.offset).toBe(1)
  })

  it('a request in flight when the connection drops is re-sent on the next connection (its timeout restarts), published once', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice', requestTimeoutMs: 300, reconnectDelay: 250, maxReconnectDelay: 250, random: () => 0.99 }))
    const ch = rt.channel('public:x')
    await ch.subscribe()
    const first = net.last()
    first.dropInbound = (f) => f.type === 'published'
    const sent = ch.send('e', 'in flight')
    await until(() => first.sent.some((f) => f.type === 'message'))
    await sleep(200)
    first.kill()
    // 200 ms out + 250 ms down: past 300 ms in total, but under 300 ms on any one connection.
    const r = await sent
    expect(r.duplicate).toBe(true)
    expect(r.offset).toBe(1)
  })
})
