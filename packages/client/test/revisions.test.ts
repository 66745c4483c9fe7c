import { randomBytes } from 'node:crypto'
import type { HubOptions } from '@tidings/core'
import WebSocket from 'ws'
import { afterEach, describe, expect, it } from 'vitest'
import { type MessageFrame, Realtime, type RealtimeOptions, type Revision, applyRevisions } from '../src/index.js'
import { toBase64url } from '../src/e2e.js'
import { sleep, until } from './memory-network.js'
import { type RealServer, startRealServer } from './real-hub.js'

/**
 * Message revisions (edit, delete), search and the channel list, from the client SDK over real
 * sockets: a Node HTTP server with the WebSocket and SSE transports in front of a hub with the
 * memory store.
 */

const CHANNELS: HubOptions['channels'] = {
  'chat:*': { subscribe: 'authenticated', publish: 'authenticated', revisions: 'own' },
  // Keeps only the 3 newest messages.
  'short:*': { subscribe: 'authenticated', publish: 'authenticated', revisions: 'own', history: { maxCount: 3 } },
  // An offline queue per user (at-least-once, cursors kept by the store): revision events are acknowledged like messages.
  'team:*': { subscribe: 'authenticated', publish: 'authenticated', revisions: 'own', delivery: 'at-least-once', offline: { maxMessages: 100 } },
  // End-to-end encrypted: edits are sealed like sends.
  'sealed:*': { encrypted: true, subscribe: 'authenticated', publish: 'authenticated', revisions: 'own' },
  // No revisions: edits are refused.
  'plain:*': { subscribe: 'authenticated', publish: 'authenticated' },
}

let server: RealServer | undefined
const clients: Realtime[] = []

afterEach(async () => {
  for (const c of clients.splice(0)) c.close()
  await server?.close()
  server = undefined
})

async function start(): Promise<RealServer> {
  server = await startRealServer({ options: { channels: CHANNELS } })
  return server
}

function client(user: string, options: Partial<RealtimeOptions> = {}): Realtime {
  const rt = new Realtime({
    url: server!.url,
    auth: `user:${user}`,
    transports: ['websocket'],
    WebSocket,
    reconnectDelay: 20,
    maxReconnectDelay: 100,
    heartbeatIntervalMs: 0,
    ackIntervalMs: 20,
    ...options,
  })
  clients.push(rt)
  return rt
}

/** What a channel emitted, in order: `message <offset>` and `revision <offset>@<version>`. */
function record(ch: ReturnType<Realtime['channel']>) {
  const log: string[] = []
  const revisions: Revision[] = []
  const messages: MessageFrame[] = []
  ch.on('message', (m) => {
    log.push(`message ${m.offset}`)
    messages.push(m)
  })
  ch.on('revision', (r) => {
    log.push(`revision ${r.offset}@${r.version}`)
    revisions.push(r)
  })
  return { log, revisions, messages }
}

describe('edit and delete over WebSocket', () => {
  it('an edit reaches another subscriber as a revision (version 2, the new data), not as a message', async () => {
    await start()
    const alice = client('alice').channel('chat:a')
    const bob = client('bob').channel('chat:a')
    await alice.subscribe()
    await bob.subscribe()
    const seen = record(bob)
    const byEvent: unknown[] = []
    bob.on('chat', (data: unknown) => byEvent.push(data))

    const sent = await alice.send('chat', { text: 'helo' })
    await until(() => seen.messages.length === 1, 3000, 'the message')
    const result = await alice.edit(sent.offset!, { text: 'hello' })
    expect(result).toMatchObject({ offset: sent.offset, version: 2, deleted: false })
    expect(result.revision).toBeGreaterThan(sent.offset!)
    await until(() => seen.revisions.length === 1, 3000, 'the revision')
    await sleep(30)

    expect(seen.log).toEqual([`message ${sent.offset}`, `revision ${sent.offset}@2`])
    expect(seen.revisions[0]).toMatchObject({
      channel: 'chat:a',
      offset: sent.offset,
      version: 2,
      deleted: false,
      data: { text: 'hello' },
      sender: 'alice',
      revision: result.revision,
      messageId: result.messageId,
    })
    expect(typeof seen.revisions[0]!.timestamp).toBe('string')
    // The revision event is no message: neither `message` nor the event-name listeners saw it.
    expect(byEvent).toEqual([{ text: 'helo' }])
  })

  it('a delete reaches subscribers as a revision with deleted: true and data null', async () => {
    await start()
    const alice = client('alice').channel('chat:d')
    const bob = client('bob').channel('chat:d')
    await alice.subscribe()
    await bob.subscribe()
    const seen = record(bob)
    const sent = await alice.send('chat', { text: 'oops' })
    await until(() => seen.messages.length === 1)
    const result = await alice.delete(sent.offset!)
    expect(result).toMatchObject({ offset: sent.offset, version: 2, deleted: true })
    await until(() => seen.revisions.length === 1, 3000, 'the deletion')
    expect(seen.revisions[0]).toMatchObject({ offset: sent.offset, version: 2, deleted: true, data: null, sender: 'alice' })
    expect(seen.log).toEqual([`message ${sent.offset}`, `revision ${sent.offset}@2`])
    // Deleted: it cannot be edited nor deleted again.
    await expect(alice.edit(sent.offset!, { text: 'back' })).rejects.toMatchObject({ code: 'RT_004' })
    await expect(alice.delete(sent.offset!)).rejects.toMatchObject({ code: 'RT_004' })
  })

  it("editing someone else's message rejects RT_003 and changes nothing", async () => {
    await start()
    const alice = client('alice').channel('chat:x')
    const bob = client('bob').channel('chat:x')
    await alice.subscribe()
    await bob.subscribe()
    const seen = record(alice)
    const sent = await alice.send('chat', 'mine')
    await expect(bob.edit(sent.offset!, 'yours now')).rejects.toMatchObject({ name: 'RealtimeError', code: 'RT_003' })
    await expect(bob.delete(sent.offset!)).rejects.toMatchObject({ code: 'RT_003' })
    const page = await bob.history()
    expect(page.messages.map((m) => [m.data, m.version])).toEqual([['mine', undefined]])
    expect(page.revisions).toEqual([])
    expect(seen.revisions).toEqual([])
  })

  it('editing an offset that is not retained rejects RT_004 (trimmed by retention, or never written)', async () => {
    await start()
    const alice = client('alice').channel('short:r')
    await alice.subscribe()
    const offsets: number[] = []
    for (let i = 1; i <= 5; i++) offsets.push((await alice.send('chat', `m${i}`)).offset!)
    await expect(alice.edit(offsets[0]!, 'x')).rejects.toMatchObject({ code: 'RT_004' })
    await expect(alice.edit(999, 'x')).rejects.toMatchObject({ code: 'RT_004' })
    // A retained one still can be.
    expect(await alice.edit(offsets[4]!, 'm5!')).toMatchObject({ offset: offsets[4], version: 2 })
  })

  it("a channel without revisions: 'own' refuses edits and deletes with RT_003", async () => {
    await start()
    const alice = client('alice').channel('plain:p')
    await alice.subscribe()
    const sent = await alice.send('chat', 'x')
    await expect(alice.edit(sent.offset!, 'y')).rejects.toMatchObject({ code: 'RT_003' })
    await expect(alice.delete(sent.offset!)).rejects.toMatchObject({ code: 'RT_003' })
    expect((await alice.history()).messages.map((m) => [m.data, m.version])).toEqual([['x', undefined]])
  })

  it('a subscriber disconnected during an edit gets the revision on resume: replayed in order, once', async () => {
    const s = await start()
    const aliceRt = client('alice')
    const bobRt = client('bob')
    const alice = aliceRt.channel('chat:resume')
    const bob = bobRt.channel('chat:resume')
    await alice.subscribe()
    await bob.subscribe()
    const seen = record(bob)
    const first = await alice.send('chat', 'one')
    await until(() => seen.messages.length === 1)

    bobRt.disconnect()
    const edited = await alice.edit(first.offset!, 'one (edited)')
    const second = await alice.send('chat', 'two')
    const deleted = await alice.delete(second.offset!)
    bobRt.connect()
    // The replay reads the log as it is now: message two comes deleted (version 2), so its
    // revision event (version 2) is not news and is not emitted; the edit of one is.
    await until(() => seen.log.length >= 3, 5000, 'the replay')
    await sleep(50)
    expect(seen.log).toEqual([`message ${first.offset}`, `revision ${first.offset}@2`, `message ${second.offset}`])
    expect(seen.revisions.map((r) => [r.revision, r.data])).toEqual([[edited.revision, 'one (edited)']])
    expect(seen.messages[1]).toMatchObject({ offset: second.offset, version: 2, deleted: true, data: null })
    expect(deleted.revision).toBeGreaterThan(second.offset!)

    // Cut every connection: both clients resume; nothing comes twice.
    s.cut()
    await until(() => aliceRt.state === 'connected' && bobRt.state === 'connected' && bob.state === 'subscribed', 5000, 'the reconnects')
    const third = await alice.send('chat', 'three')
    await until(() => seen.messages.length === 3, 5000, 'the third message')
    await sleep(50)
    expect(seen.log).toEqual([`message ${first.offset}`, `revision ${first.offset}@2`, `message ${second.offset}`, `message ${third.offset}`])
  })

  it('an edit made while disconnected waits in the outbox and is made once on reconnect', async () => {
    await start()
    const aliceRt = client('alice')
    const alice = aliceRt.channel('chat:offline')
    const bob = client('bob').channel('chat:offline')
    await alice.subscribe()
    await bob.subscribe()
    const seen = record(bob)
    const sent = await alice.send('chat', 'draft')
    aliceRt.disconnect()
    const edit = alice.edit(sent.offset!, 'final')
    expect(aliceRt.queued).toBe(1)
    await sleep(30)
    expect(seen.revisions).toEqual([])
    aliceRt.connect()
    expect(await edit).toMatchObject({ offset: sent.offset, version: 2 })
    await until(() => seen.revisions.length === 1)
    const page = await bob.history()
    expect(page.messages.map((m) => [m.data, m.version])).toEqual([['final', 2]])
    expect(page.revisions).toHaveLength(1)
  })

  it('a delete whose answer was lost with the connection is sent again and says so (RT_004, details.resent), and deletes once', async () => {
    await start()
    let dropped = 0
    // The first `revised` answer never reaches the client: its socket goes at that moment.
    const Lossy = lossyWebSocket((text) => text.includes('"type":"revised"') && dropped++ === 0)
    const aliceRt = client('alice', { WebSocket: Lossy })
    const connections: string[] = []
    aliceRt.on('connected', (i) => connections.push(i.connectionId))
    const alice = aliceRt.channel('chat:lossy')
    await alice.subscribe()
    const sent = await alice.send('chat', 'bye')
    const err = await alice.delete(sent.offset!).then(
      () => undefined,
      (e: unknown) => e as { code: string; details?: Record<string, unknown> },
    )
    expect(dropped).toBeGreaterThanOrEqual(1)
    expect(connections).toHaveLength(2)
    expect(err).toMatchObject({ code: 'RT_004', details: { resent: true } })
    const page = await alice.history()
    expect(page.messages).toMatchObject([{ offset: sent.offset, version: 2, deleted: true, data: null }])
    expect(page.revisions).toHaveLength(1)
  })
})

/** A WebSocket (over `ws`) that, when `drop(text)` says so for a frame from the hub, loses it and the connection. */
function lossyWebSocket(drop: (text: string) => boolean): typeof WebSocket {
  class Lossy {
    onopen: ((e: unknown) => void) | null = null
    onmessage: ((e: { data: unknown }) => void) | null = null
    onclose: ((e: unknown) => void) | null = null
    onerror: ((e: unknown) => void) | null = null
    private readonly ws: WebSocket
    constructor(url: string, protocols?: string | string[]) {
      this.ws = new WebSocket(url, protocols)
      this.ws.onopen = (e) => this.onopen?.(e)
      this.ws.onmessage = (e) => {
        if (drop(String(e.data))) this.ws.terminate()
        else this.onmessage?.(e)
      }
      this.ws.onclose = (e) => this.onclose?.(e)
      this.ws.onerror = (e) => this.onerror?.(e)
    }
    get readyState(): number {
      return this.ws.readyState
    }
    get protocol(): string {
      return this.ws.protocol
    }
    get binaryType(): string {
      return this.ws.binaryType
    }
    set binaryType(value: string) {
      this.ws.binaryType = value as WebSocket['binaryType']
    }
    send(data: string): void {
      this.ws.send(data)
    }
    close(code?: number, reason?: string): void {
      this.ws.close(code, reason)
    }
  }
  return Lossy as unknown as typeof WebSocket
}

describe('history, search and the channel list', () => {
  it('history gives messages as they are now (version, deleted) and the revision events apart; applyRevisions folds them', async () => {
    await start()
    const alice = client('alice').channel('chat:h')
    await alice.subscribe()
    const a = await alice.send('chat', 'first')
    const b = await alice.send('chat', 'second')
    const c = await alice.send('chat', 'third')
    const held = (await alice.history()).messages
    expect(held.map((m) => m.data)).toEqual(['first', 'second', 'third'])

    await alice.edit(a.offset!, 'first, edited')
    await alice.edit(a.offset!, 'first, edited twice')
    await alice.delete(b.offset!)
    const page = await alice.history()
    expect(page.messages.map((m) => [m.offset, m.data, m.version, m.deleted])).toEqual([
      [a.offset, 'first, edited twice', 3, undefined],
      [b.offset, null, 2, true],
      [c.offset, 'third', undefined, undefined],
    ])
    expect(page.messages.some((m) => m.revises)).toBe(false)
    expect(page.revisions.map((r) => [r.offset, r.version, r.deleted, r.data])).toEqual([
      [a.offset, 2, false, 'first, edited'],
      [a.offset, 3, false, 'first, edited twice'],
      [b.offset, 2, true, null],
    ])
    // What the app held, folded with the page's revisions, is what the hub has now.
    const folded = applyRevisions(held, page.revisions)
    expect(folded.map((m) => [m.data, m.version, m.deleted])).toEqual(page.messages.map((m) => [m.data, m.version, m.deleted]))
    // A revision to a version already held changes nothing.
    expect(applyRevisions(page.messages, page.revisions)).toEqual(page.messages)

    // A page after the messages holds only revision events.
    const later = await alice.history({ since: { epoch: page.position.epoch, offset: c.offset! } })
    expect(later.messages).toEqual([])
    expect(later.revisions).toHaveLength(3)
  })

  it('search finds messages by their edited words only, newest first, and never deleted ones', async () => {
    await start()
    const alice = client('alice').channel('chat:s')
    await alice.subscribe()
    const fox = await alice.send('chat', { text: 'the quick brown fox' })
    const dog = await alice.send('chat', { text: 'a lazy dog and a quick cat' })
    const gone = await alice.send('chat', { text: 'quick turtle, soon deleted' })
    await alice.edit(fox.offset!, { text: 'the slow brown turtle' })
    await alice.delete(gone.offset!)

    const quick = await alice.search('quick')
    expect(quick.map((m) => m.offset)).toEqual([dog.offset])
    const turtle = await alice.search('turtle')
    expect(turtle).toHaveLength(1)
    expect(turtle[0]).toMatchObject({ offset: fox.offset, data: { text: 'the slow brown turtle' }, version: 2, event: 'chat', sender: 'alice' })
    expect(turtle[0]!.revises).toBeUndefined()
    expect(await alice.search('brown', { limit: 1 })).toMatchObject([{ offset: fox.offset }])
    expect(await alice.search('quick', { before: dog.offset! })).toEqual([])
  })

  it('channels() lists the personal offline channel with its unread count, which drops once the messages are acknowledged', async () => {
    const s = await start()
    // A first note, so the channel has a log when alice's cursor starts (see the report on empty channels).
    await s.hub.publish('private:user-alice', 'note', 0)
    const reader = client('alice')
    const inbox = reader.channel('private:user-alice')
    const got: number[] = []
    inbox.on('message', (m) => got.push(m.offset!))
    await inbox.subscribe()
    await until(() => got.length === 1, 3000, 'the first note')
    // Acknowledged (ackIntervalMs 20), then gone.
    for (const start = Date.now(); !(await s.hub.channel('private:user-alice').deliveredTo(1)).includes('alice'); ) {
      if (Date.now() - start > 3000) throw new Error('the first note was not acknowledged')
      await sleep(10)
    }
    reader.disconnect()
    for (let i = 1; i <= 3; i++) await s.hub.publish('private:user-alice', 'note', i)

    // Another tab of alice's, not subscribed to it: the channel is listed, 3 unread.
    const lister = client('alice')
    const before = await lister.channels()
    const entry = before.find((c) => c.name === 'private:user-alice')
    expect(entry).toMatchObject({ name: 'private:user-alice', unread: 3, lastSeenOffset: 1, top: 4 })
    expect(typeof entry!.lastActivity).toBe('number')
    // Bob's list is his own.
    expect((await client('bob').channels()).map((c) => c.name)).not.toContain('private:user-alice')

    reader.connect()
    await until(() => got.length === 4, 5000, 'the offline queue')
    expect(got).toEqual([1, 2, 3, 4])
    let after = await lister.channels()
    for (const start = Date.now(); after.find((c) => c.name === 'private:user-alice')?.unread !== 0 && Date.now() - start < 3000; ) {
      await sleep(20)
      after = await lister.channels()
    }
    expect(after.find((c) => c.name === 'private:user-alice')).toMatchObject({ unread: 0, lastSeenOffset: 4, top: 4 })
    expect(await lister.channels({ limit: 1 })).toHaveLength(1)
  })
})

describe('encrypted channels', () => {
  it('an edit is sealed bound to the original event and opened for the other subscriber; without the event it is refused before sending', async () => {
    const s = await start()
    const key = { id: 'k1', key: toBase64url(new Uint8Array(randomBytes(32))) }
    const alice = client('alice').channel('sealed:e', { encryption: { key: () => key } })
    const bob = client('bob').channel('sealed:e', { encryption: { key: () => key } })
    await alice.subscribe()
    await bob.subscribe()
    const seen = record(bob)
    const errors: Error[] = []
    bob.on('error', (e) => errors.push(e))
    const sent = await alice.send('note', { text: 'secret plan' })
    await until(() => seen.messages.length === 1)
    await expect(alice.edit(sent.offset!, { text: 'better plan' })).rejects.toMatchObject({ code: 'RT_007' })
    const result = await alice.edit(sent.offset!, { text: 'better plan' }, { event: 'note' })
    expect(result).toMatchObject({ offset: sent.offset, version: 2 })
    await until(() => seen.revisions.length === 1, 3000, 'the sealed revision')
    expect(seen.revisions[0]).toMatchObject({ offset: sent.offset, version: 2, data: { text: 'better plan' }, event: 'note' })
    // The hub keeps only the envelope.
    const stored = await s.hub.channel('sealed:e').history()
    expect(JSON.stringify(stored.messages)).not.toContain('better plan')
    // History opens the revised message and the revision event.
    const page = await bob.history()
    expect(page.messages.map((m) => [m.data, m.version])).toEqual([[{ text: 'better plan' }, 2]])
    expect(page.revisions.map((r) => r.data)).toEqual([{ text: 'better plan' }])
    // A deletion has nothing to open.
    await alice.delete(sent.offset!)
    await until(() => seen.revisions.length === 2)
    expect(seen.revisions[1]).toMatchObject({ deleted: true, data: null, version: 3 })
    expect(errors).toEqual([])
  })
})

describe('revision events are acknowledged like messages', () => {
  it('on an at-least-once offline channel, a revision event moves the cursor: nothing unread, not redelivered', async () => {
    const s = await start()
    const alice = client('alice').channel('team:t')
    const bobRt = client('bob')
    const bob = bobRt.channel('team:t')
    await alice.subscribe()
    await bob.subscribe()
    const seen = record(bob)
    const sent = await alice.send('chat', 'plan A')
    await until(() => seen.messages.length === 1)
    const edited = await alice.edit(sent.offset!, 'plan B')
    await until(() => seen.revisions.length === 1)
    // Bob's acknowledgment covers the revision event's offset.
    await until(() => bob.state === 'subscribed', 1000)
    let mine = (await bobRt.channels()).find((c) => c.name === 'team:t')
    for (const start = Date.now(); mine?.lastSeenOffset !== edited.revision && Date.now() - start < 3000; ) {
      await sleep(20)
      mine = (await bobRt.channels()).find((c) => c.name === 'team:t')
    }
    expect(mine).toMatchObject({ name: 'team:t', lastSeenOffset: edited.revision, top: edited.revision, unread: 0 })
    expect(await s.hub.channel('team:t').deliveredTo(edited.revision)).toContain('bob')
    // A reconnect replays nothing: the revision was processed once.
    s.cut()
    await until(() => bobRt.state === 'connected' && bob.state === 'subscribed', 5000, 'the reconnect')
    const next = await alice.send('chat', 'go')
    await until(() => seen.messages.length === 2, 5000, 'the next message')
    await sleep(50)
    expect(seen.log).toEqual([`message ${sent.offset}`, `revision ${sent.offset}@2`, `message ${next.offset}`])
  })
})

describe('over SSE', () => {
  it('an SSE subscriber gets an edit as a revision and searches the new words', async () => {
    await start()
    const alice = client('alice').channel('chat:sse')
    const bobRt = client('bob', { transports: ['sse'] })
    const bob = bobRt.channel('chat:sse')
    await alice.subscribe()
    await bob.subscribe()
    expect(bobRt.transport).toBe('sse')
    const seen = record(bob)
    const sent = await alice.send('chat', 'over sse')
    await until(() => seen.messages.length === 1)
    await alice.edit(sent.offset!, 'over server-sent events')
    await until(() => seen.revisions.length === 1, 3000, 'the revision over SSE')
    expect(seen.revisions[0]).toMatchObject({ offset: sent.offset, version: 2, data: 'over server-sent events' })
    expect(seen.log).toEqual([`message ${sent.offset}`, `revision ${sent.offset}@2`])
    expect((await bob.search('events')).map((m) => m.offset)).toEqual([sent.offset])
  })
})

describe('against a scripted hub (a WebSocket server that sends crafted frames)', () => {
  it('revisions that cross (version 3 before 2), repeat or arrive twice are emitted once, at the highest version; every one is acknowledged', async () => {
    const { WebSocketServer } = await import('ws')
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'tidings.v1.json' })
    await new Promise<void>((r) => wss.once('listening', () => r()))
    const acks: number[] = []
    const m = (offset: number, extra: Record<string, unknown> = {}) => ({
      type: 'message', channel: 'chat:s', event: 'say', data: `d${offset}`, id: `m${offset}`, offset, timestamp: '2026-01-01T00:00:00.000Z', sender: 'ada', ack: true, ...extra,
    })
    wss.on('connection', (socket) => {
      socket.send(JSON.stringify({ type: 'connected', v: 1, connectionId: 'c1', userId: 'bob', limits: { maxMessageSize: 65536, messagesPerSecond: 100, maxSubscriptions: 10 } }))
      socket.on('message', (raw) => {
        const f = JSON.parse(String(raw)) as { type: string; id?: number; offset?: number }
        if (f.type === 'ack') acks.push(f.offset!)
        if (f.type !== 'subscribe') return
        socket.send(JSON.stringify({ type: 'subscribed', id: f.id, channel: 'chat:s', position: { epoch: 'e1', offset: 0 }, delivery: 'at-least-once' }))
        const frames = [
          m(1),
          // Two editors crossed: the store gave B version 3 but its event was appended first.
          m(2, { data: 'B', sender: 'ada', revises: { offset: 1, version: 3 } }),
          m(3, { data: 'A', revises: { offset: 1, version: 2 } }),
          // A redelivery of an event already processed.
          m(3, { data: 'A', revises: { offset: 1, version: 2 } }),
          // The same version again under another event (a replay through another path).
          m(4, { data: 'B', revises: { offset: 1, version: 3 } }),
          m(5),
          // A deletion of a message this client never had: still a revision, emitted once.
          m(6, { data: null, revises: { offset: 5, version: 2, deleted: true } }),
        ]
        for (const frame of frames) socket.send(JSON.stringify(frame))
      })
    })
    const { port } = wss.address() as { port: number }
    const rt = new Realtime({ url: `http://127.0.0.1:${port}`, auth: 'x', transports: ['websocket'], WebSocket, heartbeatIntervalMs: 0, ackIntervalMs: 10, reconnect: false })
    clients.push(rt)
    try {
      const ch = rt.channel('chat:s')
      const seen = record(ch)
      await ch.subscribe()
      await until(() => seen.log.length === 4, 3000, 'the scripted frames')
      await until(() => acks.includes(6), 3000, 'the acknowledgment of offset 6')
      await sleep(30)
      expect(seen.log).toEqual(['message 1', 'revision 1@3', 'message 5', 'revision 5@2'])
      expect(seen.revisions.map((r) => [r.revision, r.data, r.deleted])).toEqual([[2, 'B', false], [6, null, true]])
      expect(Math.max(...acks)).toBe(6)
    } finally {
      rt.close()
      await new Promise<void>((r) => wss.close(() => r()))
    }
  })
})
