import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { clientFrameSchema, parseClientFrame } from '@tidings/core'

// Acks skip zod for speed; the hand-written check must accept exactly what the schema accepts.
describe('the ack fast path agrees with the schema', () => {
  const channel = fc.oneof(fc.constantFrom('public:a', 'orders:1', '', 'bad name', 'x'.repeat(201), 'ok-' + 'y'.repeat(196)), fc.string())
  const offset = fc.oneof(fc.integer({ min: -5, max: 1e6 }), fc.double(), fc.constantFrom(Number.MAX_SAFE_INTEGER + 2, Number.NaN, '3'))
  const frame = fc.record(
    {
      type: fc.constantFrom('ack', 'ping', 'ACK'),
      channel,
      offset,
      v: fc.constantFrom(1, 2, '1', undefined),
      id: fc.constantFrom('r1', 7),
      extra: fc.anything(),
    },
    { requiredKeys: ['type'] },
  )

  it('on random frames', () => {
    fc.assert(
      fc.property(frame, (value) => {
        expect(parseClientFrame(value).ok).toBe(clientFrameSchema.safeParse(value).success)
      }),
      { numRuns: 3000, seed: 42 },
    )
  })

  it('on the edge cases by hand', () => {
    for (const value of [
      { type: 'ack', channel: 'public:a', offset: 0 },
      { type: 'ack', channel: 'public:a', offset: 5, v: 1 },
      { type: 'ack', channel: 'public:a', offset: 5, v: undefined },
      { type: 'ack', channel: 'public:a', offset: -1 },
      { type: 'ack', channel: 'public:a', offset: 1.5 },
      { type: 'ack', channel: 'public a', offset: 1 },
      { type: 'ack', channel: 'public:a', offset: 1, id: 'x' },
      [{ type: 'ack', channel: 'public:a', offset: 1 }],
      null,
    ]) {
      expect(parseClientFrame(value).ok, JSON.stringify(value)).toBe(clientFrameSchema.safeParse(value).success)
    }
  })
})
