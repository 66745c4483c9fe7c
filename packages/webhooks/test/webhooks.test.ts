import { createManualClock, createMemoryBus, createMemoryPresenceStore, createMemoryStore } from '@tidings/core'
import { createTestHub, type TestHub } from '@tidings/core/testing'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import express from 'express'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import {
  computeSignature,
  createWebhooks,
  verifyWebhook,
  WebhookError,
  type WebhookEndpoint,
  type Webhooks,
  type WebhooksOptions,
  WebhookVerificationError,
} from '../src/index.js'
import { type Answer, Receiver } from './receiver.js'

const SECRET = 'whsec_0123456789abcdef0123456789abcdef'
const OLD_SECRET = 'whsec_old_old_old_old_old_old_old_old'

const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close()
})

async function setup(
  answer?: (n: number) => Answer,
  endpoint: Partial<WebhookEndpoint> = {},
  options: Partial<WebhooksOptions> = {},
): Promise<{ t: TestHub; receiver: Receiver; webhooks: Webhooks; errors: WebhookError[] }> {
  const receiver = await Receiver.start(answer)
  const t = createTestHub({ nodeId: 'node-a', limits: { messagesPerSecond: 100_000 } })
  const errors: WebhookError[] = []
  const webhooks = createWebhooks(t.hub, {
    endpoints: { url: receiver.url, secret: SECRET, events: ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed', 'client_event'], ...endpoint },
    batchMs: 20,
    initialDelayMs: 50,
    onError: (e) => errors.push(e),
    ...options,
  })
  open.push(receiver, t, { close: () => webhooks.close({ timeoutMs: 500 }) })
  return { t, receiver, webhooks, errors }
}

/** A client publishes `n` client events on `channel`, one after the other. */
async function publishMany(t: TestHub, n: number, channel = 'public:chat'): Promise<void> {
  const alice = await t.connect({ userId: 'alice' })
  for (let i = 0; i < n; i++) await alice.publish(channel, 'typed', { i })
  await t.settle()
}

const totals = { sent: 0, acknowledged: 0, retries: 0, duplicatesAfterAck: 0 }
afterAll(() => {
  console.log(`webhooks: sent=${totals.sent} acknowledged=${totals.acknowledged} duplicates-after-ack=${totals.duplicatesAfterAck} retries=${totals.retries}`)
})
function tally(receiver: Receiver, webhooks: Webhooks): void {
  const s = webhooks.stats()[0]!
  totals.sent += s.requests
  totals.acknowledged += s.acknowledged
  totals.retries += s.retries
  totals.duplicatesAfterAck += receiver.duplicatesAfterAck
}

describe('events and payloads', () => {
  it('occupied, member added, client event, member removed and vacated reach the receiver once each, in the order the hub saw them', async () => {
    const { t, receiver, webhooks } = await setup()
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('presence:lobby')
    await alice.publish('presence:lobby', 'wave', { hi: 1 })
    await alice.unsubscribe('presence:lobby')
    await t.settle()
    await webhooks.flush()
    const events = receiver.events()
    expect(events.map((e) => e.name)).toEqual(['channel_occupied', 'member_added', 'client_event', 'member_removed', 'channel_vacated'])
    for (const e of events) {
      expect(e.channel).toBe('presence:lobby')
      expect(e.node).toBe('node-a')
      expect(typeof e.time_ms).toBe('number')
    }
    expect(events[1]).toMatchObject({ user_id: 'alice' })
    expect(events[2]).toMatchObject({ event: 'wave', data: { hi: 1 }, user_id: 'alice', connection_id: alice.connectionId })
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length)
    tally(receiver, webhooks)
  })

  it('a server-side publish is not a client event, and channels outside the endpoint filter and the hub $-channels are never sent', async () => {
    const { t, receiver, webhooks } = await setup(undefined, { events: ['client_event', 'channel_occupied'], channels: ['public:chat*'] })
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('public:other')
    await alice.publish('public:other', 'x', 1)
    await t.hub.publish('public:chat', 'from-server', 1)
    await alice.publish('public:chat-2', 'y', 2)
    await t.settle()
    await webhooks.flush()
    expect(receiver.events().map((e) => [e.name, e.channel, e.event])).toEqual([['client_event', 'public:chat-2', 'y']])
    expect(receiver.events().some((e) => e.channel.startsWith('$'))).toBe(false)
  })

  it('an unknown event name, a short secret or a non-http URL is refused when the webhooks are created', () => {
    const t = createTestHub()
    open.push(t)
    expect(() => createWebhooks(t.hub, { endpoints: { url: 'http://x/', secret: SECRET, events: ['channel_occupied', 'nope' as never] } })).toThrow(/unknown event 'nope'/)
    expect(() => createWebhooks(t.hub, { endpoints: { url: 'http://x/', secret: 'short', events: ['client_event'] } })).toThrow(/too short/)
    expect(() => createWebhooks(t.hub, { endpoints: { url: 'ftp://x/', secret: SECRET, events: ['client_event'] } })).toThrow(/only http/)
    expect(() => createWebhooks(t.hub, { endpoints: { url: 'http://x/', secret: SECRET, events: [] } })).toThrow(/at least one/)
  })
})

describe('signatures', () => {
  it('every request verifies with verifyWebhook; a tampered body, an old timestamp, a wrong secret and a missing header are refused with their reason', async () => {
    const { t, receiver, webhooks } = await setup()
    await publishMany(t, 3)
    await webhooks.flush()
    expect(receiver.requests.length).toBeGreaterThan(0)
    const req = receiver.requests[0]!
    for (const r of receiver.requests) {
      const payload = verifyWebhook({ body: r.body, headers: r.headers, secrets: SECRET })
      expect(payload.id).toBe(r.headers['tidings-webhook-id'])
      // A Buffer body and fetch-style Headers verify as well.
      expect(verifyWebhook({ body: Buffer.from(r.body), headers: new Headers(r.headers as Record<string, string>), secrets: [OLD_SECRET, SECRET] }).id).toBe(payload.id)
    }
    const refused = (o: Partial<Parameters<typeof verifyWebhook>[0]>): WebhookVerificationError => {
      try {
        verifyWebhook({ body: req.body, headers: req.headers, secrets: SECRET, ...o })
      } catch (err) {
        expect(err).toBeInstanceOf(WebhookVerificationError)
        return err as WebhookVerificationError
      }
      throw new Error('accepted a request that should be refused')
    }
    const tampered = req.body.replace('"typed"', '"TYPED"')
    expect(tampered).not.toBe(req.body)
    expect(refused({ body: tampered }).reason).toBe('bad-signature')
    expect(refused({ secrets: 'whsec_another_secret_of_enough_length' }).reason).toBe('bad-signature')
    expect(refused({ now: Date.now() + 301_000 }).reason).toBe('stale-timestamp')
    expect(refused({ now: Date.now() - 301_000 }).message).toMatch(/in the future/)
    // A replay of a genuine request with a fresh timestamp header but the old signature.
    const ts = Number(req.headers['tidings-timestamp'])
    expect(refused({ headers: { ...req.headers, 'tidings-timestamp': String(ts + 600) }, now: (ts + 600) * 1000 }).reason).toBe('bad-signature')
    expect(refused({ headers: { ...req.headers, 'tidings-signature': undefined } }).reason).toBe('malformed')
    expect(refused({ headers: { ...req.headers, 'tidings-signature': 'v0=abc' } }).reason).toBe('malformed')
    expect(refused({ headers: { ...req.headers, 'tidings-webhook-id': 'whb_other' } }).reason).toBe('malformed')
    // A body signed correctly but not a payload.
    const now = Math.floor(Date.now() / 1000)
    const notPayload = '{"hello":1}'
    expect(refused({ body: notPayload, headers: { 'tidings-webhook-id': 'x', 'tidings-timestamp': String(now), 'tidings-signature': `v1=${computeSignature(SECRET, now, notPayload)}` } }).reason).toBe('malformed')
    tally(receiver, webhooks)
  })

  it('during a rotation each request carries a signature per secret, so a receiver holding only the old or only the new secret verifies it', async () => {
    const { t, receiver, webhooks } = await setup(undefined, { secret: [SECRET, OLD_SECRET] })
    await publishMany(t, 1)
    await webhooks.flush()
    const r = receiver.requests[0]!
    expect(String(r.headers['tidings-signature']).split(',')).toHaveLength(2)
    expect(verifyWebhook({ body: r.body, headers: r.headers, secrets: OLD_SECRET }).events).toHaveLength(1)
    expect(verifyWebhook({ body: r.body, headers: r.headers, secrets: SECRET }).events).toHaveLength(1)
    expect(() => verifyWebhook({ body: r.body, headers: r.headers, secrets: 'whsec_neither_neither_neither' })).toThrow(WebhookVerificationError)
  })
})

describe('retries and acknowledgment', () => {
  it('a receiver answering 500 twice then 200 gets the batch 3 times with growing delays, and its events never again after the 2xx', async () => {
    const { t, receiver, webhooks } = await setup((n) => ({ status: n < 2 ? 500 : 200 }), {}, { initialDelayMs: 200, random: () => 0.5 })
    const retries: number[] = []
    webhooks.on('retry', (e) => retries.push(e.delayMs))
    await publishMany(t, 5)
    await receiver.until(() => receiver.requests.length >= 3)
    // More events after the acknowledgment: a new batch, without the acknowledged ones.
    await publishMany(t, 5)
    await webhooks.flush()

    const [a, b, c] = receiver.requests
    expect([a!.status, b!.status, c!.status]).toEqual([500, 500, 200])
    expect(b!.body).toBe(a!.body)
    expect(c!.body).toBe(a!.body)
    expect(a!.headers['tidings-webhook-id']).toBe(c!.headers['tidings-webhook-id'])
    expect([a, b, c].map((r) => r!.headers['tidings-webhook-attempt'])).toEqual(['1', '2', '3'])
    // Equal jitter at 0.5: three quarters of 200 ms, then of 400 ms.
    expect(retries).toEqual([150, 300])
    const gap1 = b!.at - a!.at
    const gap2 = c!.at - b!.at
    expect(gap1).toBeGreaterThanOrEqual(145)
    expect(gap2).toBeGreaterThanOrEqual(295)
    expect(gap2).toBeGreaterThan(gap1)

    // Every retry re-signs with its own timestamp; each verifies.
    for (const r of receiver.requests) verifyWebhook({ body: r.body, headers: r.headers, secrets: SECRET })
    const unique = new Set(receiver.ackedEvents().map((e) => e.id))
    expect(receiver.ackedEvents().length).toBe(unique.size)
    expect(unique.size).toBe(10)
    expect(receiver.duplicatesAfterAck).toBe(0)
    expect(receiver.requests.length).toBe(4)
    const s = webhooks.stats()[0]!
    expect(s).toMatchObject({ requests: 4, retries: 2, acknowledged: 10, failed: 0, dropped: 0, queued: 0, inFlight: 0 })
    tally(receiver, webhooks)
  })

  it('random jitter keeps each backoff between half and all of its exponential step', async () => {
    const { t, receiver, webhooks, errors } = await setup(() => ({ status: 503 }), {}, { initialDelayMs: 20, maxAttempts: 5 })
    const delays: number[] = []
    webhooks.on('retry', (e) => delays.push(e.delayMs))
    await publishMany(t, 1)
    await webhooks.flush()
    expect(delays).toHaveLength(4)
    delays.forEach((d, i) => {
      expect(d).toBeGreaterThanOrEqual(10 * 2 ** i)
      expect(d).toBeLessThanOrEqual(20 * 2 ** i)
    })
    expect(receiver.requests).toHaveLength(5)
    expect(errors).toHaveLength(1)
    expect(errors[0]).toMatchObject({ kind: 'failed', details: { attempts: 5, status: 503 } })
    expect(errors[0]!.eventIds).toEqual(receiver.requests[0]!.payload.events.map((e) => e.id))
    tally(receiver, webhooks)
  })

  it('a 400 answer is not retried and the batch is reported failed; a 429 with Retry-After is retried after it', async () => {
    const { t, receiver, webhooks, errors } = await setup((n) => (n === 0 ? { status: 400 } : n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 204 }), {}, { initialDelayMs: 10 })
    const failed: WebhookError[] = []
    webhooks.on('failed', (e) => failed.push(e))
    await publishMany(t, 1)
    await webhooks.flush()
    expect(receiver.requests).toHaveLength(1)
    expect(errors).toHaveLength(1)
    expect(errors[0]!.details.reason).toMatch(/400 \(not retried\)/)
    expect(failed).toEqual(errors)

    await publishMany(t, 1)
    await webhooks.flush()
    expect(receiver.requests).toHaveLength(3)
    expect(receiver.requests[2]!.at - receiver.requests[1]!.at).toBeGreaterThanOrEqual(950)
    expect(receiver.requests[2]!.status).toBe(204)
    expect(errors).toHaveLength(1)
    tally(receiver, webhooks)
  })

  it('a receiver that never answers times out and the same batch is sent again', async () => {
    const { t, receiver, webhooks, errors } = await setup((n) => (n === 0 ? 'hang' : { status: 200 }), {}, { timeoutMs: 150, initialDelayMs: 10 })
    const reasons: string[] = []
    webhooks.on('retry', (e) => reasons.push(e.reason))
    await publishMany(t, 2)
    const started = performance.now()
    await webhooks.flush()
    expect(performance.now() - started).toBeGreaterThanOrEqual(140)
    expect(reasons).toEqual(['timed out after 150 ms'])
    expect(receiver.requests).toHaveLength(2)
    expect(receiver.requests[1]!.body).toBe(receiver.requests[0]!.body)
    expect(errors).toEqual([])
    tally(receiver, webhooks)
  })

  it('a receiver that is down (connection refused) is retried until it is up', async () => {
    const receiver = await Receiver.start()
    const url = receiver.url
    await receiver.close()
    const t = createTestHub()
    open.push(t)
    const reasons: string[] = []
    const webhooks = createWebhooks(t.hub, { endpoints: { url, secret: SECRET, events: ['client_event'] }, batchMs: 5, initialDelayMs: 20, maxAttempts: 3, onError: () => undefined })
    open.push(webhooks)
    webhooks.on('retry', (e) => reasons.push(e.reason))
    await publishMany(t, 1)
    await webhooks.flush()
    expect(reasons).toHaveLength(2)
    expect(reasons[0]).toMatch(/connection failed.*ECONNREFUSED/)
    expect(webhooks.stats()[0]).toMatchObject({ requests: 3, failed: 1, acknowledged: 0 })
  })

  it('a batch older than maxAgeMs is given up even with attempts left', async () => {
    const { t, webhooks, errors } = await setup(() => ({ status: 500 }), {}, { initialDelayMs: 100, maxAgeMs: 250, maxAttempts: 100, random: () => 1 })
    await publishMany(t, 1)
    await webhooks.flush()
    // 100 + 200 > 250: the second retry would pass the age limit.
    expect(webhooks.stats()[0]!.requests).toBe(2)
    expect(errors[0]!.details.reason).toMatch(/older than maxAgeMs 250/)
  })
})

describe('ordering and batching', () => {
  it('one batch in flight per endpoint: a slow receiver sees each channel occupied before vacated, in hub order', async () => {
    const { t, receiver, webhooks } = await setup(() => ({ status: 200, delayMs: 15 }), { events: ['channel_occupied', 'channel_vacated'] }, { batchMs: 1, maxBatch: 3 })
    const seen: string[] = []
    t.hub.on('channel:occupied', (e) => seen.push(`channel_occupied ${e.channel}`))
    t.hub.on('channel:vacated', (e) => seen.push(`channel_vacated ${e.channel}`))
    const alice = await t.connect({ userId: 'alice' })
    for (let i = 0; i < 20; i++) {
      const ch = `public:room-${i % 3}`
      await alice.subscribe(ch)
      await alice.unsubscribe(ch)
      await new Promise((r) => setTimeout(r, i % 4))
    }
    await t.settle()
    await webhooks.flush()
    expect(receiver.maxConcurrent).toBe(1)
    expect(seen).toHaveLength(40)
    expect(receiver.events().map((e) => `${e.name} ${e.channel}`)).toEqual(seen)
    expect(receiver.requests.length).toBeGreaterThan(1)
    tally(receiver, webhooks)
  })

  it('200 client events go in a few batches of at most maxBatch, not one request each', async () => {
    const { t, receiver, webhooks } = await setup(undefined, { events: ['client_event'] }, { batchMs: 250, maxBatch: 50 })
    await publishMany(t, 200)
    await webhooks.flush()
    expect(receiver.events()).toHaveLength(200)
    expect(receiver.requests.length).toBeLessThanOrEqual(8)
    expect(Math.max(...receiver.requests.map((r) => r.payload.events.length))).toBe(50)
    expect(receiver.events().map((e) => (e.data as { i: number }).i)).toEqual(Array.from({ length: 200 }, (_, i) => i))
    tally(receiver, webhooks)
  })

  it('maxBatchBytes splits a batch of large events', async () => {
    const { t, receiver, webhooks } = await setup(undefined, { events: ['client_event'] }, { batchMs: 50, maxBatchBytes: 3_000 })
    const alice = await t.connect({ userId: 'alice' })
    for (let i = 0; i < 6; i++) await alice.publish('public:chat', 'big', 'x'.repeat(1_000))
    await t.settle()
    await webhooks.flush()
    expect(receiver.events()).toHaveLength(6)
    expect(receiver.requests.length).toBeGreaterThanOrEqual(3)
    for (const r of receiver.requests) expect(r.body.length).toBeLessThan(3_500)
  })
})

describe('bounded queue and close', () => {
  it('past maxQueued the oldest waiting events are dropped and reported with their ids; the newest are delivered', async () => {
    // The first request is answered late: meanwhile the queue overflows.
    const { t, receiver, webhooks, errors } = await setup((n) => (n === 0 ? { status: 200, delayMs: 300 } : { status: 200 }), { events: ['client_event'] }, { maxQueued: 10, maxBatch: 5, batchMs: 1 })
    const dropped: WebhookError[] = []
    webhooks.on('dropped', (e) => dropped.push(e))
    const alice = await t.connect({ userId: 'alice' })
    await alice.publish('public:chat', 'typed', { i: 0 })
    await t.settle()
    await receiver.until(() => receiver.requests.length === 1)
    for (let i = 1; i < 31; i++) await alice.publish('public:chat', 'typed', { i })
    await t.settle()
    await webhooks.flush()
    const got = receiver.events().map((e) => (e.data as { i: number }).i)
    // Event 0 was in flight; 1..20 were dropped; the newest 10 arrive, in order.
    expect(got).toEqual([0, ...Array.from({ length: 10 }, (_, k) => 21 + k)])
    const lostIds = dropped.flatMap((e) => e.eventIds)
    expect(lostIds).toHaveLength(20)
    expect(errors.filter((e) => e.kind === 'dropped').flatMap((e) => e.eventIds)).toEqual(lostIds)
    expect(dropped[0]!.details.reason).toMatch(/queue full/)
    // One report per burst, not one per event.
    expect(dropped.length).toBeLessThan(20)
    expect(webhooks.stats()[0]).toMatchObject({ dropped: 20, acknowledged: 11 })
    tally(receiver, webhooks)
  })

  it('with no reporter the loss goes to the hub: onError of the hub hears a dropped report', async () => {
    const receiver = await Receiver.start(() => ({ status: 200, delayMs: 200 }))
    const hubErrors: unknown[] = []
    const t = createTestHub({ onError: (e) => hubErrors.push(e), limits: { messagesPerSecond: 100_000 } })
    const webhooks = createWebhooks(t.hub, { endpoints: { url: receiver.url, secret: SECRET, events: ['client_event'] }, maxQueued: 1, batchMs: 1 })
    open.push(receiver, t, webhooks)
    await publishMany(t, 1)
    await receiver.until(() => receiver.requests.length === 1)
    await publishMany(t, 3)
    await webhooks.flush()
    expect(hubErrors.some((e) => e instanceof WebhookError && e.kind === 'dropped')).toBe(true)
  })

  it('close() sends what is queued without waiting for batchMs and resolves after the 2xx', async () => {
    const { t, receiver, webhooks } = await setup(undefined, { events: ['client_event'] }, { batchMs: 60_000 })
    await publishMany(t, 4)
    expect(receiver.requests).toHaveLength(0)
    const started = performance.now()
    await webhooks.close()
    expect(performance.now() - started).toBeLessThan(1_000)
    expect(receiver.events()).toHaveLength(4)
    expect(receiver.requests[0]!.status).toBe(200)
    // After close the hub's events are no longer sent.
    await publishMany(t, 2)
    await new Promise((r) => setTimeout(r, 50))
    expect(receiver.events()).toHaveLength(4)
    tally(receiver, webhooks)
  })

  it('close() against a receiver that keeps failing gives up at its timeout, aborts, and reports the events as dropped', async () => {
    const { t, receiver, webhooks, errors } = await setup(() => ({ status: 503 }), { events: ['client_event'] }, { initialDelayMs: 50 })
    await publishMany(t, 3)
    const started = performance.now()
    await webhooks.close({ timeoutMs: 300 })
    const took = performance.now() - started
    expect(took).toBeGreaterThanOrEqual(280)
    expect(took).toBeLessThan(1_000)
    // A request aborted at the deadline may still reach the receiver a moment later.
    await new Promise((r) => setTimeout(r, 50))
    const requests = receiver.requests.length
    expect(requests).toBeGreaterThanOrEqual(2)
    expect(errors.map((e) => e.kind)).toEqual(['dropped'])
    expect(errors[0]!.eventIds).toHaveLength(3)
    expect(errors[0]!.details.reason).toMatch(/closed before delivery/)
    // No timer is left: nothing more is sent.
    await new Promise((r) => setTimeout(r, 300))
    expect(receiver.requests.length).toBe(requests)
  })
})

describe('on a cluster', () => {
  it('occupancy is per node (each node reports its own subscribers, with its node id); a member is added and removed once for the cluster', async () => {
    const receiver = await Receiver.start()
    const clock = createManualClock(0)
    const bus = createMemoryBus()
    const store = createMemoryStore()
    const presenceStore = createMemoryPresenceStore()
    const make = (nodeId: string) => createTestHub({ nodeId, clock, broker: bus.broker(), store, presenceStore, limits: { messagesPerSecond: 100_000 } })
    const a = make('node-a')
    const b = make('node-b')
    open.push(receiver, a, b)
    const hooks = [a, b].map((t) =>
      createWebhooks(t.hub, { endpoints: { url: receiver.url, secret: SECRET, events: ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed'] }, batchMs: 5 }),
    )
    open.push(...hooks)
    const onA = await a.connect({ userId: 'alice' })
    const onB = await b.connect({ userId: 'alice' })
    await onA.subscribe('presence:lobby')
    await a.settle()
    await onB.subscribe('presence:lobby')
    await b.settle()
    await onA.unsubscribe('presence:lobby')
    await a.settle()
    await onB.unsubscribe('presence:lobby')
    await b.settle()
    await a.settle()
    await Promise.all(hooks.map((h) => h.flush()))
    const seen = receiver.events().map((e) => `${e.name} ${e.node}`)
    expect(seen.filter((e) => e.startsWith('channel_')).sort()).toEqual(['channel_occupied node-a', 'channel_occupied node-b', 'channel_vacated node-a', 'channel_vacated node-b'])
    // Alice's two tabs are one member: added when the first subscribed, removed when the last left.
    expect(seen.filter((e) => e.startsWith('member_'))).toEqual(['member_added node-a', 'member_removed node-b'])
    // Per node, occupied comes before vacated.
    for (const node of ['node-a', 'node-b']) {
      const mine = seen.filter((e) => e.endsWith(node) && e.startsWith('channel_'))
      expect(mine).toEqual([`channel_occupied ${node}`, `channel_vacated ${node}`])
    }
  })
})

describe('shutdown', () => {
  it('closing the hub before the webhooks delivers the vacated events of the channels it still had', async () => {
    const { t, receiver, webhooks } = await setup(undefined, { events: ['channel_occupied', 'channel_vacated'] })
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('public:a')
    await alice.subscribe('public:b')
    await t.settle()
    await t.hub.close()
    await webhooks.close()
    expect(receiver.events().map((e) => `${e.name} ${e.channel}`).sort()).toEqual(['channel_occupied public:a', 'channel_occupied public:b', 'channel_vacated public:a', 'channel_vacated public:b'])
  })
})

describe('receiving with Express', () => {
  it('the docs example (express.raw + verifyWebhook + dedupe by event id) accepts the real requests and answers 400 to a forged one', async () => {
    const t = createTestHub({ limits: { messagesPerSecond: 100_000 } })
    // As in docs/webhooks.md:
    const app = express()
    const seen = new Set<string>()
    const handled: string[] = []
    app.post('/hooks/tidings', express.raw({ type: 'application/json' }), (req, res) => {
      let payload
      try {
        payload = verifyWebhook({ body: req.body as Buffer, headers: req.headers, secrets: [SECRET, OLD_SECRET] })
      } catch (err) {
        if (err instanceof WebhookVerificationError) return void res.status(400).send(err.reason)
        throw err
      }
      for (const event of payload.events) {
        if (seen.has(event.id)) continue
        seen.add(event.id)
        handled.push(event.name)
      }
      res.sendStatus(204)
    })
    const server = app.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/tidings`
    open.push({ close: async () => void server.close() }, t)
    const webhooks = createWebhooks(t.hub, { endpoints: { url, secret: SECRET, events: ['client_event'] }, batchMs: 5 })
    open.push(webhooks)
    await publishMany(t, 3)
    await webhooks.flush()
    expect(handled).toEqual(['client_event', 'client_event', 'client_event'])
    expect(webhooks.stats()[0]).toMatchObject({ acknowledged: 3, failed: 0 })
    const forged = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'tidings-webhook-id': 'x', 'tidings-timestamp': String(Math.floor(Date.now() / 1000)), 'tidings-signature': `v1=${'0'.repeat(64)}` }, body: '{"id":"x","time_ms":0,"events":[]}' })
    expect(forged.status).toBe(400)
    expect(await forged.text()).toBe('bad-signature')
  })
})
