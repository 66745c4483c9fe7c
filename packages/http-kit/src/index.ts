import { randomBytes, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { type ConnectionHandle, DEFAULT_MAX_DEPTH, type ErrorCode, type Hub, jsonDepth, valueDepth } from '@tidings/core'
import { createEdgeGuard, type EdgeGuard, type EdgeOptions } from './edge.js'

/*
 * Small HTTP helpers shared by the SSE and long-poll transports.
 */

/** Frames one client → server request may carry. */
export const MAX_FRAMES_PER_REQUEST = 100

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

export type FramesResult =
  | { readonly ok: true; readonly frames: string[] }
  | { readonly ok: false; readonly status: 400 | 408 | 413; readonly code: ErrorCode; readonly message: string }

const tooLarge = (max: number): FramesResult => ({ ok: false, status: 413, code: 'RT_005', message: `request body is over the limit of ${max} bytes` })
const invalid = (message: string): FramesResult => ({ ok: false, status: 400, code: 'RT_007', message })
const timedOut = (ms: number): FramesResult => ({ ok: false, status: 408, code: 'RT_001', message: `request body did not arrive within ${ms} ms` })

/**
 * Read a client → server body: one JSON frame or an array of at most 100, each returned as the
 * wire text to hand to `ConnectionHandle.receive` (a single frame exactly as received). Uses
 * `req.body` when a body parser (Express's `json()`, `text()`, `raw()`) already ran.
 *
 * Every body is held to the decode budget before anything recursive touches it: JSON text is
 * scanned by `jsonDepth` before `JSON.parse`, a value a body parser already built is walked by
 * `valueDepth` before it is re-serialised. A frame may be `maxDepth` deep (default
 * `DEFAULT_MAX_DEPTH`); inside a batch array it is one level deeper. Too deep is 400 `RT_007`.
 * Never rejects.
 */
export function readFrames(req: IncomingMessage, maxBytes: number, maxDepth: number = DEFAULT_MAX_DEPTH, timeoutMs = 0): Promise<FramesResult> {
  try {
    return readFramesUnsafe(req, maxBytes, maxDepth, timeoutMs)
  } catch {
    return Promise.resolve(invalid('request body could not be read'))
  }
}

function readFramesUnsafe(req: IncomingMessage, maxBytes: number, maxDepth: number, timeoutMs: number): Promise<FramesResult> {
  const parsed = (req as { body?: unknown }).body
  if (parsed !== undefined) {
    if (typeof parsed === 'string') return Promise.resolve(parseFrames(parsed, maxBytes, maxDepth))
    if (parsed instanceof Uint8Array) return Promise.resolve(parseFrames(Buffer.from(parsed.buffer, parsed.byteOffset, parsed.byteLength).toString('utf8'), maxBytes, maxDepth))
    return Promise.resolve(splitParsed(parsed, maxDepth))
  }
  if (req.readableEnded) return Promise.resolve(invalid('request body was already read by another handler'))
  const declared = Number(header(req, 'content-length'))
  if (declared > maxBytes) {
    req.resume()
    return Promise.resolve(tooLarge(maxBytes))
  }
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let size = 0
    let done = false
    // A body that stops arriving (body slowloris) is not held with its buffer until Node's own
    // request timeout: past the deadline it is answered 408 and the connection is closed.
    const timer = timeoutMs > 0 ? setTimeout(() => finish(timedOut(timeoutMs)), timeoutMs) : undefined
    const finish = (r: FramesResult) => {
      if (done) return
      done = true
      if (timer !== undefined) clearTimeout(timer)
      chunks.length = 0
      resolve(r)
    }
    req.on('data', (chunk: Buffer) => {
      if (done) return
      size += chunk.length
      if (size > maxBytes) finish(tooLarge(maxBytes))
      else chunks.push(chunk)
    })
    req.on('end', () => {
      // A throw in this listener would escape to the process: whatever happens is an answer.
      let r: FramesResult
      try {
        r = parseFrames(Buffer.concat(chunks, size).toString('utf8'), maxBytes, maxDepth)
      } catch {
        r = invalid('request body could not be parsed')
      }
      finish(r)
    })
    req.on('error', () => finish(invalid('request body could not be read')))
    req.on('close', () => finish(invalid('request body was cut short')))
  })
}

const tooDeep = (maxDepth: number): FramesResult => invalid(`request body is nested deeper than ${maxDepth} levels (a frame may be ${maxDepth} deep, ${maxDepth + 1} inside a batch array)`)

/** JSON text: depth scanned (linear, no recursion) before it is parsed. */
function parseFrames(text: string, maxBytes: number, maxDepth: number): FramesResult {
  if (Buffer.byteLength(text) > maxBytes) return tooLarge(maxBytes)
  // A batch array adds one level: scan to maxDepth + 1, then hold a lone frame to maxDepth.
  const depth = jsonDepth(text, maxDepth + 1)
  if (depth > maxDepth + 1) return tooDeep(maxDepth)
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return invalid('request body is not valid JSON')
  }
  if (!Array.isArray(value)) return depth > maxDepth ? tooDeep(maxDepth) : { ok: true, frames: [text] }
  return splitArray(value)
}

/** A value a body parser already built: depth walked (iteratively) before it is serialised again. */
function splitParsed(value: unknown, maxDepth: number): FramesResult {
  const batch = Array.isArray(value)
  const limit = batch ? maxDepth + 1 : maxDepth
  if (valueDepth(value, limit) > limit) return tooDeep(maxDepth)
  if (batch) return splitArray(value)
  const text = JSON.stringify(value) as string | undefined
  return text === undefined ? invalid('request body is not a frame') : { ok: true, frames: [text] }
}

function splitArray(value: unknown[]): FramesResult {
  if (value.length > MAX_FRAMES_PER_REQUEST) {
    return { ok: false, status: 413, code: 'RT_005', message: `at most ${MAX_FRAMES_PER_REQUEST} frames per request` }
  }
  return { ok: true, frames: value.map((f) => JSON.stringify(f) ?? 'null') }
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

/** Whether `edge` is a guard already made (shared between transports) rather than options for one. */
export function isEdgeGuard(edge: EdgeGuard | EdgeOptions | undefined): edge is EdgeGuard {
  return edge !== undefined && typeof (edge as Partial<EdgeGuard>).admit === 'function' && typeof (edge as Partial<EdgeGuard>).originAllowed === 'function'
}

/** The guard given, or one made from the options given (defaults when none). */
export function resolveEdgeGuard(edge: EdgeGuard | EdgeOptions | undefined): EdgeGuard {
  return isEdgeGuard(edge) ? edge : createEdgeGuard(edge ?? {})
}

/** A positive whole number of ms (or depth), else the fallback; a bad value is a TypeError naming the option. */
export function positiveOption(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new TypeError(`${name} must be a positive number`)
  return Math.floor(value)
}

/**
 * A client → server POST: read and check the frames, then hand them to the session's hub
 * connection in order (`target()` is asked after the body is read: the session may have closed
 * meanwhile) and answer 204.
 */
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

export interface ReceiveOptions {
  /** Largest body (413 past it). */
  readonly maxBytes: number
  /** Deepest frame (400 past it; a batch array one level more). */
  readonly maxDepth?: number
  /** How long the body may take to arrive (408 and the connection closed past it); 0 = no deadline. */
  readonly timeoutMs?: number
  /** With the client's address: bodies in flight per address are limited (429). */
  readonly edge?: EdgeGuard
  readonly ip?: string
}

/**
 * A client → server POST: read and check the frames, then hand them to the session's hub
 * connection in order (`target()` is asked after the body is read: the session may have closed
 * meanwhile) and answer 204.
 */
export async function receiveFrames(req: IncomingMessage, res: ServerResponse, o: ReceiveOptions, target: () => ConnectionHandle | undefined): Promise<void> {
  const release = o.edge !== undefined && o.ip !== undefined ? o.edge.beginBody(o.ip) : () => {}
  if (release === undefined) {
    return sendError(res, 429, 'RT_006', `too many request bodies in flight from this address (limit ${o.edge!.options.maxBodiesInFlightPerIp})`, { 'Retry-After': '1', Connection: 'close' })
  }
  let body: FramesResult
  try {
    body = await readFrames(req, o.maxBytes, o.maxDepth ?? DEFAULT_MAX_DEPTH, o.timeoutMs ?? 0)
  } finally {
    release()
  }
  if (!body.ok) {
    const close = body.status === 413 || body.status === 408
    sendError(res, body.status, body.code, body.message, close ? { Connection: 'close' } : undefined)
    if (body.status === 408) res.once('finish', () => req.socket.destroy())
    return
  }
  const handle = target()
  if (!handle) return sendError(res, 404, 'RT_001', 'unknown session')
  for (const frame of body.frames) handle.receive(frame)
  sendNoContent(res)
}
export { type RegisteredSession, type RegistryOptions, type SessionRoute, SessionRegistry, SHUTTING_DOWN, AUTH_TIMED_OUT } from './sessions.js'
export { type Admission, type EdgeGuard, type EdgeOptions, addressKey, createEdgeGuard, normalizeOrigin } from './edge.js'
