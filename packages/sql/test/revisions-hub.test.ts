import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import type { HubOptions, MessageFrame, MessageStore } from '@tidings/core'
import { createTestHub } from '@tidings/core/testing'
import { afterAll, describe, expect, it } from 'vitest'
import { createSqlStore } from '../src/index.js'
import { createSqliteStore } from '../src/sqlite/index.js'

// Message revisions end to end over each SQL store (one scenario, run over each): a hub (core's
// edit/delete/search, clients' edit frames on a `revisions: 'own'` channel) on the database, then
// a second hub with a store of its own over the same database, as after a restart: what the first
// one revised must be what the second one reads and replays.

const pglite = new PGlite()
const dir = mkdtempSync(join(tmpdir(), 'tidings-sqlite-rev-'))
const filename = join(dir, 'revisions.sqlite')

afterAll(async () => {
  await pglite.close()
  rmSync(dir, { recursive: true, force: true })
})

/** Each database: a new store over it (each hub its own, as after a restart). */
const databases: Array<{ name: string; store: () => MessageStore }> = [
  { name: 'the SQL store on PGlite', store: () => createSqlStore({ db: { pglite }, sweepIntervalMs: false }) },
  { name: 'the SQLite store on a WAL file', store: () => createSqliteStore({ db: { filename }, sweepIntervalMs: false }) },
]

const shape = (m: MessageFrame) => ({ offset: m.offset, data: m.data, sender: m.sender, revises: m.revises, version: m.version, deleted: m.deleted })

describe.each(databases)('revisions through the hub on $name', ({ store }) => {
  const options = (): HubOptions => ({
    store: store(),
    channels: {
      'chat:*': { subscribe: true, publish: 'authenticated', revisions: 'own', history: { maxCount: 1_000, maxAgeMs: 24 * 3_600_000 } },
      'inbox:*': { subscribe: true, publish: 'authenticated', offline: { maxMessages: 100, ttlMs: 3_600_000 } },
    },
  })

  it('edits and deletes reach subscribers as revision events and read back from a new hub over the same database (versions, tombstone, replayed revisions); search matches only the words as they are now; the user channel list comes from the store cursors', async () => {
    const ch = 'chat:revisions'
    const first = createTestHub(options())
    const alice = await first.connect({ userId: 'alice' })
    const bob = await first.connect({ userId: 'bob' })
    await alice.subscribe(ch)
    await bob.subscribe(ch)
    await alice.publish(ch, 'chat', { text: 'helo wrld typo' })
    await alice.publish(ch, 'chat', { text: 'secret doomed words' })
    await bob.publish(ch, 'chat', { text: 'plain message' })
    // a client edits its own message (a frame); server code deletes another one
    const edited = await alice.edit(ch, 1, { text: 'hello world fixed' })
    expect(edited).toMatchObject({ offset: 1, version: 2, revision: 4 })
    const deleted = await first.hub.channel(ch).delete(2)
    expect(deleted).toMatchObject({ offset: 2, version: 2, deleted: true, revision: 5 })
    // bob is not alice: his edit of her message is refused and changes nothing stored
    await expect(bob.edit(ch, 1, { text: 'hijacked' })).rejects.toMatchObject({ code: 'RT_003' })
    // an offline channel: bob's cursor there (committed by the hub as it delivers) lists it for him
    const inbox = await first.connect({ userId: 'bob' })
    await alice.publish('inbox:bob', 'note', { n: 1 })
    await inbox.subscribe('inbox:bob')
    await alice.publish('inbox:bob', 'note', { n: 2 })
    await first.settle()
    inbox.close()
    await first.settle()
    await alice.publish('inbox:bob', 'note', { n: 3 })
    // (bob's own message 3 is not echoed to him)
    expect(bob.messages(ch).map(shape)).toEqual([
      { offset: 1, data: { text: 'helo wrld typo' }, sender: 'alice', revises: undefined, version: undefined, deleted: undefined },
      { offset: 2, data: { text: 'secret doomed words' }, sender: 'alice', revises: undefined, version: undefined, deleted: undefined },
      { offset: 4, data: { text: 'hello world fixed' }, sender: 'alice', revises: { offset: 1, version: 2 }, version: undefined, deleted: undefined },
      { offset: 5, data: null, sender: undefined, revises: { offset: 2, version: 2, deleted: true }, version: undefined, deleted: undefined },
    ])
    await first.close()

    // a new hub on the same database: history as it is now, and the revision events kept in the log
    const second = createTestHub(options())
    const history = await second.hub.channel(ch).history({ after: 0 })
    expect(history.messages.map((m) => [m.offset, m.data, m.version, m.deleted, m.revises])).toEqual([
      [1, { text: 'hello world fixed' }, 2, undefined, undefined],
      [2, null, 2, true, undefined],
      [3, { text: 'plain message' }, undefined, undefined, undefined],
      [4, { text: 'hello world fixed' }, undefined, undefined, { offset: 1, version: 2 }],
      [5, null, undefined, undefined, { offset: 2, version: 2, deleted: true }],
    ])
    // a subscriber resuming from the start is replayed the messages as they are now and the revision events
    const carol = await second.connect({ userId: 'carol' })
    await carol.subscribe(ch, { since: { epoch: history.epoch, offset: 0 } })
    await second.settle()
    expect(carol.messages(ch).map((m) => [m.offset, m.version, m.deleted, m.revises])).toEqual([
      [1, 2, undefined, undefined],
      [2, 2, true, undefined],
      [3, undefined, undefined, undefined],
      [4, undefined, undefined, { offset: 1, version: 2 }],
      [5, undefined, undefined, { offset: 2, version: 2, deleted: true }],
    ])
    // search: the edited message by its new words only (never the revision event that carries them too), the deleted one never
    const search = async (q: string) => (await second.hub.channel(ch).search(q)).map((m) => m.offset)
    expect(await search('fixed')).toEqual([1])
    expect(await search('typo')).toEqual([])
    expect(await search('doomed')).toEqual([])
    expect(await search('plain')).toEqual([3])
    expect((await carol.search(ch, 'hello world')).map((m) => m.offset)).toEqual([1])
    // the user's channel list from the store's cursors: the offline channel, with what bob has not acknowledged
    expect(await second.hub.channels.forUser('bob')).toEqual([expect.objectContaining({ name: 'inbox:bob', lastSeenOffset: 2, top: 3, unread: 1, kind: 'inbox' })])
    // the edit is a new version in the store: a further edit through the new hub makes version 3
    expect(await second.hub.channel(ch).edit(1, { text: 'hello world, again' })).toMatchObject({ offset: 1, version: 3, revision: 6 })
    await second.close()
  }, 60_000)
})
