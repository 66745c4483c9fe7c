import { randomBytes } from 'node:crypto'
import type { Hub, HubEvents } from '@tidings/core'
import { WEBHOOK_ATTEMPT_HEADER, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, secretList, signatureHeader, type WebhookSecret } from './signature.js'

/** The kinds of events a webhook endpoint may ask for. */
export const WEBHOOK_EVENT_NAMES = ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed', 'client_event'] as const
export type WebhookEventName = (typeof WEBHOOK_EVENT_NAMES)[number]

export interface WebhookEndpoint {
  /** Where batches are POSTed (http or https). */
  readonly url: string | URL
  /**
   * The signing secret, or a list during a rotation: each request carries one `v1=` signature per
   * secret, so receivers holding either the new or the old one verify it.
   */
  readonly secret: WebhookSecret | readonly WebhookSecret[]
  /** Which events this endpoint receives. */
  readonly events: readonly WebhookEventName[]
  /**
   * Only events on channels matching one of these patterns (`*` matches any run of characters,
   * e.g. `chat:*`). Default: every channel. The hub's own `$…` channels are never sent.
   */
  readonly channels?: string | readonly string[]
  /** Extra request headers (never replacing the `Tidings-*`, `Content-Type` ones). */
  readonly headers?: Readonly<Record<string, string>>
  /** A name in reports (default: the URL's origin and path). */
  readonly name?: string
}

export interface WebhooksOptions {
  readonly endpoints: WebhookEndpoint | readonly WebhookEndpoint[]
  /** How long an event may wait for others to share its request. Default 100 ms. */
  readonly batchMs?: number
  /** Events per request at most. Default 100. */
  readonly maxBatch?: number
  /** Bytes of events per request at most (an event larger than this goes alone). Default 256 KiB. */
  readonly maxBatchBytes?: number
  /** Events waiting per endpoint (besides the batch in flight); past it the oldest are dropped and reported. Default 10,000. */
  readonly maxQueued?: number
  /** Attempts per batch, the first included. Default 8. */
  readonly maxAttempts?: number
  /** A batch not acknowledged this long after its first attempt is given up (reported). Default 10 min. */
  readonly maxAgeMs?: number
  /** Backoff before the second attempt; doubled each time, with jitter. Default 500 ms. */
  readonly initialDelayMs?: number
  /** Backoff ceiling (also for a `Retry-After` answer). Default 30 s. */
  readonly maxDelayMs?: number
  /** Per-request timeout, until the response's status arrives. Default 10 s. */
  readonly timeoutMs?: number
  /** How long `close()` keeps delivering what is queued. Default 5 s. */
  readonly closeTimeoutMs?: number
  /**
   * Hears every loss: a batch given up (`failed`) or events dropped (`dropped`: queue full,
   * closed before delivery, not serializable). Default: `hub.report(error, 'webhooks')`, so the
   * hub's `onError`, logger and `error` event hear of it.
   */
  readonly onError?: (error: WebhookError) => void
  /** The fetch to send with (default the global one; give your own for a proxy or mTLS agent). */
  readonly fetch?: typeof fetch
  /** The current time in ms (default `Date.now`). */
  readonly now?: () => number
  /** Random numbers in [0, 1) for the jitter (default `Math.random`). */
  readonly random?: () => number
}

/** A loss of webhook events, with the ids of the events lost. Never silent. */
export class WebhookError extends Error {
  override readonly name = 'WebhookError'
  constructor(
    readonly kind: 'failed' | 'dropped',
    readonly endpoint: string,
    readonly eventIds: readonly string[],
    message: string,
    readonly details: { readonly batchId?: string; readonly attempts?: number; readonly status?: number; readonly reason: string },
  ) {
    super(message)
  }
}

/** What happens to batches, for metrics and tests (`webhooks.on(name, listener)`). */
export interface WebhookReports {
  /** A request was answered 2xx: its events are delivered and never sent again. */
  delivered: (e: { endpoint: string; batchId: string; eventIds: readonly string[]; attempts: number; status: number }) => void
  /** An attempt failed and the batch will be sent again after `delayMs`. */
  retry: (e: { endpoint: string; batchId: string; attempt: number; delayMs: number; status: number | undefined; reason: string }) => void
  /** A batch was given up (a 4xx other than 408/429, or attempts or age used up). Also passed to `onError`. */
  failed: (e: WebhookError) => void
  /** Events dropped before they were sent (queue full, closed, not serializable). Also passed to `onError`. */
  dropped: (e: WebhookError) => void
}

export interface WebhookEndpointStats {
  readonly endpoint: string
  /** Requests made (retries included). */
  readonly requests: number
  /** Requests that were retries. */
  readonly retries: number
  /** Events acknowledged with a 2xx. */
  readonly acknowledged: number
  /** Events in batches given up. */
  readonly failed: number
  /** Events dropped before being sent. */
  readonly dropped: number
  /** Events waiting, and in the batch in flight. */
  readonly queued: number
  readonly inFlight: number
}

export interface Webhooks {
  on<K extends keyof WebhookReports>(event: K, listener: WebhookReports[K]): () => void
  stats(): WebhookEndpointStats[]
  /** Send what is queued without waiting for `batchMs`; resolves once every endpoint is idle (delivered, failed or dropped). */
  flush(): Promise<void>
  /**
   * Stop listening to the hub, deliver what is queued (retries included) for at most
   * `closeTimeoutMs`, then abort what is left (reported as dropped) and stop every timer.
   */
  close(options?: { timeoutMs?: number }): Promise<void>
}

interface Item {
  readonly id: string
  readonly json: string
  readonly bytes: number
  readonly at: number
}

interface Batch {
  readonly id: string
  readonly items: Item[]
  readonly body: string
  attempts: number
  firstAttemptAt: number
}

type Report = <K extends keyof WebhookReports>(event: K, ...args: Parameters<WebhookReports[K]>) => void

interface Settings {
  readonly batchMs: number
  readonly maxBatch: number
  readonly maxBatchBytes: number
  readonly maxQueued: number
  readonly maxAttempts: number
  readonly maxAgeMs: number
  readonly initialDelayMs: number
  readonly maxDelayMs: number
  readonly timeoutMs: number
  readonly fetch: typeof fetch
  readonly now: () => number
  readonly random: () => number
  readonly newId: (prefix: string) => string
  readonly report: Report
  readonly lost: (error: WebhookError) => void
}

const USER_AGENT = 'tidings-webhooks/1'
/** While a queue keeps overflowing, its drops are reported at most this often. */
const DROP_REPORT_MS = 1_000

/** `*` matches any run of characters; everything else literally. */
function globMatcher(patterns: readonly string[]): (channel: string) => boolean {
  if (patterns.length === 0) return () => true
  const res = patterns.map((p) => new RegExp(`^${p.split('*').map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 's'))
  return (channel) => res.some((re) => re.test(channel))
}

/** One endpoint's queue: events in order, one batch in flight at a time. */
class EndpointQueue {
  readonly name: string
  readonly wants: ReadonlySet<WebhookEventName>
  readonly matches: (channel: string) => boolean
  private readonly url: string
  private readonly secrets: WebhookSecret[]
  private readonly headers: Record<string, string>
  private pending: Item[] = []
  private head = 0
  private inflight: Batch | null = null
  private timer: ReturnType<typeof setTimeout> | null = null
  private abort: AbortController | null = null
  /** Send without waiting for batchMs (flush, close). */
  private eager = false
  private stopped = false
  private idleWaiters: Array<() => void> = []
  private droppedIds: string[] = []
  private dropTimer: ReturnType<typeof setTimeout> | null = null
  private dropReportScheduled = false
  private lastDropReport = -Infinity
  private counts = { requests: 0, retries: 0, acknowledged: 0, failed: 0, dropped: 0 }

  constructor(
    endpoint: WebhookEndpoint,
    private readonly s: Settings,
  ) {
    const url = new URL(String(endpoint.url))
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`webhook endpoint ${url.href}: only http and https URLs`)
    this.url = url.href
    this.name = endpoint.name ?? `${url.origin}${url.pathname}`
    this.secrets = secretList(endpoint.secret, `webhook endpoint ${this.name}`)
    if (!Array.isArray(endpoint.events) || endpoint.events.length === 0) throw new TypeError(`webhook endpoint ${this.name}: events must list at least one of ${WEBHOOK_EVENT_NAMES.join(', ')}`)
    for (const e of endpoint.events) if (!(WEBHOOK_EVENT_NAMES as readonly string[]).includes(e)) throw new TypeError(`webhook endpoint ${this.name}: unknown event '${e}' (known: ${WEBHOOK_EVENT_NAMES.join(', ')})`)
    this.wants = new Set(endpoint.events)
    this.matches = globMatcher(endpoint.channels === undefined ? [] : typeof endpoint.channels === 'string' ? [endpoint.channels] : [...endpoint.channels])
    const own = new Set(['content-type', 'user-agent', ...[WEBHOOK_ID_HEADER, WEBHOOK_TIMESTAMP_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_ATTEMPT_HEADER].map((h) => h.toLowerCase())])
    this.headers = {}
    for (const [k, v] of Object.entries(endpoint.headers ?? {})) if (!own.has(k.toLowerCase())) this.headers[k] = v
  }

  get queued(): number {
    return this.pending.length - this.head
  }

  stats(): WebhookEndpointStats {
    return { endpoint: this.name, ...this.counts, queued: this.queued, inFlight: this.inflight?.items.length ?? 0 }
  }

  enqueue(item: Item): void {
    if (this.stopped) return
    this.pending.push(item)
    if (this.queued > this.s.maxQueued) {
      const over = this.queued - this.s.maxQueued
      for (let i = 0; i < over; i++) this.droppedIds.push(this.pending[this.head + i]!.id)
      this.head += over
      this.compact()
      this.scheduleDropReport()
    }
    this.kick()
  }

  /** Send eagerly until idle; resolves when nothing is queued or in flight. */
  drain(): Promise<void> {
    this.eager = true
    const done = new Promise<void>((resolve) => this.idleWaiters.push(resolve))
    if (this.timer !== null && this.inflight === null) {
      // A batch timer (not a retry backoff): send now.
      clearTimeout(this.timer)
      this.timer = null
    }
    this.kick()
    this.checkIdle()
    return done
  }

  /** Abort what is in flight and report everything not delivered as dropped; no timer is left. */
  stop(reason: string): void {
    if (this.stopped) return
    this.stopped = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.abort?.abort(new Error(reason))
    this.reportDrops(`queue full (maxQueued ${this.s.maxQueued}): oldest events dropped`)
    const lost = [...(this.inflight?.items ?? []), ...this.pending.slice(this.head)].map((i) => i.id)
    this.inflight = null
    this.pending = []
    this.head = 0
    this.droppedIds.push(...lost)
    this.reportDrops(reason)
    this.resolveIdle()
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head)
      this.head = 0
    }
  }

  /**
   * Drops are reported at once, then at most once per DROP_REPORT_MS while the queue keeps
   * overflowing (and whenever the endpoint goes idle or stops): one report per burst, not one
   * per event, and never none.
   */
  private scheduleDropReport(): void {
    if (this.dropReportScheduled || this.dropTimer !== null) return
    const wait = this.lastDropReport + DROP_REPORT_MS - this.s.now()
    const fire = () => {
      this.dropReportScheduled = false
      this.dropTimer = null
      this.reportDrops(`queue full (maxQueued ${this.s.maxQueued}): oldest events dropped`)
    }
    if (wait <= 0) {
      this.dropReportScheduled = true
      queueMicrotask(fire)
    } else this.dropTimer = setTimeout(fire, wait)
  }

  private reportDrops(reason: string): void {
    if (this.dropTimer !== null) clearTimeout(this.dropTimer)
    this.dropTimer = null
    if (this.droppedIds.length === 0) return
    this.lastDropReport = this.s.now()
    const ids = this.droppedIds
    this.droppedIds = []
    this.counts.dropped += ids.length
    const err = new WebhookError('dropped', this.name, ids, `webhooks: ${ids.length} event(s) for ${this.name} dropped: ${reason}`, { reason })
    this.s.report('dropped', err)
    this.s.lost(err)
  }

  /** Start a batch when none is in flight and no timer is set. */
  private kick(): void {
    if (this.stopped || this.inflight !== null || this.timer !== null || this.queued === 0) return
    const oldest = this.pending[this.head]!
    const wait = this.eager || this.queued >= this.s.maxBatch ? 0 : oldest.at + this.s.batchMs - this.s.now()
    if (wait <= 0) {
      this.startBatch()
      return
    }
    this.timer = setTimeout(() => {
      this.timer = null
      this.startBatch()
    }, wait)
  }

  private startBatch(): void {
    if (this.stopped || this.inflight !== null || this.queued === 0) return
    const items: Item[] = []
    let bytes = 0
    while (this.queued > 0 && items.length < this.s.maxBatch) {
      const next = this.pending[this.head]!
      if (items.length > 0 && bytes + next.bytes > this.s.maxBatchBytes) break
      items.push(next)
      bytes += next.bytes + 1
      this.head++
    }
    if (this.queued === 0) {
      this.pending = []
      this.head = 0
    } else this.compact()
    const id = this.s.newId('whb_')
    const body = `{"id":${JSON.stringify(id)},"time_ms":${this.s.now()},"events":[${items.map((i) => i.json).join(',')}]}`
    this.inflight = { id, items, body, attempts: 0, firstAttemptAt: this.s.now() }
    void this.attempt(this.inflight)
  }

  private async attempt(batch: Batch): Promise<void> {
    batch.attempts++
    if (batch.attempts === 1) batch.firstAttemptAt = this.s.now()
    else this.counts.retries++
    this.counts.requests++
    const timestamp = Math.floor(this.s.now() / 1000)
    const controller = new AbortController()
    this.abort = controller
    const timeout = setTimeout(() => controller.abort(new Error(`timed out after ${this.s.timeoutMs} ms`)), this.s.timeoutMs)
    let status: number | undefined
    let retryAfterMs: number | undefined
    let error: string | undefined
    try {
      const res = await this.s.fetch(this.url, {
        method: 'POST',
        body: batch.body,
        redirect: 'manual',
        signal: controller.signal,
        headers: {
          ...this.headers,
          'content-type': 'application/json',
          'user-agent': USER_AGENT,
          [WEBHOOK_ID_HEADER]: batch.id,
          [WEBHOOK_TIMESTAMP_HEADER]: String(timestamp),
          [WEBHOOK_SIGNATURE_HEADER]: signatureHeader(this.secrets, timestamp, batch.body),
          [WEBHOOK_ATTEMPT_HEADER]: String(batch.attempts),
        },
      })
      status = res.status
      retryAfterMs = parseRetryAfter(res.headers.get('retry-after'), this.s.now())
      // The answer's body is not read: discard it so the connection can be reused.
      await res.body?.cancel().catch(() => undefined)
    } catch (err) {
      error = controller.signal.aborted ? String((controller.signal.reason as Error | undefined)?.message ?? 'aborted') : `connection failed: ${(err as Error)?.message ?? String(err)}${causeOf(err)}`
    } finally {
      clearTimeout(timeout)
      if (this.abort === controller) this.abort = null
    }
    if (this.stopped || this.inflight !== batch) return

    const eventIds = batch.items.map((i) => i.id)
    if (status !== undefined && status >= 200 && status < 300) {
      this.counts.acknowledged += batch.items.length
      this.inflight = null
      this.s.report('delivered', { endpoint: this.name, batchId: batch.id, eventIds, attempts: batch.attempts, status })
      this.next()
      return
    }
    const retryable = status === undefined || status === 408 || status === 429 || status >= 500
    const reason = status !== undefined ? `answered ${status}` : error!
    if (retryable && batch.attempts < this.s.maxAttempts) {
      const base = Math.min(this.s.maxDelayMs, this.s.initialDelayMs * 2 ** (batch.attempts - 1))
      // Equal jitter: between half the step and the whole step, so delays still grow.
      let delayMs = Math.round(base / 2 + (this.s.random() * base) / 2)
      if (retryAfterMs !== undefined) delayMs = Math.min(this.s.maxDelayMs, Math.max(delayMs, retryAfterMs))
      if (this.s.now() + delayMs - batch.firstAttemptAt <= this.s.maxAgeMs) {
        this.s.report('retry', { endpoint: this.name, batchId: batch.id, attempt: batch.attempts, delayMs, status, reason })
        this.timer = setTimeout(() => {
          this.timer = null
          if (!this.stopped && this.inflight === batch) void this.attempt(batch)
        }, delayMs)
        return
      }
    }
    const why = !retryable ? `${reason} (not retried)` : batch.attempts >= this.s.maxAttempts ? `${reason}; gave up after ${batch.attempts} attempts` : `${reason}; gave up: older than maxAgeMs ${this.s.maxAgeMs}`
    this.counts.failed += batch.items.length
    this.inflight = null
    const err = new WebhookError('failed', this.name, eventIds, `webhooks: batch ${batch.id} of ${eventIds.length} event(s) to ${this.name} failed: ${why}`, {
      batchId: batch.id,
      attempts: batch.attempts,
      status,
      reason: why,
    })
    this.s.report('failed', err)
    this.s.lost(err)
    this.next()
  }

  private next(): void {
    this.kick()
    this.checkIdle()
  }

  private checkIdle(): void {
    if (this.inflight === null && this.queued === 0) this.resolveIdle()
  }

  private resolveIdle(): void {
    this.reportDrops(`queue full (maxQueued ${this.s.maxQueued}): oldest events dropped`)
    this.eager = false
    const waiters = this.idleWaiters
    this.idleWaiters = []
    for (const w of waiters) w()
  }
}

function causeOf(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } } | null)?.cause
  return cause ? ` (${cause.code ?? cause.message ?? String(cause)})` : ''
}

/** `Retry-After`: seconds, or an HTTP date. */
function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}

function positive(name: string, value: number | undefined, fallback: number, min = 0): number {
  const v = value ?? fallback
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new TypeError(`createWebhooks: ${name} must be a number ≥ ${min}`)
  return v
}

/**
 * Send the hub's events to webhook endpoints: batched, signed (HMAC-SHA256 over the timestamp
 * and the body), retried with exponential backoff and jitter, in order per endpoint (one batch
 * in flight each), with a bounded queue whose losses are always reported.
 */
export function createWebhooks(hub: Hub, options: WebhooksOptions): Webhooks {
  const listeners = new Map<keyof WebhookReports, Set<(...args: never[]) => void>>()
  const report: Report = (event, ...args) => {
    for (const l of listeners.get(event) ?? []) {
      try {
        ;(l as (...a: unknown[]) => void)(...args)
      } catch (err) {
        hub.report(err, `webhooks.listener:${event}`)
      }
    }
  }
  const onError = options.onError ?? ((err: WebhookError) => hub.report(err, 'webhooks'))
  const lost = (err: WebhookError): void => {
    try {
      onError(err)
    } catch (e) {
      hub.report(e, 'webhooks.onError')
    }
  }
  const prefix = randomBytes(9).toString('base64url')
  let seq = 0
  const settings: Settings = {
    batchMs: positive('batchMs', options.batchMs, 100),
    maxBatch: positive('maxBatch', options.maxBatch, 100, 1),
    maxBatchBytes: positive('maxBatchBytes', options.maxBatchBytes, 256 * 1024, 1),
    maxQueued: positive('maxQueued', options.maxQueued, 10_000, 1),
    maxAttempts: positive('maxAttempts', options.maxAttempts, 8, 1),
    maxAgeMs: positive('maxAgeMs', options.maxAgeMs, 10 * 60_000),
    initialDelayMs: positive('initialDelayMs', options.initialDelayMs, 500),
    maxDelayMs: positive('maxDelayMs', options.maxDelayMs, 30_000),
    timeoutMs: positive('timeoutMs', options.timeoutMs, 10_000, 1),
    fetch: options.fetch ?? globalThis.fetch,
    now: options.now ?? Date.now,
    random: options.random ?? Math.random,
    newId: (p) => `${p}${prefix}${(seq++).toString(36)}`,
    report,
    lost,
  }
  if (typeof settings.fetch !== 'function') throw new TypeError('createWebhooks: no fetch (Node ≥ 20 has one; or pass options.fetch)')
  const closeTimeoutMs = positive('closeTimeoutMs', options.closeTimeoutMs, 5_000)
  const list = Array.isArray(options.endpoints) ? (options.endpoints as readonly WebhookEndpoint[]) : [options.endpoints as WebhookEndpoint]
  if (list.length === 0) throw new TypeError('createWebhooks: at least one endpoint')
  const endpoints = list.map((e) => new EndpointQueue(e, settings))
  const wanted = (name: WebhookEventName) => endpoints.some((e) => e.wants.has(name))

  const emit = (name: WebhookEventName, channel: string, fields: Record<string, unknown>): void => {
    // The hub's own bookkeeping channels (`$…`) are nobody's business.
    if (channel.startsWith('$')) return
    let item: Item | undefined
    for (const endpoint of endpoints) {
      if (!endpoint.wants.has(name) || !endpoint.matches(channel)) continue
      if (item === undefined) {
        const at = settings.now()
        const id = settings.newId('evt_')
        let json: string
        try {
          json = JSON.stringify({ id, name, channel, ...fields, node: hub.nodeId, time_ms: at })
        } catch (err) {
          const e = new WebhookError('dropped', endpoint.name, [id], `webhooks: a ${name} event on ${channel} is not serializable: ${(err as Error).message}`, { reason: 'not serializable' })
          report('dropped', e)
          lost(e)
          return
        }
        item = { id, json, bytes: Buffer.byteLength(json, 'utf8'), at }
      }
      endpoint.enqueue(item)
    }
  }

  const hooks: { [K in keyof HubEvents]?: HubEvents[K] } = {}
  if (wanted('channel_occupied')) hooks['channel:occupied'] = (e) => emit('channel_occupied', e.channel, {})
  if (wanted('channel_vacated')) hooks['channel:vacated'] = (e) => emit('channel_vacated', e.channel, {})
  if (wanted('member_added')) hooks['presence:join'] = (e) => emit('member_added', e.channel, { user_id: e.member.id })
  if (wanted('member_removed')) hooks['presence:leave'] = (e) => emit('member_removed', e.channel, { user_id: e.member.id })
  if (wanted('client_event')) {
    hooks.publish = (e) => {
      // Client events only: a publish made by a connection (not server code, not a route).
      if (e.connectionId === undefined) return
      emit('client_event', e.channel, { event: e.message.event, data: e.message.data, user_id: e.message.sender ?? null, connection_id: e.connectionId, message_id: e.message.id })
    }
  }
  const subscribed = Object.entries(hooks) as Array<[keyof HubEvents, (...args: never[]) => void]>
  for (const [event, fn] of subscribed) hub.on(event, fn as never)

  let closing: Promise<void> | null = null
  return {
    on(event, listener) {
      let set = listeners.get(event)
      if (!set) listeners.set(event, (set = new Set()))
      set.add(listener as (...args: never[]) => void)
      return () => void set.delete(listener as (...args: never[]) => void)
    },
    stats: () => endpoints.map((e) => e.stats()),
    flush: async () => {
      await Promise.all(endpoints.map((e) => e.drain()))
    },
    close(o = {}) {
      if (closing) return closing
      for (const [event, fn] of subscribed) hub.off(event, fn as never)
      const timeoutMs = o.timeoutMs ?? closeTimeoutMs
      closing = (async () => {
        let timer: ReturnType<typeof setTimeout> | undefined
        const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))
        await Promise.race([Promise.all(endpoints.map((e) => e.drain())), deadline])
        clearTimeout(timer)
        for (const e of endpoints) e.stop(`closed before delivery (closeTimeoutMs ${timeoutMs})`)
      })()
      return closing
    },
  }
}
