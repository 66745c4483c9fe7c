import type { ClientFrame, ErrorCode, ServerFrame } from '@tidings/protocol'
import { type FetchInit, type FetchLike, type FetchResponseLike, SECRET_HEADER, type TransportCloseInfo, type TransportOptions } from './types.js'

/** Most frames in one POST body (the server's limit). */
export const MAX_BATCH = 100
/** Delays before sending a POST again after a network failure or a 5xx. */
const POST_RETRIES = [100, 400]
/** 429 answers a POST may get in a row before the transport gives up. */
const MAX_RATE_RETRIES = 5

export function resolveFetch(options: TransportOptions): FetchLike | undefined {
  if (options.fetch) return options.fetch
  const global = (globalThis as { fetch?: FetchLike }).fetch
  return global ? (url, init) => global(url, init) : undefined
}

/**
 * Tell the server a session is over (DELETE with its secret), so it does not hold a connection
 * slot until it expires. `keepalive` lets the request finish while the page is being unloaded.
 */
export function releaseSession(options: TransportOptions, url: string, secret: string, timeoutMs: number): void {
  const fetch = resolveFetch(options)
  if (!fetch) return
  const init: FetchInit = {
    method: 'DELETE',
    headers: { [SECRET_HEADER]: secret },
    keepalive: true,
    ...(options.withCredentials ? { credentials: 'include' as const } : {}),
  }
  void fetchWithTimeout(fetch, url, init, timeoutMs)
    .then((res) => res.text())
    .catch(() => {})
}

/** `fetch` that is aborted after `timeoutMs` or when `signal` aborts. */
export async function fetchWithTimeout(fetch: FetchLike, url: string, init: FetchInit, timeoutMs: number, signal?: AbortSignal): Promise<FetchResponseLike> {
  const controller = new AbortController()
  const abort = () => controller.abort()
  if (signal?.aborted) abort()
  signal?.addEventListener('abort', abort)
  const timer = setTimeout(abort, timeoutMs)
  try {
    return await fetch(url, { ...init, signal: controller.signal })
  } finally {
    clearTimeout(timer)
    signal?.removeEventListener('abort', abort)
  }
}

/** A `Retry-After` header (seconds or an HTTP date) in ms; undefined without one. */
export function retryAfterMs(res: FetchResponseLike, now = Date.now()): number | undefined {
  const value = res.headers?.get('retry-after')
  if (value == null || value === '') return undefined
  const seconds = Number(value)
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000)
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

/** The `{ type: 'error', code, message }` body of a refused HTTP request, if it has one. */
export async function errorBody(res: FetchResponseLike): Promise<{ code: ErrorCode; message: string } | undefined> {
  try {
    const body = JSON.parse(await res.text()) as { type?: unknown; code?: unknown; message?: unknown }
    if (typeof body.code === 'string' && /^RT_00\d$/.test(body.code)) {
      return { code: body.code as ErrorCode, message: typeof body.message === 'string' ? body.message : `HTTP ${res.status}` }
    }
  } catch {
    // no JSON body
  }
  return undefined
}

/**
 * A refused opening request (SSE stream or long-poll open) as the hub would report it over a
 * WebSocket: the `error` frame (if any) and the close code.
 */
export async function refusal(res: FetchResponseLike): Promise<{ frame: ServerFrame | undefined; close: TransportCloseInfo }> {
  const body = await errorBody(res)
  const frame: ServerFrame | undefined = body ? { type: 'error', code: body.code, message: body.message } : undefined
  const reason = body?.message ?? `HTTP ${res.status}`
  if (res.status === 401 || body?.code === 'RT_002') return { frame, close: { code: 4001, reason } }
  // Too many requests from this address (the edge guard): come back after Retry-After (1013: try again later).
  const wait = retryAfterMs(res)
  if (res.status === 429 && (wait !== undefined || body?.code === 'RT_006')) return { frame, close: { code: 1013, reason, retryAfterMs: wait ?? 1000 } }
  if (res.status === 429) return { frame, close: { code: 4008, reason } }
  // Only the hub's own 503 (shutting down, with its RT_001 body) means "come back later here"; a
  // bare 503 (a proxy, a blocked path) means this transport is not usable: try the next one.
  if (res.status === 503 && body?.code === 'RT_001') return { frame, close: { code: 1001, reason, retryAfterMs: retryAfterMs(res) } }
  return { frame, close: { code: 1006, reason } }
}

export interface PosterHandlers {
  /** Frames refused as a whole by HTTP (400 / 413): their requests get these `error` frames. */
  refused(frames: ServerFrame[]): void
  /** The session is gone or unreachable. */
  failed(info: TransportCloseInfo): void
}

/**
 * Sends client frames to an HTTP session: one POST at a time (so frames arrive in order), each
 * carrying every frame queued meanwhile (up to `MAX_BATCH`), with the session secret.
 */
export class FramePoster {
  private queue: ClientFrame[] = []
  private url: string | undefined
  private secret = ''
  private busy = false
  private stopped = false
  private readonly controller = new AbortController()

  constructor(
    private readonly fetch: FetchLike,
    private readonly timeoutMs: number,
    private readonly handlers: PosterHandlers,
    private readonly withCredentials: boolean,
  ) {}

  /** The session is known: start sending to `url`. */
  start(url: string, secret: string): void {
    this.url = url
    this.secret = secret
    void this.pump()
  }

  push(frame: ClientFrame): void {
    if (this.stopped) return
    this.queue.push(frame)
    void this.pump()
  }

  stop(): void {
    this.stopped = true
    this.queue = []
    this.controller.abort()
  }

  private async pump(): Promise<void> {
    if (this.busy || this.stopped || this.url === undefined || this.queue.length === 0) return
    this.busy = true
    const batch = this.queue.splice(0, MAX_BATCH)
    const body = JSON.stringify(batch.length === 1 ? batch[0] : batch)
    let res: FetchResponseLike | undefined
    let rateRetries = 0
    // A POST lost on the network may or may not have reached the hub; sending it again is safe
    // (publishes carry idempotency keys, acks are cumulative, subscribes and presence updates
    // are idempotent), and keeps the session.
    for (let attempt = 0; ; attempt++) {
      let failure: string
      try {
        res = await fetchWithTimeout(
          this.fetch,
          this.url,
          {
            method: 'POST',
            headers: { 'content-type': 'application/json', [SECRET_HEADER]: this.secret },
            body,
            ...(this.withCredentials ? { credentials: 'include' as const } : {}),
          },
          this.timeoutMs,
          this.controller.signal,
        )
        if (res.status === 429 && rateRetries < MAX_RATE_RETRIES) {
          // Over the per-address rate: nothing was handled, wait as asked and send the same batch again.
          const wait = retryAfterMs(res) ?? 1000
          void res.text().catch(() => {})
          rateRetries++
          attempt--
          await new Promise((r) => setTimeout(r, wait))
          if (this.stopped) return
          continue
        }
        if (res.status < 500) break
        failure = `HTTP ${res.status}`
        void res.text().catch(() => {})
      } catch (err) {
        failure = err instanceof Error ? err.message : String(err)
      }
      if (this.stopped) return
      if (attempt >= POST_RETRIES.length) {
        this.busy = false
        this.handlers.failed({ code: 1006, reason: `send failed: ${failure}` })
        return
      }
      await new Promise((r) => setTimeout(r, POST_RETRIES[attempt]))
      if (this.stopped) return
    }
    this.busy = false
    if (this.stopped) return
    if (res.status === 400 || res.status === 413) {
      const body = await errorBody(res)
      const code: ErrorCode = body?.code ?? (res.status === 413 ? 'RT_005' : 'RT_007')
      const message = body?.message ?? `HTTP ${res.status}`
      this.handlers.refused(
        batch.flatMap((f) => ('id' in f && f.id !== undefined ? [{ type: 'error', id: f.id, code, message } satisfies ServerFrame] : [])),
      )
    } else if (!res.ok) {
      const body = await errorBody(res)
      this.handlers.failed({ code: 1006, reason: body?.message ?? `send failed: HTTP ${res.status}` })
      return
    } else {
      void res.text().catch(() => {})
    }
    void this.pump()
  }
}
