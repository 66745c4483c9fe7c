import { describe, expect, it } from 'vitest'
import { type MessageFrame, type MessageStore, RealtimeError, createManualClock, createMemoryBus, createMemoryPresenceStore, createMemoryStore } from '@tidings/core'
import { createTestHub } from '@tidings/core/testing'
import { z } from 'zod'

// Message revisions (edits and deletes as events with versions), history search and the per-user
// channel list, through the hub, over the in-memory transport.

const CHAT = { 'chat:*': { subscribe: true, publish: 'authenticated', revisions: 'own' } } as const

async function rejection(p: Promise<unknown>): Promise<RealtimeError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(RealtimeError)
  return err as RealtimeError
}

const revisionsOf = (frames: MessageFrame[]) => frames.filter((f) => f.revises !== undefined)
const plainOf = (frames: MessageFrame[]) => frames.filter((f) => f.revises === undefined)

describe('revisions: edits and deletes delivered as events with versions', () => {
  it('a client edits its own message: others get a revision event (version 2, new data) at the next offset; history shows version 2', async () => {
    await using t = createTestHub({ channels: CHAT })
    const ada = await t.connect({ userId: 'ada' })
    const bob = await t.connect({ userId: 'bob' })
    await ada.subscribe('chat:1')
    await bob.subscribe('chat:1')
    const sent = await ada.publish('chat:1', 'say', { text: 'helo' })
    const revised = await ada.edit('chat:1', sent.offset!, { text: 'hello' })
    expect(revised).toMatchObject({ type: 'revised', channel: 'chat:1', offset: sent.offset, version: 2, revision: sent.offset! + 1 })
    expect(revised.deleted).toBeUndefined()
    await t.settle()
    const got = bob.messages('chat:1')
    expect(plainOf(got).map((m) => m.data)).toEqual([{ text: 'helo' }])
    expect(revisionsOf(got)).toEqual([expect.objectContaining({ event: 'say', data: { text: 'hello' }, offset: sent.offset! + 1, sender: 'ada', revises: { offset: sent.offset, version: 2 } })])
    // the editor is left out, as for its publishes (no echo)
    expect(revisionsOf(ada.messages('chat:1'))).toEqual([])
    const h = await t.hub.channel('chat:1').history()
    expect(h.messages.map((m) => [m.offset, m.data, m.version, m.revises])).toEqual([
      [1, { text: 'hello' }, 2, undefined],
      [2, { text: 'hello' }, undefined, { offset: 1, version: 2 }],
    ])
  })

  it('a deletion reaches subscribers whose filter its null data would fail; history keeps a tombstone', async () => {
    await using t = createTestHub({ channels: CHAT })
    const ada = await t.connect({ userId: 'ada' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('chat:1', { filter: { field: 'data.urgent', op: 'eq', value: true } })
    const sent = await ada.publish('chat:1', 'say', { text: 'secret', urgent: true })
    await t.settle()
    expect(bob.messages('chat:1')).toHaveLength(1)
    const r = await ada.delete('chat:1', sent.offset!)
    expect(r).toMatchObject({ version: 2, deleted: true })
    await t.settle()
    const [, deletion] = bob.messages('chat:1')
    expect(deletion).toMatchObject({ data: null, revises: { offset: sent.offset, version: 2, deleted: true } })
    const [tomb] = (await t.hub.channel('chat:1').history()).messages
    expect(tomb).toMatchObject({ offset: sent.offset, data: null, deleted: true, version: 2 })
    // a deleted message cannot be revised again
    expect((await rejection(ada.edit('chat:1', sent.offset!, { text: 'back' }))).code).toBe('RT_004')
    expect((await rejection(ada.delete('chat:1', sent.offset!))).code).toBe('RT_004')
  })

  it('refuses: someone else’s message (RT_003), a channel without revisions (RT_003), anonymous (RT_003), an offset not retained (RT_004), a revision event (RT_007), malformed offsets (RT_007)', async () => {
    await using t = createTestHub({ channels: { ...CHAT, 'plain:*': { subscribe: true, publish: true } } })
    const ada = await t.connect({ userId: 'ada' })
    const eve = await t.connect({ userId: 'eve' })
    const anon = await t.connect()
    const sent = await ada.publish('chat:1', 'say', { text: 'mine' })
    expect((await rejection(eve.edit('chat:1', sent.offset!, { text: 'pwned' }))).code).toBe('RT_003')
    expect((await rejection(eve.delete('chat:1', sent.offset!))).code).toBe('RT_003')
    expect((await rejection(anon.edit('chat:1', sent.offset!, 'x'))).code).toBe('RT_003')
    const plain = await ada.publish('plain:1', 'say', 'x')
    expect((await rejection(ada.edit('plain:1', plain.offset!, 'y'))).code).toBe('RT_003')
    expect((await rejection(ada.edit('chat:1', 99, 'y'))).code).toBe('RT_004')
    const r = await ada.edit('chat:1', sent.offset!, { text: 'v2' })
    expect((await rejection(ada.edit('chat:1', r.revision, 'y'))).code).toBe('RT_007')
    for (const offset of [0, -1, 1.5, '1', null, 2 ** 60]) {
      expect((await rejection(ada.request({ type: 'edit', channel: 'chat:1', offset, data: 'z' } as never))).code).toBe('RT_007')
    }
    expect((await rejection(ada.request({ type: 'edit', channel: 'chat:1', offset: 1, data: 'z', extra: 1 } as never))).code).toBe('RT_007')
    // nothing of it changed the message, and the connection still works
    const [m] = (await t.hub.channel('chat:1').history()).messages
    expect(m).toMatchObject({ data: { text: 'v2' }, version: 2 })
    expect((await ada.publish('chat:1', 'say', 'still here')).offset).toBe(3)
  })

  it('an edit that a publish would refuse (too large, failing the event schema, plaintext on an encrypted channel) leaves the message as it was', async () => {
    await using t = createTestHub({
      limits: { maxMessageSize: 2_048 },
      channels: {
        ...CHAT,
        'typed:*': { subscribe: true, publish: true, revisions: 'own', events: { say: z.object({ text: z.string().max(10) }) } },
        'secret:*': { subscribe: true, publish: true, revisions: 'own', encrypted: true },
      },
    })
    const ada = await t.connect({ userId: 'ada' })
    const a = await ada.publish('chat:1', 'say', { text: 'small' })
    expect((await rejection(ada.edit('chat:1', a.offset!, { text: 'x'.repeat(1_900) }))).code).toBe('RT_005')
    const b = await ada.publish('typed:1', 'say', { text: 'ok' })
    expect((await rejection(ada.edit('typed:1', b.offset!, { text: 'far too long for it' }))).code).toBe('RT_007')
    const envelope = { e2e: 1, kid: 'k1', iv: 'AAAAAAAAAAAAAAAA', ct: 'Y2lwaGVydGV4dC1vZi1hdC1sZWFzdC0yMg' }
    const c = await ada.publish('secret:1', 'say', envelope)
    expect((await rejection(ada.edit('secret:1', c.offset!, { text: 'plaintext' }))).code).toBe('RT_007')
    expect(await ada.edit('secret:1', c.offset!, { ...envelope, ct: 'bmV3LWNpcGhlcnRleHQtb2YtYXQtbGVhc3QtMjI' })).toMatchObject({ version: 2 })
    // a deletion of an encrypted message carries no data and is accepted
    expect(await ada.delete('secret:1', c.offset!)).toMatchObject({ version: 3, deleted: true })
    for (const [ch, data] of [['chat:1', { text: 'small' }], ['typed:1', { text: 'ok' }]] as const) {
      const h = await t.hub.channel(ch).history()
      expect(h.messages).toHaveLength(1)
      expect(h.messages[0]?.data).toEqual(data)
      expect(h.messages[0]?.version).toBeUndefined()
    }
  })

  it('the content filter sees edits: a rejected edit changes nothing', async () => {
    await using t = createTestHub({ channels: CHAT, content: (ctx) => (JSON.stringify(ctx.data).includes('spam') ? { refuse: 'RT_007', reason: 'spam' } : undefined) })
    const ada = await t.connect({ userId: 'ada' })
    const sent = await ada.publish('chat:1', 'say', { text: 'fine' })
    expect((await rejection(ada.edit('chat:1', sent.offset!, { text: 'spam spam' }))).code).toBe('RT_007')
    expect((await t.hub.channel('chat:1').history()).messages).toEqual([expect.objectContaining({ data: { text: 'fine' } })])
  })

  it('a subscriber away during an edit gets the revision on resume, in order, once (at-least-once channel)', async () => {
    await using t = createTestHub({ channels: { 'chat:*': { ...CHAT['chat:*'], delivery: 'at-least-once' } } })
    const ada = await t.connect({ userId: 'ada' })
    const bob = await t.connect({ userId: 'bob' })
    const sub = await bob.subscribe('chat:1')
    const first = await ada.publish('chat:1', 'say', { text: 'one' })
    await t.settle()
    bob.ack('chat:1', first.offset!)
    bob.drop()
    await ada.edit('chat:1', first.offset!, { text: 'uno' })
    await ada.publish('chat:1', 'say', { text: 'two' })
    const back = await t.connect({ userId: 'bob' })
    const again = await back.subscribe('chat:1', { since: { epoch: sub.position!.epoch, offset: first.offset! } })
    expect(again.recovered).toBe(true)
    await t.settle()
    const got = back.messages('chat:1')
    expect(got.map((m) => [m.offset, m.data, m.revises?.version])).toEqual([
      [2, { text: 'uno' }, 2],
      [3, { text: 'two' }, undefined],
    ])
  })

  it('server code revises any message, or on behalf of a user (only its own); concurrent edits get distinct versions', async () => {
    await using t = createTestHub({ channels: { 'news:*': { subscribe: true, publish: false } } })
    const reader = await t.connect({ userId: 'reader' })
    await reader.subscribe('news:1')
    const ch = t.hub.channel('news:1')
    const p = await ch.publish('story', { title: 'draft' }, { sender: 'editor' })
    const results = await Promise.all([ch.edit(p.offset!, { title: 'v-a' }), ch.edit(p.offset!, { title: 'v-b' }), ch.edit(p.offset!, { title: 'v-c' })])
    expect(results.map((r) => r.version).sort()).toEqual([2, 3, 4])
    expect((await rejection(ch.edit(p.offset!, { title: 'x' }, { by: 'intruder' }))).code).toBe('RT_003')
    expect(await ch.delete(p.offset!, { by: 'editor' })).toMatchObject({ version: 5, deleted: true })
    await t.settle()
    const revisions = revisionsOf(reader.messages('news:1'))
    expect(revisions.map((r) => r.revises!.version).sort()).toEqual([2, 3, 4, 5])
    // whatever order they arrived in, the highest version wins
    const top = revisions.reduce((a, b) => (b.revises!.version > a.revises!.version ? b : a))
    expect(top).toMatchObject({ data: null, revises: { deleted: true, version: 5 } })
    expect((await rejection(ch.edit(0, 'x'))).code).toBe('RT_007')
    expect((await rejection(ch.edit(Number.NaN, 'x'))).code).toBe('RT_007')
  })

  it('RT_004 on a channel that keeps no history, RT_007 with a store that cannot revise; revision events are not routed', async () => {
    const memory = createMemoryStore()
    const { revise: _r, search: _s, channelsOf: _c, ...rest } = memory
    const plainStore: MessageStore = { ...rest, append: memory.append, read: memory.read }
    await using t = createTestHub({ store: plainStore, channels: { ...CHAT, 'volatile:*': { subscribe: true, publish: true, revisions: 'own', history: false } } })
    const ada = await t.connect({ userId: 'ada' })
    const v = await ada.publish('volatile:1', 'say', 'x')
    expect(v.offset).toBeUndefined()
    expect((await rejection(t.hub.channel('volatile:1').edit(1, 'y'))).code).toBe('RT_004')
    const sent = await ada.publish('chat:1', 'say', 'x')
    expect((await rejection(ada.edit('chat:1', sent.offset!, 'y'))).message).toMatch(/cannot revise/)
    expect((await rejection(ada.search('chat:1', 'x'))).code).toBe('RT_007')
    expect((await rejection(ada.channels())).code).toBe('RT_007')

    await using t2 = createTestHub({ channels: CHAT })
    const routed: string[] = []
    t2.hub.route((m) => {
      routed.push(m.channel)
      return m.channel === 'chat:1' ? 'chat:copy' : undefined
    })
    const bob = await t2.connect({ userId: 'bob' })
    const p = await bob.publish('chat:1', 'say', 'x')
    await bob.edit('chat:1', p.offset!, 'y')
    await t2.settle()
    // the route ran for the publish only, not for the revision event
    expect(routed).toEqual(['chat:1'])
    expect((await t2.hub.channel('chat:copy').history()).messages.map((m) => m.data)).toEqual(['x'])
  })
})

describe('a deletion and the earlier edits', () => {
  it('a deleted message’s edited words do not come back through its edit events (history, resume)', async () => {
    await using t = createTestHub({ channels: { 'chat:*': { ...CHAT['chat:*'], delivery: 'at-least-once' } } })
    const ada = await t.connect({ userId: 'ada' })
    const bob = await t.connect({ userId: 'bob' })
    const sub = await bob.subscribe('chat:1')
    const p = await ada.publish('chat:1', 'say', { text: 'first words' })
    await ada.edit('chat:1', p.offset!, { text: 'second words' })
    await ada.edit('chat:1', p.offset!, { text: 'third words' })
    await ada.publish('chat:1', 'say', { text: 'unrelated' })
    await ada.delete('chat:1', p.offset!)
    const h = await t.hub.channel('chat:1').history()
    expect(JSON.stringify(h.messages)).not.toMatch(/first|second|third/)
    expect(h.messages.map((m) => [m.offset, m.data, m.deleted, m.revises?.version])).toEqual([
      [1, null, true, undefined],
      [2, null, true, 2],
      [3, null, true, 3],
      [4, { text: 'unrelated' }, undefined, undefined],
      [5, null, undefined, 4],
    ])
    const back = await t.connect({ userId: 'bob' })
    await back.subscribe('chat:1', { since: { epoch: sub.position!.epoch, offset: 0 } })
    await t.settle()
    expect(JSON.stringify(back.messages('chat:1'))).not.toMatch(/first|second|third/)
    expect(await ada.search('chat:1', 'words')).toEqual([])
  })
})

describe('a revision is published like a message', () => {
  it('client edits spend the channel’s publish budget (RT_006 past publishesPerMinute) and flagged edits raise content:flagged', async () => {
    const flagged: string[] = []
    await using t = createTestHub({
      channels: { 'chat:*': { ...CHAT['chat:*'], publishesPerMinute: 3 } },
      content: (ctx) => (JSON.stringify(ctx.data).includes('rude') ? { flag: 'rude word' } : undefined),
    })
    t.hub.on('content:flagged', (e) => flagged.push(`${e.reason}@${e.offset}`))
    const ada = await t.connect({ userId: 'ada' })
    const p = await ada.publish('chat:1', 'say', { text: 'nice' })
    const e1 = await ada.edit('chat:1', p.offset!, { text: 'rude now' })
    await ada.edit('chat:1', p.offset!, { text: 'nice again' })
    // 3 per minute: the publish and two edits spent it
    expect((await rejection(ada.edit('chat:1', p.offset!, { text: 'once more' }))).code).toBe('RT_006')
    expect(flagged).toEqual([`rude word@${e1.revision}`])
    expect((await t.hub.channel('chat:1').history()).messages[0]).toMatchObject({ version: 3, data: { text: 'nice again' } })
  })

  it('an edit whose message is deleted while the edit event is on its way does not keep the edited words in the log', async () => {
    const memory = createMemoryStore()
    let hold: Promise<void> | undefined
    let release = () => {}
    // the edit's event append waits until the deletion has run (and scrubbed what it could find)
    const store: MessageStore = {
      ...memory,
      append: (channel, message, options) => {
        if (message.revises !== undefined && message.revises.deleted !== true && hold !== undefined) {
          const h = hold
          hold = undefined
          return h.then(() => memory.append(channel, message, options))
        }
        return memory.append(channel, message, options)
      },
    }
    await using t = createTestHub({ store, channels: CHAT })
    const ch = t.hub.channel('chat:1')
    const p = await ch.publish('say', { text: 'plain' }, { sender: 'ada' })
    hold = new Promise<void>((r) => (release = r))
    const edit = ch.edit(p.offset!, { text: 'SECRET words' })
    await t.settle()
    const del = await ch.delete(p.offset!)
    release()
    const edited = await edit
    expect(edited.version).toBe(2)
    expect(del.version).toBe(3)
    await t.settle()
    const h = await ch.history()
    expect(JSON.stringify(h.messages)).not.toContain('SECRET')
    expect(h.messages.find((m) => m.offset === edited.revision)).toMatchObject({ data: null, deleted: true, revises: { offset: p.offset, version: 2 } })
  })
})

describe('revisions and exclusions', () => {
  it('an edit is not for whoever the message was not for (its exclude), nor for the editor’s own connection', async () => {
    await using t = createTestHub({ channels: CHAT })
    const ada = await t.connect({ userId: 'ada' })
    const bob = await t.connect({ userId: 'bob' })
    const cy = await t.connect({ userId: 'cy' })
    for (const c of [ada, bob, cy]) await c.subscribe('chat:1')
    const p = await t.hub.channel('chat:1').publish('say', { text: 'not for bob' }, { sender: 'ada', exclude: { users: ['bob'] } })
    await t.hub.channel('chat:1').edit(p.offset!, { text: 'still not for bob' })
    await t.hub.channel('chat:1').delete(p.offset!, { by: 'ada' })
    await t.settle()
    expect(bob.messages('chat:1')).toEqual([])
    expect(cy.messages('chat:1').map((m) => m.revises?.version)).toEqual([undefined, 2, 3])
    // a client's edit: the original's exclusions and the editor's connection
    const q = await ada.publish('chat:1', 'say', { text: 'mine' })
    await ada.edit('chat:1', q.offset!, { text: 'mine, edited' })
    await t.settle()
    expect(ada.messages('chat:1').filter((m) => m.offset! > 3)).toEqual([])
    expect(bob.messages('chat:1').map((m) => m.revises?.version)).toEqual([undefined, 2])
    const [stored] = (await t.hub.channel('chat:1').history({ after: q.offset! })).messages
    expect(stored?.exclude).toEqual({ connections: [ada.connectionId] })
  })
})

describe('revisions across nodes', () => {
  it('an edit made on one node reaches the subscribers of another, with the version, and both nodes read the same history', async () => {
    const clock = createManualClock(0)
    const bus = createMemoryBus()
    const store = createMemoryStore()
    const presenceStore = createMemoryPresenceStore()
    const make = (nodeId: string) => createTestHub({ nodeId, clock, broker: bus.broker(), store, presenceStore, channels: CHAT })
    await using a = make('a')
    await using b = make('b')
    const ada = await a.connect({ userId: 'ada' })
    const bob = await b.connect({ userId: 'bob' })
    await bob.subscribe('chat:1')
    await b.settle()
    const sent = await ada.publish('chat:1', 'say', { text: 'draft' })
    await ada.edit('chat:1', sent.offset!, { text: 'final' })
    await ada.delete('chat:1', sent.offset!)
    await a.settle()
    await b.settle()
    expect(bob.messages('chat:1').map((m) => [m.offset, m.data, m.revises])).toEqual([
      [1, { text: 'draft' }, undefined],
      [2, { text: 'final' }, { offset: 1, version: 2 }],
      [3, null, { offset: 1, version: 3, deleted: true }],
    ])
    const [ha, hb] = [await a.hub.channel('chat:1').history(), await b.hub.channel('chat:1').history()]
    expect(ha.messages).toEqual(hb.messages)
    expect(ha.messages[0]).toMatchObject({ data: null, deleted: true, version: 3 })
  })
})

describe('search of a channel’s history', () => {
  it('client searches are budgeted per node, every client together (limits.searchesPerSecond): past it RT_006 with retryAfterMs; server code is not counted', async () => {
    await using t = createTestHub({ channels: CHAT, limits: { searchesPerSecond: 3 } })
    const [ada, bob] = [await t.connect({ userId: 'ada' }), await t.connect({ userId: 'bob' })]
    await ada.publish('chat:1', 'say', { text: 'find me' })
    for (const c of [ada, bob, ada]) expect(await c.search('chat:1', 'find')).toHaveLength(1)
    const err = await rejection(bob.search('chat:1', 'find'))
    expect(err.code).toBe('RT_006')
    expect(err.details?.retryAfterMs).toBeGreaterThan(0)
    expect(await t.hub.channel('chat:1').search('find')).toHaveLength(1)
    await t.advance(1_000)
    expect(await bob.search('chat:1', 'find')).toHaveLength(1)
  })

  it('finds messages as they are now (edited words, never deleted ones), newest first, pages with before', async () => {
    await using t = createTestHub({ channels: CHAT })
    const ada = await t.connect({ userId: 'ada' })
    const a = await ada.publish('chat:1', 'say', { text: 'Meet at the harbour' })
    const b = await ada.publish('chat:1', 'say', { text: 'harbour closed today' })
    await ada.publish('chat:1', 'say', { text: 'unrelated' })
    await ada.edit('chat:1', a.offset!, { text: 'Meet at the station' })
    await ada.delete('chat:1', b.offset!)
    expect(await ada.search('chat:1', 'harbour')).toEqual([])
    expect((await ada.search('chat:1', 'STATION meet')).map((m) => [m.offset, m.version])).toEqual([[1, 2]])
    for (let i = 0; i < 5; i++) await ada.publish('chat:1', 'say', { text: `ping ${i}` })
    const page1 = await ada.search('chat:1', 'ping', { limit: 2 })
    expect(page1.map((m) => m.data)).toEqual([{ text: 'ping 4' }, { text: 'ping 3' }])
    const page2 = await ada.search('chat:1', 'ping', { limit: 2, before: page1.at(-1)!.offset })
    expect(page2.map((m) => m.data)).toEqual([{ text: 'ping 2' }, { text: 'ping 1' }])
    expect((await t.hub.channel('chat:1').search('ping', { limit: 100 })).length).toBe(5)
  })

  it('needs the history rule (RT_003), a channel with history (RT_004), plaintext (RT_007), a query of 1..256 characters (RT_007)', async () => {
    await using t = createTestHub({
      channels: {
        'chat:*': { subscribe: true, publish: true, rules: { history: 'auth.uid == "ada"' } },
        'nohist:*': { subscribe: true, publish: true, history: false },
        'secret:*': { subscribe: true, publish: true, encrypted: true },
      },
    })
    const ada = await t.connect({ userId: 'ada' })
    const eve = await t.connect({ userId: 'eve' })
    await ada.publish('chat:1', 'say', { text: 'private words' })
    expect((await ada.search('chat:1', 'private')).length).toBe(1)
    expect((await rejection(eve.search('chat:1', 'private'))).code).toBe('RT_003')
    expect((await rejection(ada.search('nohist:1', 'x'))).code).toBe('RT_004')
    expect((await rejection(ada.search('secret:1', 'x'))).code).toBe('RT_007')
    expect((await rejection(ada.search('chat:1', ''))).code).toBe('RT_007')
    expect((await rejection(ada.search('chat:1', 'x'.repeat(257)))).code).toBe('RT_007')
    expect((await rejection(ada.search('nope', 'x'))).code).toBe('RT_004')
  })
})

describe('the per-user channel list', () => {
  it('lists the offline channels a user subscribed to, with unread counts that drop as it acknowledges', async () => {
    await using t = createTestHub({ channels: { 'inbox:{userId}': { subscribe: true, publish: true, delivery: 'at-least-once', offline: { maxMessages: 50 } } } })
    const ada = await t.connect({ userId: 'ada' })
    await t.hub.channel('inbox:team').publish('note', 'before ada')
    await ada.subscribe('inbox:team')
    await ada.subscribe('private:user-ada')
    await t.settle()
    let list = await ada.channels()
    expect(list.find((c) => c.name === 'inbox:team')).toMatchObject({ unread: 1, lastSeenOffset: 0, top: 1 })
    for (let i = 0; i < 3; i++) await t.hub.channel('inbox:team').publish('note', i)
    await t.settle()
    list = await ada.channels()
    expect(list.find((c) => c.name === 'inbox:team')).toMatchObject({ unread: 4, top: 4 })
    ada.ack('inbox:team', 4)
    await t.settle()
    expect((await ada.channels()).find((c) => c.name === 'inbox:team')).toMatchObject({ unread: 0, lastSeenOffset: 4 })
    expect((await t.hub.channels.forUser('ada')).map((c) => c.name)).toContain('inbox:team')
    expect(await t.hub.channels.forUser('nobody')).toEqual([])
  })

  it('a client sees only channels it may still subscribe to; anonymous connections have no list (RT_003)', async () => {
    const allowed = new Set(['team:1/ada', 'team:2/ada'])
    await using t = createTestHub({ channels: { 'team:{id}': { subscribe: (ctx) => allowed.has(`${ctx.channel}/${ctx.identity.userId}`), publish: true, offline: { maxMessages: 10 } } } })
    const ada = await t.connect({ userId: 'ada' })
    for (const ch of ['team:1', 'team:2']) {
      await t.hub.channel(ch).publish('note', 'hi')
      await ada.subscribe(ch)
    }
    await t.settle()
    expect((await ada.channels()).map((c) => c.name).sort()).toEqual(['team:1', 'team:2'])
    allowed.delete('team:2/ada') // removed from team 2: its name and counts are no longer hers to see
    expect((await ada.channels()).map((c) => c.name)).toEqual(['team:1'])
    // server code sees the store's list as it is
    expect((await t.hub.channels.forUser('ada')).map((c) => c.name).sort()).toEqual(['team:1', 'team:2'])
    const anon = await t.connect()
    expect((await rejection(anon.channels())).code).toBe('RT_003')
    for (const limit of [0, 501, 1.5, 'x']) expect((await rejection(ada.request({ type: 'channels', limit } as never))).code).toBe('RT_007')
    expect(await ada.channels({ limit: 1 })).toHaveLength(1)
  })
})
