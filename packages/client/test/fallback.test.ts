import { describe, expect, it } from 'vitest'
import { MemoryNetwork, sleep, until, trackClients, userTokens } from './memory-network.js'

const ALL = ['websocket', 'sse', 'long-poll']

let net: MemoryNetwork
const track = trackClients(() => net)

describe('transport fallback and upgrade', () => {
  it('tries the transports in order when one cannot open', async () => {
    net = new MemoryNetwork(userTokens)
    net.blocked.add('websocket')
    net.blocked.add('sse')
    const rt = track(net.client({ auth: 'user:alice', names: ALL, upgradeIntervalMs: 0 }))
    await until(() => rt.state === 'connected')
    expect(rt.transport).toBe('long-poll')
    expect(net.links.map((l) => l.name)).toEqual(['websocket', 'sse', 'long-poll'])
  })

  it('moves on when a transport hangs (connect timeout)', async () => {
    net = new MemoryNetwork(userTokens)
    net.hang.add('websocket')
    const rt = track(net.client({ auth: 'user:alice', names: ALL, connectTimeoutMs: 30, upgradeIntervalMs: 0 }))
    await until(() => rt.state === 'connected')
    expect(rt.transport).toBe('sse')
  })

  it('reconnects over the transport that worked last', async () => {
    net = new MemoryNetwork(userTokens)
    net.blocked.add('websocket')
    const rt = track(net.client({ auth: 'user:alice', names: ALL, upgradeIntervalMs: 0 }))
    await until(() => rt.state === 'connected')
    net.last().kill()
    await until(() => rt.state === 'connected' && net.links.length === 3)
    expect(net.links.map((l) => l.name)).toEqual(['websocket', 'sse', 'sse'])
  })

  it('does not fall back when the hub refuses the connection', async () => {
    net = new MemoryNetwork(userTokens)
    const rt = track(net.client({ auth: 'nobody', names: ALL }))
    await until(() => rt.state === 'disconnected')
    expect(net.links.map((l) => l.name)).toEqual(['websocket'])
  })

  it('switches back to WebSocket when it works again, without losing or repeating a message', async () => {
    net = new MemoryNetwork(userTokens)
    net.blocked.add('websocket')
    const rt = track(net.client({ auth: 'user:alice', names: ALL, upgradeIntervalMs: 40 }))
    const transports: string[] = []
    rt.on('connected', (i) => transports.push(i.transport))
    const news = rt.channel('public:live')
    const inbox = rt.channel('private:user-alice')
    const got: number[] = []
    const gotInbox: number[] = []
    news.on('message', (m) => got.push(m.offset!))
    inbox.on('message', (m) => gotInbox.push(m.offset!))
    await news.subscribe()
    await inbox.subscribe()
    expect(rt.transport).toBe('sse')

    // Publish steadily while the probe fails, then succeeds and the client switches.
    let n = 0
    const publishing = (async () => {
      while (n < 60) {
        n++
        await net.hub.publish('public:live', 'tick', n)
        await net.hub.publish('private:user-alice', 'tick', n)
        if (n === 10) net.blocked.delete('websocket')
        await sleep(3)
      }
    })()
    const sends = Array.from({ length: 20 }, (_, i) => sleep(i * 8).then(() => news.send('mine', i)))
    await publishing
    const results = await Promise.all(sends)
    const own = new Set(results.map((r) => r.offset))
    const others = () => got.filter((o) => !own.has(o))
    await until(() => others().length === 60 && gotInbox.length === 60, 3000, 'all messages')
    await sleep(30)
    expect(rt.transport).toBe('websocket')
    expect(transports).toEqual(['sse', 'websocket'])
    // Every message of others once, in order. The client's own publishes are not echoed to the
    // connection that made them, but one made on the SSE connection is replayed to the new
    // WebSocket connection when it falls after the resume position (hub semantics: "own" is per connection).
    expect(others()).toEqual(Array.from({ length: 80 }, (_, i) => i + 1).filter((o) => !own.has(o)))
    expect(got).toEqual([...new Set(got)].sort((a, b) => a - b))
    expect(gotInbox).toEqual(Array.from({ length: 60 }, (_, i) => i + 1))
    // Every send published exactly once.
    const history = await net.hub.channel('public:live').history({ limit: 1000 })
    expect(history.messages.filter((m) => m.event === 'mine').map((m) => m.data)).toEqual(Array.from({ length: 20 }, (_, i) => i))
    // The fallback connection was closed; one connection remains.
    expect(net.open.map((l) => l.name)).toEqual(['websocket'])
    expect(net.hub.connections.local({ userId: 'alice' })).toHaveLength(1)
  })

  it('keeps the fallback while the probe fails', async () => {
    net = new MemoryNetwork(userTokens)
    net.blocked.add('websocket')
    const rt = track(net.client({ auth: 'user:alice', names: ALL, upgradeIntervalMs: 15 }))
    await until(() => rt.state === 'connected')
    await sleep(80)
    expect(rt.transport).toBe('sse')
    expect(rt.state).toBe('connected')
    expect(net.links.filter((l) => l.name === 'websocket').length).toBeGreaterThanOrEqual(3)
    expect(net.links.filter((l) => l.name === 'sse')).toHaveLength(1)
  })
})
