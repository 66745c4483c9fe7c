/**
 * The methods of the asynchronous ports (`MessageStore`, `Broker`, `PresenceStore`): the ones
 * `delayed` makes late unless told otherwise. `Session` is not among them: its methods are
 * synchronous by contract.
 */
export const PORT_METHODS: ReadonlySet<PropertyKey> = new Set([
  // MessageStore
  'append',
  'read',
  'position',
  'cursor',
  'commit',
  'cursors',
  'revise',
  'search',
  'channelsOf',
  // Broker
  'start',
  'publish',
  'subscribe',
  'unsubscribe',
  // PresenceStore
  'join',
  'update',
  'leave',
  'members',
  'entries',
  'lastSeen',
  'removeNode',
  'heartbeat',
  'deadNodes',
  'liveNodes',
  'hit', // LimitStore
  // all of them
  'close',
])

export interface DelayedOptions {
  /** The methods to make late. Default: every port method of the store, broker and presence ports (`PORT_METHODS`). */
  readonly methods?: Iterable<PropertyKey> | undefined
}

/**
 * A view of a port object (a store, a broker, a presence store) whose port methods each answer
 * asynchronously, `ms` milliseconds late, as a port across a network does: run a port's suite
 * (or a hub) over it to check that nothing relies on synchronous answers. The call reaches the
 * port after the delay, so calls made in an order arrive in that order (timers of one duration
 * fire in the order they were set). Anything else (`reset`, `stats`, `size`, …) passes straight
 * through, as do callbacks given to the port (a broker's `deliver`). A thrown error becomes a
 * rejection.
 *
 *   storeConformance('memory, delayed', () => delayed(createMemoryStore(), 2), { reset: (s) => s.reset() })
 *   brokerConformance('memory bus, delayed', (n) => { const bus = createMemoryBus(); return Array.from({ length: n }, () => delayed(bus.broker(), 2)) })
 */
export function delayed<P extends object>(port: P, ms: number, options: DelayedOptions = {}): P {
  const methods: ReadonlySet<PropertyKey> = options.methods ? new Set(options.methods) : PORT_METHODS
  const late = () => new Promise<void>((resolve) => setTimeout(resolve, ms))
  return new Proxy(port, {
    get(target, key) {
      const value: unknown = Reflect.get(target, key, target)
      if (typeof value !== 'function') return value
      if (!methods.has(key)) return (value as (...args: unknown[]) => unknown).bind(target)
      return async (...args: unknown[]) => {
        await late()
        return (value as (...a: unknown[]) => unknown).apply(target, args)
      }
    },
  })
}
