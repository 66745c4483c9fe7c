import { describe, expect, it } from 'vitest'
import { type HistogramSnapshot, type HubOptions, type MessageStore, createMemoryStore } from '@tidings/core'
import { createManualClock } from '@tidings/core/testing'
import { testHubs } from './helpers.js'

const CHANNELS: HubOptions['channels'] = {
  'chat:*': {},
  'ack:*': { delivery: 'at-least-once' },
  'team:*': { delivery: 'at-least-once', offline: {} },
}

const makeHub = testHubs({ channels: CHANNELS, delivery: { ackTimeoutMs: 60_000 } })

/** Observations in the bucket whose upper bound is `le` (not cumulative). */
function inBucket(h: HistogramSnapshot, le: number): number {
  const i = h.le.indexOf(le)
  if (i < 0) throw new Error(`no bucket ${le}`)
  return h.counts[i]! - (i > 0 ? h.counts[i - 1]! : 0)
}

/** A store whose appends take `ms` of the manual clock: the publish path's own time. */
function slowStore(clock: ReturnType<typeof createManualClock>, ms: number): MessageStore {
  const inner = createMemoryStore()
  return new Proxy(inner, {
    get(target, key, receiver) {
      if (key === 'append') {
        return (...args: Parameters<MessageStore['append']>) => {
          clock.advance(ms)
          return target.append(...args)
        }
      }
      return Reflect.get(target, key, receiver) as unknown
    },
  })
}

describe('hub metrics', () => {
  it('publish latency is recorded once per publish (not per delivery) and includes a slow store append', async () => {
    const clock = createManualClock()
    const t = makeHub({ clock, store: slowStore(clock, 30) })
    const clients = await Promise.all([t.connect({ userId: 'a' }), t.connect({ userId: 'b' }), t.connect({ userId: 'c' })])
    for (const c of clients) await c.subscribe('chat:room')
    await t.hub.publish('chat:room', 'm', 1)
    await t.hub.publish('chat:room', 'm', 2)
    await t.settle()
    const h = t.hub.metrics().publishLatency
    expect(h.count).toBe(2)
    expect(inBucket(h, 0.05)).toBe(2)
    expect(h.counts[h.le.indexOf(0.025)]).toBe(0)
    expect(h.sum).toBeCloseTo(0.06, 6)
  })

  it('counts connections per transport, closes by code and the connection duration at close', async () => {
    const t = makeHub()
    const a = await t.connect({ userId: 'a' })
    await t.connect({ userId: 'b' })
    await t.advance(90_000)
    a.close(1000, 'bye')
    await t.settle()
    const m = t.hub.metrics()
    expect(m.transports.memory).toEqual({ open: 1, opened: 2 })
    expect(m.connections).toBe(1)
    expect(m.disconnects['1000']).toBe(1)
    expect(m.disconnects['1006']).toBe(0)
    expect(m.connectionDuration.count).toBe(1)
    expect(inBucket(m.connectionDuration, 300)).toBe(1)
    expect(m.connectionDuration.sum).toBe(90)
    expect(m.peakConnections).toBe(2)
  })

  it('counts a resume by its outcome and a reconnection once per connection; an offline queue is not a resume', async () => {
    const t = makeHub()
    const pub = await t.connect({ userId: 'p' })
    const first = await pub.subscribe('chat:r')
    for (let i = 0; i < 3; i++) await t.hub.publish('chat:r', 'm', i)
    const epoch = first.position!.epoch
    const back = await t.connect({ userId: 'q' })
    expect((await back.subscribe('chat:r', { since: { epoch, offset: 1 } })).recovered).toBe(true)
    await back.unsubscribe('chat:r')
    expect((await back.subscribe('chat:r', { since: { epoch: 'stale-epoch', offset: 1 } })).recovered).toBe(false)
    const offline = await t.connect({ userId: 'o' })
    await offline.subscribe('team:x')
    await t.settle()
    const m = t.hub.metrics()
    expect(m.resumes).toEqual({ recovered: 1, notRecovered: 1 })
    expect(m.reconnections).toBe(1)
  })

  it('counts the subscribers told that a channel history was reset as gaps reported', async () => {
    const store = createMemoryStore()
    const t = makeHub({ store })
    const a = await t.connect({ userId: 'a' })
    const b = await t.connect({ userId: 'b' })
    await a.subscribe('chat:g')
    await b.subscribe('chat:g')
    await t.hub.publish('chat:g', 'm', 1)
    store.reset()
    await t.hub.publish('chat:g', 'm', 2)
    await t.settle()
    expect(t.hub.metrics().gapsReported).toBe(2)
  })

  it('shows acknowledgments pending per subscription and message until the subscriber acks', async () => {
    const t = makeHub()
    const a = await t.connect({ userId: 'a' })
    await a.subscribe('ack:x')
    let offset = 0
    for (let i = 0; i < 3; i++) offset = (await t.hub.publish('ack:x', 'm', i)).offset!
    await t.settle()
    expect(t.hub.metrics().acksPending).toEqual({ subscriptions: 1, messages: 3 })
    a.ack('ack:x', offset)
    await t.settle()
    expect(t.hub.metrics().acksPending.messages).toBe(0)
  })

  it('counts a slow consumer closed with 4009 under its own close code and as a slow-consumer disconnect', async () => {
    const t = makeHub({ limits: { maxQueuedBytes: 2_000, highWaterMark: 500 } })
    const slow = await t.connect({ userId: 's' })
    await slow.subscribe('chat:s')
    slow.pause()
    for (let i = 0; i < 50 && !slow.closed; i++) await t.hub.publish('chat:s', 'm', 'x'.repeat(200))
    await t.settle()
    const m = t.hub.metrics()
    expect(m.slowConsumers.disconnected).toBe(1)
    expect(m.disconnects['4009']).toBe(1)
  })
})

describe('hub analytics', () => {
  it('reports peak concurrent connections with their time, usage per hour of day and engagement per user', async () => {
    const clock = createManualClock(Date.UTC(2026, 0, 1, 9, 0))
    const t = makeHub({ clock })
    const ada = await t.connect({ userId: 'ada' })
    const bob = await t.connect({ userId: 'bob' })
    await ada.subscribe('chat:busy')
    await bob.subscribe('chat:busy')
    await bob.subscribe('chat:quiet')
    const peakAt = clock.now()
    await t.advance(2 * 3_600_000) // 11:00 UTC
    for (let i = 0; i < 3; i++) await ada.publish('chat:busy', 'm', i)
    await bob.publish('chat:quiet', 'm', 0)
    await t.hub.publish('chat:busy', 'server', 0)
    bob.close()
    await t.settle()
    await t.advance(60_000)
    const r = t.hub.analytics()
    expect(r.connections).toEqual({ current: 1, peak: 2, peakAt })
    expect(r.hours).toHaveLength(24)
    expect(r.hours[9]).toMatchObject({ connections: 2, peakConnections: 2, messages: 0 })
    // No connection opened at 11:00, but two stayed open through it.
    expect(r.hours[11]).toMatchObject({ messages: 5, connections: 0, peakConnections: 2 })
    expect(r.busiestHour).toBe(11)
    expect(r.peakConnectionsHour).toBe(9)
    expect(r.channels.mostActive.map((c) => [c.channel, c.messages])).toEqual([
      ['chat:busy', 4],
      ['chat:quiet', 1],
    ])
    expect(r.channels.popular[0]).toMatchObject({ channel: 'chat:busy', subscribers: 1 })
    const byUser = Object.fromEntries(r.users.top.map((u) => [u.userId, u]))
    expect(byUser.ada).toMatchObject({ messagesSent: 3, online: true, connections: 1, connectedMs: 2 * 3_600_000 + 60_000 })
    expect(byUser.bob).toMatchObject({ messagesSent: 1, online: false, connections: 1, connectedMs: 2 * 3_600_000 })
    expect(r.users.top[0]!.userId).toBe('ada')
  })

  it('keeps the per-user and per-channel records bounded (LRU) however many names pass through', async () => {
    const t = makeHub()
    for (let i = 0; i < 10_050; i++) await t.hub.publish(`chat:c${i}`, 'm', i)
    const r = t.hub.analytics({ limit: 3 })
    expect(r.channels.mostActive).toHaveLength(3)
    expect(r.channels.tracked).toBe(10_000)
    expect(r.hours[0]!.messages).toBe(10_050)
  })
})
