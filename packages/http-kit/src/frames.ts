import type { IncomingMessage, ServerResponse } from 'node:http'
import { type ConnectionHandle, DEFAULT_MAX_DEPTH, type ErrorCode, jsonDepth, valueDepth } from '@tidings/core'
import type { EdgeGuard } from './edge.js'
import { header, sendError, sendNoContent } from './http.js'

/*
 * Client → server bodies of the HTTP transports (SSE and long-poll POSTs): one frame or a batch,
 * held to the size limit, the decode budget and a deadline before the frames reach the hub.
 */

/** Frames one client → server request may carry. */
export const MAX_FRAMES_PER_REQUEST = 100

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
