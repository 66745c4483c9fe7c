import { describe, expect, it } from 'vitest'
import { backoffDelay, SseParser, type SseEvent } from '../src/index.js'
import { Outbox } from '../src/outbox.js'
import { endpoint } from '../src/transports/types.js'

describe('backoffDelay (full jitter)', () => {
  it('stays below min(max, base × 2^attempt) and reaches near it', () => {
    const o = { initialDelay: 100, maxDelay: 1000 }
    expect(backoffDelay(0, { ...o, random: () => 0 })).toBe(0)
    expect(backoffDelay(0, { ...o, random: () => 0.999 })).toBe(99)
    expect(backoffDelay(2, { ...o, random: () => 0.5 })).toBe(200)
    expect(backoffDelay(10, { ...o, random: () => 0.999 })).toBe(999)
    expect(backoffDelay(5000, { ...o, random: () => 0.5 })).toBe(500)
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(3, o)
      expect(d).toBeGreaterThanOrEqual(0)
      expect(d).toBeLessThan(800)
    }
  })
})

describe('Outbox', () => {
  it('is bounded for new entries, keeps order, and takes back unanswered ones at the front', () => {
    const box = new Outbox<number>(2)
    box.push(3)
    box.push(4)
    expect(() => box.push(5)).toThrow(expect.objectContaining({ code: 'RT_006' }))
    box.restore([1, 2])
    expect(box.size).toBe(4)
    expect(box.drain()).toEqual([1, 2, 3, 4])
    expect(box.size).toBe(0)
  })
})

describe('SseParser', () => {
  it('parses events split across chunks, with CRLF, comments, ids and retry', () => {
    const events: SseEvent[] = []
    const retries: number[] = []
    const p = new SseParser((e) => events.push(e), (ms) => retries.push(ms))
    const stream = 'retry: 1000\n\nevent: session\ndata: {"session":"s1","secret":"x"}\n\n: ping\r\nid: s1:1\r\nevent: connected\r\ndata: {"type":"connected"}\r\n\r\nid: s1:2\ndata: a\ndata: b\n\n'
    for (let i = 0; i < stream.length; i += 7) p.push(stream.slice(i, i + 7))
    expect(retries).toEqual([1000])
    expect(events).toEqual([
      { event: 'session', data: '{"session":"s1","secret":"x"}', lastEventId: '' },
      { event: 'connected', data: '{"type":"connected"}', lastEventId: 's1:1' },
      { event: 'message', data: 'a\nb', lastEventId: 's1:2' },
    ])
    expect(p.lastEventId).toBe('s1:2')
  })

  it('waits for the LF after a CR at the end of a chunk', () => {
    const events: SseEvent[] = []
    const p = new SseParser((e) => events.push(e))
    p.push('data: x\r')
    p.push('\n\r')
    p.push('\n')
    expect(events).toEqual([{ event: 'message', data: 'x', lastEventId: '' }])
  })
})

describe('endpoint', () => {
  it('appends paths and query parameters', () => {
    expect(endpoint('http://h:1/realtime/', '/sse').toString()).toBe('http://h:1/realtime/sse')
    expect(endpoint('http://h:1/realtime?tenant=a', '/poll', { token: 't t', apiKey: undefined }).toString()).toBe('http://h:1/realtime/poll?tenant=a&token=t+t')
  })
})
