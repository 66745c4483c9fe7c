import { createHub, type Hub } from '../hub/hub.js'
import type { HubOptions } from '../hub/options.js'
import { createManualClock, type ManualClock } from '../memory/clock.js'
import { createMemoryTransport, type MemoryClient, type MemoryConnectOptions, type MemoryTransport } from '../memory/transport.js'
import { silentLogger } from '../ports/logger.js'

export { createManualClock, type ManualClock } from '../memory/clock.js'
export { createMemoryBus, type MemoryBus } from '../memory/broker.js'
export { createMemoryTransport, MemoryClient, type Faults, type MemoryConnectOptions, type MemoryTransport } from '../memory/transport.js'

export interface TestHub extends AsyncDisposable {
  readonly hub: Hub
  readonly clock: ManualClock
  readonly transport: MemoryTransport
  /** Connect an in-memory client: `await t.connect({ userId: 'alice' })`. */
  connect(options?: MemoryConnectOptions): Promise<MemoryClient>
  /** Let everything in flight run: frames, store answers, chains of promises (no clock time passes). */
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
  const hub = createHub({ logger: silentLogger, ...options, clock })
  const transport = createMemoryTransport(hub, { seed: options.seed })
  // A macrotask runs only once the microtask queue is empty, however deep the promise chains.
  const macrotask = (globalThis as { setImmediate?: (fn: () => void) => unknown }).setImmediate
  const turn = () => new Promise<void>((resolve) => (macrotask ? macrotask(resolve) : queueMicrotask(resolve)))
  const settle = async () => {
    for (let i = 0; i < 3; i++) await turn()
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
