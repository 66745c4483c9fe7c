import type { ClientFrame, ErrorCode, ServerFrame } from '@tidings/core'
import type { FetchInit, FetchLike, FetchResponseLike, TransportCloseInfo, TransportOptions } from './types.js'

/** Most frames in one POST body (the server's limit). */
export const MAX_BATCH = 100
/** Delays before sending a POST again after a network failure or a 5xx. */
const POST_RETRIES = [100, 400]

export function resolveFetch(options: TransportOptions): FetchLike | undefined {
  if (options.fetch) return options.fetch
  const global = (globalThis as { fetch?: FetchLike }).fetch
  return global ? (url, init) => global(url, init) : undefined
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
  if (res.status === 429) return { frame, close: { code: 4008, reason } }
  // Only the hub's own 503 (shutting down, with its RT_001 body) means "come back later here"; a
  // bare 503 (a proxy, a blocked path) means this transport is not usable: try the next one.
  if (res.status === 503 && body?.code === 'RT_001') return { frame, close: { code: 1001, reason } }
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
            headers: { 'content-type': 'application/json', 'x-tidings-secret': this.secret },
            body,
            ...(this.withCredentials ? { credentials: 'include' as const } : {}),
          },
          this.timeoutMs,
          this.controller.signal,
        )
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
