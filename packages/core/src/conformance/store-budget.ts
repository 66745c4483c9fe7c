import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { AppendOptions, MessageStore, ReadResult, StoredMessage } from '../ports/store.js'
import type { StoreConformanceOptions, StoreSizes } from './store.js'
import { KEEP, T0, type Input } from './store-shared.js'

/** What the byte-budget tests use of the store suite (its store and helpers). */
export interface StoreSuite<S extends MessageStore> {
  store(): S
  fresh(label: string): string
  msg(n: number | string, timestamp?: number, extra?: Partial<Input>): Input
  append(channel: string, input: Input, o?: Partial<AppendOptions>): Promise<Awaited<ReturnType<MessageStore['append']>>>
  appendN(channel: string, count: number, o?: Partial<AppendOptions> & { at?: (n: number) => number }): Promise<Array<Awaited<ReturnType<MessageStore['append']>>>>
  read(channel: string, after: number, limit?: number, now?: number): Promise<ReadResult>
  offsetsOf(messages: readonly StoredMessage[]): number[]
  readonly options: StoreConformanceOptions<S>
  readonly timeout: number
  /** The `sizes` option as given (false: the store cannot tell its sizes). */
  readonly sizesOption: StoreConformanceOptions<S>['sizes']
  sizesOf(s: S): Promise<StoreSizes>
}

/** `Retention.maxBytes` per channel, and the budgets and bounds of a whole store (when the suite is given stores made for them). */
export function byteBudgetTests<S extends MessageStore>(ctx: StoreSuite<S>): void {
  const { fresh, msg, append, appendN, read, offsetsOf, options, timeout, sizesOption, sizesOf } = ctx
  describe('byte budget (Retention.maxBytes)', () => {
    it('per channel: keeps the newest messages within maxBytes (sizes from the size hint); the gap reads complete: false, the epoch stays', async () => {
      const ch = fresh('bytes')
      const retention = { ...KEEP, maxBytes: 10_000 }
      const results = await appendN(ch, 6, { retention, size: 3_000 })
      const r = await read(ch, 0)
      const kept = offsetsOf(r.messages)
      expect(kept.length).toBeGreaterThanOrEqual(1)
      expect(kept.length).toBeLessThanOrEqual(3) // 4 × 3,000 > 10,000
      expect(kept.at(-1)).toBe(6)
      expect(kept).toEqual(Array.from({ length: kept.length }, (_, i) => 7 - kept.length + i)) // the newest, no hole
      expect(r.complete).toBe(false)
      expect(r.top).toBe(6)
      expect((await read(ch, 6 - kept.length)).complete).toBe(true)
      for (const x of results) expect(x.epoch).toBe(r.epoch)
      expect((await ctx.store().position(ch)).epoch).toBe(results[0]!.epoch)
    }, timeout)

    it('per channel: measures the message itself when no size is given (one user publishing large messages)', async () => {
      const ch = fresh('bytes-measured')
      const retention = { ...KEEP, maxBytes: 12_000 }
      const big = 'x'.repeat(5_000)
      for (let n = 1; n <= 5; n++) await append(ch, msg(n, T0, { data: { text: big } }), { retention })
      const r = await read(ch, 0)
      expect(offsetsOf(r.messages).length).toBeLessThanOrEqual(2) // 3 × 5,000 > 12,000
      expect(offsetsOf(r.messages).at(-1)).toBe(5)
      expect(r.complete).toBe(false)
      expect(r.messages.at(-1)?.data).toEqual({ text: big })
    }, timeout)

    it('per channel: a message larger than maxBytes is given its offset and not kept', async () => {
      const ch = fresh('bytes-huge')
      const retention = { ...KEEP, maxBytes: 1_000 }
      await append(ch, msg(1), { retention, size: 100 })
      const huge = await append(ch, msg(2), { retention, size: 5_000 })
      expect(huge.message.offset).toBe(2)
      const r = await read(ch, 0)
      expect(offsetsOf(r.messages)).not.toContain(2)
      expect(r.top).toBe(2)
      expect((await read(ch, 1)).complete).toBe(false)
      expect((await append(ch, msg(3), { retention, size: 100 })).message.offset).toBe(3)
      expect(offsetsOf((await read(ch, 2)).messages)).toEqual([3])
    }, timeout)

    it('an idempotent repeat still answers the first offset after the budget dropped that message', async () => {
      const ch = fresh('bytes-dedup')
      const retention = { ...KEEP, maxBytes: 1_000 }
      await append(ch, msg(1), { retention, size: 600, idempotencyKey: 'k', dedupWindowMs: 60_000 })
      await append(ch, msg(2), { retention, size: 600 }) // drops 1
      expect(offsetsOf((await read(ch, 0)).messages)).toEqual([2])
      const again = await append(ch, msg('again'), { retention, size: 600, idempotencyKey: 'k', dedupWindowMs: 60_000 })
      expect(again.duplicate).toBe(true)
      expect(again.message).toMatchObject({ offset: 1, id: 'm1' })
      expect((await ctx.store().position(ch)).offset).toBe(2)
    }, timeout)

    if (sizesOption !== false) {
      it('bytes held follow appends and trimming', async () => {
        const before = await sizesOf(ctx.store())
        const ch = fresh('bytes-held')
        const retention = { ...KEEP, maxBytes: 10_000 }
        await appendN(ch, 2, { retention, size: 3_000 })
        const two = await sizesOf(ctx.store())
        expect(two.bytes - before.bytes).toBeGreaterThanOrEqual(6_000)
        await appendN(ch, 10, { retention, size: 3_000 })
        const after = await sizesOf(ctx.store())
        expect(after.bytes - before.bytes).toBeLessThanOrEqual(10_000)
      }, timeout)
    }

    const makeBudgetStore = options.makeBudgetStore
    if (makeBudgetStore) {
      it('store-wide: appends across channels never hold more than the budget; what is dropped reads complete: false in the same epoch', async () => {
        const budgeted = await makeBudgetStore(100_000)
        try {
          const a = fresh('budget-a')
          const b = fresh('budget-b')
          const epochs = new Set<string>()
          for (let n = 1; n <= 30; n++) {
            const ch = n % 3 === 0 ? b : a
            const r = await budgeted.append(ch, msg(n), { retention: KEEP, now: T0, size: 10_000 })
            epochs.add(`${ch}:${r.epoch}`)
          }
          expect(epochs.size).toBe(2) // trimming never changed an epoch
          const ra = await budgeted.read(a, { after: 0, limit: 100, now: T0 })
          const rb = await budgeted.read(b, { after: 0, limit: 100, now: T0 })
          const kept = ra.messages.length + rb.messages.length
          expect(kept).toBeLessThanOrEqual(10)
          expect(kept).toBeGreaterThanOrEqual(1)
          expect(ra.complete && rb.complete).toBe(false)
          expect(ra.top).toBe(20)
          expect(rb.top).toBe(10)
          // the newest message is kept
          expect(offsetsOf(ra.messages).at(-1) === 20 || offsetsOf(rb.messages).at(-1) === 10).toBe(true)
          expect((await budgeted.position(a)).offset).toBe(20)
          if (sizesOption !== false) expect((await sizesOf(budgeted)).bytes).toBeLessThanOrEqual(100_000)
        } finally {
          await budgeted.close?.()
        }
      }, timeout)
    }
  })

  // ---------------------------------------------------------------- eviction

  const makeBoundedStore = options.makeBoundedStore
  if (makeBoundedStore) {
    describe('evicted channel logs (a bound on the number of logs)', () => {
      let bounded: S
      beforeEach(async () => {
        bounded = await makeBoundedStore(2)
      }, timeout)
      afterEach(async () => {
        await bounded.close?.()
      }, timeout)

      const fill = async (ch: string, count: number) => {
        for (let n = 1; n <= count; n++) await bounded.append(ch, msg(n), { retention: KEEP, now: T0 })
      }

      it('reads never evict: reading 500 other names leaves every log in its epoch (public:important keeps its history)', async () => {
        const important = fresh('important')
        const queue = fresh('queue')
        await fill(important, 3)
        await fill(queue, 2)
        const before = [await bounded.position(important), await bounded.position(queue)]
        await Promise.all(
          Array.from({ length: 500 }, async (_, i) => {
            const ch = fresh(`junk-${i}`)
            await bounded.read(ch, { after: 0, limit: 10, now: T0 })
            await bounded.position(ch)
            await bounded.cursor(ch, 'alice')
          }),
        )
        expect([await bounded.position(important), await bounded.position(queue)]).toEqual(before)
        expect(offsetsOf((await bounded.read(important, { after: 0, limit: 10, now: T0 })).messages)).toEqual([1, 2, 3])
      }, timeout)

      it('an evicted channel comes back in a new epoch, with its consumer cursors in their old epoch (an offline queue lost is never silent)', async () => {
        const queue = fresh('queue')
        await fill(queue, 3)
        await bounded.commit(queue, 'alice', 2)
        const old = await bounded.position(queue)
        await fill(fresh('x'), 1)
        await fill(fresh('y'), 1) // evicts the queue (the least recently used)
        const now = await bounded.position(queue)
        expect(now.offset).toBe(0)
        expect(now.epoch).not.toBe(old.epoch)
        expect(await bounded.cursor(queue, 'alice')).toEqual({ offset: 2, epoch: old.epoch })
        expect(await bounded.cursors(queue)).toEqual({}) // only current-epoch cursors
        expect(await bounded.cursor(queue, 'bob')).toBeUndefined()
        // the new epoch is stable and kept by the next append
        const r = await bounded.append(queue, msg('new'), { retention: KEEP, now: T0 })
        expect(r).toMatchObject({ epoch: now.epoch, message: { offset: 1 } })
        expect(await bounded.cursor(queue, 'alice')).toEqual({ offset: 2, epoch: old.epoch })
        // a commit in the new epoch replaces the lost cursor, even at 0
        await bounded.commit(queue, 'alice', 0)
        const after = await bounded.cursor(queue, 'alice')
        expect(after === undefined || (after.epoch === now.epoch && after.offset === 0)).toBe(true)
        await bounded.commit(queue, 'alice', 1)
        expect(await bounded.cursor(queue, 'alice')).toEqual({ offset: 1, epoch: now.epoch })
        expect(await bounded.cursors(queue)).toEqual({ alice: 1 })
      }, timeout)

      it('a channel evicted twice never returns to an epoch it had', async () => {
        const ch = fresh('twice')
        const seen = new Set<string>()
        for (let round = 0; round < 3; round++) {
          await fill(ch, 1)
          seen.add((await bounded.position(ch)).epoch)
          await fill(fresh(`other-${round}-a`), 1)
          await fill(fresh(`other-${round}-b`), 1)
        }
        seen.add((await bounded.position(ch)).epoch)
        expect(seen.size).toBe(4)
      }, timeout)
    })
  }
}
