import type { MessageStore } from '../ports/store.js'

/** The port's methods, the ones `delayed` makes late. */
const PORT_METHODS: ReadonlySet<PropertyKey> = new Set(['append', 'read', 'position', 'cursor', 'commit', 'cursors', 'close'])

/**
 * A view of a store whose port methods (`append`, `read`, `position`, `cursor`, `commit`,
 * `cursors`, `close`) each answer asynchronously, `ms` milliseconds late, as a store across a
 * network does: run a port's suite over it to check that nothing relies on synchronous answers.
 * The call reaches the store after the delay, so calls made in an order arrive in that order.
 * Anything else (`reset`, `stats`, `size`) passes straight through. A thrown error becomes a
 * rejection.
 *
 *   storeConformance('memory, delayed', () => delayed(createMemoryStore(), 2), { reset: (s) => s.reset() })
 */
export function delayed<S extends MessageStore>(store: S, ms: number): S {
  const late = () => new Promise<void>((resolve) => setTimeout(resolve, ms))
  return new Proxy(store, {
    get(target, key) {
      const value: unknown = Reflect.get(target, key, target)
      if (typeof value !== 'function') return value
      if (!PORT_METHODS.has(key)) return (value as (...args: unknown[]) => unknown).bind(target)
      return async (...args: unknown[]) => {
        await late()
        return (value as (...a: unknown[]) => unknown).apply(target, args)
      }
    },
  })
}
