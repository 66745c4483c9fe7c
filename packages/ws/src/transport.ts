import { randomBytes } from 'node:crypto'
import type { IncomingMessage, Server } from 'node:http'
import type { Duplex } from 'node:stream'
import { CloseCode, type ConnectionHandle, credentialsFromRequest, type Hub, isRealtimeError, Outbound, wireLength } from '@tidings/core'
import { WebSocketServer } from 'ws'
import { connectedAt, type HandshakeDeadline, watchHandshakes } from './deadline.js'
import { type Negotiated, negotiate, offeredSubprotocols, pathOf, refuseHandshake } from './handshake.js'
import { type ResolvedWsOptions, resolveWsOptions, type WsTransportOptions } from './options.js'
import { type SessionHost, SessionSocket, WsSession } from './session.js'

export interface WsTransport {
  /** Handle an `upgrade` for our path; returns false (and does nothing) for other paths. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean
  /**
   * Listen for `upgrade` on a server (other paths are left to other listeners), and put the
   * handshake deadline (`handshakeTimeoutMs`) on every new connection to it: a socket that has not
   * sent a complete request by then is destroyed. Returns a detach function.
   */
  attach(server: Server): () => void
  /** Stop accepting; close every socket with 1001 `server restarting`; terminate stragglers after the timeout. */
  close(options?: { timeoutMs?: number }): Promise<void>
  /** Open sockets (including those the hub is still authenticating). */
  readonly connections: number
}

/** Creates the WebSocket transport of a hub (ws in noServer mode). */
export function createWsTransport(hub: Hub, options: WsTransportOptions = {}): WsTransport {
  return new WsTransportImpl(hub, resolveWsOptions(options, hub.limits.maxMessageSize))
}

const GOING_AWAY = 1001
/** The negotiation of an upgrade, kept on its request for ws's `handleProtocols` callback. */
const kNegotiated = Symbol('tidings.ws.negotiated')
type Negotiating = { [kNegotiated]?: Negotiated }
const RESTARTING = 'server restarting'

class WsTransportImpl implements WsTransport, SessionHost {
  readonly deflateThreshold: number
  private readonly wss: WebSocketServer
  get closeTimeoutMs(): number {
    return this.options.closeTimeoutMs
  }
  get keepHeaders(): boolean {
    // Kept unless the hub says no authenticator will read them (a hub that does not say: kept).
    return this.hub.authenticates !== false
  }
  private readonly sessions = new Set<WsSession>()
  private pingTimer: NodeJS.Timeout | undefined = undefined
  pingPayload: Buffer = randomBytes(8)
  private closing: Promise<void> | undefined = undefined
  private whenEmpty: (() => void) | undefined = undefined
  /** Write batching: a tick counter bumped at the end of each microtask that wrote, and the sockets corked in it. */
  private tick = 0
  private tickScheduled = false
  private corked: WsSession[] = []

  constructor(
    private readonly hub: Hub,
    private readonly options: ResolvedWsOptions,
  ) {
    const deflate = options.deflate
    this.deflateThreshold = deflate === false ? Number.POSITIVE_INFINITY : deflate.threshold
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      WebSocket: SessionSocket,
      maxPayload: options.maxPayload,
      perMessageDeflate: deflate === false ? false : { ...deflate },
      skipUTF8Validation: false,
      // The upgrade was already negotiated (and refused when nothing fits) before ws saw it.
      handleProtocols: (_protocols: Set<string>, req: IncomingMessage) => (req as IncomingMessage & Negotiating)[kNegotiated]?.protocol ?? false,
      // ws's closing-handshake timeout (not in @types/ws 8.18).
      ...({ closeTimeout: options.closeTimeoutMs } as object),
    })
    // ws emits server errors only in server mode; keep a listener so none can crash the process.
    this.wss.on('error', (err) => this.report(err, 'ws.server'))
  }

  get connections(): number {
    return this.sessions.size
  }

  // ---------------------------------------------------------------- upgrades

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const path = pathOf(req.url)
    if (path !== this.options.path && path !== `${this.options.path}/`) return false
    try {
      this.upgrade(req, socket, head)
    } catch (err) {
      this.report(err, 'ws.upgrade')
      socket.destroy()
    }
    return true
  }

  attach(server: Server): () => void {
    const deadline: HandshakeDeadline = watchHandshakes(server, this.options.handshakeTimeoutMs)
    const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      deadline.done(socket)
      // Not ours: leave it to the server's other upgrade listeners, or close it if there are none.
      if (!this.handleUpgrade(req, socket, head) && server.listenerCount('upgrade') === 1) socket.destroy()
    }
    server.on('upgrade', onUpgrade)
    return () => {
      server.off('upgrade', onUpgrade)
      deadline.detach()
    }
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.closing !== undefined) return refuseHandshake(socket, 503, 'server restarting')
    const edge = this.options.edge
    const ip = edge.clientIp(req)
    // An address the allow and deny lists refuse, then a browser page from another origin (it
    // would ride on the user's cookies): refused before the upgrade.
    if (!edge.addressAllowed(ip)) return refuseHandshake(socket, 403, 'address not allowed')
    if (!edge.originAllowed(req)) return refuseHandshake(socket, 403, 'origin not allowed')
    const admission = edge.admit(ip)
    if (!admission.ok) return refuseHandshake(socket, admission.status, admission.message, { 'Retry-After': String(Math.max(1, Math.ceil(admission.retryAfterMs / 1000))) })
    const free = admission.release
    // From here on the admission is released exactly once: by the session when its socket
    // closes, or below when no session came of the upgrade.
    const negotiated = negotiate(offeredSubprotocols(req.headers['sec-websocket-protocol']), this.hub.codec)
    if (negotiated === null) {
      free()
      return refuseHandshake(socket, 400, 'unsupported subprotocol (offer tidings.v1.json)')
    }
    ;(req as IncomingMessage & Negotiating)[kNegotiated] = negotiated
    // ws answers 101 and calls back at once. The socket is corked meanwhile so that the 101 and
    // `connected` leave in one write (one packet, one wake-up of the client): at once when the hub
    // accepted the connection without waiting, else when the authenticator answered, but never
    // past this turn of the event loop (a slow authenticator does not hold the 101 back).
    socket.cork()
    let held = true
    const release = (): void => {
      if (!held) return
      held = false
      socket.uncork()
    }
    let session: WsSession | undefined
    try {
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        session = this.opened(ws as SessionSocket, req, socket, negotiated, release, ip, free)
      })
    } catch (err) {
      if (session === undefined) free()
      release()
      throw err
    }
    // ws refused the handshake itself (bad key or version, socket gone): no session to release it.
    if (session === undefined) free()
    if (session === undefined || session.wrote) release()
    else setImmediate(release)
  }

  /** The handshake is done: make a session and let the hub authenticate and accept it. */
  private opened(ws: SessionSocket, req: IncomingMessage, socket: Duplex, negotiated: Negotiated, release: () => void, ip: string, admitted: () => void): WsSession {
    const ua = req.headers['user-agent']
    const session = new WsSession(ws, socket, this, {
      headers: req.headers,
      remoteAddress: ip,
      userAgent: typeof ua === 'string' ? ua : undefined,
      codec: negotiated.codec,
      admitted,
    })
    this.added(session)
    if (this.closing !== undefined) {
      session.close(GOING_AWAY, RESTARTING)
      release()
      return session
    }
    // Hold inbound frames until the hub has accepted the connection (the few already parsed wait in the session).
    ws.pause()
    let connecting: Promise<ConnectionHandle>
    try {
      connecting = this.hub.connect(session, credentialsFromRequest(req.url ?? '', req.headers))
    } catch (err) {
      connecting = Promise.reject(err)
    }
    // The hub answers (`connected` or a refusal) as soon as it has decided: a session it already
    // wrote to needs no timer, one waiting for an authenticator does.
    const timer = session.wrote ? undefined : setTimeout(() => this.authTimedOut(session), this.handshakeLeft(socket)).unref()
    connecting.then(
      (handle) => {
        clearTimeout(timer)
        session.accepted(handle)
        release()
      },
      (err: unknown) => {
        clearTimeout(timer)
        // A refusal was already answered on the wire and closed by the hub (4001 / 4008 / 1001);
        // anything else is a failure of ours.
        if (!session.isClosed) session.close(1011, 'connection failed')
        release()
        if (!isRealtimeError(err)) this.report(err, 'ws.connect')
      },
    )
    return session
  }

  /** What is left of the handshake deadline: from the TCP connection when a deadline watched it, else from now. */
  private handshakeLeft(socket: Duplex): number {
    const since = connectedAt(socket)
    const total = this.options.handshakeTimeoutMs
    return since === undefined ? total : Math.max(1, Math.min(total, since + total - Date.now()))
  }

  private authTimedOut(session: WsSession): void {
    if (session.handle !== undefined || session.isClosed) return
    const codec = session.codec ?? this.hub.codec
    try {
      // Not a refusal of the credentials (as on SSE and long-poll): the server could not decide in
      // time, so the client should try again later with the same ones.
      const data = codec.encode({ type: 'error', code: 'RT_001', message: 'authentication timed out: try again later' })
      session.send(new Outbound(data, wireLength(data)))
    } catch (err) {
      this.report(err, 'ws.handshakeTimeout')
    }
    session.close(CloseCode.TryAgainLater, 'authentication timed out')
  }

  // ---------------------------------------------------------------- sessions

  private added(session: WsSession): void {
    this.sessions.add(session)
    if (this.pingTimer === undefined && this.options.pingIntervalMs > 0) {
      this.pingTimer = setInterval(() => {
        this.pingPayload = randomBytes(8)
        for (const s of this.sessions) s.ping()
      }, this.options.pingIntervalMs)
      this.pingTimer.unref()
    }
  }

  removed(session: WsSession): void {
    this.sessions.delete(session)
    // The keepalive timer (unref'd) stays until close(): stopping and starting it again whenever
    // the last connection goes would cost every lone connection a timer of its own.
    if (this.sessions.size === 0) this.whenEmpty?.()
  }

  /**
   * Before each write. The first write to a socket in a tick goes straight out; a second one in
   * the same tick corks the socket, and the end of the tick uncorks every corked socket, so a
   * burst leaves in one writev instead of a syscall per frame.
   */
  batch(session: WsSession): void {
    if (session.tick !== this.tick) {
      session.tick = this.tick
      if (!this.tickScheduled) {
        this.tickScheduled = true
        queueMicrotask(this.endTick)
      }
      return
    }
    if (!session.corked) {
      session.corked = true
      session.socket.cork()
      this.corked.push(session)
    }
  }

  private readonly endTick = (): void => {
    this.tick++
    this.tickScheduled = false
    if (this.corked.length === 0) return
    const corked = this.corked
    this.corked = []
    for (const s of corked) {
      s.corked = false
      try {
        s.socket.uncork()
      } catch (err) {
        this.report(err, 'ws.uncork')
      }
    }
  }

  /** A failure of the transport, reported to the hub: its `onError`, its logger and its `error` event. */
  report(error: unknown, stage: string): void {
    try {
      this.hub.report(error, stage)
    } catch {
      // a listener (or a logger) that throws must not break the transport
    }
  }

  // ---------------------------------------------------------------- shutdown

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.closing ??= this.shutdown(options.timeoutMs ?? this.options.closeTimeoutMs)
    return this.closing
  }

  private async shutdown(timeoutMs: number): Promise<void> {
    try {
      this.wss.close()
    } catch (err) {
      this.report(err, 'ws.server.close')
    }
    for (const s of [...this.sessions]) s.close(GOING_AWAY, RESTARTING)
    if (this.sessions.size > 0) {
      let timer: NodeJS.Timeout | undefined
      await new Promise<void>((resolve) => {
        this.whenEmpty = resolve
        timer = setTimeout(() => {
          for (const s of [...this.sessions]) s.terminate()
        }, timeoutMs)
      })
      clearTimeout(timer)
      this.whenEmpty = undefined
    }
    if (this.pingTimer !== undefined) {
      clearInterval(this.pingTimer)
      this.pingTimer = undefined
    }
  }
}
