import type { IncomingMessage, ServerResponse } from 'node:http'
import { credentialsFromRequest, type ConnectionHandle, type Hub, type Session } from '@tidings/core'
import { type EdgeGuard, type EdgeOptions, resolveEdgeGuard } from './edge.js'
import { header, positiveOption, requestTarget, secretMatches, sendError, sendNoContent, sendRefusal } from './http.js'

/*
 * The session registry of the two HTTP transports (SSE, long-poll): routing a request to a
 * session, the 404 / 403 / 503 answers, and opening a session with the hub.
 */

export const SHUTTING_DOWN = 'server is shutting down'
export const AUTH_TIMED_OUT = 'authentication timed out'

/** What a session transport tells its registry. */
export interface RegistryOptions {
  /**
   * The edge guard (origins, client address, per-address limits), or options to make one. Share
   * one guard between every transport of a server so the per-address limits hold across them.
   * Default: a guard of this transport with the defaults.
   */
  readonly edge?: EdgeGuard | EdgeOptions
  /** How long the hub (its authenticator) may take to accept an opening session; then 503 `RT_001`. Default 10 000 ms. */
  readonly handshakeTimeoutMs?: number
  /** The stage a failing request handler is reported under (`hub.report`, so `onError` and the logger hear of it). Default `http.session`. */
  readonly stage?: string
}

/** The options the two HTTP session transports (SSE, long-poll) have in common. */
export interface HttpSessionTransportOptions {
  /** How long the hub (the authenticator) may take to accept an opening request; then 503 `RT_001`. Default 10 000 ms. */
  readonly handshakeTimeoutMs?: number
  /** Deepest nesting of a frame in a `POST` body (one more for a batch array); deeper is 400 `RT_007`. Default the hub's `limits.maxDepth` (32). */
  readonly maxDepth?: number
  /**
   * The edge guard (origins, client address, per-address limits on opening sessions), or options
   * to make one. Default: a guard of this transport with the defaults (same-origin only, 100 open
   * and 100 new sessions per address per minute, `X-Forwarded-For` not believed).
   */
  readonly edge?: EdgeGuard | EdgeOptions
  /**
   * Largest `POST` body. Default 1 MiB or two of the hub's `maxMessageSize`, whichever is more. A
   * body must arrive within `handshakeTimeoutMs` (else 408 and the connection closed), and one
   * address may send at most the edge guard's `maxBodiesInFlightPerIp` at once (429).
   */
  readonly maxBodyBytes?: number
}

/** An HTTP session transport (SSE, long-poll) as the server mounts it. */
export interface HttpSessionTransport {
  /** Serves the transport's requests; resolves false (doing nothing) for other requests. */
  handle(req: IncomingMessage, res: ServerResponse): Promise<boolean>
  /** Closes every session, ends every response, clears every timer. */
  close(): Promise<void>
  /** Open sessions. */
  readonly sessions: number
}

/** What the registry needs of an HTTP transport's session (SSE, long-poll), besides being a Session. */
export interface RegisteredSession extends Session {
  readonly id: string
  readonly secret: string
  /** Set once the hub accepted the session. */
  handle: ConnectionHandle | undefined
  /** Set once the session is closed (either side), with how. */
  closedWith: { readonly code: number; readonly reason: string } | undefined
  /** The opening request's response while the hub decides; cleared by whoever answers it. */
  opening: ServerResponse | undefined
}

/** The route a request takes under a session transport's path. */
export interface SessionRoute {
  /** `OPTIONS` is a CORS preflight, answered by `serve` itself. */
  readonly method: string
  /** Undefined for the opening request, else the session the request names. */
  readonly sessionId: string | undefined
  readonly url: string
  readonly query: URLSearchParams
}

/**
 * The sessions of one HTTP transport by id, and the request handling every such transport
 * shares: which route a request takes; the origin check, CORS headers and preflights; 503 while
 * closing and 500 on a failure; the 404 / 403 answers for an unknown session or a wrong secret;
 * and the opening of a session with the hub (admitted by the edge guard's per-address limits,
 * registered while the hub decides within `handshakeTimeoutMs`, a refusal answered on the
 * opening request, the address's slot given back when the session is forgotten).
 */
export class SessionRegistry<S extends RegisteredSession> {
  private readonly map = new Map<string, S>()
  /** Each admitted session's `release` of its per-address slot, called once when it is forgotten. */
  private readonly admissions = new Map<S, () => void>()
  private closing = false
  readonly edge: EdgeGuard
  readonly handshakeTimeoutMs: number
  private readonly stage: string

  constructor(
    private readonly hub: Hub,
    /** The transport's path, e.g. `/realtime/sse`. */
    readonly path: string,
    options: RegistryOptions = {},
  ) {
    this.edge = resolveEdgeGuard(options.edge)
    this.handshakeTimeoutMs = positiveOption(options.handshakeTimeoutMs, 10_000, 'handshakeTimeoutMs')
    this.stage = options.stage ?? 'http.session'
  }

  /** Sessions not closed yet. */
  get open(): number {
    let n = 0
    for (const s of this.map.values()) if (!s.closedWith) n++
    return n
  }

  get(id: string): S | undefined {
    return this.map.get(id)
  }

  /**
   * Opening is `openMethod` on the path; a session's requests are `<path>/<id>` with one of
   * `sessionMethods`; `OPTIONS` on either is a CORS preflight. Null when the request is not for
   * this transport.
   */
  route(req: IncomingMessage, openMethod: string, sessionMethods: readonly string[]): SessionRoute | null {
    const { path, url, query } = requestTarget(req)
    const method = req.method ?? 'GET'
    if (path === this.path) return method === openMethod || method === 'OPTIONS' ? { method, sessionId: undefined, url, query } : null
    if (!path.startsWith(`${this.path}/`) || !(method === 'OPTIONS' || sessionMethods.includes(method))) return null
    const sessionId = path.slice(this.path.length + 1)
    if (sessionId === '' || sessionId.includes('/')) return null
    return { method, sessionId, url, query }
  }

  /**
   * Handles one request, and never throws or rejects: a refused `Origin` gets 403 `RT_003`; an
   * allowed cross origin gets the CORS headers on whatever answers it, and a preflight
   * (`OPTIONS`) 204; 503 while the transport closes; 500 (or an ended response) when the handler
   * fails, the failure reported to the hub (`hub.report`, under `stage`).
   */
  async serve(req: IncomingMessage, res: ServerResponse, handler: () => unknown): Promise<void> {
    try {
      // An address the allow and deny lists refuse is told so, before its origin is looked at.
      if (!this.edge.addressAllowed(this.edge.clientIp(req))) return sendError(res, 403, 'RT_003', 'address not allowed')
      if (!this.edge.originAllowed(req)) {
        const origin = (header(req, 'origin') ?? '').slice(0, 200)
        return sendError(res, 403, 'RT_003', `origin ${origin} is not allowed (the server's allowedOrigins does not list it)`)
      }
      const cors = this.edge.corsHeaders(req)
      if (cors) for (const [name, value] of Object.entries(cors)) res.setHeader(name, value)
      if (req.method === 'OPTIONS') return sendNoContent(res)
      if (this.closing) return sendError(res, 503, 'RT_001', SHUTTING_DOWN)
      await handler()
    } catch (err) {
      try {
        this.hub.report(err, this.stage)
      } catch {
        // an error listener or logger that throws must not keep the request unanswered
      }
      try {
        if (!res.headersSent) sendError(res, 500, 'RT_001', 'internal error')
        else if (!res.writableEnded) res.end()
      } catch {
        res.destroy()
      }
    }
  }

  /**
   * The session a request names, if it exists, the hub accepted it and the request carries its
   * secret (header `x-tidings-secret`, never the URL);
   * else the request is answered (404 `RT_001`, 403 `RT_003`) and the result is undefined. A
   * closed session counts as unknown unless `closedToo`.
   */
  authorized(req: IncomingMessage, res: ServerResponse, id: string, closedToo = false): (S & { handle: ConnectionHandle }) | undefined {
    const session = this.map.get(id)
    if (!session?.handle || (session.closedWith && !closedToo)) {
      sendError(res, 404, 'RT_001', 'unknown or expired session')
      return undefined
    }
    if (!secretMatches(req, session.secret)) {
      sendError(res, 403, 'RT_003', 'wrong or missing session secret')
      return undefined
    }
    return session as S & { handle: ConnectionHandle }
  }

  /**
   * Opens a new session (its `opening` set): the edge guard admits it for the client's address
   * (else 429 `RT_006` with `Retry-After`, before the hub hears of it), it is registered, and
   * the hub decides within `handshakeTimeoutMs`. `accepted`: the handle is set and `opening`
   * cleared, for the caller to answer. `refused`: answered on the opening request (429, the
   * hub's refusal, or 503 `RT_001` when the hub did not decide in time — an acceptance that
   * comes later is closed at once) and unregistered. `closing`: the transport closed meanwhile,
   * the hub was told.
   */
  async connect(session: S, url: string, req: IncomingMessage): Promise<'accepted' | 'refused' | 'closing'> {
    const admission = this.edge.admit(this.edge.clientIp(req))
    if (!admission.ok) {
      if (session.opening) sendError(session.opening, 429, 'RT_006', admission.message, { 'Retry-After': String(Math.max(1, Math.ceil(admission.retryAfterMs / 1000))) })
      session.opening = undefined
      return 'refused'
    }
    this.map.set(session.id, session)
    this.admissions.set(session, admission.release)
    let connecting: Promise<ConnectionHandle>
    try {
      connecting = this.hub.connect(session, credentialsFromRequest(url, req.headers))
    } catch (err) {
      connecting = Promise.reject(err)
    }
    let timer: ReturnType<typeof setTimeout> | undefined
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.handshakeTimeoutMs)
      timer.unref?.()
    })
    const outcome = await Promise.race([
      connecting.then(
        (handle) => ({ handle }),
        (err: unknown) => ({ err }),
      ),
      deadline,
    ])
    clearTimeout(timer)
    if (outcome === 'timeout') {
      // The session is dead to us: whatever the hub sends it is ignored, and an acceptance that
      // still comes is closed at once (the hub's connection is not leaked).
      session.closedWith ??= { code: 4001, reason: AUTH_TIMED_OUT }
      this.forget(session)
      if (session.opening) {
        sendError(session.opening, 503, 'RT_001', `${AUTH_TIMED_OUT}: the server could not authenticate the request within ${this.handshakeTimeoutMs} ms; try again later`, { 'Retry-After': '1' })
      }
      session.opening = undefined
      connecting.then(
        (handle) => handle.closed(4001, AUTH_TIMED_OUT),
        () => {},
      )
      return 'refused'
    }
    if ('err' in outcome) {
      this.forget(session)
      if (session.opening) sendRefusal(session.opening, outcome.err, session.closedWith?.code)
      session.opening = undefined
      return 'refused'
    }
    const handle = outcome.handle
    session.handle = handle
    if (!session.opening) {
      handle.closed(1001, SHUTTING_DOWN)
      return 'closing'
    }
    session.opening = undefined
    return 'accepted'
  }

  /** Drops a session from the registry (if it is still the one under its id) and gives back its address's slot. */
  forget(session: S): void {
    if (this.map.get(session.id) === session) this.map.delete(session.id)
    const release = this.admissions.get(session)
    if (release) {
      this.admissions.delete(session)
      release()
    }
  }

  /** The transport closes: new requests get 503, every session is ended with `end`, the registry empties. */
  close(end: (session: S) => void): void {
    this.closing = true
    for (const s of [...this.map.values()]) {
      try {
        end(s)
      } catch {
        // one session failing to end must not keep the others open
      }
    }
    this.map.clear()
    for (const release of this.admissions.values()) release()
    this.admissions.clear()
  }

  get isClosing(): boolean {
    return this.closing
  }
}
