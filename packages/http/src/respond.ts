import type { IncomingMessage, ServerResponse } from 'node:http'
import { DEFAULT_MAX_DEPTH, type ErrorCode, parseJsonWithin, RealtimeError, valueDepth } from '@tidings/core'

/** The HTTP status that goes with each error code. */
export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  RT_001: 503,
  RT_002: 401,
  RT_003: 403,
  RT_004: 404,
  RT_005: 413,
  RT_006: 429,
  RT_007: 400,
  RT_008: 409,
  RT_009: 422,
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.statusCode = status
  res.setHeader('content-type', 'application/json; charset=utf-8')
  res.setHeader('cache-control', 'no-store')
  res.end(text)
}

/** Answer with an `error` body; anything that is not a RealtimeError is an internal failure (RT_001). */
export function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const e = err instanceof RealtimeError ? err : new RealtimeError('RT_001', 'internal error')
  sendJson(res, HTTP_STATUS[e.code], { type: 'error', code: e.code, message: e.message, ...(e.details ? { details: e.details } : {}) })
}

/** How long an admin request body may take to arrive. */
const BODY_TIMEOUT_MS = 10_000

/**
 * The request's JSON body: already parsed by a framework (`req.body`), or read here up to `limit`
 * bytes. Either way it is held to the decode budget (nesting at most `DEFAULT_MAX_DEPTH`) before
 * anything recursive (zod) looks at it: deeper is 400 RT_007.
 */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const parsed = (req as IncomingMessage & { body?: unknown }).body
  if (parsed !== undefined) {
    if (valueDepth(parsed, DEFAULT_MAX_DEPTH) > DEFAULT_MAX_DEPTH) throw new RealtimeError('RT_007', `the request body is nested deeper than ${DEFAULT_MAX_DEPTH} levels`)
    return parsed
  }
  // A declared length over the limit is refused before a byte is read.
  const declared = Number(req.headers['content-length'])
  if (declared > limit) {
    req.resume()
    throw new RealtimeError('RT_005', `request body over ${limit} bytes`, { limit })
  }
  const chunks: Buffer[] = []
  // Plain listeners, not `for await`: leaving an async iterator early destroys the socket, and
  // the client (still sending) would see a reset instead of the 413.
  await new Promise<void>((resolve, reject) => {
    let size = 0
    let done = false
    const finish = (err?: unknown) => {
      if (done) return
      done = true
      clearTimeout(timer)
      if (err === undefined) resolve()
      else reject(err)
    }
    // A body that stops arriving is not waited for until Node's own request timeout.
    const timer = setTimeout(() => {
      finish(new RealtimeError('RT_001', `request body did not arrive within ${BODY_TIMEOUT_MS} ms`, { timeoutMs: BODY_TIMEOUT_MS }))
      req.socket?.destroy()
    }, BODY_TIMEOUT_MS)
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (done) return
      if (size > limit) {
        finish(new RealtimeError('RT_005', `request body over ${limit} bytes`, { limit }))
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => finish())
    req.on('error', (err) => finish(err))
    req.on('close', () => finish(new RealtimeError('RT_007', 'the request body was cut short')))
  })
  const text = Buffer.concat(chunks).toString('utf8')
  if (text.length === 0) return undefined
  const decoded = parseJsonWithin(text, DEFAULT_MAX_DEPTH)
  if (!decoded.ok) throw new RealtimeError('RT_007', decoded.reason === 'body is not valid JSON' ? 'the request body is not valid JSON' : `the request body is ${decoded.reason}`)
  return decoded.value
}
