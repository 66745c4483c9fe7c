import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { jsonWithNumber } from '@tidings/protocol'
import { type Subscription, Subscriptions } from '../src/hub/connection.js'
import { createMemoryStore } from '../src/memory/store.js'
import { cloneData, isoTimestamp } from '../src/util.js'

// Hand-written fast paths of the publish path, each proven equal to the general way it replaces.
describe('isoTimestamp equals Date#toISOString', () => {
  it('on random instants, including fractions, negatives and the ends of the 4-digit years', () => {
    const instant = fc.oneof(
      fc.integer({ min: -1e13, max: 3e14 }),
      fc.double({ min: 0, max: 4e12, noNaN: true }),
      fc.constantFrom(0, 999, 1000, 1e12 + 999.9, 253_402_300_799_999, 253_402_300_800_000, -1, -0.5),
    )
    fc.assert(
      fc.property(fc.array(instant, { minLength: 1, maxLength: 5 }), (list) => {
        for (const ms of list) expect(isoTimestamp(ms)).toBe(new Date(ms).toISOString())
      }),
      { numRuns: 2000 },
    )
  })

  it('within one second and across seconds in order (the cached date part)', () => {
    const t0 = Date.UTC(2026, 10, 22, 23, 59, 58, 990)
    for (let ms = t0; ms < t0 + 2100; ms += 7) expect(isoTimestamp(ms)).toBe(new Date(ms).toISOString())
  })
})

describe('cloneData gives what structuredClone gives', () => {
  it('on random JSON-like values, sharing nothing with the original', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.anything(), (json, anything) => {
        for (const value of [json, anything]) {
          let expected: unknown
          try {
            expected = structuredClone(value)
          } catch {
            expect(() => cloneData(value)).toThrow()
            continue
          }
          const copy = cloneData(value)
          expect(copy).toStrictEqual(expected)
          if (typeof value === 'object' && value !== null) expect(copy).not.toBe(value)
        }
      }),
      { numRuns: 1000 },
    )
  })

  it('copies deeply: changing the original afterwards does not reach the copy', () => {
    const original = { a: [1, { b: 'x' }], c: { d: null as unknown } }
    const copy = cloneData(original)
    original.a.push(2)
    ;(original.a[1] as { b: string }).b = 'changed'
    original.c.d = 5
    expect(copy).toEqual({ a: [1, { b: 'x' }], c: { d: null } })
  })

  it('keeps a "__proto__" key as data, as JSON.parse makes it, without changing the prototype', () => {
    const value = JSON.parse('{"__proto__":{"polluted":true},"x":1}') as Record<string, unknown>
    const copy = cloneData(value)
    expect(Object.getPrototypeOf(copy)).toBe(Object.prototype)
    expect(Object.keys(copy)).toEqual(['__proto__', 'x'])
    expect(({} as { polluted?: boolean }).polluted).toBeUndefined()
    expect(copy).toStrictEqual(structuredClone(value))
  })

  it('hands dates, maps, class instances, cycles and deep nesting to structuredClone', () => {
    class Point {
      constructor(readonly x: number) {}
    }
    const cyclic: Record<string, unknown> = { a: 1 }
    cyclic['self'] = cyclic
    let deep: unknown = 'leaf'
    for (let i = 0; i < 200; i++) deep = [deep]
    for (const value of [{ at: new Date(5) }, new Map([[1, 2]]), { p: new Point(3) }, cyclic, deep, [new Uint8Array([1, 2])]]) {
      expect(cloneData(value)).toStrictEqual(structuredClone(value))
    }
    expect(() => cloneData({ f: () => 1 })).toThrow()
  })
})

describe('jsonWithNumber appends a field as JSON.stringify would', () => {
  it('on random frames', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string().filter((k) => k !== 'offset'), fc.jsonValue()), fc.nat(), (obj, n) => {
        expect(jsonWithNumber(JSON.stringify(obj), 'offset', n)).toBe(JSON.stringify({ ...obj, offset: n }))
      }),
      { numRuns: 1000 },
    )
  })
})

describe('memory store: trimming from the front', () => {
  it('keeps offsets, reads and counts right across many compactions', async () => {
    const store = createMemoryStore()
    const retention = { maxCount: 50, maxAgeMs: 1e9 }
    for (let i = 1; i <= 1000; i++) {
      store.append('c', { id: `m${i}`, event: 'e', data: i, timestamp: i }, { retention, now: i })
      if (i % 37 === 0 || i === 1000) {
        const all = await store.read('c', { after: 0, limit: 1000, now: i })
        expect(all.messages.map((m) => m.offset)).toEqual(Array.from({ length: Math.min(50, i) }, (_, k) => i - Math.min(50, i) + 1 + k))
        const some = await store.read('c', { after: i - 10, limit: 3, now: i })
        expect(some.messages.map((m) => m.data)).toEqual([i - 9, i - 8, i - 7])
      }
    }
    // Age trimming empties the log; appends go on from the same top.
    expect((await store.read('c', { after: 0, limit: 10, now: 1e9 + 2000 })).messages).toEqual([])
    store.append('c', { id: 'late', event: 'e', data: 'late', timestamp: 1e9 + 2000 }, { retention, now: 1e9 + 2000 })
    expect((await store.read('c', { after: 0, limit: 10, now: 1e9 + 2000 })).messages.map((m) => m.offset)).toEqual([1001])
  })
})

describe('Subscriptions (first one inline, a Map from the second) behaves as a Map by channel name', () => {
  it('on random sequences of add, delete, get', () => {
    const names = ['a', 'b', 'c', 'd']
    const op = fc.tuple(fc.constantFrom('add', 'delete', 'get'), fc.constantFrom(...names))
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const subs = new Subscriptions()
        const model = new Map<string, Subscription>()
        for (const [kind, name] of ops) {
          if (kind === 'add') {
            const sub = { channel: { name } } as unknown as Subscription
            subs.add(sub)
            model.set(name, sub)
          } else if (kind === 'delete') expect(subs.delete(name)).toBe(model.delete(name))
          else expect(subs.get(name)).toBe(model.get(name))
          expect(subs.size).toBe(model.size)
          expect(new Set(subs.keys())).toEqual(new Set(model.keys()))
          expect(new Set(subs.values())).toEqual(new Set(model.values()))
          for (const n of names) expect(subs.has(n)).toBe(model.has(n))
        }
      }),
    )
  })
})
