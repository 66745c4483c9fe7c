import type { ClientFrame, ServerFrame } from '@tidings/protocol'
import { FramePoster, fetchWithTimeout, refusal, releaseSession, resolveFetch } from './http.js'
import { SseParser } from './sse-parser.js'
import {
  type ClientTransport,
  type Credentials,
  type EventSourceConstructorLike,
  type EventSourceLike,
  type FetchLike,
  type StreamReaderLike,
  type TransportCloseInfo,
  type TransportHandlers,
  type TransportOptions,
  SECRET_HEADER,
  endpoint,
  parseServerFrame,
} from './types.js'

/** Every server frame type: a browser `EventSource` needs one listener per event name. */
const FRAME_TYPES = [
  'connected', 'subscribed', 'unsubscribed', 'message', 'history', 'published', 'presence:join', 'presence:leave',
  'presence:update', 'presence', 'typing', 'receipt', 'error', 'pong', 'authenticated', 'auth:expiring',
] as const

const CLOSED = 2

/**
 * Server-Sent Events transport: `GET <url>/sse` streams frames (`id: <session>:<seq>`), frames
 * to the server are POSTed to `<url>/sse/<session>` with the session secret. A stream that
 * breaks is re-attached to the same session with `Last-Event-ID`, so the hub connection and its
 * subscriptions survive it and nothing is lost; only when that fails does the transport report
 * a close. The hub closing the connection arrives as an `event: close` with its code and reason.
 *
 * Browsers use `EventSource` (which re-attaches by itself; credentials then go in the query);
 * elsewhere (Node) the stream is read with `fetch` and parsed here, and credentials go in headers.
 */
export class SseTransport implements ClientTransport {
  readonly name = 'sse'
  private handlers: TransportHandlers | undefined
  private poster: FramePoster | undefined
  private session: string | undefined
  private sessionUrl: string | undefined
  private secret = ''
  private done = false
  private opened = false
  private retryMs = 1000
  private readonly timeoutMs: number
  // fetch mode
  private reader: StreamReaderLike | undefined
  private readonly controller = new AbortController()
  // EventSource mode
  private source: EventSourceLike | undefined

  constructor(private readonly options: TransportOptions) {
    this.timeoutMs = options.requestTimeoutMs ?? 15_000
  }

  connect(url: string, credentials: Credentials, handlers: TransportHandlers): void {
    this.handlers = handlers
    const fetch = resolveFetch(this.options)
    if (!fetch) return this.failSoon({ code: 1006, reason: 'no fetch implementation: pass one as the fetch option' })
    this.poster = new FramePoster(
      fetch,
      this.timeoutMs,
      { refused: (frames) => frames.forEach((f) => this.deliver(f)), failed: (info) => this.finish(info) },
      this.options.withCredentials === true,
    )
    const EventSource = this.options.EventSource ?? (this.options.fetch ? undefined : (globalThis as { EventSource?: EventSourceConstructorLike }).EventSource)
    if (EventSource) this.openSource(EventSource, url, credentials)
    else void this.stream(fetch, url, credentials)
  }

  send(frame: ClientFrame): void {
    if (!this.done) this.poster?.push(frame)
  }

  close(): void {
    if (this.done) return
    this.done = true
    this.stop()
    // Let the server end the session now rather than at its timeout (a server without DELETE answers 404).
    if (this.sessionUrl !== undefined) releaseSession(this.options, this.sessionUrl, this.secret, this.timeoutMs)
  }

  // ---------------------------------------------------------------- shared

  private deliver(frame: ServerFrame): void {
    if (!this.done) this.handlers?.frame(frame)
  }

  /** One SSE event: the session announcement, or a frame. */
  private event(name: string, data: string, url: string): void {
    if (this.done) return
    if (name === 'session') {
      try {
        const s = JSON.parse(data) as { session?: unknown; secret?: unknown }
        if (typeof s.session === 'string' && typeof s.secret === 'string' && s.session !== this.session) {
          this.session = s.session
          this.sessionUrl = endpoint(url, `/sse/${encodeURIComponent(s.session)}`).toString()
          this.secret = s.secret
          this.poster?.start(this.sessionUrl, s.secret)
        }
      } catch {
        // malformed: ignore
      }
      return
    }
    if (name === 'close') {
      // The hub closed the connection: the session is gone, so this is not a broken stream to re-attach.
      let info: TransportCloseInfo = { code: 1006, reason: 'closed by the server' }
      try {
        const c = JSON.parse(data) as { code?: unknown; reason?: unknown }
        if (typeof c.code === 'number') info = { code: c.code, reason: typeof c.reason === 'string' ? c.reason : '' }
      } catch {
        // keep the default
      }
      return this.finish(info)
    }
    const frame = parseServerFrame(data)
    if (frame) this.deliver(frame)
  }

  private opening(): void {
    if (this.opened || this.done) return
    this.opened = true
    this.handlers?.open()
  }

  private stop(): void {
    this.poster?.stop()
    this.controller.abort()
    void this.reader?.cancel().catch(() => {})
    this.source?.close()
  }

  private finish(info: TransportCloseInfo): void {
    if (this.done) return
    this.done = true
    this.stop()
    this.handlers?.close(info)
  }

  private failSoon(info: TransportCloseInfo): void {
    queueMicrotask(() => this.finish(info))
  }

  // ---------------------------------------------------------------- fetch mode (Node)

  private async stream(fetch: FetchLike, url: string, credentials: Credentials): Promise<void> {
    const parser = new SseParser(
      (e) => this.event(e.event, e.data, url),
      (ms) => (this.retryMs = ms),
    )
    const decoder = new TextDecoder()
    // Re-attach attempts after a broken stream: at once, then after the server's `retry:` delay.
    let resumes = 0
    for (;;) {
      const headers: Record<string, string> = { accept: 'text/event-stream' }
      if (credentials.token !== undefined) headers['authorization'] = `Bearer ${credentials.token}`
      if (credentials.apiKey !== undefined) headers['x-api-key'] = credentials.apiKey
      if (this.session !== undefined) {
        // Re-attaching to the session: the server wants its secret, as on every request of the session.
        headers['last-event-id'] = parser.lastEventId || `${this.session}:0`
        headers[SECRET_HEADER] = this.secret
      }
      let broken: TransportCloseInfo
      try {
        const res = await fetchWithTimeout(
          fetch,
          endpoint(url, '/sse').toString(),
          { method: 'GET', headers, ...(this.options.withCredentials ? { credentials: 'include' as const } : {}) },
          this.timeoutMs,
          this.controller.signal,
        )
        if (this.done) return void res.body?.getReader().cancel().catch(() => {})
        if (!res.ok || !res.body) {
          const r = await refusal(res)
          if (r.frame) this.deliver(r.frame)
          return this.finish(r.close)
        }
        this.opening()
        resumes = 0
        const reader = (this.reader = res.body.getReader())
        for (;;) {
          const { done, value } = await reader.read()
          if (this.done) return
          if (done) break
          if (value) parser.push(decoder.decode(value, { stream: true }))
        }
        broken = { code: 1006, reason: 'event stream ended' }
      } catch (err) {
        if (this.done) return
        broken = { code: 1006, reason: `event stream failed: ${err instanceof Error ? err.message : String(err)}` }
      }
      // Only a stream that was open has a session worth re-attaching to.
      if (this.session === undefined || resumes >= 2) return this.finish(broken)
      if (resumes++ > 0) await new Promise((r) => setTimeout(r, this.retryMs))
      if (this.done) return
    }
  }

  // ---------------------------------------------------------------- EventSource mode (browsers)

  private openSource(EventSource: EventSourceConstructorLike, url: string, credentials: Credentials): void {
    let source: EventSourceLike
    try {
      const target = endpoint(url, '/sse', { token: credentials.token, apiKey: credentials.apiKey }).toString()
      source = new EventSource(target, { withCredentials: this.options.withCredentials === true })
    } catch (err) {
      return this.failSoon({ code: 1006, reason: err instanceof Error ? err.message : 'could not open an EventSource' })
    }
    this.source = source
    for (const type of [...FRAME_TYPES, 'session', 'close']) {
      source.addEventListener(type, (e: { data?: unknown }) => {
        if (this.done || source !== this.source) return
        if (typeof e.data === 'string') this.event(type, e.data, url)
      })
    }
    source.onopen = () => {
      if (source !== this.source) return
      this.opening()
    }
    source.onerror = () => {
      if (this.done || source !== this.source) return
      // An EventSource cannot send the session secret (a header), and a secret in the URL would
      // reach access logs: a broken stream is not re-attached. The browser's own retry is stopped,
      // and the transport ends; the client opens a new session and resumes its channels from
      // their offsets.
      source.close()
      this.finish({ code: 1006, reason: this.opened ? 'event stream lost' : 'event stream failed' })
    }
  }
}
