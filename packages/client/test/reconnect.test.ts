import { describe, expect, it } from 'vitest'
import { MemoryNetwork, sleep, until, trackClients, userTokens } from './memory-network.js'


let net: MemoryNetwork
const track = trackClients(() => net)

describe('reconnect and resume', () => {
  it('reconnects with backoff and resumes each channel from its position: nothing lost, nothing twice', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    const events: string[] = []
    rt.on('disconnected', (i) => events.push(`disconnected ${i.code}`))
    rt.on('reconnecting', (i) => events.push(`reconnecting ${i.attempt}`))
    rt.on('connected', () => events.push('connected'))
    const news = rt.channel('public:news')
    const inbox = rt.channel('private:user-alice')
    const got: string[] = []
    news.on('message', (m) => got.push(`news ${m.offset}`))
    inbox.on('message', (m) => got.push(`inbox ${m.offset}`))
    await news.subscribe()
    await inbox.subscribe()
    await net.hub.publish('public:news', 'p', 1)
    await net.hub.publish('private:user-alice', 'p', 1)
    await until(() => got.length === 2)

    net.last().kill()
    expect(rt.state).toBe('reconnecting')
    for (let i = 2; i <= 4; i++) {
      await net.hub.publish('public:news', 'p', i)
      await net.hub.publish('private:user-alice', 'p', i)
    }
    await until(() => got.length === 8)
    await net.hub.publish('public:news', 'p', 5)
    await until(() => got.length === 9)
    await sleep(20)
    expect(got.filter((g) => g.startsWith('news'))).toEqual(['news 1', 'news 2', 'news 3', 'news 4', 'news 5'])
    expect(got.filter((g) => g.startsWith('inbox'))).toEqual(['inbox 1', 'inbox 2', 'inbox 3', 'inbox 4'])
    expect(events).toEqual(['connected', 'disconnected 1006', 'reconnecting 1', 'connected'])
    const resubscribes = net.last().sent.filter((f) => f.type === 'subscribe')
    expect(resubscribes).toEqual([
      expect.objectContaining({ channel: 'public:news', since: { epoch: expect.any(String), offset: 1 } }),
      expect.objectContaining({ channel: 'private:user-alice', since: { epoch: expect.any(String), offset: 1 } }),
    ])
  })

  it("emits 'gap' when the hub cannot replay what was missed", async () => {
    net = new MemoryNetwork({ ...userTokens, channels: { 'short:*': { subscribe: true, publish: true, history: { maxCount: 2 } } } })
    const rt = track(net.client({ auth: 'user:alice' }))
    const ch = rt.channel('short:1')
    const gaps: unknown[] = []
    const got: number[] = []
    ch.on('gap', (g) => gaps.push(g))
    ch.on('message', (m) => got.push(m.offset!))
    await ch.subscribe()
    await net.hub.publish('short:1', 'p', 1)
    await until(() => got.length === 1)
    net.last().kill()
    for (let i = 2; i <= 6; i++) await net.hub.publish('short:1', 'p', i)
    await until(() => gaps.length === 1)
    expect(gaps[0]).toMatchObject({ reason: expect.stringContaining('retention'), position: { offset: 6 } })
    await net.hub.publish('short:1', 'p', 7)
    await until(() => got.length === 2)
    expect(got).toEqual([1, 7])
  })

  it('queues sends while disconnected, bounded, and flushes them in order on connect', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice', autoConnect: false, outboxLimit: 3 }))
    const ch = rt.channel('public:q')
    const results = [ch.send('e', 1), ch.send('e', 2), ch.send('e', 3)]
    await expect(ch.send('e', 4)).rejects.toMatchObject({ code: 'RT_006' })
    expect(rt.queued).toBe(3)
    expect(rt.state).toBe('idle')
    rt.connect()
    const offsets = (await Promise.all(results)).map((r) => r.offset)
    expect(offsets).toEqual([1, 2, 3])
    const history = await net.hub.channel('public:q').history()
    expect(history.messages.map((m) => m.data)).toEqual([1, 2, 3])
  })

  it('resends a publish whose answer was lost; the idempotency key keeps it from being published twice', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    const ch = rt.channel('public:once')
    await ch.subscribe()
    const link = net.last()
    link.dropInbound = (f) => f.type === 'published'
    const sent = ch.send('e', 'x')
    await until(() => link.sent.some((f) => f.type === 'message'))
    await sleep(10)
    link.kill()
    const r = await sent
    expect(r).toMatchObject({ offset: 1, duplicate: true })
    const first = link.sent.find((f) => f.type === 'message')
    const again = net.last().sent.find((f) => f.type === 'message')
    expect(again).toEqual(first)
    expect((await net.hub.channel('public:once').history()).messages).toHaveLength(1)
  })

  it('a publish sent while the connection drops is resent on the next connection', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    await until(() => rt.state === 'connected')
    const ch = rt.channel('public:flush')
    net.last().kill()
    const a = ch.send('e', 1)
    const b = ch.send('e', 2)
    expect(rt.queued).toBe(2)
    expect((await a).offset).toBe(1)
    expect((await b).offset).toBe(2)
  })

  it('keeps presence data across a reconnect', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    const ch = rt.channel('presence:doc', { presence: { name: 'A' } })
    await ch.subscribe()
    await ch.updatePresence({ name: 'A2' }, 'busy')
    net.last().kill()
    const again = await new Promise<unknown>((r) => ch.once('subscribed', (f) => r(f.presence)))
    expect(again).toMatchObject({ users: [expect.objectContaining({ id: 'alice', state: 'busy', data: { name: 'A2' } })] })
  })

  it('does not reconnect after the server disconnects it on purpose (4000)', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    await until(() => rt.state === 'connected')
    const errors: string[] = []
    rt.on('error', (e) => errors.push((e as { code?: string }).code ?? ''))
    await net.hub.connections.disconnect(rt.connectionId!)
    await until(() => rt.state === 'disconnected')
    await sleep(30)
    expect(net.links).toHaveLength(1)
    expect(errors).toEqual(['RT_001'])
    // An explicit connect() starts again.
    rt.connect()
    await until(() => rt.state === 'connected')
  })

  it('calls the auth function on every connect; a refused token is retried with a fresh one', async () => {
    net = new MemoryNetwork(userTokens)
    const issued: string[] = []
    const rt = track(
      net.client({
        auth: async () => {
          const t = issued.length === 0 ? 'expired' : 'user:alice'
          issued.push(t)
          return t
        },
      }),
    )
    const errors: string[] = []
    rt.on('error', (e) => errors.push((e as { code?: string }).code ?? ''))
    await until(() => rt.state === 'connected')
    expect(rt.userId).toBe('alice')
    expect(errors).toEqual(['RT_002'])
    net.last().kill()
    await until(() => rt.state === 'connected' && issued.length === 3)
    expect(issued).toEqual(['expired', 'user:alice', 'user:alice'])
  })

  it('gives up on a fixed token the hub refuses', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'bad', names: ['websocket', 'sse'] }))
    const errors: string[] = []
    rt.on('error', (e) => errors.push((e as { code?: string }).code ?? ''))
    await until(() => rt.state === 'disconnected')
    await sleep(30)
    expect(errors).toEqual(['RT_002'])
    expect(net.links.map((l) => l.name)).toEqual(['websocket'])
  })

  it('gives up after maxReconnectAttempts', async () => {
    net = new MemoryNetwork(userTokens)
    net.blocked.add('websocket')
    const rt = track(net.client({ auth: 'user:alice', maxReconnectAttempts: 3 }))
    const attempts: number[] = []
    const errors: unknown[] = []
    rt.on('reconnecting', (i) => attempts.push(i.attempt))
    rt.on('error', (e) => errors.push(e))
    // What waits for a connection fails when the client gives up.
    const subscribing = rt.channel('public:a').subscribe()
    const sending = rt.channel('public:a').send('e', 1)
    await expect(subscribing).rejects.toMatchObject({ code: 'RT_001' })
    await expect(sending).rejects.toMatchObject({ code: 'RT_001', message: 'gave up after 3 reconnect attempts' })
    expect(rt.state).toBe('disconnected')
    expect(attempts).toEqual([1, 2, 3])
    expect(net.links).toHaveLength(4)
    expect(errors).toHaveLength(1)
  })

  it('detects a dead connection with the heartbeat', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice', heartbeatIntervalMs: 20, heartbeatTimeoutMs: 20 }))
    await until(() => rt.state === 'connected')
    const first = net.last()
    await sleep(70)
    expect(first.closed).toBe(false) // pongs keep it alive
    first.dropInbound = () => true // a half-open connection: nothing comes back
    await until(() => net.links.length === 2 && rt.state === 'connected')
    expect(first.closed).toBe(true)
  })
})

describe('a new hub connection on the same transport (an SSE session that expired)', () => {
  it('resubscribes from the positions and resends what was unanswered', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'user:alice' }))
    const ch = rt.channel('public:renew')
    const got: number[] = []
    ch.on('message', (m) => got.push(m.offset!))
    await ch.subscribe()
    await net.hub.publish('public:renew', 'p', 1)
    await until(() => got.length === 1)
    const link = net.last()
    const first = rt.connectionId
    link.dropInbound = (f) => f.type === 'published'
    const sent = ch.send('mine', 'x')
    await until(() => link.sent.some((f) => f.type === 'message'))
    await sleep(5)
    link.dropInbound = undefined
    link.renew()
    await net.hub.publish('public:renew', 'p', 3)
    const r = await sent
    expect(r).toMatchObject({ offset: 2, duplicate: true })
    // The replay after offset 1 includes 2: published by the old connection, so not "own" for the new one.
    await until(() => got.length === 3)
    expect(got).toEqual([1, 2, 3])
    expect(rt.connectionId).not.toBe(first)
    expect(net.links).toHaveLength(1)
    expect(link.sent.filter((f) => f.type === 'subscribe').at(-1)).toMatchObject({ since: { offset: 1 } })
  })
})
