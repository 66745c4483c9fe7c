/**
 * End-to-end encrypted channels over real hubs and real transports: clients seal with
 * AES-256-GCM under keys from the app's own endpoint; the wire, the store and the broker carry
 * only envelopes; rotation keeps old messages readable; a tampered, misplaced or unreadable
 * message is reported, never handed to listeners.
 */
import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { type Broker, createHub, createMemoryBus, createMemoryStore, type HubOptions, isEncryptedEnvelope, silentLogger } from '@tidings/core'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'
import { type ChannelAuthResult, type ChannelKey, type MessageFrame, Realtime, type RealtimeOptions, RealtimeError, type TransportName } from '../src/index.js'
import { toBase64url } from '../src/e2e.js'
import { sleep, until } from './memory-network.js'
import { rawSubscriber, type RealServer, recordingWebSocket, startRealServer, userTokenAuth } from './real-hub.js'

const MARKER = 'PLAINTEXT-MARKER-q7Zx'

/** The app's key store and its two endpoints: channel authorization (token + current key) and a key by id. */
class KeyService {
  readonly keys = new Map<string, Uint8Array>()
  current = ''
  authCalls = 0
  keyCalls: string[] = []

  constructor() {
    this.rotate()
  }

  rotate(): string {
    this.current = `k${this.keys.size + 1}`
    this.keys.set(this.current, new Uint8Array(randomBytes(32)))
    return this.current
  }

  key(kid: string): ChannelKey {
    const key = this.keys.get(kid)
    if (!key) throw new Error(`no key ${kid}`)
    return { id: kid, key: toBase64url(key) }
  }

  /** `GET /app/channel-auth?channel=…` and `GET /app/channel-key?kid=…`, for a signed-in user (the `authorization` header). */
  route = (req: IncomingMessage, res: ServerResponse): boolean => {
    const u = new URL(req.url ?? '/', 'http://x')
    if (!u.pathname.startsWith('/app/')) return false
    const user = req.headers.authorization
    if (!user?.startsWith('user:')) return void res.writeHead(401).end(), true
    res.setHeader('content-type', 'application/json')
    if (u.pathname === '/app/channel-auth') {
      this.authCalls++
      const channel = u.searchParams.get('channel')!
      res.end(JSON.stringify({ token: `grant:${channel}`, key: this.key(this.current) }))
    } else if (u.pathname === '/app/channel-key') {
      const kid = u.searchParams.get('kid') ?? this.current
      this.keyCalls.push(kid)
      if (!this.keys.has(kid)) return void res.writeHead(404).end(), true
      res.end(JSON.stringify(this.key(kid)))
    } else res.writeHead(404).end()
    return true
  }
}

/** Channel options of the SDK that get the channel token and keys from the app's endpoints, as a browser would. */
function viaEndpoints(base: string, user: string, withKeyFunction = true) {
  const app = base.replace(/\/realtime$/, '/app')
  const get = async <T>(path: string): Promise<T> => {
    const r = await fetch(`${app}${path}`, { headers: { authorization: `user:${user}` } })
    if (!r.ok) throw new Error(`${path}: ${r.status}`)
    return (await r.json()) as T
  }
  return {
    auth: ({ channel }: { channel: string }) => get<ChannelAuthResult>(`/channel-auth?channel=${encodeURIComponent(channel)}`),
    encryption: withKeyFunction ? { key: (kid?: string) => get<ChannelKey>(`/channel-key${kid ? `?kid=${encodeURIComponent(kid)}` : ''}`) } : (true as const),
  }
}

const channels: HubOptions['channels'] = {
  'secret:*': { encrypted: true, subscribe: (ctx) => ctx.auth === `grant:${ctx.channel}`, publish: 'authenticated', echo: false },
  'other:*': { encrypted: true, subscribe: 'authenticated' },
  // A channel the server does not hold to envelopes: stands for a server that lies or was changed.
  'loose:*': { subscribe: 'authenticated' },
}

const subscribers = (hub: { channels: { list(): Array<{ name: string; subscribers: number }> } }, name: string) => hub.channels.list().find((c) => c.name === name)?.subscribers ?? 0

const servers: RealServer[] = []
const clients: Realtime[] = []

afterEach(async () => {
  for (const c of clients.splice(0)) c.close()
  for (const s of servers.splice(0)) await s.close()
})

function client(url: string, user: string, options: Partial<RealtimeOptions> = {}): Realtime {
  const rt = new Realtime({ url, auth: `user:${user}`, transports: ['websocket'], WebSocket, reconnectDelay: 20, maxReconnectDelay: 100, heartbeatIntervalMs: 0, ...options })
  clients.push(rt)
  return rt
}

async function server(options: HubOptions = {}, keys = new KeyService()) {
  const s = await startRealServer({ options: { channels, ...options }, app: keys.route })
  servers.push(s)
  return { ...s, keys }
}

/** Messages of one event, collected; errors of the channel too. */
function collect(ch: ReturnType<Realtime['channel']>) {
  const got: MessageFrame[] = []
  const errors: RealtimeError[] = []
  ch.on('message', (m) => got.push(m))
  ch.on('error', (e) => errors.push(e as RealtimeError))
  return { got, errors }
}

describe('end-to-end encrypted channels', () => {
  it('plaintext leak: two clients on different nodes read each other while the wire, the store and the broker carry only envelopes', async () => {
    const keys = new KeyService()
    const bus = createMemoryBus()
    const store = createMemoryStore()
    const brokerTraffic: string[] = []
    const spied = (b: Broker): Broker => {
      const publish = b.publish.bind(b)
      b.publish = (m) => {
        brokerTraffic.push(JSON.stringify(m))
        return publish(m)
      }
      return b
    }
    const hubOptions = { logger: silentLogger, authenticate: userTokenAuth, channels, store }
    const hubA = createHub({ ...hubOptions, broker: spied(bus.broker()) })
    const hubB = createHub({ ...hubOptions, broker: spied(bus.broker()) })
    const nodeA = await startRealServer({ hub: hubA, app: keys.route })
    const nodeB = await startRealServer({ hub: hubB, app: keys.route })
    servers.push(nodeA, nodeB)
    const hubEvents: string[] = []
    for (const hub of [hubA, hubB]) hub.on('publish', (e) => hubEvents.push(JSON.stringify(e.message)))

    // A client without the key, subscribed on node A with a bare socket: what the wire carries.
    const eavesdropper = await rawSubscriber(nodeA.url, 'user:eve', 'other:room')
    const aliceSent: Array<Record<string, unknown>> = []
    const alice = client(nodeA.url, 'alice', { WebSocket: recordingWebSocket(aliceSent) })
    const bob = client(nodeB.url, 'bob', { transports: ['sse'] })
    // `other:room` needs no channel token: keys come from the key endpoint only.
    const a = alice.channel('other:room', { encryption: viaEndpoints(nodeA.url, 'alice').encryption })
    const b = bob.channel('other:room', { encryption: viaEndpoints(nodeB.url, 'bob').encryption })
    const fromBob = collect(a)
    const fromAlice = collect(b)
    await Promise.all([a.subscribe(), b.subscribe()])
    await until(() => subscribers(hubA, 'other:room') + subscribers(hubB, 'other:room') >= 3, 3000, 'subscribers on both nodes')

    await a.send('chat', { text: `${MARKER} from alice`, n: 1 })
    await b.send('chat', { text: `${MARKER} from bob`, n: 2 })
    await a.send('chat', { text: `${MARKER} again`, nested: { list: [1, 'two', null] } })
    await until(() => fromAlice.got.length === 2 && fromBob.got.length === 1, 5000, 'the messages on both sides')
    expect(fromAlice.got.map((m) => m.data)).toEqual([{ text: `${MARKER} from alice`, n: 1 }, { text: `${MARKER} again`, nested: { list: [1, 'two', null] } }])
    expect(fromBob.got.map((m) => m.data)).toEqual([{ text: `${MARKER} from bob`, n: 2 }])
    expect([...fromAlice.errors, ...fromBob.errors]).toEqual([])
    await until(() => eavesdropper.frames.filter((f) => f.includes('"message"')).length === 3, 3000, 'the eavesdropper to get three messages')

    // The wire: what alice's socket sent, and what the key-less subscriber was sent.
    const published = aliceSent.filter((f) => f['type'] === 'message')
    expect(published).toHaveLength(2)
    for (const f of published) expect(isEncryptedEnvelope(f['data'])).toBe(true)
    const wireMessages = eavesdropper.frames.map((f) => JSON.parse(f) as { type: string; data?: unknown }).filter((f) => f.type === 'message')
    for (const f of wireMessages) expect(isEncryptedEnvelope(f.data)).toBe(true)
    // Each message its own IV.
    expect(new Set(wireMessages.map((f) => (f.data as { iv: string }).iv)).size).toBe(3)
    // The store, through both hubs.
    const stored = await hubB.channel('other:room').history()
    expect(stored.messages).toHaveLength(3)
    for (const m of stored.messages) expect(isEncryptedEnvelope(m.data)).toBe(true)
    expect(brokerTraffic.length).toBeGreaterThan(0)
    expect(hubEvents).toHaveLength(3)
    const everything = [JSON.stringify(aliceSent), eavesdropper.frames.join('\n'), JSON.stringify(stored), brokerTraffic.join('\n'), hubEvents.join('\n')].join('\n')
    expect(everything).not.toContain(MARKER)
    expect(everything).not.toContain('from alice')
    eavesdropper.close()
  })

  it('channel token and key through the app endpoint: the auth function gives both, a late joiner reads the history', async () => {
    const s = await server()
    const alice = client(s.url, 'alice')
    const a = alice.channel('secret:plans', viaEndpoints(s.url, 'alice', false))
    await a.subscribe()
    expect(s.keys.authCalls).toBe(1)
    await a.send('note', `${MARKER} 1`)
    await a.send('note', undefined)
    await a.send('note', [MARKER, 2])
    // A channel without a grant is refused by the rule: the token really is checked.
    const intruder = client(s.url, 'mallory').channel('secret:plans', { encryption: true })
    await expect(intruder.subscribe()).rejects.toMatchObject({ code: 'RT_003' })

    const bob = client(s.url, 'bob')
    const b = bob.channel('secret:plans', viaEndpoints(s.url, 'bob', false))
    const seen = collect(b)
    await b.subscribe()
    const page = await b.history({ limit: 10 })
    expect(page.messages.map((m) => m.data)).toEqual([`${MARKER} 1`, undefined, [MARKER, 2]])
    expect(seen.errors).toEqual([])
    const raw = await s.hub.channel('secret:plans').history()
    expect(JSON.stringify(raw)).not.toContain(MARKER)
  })

  it('key rotation: new sends carry the new key id, older messages stay readable, a live message under a new key id moves the reader to it', async () => {
    const s = await server()
    const alice = client(s.url, 'alice')
    const bob = client(s.url, 'bob')
    const a = alice.channel('secret:r', viaEndpoints(s.url, 'alice'))
    const b = bob.channel('secret:r', viaEndpoints(s.url, 'bob'))
    const seen = collect(b)
    await Promise.all([a.subscribe(), b.subscribe()])
    await a.send('m', 'before')
    const k1 = s.keys.current
    const k2 = s.keys.rotate()
    // Alice's app learns of the rotation and tells the channel: the next send asks for the current key.
    a.refreshKey()
    await a.send('m', 'after')
    await until(() => seen.got.length === 2, 3000, 'both messages at bob')
    expect(seen.got.map((m) => m.data)).toEqual(['before', 'after'])
    // Bob had only k1; the live message under k2 made him fetch k2 by id, and his next send uses it.
    await b.send('m', 'reply')
    const kids = (await s.hub.channel('secret:r').history()).messages.map((m) => (m.data as { kid: string }).kid)
    expect(kids).toEqual([k1, k2, k2])
    expect(s.keys.keyCalls.filter((k) => k === k2).length).toBeGreaterThanOrEqual(1)

    // Cy arrives after the rotation: his grant holds only k2; k1 is fetched by id, once.
    s.keys.keyCalls = []
    const cy = client(s.url, 'cy')
    const c = cy.channel('secret:r', viaEndpoints(s.url, 'cy'))
    const cySeen = collect(c)
    await c.subscribe()
    const page = await c.history({ limit: 10 })
    expect(page.messages.map((m) => m.data)).toEqual(['before', 'after', 'reply'])
    expect(s.keys.keyCalls).toEqual([k1])
    expect([...seen.errors, ...cySeen.errors]).toEqual([])
  })

  it('tampering (a server that does not hold to envelopes): a flipped ciphertext bit, a plaintext message and a swapped key id are reported with offset and reason, never handed to listeners; later messages still arrive in order', async () => {
    const s = await server()
    const alice = client(s.url, 'alice')
    const bob = client(s.url, 'bob')
    const a = alice.channel('loose:t', viaEndpoints(s.url, 'alice'))
    const b = bob.channel('loose:t', viaEndpoints(s.url, 'bob'))
    const seen = collect(b)
    const byEvent: unknown[] = []
    b.on('m', (data: unknown) => byEvent.push(data))
    await Promise.all([a.subscribe(), b.subscribe()])
    await a.send('m', `${MARKER} genuine`)
    await until(() => seen.got.length === 1, 3000, 'the genuine message')
    const genuine = (await s.hub.channel('loose:t').history()).messages[0]!.data as { e2e: 1; kid: string; iv: string; ct: string }
    // The server (or anyone on the path) alters what it relays.
    const flipped = genuine.ct.slice(0, 5) + (genuine.ct[5] === 'A' ? 'B' : 'A') + genuine.ct.slice(6)
    const r1 = await s.hub.channel('loose:t').publish('m', { ...genuine, ct: flipped })
    const r2 = await s.hub.channel('loose:t').publish('m', { text: `${MARKER} injected in clear` })
    const r3 = await s.hub.channel('loose:t').publish('m', { ...genuine, kid: 'k-unknown' })
    await a.send('m', 'still fine')
    await until(() => seen.got.length === 2 && seen.errors.length === 3, 5000, 'three errors and the next message')
    expect(seen.got.map((m) => m.data)).toEqual([`${MARKER} genuine`, 'still fine'])
    expect(byEvent).toEqual([`${MARKER} genuine`, 'still fine'])
    expect(seen.errors.map((e) => [e.code, e.details?.['offset'], e.details?.['reason']])).toEqual([
      ['RT_007', r1.offset, 'authentication-failed'],
      ['RT_007', r2.offset, 'not-encrypted'],
      ['RT_007', r3.offset, 'unknown-key'],
    ])
    for (const e of seen.errors) expect(e.message).not.toContain(MARKER)
    // History opens the same way: the three are left out and reported again.
    seen.errors.length = 0
    const page = await b.history({ limit: 10 })
    expect(page.messages.map((m) => m.data)).toEqual([`${MARKER} genuine`, 'still fine'])
    expect(seen.errors.map((e) => e.details?.['reason'])).toEqual(['authentication-failed', 'not-encrypted', 'unknown-key'])
  })

  it('replay into another channel or event: an envelope copied elsewhere fails to open (additional data), even under the right key', async () => {
    const keys = new KeyService()
    const s = await server({}, keys)
    const alice = client(s.url, 'alice')
    const bob = client(s.url, 'bob')
    const a = alice.channel('secret:one', viaEndpoints(s.url, 'alice'))
    // Bob reads secret:two with the same key service: same key ids and keys, other channel.
    const b = bob.channel('secret:two', viaEndpoints(s.url, 'bob'))
    const bOne = bob.channel('secret:one', viaEndpoints(s.url, 'bob'))
    const seen = collect(b)
    const seenOne = collect(bOne)
    await Promise.all([a.subscribe(), b.subscribe(), bOne.subscribe()])
    await a.send('pay', { amount: 10, note: MARKER })
    await until(() => seenOne.got.length === 1, 3000, 'the original')
    const envelope = (await s.hub.channel('secret:one').history()).messages[0]!.data
    const wrongChannel = await s.hub.channel('secret:two').publish('pay', envelope)
    const wrongEvent = await s.hub.channel('secret:one').publish('refund', envelope)
    await until(() => seen.errors.length === 1 && seenOne.errors.length === 1, 3000, 'the two replays reported')
    expect(seen.got).toEqual([])
    expect(seen.errors[0]!.details).toMatchObject({ channel: 'secret:two', offset: wrongChannel.offset, reason: 'authentication-failed', event: 'pay' })
    expect(seenOne.got.map((m) => m.event)).toEqual(['pay'])
    expect(seenOne.errors[0]!.details).toMatchObject({ channel: 'secret:one', offset: wrongEvent.offset, reason: 'authentication-failed', event: 'refund' })
  })

  it('wrong key: a reader whose key has the right id but other bytes gets errors, no plaintext and no ciphertext as data', async () => {
    const s = await server()
    const alice = client(s.url, 'alice')
    const bob = client(s.url, 'bob')
    const a = alice.channel('other:w', viaEndpoints(s.url, 'alice'))
    const wrong: ChannelKey = { id: s.keys.current, key: new Uint8Array(randomBytes(32)) }
    const b = bob.channel('other:w', { encryption: { key: () => wrong } })
    const seen = collect(b)
    const unhandled: Error[] = []
    bob.on('error', (e) => unhandled.push(e))
    await Promise.all([a.subscribe(), b.subscribe()])
    await a.send('m', MARKER)
    await until(() => seen.errors.length === 1, 3000, 'the error')
    await sleep(30)
    expect(seen.got).toEqual([])
    expect(seen.errors[0]!.details?.['reason']).toBe('authentication-failed')
    expect(unhandled).toEqual([])
  })

  it('unknown key ids: concurrent messages under one new id make one key call, and a missing key is not asked for again at once', async () => {
    const s = await server()
    const alice = client(s.url, 'alice')
    const bob = client(s.url, 'bob')
    const a = alice.channel('other:u', viaEndpoints(s.url, 'alice'))
    let calls = 0
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const b = bob.channel('other:u', {
      encryption: {
        key: async (kid) => {
          calls++
          await gate
          return s.keys.key(kid ?? s.keys.current)
        },
      },
    })
    const seen = collect(b)
    await Promise.all([a.subscribe(), b.subscribe()])
    for (let i = 0; i < 5; i++) void a.send('m', i)
    await until(() => subscribers(s.hub, 'other:u') === 2, 1000, 'subscribers')
    await sleep(100)
    release()
    await until(() => seen.got.length === 5, 3000, 'five messages')
    expect(seen.got.map((m) => m.data)).toEqual([0, 1, 2, 3, 4])
    expect(calls).toBe(1)

    // A key the app does not have: reported once per message, the endpoint is not hammered.
    const base = (await s.hub.channel('other:u').history()).messages[0]!.data as object
    for (let i = 0; i < 4; i++) await s.hub.channel('other:u').publish('m', { ...base, kid: 'gone' })
    await until(() => seen.errors.length === 4, 3000, 'four errors')
    expect(seen.errors.every((e) => e.details?.['reason'] === 'unknown-key')).toBe(true)
    expect(calls).toBe(2)
  })

  it.each<TransportName>(['websocket', 'sse'])('sends sealed while disconnected go out in call order after the reconnect (%s)', async (transport) => {
    const s = await server()
    const alice = client(s.url, 'alice', { transports: [transport] })
    const bob = client(s.url, 'bob')
    const a = alice.channel('other:o', viaEndpoints(s.url, 'alice'))
    const b = bob.channel('other:o', viaEndpoints(s.url, 'bob'))
    const seen = collect(b)
    await Promise.all([a.subscribe(), b.subscribe()])
    alice.disconnect()
    const sends = Array.from({ length: 20 }, (_, i) => a.send('m', i))
    await sleep(20)
    alice.connect()
    await Promise.all(sends)
    await until(() => seen.got.length === 20, 5000, 'twenty messages')
    expect(seen.got.map((m) => m.data)).toEqual(Array.from({ length: 20 }, (_, i) => i))
  })
})

describe('encryption errors at the edges', () => {
  it('a key of the wrong size is refused when set, and a send without any key source rejects RT_007 instead of going out in clear', async () => {
    const s = await server()
    const alice = client(s.url, 'alice')
    const ch = alice.channel('other:x', { encryption: true })
    await ch.subscribe()
    await expect(ch.setKey({ id: 'short', key: new Uint8Array(16) })).rejects.toThrow(/32/)
    const e = await ch.send('m', MARKER).then(() => undefined, (err: unknown) => err)
    expect(e).toBeInstanceOf(RealtimeError)
    expect((e as RealtimeError).code).toBe('RT_007')
    expect(JSON.stringify((await s.hub.channel('other:x').history()).messages)).not.toContain(MARKER)
    // A CryptoKey works as well as raw bytes.
    const key = await crypto.subtle.importKey('raw', randomBytes(32), 'AES-GCM', false, ['encrypt', 'decrypt'])
    await ch.setKey({ id: 'ck', key })
    const got: unknown[] = []
    ch.on('m', (d: unknown) => got.push(d))
    const r = await ch.send('m', 'sealed with a CryptoKey')
    expect(r.offset).toBe(1)
    expect((await ch.history()).messages.map((m) => m.data)).toEqual(['sealed with a CryptoKey'])
  })

  it('a made-up key id injected by the server does not make the client drop its current key (sends keep working)', async () => {
    const s = await server()
    const alice = client(s.url, 'alice')
    const ch = alice.channel('other:k', { encryption: true })
    const errors: RealtimeError[] = []
    ch.on('error', (e) => errors.push(e as RealtimeError))
    await ch.setKey({ id: 'only', key: new Uint8Array(randomBytes(32)) })
    await ch.subscribe()
    await ch.send('m', 1)
    const base = (await s.hub.channel('other:k').history()).messages[0]!.data as object
    await s.hub.channel('other:k').publish('m', { ...base, kid: 'made-up' })
    await until(() => errors.length === 1, 3000, 'the unknown-key error')
    expect(errors[0]!.details?.['reason']).toBe('unknown-key')
    const r = await ch.send('m', 2)
    expect(r.offset).toBe(3)
  })
})
