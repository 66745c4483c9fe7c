import type { AsyncMessageStore } from '@tidings/core'
import type { Kysely } from 'kysely'

/**
 * What every SQL message store is besides the core port (PostgreSQL, PGlite, SQLite alike): its
 * Kysely, readiness, figures, a reset, the retention sweep (its result per dialect) and a close.
 */
export interface DatabaseStore<Sweep> extends AsyncMessageStore {
  readonly db: Kysely<any>
  /** Resolves once the tables exist (and, on SQLite, the pragmas are set). */
  readonly ready: Promise<void>
  /** Channel logs held, bytes of retained messages (sizes measured at append) and messages retained. */
  stats(): Promise<{ channels: number; bytes: number; messages: number }>
  /** Loses every channel's history (messages, channels, idempotency keys, receipts): every epoch changes. Cursors stay, in their earlier epoch. */
  reset(): Promise<void>
  /** Retention work that is not done per append: age, expired idempotency keys (and archival where there is one). */
  sweep(now?: number): Promise<Sweep>
  /** Stops the sweep, waits for the work in flight, then lets go of the connection the store opened (never the app's). */
  close(): Promise<void>
}

/** What a store's lifecycle needs: its sweep, the work it has in flight, and how to let go of its database. */
export interface LifecycleOptions {
  /** How often the background sweep runs (ms); 0, less or false: never. Default 60,000. */
  readonly intervalMs: number | false | undefined
  readonly sweep: () => Promise<unknown>
  readonly onError: (error: unknown) => void
  /** Work the store started (batches, purges): close waits for all of it. */
  readonly inFlight: ReadonlySet<Promise<unknown>>
  readonly ready: Promise<unknown>
  /** Let go of the database (the connection the store opened, not the app's). */
  readonly release: () => Promise<void>
}

export interface Lifecycle {
  /** True from the call of `close()` on: the store starts no new work. */
  readonly closed: boolean
  /** Stops the sweep, waits for the work in flight and the migrations, then releases; once. */
  close(): Promise<void>
}

/**
 * The background sweep and the close of a SQL store (PostgreSQL, PGlite, SQLite alike): one sweep
 * at a time on an unref'd timer, errors to `onError`, and a close that waits for what is in flight.
 */
export function storeLifecycle(o: LifecycleOptions): Lifecycle {
  let closed = false
  let closing: Promise<void> | undefined
  let sweeping = false
  const interval = o.intervalMs === undefined ? 60_000 : o.intervalMs
  const timer =
    interval !== false && interval > 0
      ? setInterval(() => {
          if (sweeping || closed) return
          sweeping = true
          o.sweep()
            .catch(o.onError)
            .finally(() => {
              sweeping = false
            })
        }, interval)
      : undefined
  timer?.unref?.()
  return {
    get closed() {
      return closed
    },
    close() {
      closing ??= (async () => {
        closed = true
        if (timer) clearInterval(timer)
        while (o.inFlight.size > 0) await Promise.allSettled([...o.inFlight])
        await o.ready.catch(() => {})
        await o.release()
      })()
      return closing
    },
  }
}
