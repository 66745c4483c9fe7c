import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { AppendOptions, MessageStore, Retention, StoredMessage } from '../ports/store.js'
import { streamPositionSchema } from '@tidings/protocol'
import { randomId } from '../util.js'
import { byteBudgetTests } from './store-budget.js'
import { optionalMethodTests, type StoreCapability } from './store-optional.js'
import { KEEP, T0, type Input } from './store-shared.js'

export interface StoreConformanceOptions<S extends MessageStore = MessageStore> {
  /**
   * Lose the whole history, as a crash or a flush would (`MemoryMessageStore.reset()`, `FLUSHDB`,
   * `TRUNCATE`). When given, the suite checks that epochs change, offsets restart and cursors and
   * idempotency keys are forgotten. On a shared database it loses everything, not only the
   * suite's channels.
   */
  readonly reset?: ((store: S) => Promise<void> | void) | undefined
  /** Timeout of each test and hook, in ms. Default 10,000. */
  readonly timeoutMs?: number | undefined
  /** First part of the channel names the suite creates (each run and test adds a random part). Default `'conformance'`. */
  readonly channelPrefix?: string | undefined
  /**
   * How the suite learns what the store holds, to check that reads create nothing: a function
   * answering the number of channel logs and bytes of messages it holds. By default the store's
   * own `stats()` (as `MemoryMessageStore.stats()`). `false` declares that the store cannot report
   * internal sizes (a shared database): the suite then checks reads through epochs and answers
   * only. A store that has no `stats()` and passes nothing fails the size tests with a message
   * saying so.
   */
  readonly sizes?: ((store: S) => Promise<StoreSizes> | StoreSizes) | false | undefined
  /**
   * A store of the same kind whose store-wide byte budget is `maxBytes` (the memory store's
   * `maxBytes`). When given, the suite checks trimming to it.
   */
  readonly makeBudgetStore?: ((maxBytes: number) => S | Promise<S>) | undefined
  /**
   * A store of the same kind that keeps at most `maxChannels` channel logs (the memory store's
   * `maxChannels`). When given, the suite checks that evicting a log changes its epoch and keeps
   * its consumer cursors with their epoch, and that reads never evict.
   */
  readonly makeBoundedStore?: ((maxChannels: number) => S | Promise<S>) | undefined
  /**
   * The optional methods of the port the store has (`revise`, `search`, `channelsOf`). The suite
   * checks that it has exactly these, and checks each. Default none.
   */
  readonly capabilities?: readonly StoreCapability[] | undefined
}

/** What a store holds, as `StoreConformanceOptions.sizes` reports it. */
export interface StoreSizes {
  /** Channel logs held. */
  readonly channels: number
  /** Bytes of messages held. */
  readonly bytes: number
}


/** A fixed, realistic "now": the suite never reads the wall clock. */

/**
 * The `MessageStore` contract as a vitest suite: run it over every implementation.
 *
 *   storeConformance('memory', () => createMemoryStore(), { reset: (s) => s.reset() })
 *
 * Every test uses channels of its own (random names), so the suite runs on a shared, non-empty
 * database; it only uses the port's methods, awaits every answer, and passes time only through
 * `now` (never the wall clock).
 */
export function storeConformance<S extends MessageStore>(name: string, makeStore: () => S | Promise<S>, options: StoreConformanceOptions<S> = {}): void {
  const timeout = options.timeoutMs ?? 10_000
  const run = `${options.channelPrefix ?? 'conformance'}:${randomId()}`
  let counter = 0
  /** A channel name no other test (or run) uses. */
  const fresh = (label: string) => `${run}:${(++counter).toString(36)}:${label}`

  describe(`MessageStore conformance: ${name}`, () => {
    let store: S
    let closed = false

    beforeEach(async () => {
      closed = false
      store = await makeStore()
    }, timeout)

    afterEach(async () => {
      const s = store as S | undefined
      store = undefined as unknown as S
      if (!closed) await s?.close?.()
    }, timeout)

    const msg = (n: number | string, timestamp = T0, extra: Partial<Input> = {}): Input => ({ id: `m${n}`, event: 'e', data: { n }, sender: 'alice', timestamp, ...extra })
    const append = async (channel: string, input: Input, o: Partial<AppendOptions> = {}) => store.append(channel, input, { retention: KEEP, now: input.timestamp, ...o })
    /** Appends m1..m<count> one after another (at T0, or at `at(n)`). */
    const appendN = async (channel: string, count: number, o: Partial<AppendOptions> & { at?: (n: number) => number } = {}) => {
      const { at, ...rest } = o
      const out = []
      for (let n = 1; n <= count; n++) out.push(await append(channel, msg(n, at?.(n) ?? T0), rest))
      return out
    }
    const read = async (channel: string, after: number, limit = 100, now = T0) => store.read(channel, { after, limit, now })
    const offsetsOf = (messages: readonly StoredMessage[]) => messages.map((m) => m.offset)

    // ---------------------------------------------------------------- offsets

    describe('offsets', () => {
      it('start at 1 and grow by 1 per append', async () => {
        const ch = fresh('offsets')
        const results = await appendN(ch, 5)
        expect(results.map((r) => r.message.offset)).toEqual([1, 2, 3, 4, 5])
        for (const r of results) {
          expect(r.duplicate).toBe(false)
          expect(r.message.channel).toBe(ch)
        }
      }, timeout)

      it('are independent per channel, also when appends interleave', async () => {
        const a = fresh('a')
        const b = fresh('b')
        const c = fresh('c')
        const order = [a, b, a, a, c, b, a, c]
        const got: Array<[string, number]> = []
        for (const [i, ch] of order.entries()) got.push([ch, (await append(ch, msg(i))).message.offset])
        expect(got).toEqual([
          [a, 1],
          [b, 1],
          [a, 2],
          [a, 3],
          [c, 1],
          [b, 2],
          [a, 4],
          [c, 2],
        ])
        expect((await store.position(a)).offset).toBe(4)
        expect((await store.position(b)).offset).toBe(2)
        expect((await store.position(c)).offset).toBe(2)
      }, timeout)

      it('concurrent appends to one channel each get a distinct offset, with no hole', async () => {
        const ch = fresh('concurrent')
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => append(ch, msg(i))))
        expect(results.map((r) => r.message.offset).sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
        const r = await read(ch, 0)
        expect(offsetsOf(r.messages)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
        // each stored message is the one its append reported
        const byOffset = new Map(results.map((x) => [x.message.offset, x.message.id]))
        for (const m of r.messages) expect(m.id).toBe(byOffset.get(m.offset))
      }, timeout)

      it('keep counting after retention dropped everything', async () => {
        const ch = fresh('continue')
        const retention = { maxCount: 2, maxAgeMs: 1_000 }
        await appendN(ch, 3, { retention })
        expect(offsetsOf((await read(ch, 0, 100, T0 + 5_000)).messages)).toEqual([])
        const next = await append(ch, msg(4, T0 + 5_000), { retention })
        expect(next.message.offset).toBe(4)
        expect(offsetsOf((await read(ch, 0, 100, T0 + 5_000)).messages)).toEqual([4])
      }, timeout)
    })

    // ---------------------------------------------------------------- read

    describe('read', () => {
      it('returns the messages after an offset, oldest first, at most limit', async () => {
        const ch = fresh('read')
        await appendN(ch, 5)
        const { epoch } = await store.position(ch)
        const all = await read(ch, 0)
        expect(offsetsOf(all.messages)).toEqual([1, 2, 3, 4, 5])
        expect(all.messages.map((m) => m.id)).toEqual(['m1', 'm2', 'm3', 'm4', 'm5'])
        expect(all).toMatchObject({ epoch, top: 5, complete: true })
        expect(offsetsOf((await read(ch, 1, 2)).messages)).toEqual([2, 3])
        expect(offsetsOf((await read(ch, 0, 1)).messages)).toEqual([1])
        expect(offsetsOf((await read(ch, 3, 100)).messages)).toEqual([4, 5])
        expect(offsetsOf((await read(ch, 4, 10)).messages)).toEqual([5])
        const caughtUp = await read(ch, 5, 10)
        expect(caughtUp).toMatchObject({ epoch, messages: [], top: 5, complete: true })
        const ahead = await read(ch, 9, 10)
        expect(ahead).toMatchObject({ epoch, messages: [], top: 5, complete: true })
      }, timeout)

      it('pages through a log one limit at a time', async () => {
        const ch = fresh('pages')
        await appendN(ch, 7)
        const seen: number[] = []
        let after = 0
        for (let page = 0; page < 10; page++) {
          const r = await read(ch, after, 3)
          expect(r.messages.length).toBeLessThanOrEqual(3)
          expect(r.complete).toBe(true)
          if (r.messages.length === 0) break
          seen.push(...offsetsOf(r.messages))
          after = r.messages.at(-1)!.offset
        }
        expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7])
      }, timeout)

      it('top is the newest offset whatever the page holds', async () => {
        const ch = fresh('top')
        expect((await read(ch, 0)).top).toBe(0)
        await appendN(ch, 4)
        expect((await read(ch, 0, 1)).top).toBe(4)
        expect((await read(ch, 2, 1)).top).toBe(4)
        expect((await read(ch, 4, 1)).top).toBe(4)
        await append(ch, msg(5))
        expect((await read(ch, 0, 1)).top).toBe(5)
        // also once retention dropped the messages
        const gone = fresh('top-gone')
        await appendN(gone, 3, { retention: { maxCount: 0, maxAgeMs: 60_000 } })
        expect((await read(gone, 0)).top).toBe(3)
      }, timeout)

      it('an unknown channel reads empty and complete, in the epoch it will keep', async () => {
        const ch = fresh('unknown')
        const r = await read(ch, 0)
        expect(r.messages).toEqual([])
        expect(r.top).toBe(0)
        expect(r.complete).toBe(true)
        expect(streamPositionSchema.safeParse({ epoch: r.epoch, offset: 0 }).success).toBe(true)
        expect((await store.position(ch)).epoch).toBe(r.epoch)
        // the first append continues that (empty) history: a subscriber that saw position {epoch, 0} can resume
        expect((await append(ch, msg(1))).epoch).toBe(r.epoch)
        expect((await read(ch, 0)).epoch).toBe(r.epoch)
      }, timeout)

      it('each message carries its channel and offset', async () => {
        const ch = fresh('fields')
        await appendN(ch, 2)
        const r = await read(ch, 0)
        expect(r.messages.map((m) => [m.channel, m.offset])).toEqual([
          [ch, 1],
          [ch, 2],
        ])
      }, timeout)
    })

    // ---------------------------------------------------------------- retention

    describe('retention', () => {
      it('by count: keeps the newest maxCount; complete is false exactly when the reader has a gap', async () => {
        const ch = fresh('count')
        const retention = { maxCount: 3, maxAgeMs: 3_600_000 }
        await appendN(ch, 5, { retention })
        const r0 = await read(ch, 0)
        expect(offsetsOf(r0.messages)).toEqual([3, 4, 5])
        expect(r0.top).toBe(5)
        // 1 and 2 are gone: a reader that has not seen them has a gap
        const completeAfter: Record<number, boolean> = {}
        for (let after = 0; after <= 6; after++) completeAfter[after] = (await read(ch, after)).complete
        expect(completeAfter).toEqual({ 0: false, 1: false, 2: true, 3: true, 4: true, 5: true, 6: true })
        expect(offsetsOf((await read(ch, 2)).messages)).toEqual([3, 4, 5])
        expect(offsetsOf((await read(ch, 1)).messages)).toEqual([3, 4, 5])
        // a gap with a limit still starts at the oldest kept message
        const page = await read(ch, 0, 2)
        expect(offsetsOf(page.messages)).toEqual([3, 4])
        expect(page.complete).toBe(false)
      }, timeout)

      it('by count: maxCount 0 keeps nothing but still assigns offsets', async () => {
        const ch = fresh('count-zero')
        const retention = { maxCount: 0, maxAgeMs: 3_600_000 }
        expect((await append(ch, msg(1), { retention })).message.offset).toBe(1)
        expect((await append(ch, msg(2), { retention })).message.offset).toBe(2)
        expect(await read(ch, 0)).toMatchObject({ messages: [], top: 2, complete: false })
        expect(await read(ch, 1)).toMatchObject({ messages: [], top: 2, complete: false })
        expect(await read(ch, 2)).toMatchObject({ messages: [], top: 2, complete: true })
        expect((await store.position(ch)).offset).toBe(2)
      }, timeout)

      it('by age: drops messages older than maxAgeMs at the reader’s now, also without a new append', async () => {
        const ch = fresh('age')
        const retention = { maxCount: 100, maxAgeMs: 1_000 }
        await append(ch, msg(1, T0), { retention })
        await append(ch, msg(2, T0 + 500), { retention })
        await append(ch, msg(3, T0 + 900), { retention })
        const r0 = await read(ch, 0, 100, T0 + 900)
        expect(offsetsOf(r0.messages)).toEqual([1, 2, 3])
        expect(r0.complete).toBe(true)

        const r1 = await read(ch, 0, 100, T0 + 1_200) // 1 is 1200 ms old
        expect(offsetsOf(r1.messages)).toEqual([2, 3])
        expect(r1.complete).toBe(false)
        expect((await read(ch, 1, 100, T0 + 1_200)).complete).toBe(true)
        expect(offsetsOf((await read(ch, 1, 100, T0 + 1_200)).messages)).toEqual([2, 3])

        const r2 = await read(ch, 1, 100, T0 + 1_700) // 2 is 1200 ms old
        expect(offsetsOf(r2.messages)).toEqual([3])
        expect(r2.complete).toBe(false)
        expect((await read(ch, 2, 100, T0 + 1_700)).complete).toBe(true)

        const late = await read(ch, 0, 100, T0 + 60_000)
        expect(late).toMatchObject({ messages: [], top: 3, complete: false })
        expect((await read(ch, 2, 100, T0 + 60_000)).complete).toBe(false)
        expect((await read(ch, 3, 100, T0 + 60_000)).complete).toBe(true)
        expect((await store.position(ch)).offset).toBe(3)
      }, timeout)

      it('by age: an append trims what expired by its now', async () => {
        const ch = fresh('age-append')
        const retention = { maxCount: 100, maxAgeMs: 1_000 }
        await append(ch, msg(1, T0), { retention })
        await append(ch, msg(2, T0 + 100), { retention })
        await append(ch, msg(3, T0 + 1_500), { retention })
        const r = await read(ch, 0, 100, T0 + 1_500)
        expect(offsetsOf(r.messages)).toEqual([3])
        expect(r.complete).toBe(false)
        expect((await read(ch, 2, 100, T0 + 1_500)).complete).toBe(true)
      }, timeout)

      it('the stricter of count and age wins', async () => {
        const ch = fresh('stricter')
        const retention = { maxCount: 2, maxAgeMs: 1_000 }
        await appendN(ch, 4, { retention, at: (n) => T0 + n * 100 })
        expect(offsetsOf((await read(ch, 0, 100, T0 + 400)).messages)).toEqual([3, 4]) // count
        expect(offsetsOf((await read(ch, 0, 100, T0 + 1_350)).messages)).toEqual([4]) // age
        expect(offsetsOf((await read(ch, 0, 100, T0 + 2_000)).messages)).toEqual([])
      }, timeout)

      it('retention never changes the epoch', async () => {
        const ch = fresh('retention-epoch')
        const retention = { maxCount: 1, maxAgeMs: 1_000 }
        const first = await append(ch, msg(1), { retention })
        await append(ch, msg(2), { retention })
        await append(ch, msg(3), { retention })
        expect((await read(ch, 0, 100, T0 + 10_000)).epoch).toBe(first.epoch)
        expect((await store.position(ch)).epoch).toBe(first.epoch)
        expect((await append(ch, msg(4, T0 + 10_000), { retention })).epoch).toBe(first.epoch)
      }, timeout)
    })

    // ---------------------------------------------------------------- idempotency

    describe('idempotent append', () => {
      const dedup = { idempotencyKey: 'k', dedupWindowMs: 1_000 }

      it('a key repeated within the window returns the first message with duplicate: true and stores nothing', async () => {
        const ch = fresh('dedup')
        const first = await append(ch, msg(1), dedup)
        expect(first.duplicate).toBe(false)
        const again = await append(ch, msg('retry', T0 + 999, { data: { other: true } }), dedup)
        expect(again.duplicate).toBe(true)
        expect(again.message).toEqual(first.message)
        expect(again.epoch).toBe(first.epoch)
        expect(await store.position(ch)).toEqual({ epoch: first.epoch, offset: 1 })
        const r = await read(ch, 0, 100, T0 + 999)
        expect(r.messages).toEqual([first.message])
        expect(r.top).toBe(1)
        // the next append without a key, or with another key, takes the next offset
        expect((await append(ch, msg(2, T0 + 999))).message.offset).toBe(2)
        expect((await append(ch, msg(3, T0 + 999), { ...dedup, idempotencyKey: 'other' })).message.offset).toBe(3)
        expect((await append(ch, msg('retry-2', T0 + 999), dedup)).message).toEqual(first.message)
      }, timeout)

      it('appends without a key are never deduplicated', async () => {
        const ch = fresh('no-key')
        const a = await append(ch, msg(1))
        const b = await append(ch, msg(1))
        expect([a.duplicate, b.duplicate]).toEqual([false, false])
        expect([a.message.offset, b.message.offset]).toEqual([1, 2])
      }, timeout)

      it('after the window, the key appends anew, and the window restarts from there', async () => {
        const ch = fresh('dedup-window')
        await append(ch, msg(1), dedup)
        const later = await append(ch, msg(2, T0 + 1_001), dedup)
        expect(later.duplicate).toBe(false)
        expect(later.message).toMatchObject({ offset: 2, id: 'm2' })
        const again = await append(ch, msg(3, T0 + 1_500), dedup)
        expect(again.duplicate).toBe(true)
        expect(again.message).toMatchObject({ offset: 2, id: 'm2' })
        expect((await store.position(ch)).offset).toBe(2)
      }, timeout)

      it('the same key on another channel is another publication', async () => {
        const a = fresh('dedup-a')
        const b = fresh('dedup-b')
        const ra = await append(a, msg('a'), dedup)
        const rb = await append(b, msg('b'), dedup)
        expect(rb.duplicate).toBe(false)
        expect(rb.message).toMatchObject({ channel: b, offset: 1, id: 'mb' })
        expect((await append(a, msg('a2'), dedup)).message).toEqual(ra.message)
        expect((await append(b, msg('b2'), dedup)).message).toEqual(rb.message)
        expect((await store.position(a)).offset).toBe(1)
        expect((await store.position(b)).offset).toBe(1)
      }, timeout)

      it('concurrent appends with one key store one message', async () => {
        const ch = fresh('dedup-race')
        const results = await Promise.all(Array.from({ length: 5 }, (_, i) => append(ch, msg(i), dedup)))
        expect(results.filter((r) => !r.duplicate)).toHaveLength(1)
        const winner = results.find((r) => !r.duplicate)!.message
        for (const r of results) expect(r.message).toEqual(winner)
        expect((await store.position(ch)).offset).toBe(1)
        expect((await read(ch, 0)).messages).toEqual([winner])
      }, timeout)
    })

    // ---------------------------------------------------------------- position

    describe('position', () => {
      it('is offset 0 for an empty channel, with a wire-valid epoch that stays put', async () => {
        const ch = fresh('pos-empty')
        const p = await store.position(ch)
        expect(p.offset).toBe(0)
        expect(streamPositionSchema.safeParse(p).success).toBe(true)
        expect(await store.position(ch)).toEqual(p)
      }, timeout)

      it('follows the newest offset; the epoch stays the same across calls and appends', async () => {
        const ch = fresh('pos')
        const empty = await store.position(ch)
        const appended = await appendN(ch, 3)
        for (const r of appended) expect(r.epoch).toBe(empty.epoch)
        const p = await store.position(ch)
        expect(p).toEqual({ epoch: empty.epoch, offset: 3 })
        expect(streamPositionSchema.safeParse(p).success).toBe(true)
        expect(await store.position(ch)).toEqual(p)
        expect((await read(ch, 0)).epoch).toBe(empty.epoch)
        // another channel does not move it
        await appendN(fresh('pos-other'), 2)
        expect(await store.position(ch)).toEqual(p)
      }, timeout)
    })

    // ---------------------------------------------------------------- cursors

    /** The consumer's cursor offset when it is in the channel's current epoch; 'earlier' for one of an earlier epoch. */
    const cursorNow = async (ch: string, consumer: string): Promise<number | 'earlier' | undefined> => {
      const c = await store.cursor(ch, consumer)
      if (c === undefined) return undefined
      return c.epoch === (await store.position(ch)).epoch ? c.offset : 'earlier'
    }

    describe('consumer cursors', () => {
      it('are undefined before any commit', async () => {
        const ch = fresh('cursor-none')
        expect(await store.cursor(ch, 'alice')).toBeUndefined()
        expect(await store.cursors(ch)).toEqual({})
        await appendN(ch, 2)
        expect(await store.cursor(ch, 'alice')).toBeUndefined()
        expect(await store.cursors(ch)).toEqual({})
      }, timeout)

      it('carry the epoch they were committed in (the current one)', async () => {
        const ch = fresh('cursor-epoch')
        const [first] = await appendN(ch, 3)
        await store.commit(ch, 'alice', 2)
        expect(await store.cursor(ch, 'alice')).toEqual({ offset: 2, epoch: first!.epoch })
        expect((await store.position(ch)).epoch).toBe(first!.epoch)
      }, timeout)

      it('move forward only', async () => {
        const ch = fresh('cursor')
        await appendN(ch, 5)
        await store.commit(ch, 'alice', 2)
        expect(await cursorNow(ch, 'alice')).toBe(2)
        await store.commit(ch, 'alice', 1)
        expect(await cursorNow(ch, 'alice')).toBe(2)
        await store.commit(ch, 'alice', 2)
        expect(await cursorNow(ch, 'alice')).toBe(2)
        await store.commit(ch, 'alice', 4)
        expect(await cursorNow(ch, 'alice')).toBe(4)
        await store.commit(ch, 'alice', 0)
        expect(await cursorNow(ch, 'alice')).toBe(4)
        // and survive later appends (same epoch)
        await append(ch, msg(6))
        expect(await cursorNow(ch, 'alice')).toBe(4)
      }, timeout)

      it('are per consumer and per channel; cursors() lists a channel’s', async () => {
        const a = fresh('cursors-a')
        const b = fresh('cursors-b')
        await appendN(a, 5)
        await appendN(b, 5)
        await store.commit(a, 'alice', 3)
        await store.commit(a, 'bob', 1)
        await store.commit(b, 'carol', 5)
        expect(await cursorNow(a, 'alice')).toBe(3)
        expect(await cursorNow(a, 'bob')).toBe(1)
        expect(await store.cursor(a, 'carol')).toBeUndefined()
        expect(await store.cursor(b, 'alice')).toBeUndefined()
        expect(await store.cursors(a)).toEqual({ alice: 3, bob: 1 })
        expect(await store.cursors(b)).toEqual({ carol: 5 })
        await store.commit(a, 'bob', 4)
        expect(await store.cursors(a)).toEqual({ alice: 3, bob: 4 })
      }, timeout)

      it('never pass the newest offset', async () => {
        const ch = fresh('cursor-top')
        await appendN(ch, 3)
        await store.commit(ch, 'alice', 2)
        await store.commit(ch, 'alice', 10)
        const at = await cursorNow(ch, 'alice')
        expect(at).toBeGreaterThanOrEqual(2)
        expect(at).toBeLessThanOrEqual(3)
        expect((await store.cursors(ch)).alice).toBe(at)

        const empty = fresh('cursor-empty')
        await store.commit(empty, 'alice', 5)
        expect((await cursorNow(empty, 'alice')) ?? 0).toBe(0)
      }, timeout)
    })

    // ---------------------------------------------------------------- reads create nothing

    const sizesOption = options.sizes
    const sizesOf = async (s: S): Promise<StoreSizes> => {
      if (typeof sizesOption === 'function') return sizesOption(s)
      const stats = (s as { stats?: () => Promise<StoreSizes> | StoreSizes }).stats
      if (typeof stats !== 'function') throw new Error('the store has no stats(): pass storeConformance(..., { sizes }) to report its sizes, or sizes: false if it cannot')
      return stats.call(s)
    }

    describe('reads of channels that have no log', () => {
      /** Every reading method, on a channel that was never written. */
      const readAll = async (ch: string) => {
        const r = await read(ch, 0)
        const p = await store.position(ch)
        const c = await store.cursor(ch, 'alice')
        const cs = await store.cursors(ch)
        return { r, p, c, cs }
      }

      it('answer an empty view (no messages, top 0, no cursors) and keep answering the same epoch', async () => {
        const ch = fresh('view')
        const one = await readAll(ch)
        expect(one.r).toMatchObject({ messages: [], top: 0, complete: true })
        expect(one.p).toEqual({ epoch: one.r.epoch, offset: 0 })
        expect(one.c).toBeUndefined()
        expect(one.cs).toEqual({})
        await store.commit(ch, 'alice', 3) // nothing to commit in an empty history
        const two = await readAll(ch)
        expect(two.p).toEqual(one.p)
        expect(two.r.epoch).toBe(one.r.epoch)
        expect((await cursorNow(ch, 'alice')) ?? 0).toBe(0)
        // other channels written meanwhile do not move it
        await appendN(fresh('view-other'), 3)
        expect(await store.position(ch)).toEqual(one.p)
        // the first append keeps it: a subscriber positioned at { epoch, 0 } sees no epoch change
        expect((await append(ch, msg(1))).epoch).toBe(one.p.epoch)
        expect(await store.position(ch)).toEqual({ epoch: one.p.epoch, offset: 1 })
      }, timeout)

      if (sizesOption !== false) {
        it('create no log and hold no bytes: 2,000 distinct names read leave the store as it was (history frames for public:junk-N)', async () => {
          const kept = fresh('kept')
          await appendN(kept, 2)
          const before = await sizesOf(store)
          await Promise.all(
            Array.from({ length: 2_000 }, async (_, i) => {
              const ch = fresh(`junk-${i}`)
              await read(ch, 0)
              await store.position(ch)
              await store.cursor(ch, 'alice')
              await store.cursors(ch)
              await store.commit(ch, 'alice', 1)
            }),
          )
          expect(await sizesOf(store)).toEqual(before)
        }, timeout * 3)
      }
    })

    // ---------------------------------------------------------------- byte budget

    byteBudgetTests({ store: () => store, fresh, msg, append, appendN, read, offsetsOf, options, timeout, sizesOption, sizesOf })

    // ---------------------------------------------------------------- optional methods

    optionalMethodTests({ store: () => store, fresh, msg, append, appendN, read, offsetsOf, options, timeout, sizesOption, sizesOf }, options.capabilities ?? [])

    // ---------------------------------------------------------------- data

    describe('stored messages', () => {
      const values: Array<[string, unknown]> = [
        ['an object', { text: 'hi', n: 1, nested: { list: [1, 'two', null, { deep: true }] } }],
        ['an array', [1, 'two', null, false, { three: 3 }, []]],
        ['a string', 'hello'],
        ['an empty string', ''],
        ['an integer', 42],
        ['a negative float', -1.5],
        ['zero', 0],
        ['a large safe integer', Number.MAX_SAFE_INTEGER],
        ['a small float', 1e-7],
        ['true', true],
        ['false', false],
        ['null', null],
        ['unicode', 'héllo wörld – 中文 – 😀🎉👍🏽 – \u001f "quotes" \\ \n\t'],
        ['a string with a NUL character', 'a\u0000b'],
        ['lone surrogates', { high: 'a\ud800b', low: '\udfff', pair: '😀' }],
        ['unicode keys', { ключ: 'значение', 'emoji😀': ['ü'], 'a.b': 1, '': 'empty key' }],
        ['an empty object', {}],
        ['an empty array', []],
      ]

      it.each(values)('round-trip data: %s', async (_label, data) => {
        const ch = fresh('data')
        const r = await append(ch, msg(1, T0, { data }))
        expect(r.message.data).toEqual(data)
        const [stored] = (await read(ch, 0)).messages
        expect(stored?.data).toEqual(data)
        expect(stored).toEqual(r.message)
      }, timeout)

      it('keep id, event, sender, exclusions and timestamp', async () => {
        const ch = fresh('meta')
        const input: Input = { id: 'msg-Ω-1', event: 'chat:message·new', data: { text: 'x' }, sender: 'user-ü@example.com', exclude: { connections: ['conn-42'], users: ['mallory'] }, timestamp: T0 + 123 }
        const r = await append(ch, input)
        const expected = { ...input, channel: ch, offset: 1 }
        expect(r.message).toEqual(expected)
        const [stored] = (await read(ch, 0, 100, T0 + 123)).messages
        expect(stored).toEqual(expected)
        expect(stored?.sender).toBe('user-ü@example.com')
        expect(stored?.exclude).toEqual({ connections: ['conn-42'], users: ['mallory'] })
        expect(stored?.timestamp).toBe(T0 + 123)
      }, timeout)

      it('are what was appended: changing the appended data afterwards changes nothing stored', async () => {
        const ch = fresh('snapshot')
        const data = { text: 'before', list: [1, 2] }
        const r = await append(ch, msg(1, T0, { data }))
        data.text = 'after'
        data.list.push(3)
        expect((await read(ch, 0)).messages[0]?.data).toEqual({ text: 'before', list: [1, 2] })
        expect(r.message.offset).toBe(1)
      }, timeout)

      it('leave sender and exclusions undefined when not given (not null)', async () => {
        const ch = fresh('no-sender')
        const r = await append(ch, { id: 'server-1', event: 'e', data: 1, timestamp: T0 })
        const [stored] = (await read(ch, 0)).messages
        for (const m of [r.message, stored]) {
          expect(m?.sender).toBeUndefined()
          expect(m?.exclude).toBeUndefined()
          expect(m).toMatchObject({ id: 'server-1', event: 'e', data: 1, timestamp: T0, offset: 1, channel: ch })
        }
      }, timeout)
    })

    // ---------------------------------------------------------------- lost history

    const reset = options.reset
    if (reset) {
      describe('lost history (reset)', () => {
        it('starts a new epoch for every channel, with offsets from 1 again', async () => {
          const a = fresh('reset-a')
          const b = fresh('reset-b')
          await appendN(a, 3)
          await appendN(b, 1)
          const before = await store.position(a)
          const beforeB = await store.position(b)
          await reset(store)
          const after = await store.position(a)
          expect(after.offset).toBe(0)
          expect(after.epoch).not.toBe(before.epoch)
          expect(streamPositionSchema.safeParse(after).success).toBe(true)
          expect((await store.position(b)).epoch).not.toBe(beforeB.epoch)
          const r = await read(a, 0)
          expect(r).toMatchObject({ epoch: after.epoch, messages: [], top: 0, complete: true })
          const next = await append(a, msg('new'))
          expect(next.message.offset).toBe(1)
          expect(next.epoch).toBe(after.epoch)
          expect(await store.position(a)).toEqual({ epoch: after.epoch, offset: 1 })
        }, timeout)

        it('forgets idempotency keys; cursors are gone or reported in their earlier epoch, never as current', async () => {
          const ch = fresh('reset-cursors')
          const first = await append(ch, msg(1), { idempotencyKey: 'k', dedupWindowMs: 60_000 })
          await appendN(ch, 2)
          await store.commit(ch, 'alice', 2)
          expect(await store.cursor(ch, 'alice')).toEqual({ offset: 2, epoch: first.epoch })
          await reset(store)
          const c = await store.cursor(ch, 'alice')
          expect(c === undefined || (c.epoch === first.epoch && c.offset === 2)).toBe(true)
          expect(await cursorNow(ch, 'alice')).not.toBe(2)
          expect(await store.cursors(ch)).toEqual({})
          const again = await append(ch, msg('again', T0 + 1), { idempotencyKey: 'k', dedupWindowMs: 60_000 })
          expect(again.duplicate).toBe(false)
          expect(again.message).toMatchObject({ offset: 1, id: 'magain' })
          await store.commit(ch, 'alice', 1)
          expect(await store.cursors(ch)).toEqual({ alice: 1 })
          expect(await store.cursor(ch, 'alice')).toEqual({ offset: 1, epoch: again.epoch })
        }, timeout)
      })
    }

    // ---------------------------------------------------------------- close

    describe('close', () => {
      it('close(), when the store has one, resolves', async () => {
        expect(store.close === undefined || typeof store.close === 'function').toBe(true)
        await appendN(fresh('close'), 1)
        closed = true
        await store.close?.() // a rejection fails the test
      }, timeout)
    })
  })
}
