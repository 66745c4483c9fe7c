/**
 * What the SQL store adds to the MessageStore port, as one suite run over PostgreSQL and PGlite
 * (from store-postgres.test.ts and store-pglite.test.ts, on the database each already has).
 */
import type { Kysely } from 'kysely'
import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { type SqlStore, createMigrator, createSqlStore, migrate } from '../src/index.js'

const KEEP = { maxCount: 100_000, maxAgeMs: 24 * 3_600_000 }
const T0 = Date.UTC(2026, 0, 1)
let counter = 0
const fresh = (label: string) => `extras:${Date.now().toString(36)}:${++counter}:${label}`

export function storeExtras(label: string, database: () => Kysely<any>, options: { nodes?: number } = {}): void {
  const open = (extra: Partial<Parameters<typeof createSqlStore>[0]> = {}) => createSqlStore({ db: database(), migrate: false, sweepIntervalMs: false, ...extra })
  const append = (store: SqlStore, channel: string, n: number | string, extra: { sender?: string; data?: unknown; at?: number; retention?: typeof KEEP } = {}) =>
    store.append(channel, { id: `m${n}`, event: 'chat', data: extra.data ?? { text: `message ${n}` }, sender: extra.sender ?? 'alice', timestamp: extra.at ?? T0 }, { retention: extra.retention ?? KEEP, now: extra.at ?? T0 })

  describe(`SQL store extras: ${label}`, () => {
    it('concurrent appends to one channel from many callers on several stores (nodes) get offsets 1..n with no gap and no duplicate', async () => {
      const nodes = Array.from({ length: options.nodes ?? 3 }, () => open())
      const ch = fresh('concurrent')
      const perNode = 400
      const results = await Promise.all(
        nodes.flatMap((store, node) =>
          Array.from({ length: 20 }, async (_, caller) => {
            const out = []
            for (let i = caller; i < perNode; i += 20) out.push(await append(store, ch, `${node}-${i}`))
            return out
          }),
        ),
      )
      const all = results.flat()
      const total = nodes.length * perNode
      expect(all.map((r) => r.message.offset).sort((a, b) => a - b)).toEqual(Array.from({ length: total }, (_, i) => i + 1))
      const stored = []
      for (let after = 0; ; ) {
        const page = await nodes[0]!.read(ch, { after, limit: 500, now: T0 })
        if (page.messages.length === 0) break
        stored.push(...page.messages)
        after = page.messages.at(-1)!.offset
      }
      expect(stored.map((m) => m.offset)).toEqual(Array.from({ length: total }, (_, i) => i + 1))
      const reported = new Map(all.map((r) => [r.message.offset, r.message.id]))
      for (const m of stored) expect(m.id).toBe(reported.get(m.offset))
      expect(new Set(stored.map((m) => m.id)).size).toBe(total)
      for (const s of nodes) await s.close()
    }, 60_000)

    it('one idempotency key appended at once on several stores (nodes) stores one message; every node answers it', async () => {
      const nodes = Array.from({ length: options.nodes ?? 3 }, () => open())
      const ch = fresh('dedup-nodes')
      const results = await Promise.all(
        nodes.flatMap((store, node) =>
          Array.from({ length: 5 }, (_, i) =>
            store.append(ch, { id: `n${node}-${i}`, event: 'e', data: { node, i }, timestamp: T0 }, { retention: KEEP, now: T0, idempotencyKey: 'order-1', dedupWindowMs: 60_000 }),
          ),
        ),
      )
      expect(results.filter((r) => !r.duplicate)).toHaveLength(1)
      const winner = results.find((r) => !r.duplicate)!.message
      for (const r of results) expect(r.message).toEqual(winner)
      expect((await nodes[1]!.position(ch)).offset).toBe(1)
      for (const s of nodes) await s.close()
    })

    it('group commit: appends in flight together are written in batches and each resolves with its own offset, in call order', async () => {
      const store = open()
      const ch = fresh('batch')
      const results = await Promise.all(Array.from({ length: 300 }, (_, i) => append(store, ch, i)))
      expect(results.map((r) => r.message.offset)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1))
      expect(results.map((r) => r.message.id)).toEqual(Array.from({ length: 300 }, (_, i) => `m${i}`))
      // an infinite limit reads them all (no LIMIT), not a default page
      expect((await store.read(ch, { after: 0, limit: Number.POSITIVE_INFINITY, now: T0 })).messages).toHaveLength(300)
      await store.close()
    })

    it('an append to a closed store rejects instead of being dropped', async () => {
      const store = open()
      await store.close()
      await expect(append(store, fresh('closed'), 1)).rejects.toThrow(/closed/)
    })

    it('revise edits then deletes in place: versions, edit and deletion times in message(), a tombstone that cannot be revised, nothing for a message not retained', async () => {
      const store = open()
      const ch = fresh('edit')
      await append(store, ch, 1, { data: { text: 'helo' } })
      await append(store, ch, 2)
      const edited = await store.revise(ch, 1, { data: { text: 'hello' } }, { now: T0 + 10 })
      expect(edited?.message).toEqual({ offset: 1, id: 'm1', channel: ch, event: 'chat', data: { text: 'hello' }, sender: 'alice', timestamp: T0, version: 2 })
      expect((await store.read(ch, { after: 0, limit: 10, now: T0 })).messages[0]).toEqual(edited?.message)
      expect((await store.revise(ch, 1, { data: { text: 'hello!' } }, { now: T0 + 20 }))?.message.version).toBe(3)
      const removed = await store.revise(ch, 1, { deleted: true }, { now: T0 + 30 })
      expect(removed?.message).toMatchObject({ offset: 1, version: 4, data: null, deleted: true })
      expect(await store.message(ch, 1)).toMatchObject({ offset: 1, id: 'm1', data: null, version: 4, deleted: true, editedAt: T0 + 20, deletedAt: T0 + 30 })
      expect(await store.message(ch, 2)).toMatchObject({ offset: 2, version: 1, editedAt: null, deletedAt: null })
      expect(await store.revise(ch, 1, { data: { text: 'again' } }, { now: T0 })).toBeUndefined()
      expect(await store.revise(ch, 1, { deleted: true }, { now: T0 })).toBeUndefined()
      // offsets are untouched: the tombstone keeps its place; the untouched message has no version key
      const after = (await store.read(ch, { after: 0, limit: 10, now: T0 })).messages
      expect(after.map((m) => [m.offset, m.data, m.version, m.deleted])).toEqual([
        [1, null, 4, true],
        [2, { text: 'message 2' }, undefined, undefined],
      ])
      expect('version' in after[1]!).toBe(false)
      expect(await store.revise(ch, 99, { data: 'x' }, { now: T0 })).toBeUndefined()
      expect(await store.revise(ch, 1.5, { data: 'x' }, { now: T0 })).toBeUndefined()
      expect(await store.revise(fresh('none'), 1, { data: 'x' }, { now: T0 })).toBeUndefined()
      // a message retention dropped has no version
      const trimmed = fresh('edit-trimmed')
      for (let n = 1; n <= 3; n++) await append(store, trimmed, n, { retention: { ...KEEP, maxCount: 1 } })
      expect(await store.revise(trimmed, 1, { data: 'x' }, { now: T0 })).toBeUndefined()
      expect((await store.revise(trimmed, 3, { data: 'x' }, { now: T0 }))?.message.version).toBe(2)
      await store.close()
    })

    it('revise of a message expired by age at `now` answers undefined even before the sweep, as read leaves it out', async () => {
      const store = open()
      const ch = fresh('edit-aged')
      const retention = { maxCount: 100, maxAgeMs: 1_000 }
      await append(store, ch, 1, { retention, at: T0 })
      await append(store, ch, 2, { retention, at: T0 + 900 })
      expect(await store.revise(ch, 1, { data: 'late' }, { now: T0 + 1_500 })).toBeUndefined()
      expect((await store.revise(ch, 2, { data: 'in time' }, { now: T0 + 1_500 }))?.message.version).toBe(2)
      await store.close()
    })

    it('a repeat of a revision event answers its `revises`, also once retention dropped the event from the log', async () => {
      const store = open()
      const ch = fresh('revises-dup')
      await append(store, ch, 1)
      const event = { id: 'r1', event: 'chat', data: { text: 'fixed' }, sender: 'alice', timestamp: T0, revises: { offset: 1, version: 2 } }
      const options = { retention: { ...KEEP, maxCount: 1 }, now: T0, idempotencyKey: 'rev-1', dedupWindowMs: 60_000 }
      const first = await store.append(ch, event, options)
      expect(first.message.revises).toEqual({ offset: 1, version: 2 })
      const held = await store.append(ch, event, options)
      expect(held).toMatchObject({ duplicate: true, message: { offset: 2, revises: { offset: 1, version: 2 }, data: { text: 'fixed' } } })
      await append(store, ch, 3, { retention: { ...KEEP, maxCount: 1 } })
      const dropped = await store.append(ch, event, options)
      expect(dropped.duplicate).toBe(true)
      expect(dropped.message).toMatchObject({ offset: 2, id: 'r1', revises: { offset: 1, version: 2 } })
      await store.close()
    })

    it('eraseUser redacts the user’s messages (offsets kept) and removes their receipts, subscriptions and keys, with counts', async () => {
      const store = open()
      const a = fresh('erase-a')
      const b = fresh('erase-b')
      await append(store, a, 1, { sender: 'erin' })
      await append(store, a, 2, { sender: 'bob' })
      await store.append(b, { id: 'k1', event: 'chat', data: { text: 'mine' }, sender: 'erin', timestamp: T0 }, { retention: KEEP, now: T0, idempotencyKey: 'erin-key', dedupWindowMs: 60_000 })
      await store.join(a, 'erin')
      await store.commit(b, 'erin', 1)
      await store.markRead(a, [2], 'erin')
      await store.markRead(a, [1], 'bob')
      const counts = await store.eraseUser('erin', { now: T0 + 5 })
      expect(counts).toEqual({ messages: 2, receipts: 1, cursors: 2, keys: 1, channels: 2 })
      const ra = await store.read(a, { after: 0, limit: 10, now: T0 })
      expect(ra.messages.map((m) => [m.offset, m.sender, m.data, m.deleted])).toEqual([
        [1, undefined, null, true],
        [2, 'bob', { text: 'message 2' }, undefined],
      ])
      expect(JSON.stringify(ra.messages[0])).not.toContain('erin')
      expect(await store.receipts(a, 2)).toEqual([])
      expect((await store.receipts(a, 1)).map((r) => r.userId)).toEqual(['bob'])
      expect(await store.cursor(b, 'erin')).toBeUndefined()
      expect(await store.channelsOf('erin')).toEqual([])
      // nothing of erin is left anywhere in the message log
      const { rows } = await sql<{ n: unknown }>`SELECT count(*) AS n FROM tidings_messages WHERE sender = 'erin' OR data::text LIKE '%mine%'`.execute(database())
      expect(Number(rows[0]!.n)).toBe(0)
      await store.close()
    })

    it('eraseUser in delete mode removes the rows and their bytes, and never moves an offset or an epoch', async () => {
      const store = open()
      const ch = fresh('erase-delete')
      await append(store, ch, 1, { sender: 'dora' })
      await append(store, ch, 2, { sender: 'bob' })
      await append(store, ch, 3, { sender: 'dora' })
      const before = await store.position(ch)
      const statsBefore = await store.stats()
      const counts = await store.eraseUser('dora', { mode: 'delete' })
      expect(counts.messages).toBe(2)
      expect(await store.position(ch)).toEqual(before)
      expect((await store.read(ch, { after: 0, limit: 10, now: T0 })).messages.map((m) => m.offset)).toEqual([2])
      expect((await store.stats()).bytes).toBeLessThan(statsBefore.bytes)
      expect((await append(store, ch, 4)).message.offset).toBe(4)
      await store.close()
    })

    it('a message too large to search (over 512 KiB: PostgreSQL refuses a tsvector of its 100,000 distinct words) is passed over; the channel stays searchable, in either case', async () => {
      const store = open()
      const ch = fresh('search-huge')
      await append(store, ch, 1, { data: { text: 'needle in a small message, École' } })
      const words = Array.from({ length: 100_000 }, (_, i) => `w${i.toString(36)}x${(i * 7919).toString(36)}`).join(' ')
      await append(store, ch, 2, { data: { text: `needle ${words}` } })
      await append(store, ch, 3, { data: { text: 'another needle' } })
      expect((await store.search(ch, 'needle', { now: T0 })).map((m) => m.offset)).toEqual([3, 1])
      expect((await store.search(ch, 'NEEDLE', { now: T0 })).map((m) => m.offset)).toEqual([3, 1])
      expect((await store.search(ch, 'École', { now: T0 })).map((m) => m.offset)).toEqual([1])
      await store.close()
    })

    it('search finds words in the string values of a channel’s retained, undeleted messages, newest first, within the channel only', async () => {
      const store = open()
      const ch = fresh('search')
      const other = fresh('search-other')
      await append(store, ch, 1, { data: { text: 'The banana shipment arrived' } })
      await append(store, ch, 2, { data: { text: 'Apples only today' } })
      await append(store, ch, 3, { data: { text: 'more bananas?', meta: { note: 'banana bread' } } })
      await append(store, ch, 4, { data: { text: 'banana split' } })
      await append(store, ch, 5, { data: ['banana', 42] })
      await append(store, other, 1, { data: { text: 'banana elsewhere' } })
      await store.revise(ch, 4, { deleted: true }, { now: T0 })
      const hits = await store.search(ch, 'banana', { now: T0 })
      expect(hits.map((m) => m.offset)).toEqual([5, 3, 1])
      expect(hits.every((m) => m.channel === ch)).toBe(true)
      expect((await store.search(ch, 'banana', { limit: 1, now: T0 })).map((m) => m.offset)).toEqual([5])
      expect((await store.search(ch, 'banana', { before: 5, now: T0 })).map((m) => m.offset)).toEqual([3, 1])
      // words, never operators: '-banana' is the word banana, so this asks for both words
      expect((await store.search(ch, 'apples -banana', { now: T0 })).map((m) => m.offset)).toEqual([])
      expect((await store.search(ch, 'ONLY apples', { now: T0 })).map((m) => m.offset)).toEqual([2])
      expect(await store.search(ch, 'kiwi', { now: T0 })).toEqual([])
      // quotes, operators and SQL are words: never an SQL or tsquery syntax error
      expect(await store.search(ch, `"banana shipment" OR ') ; drop table x --`, { now: T0 })).toEqual([])
      expect((await store.search(ch, '"banana shipment"', { now: T0 })).map((m) => m.offset)).toEqual([1])
      expect(await store.search(ch, '%', { now: T0 })).toEqual([])
      await store.close()
    })

    it('search leaves out what a read at `now` leaves out: messages expired by age before the sweep ran, revision events, deleted messages', async () => {
      const store = open({ now: () => T0 + 10_000 })
      const ch = fresh('search-aged')
      const retention = { maxCount: 100, maxAgeMs: 1_000 }
      await append(store, ch, 1, { retention, at: T0, data: { text: 'kiwi early' } })
      await append(store, ch, 2, { retention, at: T0 + 900, data: { text: 'kiwi later' } })
      await store.append(ch, { id: 'r', event: 'chat', data: { text: 'kiwi edited' }, timestamp: T0 + 901, revises: { offset: 2, version: 2 } }, { retention, now: T0 + 901 })
      expect((await store.search(ch, 'kiwi', { now: T0 + 950 })).map((m) => m.offset)).toEqual([2, 1])
      expect((await store.search(ch, 'kiwi', { now: T0 + 1_500 })).map((m) => m.offset)).toEqual([2])
      // without `now`, the store's clock (here T0 + 10 s): everything expired
      expect(await store.search(ch, 'kiwi')).toEqual([])
      expect(await store.search(ch, 'kiwi', { now: T0 + 950, limit: 0 })).toEqual([])
      await store.close()
    })

    it('channelsOf lists a user’s channels with kind, active users, last activity and unread count from the cursor', async () => {
      const store = open()
      const user = `u-${counter}`
      const room = `room:${fresh('list')}`
      const dm = `private:${fresh('dm')}`
      const quiet = `chat:${fresh('quiet')}`
      for (let n = 1; n <= 5; n++) await append(store, room, n, { at: T0 + n })
      await append(store, dm, 1, { at: T0 + 100 })
      await store.join(room, user)
      await store.join(room, 'other-1')
      await store.join(room, 'other-2')
      await store.leave(room, 'other-2')
      await store.join(dm, user)
      await store.join(quiet, user)
      await store.commit(room, user, 3)
      const list = await store.channelsOf(user)
      expect(list.map((c) => [c.name, c.kind, c.activeUsers, c.lastActivity, c.unread])).toEqual([
        [dm, 'private', 1, T0 + 100, 1],
        [room, 'room', 2, T0 + 5, 2],
        [quiet, 'chat', 1, null, 0],
      ])
      await store.leave(dm, user)
      expect((await store.channelsOf(user)).map((c) => c.name)).toEqual([room, quiet])
      expect((await store.channelsOf(user, { includeLeft: true })).map((c) => c.name)).toEqual([dm, room, quiet])
      // unread counts only what retention kept
      const trimmed = `room:${fresh('trimmed')}`
      for (let n = 1; n <= 10; n++) await append(store, trimmed, n, { retention: { ...KEEP, maxCount: 4 } })
      await store.join(trimmed, user)
      expect((await store.channelsOf(user)).find((c) => c.name === trimmed)?.unread).toBe(4)
      await store.close()
    })

    it('receipts per message: delivered, then read; a repeat keeps the first times', async () => {
      const store = open()
      const ch = fresh('receipts')
      await append(store, ch, 1)
      await append(store, ch, 2)
      await store.markDelivered(ch, [1, 2], 'bob', { now: T0 + 1 })
      await store.markRead(ch, [1], 'bob', { now: T0 + 2 })
      await store.markRead(ch, [1], 'carol', { now: T0 + 3 })
      await store.markDelivered(ch, [1], 'bob', { now: T0 + 9 })
      expect(await store.receipts(ch, 1)).toEqual([
        { userId: 'bob', deliveredAt: T0 + 1, readAt: T0 + 2 },
        { userId: 'carol', deliveredAt: T0 + 3, readAt: T0 + 3 },
      ])
      expect(await store.receipts(ch, 2)).toEqual([{ userId: 'bob', deliveredAt: T0 + 1, readAt: null }])
      await store.close()
    })

    it('sweep archives what retention dropped (oldest first) before deleting it; bytes stay those of the retained messages', async () => {
      const archived: Array<[string, number[]]> = []
      const store = open({ archive: (channel, messages) => void archived.push([channel, messages.map((m) => m.offset)]) })
      const ch = fresh('archive')
      const retention = { maxCount: 3, maxAgeMs: 1_000 }
      for (let n = 1; n <= 5; n++) await append(store, ch, n, { retention, at: T0 + n })
      expect((await store.read(ch, { after: 0, limit: 10, now: T0 + 5 })).messages.map((m) => m.offset)).toEqual([3, 4, 5])
      const held = await store.stats()
      const first = await store.sweep(T0 + 5)
      expect(first.archived).toBeGreaterThanOrEqual(2)
      expect(archived.filter(([c]) => c === ch).flatMap(([, o]) => o)).toEqual([1, 2])
      expect((await store.stats()).bytes).toBe(held.bytes)
      // age: everything expired by T0 + 2,000
      await store.sweep(T0 + 2_000)
      expect(archived.filter(([c]) => c === ch).flatMap(([, o]) => o)).toEqual([1, 2, 3, 4, 5])
      expect(await store.read(ch, { after: 0, limit: 10, now: T0 + 2_000 })).toMatchObject({ messages: [], top: 5, complete: false })
      const { rows } = await sql<{ n: unknown }>`SELECT count(*) AS n FROM tidings_messages WHERE channel = ${ch}`.execute(database())
      expect(Number(rows[0]!.n)).toBe(0)
      expect((await append(store, ch, 6, { retention, at: T0 + 2_000 })).message.offset).toBe(6)
      await store.close()
    })

    it('a throwing archive hook keeps the dropped messages for the next sweep', async () => {
      let fail = true
      const got: number[] = []
      const ch = fresh('archive-fail')
      const store = open({
        archive: (channel, messages) => {
          if (fail) throw new Error('archive down')
          if (channel === ch) got.push(...messages.map((m) => m.offset))
        },
      })
      for (let n = 1; n <= 4; n++) await append(store, ch, n, { retention: { ...KEEP, maxCount: 1 } })
      await expect(store.sweep(T0)).rejects.toThrow('archive down')
      fail = false
      await store.sweep(T0)
      expect(got).toEqual([1, 2, 3])
      await store.close()
    })

    it('migration 0004 on a database of 0003: messages stored before it read exactly as they did, and can be revised', async () => {
      const db = database()
      const schema = `before_revisions_${counter}`
      const migrator = createMigrator(db, { schema })
      expect((await migrator.migrateTo('0003_outbox')).error).toBeUndefined()
      const ch = fresh('old')
      await sql`INSERT INTO ${sql.id(schema, 'tidings_channels')} (name, created_at, last_activity, epoch, top) VALUES (${ch}, ${T0}, ${T0}, 'old-epoch', 1)`.execute(db)
      await sql`INSERT INTO ${sql.id(schema, 'tidings_messages')} (channel, seq, epoch, id, event, data, sender, ts, size) VALUES (${ch}, 1, 'old-epoch', 'm1', 'chat', '{"text":"old"}'::jsonb, 'alice', ${T0}, 10)`.execute(db)
      const results = (await migrate(db, { schema })).results ?? []
      // 0004 and whatever came after it, all applied
      expect(results[0] && [results[0].migrationName, results[0].status]).toEqual(['0004_revisions', 'Success'])
      expect(results.every((r) => r.status === 'Success')).toBe(true)
      const store = createSqlStore({ db, schema, migrate: false, sweepIntervalMs: false })
      const [old] = (await store.read(ch, { after: 0, limit: 10, now: T0 })).messages
      expect(old).toEqual({ offset: 1, id: 'm1', channel: ch, event: 'chat', data: { text: 'old' }, sender: 'alice', timestamp: T0 })
      expect((await store.revise(ch, 1, { data: { text: 'new' } }, { now: T0 }))?.message).toMatchObject({ version: 2, data: { text: 'new' } })
      await store.close()
    })

    it('tables in another schema with another prefix are apart from the default ones', async () => {
      const db = database()
      await migrate(db, { schema: 'tenant_a', prefix: 'rt_' })
      const store = createSqlStore({ db, schema: 'tenant_a', prefix: 'rt_', sweepIntervalMs: false })
      const ch = fresh('schema')
      await append(store, ch, 1)
      const { rows } = await sql<{ n: unknown }>`SELECT count(*) AS n FROM tenant_a.rt_messages WHERE channel = ${ch}`.execute(db)
      expect(Number(rows[0]!.n)).toBe(1)
      const { rows: none } = await sql<{ n: unknown }>`SELECT count(*) AS n FROM tidings_messages WHERE channel = ${ch}`.execute(db)
      expect(Number(none[0]!.n)).toBe(0)
      // migrating again is a no-op
      expect((await migrate(db, { schema: 'tenant_a', prefix: 'rt_' })).results).toEqual([])
      await store.close()
    })
  })
}
