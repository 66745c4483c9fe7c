import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { ABNORMAL_CLOSE_CODES, type Hub, type HistogramSnapshot, type MessageStore, type MetricsSnapshot, RealtimeError } from '@tidings/core'
import { collectDefaultMetrics, type Metric, Registry } from 'prom-client'
import { type ApiKeys, authorizeApiKey } from './api-keys.js'
import { sendError, sendJson } from './respond.js'

/** `createRealtime({ metrics })`: the Prometheus endpoint `GET <prefix>/metrics`. */
export interface MetricsOptions {
  /**
   * Bearer token(s) a scraper may send (`Authorization: Bearer …`; in Prometheus,
   * `authorization: { credentials: … }` in the scrape config), compared in constant time.
   */
  readonly token?: string | readonly string[]
  /**
   * No credential at all, as most exporters are: only where the endpoint cannot be reached from
   * the internet (a private port, a proxy rule), since it names the busiest channels. Default
   * false: a scrape needs `token`, or else it is an admin API request (API key, scope `read`).
   */
  readonly open?: boolean
  /** Channels named in `tidings_channel_subscriptions` (those with most subscribers; the rest add up under `channel="other"`). Default 10; 0 names none. */
  readonly channelLabels?: number
  /** The connections this node is sized for: exported as `tidings_connections_capacity`, which the capacity alert compares with. */
  readonly capacity?: number
  /** Also prom-client's default process metrics (CPU, memory, event loop lag, GC; names `process_*`, `nodejs_*`). Default false. */
  readonly processMetrics?: boolean
  /**
   * A message store to probe on each scrape (`tidings_store_up`, one read of a position that
   * creates nothing, at most `storeProbeTimeoutMs`). Default: the `hubOptions.store` of a hub
   * `createRealtime` creates; none for a hub passed in (give its store here).
   */
  readonly store?: MessageStore
  /** Default 1,000 ms. */
  readonly storeProbeTimeoutMs?: number
}

/** What one scrape reads, once for every metric. */
interface Scrape {
  readonly m: MetricsSnapshot
  readonly health: ReturnType<Hub['health']>
  /** 1 up, 0 down; undefined when no store is probed. */
  readonly storeUp: number | undefined
  readonly storeProbeSeconds: number | undefined
}

interface Value {
  readonly value: number
  readonly labels: Record<string, string | number>
  readonly metricName?: string
}

type Kind = 'counter' | 'gauge' | 'histogram'

/**
 * One metric read from a scrape, never updated by the hub: prom-client asks for its value at
 * scrape time (`get()`), so nothing of prom-client runs per message or per connection.
 */
class Collected {
  readonly aggregator = 'sum'
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: Kind,
    private readonly scrape: () => Promise<Scrape>,
    private readonly read: (s: Scrape) => Value[],
  ) {}

  async get(): Promise<{ name: string; help: string; type: Kind; aggregator: string; values: Value[] }> {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.read(await this.scrape()) }
  }

  reset(): void {}
}

const one = (value: number, labels: Record<string, string | number> = {}): Value[] => [{ value, labels }]

function histogram(name: string, h: HistogramSnapshot): Value[] {
  const out: Value[] = h.le.map((le, i) => ({ metricName: `${name}_bucket`, labels: { le }, value: h.counts[i]! }))
  out.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: h.count })
  out.push({ metricName: `${name}_sum`, labels: {}, value: h.sum })
  out.push({ metricName: `${name}_count`, labels: {}, value: h.count })
  return out
}

/** Subscribers per channel for the `limit` busiest channels; the others summed under `other`. */
function topChannels(byChannel: Readonly<Record<string, number>>, limit: number): Value[] {
  const sorted = Object.entries(byChannel).sort((a, b) => b[1] - a[1])
  const out: Value[] = sorted.slice(0, limit).map(([channel, n]) => ({ value: n, labels: { channel } }))
  let rest = 0
  for (let i = limit; i < sorted.length; i++) rest += sorted[i]![1]
  out.push({ value: rest, labels: { channel: 'other' } })
  return out
}

/** The store's answer, or a failure after `ms`. */
async function probe(store: MessageStore, ms: number): Promise<number> {
  const start = performance.now()
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      Promise.resolve(store.position('$tidings:health-probe')),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('store probe timed out')), ms)
      }),
    ])
    return (performance.now() - start) / 1000
  } finally {
    if (timer !== undefined) clearTimeout(timer)
  }
}

/**
 * A prom-client `Registry` whose metrics read `hub.metrics()` and `hub.health()` when scraped
 * (one snapshot per scrape, shared by every metric). Add your own metrics to it, or merge it
 * with your app's registry (`Registry.merge`).
 */
export function createMetricsRegistry(hub: Hub, options: MetricsOptions = {}): Registry {
  const registry = new Registry()
  const channelLabels = Math.max(0, Math.floor(options.channelLabels ?? 10))
  const probeMs = options.storeProbeTimeoutMs ?? 1_000
  let current: Promise<Scrape> | undefined
  // Every metric's get() starts in the same turn of a scrape: the first one takes the snapshot,
  // the others share it; it is forgotten once that turn is over.
  const scrape = (): Promise<Scrape> => {
    if (current !== undefined) return current
    const m = hub.metrics()
    const health = hub.health()
    current = (async (): Promise<Scrape> => {
      if (options.store === undefined) return { m, health, storeUp: undefined, storeProbeSeconds: undefined }
      try {
        return { m, health, storeUp: 1, storeProbeSeconds: await probe(options.store, probeMs) }
      } catch {
        return { m, health, storeUp: 0, storeProbeSeconds: undefined }
      }
    })()
    queueMicrotask(() => (current = undefined))
    return current
  }
  const add = (name: string, help: string, type: Kind, read: (s: Scrape) => Value[]) => registry.registerMetric(new Collected(name, help, type, scrape, read) as unknown as Metric)
  const counter = (name: string, help: string, read: (m: MetricsSnapshot) => number) => add(name, help, 'counter', (s) => one(read(s.m)))
  const gauge = (name: string, help: string, read: (m: MetricsSnapshot) => number) => add(name, help, 'gauge', (s) => one(read(s.m)))

  add('tidings_node_info', 'This node (label node: its nodeId).', 'gauge', (s) => one(1, { node: s.m.nodeId }))
  // Connections
  gauge('tidings_connections', 'Open connections on this node.', (m) => m.connections)
  add('tidings_transport_connections', 'Open connections on this node, by transport.', 'gauge', (s) => Object.entries(s.m.transports).map(([transport, t]) => ({ value: t.open, labels: { transport } })))
  add('tidings_connections_opened_total', 'Connections accepted, by transport.', 'counter', (s) => Object.entries(s.m.transports).map(([transport, t]) => ({ value: t.opened, labels: { transport } })))
  add('tidings_disconnects_total', `Connections closed, by close code (abnormal: ${ABNORMAL_CLOSE_CODES.join(', ')}; codes outside the list count as other).`, 'counter', (s) =>
    Object.entries(s.m.disconnects).map(([code, n]) => ({ value: n, labels: { code } })),
  )
  if (options.capacity !== undefined) {
    const capacity = options.capacity
    add('tidings_connections_capacity', 'Connections this node is sized for (configured).', 'gauge', () => one(capacity))
  }
  gauge('tidings_connections_peak', 'The most connections open at once on this node since it started.', (m) => m.peakConnections)
  add('tidings_connections_peak_timestamp_seconds', 'When the peak of connections was reached (Unix time).', 'gauge', (s) => (s.m.peakConnectionsAt === undefined ? [] : one(s.m.peakConnectionsAt / 1000)))
  add('tidings_connection_duration_seconds', 'How long closed connections were open.', 'histogram', (s) => histogram('tidings_connection_duration_seconds', s.m.connectionDuration))
  add('tidings_resumes_total', 'Subscribes resumed from the client position, by whether the replay was complete.', 'counter', (s) => [
    { value: s.m.resumes.recovered, labels: { recovered: 'true' } },
    { value: s.m.resumes.notRecovered, labels: { recovered: 'false' } },
  ])
  counter('tidings_reconnections_total', 'Connections that resumed at least one subscription (clients coming back).', (m) => m.reconnections)
  // Channels and messages
  gauge('tidings_channels', 'Live channels on this node.', (m) => m.channels)
  gauge('tidings_subscriptions', 'Subscriptions on this node.', (m) => m.subscriptions)
  add('tidings_channel_subscriptions', `Subscribers per channel: the ${channelLabels} channels with most, the rest under channel="other".`, 'gauge', (s) => topChannels(s.m.subscriptionsByChannel, channelLabels))
  counter('tidings_messages_in_total', 'Frames received from clients.', (m) => m.messagesIn)
  counter('tidings_messages_out_total', 'Frames handed to sessions.', (m) => m.messagesOut)
  counter('tidings_bytes_in_total', 'Bytes received from clients.', (m) => m.bytesIn)
  counter('tidings_bytes_out_total', 'Bytes handed to sessions.', (m) => m.bytesOut)
  counter('tidings_published_total', 'Messages published to channels (client and server).', (m) => m.published)
  add('tidings_publish_latency_seconds', 'From a publish entering the publish path to its frames handed to this node\'s sessions, per publish.', 'histogram', (s) =>
    histogram('tidings_publish_latency_seconds', s.m.publishLatency),
  )
  add('tidings_errors_total', 'Errors sent to clients, by code.', 'counter', (s) => Object.entries(s.m.errors).map(([code, n]) => ({ value: n, labels: { code } })))
  // Delivery
  counter('tidings_dropped_total', 'Frames dropped under backpressure.', (m) => m.dropped)
  gauge('tidings_queued_bytes', 'Bytes waiting in outbound queues.', (m) => m.queuedBytes)
  counter('tidings_redelivered_total', 'At-least-once messages sent again after an ack timeout.', (m) => m.redelivered)
  counter('tidings_delivery_failed_total', 'Delivery ranges given up on.', (m) => m.deliveryFailed)
  counter('tidings_gaps_reported_total', 'Live subscribers told part of their stream is gone (history reset, dropped by retention).', (m) => m.gapsReported)
  gauge('tidings_acks_pending_subscriptions', 'At-least-once subscriptions waiting for an acknowledgment.', (m) => m.acksPending.subscriptions)
  gauge('tidings_acks_pending_messages', 'Messages sent and not yet acknowledged.', (m) => m.acksPending.messages)
  add('tidings_slow_consumers_total', 'Slow consumers, by what was done: queue dropped or connection closed (4009).', 'counter', (s) => [
    { value: s.m.slowConsumers.dropped, labels: { action: 'dropped' } },
    { value: s.m.slowConsumers.disconnected, labels: { action: 'disconnected' } },
  ])
  // Health
  add('tidings_healthy', 'hub.health().ok: 1 serving, 0 not (closing, or the broker down past nodes.unhealthyAfterMs).', 'gauge', (s) => one(s.health.ok ? 1 : 0))
  add('tidings_closing', '1 while the hub shuts down.', 'gauge', (s) => one(s.health.closing ? 1 : 0))
  add('tidings_broker_up', 'The broker: 1 up, 0 down (absent when the broker does not report its health).', 'gauge', (s) => (s.health.broker.state === 'unknown' ? [] : one(s.health.broker.state === 'up' ? 1 : 0)))
  add('tidings_broker_down_seconds', 'How long the broker has been down (0 while up).', 'gauge', (s) => (s.health.broker.state === 'unknown' ? [] : one((s.health.broker.downForMs ?? 0) / 1000)))
  add('tidings_store_up', 'The message store answered a probe within the time limit: 1, else 0 (absent without a probed store).', 'gauge', (s) => (s.storeUp === undefined ? [] : one(s.storeUp)))
  add('tidings_store_probe_seconds', 'How long the store probe took.', 'gauge', (s) => (s.storeProbeSeconds === undefined ? [] : one(s.storeProbeSeconds)))
  if (options.processMetrics) collectDefaultMetrics({ register: registry })
  return registry
}

/** True when a request presents one of the tokens (`Authorization: Bearer <token>`); constant time. */
export function bearerCheck(token: string | readonly string[]): (req: IncomingMessage) => boolean {
  const digests = (typeof token === 'string' ? [token] : token).map(digest)
  return (req) => {
    const auth = req.headers.authorization
    if (auth === undefined || !/^Bearer\s+/i.test(auth)) return false
    const presented = digest(auth.replace(/^Bearer\s+/i, '').trim())
    let ok = false
    // Every token is compared, so the time does not tell which one matched.
    for (const d of digests) ok = timingSafeEqual(d, presented) || ok
    return ok
  }
}

/** `GET <prefix>/metrics`: the registry in the Prometheus text format. */
export async function serveMetrics(registry: Registry, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = await registry.metrics()
  res.statusCode = 200
  res.setHeader('content-type', registry.contentType)
  res.setHeader('cache-control', 'no-store')
  res.end(req.method === 'HEAD' ? undefined : body)
}

/**
 * `GET <prefix>/analytics?limit=`: `hub.analytics()` for an admin API key with scope `read`
 * (401 RT_002 without a valid key, 403 RT_003 without the scope or without any key configured).
 */
export function createAnalyticsRoute(hub: Hub, keys: ApiKeys | undefined): (req: IncomingMessage, res: ServerResponse, query: URLSearchParams) => void {
  return (req, res, query) => {
    try {
      if (!keys) throw new RealtimeError('RT_003', 'the admin API is disabled: no apiKey or apiKeys configured')
      authorizeApiKey(keys, req, 'read', '/analytics')
      if (req.method !== 'GET') {
        res.setHeader('allow', 'GET')
        sendJson(res, 405, { type: 'error', code: 'RT_007', message: `method ${req.method} not allowed here` })
        return
      }
      const raw = query.get('limit')
      if (raw !== null && (!/^[1-9][0-9]{0,3}$/.test(raw) || Number(raw) > 1000)) throw new RealtimeError('RT_007', 'limit: a whole number from 1 to 1000')
      sendJson(res, 200, hub.analytics(raw === null ? {} : { limit: Number(raw) }))
    } catch (err) {
      sendError(res, err)
    }
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest()
}
