import { type ClientFrameOf, CloseCode, RealtimeError } from '@tidings/protocol'
import type { Identity } from '../ports/auth.js'
import type { Clock, TimerHandle } from '../ports/clock.js'
import type { Admission } from './admission.js'
import type { ChannelPatterns } from './channels.js'
import type { Connection } from './connection.js'
import type { Signals } from './events.js'
import type { FanOut } from './fanout.js'
import type { ResolvedHubOptions } from './options.js'
import type { RoomRegistry } from './rooms.js'
import type { SubscriptionService } from './subscriptions.js'

/** What credentials need from the hub. */
export interface CredentialHost {
  readonly clock: Clock
  readonly options: Pick<ResolvedHubOptions, 'authenticate' | 'limits' | 'credentials'>
  readonly patterns: Pick<ChannelPatterns, 'resolve'>
  readonly rooms: Pick<RoomRegistry, 'rooms'>
  /** Decides subscriptions again and ends those no longer allowed. */
  readonly subscriptions: Pick<SubscriptionService, 'recheckSoon' | 'removeSubscription'>
  /** Answers and warns the client (`authenticated`, `auth:expiring`). */
  readonly fanout: Pick<FanOut, 'sendFrame'>
  /** Closes a connection whose credentials expired (4001). */
  readonly admission: Pick<Admission, 'closeConnection'>
  readonly signals: Signals
}

/** Timers longer than this fire at once in some runtimes (a 32-bit signed delay). */
const LONGEST_TIMER = 2 ** 31 - 1

/**
 * Credentials on open connections: their expiry and their refresh. A connection whose identity
 * has an `expiresAt` is warned `credentials.refreshBeforeMs` before it (`auth:expiring`), and
 * closed `credentials.graceMs` after it (4001, its subscriptions ended) unless an `auth` frame
 * brought fresh credentials (`onAuth`, which watches again). One timer per expiring connection,
 * held here rather than on the connection, so connections without an expiry cost nothing.
 */
export class CredentialWatch {
  private readonly timers = new Map<Connection, TimerHandle>()

  constructor(private readonly host: CredentialHost) {}

  /** Start (or restart, after a refresh) watching a connection whose credentials expire at `expiresAt`. */
  watch(conn: Connection, expiresAt: number): void {
    this.forget(conn)
    const { refreshBeforeMs, graceMs } = this.host.options.credentials
    const closesAt = expiresAt + graceMs
    // Credentials that expire sooner than `refreshBeforeMs` (a short-lived token, or a refresh
    // that did not move the expiry far) are warned halfway to their expiry, not at once: a
    // warning right behind the `authenticated` answer would be a refresh loop.
    const now = this.host.clock.now()
    const warnAt = expiresAt - refreshBeforeMs > now ? expiresAt - refreshBeforeMs : now + Math.max(0, (expiresAt - now) / 2)
    this.at(conn, warnAt, () => {
      this.host.fanout.sendFrame(conn, { type: 'auth:expiring', expiresAt, closesAt })
      this.at(conn, closesAt, () => {
        this.timers.delete(conn)
        this.expire(conn)
      })
    })
  }

  /** No refresh came in time: end the connection's subscriptions and close it (4001). */
  private expire(conn: Connection): void {
    if (conn.ended) return
    for (const sub of [...conn.subscriptions.values()]) this.host.subscriptions.removeSubscription(sub, 'credentials expired', true)
    this.host.admission.closeConnection(conn, CloseCode.AuthenticationFailed, 'credentials expired')
  }

  /**
   * An `auth` frame: fresh credentials for the same user. The connection's identity, per-identity
   * limits and expiry follow them, and every subscription is decided again (those no longer
   * allowed end with reason `'revoked'`).
   */
  async onAuth(conn: Connection, frame: ClientFrameOf<'auth'>): Promise<void> {
    const authenticate = this.host.options.authenticate
    let identity: Identity | null | undefined = null
    if (authenticate) {
      try {
        identity = await authenticate({ token: frame.token, headers: conn.session.headers, remoteAddress: conn.session.remoteAddress, transport: conn.session.transport })
      } catch {
        identity = null
      }
    }
    if (!identity) throw new RealtimeError('RT_002', 'invalid or expired credentials')
    if (identity.userId !== conn.userId) throw new RealtimeError('RT_002', 'a refreshed token must name the same user')
    if (identity.expiresAt !== undefined && !(identity.expiresAt > this.host.clock.now())) throw new RealtimeError('RT_002', 'the new credentials have already expired')
    if (conn.ended) return
    conn.identity = identity
    conn.recipient = { id: identity.userId, roles: identity.roles ?? [], claims: identity.claims ?? {} }
    // Per-identity limits follow the new identity (a plan may have changed).
    const perConnection = this.host.options.limits.maxSubscriptions
    if (typeof perConnection === 'function') {
      try {
        conn.maxSubscriptions = perConnection(identity, conn.info())
      } catch (err) {
        this.host.signals.report(err, 'limits.maxSubscriptions')
      }
    }
    this.host.fanout.sendFrame(conn, { type: 'authenticated', id: frame.id, userId: identity.userId, expiresAt: identity.expiresAt })
    if (identity.expiresAt !== undefined) this.watch(conn, identity.expiresAt)
    else this.forget(conn)
    // Every subscription is decided again for the new identity; those no longer allowed end
    // (`unsubscribed`, reason 'revoked'), and none of them is replayed into meanwhile.
    this.host.subscriptions.recheckSoon([...conn.subscriptions.values()])
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
