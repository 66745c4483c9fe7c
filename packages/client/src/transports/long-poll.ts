import type { ClientFrame, ServerFrame } from '@tidings/protocol'
import { FramePoster, fetchWithTimeout, refusal, releaseSession, resolveFetch, retryAfterMs } from './http.js'
import { type ClientTransport, type Credentials, type FetchLike, SECRET_HEADER, type TransportCloseInfo, type TransportHandlers, type TransportOptions, endpoint } from './types.js'

interface PollBody {
  session?: unknown
  secret?: unknown
  frames?: unknown
  cursor?: unknown
  /** The hub closed the connection: the last answer of the session. */
  close?: unknown
}

/** Extra time a poll may take on top of the request timeout (the server holds polls up to 30 s). */
const POLL_HOLD_MS = 30_000

/**
 * Long-polling transport: `POST <url>/poll` opens a session (`{ session, secret, frames, cursor }`),
 * `GET <url>/poll/<session>?cursor=N` waits for the frames after N (and confirms those up to N,
 * so a lost response is simply asked for again), frames to the server are POSTed to
 * `<url>/poll/<session>`, and `DELETE` ends the session.
 */
export class LongPollTransport implements ClientTransport {
  readonly name = 'long-poll'
  private handlers: TransportHandlers | undefined
  private poster: FramePoster | undefined
  private done = false
  private readonly controller = new AbortController()
  private readonly timeoutMs: number
  private session: { url: string; secret: string } | undefined

  constructor(private readonly options: TransportOptions) {
    this.timeoutMs = options.requestTimeoutMs ?? 15_000
  }

  connect(url: string, credentials: Credentials, handlers: TransportHandlers): void {
    this.handlers = handlers
    const fetch = resolveFetch(this.options)
    if (!fetch) return void queueMicrotask(() => this.finish({ code: 1006, reason: 'no fetch implementation: pass one as the fetch option' }))
    this.poster = new FramePoster(
      fetch,
      this.timeoutMs,
      { refused: (frames) => frames.forEach((f) => this.deliver(f)), failed: (info) => this.finish(info) },
      this.options.withCredentials === true,
    )
    void this.run(fetch, url, credentials)
  }

  send(frame: ClientFrame): void {
    if (!this.done) this.poster?.push(frame)
  }

  close(): void {
    if (this.done) return
    this.done = true
    this.stop()
    if (this.session) releaseSession(this.options, this.session.url, this.session.secret, this.timeoutMs)
  }

  private credentialsMode(): { credentials?: 'include' } {
    return this.options.withCredentials ? { credentials: 'include' } : {}
  }

  private deliver(frame: ServerFrame): void {
    if (!this.done) this.handlers?.frame(frame)
  }

  private deliverAll(frames: unknown): void {
    if (!Array.isArray(frames)) return
    for (const f of frames) {
      if (this.done) return
      if (f !== null && typeof f === 'object' && typeof (f as { type?: unknown }).type === 'string') this.deliver(f as ServerFrame)
    }
  }

  private stop(): void {
    this.poster?.stop()
    this.controller.abort()
  }

  private finish(info: TransportCloseInfo): void {
    if (this.done) return
    this.done = true
    this.stop()
    this.handlers?.close(info)
  }

  /** An answer that carries `close: { code, reason }` ends the session. */
  private closeIfClosed(body: PollBody): void {
    const c = body.close as { code?: unknown; reason?: unknown } | undefined
    if (c && typeof c === 'object' && typeof c.code === 'number') this.finish({ code: c.code, reason: typeof c.reason === 'string' ? c.reason : '' })
  }

  private async run(fetch: FetchLike, url: string, credentials: Credentials): Promise<void> {
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    if (credentials.token !== undefined) headers['authorization'] = `Bearer ${credentials.token}`
    if (credentials.apiKey !== undefined) headers['x-api-key'] = credentials.apiKey
    let cursor: number
    try {
      const res = await fetchWithTimeout(fetch, endpoint(url, '/poll').toString(), { method: 'POST', headers, body: '{}', ...this.credentialsMode() }, this.timeoutMs, this.controller.signal)
      if (this.done) return
      if (!res.ok) {
        const r = await refusal(res)
        if (r.frame) this.deliver(r.frame)
        return this.finish(r.close)
      }
      const body = JSON.parse(await res.text()) as PollBody
      if (typeof body.session !== 'string' || typeof body.secret !== 'string' || typeof body.cursor !== 'number') {
        return this.finish({ code: 1006, reason: 'long-poll: malformed open response' })
      }
      if (this.done) return
      this.session = { url: endpoint(url, `/poll/${encodeURIComponent(body.session)}`).toString(), secret: body.secret }
      cursor = body.cursor
      this.handlers?.open()
      this.poster?.start(this.session.url, body.secret)
      this.deliverAll(body.frames)
      this.closeIfClosed(body)
    } catch (err) {
      return this.finish({ code: 1006, reason: `long-poll open failed: ${err instanceof Error ? err.message : String(err)}` })
    }
    let failures = 0
    while (!this.done) {
      const session = this.session!
      try {
        const target = `${session.url}?cursor=${cursor}`
        const res = await fetchWithTimeout(
          fetch,
          target,
          { method: 'GET', headers: { [SECRET_HEADER]: session.secret }, ...this.credentialsMode() },
          this.timeoutMs + POLL_HOLD_MS,
          this.controller.signal,
        )
        if (this.done) return
        if (res.status === 429 && ++failures <= 5) {
          // Over the per-address rate: the cursor makes asking again safe, after the wait the server asked for.
          void res.text().catch(() => {})
          await new Promise((r) => setTimeout(r, retryAfterMs(res) ?? 1000))
          continue
        }
        if (!res.ok) {
          // 404: the session expired or the hub closed the connection.
          return this.finish((await refusal(res)).close)
        }
        const body = JSON.parse(await res.text()) as PollBody
        if (this.done) return
        failures = 0
        if (typeof body.cursor === 'number') cursor = body.cursor
        this.deliverAll(body.frames)
        this.closeIfClosed(body)
      } catch (err) {
        if (this.done) return
        // The cursor makes a retry safe: the server sends again whatever was not confirmed.
        if (++failures > 2) return this.finish({ code: 1006, reason: `long-poll failed: ${err instanceof Error ? err.message : String(err)}` })
        await new Promise((r) => setTimeout(r, 250 * failures))
      }
    }
  }
}
