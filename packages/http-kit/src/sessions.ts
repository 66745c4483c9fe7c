import type { IncomingMessage, ServerResponse } from 'node:http'
import { credentialsFromRequest, type ConnectionHandle, type Hub, type Session } from '@tidings/core'
import { requestTarget, secretMatches, sendError, sendRefusal } from './index.js'

export const SHUTTING_DOWN = 'server is shutting down'

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
  readonly method: string
  /** Undefined for the opening request, else the session the request names. */
  readonly sessionId: string | undefined
  readonly url: string
  readonly query: URLSearchParams
}

/**
 * The sessions of one HTTP transport by id, and the request handling every such transport
 * shares: which route a request takes, 503 while closing and 500 on a failure, the 404 / 403
 * answers for an unknown session or a wrong secret, and the opening of a session with the hub
 * (registered while the hub decides, a refusal answered on the opening request).
 */
export class SessionRegistry<S extends RegisteredSession> {
  private readonly map = new Map<string, S>()
  private closing = false

  constructor(
    private readonly hub: Hub,
    /** The transport's path, e.g. `/realtime/sse`. */
    readonly path: string,
  ) {}

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
   * `sessionMethods`. Null when the request is not for this transport.
   */
  route(req: IncomingMessage, openMethod: string, sessionMethods: readonly string[]): SessionRoute | null {
    const { path, url, query } = requestTarget(req)
    const method = req.method ?? 'GET'
    if (path === this.path) return method === openMethod ? { method, sessionId: undefined, url, query } : null
    if (!path.startsWith(`${this.path}/`) || !sessionMethods.includes(method)) return null
    const sessionId = path.slice(this.path.length + 1)
    if (sessionId === '' || sessionId.includes('/')) return null
    return { method, sessionId, url, query }
  }

  /** Handles one request: 503 while the transport closes, 500 (or an ended response) when the handler fails. */
  async serve(res: ServerResponse, handler: () => unknown): Promise<void> {
    try {
      if (this.closing) sendError(res, 503, 'RT_001', SHUTTING_DOWN)
      else await handler()
    } catch {
      if (!res.headersSent) sendError(res, 500, 'RT_001', 'internal error')
      else if (!res.writableEnded) res.end()
    }
  }

  /**
   * The session a request names, if it exists, the hub accepted it and the request carries its
   * secret; else the request is answered (404 `RT_001`, 403 `RT_003`) and the result is undefined.
   * A closed session counts as unknown unless `closedToo`.
   */
  authorized(req: IncomingMessage, res: ServerResponse, id: string, closedToo = false): (S & { handle: ConnectionHandle }) | undefined {
    const session = this.map.get(id)
    if (!session?.handle || (session.closedWith && !closedToo)) {
      sendError(res, 404, 'RT_001', 'unknown session')
      return undefined
    }
    if (!secretMatches(req, session.secret)) {
      sendError(res, 403, 'RT_003', 'wrong or missing session secret')
      return undefined
    }
    return session as S & { handle: ConnectionHandle }
  }

  /**
   * Registers a new session (its `opening` set) and lets the hub decide. `accepted`: the handle
   * is set and `opening` cleared, for the caller to answer. `refused`: answered on the opening
   * request and unregistered. `closing`: the transport closed meanwhile, the hub was told.
   */
  async connect(session: S, url: string, req: IncomingMessage): Promise<'accepted' | 'refused' | 'closing'> {
    this.map.set(session.id, session)
    let handle: ConnectionHandle
    try {
      handle = await this.hub.connect(session, credentialsFromRequest(url, req.headers))
    } catch (err) {
      this.map.delete(session.id)
      if (session.opening) sendRefusal(session.opening, err, session.closedWith?.code)
      return 'refused'
    }
    session.handle = handle
    if (!session.opening) {
      handle.closed(1001, SHUTTING_DOWN)
      return 'closing'
    }
    session.opening = undefined
    return 'accepted'
  }

  /** Drops a session from the registry (if it is still the one under its id). */
  forget(session: S): void {
    if (this.map.get(session.id) === session) this.map.delete(session.id)
  }

  /** The transport closes: new requests get 503, every session is ended with `end`, the registry empties. */
  close(end: (session: S) => void): void {
    this.closing = true
    for (const s of [...this.map.values()]) end(s)
    this.map.clear()
  }

  get isClosing(): boolean {
    return this.closing
  }
}
