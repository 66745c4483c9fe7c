import { randomBytes, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ErrorCode, Hub } from '@tidings/core'

/*
 * Request and response helpers of Node HTTP shared by the transports: reading a request (a
 * header, the target, the session secret, whether a body follows), answering one (JSON, an
 * `error` body, 204, a hub's refusal), draining a body an answer does not need, and checking
 * a transport's numeric options.
 */

/** Header carrying a session's secret on client → server requests. */
export const SECRET_HEADER = 'x-tidings-secret'

/** A random id of `bytes` bytes, base64url (no `:`, safe in URLs and event ids). */
export function randomToken(bytes: number): string {
  return randomBytes(bytes).toString('base64url')
}

/**
 * Constant-time comparison of a request's secret (the header `x-tidings-secret`, never a URL:
 * URLs reach access logs) with the session's secret.
 */
export function secretMatches(req: IncomingMessage, secret: string): boolean {
  const given = header(req, SECRET_HEADER)
  if (given === undefined || given === '') return false
  const a = Buffer.from(given)
  const b = Buffer.from(secret)
  return a.length === b.length && timingSafeEqual(a, b)
}

export function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name]
  return Array.isArray(v) ? v[0] : v
}

/** The request's URL (Express's `originalUrl` when mounted under a path), split at `?`. */
export function requestTarget(req: IncomingMessage): { path: string; url: string; query: URLSearchParams } {
  const url = (req as { originalUrl?: string }).originalUrl ?? req.url ?? '/'
  const q = url.indexOf('?')
  let path = q >= 0 ? url.slice(0, q) : url
  if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1)
  return { path, url, query: new URLSearchParams(q >= 0 ? url.slice(q + 1) : '') }
}

/** `/realtime/` → `/realtime`; `''` stays `''`. */
export function normalizePrefix(prefix: string): string {
  let p = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
  if (p !== '' && !p.startsWith('/')) p = `/${p}`
  return p
}

/** The hub's `limits.maxMessageSize`. */
export function maxMessageSizeOf(hub: Hub): number {
  return hub.limits.maxMessageSize
}

export function sendJson(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    if (!res.writableEnded) res.end()
    return
  }
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(body)),
    'Cache-Control': 'no-store',
    ...headers,
  })
  res.end(body)
}

/**
 * Answer with an `error` body: `{ "type": "error", "code", "message" }`. A refusal usually comes
 * before the request's body was read: what is left of it (declared at most 4 MiB) is read and
 * discarded first (at most 1 s), so the answer is not lost to a connection reset while the client
 * still writes. A 408 (the body did not arrive) is answered at once.
 */
export function sendError(res: ServerResponse, status: number, code: ErrorCode, message: string, headers?: Record<string, string>): void {
  const body = JSON.stringify({ type: 'error', code, message })
  const req = (res as ServerResponse & { req?: IncomingMessage }).req
  if (status === 408 || req === undefined || !hasBody(req) || req.complete || req.destroyed) return sendJson(res, status, body, headers)
  void drainBody(req).then(() => sendJson(res, status, body, headers))
}

export function sendNoContent(res: ServerResponse): void {
  if (res.headersSent) {
    if (!res.writableEnded) res.end()
    return
  }
  res.writeHead(204, { 'Cache-Control': 'no-store' })
  res.end()
}

/**
 * Answer the opening request of a session the hub refused: 401 for bad credentials (RT_002),
 * 429 when the user has too many connections (close 4008), 503 otherwise (shutting down).
 */
export function sendRefusal(res: ServerResponse, err: unknown, closeCode: number | undefined): void {
  const code = (err as { code?: unknown } | null)?.code === 'RT_002' ? 'RT_002' : 'RT_001'
  const status = code === 'RT_002' ? 401 : closeCode === 4008 ? 429 : 503
  sendError(res, status, code, err instanceof Error ? err.message : 'connection refused')
}

/** Whether a request carries a body (a declared length above 0, or a chunked one). */
export function hasBody(req: IncomingMessage): boolean {
  return Number(req.headers['content-length']) > 0 || req.headers['transfer-encoding'] !== undefined
}

/**
 * Read and discard what is left of a request's body (one declared at most `maxBytes`, reading
 * at most that, for at most `timeoutMs`, 1 s) before an answer that does not need it. An answer
 * sent while the client is still writing, followed by a close, can reach the client as a
 * connection reset instead of the answer; a client that declared a body and sends nothing is
 * answered after the timeout.
 */
export function drainBody(req: IncomingMessage, maxBytes = 4 * 1024 * 1024, timeoutMs = 1_000): Promise<void> {
  if (req.complete || req.readableEnded || req.destroyed) return Promise.resolve()
  // A body declared larger than that is not waited for: answer at once (and close).
  if (Number(req.headers['content-length']) > maxBytes) return Promise.resolve()
  return new Promise((resolve) => {
    let size = 0
    const done = () => {
      clearTimeout(timer)
      req.off('data', onData)
      resolve()
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > maxBytes) done()
    }
    const timer = setTimeout(done, timeoutMs)
    req.on('data', onData)
    req.once('end', done)
    req.once('close', done)
    req.once('error', done)
    req.resume()
  })
}

/** A positive whole number of ms (or depth), else the fallback; a bad value is a TypeError naming the option. */
export function positiveOption(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new TypeError(`${name} must be a positive number`)
  return Math.floor(value)
}
