import { type ClientFrame, RealtimeError, type ServerFrame, type ServerFrameOf } from '@tidings/protocol'
import type { RealtimeOptions } from './options.js'
import type { Pending, Requests } from './requests.js'
import type { Credentials } from './transports/types.js'

export interface AuthInfo {
  userId: string | undefined
  expiresAt: number | undefined
}

/** What credentials need from the client. */
export interface CredentialsHost {
  /** An open connection in state `connected`. */
  ready(): boolean
  /** The connection's user, from its `connected` frame. */
  userId(): string | undefined
  /** The hub said when the credentials expire. */
  expires(expiresAt: number | undefined): void
  /** The hub accepted refreshed credentials. */
  authenticated(info: AuthInfo): void
  reportError(error: RealtimeError): void
}

/**
 * The credentials a connection is opened with (a token, from the `auth` option or function, and
 * an API key), and their refresh on the open connection (`auth` frames, one refresh at a time).
 */
export class CredentialSource {
  /** A refresh in flight (one at a time). */
  private refreshing: Promise<AuthInfo> | undefined
  /** The token the hub refused last (4001 / RT_002): not offered again. */
  private refusedToken: string | undefined

  constructor(
    private readonly options: Pick<RealtimeOptions, 'auth' | 'apiKey'>,
    private readonly requests: Pick<Requests, 'id' | 'dispatch'>,
    private readonly host: CredentialsHost,
  ) {}

  /** Only an `auth` function can give a fresh token. */
  get refreshable(): boolean {
    return typeof this.options.auth === 'function'
  }

  /** The credentials to open a connection with; throws when the `auth` function fails or repeats a refused token. */
  async get(): Promise<Credentials> {
    const auth = this.options.auth
    const token = typeof auth === 'function' ? await auth() : auth
    if (token && typeof auth === 'function' && token === this.refusedToken) {
      // The function gave the token the hub just refused: connecting with it would be refused again.
      throw new Error('it returned the token the hub refused last time')
    }
    return { token: token || undefined, apiKey: this.options.apiKey }
  }

  /** The hub refused this token (or closed with 4001 on it). */
  refused(token: string | undefined): void {
    this.refusedToken = token
  }

  /** The hub accepted a connection. */
  accepted(): void {
    this.refusedToken = undefined
  }

  /** `Realtime.reauthenticate`: a given token, or one refresh from the `auth` function at a time. */
  reauthenticate(token?: string): Promise<AuthInfo> {
    if (token === undefined && this.refreshing) return this.refreshing
    const run = this.refresh(token).finally(() => {
      if (this.refreshing === run) this.refreshing = undefined
    })
    if (token === undefined) this.refreshing = run
    return run
  }

  /** The hub says the credentials are about to expire: refresh them, or say why that is not possible. */
  expiring(frame: ServerFrameOf<'auth:expiring'>): void {
    this.host.expires(frame.expiresAt)
    const inMs = Math.max(0, frame.closesAt - Date.now())
    if (typeof this.options.auth !== 'function') {
      this.host.reportError(new RealtimeError('RT_002', `credentials expire and cannot be refreshed (the auth option is not a function): the connection closes in ${inMs} ms`, { expiresAt: frame.expiresAt, closesAt: frame.closesAt }))
      return
    }
    this.reauthenticate().catch((err: unknown) => {
      const e = err instanceof RealtimeError ? err : new RealtimeError('RT_002', String(err))
      this.host.reportError(new RealtimeError(e.code, `could not refresh credentials: ${e.message}`, { ...e.details, closesAt: frame.closesAt }))
    })
  }

  private async refresh(given?: string): Promise<AuthInfo> {
    const auth = this.options.auth
    let token = given
    if (token === undefined) {
      if (typeof auth !== 'function') throw new RealtimeError('RT_002', 'cannot refresh credentials: the auth option is not a function (pass a token to reauthenticate(), or a function as auth)')
      try {
        token = await auth()
      } catch (err) {
        throw new RealtimeError('RT_002', `auth function failed: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
    if (!token) throw new RealtimeError('RT_002', 'the auth function gave no token')
    if (!this.host.ready()) throw new RealtimeError('RT_001', 'not connected: credentials are sent on the next connect')
    const id = this.requests.id()
    let pending!: Pending
    const answer = new Promise<ServerFrame>((resolve, reject) => {
      pending = { id, kind: 'auth', frame: { type: 'auth', id, token: token! } as ClientFrame, resolve, reject, retries: 0 }
    })
    this.requests.dispatch(pending)
    const frame = (await answer) as ServerFrameOf<'authenticated'>
    this.host.expires(frame.expiresAt)
    const info = { userId: frame.userId ?? this.host.userId(), expiresAt: frame.expiresAt }
    this.host.authenticated(info)
    return info
  }
}
