import { createHub, type Hub } from '../hub/hub.js'
import type { HubOptions } from '../hub/options.js'
import { createManualClock, type ManualClock } from '../memory/clock.js'
import { createMemoryTransport, type MemoryClient, type MemoryConnectOptions, type MemoryTransport } from '../memory/transport.js'
import { silentLogger } from '../ports/logger.js'
import type { Clock, TimerHandle } from '../ports/clock.js'

export { createManualClock, type ManualClock } from '../memory/clock.js'
export { createMemoryBus, type MemoryBus } from '../memory/broker.js'
export { createMemoryTransport, MemoryClient, type Faults, type MemoryConnectOptions, type MemoryTransport } from '../memory/transport.js'

export interface TestHub extends AsyncDisposable {
  readonly hub: Hub
  readonly clock: ManualClock
  readonly transport: MemoryTransport
  /** Connect an in-memory client: `await t.connect({ userId: 'alice' })`. */
  connect(options?: MemoryConnectOptions): Promise<MemoryClient>
  /**
   * Wait for real work, not a number of turns: loops until no timer is due on the manual clock
   * (due ones are run; no clock time passes), no answer of a port given in the options (store,
   * presence store, broker, authenticator) is outstanding, the hub reports no pending work
   * (`pendingWork(hub)`), and two event-loop turns in a row found nothing to do. Frames between
   * clients and hub, bus deliveries and promise chains all run meanwhile. Pending work that makes
   * no progress for 50 ms is taken to be held by the test (a gated store) and not waited for.
   */
  settle(): Promise<void>
  /** Settle, move the manual clock forward (running due timers), then settle again. */
  advance(ms: number): Promise<void>
  close(): Promise<void>
}

/**
 * A hub on a manual clock with an in-memory transport, for tests of Tidings apps:
 *
 *   await using t = createTestHub()
 *   const alice = await t.connect({ userId: 'alice' })
 *   await alice.subscribe('public:news')
 */
export function createTestHub(options: HubOptions & { seed?: number } = {}): TestHub {
  const clock = (options.clock as ManualClock | undefined) ?? createManualClock()
  const work = trackWork()
  const timers = trackTimers(clock)
  const hub = createHub({
    logger: silentLogger,
    ...options,
    ...(options.store ? { store: work.port(options.store) } : {}),
    ...(options.presenceStore ? { presenceStore: work.port(options.presenceStore) } : {}),
    ...(options.broker ? { broker: work.port(options.broker) } : {}),
    ...(options.authenticate ? { authenticate: work.fn(options.authenticate) } : {}),
    clock: timers.clock,
  })
  const transport = createMemoryTransport(hub, { seed: options.seed })
  const settle = async () => {
    let quiet = 0
    let progress = Date.now()
    let seen = -1
    while (quiet < 2) {
      // A macrotask runs only once the microtask queue is empty, however deep the promise chains.
      await turn()
      if (timers.due()) {
        clock.advance(0)
        quiet = 0
        progress = Date.now()
        continue
      }
      const busy = work.pending() + pendingWork(hub)
      if (busy > 0) {
        const mark = work.settled() * 1_000_003 + busy
        if (mark !== seen) {
          seen = mark
          progress = Date.now()
        }
        // Work that makes no progress for STALL_MS is held on purpose (a test's gate): settle as far as it goes.
        if (Date.now() - progress < STALL_MS) {
          await work.next()
          quiet = 0
          continue
        }
      }
      quiet++
    }
  }
  const close = async () => {
    await hub.close()
  }
  return {
    hub,
    clock,
    transport,
    connect: (o) => transport.connect(o),
    settle,
    async advance(ms) {
      // Frames already sent are handled at the current time, before the clock moves.
      await settle()
      clock.advance(ms)
      await settle()
    },
    close,
    [Symbol.asyncDispose]: close,
  }
}

/** How long `settle()` waits on pending work that makes no progress (held by the test itself) before it returns. */
const STALL_MS = 50

const macrotask = (globalThis as { setImmediate?: (fn: () => void) => unknown }).setImmediate
const turn = () => new Promise<void>((resolve) => (macrotask ? macrotask(resolve) : setTimeout(resolve, 0)))

/**
 * The hook through which a hub reports its pending asynchronous work (in-order frame chains,
 * store and presence calls under way) to the test kit: a method under this symbol answering a
 * count. Internal to the test kit and the hub; not part of the public API.
 */
export const PENDING_WORK: unique symbol = Symbol.for('tidings.pendingWork') as never

/** The hub's pending asynchronous work as it reports it through `PENDING_WORK` (0 when it does not). */
export function pendingWork(hub: Hub): number {
  const probe = (hub as unknown as { [PENDING_WORK]?: () => number })[PENDING_WORK]
  return typeof probe === 'function' ? probe.call(hub) : 0
}

/** Counts outstanding promises answered by wrapped ports and functions. */
function trackWork() {
  const inflight = new Set<Promise<unknown>>()
  let settled = 0
  const track = (value: unknown): unknown => {
    if (typeof (value as { then?: unknown } | null)?.then !== 'function') return value
    const finish = (): void => {
      settled++
      inflight.delete(done)
    }
    const done: Promise<void> = Promise.resolve(value as Promise<unknown>).then(finish, finish)
    inflight.add(done)
    return value
  }
  return {
    pending: () => inflight.size,
    /** Answers settled so far. */
    settled: () => settled,
    /** Resolves when one outstanding answer settles (or after a few ms, whichever is first). */
    next: () => Promise.race([...inflight, new Promise((resolve) => setTimeout(resolve, 5))]),
    fn<F>(f: F): F {
      return ((...args: unknown[]) => track((f as (...a: unknown[]) => unknown)(...args))) as F
    },
    /** A view of a port whose method answers are tracked; synchronous answers stay synchronous. */
    port<P extends object>(port: P): P {
      return new Proxy(port, {
        get(target, key) {
          const value: unknown = Reflect.get(target, key, target)
          if (typeof value !== 'function') return value
          return (...args: unknown[]) => track((value as (...a: unknown[]) => unknown).apply(target, args))
        },
      })
    },
  }
}

/** A view of a clock that knows which of its timers are due (at or before now). */
function trackTimers(clock: ManualClock) {
  const timers = new Map<unknown, number>()
  const view: Clock = {
    now: () => clock.now(),
    setTimeout(fn, ms) {
      const at = clock.now() + Math.max(0, ms)
      const handle: TimerHandle = clock.setTimeout(() => {
        timers.delete(handle)
        fn()
      }, ms)
      timers.set(handle, at)
      return handle
    },
    clearTimeout(handle) {
      timers.delete(handle)
      clock.clearTimeout(handle)
    },
  }
  return {
    clock: new Proxy(clock, {
      get(target, key) {
        if (key === 'setTimeout' || key === 'clearTimeout' || key === 'now') return view[key]
        const value: unknown = Reflect.get(target, key, target)
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      },
    }) as ManualClock,
    due(): boolean {
      const now = clock.now()
      for (const [handle, at] of timers) {
        // A timer cancelled through the manual clock itself (not through this view) is not due.
        if ((handle as { cancelled?: unknown }).cancelled === true) timers.delete(handle)
        else if (at <= now) return true
      }
      return false
    },
  }
}
