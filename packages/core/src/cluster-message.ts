import { filterSchema, serverFrameSchema } from '@tidings/protocol'
import type { BrokerHooks, ClusterMessage } from './ports/broker.js'

/**
 * What every broker adapter does with a `ClusterMessage`, whatever its bus: the topic it travels
 * on (`clusterTopicOf`), and on arrival the check, the routing and the handing to the hub
 * (`ClusterArrivals`).
 *
 * The check every broker adapter makes of a `ClusterMessage` it receives (anything can be put
 * on a Redis channel or a NOTIFY channel: another app, an old version, a typo in a shell), so
 * the hub only ever sees well-formed messages. The envelope by hand (kinds, origin, target, ids,
 * queries); what is handed on to clients (the frame) or compiled (the recipient filter) by the
 * protocol's own zod schemas, unless `validateFrames` is false (a bus only trusted nodes reach).
 */

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isString = (v: unknown): v is string => typeof v === 'string'
const nonEmpty = (v: unknown): v is string => typeof v === 'string' && v.length > 0
const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString)
const optional = (v: unknown, check: (v: unknown) => boolean) => v === undefined || check(v)

function dispatchProblem(m: Record<string, unknown>, frames: boolean): string | undefined {
  const t = m['target']
  if (!isObject(t)) return 'dispatch without a target'
  if (t['kind'] === 'channel') {
    if (!nonEmpty(t['channel'])) return 'channel target without a channel'
  } else if (t['kind'] === 'direct') {
    if (!strings(t['users']) || !strings(t['connections'])) return 'direct target without users and connections lists'
  } else if (t['kind'] !== 'all') return 'unknown target kind'
  if (frames ? !serverFrameSchema.safeParse(m['frame']).success : !isObject(m['frame'])) return 'invalid frame'
  const ex = m['exclude']
  if (ex !== undefined && (!isObject(ex) || !optional(ex['connections'], strings) || !optional(ex['users'], strings))) return 'invalid exclude'
  if (m['where'] !== undefined && !filterSchema.safeParse(m['where']).success) return 'invalid recipient filter'
  if (!optional(m['priority'], (p) => p === 'high' || p === 'normal' || p === 'low')) return 'invalid priority'
  if (!optional(m['volatile'], (v) => typeof v === 'boolean')) return 'invalid volatile flag'
  if (!optional(m['epoch'], isString)) return 'invalid epoch'
  return undefined
}

function queryProblem(q: unknown, frames: boolean): string | undefined {
  if (!isObject(q)) return 'request without a query'
  switch (q['op']) {
    case 'connections':
      return optional(q['userId'], isString) && optional(q['channel'], isString) && optional(q['connectionId'], isString) ? undefined : 'invalid connections query'
    case 'disconnect':
      return isString(q['reason']) && optional(q['userId'], isString) && optional(q['connectionId'], isString) ? undefined : 'invalid disconnect query'
    case 'kick':
      return isString(q['channel']) && isString(q['userId']) && isString(q['reason']) ? undefined : 'invalid kick query'
    case 'forget':
      return nonEmpty(q['userId']) ? undefined : 'invalid forget query'
    case 'deliver': {
      if (typeof q['waitMs'] !== 'number' || !Number.isFinite(q['waitMs'])) return 'invalid deliver query'
      const d = q['dispatch']
      if (!isObject(d) || d['kind'] !== 'dispatch' || !nonEmpty(d['origin'])) return 'deliver query without a dispatch'
      return dispatchProblem(d, frames)
    }
    default:
      return 'unknown query op'
  }
}

/** What is wrong with a received cluster message, or undefined when it is a well-formed `ClusterMessage`. Never throws. */
export function clusterMessageProblem(m: unknown, validateFrames = true): string | undefined {
  if (!isObject(m)) return 'not an object'
  if (!nonEmpty(m['origin'])) return 'no origin'
  switch (m['kind']) {
    case 'dispatch':
      return dispatchProblem(m, validateFrames)
    case 'request':
      return !nonEmpty(m['id']) ? 'request without an id' : queryProblem(m['query'], validateFrames)
    case 'reply':
      return !nonEmpty(m['id']) ? 'reply without an id' : !nonEmpty(m['to']) ? 'reply without a recipient' : !('result' in m) ? 'reply without a result' : undefined
    default:
      return 'unknown kind'
  }
}

/**
 * The three kinds of topic every broker adapter routes on, whatever its bus calls them (Redis
 * channels, NOTIFY channels): a node takes `all` and its own `node(id)` always, and
 * `channel(c)` while it wants hub channel `c` (several channels may share one topic).
 */
export interface ClusterTopics {
  /** Every dispatch that is not to a channel (users, connections, everyone) and every request. */
  readonly all: string
  /** The replies to one node. */
  node(nodeId: string): string
  /** The dispatches to one hub channel. */
  channel(channel: string): string
}

/** The topic a message travels on, by the `Broker` port's routing. Throws on a message without a kind's fields (`publish` rejects it). */
export function clusterTopicOf(m: ClusterMessage, topics: ClusterTopics): string {
  if (m.kind === 'reply') return topics.node(m.to)
  if (m.kind === 'dispatch' && m.target.kind === 'channel') return topics.channel(m.target.channel)
  return topics.all
}

export interface ClusterArrivalOptions {
  readonly topics: ClusterTopics
  /** Check each dispatch's frame with the protocol's schema (see `clusterMessageProblem`). */
  readonly validateFrames: boolean
  /** The adapter's own error (its class) for a failure, with its short reason. */
  readonly error: (message: string, reason: 'malformed' | 'misrouted' | 'deliver', cause?: unknown) => Error
  /** The app's `onError`: hears every report. */
  readonly onError?: ((err: Error) => void) | undefined
  /** What a `console.warn` line starts with when neither `onError` nor the hub's hook is there, e.g. `[tidings/redis broker]`. */
  readonly label: string
}

const asError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)))

/**
 * What a broker adapter does with what arrives, whatever its bus: the node it delivers to and
 * the hooks the hub gave `start`, the hub channels the node wants, and each arrived message
 * checked (`clusterMessageProblem`), routed (not the node's own, on the topic it belongs on, a
 * reply only to the node in `to`, a channel dispatch only while the channel is wanted) and
 * handed to the hub, with every drop counted and every fault reported (the app's `onError`
 * and the hub's `error` hook; a throwing listener breaks nothing).
 */
export class ClusterArrivals {
  /** This node, once started. */
  nodeId: string | undefined
  /** The hub channels this node wants (`subscribe` adds, `unsubscribe` removes), kept across reconnects. */
  readonly channels = new Set<string>()
  /** Messages handed to the hub; dropped as malformed or misrouted (each reported); dropped as not for this node (its own, another's reply, a channel not wanted). */
  readonly counts = { delivered: 0, malformed: 0, ignored: 0 }
  private deliver: ((message: ClusterMessage) => void) | undefined
  private hooks: BrokerHooks | undefined

  constructor(private readonly options: ClusterArrivalOptions) {}

  /** What `Broker.start` was given. */
  start(nodeId: string, deliver: (message: ClusterMessage) => void, hooks: BrokerHooks | undefined): void {
    this.nodeId = nodeId
    this.deliver = deliver
    this.hooks = hooks
  }

  /** Nothing is delivered any more, and no channel is wanted (`close`). */
  stop(): void {
    this.deliver = undefined
    this.channels.clear()
  }

  /** Started and not stopped. */
  get delivering(): boolean {
    return this.deliver !== undefined
  }

  topicOf(m: ClusterMessage): string {
    return clusterTopicOf(m, this.options.topics)
  }

  /** A failure outside the hub's calls: to the app's `onError` (else `console.warn` when the hub gave no hook) and to the hub's `error` hook. */
  report(err: Error): void {
    try {
      if (this.options.onError) this.options.onError(err)
      else if (!this.hooks?.error) console.warn(`${this.options.label} ${err.message}`)
    } catch {
      // an onError that throws must not break the broker
    }
    try {
      this.hooks?.error?.(err)
    } catch {
      // nor a hub hook that throws
    }
  }

  /** Messages may have been missed (the bus was lost and is back): the hub looks for gaps. A hook that throws is reported. */
  resumed(): void {
    try {
      this.hooks?.resumed?.()
    } catch (err) {
      this.report(this.options.error(`resumed hook: ${asError(err).message}`, 'deliver', err))
    }
  }

  /** Drop what arrived malformed (before it was a message: not JSON, a bad envelope): counted and reported as `dropped a malformed <what>`. */
  malformed(what: string): void {
    this.counts.malformed++
    this.report(this.options.error(`dropped a malformed ${what}`, 'malformed'))
  }

  /** Drop it as not for this node (counted). */
  ignore(): void {
    this.counts.ignored++
  }

  /**
   * A message that arrived on `topic` (as the adapter names it in reports: `where`): checked,
   * routed and handed to the hub, or dropped. Never throws.
   */
  take(m: unknown, topic: string, where: string = topic): void {
    const deliver = this.deliver
    if (!deliver) return
    const problem = clusterMessageProblem(m, this.options.validateFrames)
    if (problem !== undefined) return this.malformed(`message on ${where}: ${problem}`)
    const message = m as ClusterMessage
    if (message.origin === this.nodeId) return this.ignore()
    const belongs = this.topicOf(message)
    if (belongs !== topic) {
      this.counts.malformed++
      this.report(this.options.error(`dropped a message that arrived on ${topic} but belongs on ${belongs}`, 'misrouted'))
      return
    }
    if (message.kind === 'reply' && message.to !== this.nodeId) return this.ignore()
    // A channel no longer wanted (an unsubscribe the bus lost), or one sharing the topic of a wanted one.
    if (message.kind === 'dispatch' && message.target.kind === 'channel' && !this.channels.has(message.target.channel)) return this.ignore()
    this.counts.delivered++
    try {
      deliver(message)
    } catch (err) {
      this.report(this.options.error(`the hub failed to take a message: ${asError(err).message}`, 'deliver', err))
    }
  }
}
