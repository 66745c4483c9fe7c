import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'

/** When the server accepted a socket's TCP connection (ms epoch), kept on the socket once it sent a complete request. */
const kConnectedAt = Symbol.for('tidings.ws.connectedAt')
type Stamped = { [kConnectedAt]?: number }

export interface HandshakeDeadline {
  /** The socket sent a complete request (an upgrade): stop its clock. Idempotent; unknown sockets are ignored. */
  done(socket: Duplex): void
  /** Stop watching the server (sockets still waiting are left alone). */
  detach(): void
}

/**
 * A deadline on the request headers of every new connection to `server`: a socket that has not
 * sent one complete request (plain HTTP or an upgrade) within `timeoutMs` of its TCP connection is
 * destroyed. Node's own `headersTimeout` is checked only every `connectionsCheckingInterval`
 * (30 s) and defaults to 60 s, so a client dribbling its headers a byte at a time holds a socket
 * for up to 81 s; this one cuts it at the deadline.
 *
 * Only a socket's first request is timed: a keep-alive connection that completed a request is
 * never cut here (Node's `keepAliveTimeout` and `headersTimeout` govern its later requests).
 * Completion is seen on the server's `request` event, and (also when the app listens for them) on
 * `checkContinue`, `checkExpectation` and `connect`; upgrades are reported with `done()` by the
 * `upgrade` listener that owns them (a listener here would change `listenerCount('upgrade')`).
 */
export function watchHandshakes(server: Server, timeoutMs: number): HandshakeDeadline {
  const waiting = new Map<Duplex, NodeJS.Timeout>()
  const expire = (socket: Duplex): void => {
    waiting.delete(socket)
    socket.destroy()
  }
  const arm = (socket: Duplex, ms: number): void => {
    ;(socket as Duplex & Stamped)[kConnectedAt] = Date.now()
    const timer = setTimeout(expire, ms, socket)
    timer.unref()
    waiting.set(socket, timer)
    // A socket that goes away early is forgotten at once (not kept until its timer).
    socket.on('close', onSocketClose)
  }
  const onConnection = (socket: Socket): void => arm(socket, timeoutMs)
  function onSocketClose(this: Duplex): void {
    done(this)
  }
  const done = (given: Duplex): void => {
    const socket = rawSocket(given)
    const timer = waiting.get(socket)
    if (timer === undefined) return
    clearTimeout(timer)
    waiting.delete(socket)
    socket.off('close', onSocketClose)
  }
  // The next request on a keep-alive connection is timed too, from the end of the previous
  // response (an idle keep-alive connection is Node's `keepAliveTimeout`'s to close, so the
  // deadline is never shorter than that).
  const onRequest = (req: IncomingMessage, res?: ServerResponse): void => {
    done(req.socket)
    res?.once('finish', () => {
      const socket = rawSocket(req.socket)
      if (!socket.destroyed && !waiting.has(socket)) arm(socket, Math.max(timeoutMs, server.keepAliveTimeout + 1000))
    })
  }
  server.prependListener('connection', onConnection)
  server.prependListener('request', onRequest)
  // These events replace `request` only when the app listens for them; a listener of ours would
  // change Node's behaviour (no automatic 100 Continue, no automatic answer to CONNECT).
  const optional = (['checkContinue', 'checkExpectation', 'connect'] as const).filter((e) => server.listenerCount(e) > 0)
  for (const e of optional) server.prependListener(e, onRequest)
  // A malformed request (a negative Content-Length, a bad header): Node's default answers 400
  // and destroys the socket at once, and the bytes still unread turn that close into a reset that
  // can swallow the answer. Answered the same way here, but closed gracefully. Only when the app
  // has no handler of its own.
  const ownsClientErrors = server.listenerCount('clientError') === 0
  if (ownsClientErrors) server.on('clientError', answerClientError)
  return {
    done,
    detach() {
      if (ownsClientErrors) server.off('clientError', answerClientError)
      server.off('connection', onConnection)
      server.off('request', onRequest)
      for (const e of optional) server.off(e, onRequest)
      for (const timer of waiting.values()) clearTimeout(timer)
      waiting.clear()
    },
  }
}

/** When the socket's TCP connection was accepted (or its last response ended), if a handshake deadline watched it. */
export function connectedAt(socket: Duplex): number | undefined {
  return (rawSocket(socket) as Duplex & Stamped)[kConnectedAt]
}

/**
 * The TCP socket under a request's socket. On an HTTPS server, `connection` gives the TCP socket
 * while requests and upgrades carry the TLS socket wrapped around it (`_parent`, Node's own field).
 */
function rawSocket(socket: Duplex): Duplex {
  return (socket as Duplex & { _parent?: Duplex | null })._parent ?? socket
}

const CLIENT_ERROR_STATUS: Readonly<Record<string, string>> = {
  HPE_HEADER_OVERFLOW: '431 Request Header Fields Too Large',
  ERR_HTTP_REQUEST_TIMEOUT: '408 Request Timeout',
  HPE_CHUNK_EXTENSIONS_OVERFLOW: '413 Payload Too Large',
}

/** Answer a request Node could not parse, then close without a reset: read what is left, end, destroy after a moment. */
function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  socket.on('error', () => {})
  if (!socket.writable || (socket as Socket).bytesWritten > 0) {
    socket.destroy()
    return
  }
  const status = CLIENT_ERROR_STATUS[err.code ?? ''] ?? '400 Bad Request'
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
  socket.resume()
  setTimeout(() => socket.destroy(), 1000).unref()
}
