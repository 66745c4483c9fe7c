/**
 * The SSE suites' client: a tiny EventSource over fetch, and helpers to open, connect and post.
 */
import type http from 'node:http'
import type { Hub, HubOptions } from '@tidings/core'
import { expect } from 'vitest'
import { cleanups, serveTransport, sleep } from '../../http-kit/test/support.js'
import { createSseTransport, type SseTransport, type SseTransportOptions } from '../src/index.js'

// ------------------------------------------------------------------ harness

export interface SseEvent {
  readonly id: string | undefined
  readonly event: string
  readonly data: string
}

/** A tiny SSE client over fetch: parses the stream as the EventSource algorithm does. */
export class SseStream {
  readonly events: SseEvent[] = []
  readonly comments: string[] = []
  retry: number | undefined
  ended = false
  private waiters: Array<() => void> = []

  constructor(
    readonly res: Response,
    private readonly ctrl: AbortController,
  ) {
    void this.pump()
  }

  private async pump(): Promise<void> {
    const reader = this.res.body!.pipeThrough(new TextDecoderStream()).getReader()
    let buf = ''
    let data: string[] = []
    let event = ''
    let id: string | undefined
    const line = (l: string) => {
      if (l === '') {
        if (data.length > 0) this.events.push({ id, event: event || 'message', data: data.join('\n') })
        data = []
        event = ''
        id = undefined
        return
      }
      if (l.startsWith(':')) return void this.comments.push(l.slice(1).trim())
      const c = l.indexOf(':')
      const field = c < 0 ? l : l.slice(0, c)
      const value = c < 0 ? '' : l.slice(c + 1).replace(/^ /, '')
      if (field === 'data') data.push(value)
      else if (field === 'event') event = value
      else if (field === 'id') id = value
      else if (field === 'retry') this.retry = Number(value)
    }
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        buf += value
        let m: RegExpExecArray | null
        while ((m = /\r\n|\r|\n/.exec(buf)) !== null) {
          line(buf.slice(0, m.index))
          buf = buf.slice(m.index + m[0].length)
        }
        this.notify()
      }
    } catch {
      // aborted
    }
    this.ended = true
    this.notify()
  }

  private notify(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  /** Wait until `check` returns something (re-checked after every chunk). */
  async until<T>(check: () => T | undefined | false, ms = 3000): Promise<T> {
    const deadline = Date.now() + ms
    for (;;) {
      const r = check()
      if (r !== undefined && r !== false) return r
      if (this.ended) throw new Error('stream ended')
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out; events: ${JSON.stringify(this.events)}`)
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left)
        this.waiters.push(() => {
          clearTimeout(t)
          resolve()
        })
      })
    }
  }

  /** Protocol frames (every event but `session` and `close`), parsed. */
  frames(): Array<Record<string, any>> {
    return this.events.filter((e) => e.event !== 'session' && e.event !== 'close').map((e) => JSON.parse(e.data))
  }

  frame(type: string, match: (f: Record<string, any>) => boolean = () => true): Promise<Record<string, any>> {
    return this.until(() => this.frames().find((f) => f.type === type && match(f)))
  }

  async waitEnd(ms = 3000): Promise<void> {
    const deadline = Date.now() + ms
    while (!this.ended) {
      if (Date.now() > deadline) throw new Error('stream did not end')
      await sleep(10)
    }
  }

  abort(): void {
    this.ctrl.abort()
  }
}

export interface Setup {
  hub: Hub
  transport: SseTransport
  base: string
  server: http.Server
}

export function setup(options: SseTransportOptions = {}, hubOptions: HubOptions = {}, app?: (t: SseTransport) => http.RequestListener): Promise<Setup> {
  return serveTransport((hub) => createSseTransport(hub, options), hubOptions, app)
}

export interface Client {
  stream: SseStream
  session: string
  secret: string
  connectionId: string
  post(body: unknown, opts?: { secret?: string; raw?: string; session?: string }): Promise<Response>
}

export async function open(base: string, opts: { token?: string; headers?: Record<string, string>; prefix?: string; query?: string } = {}): Promise<SseStream> {
  const ctrl = new AbortController()
  const params = new URLSearchParams(opts.query ?? '')
  if (opts.token) params.set('token', opts.token)
  const q = params.size > 0 ? `?${params}` : ''
  const res = await fetch(`${base}${opts.prefix ?? '/realtime'}/sse${q}`, { headers: opts.headers ?? {}, signal: ctrl.signal })
  const stream = new SseStream(res, ctrl)
  cleanups.push(() => stream.abort())
  return stream
}

export async function connect(base: string, opts: { token?: string; headers?: Record<string, string>; query?: string } = {}): Promise<Client> {
  const stream = await open(base, opts)
  expect(stream.res.status).toBe(200)
  const session = JSON.parse((await stream.until(() => stream.events.find((e) => e.event === 'session'))).data) as { session: string; secret: string }
  const connected = await stream.frame('connected')
  return {
    stream,
    session: session.session,
    secret: session.secret,
    connectionId: connected.connectionId,
    post: (body, o = {}) =>
      fetch(`${base}/realtime/sse/${o.session ?? session.session}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-tidings-secret': o.secret ?? session.secret },
        body: o.raw ?? JSON.stringify(body),
      }),
  }
}

