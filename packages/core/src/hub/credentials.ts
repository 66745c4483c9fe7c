import type { Clock, TimerHandle } from '../ports/clock.js'
import type { Connection } from './connection.js'

/** What the credential watch needs from the hub. */
export interface CredentialHost {
  readonly clock: Clock
  readonly refreshBeforeMs: number
  readonly graceMs: number
  /** Tell the client its credentials expire (`auth:expiring`). */
  warn(conn: Connection, expiresAt: number, closesAt: number): void
  /** No refresh came in time: end the connection's subscriptions and close it (4001). */
  expire(conn: Connection): void
}

/** Timers longer than this fire at once in some runtimes (a 32-bit signed delay). */
const LONGEST_TIMER = 2 ** 31 - 1

/**
 * Credentials that expire on open connections. A connection whose identity has an `expiresAt`
 * is warned `refreshBeforeMs` before it, and closed `graceMs` after it unless an `auth` frame
 * brought fresh credentials (which calls `watch` again). One timer per expiring connection, held
 * here rather than on the connection, so connections without an expiry cost nothing.
 */
export class CredentialWatch {
  private readonly timers = new Map<Connection, TimerHandle>()

  constructor(private readonly host: CredentialHost) {}

  /** Start (or restart, after a refresh) watching a connection whose credentials expire at `expiresAt`. */
  watch(conn: Connection, expiresAt: number): void {
    this.forget(conn)
    const { refreshBeforeMs, graceMs } = this.host
    const closesAt = expiresAt + graceMs
    // Credentials that expire sooner than `refreshBeforeMs` (a short-lived token, or a refresh
    // that did not move the expiry far) are warned halfway to their expiry, not at once: a
    // warning right behind the `authenticated` answer would be a refresh loop.
    const now = this.host.clock.now()
    const warnAt = expiresAt - refreshBeforeMs > now ? expiresAt - refreshBeforeMs : now + Math.max(0, (expiresAt - now) / 2)
    this.at(conn, warnAt, () => {
      this.host.warn(conn, expiresAt, closesAt)
      this.at(conn, closesAt, () => {
        this.timers.delete(conn)
        this.host.expire(conn)
      })
    })
  }

  forget(conn: Connection): void {
    const timer = this.timers.get(conn)
    if (timer === undefined) return
    this.host.clock.clearTimeout(timer)
    this.timers.delete(conn)
  }

  /** The connection's credentials are past their `expiresAt` (it is in its grace period). */
  expired(conn: Connection): boolean {
    const at = conn.identity.expiresAt
    return at !== undefined && this.host.clock.now() >= at
  }

  get size(): number {
    return this.timers.size
  }

  /** Run `fn` at time `when` (now if it has passed), through as many timers as the delay needs. */
  private at(conn: Connection, when: number, fn: () => void): void {
    const delay = when - this.host.clock.now()
    if (delay <= 0) return fn()
    const step = Math.min(delay, LONGEST_TIMER)
    this.timers.set(
      conn,
      this.host.clock.setTimeout(() => (step < delay ? this.at(conn, when, fn) : fn()), step),
    )
  }
}
