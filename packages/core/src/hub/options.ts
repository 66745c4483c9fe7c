import { type Codec, jsonCodec } from '@tidings/protocol'
import type { Authenticator, AuthorizeContext, Identity } from '../ports/auth.js'
import type { Broker } from '../ports/broker.js'
import type { Clock } from '../ports/clock.js'
import { systemClock } from '../ports/clock.js'
import type { Log, Logger } from '../ports/logger.js'
import { createConsoleLogger } from '../ports/logger.js'
import type { PresenceStore } from '../ports/presence.js'
import type { MessageStore, Retention } from '../ports/store.js'
import type { MaybePromise } from '../util.js'
import { randomId } from '../util.js'
import { createMemoryBroker } from '../memory/broker.js'
import { createMemoryLimitStore } from '../memory/limits.js'
import type { LimitStore } from '../ports/limits.js'
import type { LiveQueryProvider } from '../ports/live.js'
import { createMemoryPresenceStore } from '../memory/presence.js'
import { createMemoryStore } from '../memory/store.js'
import type { ChannelOptions } from './channels.js'
import type { ConnectionInfo } from './connection.js'
import type { ContentFilter } from './content.js'
import { createLog } from './logging.js'

export interface HubLimits {
  /** Largest inbound frame and largest message, in bytes. Default 128 KiB (`RT_005`). */
  readonly maxMessageSize?: number
  /** Inbound frames per second per connection (token bucket, burst = rate). Default 100 (`RT_006`). */
  readonly messagesPerSecond?: number
  /** Presence updates and typing frames per second per connection. Default 10 (`RT_006`). */
  readonly presenceUpdatesPerSecond?: number
  /** Subscriptions per connection: a number, or a function of the connection (tiers). Default 100. */
  readonly maxSubscriptions?: number | ((identity: Identity, info: ConnectionInfo) => number)
  /** Connections per user id, across nodes on a cluster. Default 10 (`RT_001`, close 4008). `Infinity`: no limit (and, on a cluster, no count kept in the presence store). */
  readonly maxConnectionsPerUser?: number
  /**
   * Connections per client address (IPv6 by /64), across nodes on a cluster (counted in the
   * presence store). Default: none here; the transports' edge guard limits connections per
   * address on each node (`edge.maxConnectionsPerIp`, 100). `RT_001`, close 4008.
   */
  readonly maxConnectionsPerAddress?: number
  /** Session buffered bytes above which frames wait in the hub's per-connection queue. Default 1 MiB. */
  readonly highWaterMark?: number
  /** Queued bytes above which a connection is a slow consumer. Default 8 MiB. */
  readonly maxQueuedBytes?: number
  /**
   * Queued bytes of every connection together: past it, the connections with the largest queues
   * are treated as slow consumers until the total fits, so clients that stop reading cannot hold
   * more of the server's memory than this, however many they are. Default 64 MiB.
   */
  readonly maxTotalQueuedBytes?: number
  /**
   * What happens to a slow consumer: `'disconnect'` (close 4009; it resumes from its offsets
   * when it reconnects) or `'drop'` (its queue is discarded and it stays connected; at-least-once
   * channels redeliver what it missed). Default `'disconnect'`.
   */
  readonly slowConsumer?: 'disconnect' | 'drop'
  /**
   * Deepest nesting of arrays and objects an inbound frame may have, checked by a linear scan
   * before the frame is parsed (`RT_007`). Default 32.
   */
  readonly maxDepth?: number
  /**
   * Largest reply frame the hub builds for a request: a history page, a presence snapshot. A
   * history page that would be larger ends early with `complete: false` (page on from its
   * `position`); a presence snapshot lists fewer members (its `count` stays the total). Default 1 MiB.
   */
  readonly maxReplyBytes?: number
  /**
   * Client searches of channel histories (`search` frames) this node runs per second, all
   * clients together (token bucket; one search reads up to 10,000 messages): past it `RT_006`
   * with `details.retryAfterMs`. Server code (`hub.channel(name).search`) is not counted. Default 50.
   */
  readonly searchesPerSecond?: number
  /**
   * Subscriptions per user across all of the user's connections on this node: a number, or a
   * function of the identity (tiers, e.g. free 3, paid 10). Default: no limit beyond `maxSubscriptions`.
   */
  readonly maxSubscriptionsPerUser?: number | ((identity: Identity) => number)
  /**
   * Client publishes per channel per minute, across all publishers (token bucket). A channel
   * pattern's `publishesPerMinute` overrides it. Default: no limit (seed value: 100).
   */
  readonly channelPublishesPerMinute?: number
  /** How long a channel rule (or the hub's `authorize`) may take; a rule that has not answered by then denies. Default 10 000. */
  readonly ruleTimeoutMs?: number
  /**
   * How long an asynchronous content filter (`HubOptions.content`) may take; one that has not
   * answered by then refuses the message with `RT_006` (fail closed). Default 2 000.
   */
  readonly contentTimeoutMs?: number
}

export interface CredentialOptions {
  /** Send `auth:expiring` this long before an identity's `expiresAt`. Default 60 000. */
  readonly refreshBeforeMs?: number
  /** After `expiresAt`, wait this long for an `auth` frame before ending subscriptions and closing with 4001. Default 30 000. */
  readonly graceMs?: number
}

export interface DeliveryOptions {
  /** How long an at-least-once message may stay unacknowledged before it is sent again. Default 5000. */
  readonly ackTimeoutMs?: number
  /** Each further attempt waits this many times longer. Default 2. */
  readonly backoffMultiplier?: number
  /** The longest wait between attempts. Default 60,000. */
  readonly maxBackoffMs?: number
  /** Attempts after the first send before the delivery is reported failed (`delivery:failed`). Default 5. */
  readonly maxAttempts?: number
  /** After a failed delivery: `'report'` (event and metrics; stop retrying) or also `'disconnect'` (close 4010). Default `'report'`. */
  readonly onFailure?: 'report' | 'disconnect'
  /**
   * On a cluster: how long a node holds an at-least-once message that overtook one still on its
   * way from another node before it reads the missing offsets from the store. Default 250.
   */
  readonly gapWaitMs?: number
}

export interface NotificationOptions {
  /** More than this many notifications to one user within `batchWindowMs` are sent as one batch. Default 5. */
  readonly batchThreshold?: number
  /** Default 1000. */
  readonly batchWindowMs?: number
}

export interface PresenceOptions {
  /** Keep a member this long after its last connection leaves, so a quick reconnect is not a leave + join. Default 0. */
  readonly leaveDelayMs?: number
  /** Typing events per user per channel are sent at most once per this window. Default 2000. */
  readonly typingDebounceMs?: number
  /** A typing indicator with no refresh clears itself after this long. Default 5000. */
  readonly typingTimeoutMs?: number
  /** State of a member that joined without one. Default `online`. */
  readonly defaultState?: string
  /** Allowed states; any string up to 32 chars when absent. */
  readonly states?: readonly string[]
}

export interface HubOptions {
  /** This node's id in a cluster. Random by default. */
  readonly nodeId?: string
  readonly clock?: Clock
  /**
   * Where the hub logs: a pino instance as it is, or any logger of that shape
   * (`info(fields, message)`). Default: the console at `warn`. Secrets are redacted and message
   * or presence data never logged; see docs/logging.md.
   */
  readonly logger?: Logger
  readonly codec?: Codec
  readonly broker?: Broker
  /**
   * Counters shared by the nodes, for rate limits that hold across them (a channel's
   * `publishesPerMinute` on a cluster). Default: in memory (this node's own).
   */
  readonly limitStore?: LimitStore
  readonly store?: MessageStore
  readonly presenceStore?: PresenceStore
  /** Turns credentials into an identity. Without one, only anonymous and trusted (`identity`) connections are possible. */
  readonly authenticate?: Authenticator
  /** Accept connections that bring no credentials, as anonymous. Default true. */
  readonly allowAnonymous?: boolean
  /** An extra gate over every channel rule: return false to deny. */
  readonly authorize?: (ctx: AuthorizeContext) => MaybePromise<boolean>
  /** Channel patterns and their options, in the order they are tried (before the built-in ones). */
  readonly channels?: Readonly<Record<string, ChannelOptions>>
  readonly limits?: HubLimits
  readonly presence?: PresenceOptions
  /** Default channel log retention. Default 100 messages, 5 minutes, 16 MiB per channel. */
  readonly history?: Partial<Retention>
  /** Publisher idempotency window. Default 10 minutes. */
  readonly dedupWindowMs?: number
  /** Acknowledgments and redelivery on at-least-once channels. */
  readonly delivery?: DeliveryOptions
  readonly notifications?: NotificationOptions
  /**
   * Nodes of a cluster heartbeat through the presence store; a node silent for more than
   * `nodeTtlMs` has its presence members removed (each leave announced once). On by default when
   * a broker is given (several nodes): every 5 s, a node silent for 20 s removed; `heartbeatMs: 0`
   * turns it off. Cluster-wide questions (`hub.connections.list`, kicks, `awaitAcks`) wait for
   * each live node's answer up to `requestTimeoutMs` (default 2 s). With a broker, the per-user
   * connection limit and room capacity are counted across nodes in the presence store.
   */
  readonly nodes?: {
    readonly heartbeatMs?: number
    readonly nodeTtlMs?: number
    readonly requestTimeoutMs?: number
    /** `hub.health()` is not ok once the broker has been down this long (ms). Default 10 000. */
    readonly unhealthyAfterMs?: number
  }
  /** Credentials that expire on open connections (`Identity.expiresAt`). */
  readonly credentials?: CredentialOptions
  /** Called with every internal failure (store, broker, a throwing listener); never throws into a publisher. */
  readonly onError?: (error: unknown, context: { stage: string; [key: string]: unknown }) => void
  /**
   * A content filter run on every client publish before it is stored or delivered (after
   * authorization and the size limit): it allows, flags (`content:flagged`) or refuses
   * (`RT_006` / `RT_007`) the message. Not run for server publishes (`hub.publish`, broadcasts,
   * routes: server code is trusted) nor on `encrypted` channels (ciphertext). `createSpamFilter()`
   * is a ready-made one. Default `false`: no filter, and no work at all. See docs/moderation.md.
   */
  readonly content?: ContentFilter | false
  /**
   * Serves live query channels (`db:collection:<name>[:<tag>]`): a subscribe with a `query`
   * gets the query's result (`query:snapshot`) and then its changes (`query:changes`). Without
   * one, such channels answer `RT_004`. `@tidings/sql`'s `createLiveQueries(...)` is one; see
   * docs/live-queries.md.
   */
  readonly liveQueries?: LiveQueryProvider
}

export interface ResolvedHubOptions {
  readonly nodeId: string
  readonly clock: Clock
  /** The app's logger as the hub calls it (message first, secrets redacted). */
  readonly logger: Log
  readonly codec: Codec
  readonly broker: Broker
  readonly limitStore: LimitStore
  readonly store: MessageStore
  readonly presenceStore: PresenceStore
  readonly authenticate: Authenticator | undefined
  readonly allowAnonymous: boolean
  readonly authorize: HubOptions['authorize']
  readonly limits: Required<Omit<HubLimits, 'maxSubscriptions' | 'maxSubscriptionsPerUser' | 'channelPublishesPerMinute' | 'maxConnectionsPerAddress'>> & {
    maxConnectionsPerAddress: number | undefined
    maxSubscriptions: NonNullable<HubLimits['maxSubscriptions']>
    maxSubscriptionsPerUser: HubLimits['maxSubscriptionsPerUser']
    channelPublishesPerMinute: number | undefined
  }
  readonly credentials: Required<CredentialOptions>
  /** Heartbeat interval (0: no heartbeats), how long a silent node is kept, how long a cluster-wide question waits. */
  readonly nodes: { readonly heartbeatMs: number; readonly nodeTtlMs: number; readonly requestTimeoutMs: number; readonly unhealthyAfterMs: number }
  /** A broker was given: this hub is one node of several, and shared state lives in the stores. */
  readonly clustered: boolean
  readonly presence: Required<Omit<PresenceOptions, 'states'>> & { states: readonly string[] | undefined }
  readonly history: Retention
  readonly dedupWindowMs: number
  readonly delivery: Required<DeliveryOptions>
  readonly notifications: Required<NotificationOptions>
  readonly onError: HubOptions['onError']
  readonly content: ContentFilter | undefined
  readonly liveQueries: LiveQueryProvider | undefined
}

export function resolveHubOptions(o: HubOptions): ResolvedHubOptions {
  const nodeId = o.nodeId ?? randomId()
  if (o.content !== undefined && o.content !== false && typeof o.content !== 'function') throw new TypeError('content must be a function (a content filter) or false')
  return {
    nodeId,
    clock: o.clock ?? systemClock,
    logger: createLog(o.logger ?? createConsoleLogger('warn'), { nodeId }),
    codec: o.codec ?? jsonCodec,
    broker: o.broker ?? createMemoryBroker(),
    limitStore: o.limitStore ?? createMemoryLimitStore(),
    store: o.store ?? createMemoryStore(),
    presenceStore: o.presenceStore ?? createMemoryPresenceStore(),
    authenticate: o.authenticate,
    allowAnonymous: o.allowAnonymous ?? true,
    authorize: o.authorize,
    limits: {
      maxMessageSize: o.limits?.maxMessageSize ?? 128 * 1024,
      messagesPerSecond: o.limits?.messagesPerSecond ?? 100,
      presenceUpdatesPerSecond: o.limits?.presenceUpdatesPerSecond ?? 10,
      maxSubscriptions: o.limits?.maxSubscriptions ?? 100,
      maxConnectionsPerUser: o.limits?.maxConnectionsPerUser ?? 10,
      maxConnectionsPerAddress: o.limits?.maxConnectionsPerAddress === undefined ? undefined : positiveInt(o.limits.maxConnectionsPerAddress, 1, 'limits.maxConnectionsPerAddress'),
      highWaterMark: o.limits?.highWaterMark ?? 1024 * 1024,
      maxQueuedBytes: o.limits?.maxQueuedBytes ?? 8 * 1024 * 1024,
      maxTotalQueuedBytes: positiveInt(o.limits?.maxTotalQueuedBytes, 64 * 1024 * 1024, 'limits.maxTotalQueuedBytes'),
      slowConsumer: o.limits?.slowConsumer ?? 'disconnect',
      maxDepth: positiveInt(o.limits?.maxDepth, 32, 'limits.maxDepth'),
      maxReplyBytes: positiveInt(o.limits?.maxReplyBytes, 1024 * 1024, 'limits.maxReplyBytes'),
      searchesPerSecond: positiveInt(o.limits?.searchesPerSecond, 50, 'limits.searchesPerSecond'),
      maxSubscriptionsPerUser: o.limits?.maxSubscriptionsPerUser,
      channelPublishesPerMinute: o.limits?.channelPublishesPerMinute,
      ruleTimeoutMs: positiveInt(o.limits?.ruleTimeoutMs, 10_000, 'limits.ruleTimeoutMs'),
      contentTimeoutMs: positiveInt(o.limits?.contentTimeoutMs, 2_000, 'limits.contentTimeoutMs'),
    },
    nodes: {
      heartbeatMs: o.nodes?.heartbeatMs ?? (o.broker !== undefined ? 5_000 : 0),
      nodeTtlMs: positiveInt(o.nodes?.nodeTtlMs, 20_000, 'nodes.nodeTtlMs'),
      requestTimeoutMs: positiveInt(o.nodes?.requestTimeoutMs, 2_000, 'nodes.requestTimeoutMs'),
      unhealthyAfterMs: nonNegativeMs(o.nodes?.unhealthyAfterMs, 10_000, 'nodes.unhealthyAfterMs'),
    },
    clustered: o.broker !== undefined,
    credentials: {
      refreshBeforeMs: nonNegativeMs(o.credentials?.refreshBeforeMs, 60_000, 'credentials.refreshBeforeMs'),
      graceMs: nonNegativeMs(o.credentials?.graceMs, 30_000, 'credentials.graceMs'),
    },
    presence: {
      leaveDelayMs: o.presence?.leaveDelayMs ?? 0,
      typingDebounceMs: o.presence?.typingDebounceMs ?? 2000,
      typingTimeoutMs: o.presence?.typingTimeoutMs ?? 5000,
      defaultState: o.presence?.defaultState ?? 'online',
      states: o.presence?.states,
    },
    history: { maxCount: o.history?.maxCount ?? 100, maxAgeMs: o.history?.maxAgeMs ?? 5 * 60_000, maxBytes: o.history?.maxBytes ?? 16 * 1024 * 1024 },
    dedupWindowMs: o.dedupWindowMs ?? 10 * 60_000,
    delivery: {
      ackTimeoutMs: o.delivery?.ackTimeoutMs ?? 5000,
      backoffMultiplier: o.delivery?.backoffMultiplier ?? 2,
      maxBackoffMs: o.delivery?.maxBackoffMs ?? 60_000,
      maxAttempts: o.delivery?.maxAttempts ?? 5,
      onFailure: o.delivery?.onFailure ?? 'report',
      gapWaitMs: nonNegativeMs(o.delivery?.gapWaitMs, 250, 'delivery.gapWaitMs'),
    },
    notifications: {
      batchThreshold: o.notifications?.batchThreshold ?? 5,
      batchWindowMs: o.notifications?.batchWindowMs ?? 1000,
    },
    onError: o.onError,
    content: o.content === false ? undefined : o.content,
    liveQueries: liveQueriesOf(o.liveQueries),
  }
}

function positiveInt(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 1) throw new TypeError(`${name} must be a positive number`)
  return Math.floor(value)
}

function nonNegativeMs(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new TypeError(`${name} must be a non-negative number of milliseconds`)
  return value
}

function liveQueriesOf(p: LiveQueryProvider | undefined): LiveQueryProvider | undefined {
  if (p === undefined) return undefined
  if (p === null || typeof p !== 'object' || typeof p.open !== 'function') throw new TypeError('liveQueries must be a live query provider (an object with open())')
  return p
}
