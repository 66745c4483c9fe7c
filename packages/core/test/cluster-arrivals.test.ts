import { describe, expect, it } from 'vitest'
import { ClusterArrivals, type ClusterMessage, presenceMember, presenceMembers, presenceRemoval } from '@tidings/core'

// The arrivals of a broker adapter (Redis, PostgreSQL) and the presence folding of its stores, pinned
// here on their own: the adapters' conformance suites reach them only through a real bus.

class BusError extends Error {
  constructor(
    message: string,
    readonly reason: string,
  ) {
    super(message)
  }
}

function setup(deliver: (m: ClusterMessage) => void = () => undefined) {
  const errors: BusError[] = []
  const got: ClusterMessage[] = []
  const resumed: number[] = []
  const a = new ClusterArrivals({
    topics: { all: 'all', node: (id) => `node:${id}`, channel: (c) => `ch:${c}` },
    validateFrames: true,
    error: (message, reason) => new BusError(message, reason),
    onError: (err) => errors.push(err as BusError),
    label: '[test]',
  })
  a.start(
    'me',
    (m) => {
      got.push(m)
      deliver(m)
    },
    { resumed: () => resumed.push(1) },
  )
  return { a, errors, got, resumed }
}

const frame = { type: 'message', channel: 'c', event: 'e', data: 1, id: 'm1', timestamp: '2026-12-04T00:00:00.000Z' }
const toChannel = (channel: string, origin = 'other') => ({ kind: 'dispatch', origin, target: { kind: 'channel', channel }, frame: { ...frame, channel } })

describe('ClusterArrivals', () => {
  it('a dispatch to a wanted channel on its topic is delivered; one to a channel no longer wanted is dropped as ignored, not delivered', () => {
    const { a, got, errors } = setup()
    a.channels.add('c')
    a.take(toChannel('c'), 'ch:c')
    a.take(toChannel('d'), 'ch:d')
    expect(got).toHaveLength(1)
    expect(errors).toEqual([])
    expect(a.counts).toEqual({ delivered: 1, malformed: 0, ignored: 1 })
  })

  it('the node never receives its own message, nor a reply addressed to another node; its own replies reach it', () => {
    const { a, got } = setup()
    a.channels.add('c')
    a.take(toChannel('c', 'me'), 'ch:c')
    a.take({ kind: 'reply', origin: 'other', to: 'third', id: 'r1', result: 1 }, 'node:third')
    a.take({ kind: 'reply', origin: 'other', to: 'me', id: 'r2', result: 2 }, 'node:me')
    expect(got.map((m) => (m as { id?: string }).id)).toEqual(['r2'])
    expect(a.counts.ignored).toBe(2)
  })

  it('a message on a topic it does not belong on is reported as misrouted and dropped; a malformed one as malformed', () => {
    const { a, got, errors } = setup()
    a.channels.add('c')
    a.take(toChannel('c'), 'all', 'somewhere')
    a.take({ kind: 'dispatch', origin: 'other', target: { kind: 'nowhere' }, frame }, 'all', 'somewhere')
    expect(got).toEqual([])
    expect(errors.map((e) => e.reason)).toEqual(['misrouted', 'malformed'])
    expect(errors[1]!.message).toBe('dropped a malformed message on somewhere: unknown target kind')
    expect(a.counts.malformed).toBe(2)
  })

  it('a throwing deliver is reported, and the next message is still delivered', () => {
    let first = true
    const { a, got, errors } = setup(() => {
      if (first) {
        first = false
        throw new Error('boom')
      }
    })
    a.take({ kind: 'request', origin: 'other', id: 'q1', query: { op: 'kick', channel: 'c', userId: 'u', reason: 'r' } }, 'all')
    a.take({ kind: 'request', origin: 'other', id: 'q2', query: { op: 'kick', channel: 'c', userId: 'u', reason: 'r' } }, 'all')
    expect(got).toHaveLength(2)
    expect(errors.map((e) => [e.reason, e.message])).toEqual([['deliver', 'the hub failed to take a message: boom']])
  })

  it('resumed() calls the hub\'s hook; a hook that throws is reported (reason deliver), never thrown', () => {
    const { a, resumed } = setup()
    a.resumed()
    expect(resumed).toEqual([1])
    const errors: BusError[] = []
    const b = new ClusterArrivals({ topics: { all: 'all', node: (id) => id, channel: (c) => c }, validateFrames: false, error: (m, r) => new BusError(m, r), onError: (e) => errors.push(e as BusError), label: '[test]' })
    b.start('me', () => undefined, { resumed: () => { throw new Error('gap check failed') } })
    expect(() => b.resumed()).not.toThrow()
    expect(errors.map((e) => [e.reason, e.message])).toEqual([['deliver', 'resumed hook: gap check failed']])
  })

  it('after stop nothing is delivered and no channel is wanted', () => {
    const { a, got } = setup()
    a.channels.add('c')
    a.stop()
    a.take(toChannel('c'), 'ch:c')
    expect(got).toEqual([])
    expect(a.channels.size).toBe(0)
    expect(a.delivering).toBe(false)
  })
})

describe('presence members folded from entries', () => {
  const entry = (connectionId: string, userId: string, joinedAt: number, updatedAt: number, state = connectionId) => ({ channel: 'p', connectionId, userId, nodeId: 'n', state, data: { c: connectionId }, joinedAt, updatedAt })

  it('state and data of the latest updated entry (the later one on a tie), joinedAt the earliest, one member per user in first-entry order', () => {
    const rows = [entry('a1', 'ann', 5, 9), entry('b1', 'bob', 1, 1), entry('a2', 'ann', 3, 9), entry('a3', 'ann', 7, 8)]
    expect(presenceMembers(rows)).toEqual([
      { id: 'ann', state: 'a2', data: { c: 'a2' }, connections: 3, joinedAt: 3, lastSeen: 9 },
      { id: 'bob', state: 'b1', data: { c: 'b1' }, connections: 1, joinedAt: 1, lastSeen: 1 },
    ])
    expect(presenceMember([rows[1]!])).toEqual({ id: 'bob', state: 'b1', data: { c: 'b1' }, connections: 1, joinedAt: 1, lastSeen: 1 })
  })

  it('a removal leaves the user (edge, connections 0, lastSeen now) only when no entry is left', () => {
    const gone = entry('a1', 'ann', 5, 9)
    expect(presenceRemoval(gone, [], 20)).toEqual({ edge: true, member: { id: 'ann', state: 'a1', data: { c: 'a1' }, connections: 0, joinedAt: 5, lastSeen: 20 } })
    expect(presenceRemoval(gone, [entry('a2', 'ann', 6, 7)], 20)).toEqual({ edge: false, member: { id: 'ann', state: 'a2', data: { c: 'a2' }, connections: 1, joinedAt: 6, lastSeen: 7 } })
  })
})
