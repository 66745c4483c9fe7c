import { describe, expect, it } from 'vitest'
import { createMemoryLimitStore } from '@tidings/core'
import { delayed, limitConformance } from '@tidings/core/conformance'

// The nodes of one process share the object: `count` instances are the same store.
limitConformance('memory', (count) => Array<ReturnType<typeof createMemoryLimitStore>>(count).fill(createMemoryLimitStore()))

// The same contract when every answer comes late, as from a store across a network.
limitConformance('memory, answering 2 ms late', (count) => {
  const store = createMemoryLimitStore()
  return Array.from({ length: count }, () => delayed(store, 2))
}, { timeoutMs: 30_000 })

describe('createMemoryLimitStore (memory only)', () => {
  it('keeps at most maxKeys counters: the one hit longest ago is forgotten, not the busy ones (bounded memory)', () => {
    const s = createMemoryLimitStore({ maxKeys: 3 })
    expect(s.hit('a', 1_000, 0)).toBe(1)
    expect(s.hit('b', 1_000, 0)).toBe(1)
    expect(s.hit('c', 1_000, 0)).toBe(1)
    expect(s.hit('a', 1_000, 0)).toBe(2) // a is now the most recent
    expect(s.hit('d', 1_000, 0)).toBe(1) // evicts b
    expect(s.hit('a', 1_000, 0)).toBe(3)
    expect(s.hit('b', 1_000, 0)).toBe(1) // b was forgotten (evicts c)
    expect(s.hit('d', 1_000, 0)).toBe(2)
  })

  it('a hit a little late (in the window before the newest) counts in its own window, not in the newest one', () => {
    const s = createMemoryLimitStore()
    expect(s.hit('k', 1_000, 999)).toBe(1)
    expect(s.hit('k', 1_000, 1_000)).toBe(1)
    expect(s.hit('k', 1_000, 998)).toBe(2) // window 0 again
    expect(s.hit('k', 1_000, 1_500)).toBe(2) // window 1 untouched by it
  })

  it('refuses a window that is not a positive number or a time that is not finite (no NaN window that never ends)', () => {
    const s = createMemoryLimitStore()
    expect(() => s.hit('k', 0, 0)).toThrow(RangeError)
    expect(() => s.hit('k', Number.NaN, 0)).toThrow(RangeError)
    expect(() => s.hit('k', 1_000, Number.NaN)).toThrow(RangeError)
  })
})
