import { describe, expect, it } from 'vitest'
import type { MessageStore, StoredMessage } from '../ports/store.js'
import type { StoreSuite } from './store-budget.js'
import { KEEP, T0 } from './store-shared.js'

/** The optional methods of the `MessageStore` port a store may have. */
export type StoreCapability = 'revise' | 'search' | 'channelsOf' | 'eraseUser'

/**
 * The optional parts of the `MessageStore` contract: message versions (`revise`), full-text search
 * (`search`), a consumer's channel list (`channelsOf`) and the erasure of a user (`eraseUser`). A store declares what it has
 * (`StoreConformanceOptions.capabilities`); the suite checks that it has exactly those, then each.
 */
export function optionalMethodTests<S extends MessageStore>(ctx: StoreSuite<S>, capabilities: readonly StoreCapability[]): void {
  const { fresh, msg, append, appendN, read, offsetsOf, timeout, sizesOption, sizesOf } = ctx
  const has = (c: StoreCapability) => capabilities.includes(c)

  describe('optional methods', () => {
    it(`has exactly the optional methods it declares (${capabilities.length > 0 ? capabilities.join(', ') : 'none'})`, () => {
      const store = ctx.store()
      for (const c of ['revise', 'search', 'channelsOf', 'eraseUser'] as const) expect([c, typeof store[c] === 'function']).toEqual([c, has(c)])
    })
  })

  if (has('revise')) {
    describe('revise (message versions)', () => {
      const revise = (channel: string, offset: number, revision: Parameters<NonNullable<MessageStore['revise']>>[2], now = T0 + 1) =>
        Promise.resolve(ctx.store().revise!(channel, offset, revision, { now }))

      it('an edit makes version 2 with the new data; offset, id, event, sender, timestamp, exclusions, epoch and top stay', async () => {
        const ch = fresh('edit')
        await append(ch, msg(1, T0, { exclude: { connections: ['c-1'] } }))
        await append(ch, msg(2))
        const before = await read(ch, 0)
        const r = await revise(ch, 1, { data: { text: 'edited', n: 1 } })
        expect(r?.message).toMatchObject({ offset: 1, id: 'm1', event: 'e', sender: 'alice', timestamp: T0, channel: ch, version: 2, data: { text: 'edited', n: 1 } })
        expect(r?.message.deleted).toBeUndefined()
        const after = await read(ch, 0)
        expect(after.epoch).toBe(before.epoch)
        expect(after.top).toBe(2)
        expect(after.messages[0]).toMatchObject({ offset: 1, id: 'm1', version: 2, data: { text: 'edited', n: 1 }, exclude: { connections: ['c-1'] } })
        expect(after.messages[1]).toEqual(before.messages[1])
        expect(after.messages[1]?.version ?? 1).toBe(1)
      }, timeout)

      it('versions grow by 1 per revision; a deletion leaves a tombstone (data null, deleted) that cannot be revised again', async () => {
        const ch = fresh('versions')
        await appendN(ch, 3)
        expect((await revise(ch, 2, { data: 'a' }))?.message.version).toBe(2)
        expect((await revise(ch, 2, { data: 'b' }))?.message.version).toBe(3)
        const d = await revise(ch, 2, { deleted: true })
        expect(d?.message).toMatchObject({ offset: 2, id: 'm2', version: 4, data: null, deleted: true })
        expect(await revise(ch, 2, { data: 'c' })).toBeUndefined()
        expect(await revise(ch, 2, { deleted: true })).toBeUndefined()
        const r = await read(ch, 0)
        expect(r.messages.map((m) => m.offset)).toEqual([1, 2, 3])
        expect(r.messages[1]).toMatchObject({ offset: 2, version: 4, data: null, deleted: true })
      }, timeout)

      it('answers undefined for offsets that are not retained, and creates no log for a channel that has none', async () => {
        const ch = fresh('missing')
        await appendN(ch, 2)
        expect(await revise(ch, 3, { data: 'x' })).toBeUndefined()
        expect(await revise(ch, 99, { deleted: true })).toBeUndefined()
        const trimmed = fresh('trimmed')
        await appendN(trimmed, 5, { retention: { ...KEEP, maxCount: 2 } })
        expect(await revise(trimmed, 1, { data: 'x' })).toBeUndefined()
        expect((await revise(trimmed, 5, { data: 'x' }))?.message.version).toBe(2)

        const none = fresh('none')
        const sizesBefore = sizesOption === false ? undefined : await sizesOf(ctx.store())
        const p0 = await ctx.store().position(none)
        expect(await revise(none, 1, { data: 'x' })).toBeUndefined()
        expect(await ctx.store().position(none)).toEqual(p0)
        if (sizesBefore !== undefined) expect(await sizesOf(ctx.store())).toEqual(sizesBefore)
      }, timeout)

      it('concurrent revisions of one message get distinct versions; the read shows the highest one', async () => {
        const ch = fresh('race')
        await append(ch, msg(1))
        const results = await Promise.all(Array.from({ length: 10 }, (_, i) => revise(ch, 1, { data: { i } })))
        const versions = results.map((r) => r!.message.version).sort((a, b) => a - b)
        expect(versions).toEqual(Array.from({ length: 10 }, (_, i) => i + 2))
        const top = results.find((r) => r!.message.version === 11)!
        const [stored] = (await read(ch, 0)).messages
        expect(stored).toMatchObject({ version: 11, data: top.message.data })
      }, timeout)

      it('a revision holding a NUL character or lone surrogates reads back exactly', async () => {
        const ch = fresh('odd-data')
        await appendN(ch, 1)
        const data = { text: 'a\u0000b', high: '\ud800', low: 'x\udfffy' }
        expect((await revise(ch, 1, { data }))?.message.data).toEqual(data)
        expect((await read(ch, 0)).messages[0]?.data).toEqual(data)
      }, timeout)

      it('keeps a revision event’s `revises` as appended', async () => {
        const ch = fresh('revises')
        await append(ch, msg(1))
        await append(ch, msg(2, T0, { data: { text: 'new' }, revises: { offset: 1, version: 2 } }))
        await append(ch, msg(3, T0, { data: null, revises: { offset: 1, version: 3, deleted: true } }))
        const r = await read(ch, 0)
        expect(r.messages[0]?.revises).toBeUndefined()
        expect(r.messages[1]?.revises).toEqual({ offset: 1, version: 2 })
        expect(r.messages[2]?.revises).toEqual({ offset: 1, version: 3, deleted: true })
      }, timeout)

      it('stores a copy of the new data: changing the caller’s object afterwards changes nothing', async () => {
        const ch = fresh('copy')
        await append(ch, msg(1))
        const data = { text: 'v2', list: [1, 2] }
        await revise(ch, 1, { data })
        data.text = 'changed'
        data.list.push(3)
        expect((await read(ch, 0)).messages[0]?.data).toEqual({ text: 'v2', list: [1, 2] })
      }, timeout)

      if (sizesOption !== false) {
        it('does not change the byte accounting (sizes are measured once, at append)', async () => {
          const ch = fresh('bytes')
          await append(ch, msg(1), { size: 100 })
          const before = await sizesOf(ctx.store())
          await revise(ch, 1, { data: { text: 'x'.repeat(5_000) } })
          await revise(ch, 1, { deleted: true })
          expect(await sizesOf(ctx.store())).toEqual(before)
        }, timeout)
      }
    })
  }

  if (has('search')) {
    describe('search (full-text)', () => {
      const search = (channel: string, query: string, o: { limit?: number; before?: number; now?: number } = {}) =>
        Promise.resolve(ctx.store().search!(channel, query, { limit: o.limit ?? 50, before: o.before, now: o.now ?? T0 })).then((ms) => ms.map((m: StoredMessage) => m.offset))
      const texts = ['Hello brave new World', 'the quick brown fox', 'hello again', 'nothing here', { nested: { deep: ['say HELLO to the fox'] } }, 'Hello world once more']

      it('finds messages whose strings hold every word of the query (any case, nested strings too), newest first', async () => {
        const ch = fresh('search')
        for (const [i, text] of texts.entries()) await append(ch, msg(i + 1, T0, { data: typeof text === 'string' ? { text } : text }))
        expect(await search(ch, 'hello')).toEqual([6, 5, 3, 1])
        expect(await search(ch, 'WORLD hello')).toEqual([6, 1])
        expect(await search(ch, 'fox')).toEqual([5, 2])
        expect(await search(ch, 'zebra')).toEqual([])
        expect(await search(fresh('other'), 'hello')).toEqual([])
      }, timeout)

      it('pages with limit and before', async () => {
        const ch = fresh('pages')
        for (let i = 1; i <= 7; i++) await append(ch, msg(i, T0, { data: { text: `match number ${i}` } }))
        expect(await search(ch, 'match', { limit: 3 })).toEqual([7, 6, 5])
        expect(await search(ch, 'match', { limit: 3, before: 5 })).toEqual([4, 3, 2])
        expect(await search(ch, 'match', { limit: 3, before: 2 })).toEqual([1])
      }, timeout)

      it('leaves out messages retention dropped and, once read, creates no log', async () => {
        const ch2 = fresh('retained')
        for (let i = 1; i <= 4; i++) await append(ch2, msg(i, T0 + i, { data: { text: 'kept word' } }), { retention: { ...KEEP, maxCount: 2 } })
        expect(await search(ch2, 'word')).toEqual([4, 3])
        const aged = fresh('aged')
        await append(aged, msg(1, T0, { data: { text: 'old word' } }), { retention: { ...KEEP, maxAgeMs: 1_000 } })
        expect(await search(aged, 'word', { now: T0 + 5_000 })).toEqual([])
        const none = fresh('none')
        const sizesBefore = sizesOption === false ? undefined : await sizesOf(ctx.store())
        expect(await search(none, 'word')).toEqual([])
        if (sizesBefore !== undefined) expect(await sizesOf(ctx.store())).toEqual(sizesBefore)
      }, timeout)

      if (has('revise')) {
        it('matches messages as they are now: edited by their new words only, deleted never, revision events never', async () => {
          const ch = fresh('revised')
          await append(ch, msg(1, T0, { data: { text: 'original wording' } }))
          await append(ch, msg(2, T0, { data: { text: 'doomed wording' } }))
          await ctx.store().revise!(ch, 1, { data: { text: 'corrected phrasing' } }, { now: T0 })
          await append(ch, msg(3, T0, { data: { text: 'corrected phrasing' }, revises: { offset: 1, version: 2 } }))
          await ctx.store().revise!(ch, 2, { deleted: true }, { now: T0 })
          expect(await search(ch, 'original')).toEqual([])
          expect(await search(ch, 'doomed')).toEqual([])
          expect(await search(ch, 'corrected')).toEqual([1])
        }, timeout)
      }
    })
  }

  if (has('channelsOf')) {
    describe('channelsOf (a consumer’s channel list)', () => {
      const list = (consumer: string, limit = 100) => Promise.resolve(ctx.store().channelsOf!(consumer, { limit }))

      it('lists the channels where the consumer has a cursor, most recently active first, with unread counts', async () => {
        const consumer = fresh('user')
        const a = fresh('a')
        const b = fresh('b')
        const c = fresh('c')
        await appendN(a, 5, { at: (n) => T0 + n })
        await appendN(b, 3, { at: (n) => T0 + 100 + n })
        await appendN(c, 2, { at: (n) => T0 + 50 + n })
        await ctx.store().commit(a, consumer, 2)
        await ctx.store().commit(b, consumer, 0)
        await ctx.store().commit(c, 'someone-else', 1)
        const got = await list(consumer)
        expect(got.map((x) => x.name)).toEqual([b, a])
        expect(got[0]).toMatchObject({ name: b, lastSeenOffset: 0, top: 3, unread: 3, lastActivity: T0 + 103 })
        expect(got[1]).toMatchObject({ name: a, lastSeenOffset: 2, top: 5, unread: 3, lastActivity: T0 + 5 })
        if (got[1]!.activeUsers !== undefined) expect(got[1]!.activeUsers).toBe(1)
        await ctx.store().commit(a, consumer, 5)
        expect((await list(consumer)).find((x) => x.name === a)).toMatchObject({ lastSeenOffset: 5, unread: 0 })
        expect(await list(consumer, 1)).toHaveLength(1)
        expect(await list(fresh('nobody'))).toEqual([])
      }, timeout)

      it('counts only retained messages as unread', async () => {
        const consumer = fresh('user')
        const ch = fresh('trim')
        await ctx.store().commit(ch, consumer, 0) // no log yet: creates nothing, lists nothing
        expect(await list(consumer)).toEqual([])
        await append(ch, msg(1))
        await ctx.store().commit(ch, consumer, 1)
        await appendN(ch, 6, { retention: { ...KEEP, maxCount: 3 } })
        const [entry] = await list(consumer)
        expect(entry).toMatchObject({ name: ch, lastSeenOffset: 1, top: 7, unread: 3 })
      }, timeout)
    })
  }

  if (has('eraseUser')) {
    describe('eraseUser (GDPR erasure of one user)', () => {
      const erase = (userId: string) => Promise.resolve(ctx.store().eraseUser!(userId, { now: T0 + 10 }))

      it('makes every message the user sent, in every channel, a tombstone that no longer names the user; offsets, ids, events, times, epochs and tops stay; others’ messages are untouched', async () => {
        const user = fresh('erin')
        const a = fresh('erase-a')
        const b = fresh('erase-b')
        await append(a, msg(1, T0, { sender: user, data: { text: 'secret one' }, exclude: { connections: ['c-9'] } }))
        await append(a, msg(2, T0 + 1, { data: { text: 'from alice' } }))
        await append(a, msg(3, T0 + 2, { sender: user, data: { text: 'secret edit' }, revises: { offset: 1, version: 2 } }))
        await append(b, msg(1, T0 + 3, { sender: user, data: { text: 'secret two' } }))
        const before = [await read(a, 0), await read(b, 0)]
        expect(await erase(user)).toMatchObject({ messages: 3, cursors: 0, keys: 0 })
        const [ra, rb] = [await read(a, 0), await read(b, 0)]
        expect([ra.epoch, ra.top, rb.epoch, rb.top]).toEqual([before[0]!.epoch, 3, before[1]!.epoch, 1])
        expect(offsetsOf(ra.messages)).toEqual([1, 2, 3])
        for (const m of [ra.messages[0]!, ra.messages[2]!, rb.messages[0]!]) {
          expect(m).toMatchObject({ data: null, deleted: true, version: 2 })
          expect(m.sender).toBeUndefined()
          expect(m.exclude).toBeUndefined()
        }
        expect(ra.messages.map((m) => [m.id, m.event, m.timestamp])).toEqual(before[0]!.messages.map((m) => [m.id, m.event, m.timestamp]))
        expect(ra.messages[1]).toEqual(before[0]!.messages[1])
        expect(JSON.stringify([ra.messages, rb.messages])).not.toContain('secret')
      }, timeout)

      it('removes the user’s cursors (and so its channel list) and the idempotency records of its messages; other consumers keep theirs', async () => {
        const user = fresh('erin')
        const a = fresh('erase-c')
        const b = fresh('erase-d')
        await append(a, msg(1, T0, { sender: user }), { idempotencyKey: 'k-1', dedupWindowMs: 60_000 })
        await append(a, msg(2), { idempotencyKey: 'k-2', dedupWindowMs: 60_000 })
        await append(b, msg(1))
        await ctx.store().commit(a, user, 1)
        await ctx.store().commit(b, user, 1)
        await ctx.store().commit(a, 'bob', 2)
        expect(await erase(user)).toMatchObject({ messages: 1, cursors: 2, keys: 1 })
        expect(await ctx.store().cursor(a, user)).toBeUndefined()
        expect(await ctx.store().cursor(b, user)).toBeUndefined()
        expect(await ctx.store().cursor(a, 'bob')).toMatchObject({ offset: 2 })
        if (has('channelsOf')) expect(await ctx.store().channelsOf!(user, { limit: 10 })).toEqual([])
        // the user's key is forgotten (a retry stores anew); alice's still folds repeats
        expect((await append(a, msg('again', T0, { sender: user }), { idempotencyKey: 'k-1', dedupWindowMs: 60_000 })).duplicate).toBe(false)
        expect((await append(a, msg('again-2'), { idempotencyKey: 'k-2', dedupWindowMs: 60_000 })).duplicate).toBe(true)
      }, timeout)

      it('is idempotent, creates no log, and leaves nothing search or revise can reach', async () => {
        const user = fresh('erin')
        const ch = fresh('erase-e')
        await append(ch, msg(1, T0, { sender: user, data: { text: 'needle in erased' } }))
        await append(ch, msg(2, T0, { data: { text: 'needle kept' } }))
        await erase(user)
        expect(await erase(user)).toMatchObject({ messages: 0, cursors: 0, keys: 0 })
        expect(await erase(fresh('nobody'))).toMatchObject({ messages: 0, cursors: 0, keys: 0 })
        const never = fresh('never')
        expect((await ctx.store().position(never)).offset).toBe(0)
        if (has('search')) expect((await ctx.store().search!(ch, 'needle', { limit: 10, now: T0 + 20 })).map((m) => m.offset)).toEqual([2])
        if (has('revise')) expect(await ctx.store().revise!(ch, 1, { data: 'back' }, { now: T0 + 20 })).toBeUndefined()
      }, timeout)
    })
  }
}
