/** Listener signatures by event name. */
export type EventMap<E> = { [K in keyof E]: (...args: any[]) => void }

type AnyListener = (...args: unknown[]) => void

/**
 * A small typed event emitter whose `emit` never throws: a listener that throws is reported to
 * `onListenerError` (by default the emitter's own `error` listeners) and the other listeners
 * still run.
 */
export class Emitter<E extends EventMap<E>> {
  private listeners = new Map<string, AnyListener[]>()

  /** Add a listener; returns a function that removes it. */
  on<K extends keyof E & string>(event: K, listener: E[K]): () => void {
    const list = this.listeners.get(event)
    if (list) list.push(listener as AnyListener)
    else this.listeners.set(event, [listener as AnyListener])
    return () => this.off(event, listener)
  }

  /** Add a listener that runs once. */
  once<K extends keyof E & string>(event: K, listener: E[K]): () => void {
    const wrapper = ((...args: unknown[]) => {
      off()
      ;(listener as AnyListener)(...args)
    }) as unknown as E[K]
    const off = this.on(event, wrapper)
    return off
  }

  off<K extends keyof E & string>(event: K, listener?: E[K]): void {
    if (listener === undefined) {
      this.listeners.delete(event)
      return
    }
    const list = this.listeners.get(event)
    if (!list) return
    const i = list.indexOf(listener as AnyListener)
    if (i >= 0) list.splice(i, 1)
    if (list.length === 0) this.listeners.delete(event)
  }

  /** Remove every listener of every event. */
  removeAll(): void {
    this.listeners.clear()
  }

  listenerCount(event: keyof E & string): number {
    return this.listeners.get(event)?.length ?? 0
  }

  /** Call every listener of an event; true when there was at least one. Never throws. */
  protected emit<K extends keyof E & string>(event: K, ...args: Parameters<E[K]>): boolean {
    return this.emitDynamic(event, args)
  }

  /** `emit` for event names only known at run time (channel events named by the publisher). */
  protected emitDynamic(event: string, args: readonly unknown[]): boolean {
    const list = this.listeners.get(event)
    if (!list || list.length === 0) return false
    for (const listener of [...list]) {
      try {
        listener(...args)
      } catch (err) {
        this.listenerFailed(err, event)
      }
    }
    return true
  }

  /** A listener threw. Reported to the `error` listeners, unless it was one of them. */
  protected listenerFailed(err: unknown, event: string): void {
    if (event === 'error') return
    this.emitDynamic('error', [err])
  }
}
