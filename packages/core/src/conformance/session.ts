import { afterEach, describe, expect, it } from 'vitest'
import type { Hub } from '../hub/hub.js'
import type { ConnectionHandle, Session } from '../ports/session.js'
import { Outbound } from '../ports/session.js'

/** What a transport did with the `ConnectionHandle` the hub gave it. */
export interface HandleCalls {
  /** `drained()` calls. */
  drained: number
  /** `closed()` calls, in order. */
  readonly closed: Array<{ code: number | undefined; reason: string | undefined }>
}

/** A session a transport handed to the hub, with the handle it got back and what it did with it. */
export interface CapturedSession {
  readonly session: Session
  readonly handle: ConnectionHandle
  readonly calls: HandleCalls
}

/**
 * Wraps a hub so that every session a transport connects is captured: give the transport the
 * returned `hub`, connect a client, and `await next()` for the `Session` under test (with the
 * handle the transport holds, whose `drained()` and `closed()` calls are recorded).
 */
export function captureSessions(hub: Hub): { readonly hub: Hub; next(): Promise<CapturedSession> } {
  const ready: CapturedSession[] = []
  const waiting: Array<(c: CapturedSession) => void> = []
  const connect = async (session: Session, options?: unknown) => {
    const handle = await (hub.connect as (s: Session, o?: unknown) => Promise<ConnectionHandle>)(session, options)
    const calls: HandleCalls = { drained: 0, closed: [] }
    const watched = new Proxy(handle, {
      get(target, key) {
        const value: unknown = Reflect.get(target, key, target)
        if (key === 'drained')
          return () => {
            calls.drained++
            return target.drained()
          }
        if (key === 'closed')
          return (code?: number, reason?: string) => {
            calls.closed.push({ code, reason })
            return target.closed(code, reason)
          }
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      },
    })
    const captured = { session, handle: watched, calls }
    const w = waiting.shift()
    if (w) w(captured)
    else ready.push(captured)
    return watched
  }
  const proxy = new Proxy(hub, {
    get(target, key) {
      if (key === 'connect') return connect
      const value: unknown = Reflect.get(target, key, target)
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  })
  return {
    hub: proxy,
    next: () => {
      const c = ready.shift()
      return c ? Promise.resolve(c) : new Promise<CapturedSession>((resolve) => waiting.push(resolve))
    },
  }
}

/** One connected session and its far end, as `sessionConformance`'s factory gives it. */
export interface SessionUnderTest {
  /** The transport's Session, connected to a far end that reads. */
  readonly session: Session
  /** The handle the transport holds (its `highWaterMark` is the one asked for). */
  readonly handle: ConnectionHandle
  /** What the transport did with the handle (`captureSessions` records it). */
  readonly calls: HandleCalls
  /** Every server frame the far end has read so far, decoded, in order (the transport's own included). */
  received(): readonly unknown[]
  /** Stop reading at the far end (a slow consumer): what is sent piles up as buffered bytes. */
  pause(): void | Promise<void>
  /** Read again. */
  resume(): void | Promise<void>
  /** Lose the far end abruptly (a network failure), without a close handshake. */
  drop(): void | Promise<void>
  /** The close the far end learnt of, if it has (`code` when the transport carries one). */
  farEndClosed(): { code?: number | undefined } | undefined
  /** Release everything (servers, clients). */
  dispose(): Promise<void>
}

export interface SessionConformanceOptions {
  /** Timeout of each test, in ms. Default 20,000. */
  readonly timeoutMs?: number | undefined
  /** The high-water mark the suite asks the factory for. Default 256 KiB. */
  readonly highWaterMark?: number | undefined
  /** Most bytes the suite sends to a paused far end before giving up on seeing `send` return false. Default 128 MiB. */
  readonly maxBufferedBytes?: number | undefined
  /** How long the suite waits to be sure something does not arrive. Default 100 ms. */
  readonly quietMs?: number | undefined
}

/**
 * The `Session` contract (ports/session.ts) as a vitest suite: run it over every transport.
 *
 *   sessionConformance('ws', async ({ highWaterMark }) => {
 *     const capture = captureSessions(createHub({ limits: { highWaterMark } }))
 *     … serve a transport built on capture.hub, connect a real client …
 *     const { session, handle, calls } = await capture.next()
 *     return { session, handle, calls, received, pause, resume, drop, farEndClosed, dispose }
 *   })
 *
 * The suite writes its own frames (`message` frames on a `conformance:session` channel) straight
 * into the session and reads them at the far end; frames the hub or transport sends meanwhile are
 * ignored.
 */
export function sessionConformance(name: string, makeSession: (options: { highWaterMark: number }) => Promise<SessionUnderTest>, options: SessionConformanceOptions = {}): void {
  const timeout = options.timeoutMs ?? 20_000
  const highWaterMark = options.highWaterMark ?? 256 * 1024
  const maxBytes = options.maxBufferedBytes ?? 128 * 1024 * 1024
  const quietMs = options.quietMs ?? 100
  const CHANNEL = 'conformance:session'
  const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
  const encoder = new TextEncoder()

  /** A frame of about `pad` bytes carrying `n`. */
  const frame = (n: number, pad = 0, binary = false): Outbound => {
    const text = JSON.stringify({ type: 'message', channel: CHANNEL, event: 'n', data: { n, pad: 'x'.repeat(pad) } })
    const bytes = encoder.encode(text)
    return new Outbound(binary ? bytes : text, bytes.byteLength)
  }

  describe(`Session conformance: ${name}`, () => {
    let open: SessionUnderTest[] = []
    afterEach(async () => {
      const all = open
      open = []
      for (const s of all) await s.dispose()
    }, timeout)

    const make = async () => {
      const s = await makeSession({ highWaterMark })
      open.push(s)
      expect(s.handle.highWaterMark).toBe(highWaterMark)
      return s
    }
    /** The `n`s of the suite's frames the far end has read. */
    const numbers = (s: SessionUnderTest) =>
      s
        .received()
        .filter((f): f is { channel: string; data: { n: number } } => typeof f === 'object' && f !== null && (f as { channel?: unknown }).channel === CHANNEL)
        .map((f) => f.data.n)
    const eventually = async (check: () => void, ms = timeout - 2_000) => {
      const deadline = Date.now() + ms
      for (;;) {
        try {
          check()
          return
        } catch (err) {
          if (Date.now() > deadline) throw err
          await sleep(5)
        }
      }
    }
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

    it('frames arrive in the order sent (no reordering, no loss, no duplicate)', async () => {
      const s = await make()
      for (let n = 1; n <= 300; n++) s.session.send(frame(n, n % 7 === 0 ? 2_000 : 10))
      await eventually(() => expect(numbers(s)).toEqual(range(1, 300)))
      await sleep(quietMs)
      expect(numbers(s)).toEqual(range(1, 300))
    }, timeout)

    it('one Outbound sent several times (a shared fan-out frame) arrives each time, whatever the transport memoized', async () => {
      const s = await make()
      const shared = frame(1)
      s.session.send(shared)
      s.session.send(frame(2))
      s.session.send(shared)
      s.session.send(shared)
      await eventually(() => expect(numbers(s)).toEqual([1, 2, 1, 1]))
    }, timeout)

    it('send does not change frame.data or frame.bytes (text and binary data), only its memo', async () => {
      const s = await make()
      for (const binary of [false, true]) {
        const out = frame(binary ? 2 : 1, 100, binary)
        const before = typeof out.data === 'string' ? out.data : Uint8Array.from(out.data)
        const writes: PropertyKey[] = []
        const watched = new Proxy(out, {
          set(target, key, value) {
            if (key !== 'memo') writes.push(key)
            return Reflect.set(target, key, value)
          },
          defineProperty(target, key, desc) {
            if (key !== 'memo') writes.push(key)
            return Reflect.defineProperty(target, key, desc)
          },
        })
        s.session.send(watched)
        s.session.send(watched) // a second session of a fan-out sees the same bytes
        expect(writes).toEqual([])
        expect(out.bytes).toBe(encoder.encode(typeof before === 'string' ? before : new TextDecoder().decode(before)).byteLength)
        if (typeof before === 'string') expect(out.data).toBe(before)
        else expect(Uint8Array.from(out.data as Uint8Array)).toEqual(before)
      }
      await eventually(() => expect(numbers(s)).toEqual([1, 1, 2, 2]))
    }, timeout)

    it('send returns false once the buffered bytes reach the high-water mark, still accepts that frame, and drained() follows reading', async () => {
      const s = await make()
      await s.pause()
      let sent = 0
      let bytes = 0
      let answer = true
      while (answer && bytes < maxBytes) {
        const f = frame(++sent, 16 * 1024)
        answer = s.session.send(f)
        bytes += f.bytes
        const buffered = s.session.bufferedAmount()
        // true exactly while below the mark after this frame
        expect(answer, `frame ${sent}: send answered ${answer} with ${buffered} bytes buffered (mark ${highWaterMark})`).toBe(buffered < highWaterMark)
        if (sent % 32 === 0) await sleep(1) // let the network take what it can
      }
      expect(answer, `send never returned false in ${bytes} bytes`).toBe(false)
      expect(s.session.bufferedAmount()).toBeGreaterThanOrEqual(highWaterMark)
      expect(s.calls.drained).toBe(0)
      await s.resume()
      await eventually(() => expect(numbers(s)).toEqual(range(1, sent)))
      await eventually(() => expect(s.calls.drained).toBeGreaterThanOrEqual(1))
      await eventually(() => expect(s.session.bufferedAmount()).toBeLessThan(highWaterMark))
    }, timeout)

    it('bufferedAmount counts bytes accepted and not yet handed to the network, and falls back as the far end reads', async () => {
      const s = await make()
      // a far end that reads leaves nothing buffered (the transport's own first frames included)
      await eventually(() => expect(s.session.bufferedAmount()).toBe(0))
      await s.pause()
      let sent = 0
      while (s.session.bufferedAmount() === 0 && sent < maxBytes / (64 * 1024)) {
        s.session.send(frame(++sent, 64 * 1024))
        if (sent % 16 === 0) await sleep(1)
      }
      expect(s.session.bufferedAmount()).toBeGreaterThan(0)
      await s.resume()
      await eventually(() => expect(numbers(s)).toEqual(range(1, sent)))
      await eventually(() => expect(s.session.bufferedAmount()).toBe(0))
    }, timeout)

    it('close is idempotent, is followed by closed() on the handle, and the far end learns of it', async () => {
      const s = await make()
      s.session.send(frame(1))
      await eventually(() => expect(numbers(s)).toEqual([1]))
      expect(() => s.session.close(4000, 'conformance close')).not.toThrow()
      expect(() => s.session.close(4000, 'conformance close')).not.toThrow()
      expect(() => s.session.close(1000, 'again')).not.toThrow()
      await eventually(() => expect(s.calls.closed.length).toBeGreaterThanOrEqual(1))
      expect(s.calls.closed[0]!.code).toBe(4000)
      await eventually(() => expect(s.farEndClosed()).toBeDefined())
      const far = s.farEndClosed()!
      if (far.code !== undefined) expect(far.code).toBe(4000)
    }, timeout)

    it('frames sent after close are ignored: send does not throw and nothing arrives', async () => {
      const s = await make()
      s.session.send(frame(1))
      s.session.close(1000, 'done')
      for (let n = 2; n <= 5; n++) expect(() => s.session.send(frame(n))).not.toThrow()
      await eventually(() => expect(s.farEndClosed()).toBeDefined())
      await sleep(quietMs)
      expect(numbers(s).filter((n) => n > 1)).toEqual([])
    }, timeout)

    it('send never throws when the far end is lost abruptly, before or after the transport notices', async () => {
      const s = await make()
      s.session.send(frame(1))
      await eventually(() => expect(numbers(s)).toEqual([1]))
      await s.drop()
      for (let n = 2; n <= 50; n++) expect(() => s.session.send(frame(n, 1_000))).not.toThrow()
      await sleep(quietMs)
      for (let n = 51; n <= 100; n++) expect(() => s.session.send(frame(n, 1_000))).not.toThrow()
      expect(() => s.session.bufferedAmount()).not.toThrow()
      expect(() => s.session.close(1000, 'after loss')).not.toThrow()
    }, timeout)
  })
}
