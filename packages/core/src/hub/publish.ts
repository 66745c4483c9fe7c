import { RealtimeError, isEncryptedEnvelope, type FilterNode, type FilterPredicate, RECIPIENT_FILTER_ROOTS, compileFilter, type ClientFrameOf, type MessageFrame, channelNameSchema } from '@tidings/protocol'
import type { LRUCache } from 'lru-cache'
import type { Dispatch } from '../ports/broker.js'
import type { Clock } from '../ports/clock.js'
import type { Retention, Revises } from '../ports/store.js'
import { Outbound } from '../ports/session.js'
import { type MaybePromise, andThen, boundedMap, isPromise, isoTimestamp } from '../util.js'
import type { Channel } from './channel.js'
import type { ChannelOptions, ResolvedChannel } from './channels.js'
import type { Connection, Subscription } from './connection.js'
import { ContentCheck } from './content.js'
import type { Cluster } from './cluster.js'
import type { AckRecipient, Acks } from './delivery/acks.js'
import type { Signals } from './events.js'
import type { FanOut } from './fanout.js'
import type { BroadcastOptions, BroadcastResult, PublishOptions, PublishResult, Route } from './api.js'
import type { Metrics } from './metrics.js'
import type { ResolvedHubOptions } from './options.js'
import type { Bucket } from './rate-limit.js'
import type { Room } from './rooms.js'
import type { SubscriptionService } from './subscriptions.js'

/** One node's answer to an `awaitAcks` delivery. */
interface AckAnswer {
  readonly recipients: number
  readonly acknowledged: AckRecipient[]
  readonly unacknowledged: AckRecipient[]
}

/** What publishing needs from the hub. */
export interface PublisherHost {
  readonly nodeId: string
  readonly clock: Clock
  readonly codec: ResolvedHubOptions['codec']
  readonly options: Pick<ResolvedHubOptions, 'limits' | 'store' | 'dedupWindowMs' | 'history' | 'clustered' | 'limitStore' | 'content'>
  readonly stats: Metrics
  readonly live: ReadonlyMap<string, Channel>
  readonly rooms: { readonly rooms: ReadonlyMap<string, Room> }
  readonly fanout: FanOut
  readonly cluster: Cluster
  /** The hub is closing: local connections are going away. */
  readonly closing: boolean
  /** How long a cluster-wide question waits for the other nodes (beyond an `awaitAcks` wait). */
  readonly requestTimeoutMs: number
  readonly acks: Acks
  /** Channels resolved (live ones keep their options; `RT_004` when no pattern matches) and publishes authorized. */
  readonly subscriptions: Pick<SubscriptionService, 'resolve' | 'authorize'>
  readonly signals: Signals
}

function notAnEnvelope(channel: string): RealtimeError {
  return new RealtimeError('RT_007', `channel '${channel}' is end-to-end encrypted: data must be an encrypted envelope ({ e2e: 1, kid, iv, ct })`)
}

/** The log retention of a channel: its pattern's `history` over the hub's defaults, narrowed by an offline queue's bounds; null when it keeps none. */
export function retentionOf(options: ChannelOptions, defaults: Retention): Retention | null {
  if (options.history === false) return null
  const hub = defaults
  const base: Retention = options.history === undefined ? hub : { maxCount: options.history.maxCount ?? hub.maxCount, maxAgeMs: options.history.maxAgeMs ?? hub.maxAgeMs, maxBytes: options.history.maxBytes ?? hub.maxBytes }
  if (!options.offline) return base
  return { maxCount: Math.min(base.maxCount, options.offline.maxMessages ?? 100), maxAgeMs: Math.min(base.maxAgeMs, options.offline.ttlMs ?? 5 * 60_000), maxBytes: base.maxBytes }
}

/**
 * The one publish path (client, server, broadcast to channels, content routes): authorize a
 * client's publish, spend the channel's budget, validate, measure, store for an offset, deliver
 * here and on the other nodes, route. Broadcasts to users, connections or everyone.
 */
export class Publisher {
  readonly routes: Route[] = []
  /** Idempotency keys of publishes to channels without history (no store to remember them). */
  private readonly volatileKeys: LRUCache<string, { messageId: string; at: number }> = boundedMap(100_000)
  /** Client publish rate per channel not live on this node (live channels hold their own bucket). */
  private readonly channelBuckets: LRUCache<string, Bucket> = boundedMap(100_000)
  /** The content filter, when the hub has one (none: no work at all). */
  private readonly content: ContentCheck | undefined

  constructor(private readonly host: PublisherHost) {
    const filter = host.options.content
    this.content = filter === undefined ? undefined : new ContentCheck(filter, { clock: host.clock, timeoutMs: host.options.limits.contentTimeoutMs, signals: host.signals })
  }

  onClientPublish(conn: Connection, frame: ClientFrameOf<'message'>, bytes: number): MaybePromise<void> {
    const resolved = this.host.subscriptions.resolve(frame.channel)
    const sub = conn.subscriptions.get(frame.channel)
    const decide = (): MaybePromise<string | undefined> => {
      if (sub?.canPublish === true) return undefined
      // A re-check (room or identity change) during the await resets the cached decision: keep
      // this answer only if none started meanwhile.
      const generation = sub?.rights.generation
      return this.host.subscriptions.authorize(conn, 'publish', frame.channel, resolved, this.host.rooms.rooms.get(frame.channel), undefined).then((denied) => {
        if (sub && conn.subscriptions.get(frame.channel) === sub && sub.rights.generation === generation) sub.canPublish = denied === undefined
        return denied
      })
    }
    return andThen(decide(), (denied) => {
      if (denied) throw new RealtimeError('RT_003', denied)
      const max = resolved.options.maxMessageSize
      if (max !== undefined && bytes > max) throw new RealtimeError('RT_005', `message of ${bytes} bytes is over the channel limit of ${max}`, { limit: max })
      // An end-to-end encrypted channel carries envelopes only; their ciphertext is not for a
      // content filter to read.
      const encrypted = resolved.options.encrypted === true
      if (encrypted && !isEncryptedEnvelope(frame.data)) throw notAnEnvelope(frame.channel)
      const flagged =
        this.content === undefined || encrypted
          ? undefined
          : this.content.check({ channel: frame.channel, pattern: resolved.pattern, event: frame.event, data: frame.data, userId: conn.userId, connectionId: conn.id, size: bytes, now: this.host.clock.now() })
      // Charged only to publishes that may go out: a client that may not publish cannot spend
      // the channel's budget.
      return andThen(flagged, (flag) =>
        andThen(this.takeChannelPublish(frame.channel, resolved.options), () =>
          andThen(
            this.publishResolved(frame.channel, resolved, frame.event, frame.data, {
              sender: conn.userId,
              exclude: resolved.options.echo ? undefined : { connections: [conn.id] },
              priority: frame.priority,
              idempotencyKey: frame.idempotencyKey,
            }, conn.id),
            (result) => {
              this.host.fanout.sendFrame(conn, { type: 'published', id: frame.id, channel: frame.channel, messageId: result.messageId, offset: result.offset, duplicate: result.duplicate || undefined })
              if (flag !== undefined && !result.duplicate && this.host.signals.listenerCount('content:flagged') > 0) {
                this.host.signals.emit('content:flagged', { channel: frame.channel, event: frame.event, userId: conn.userId, connectionId: conn.id, reason: flag, messageId: result.messageId, offset: result.offset })
              }
            },
          ),
        ),
      )
    })
  }

  /**
   * A channel's client publish rate (`publishesPerMinute`), `RT_006` past it. One node: a token
   * bucket (a minute's worth of burst, refilled evenly). A cluster: one count per minute window
   * in the shared limit store, so the budget holds across nodes rather than once per node.
   */
  private takeChannelPublish(channel: string, options: ChannelOptions): MaybePromise<void> {
    const perMinute = options.publishesPerMinute ?? this.host.options.limits.channelPublishesPerMinute
    if (perMinute === undefined) return
    const now = this.host.clock.now()
    if (this.host.options.clustered) {
      return andThen(this.host.options.limitStore.hit(`publish:${channel}`, 60_000, now), (count) => {
        if (count <= perMinute) return
        const retryAfterMs = 60_000 - (now % 60_000)
        throw new RealtimeError('RT_006', `channel '${channel}' allows ${perMinute} messages per minute`, { limit: perMinute, scope: 'channel', retryAfterMs })
      })
    }
    // A live channel holds its own bucket (no churn of other names can reset it); others share a bounded map.
    const live = this.host.live.get(channel)
    let bucket = live?.publishBucket ?? this.channelBuckets.get(channel)
    if (bucket === undefined) {
      bucket = { tokens: perMinute, refilledAt: now }
      if (live) live.publishBucket = bucket
      else this.channelBuckets.set(channel, bucket)
    }
    // Burst = a minute's worth; refilled lazily at perMinute per 60 s.
    const refillPerMs = perMinute / 60_000
    if (now > bucket.refilledAt) {
      bucket.tokens = Math.min(perMinute, bucket.tokens + (now - bucket.refilledAt) * refillPerMs)
      bucket.refilledAt = now
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1
      return
    }
    const retryAfterMs = Math.ceil((1 - bucket.tokens) / refillPerMs)
    throw new RealtimeError('RT_006', `channel '${channel}' allows ${perMinute} messages per minute`, { limit: perMinute, scope: 'channel', retryAfterMs })
  }

  /**
   * What a publish of `data` as `event` would be refused for, checked before anything happens:
   * an encrypted channel's envelope, the event's schema, the size limit. Revisions run it before
   * they change the stored message.
   */
  check(channel: string, resolved: ResolvedChannel, event: string, data: unknown): void {
    const options = resolved.options
    if (options.encrypted === true && !isEncryptedEnvelope(data)) throw notAnEnvelope(channel)
    this.validateEvent(options, event, data)
    const draft = this.host.fanout.encode(this.host.codec, { type: 'message', channel, event, data: data ?? null, id: this.host.cluster.messageId(), timestamp: isoTimestamp(this.host.clock.now()), offset: Number.MAX_SAFE_INTEGER, revises: { offset: Number.MAX_SAFE_INTEGER, version: Number.MAX_SAFE_INTEGER } })
    const limit = options.maxMessageSize ?? this.host.options.limits.maxMessageSize
    if (draft.bytes > limit) throw new RealtimeError('RT_005', `message of ${draft.bytes} bytes is over the limit of ${limit}`, { limit })
  }

  /** A client publish's charge to the channel's budget (`publishesPerMinute`), `RT_006` past it: revisions spend it too. */
  chargeChannel(channel: string, resolved: ResolvedChannel): MaybePromise<void> {
    return this.takeChannelPublish(channel, resolved.options)
  }

  /** The content filter's verdict on a client's data (undefined: none, or nothing to say); throws `RT_007` when it rejects. */
  screen(conn: Connection, channel: string, resolved: ResolvedChannel, event: string, data: unknown, bytes: number): MaybePromise<string | undefined> {
    if (this.content === undefined || resolved.options.encrypted === true) return undefined
    return this.content.check({ channel, pattern: resolved.pattern, event, data, userId: conn.userId, connectionId: conn.id, size: bytes, now: this.host.clock.now() })
  }

  private validateEvent(options: ChannelOptions, event: string, data: unknown): void {
    const schema = options.events?.[event]
    if (!schema) {
      if (options.strictEvents && options.events) throw new RealtimeError('RT_007', `event '${event}' is not allowed on this channel`)
      return
    }
    // On an encrypted channel the data is ciphertext: the event name is checked, the schema cannot be.
    if (options.encrypted === true) return
    const result = schema.safeParse(data)
    if (!result.success) {
      const issues = (result.error as { issues?: Array<{ path: PropertyKey[]; message: string }> } | undefined)?.issues
      const first = issues?.[0]
      const where = first && first.path.length > 0 ? `${first.path.map(String).join('.')}: ` : ''
      throw new RealtimeError('RT_007', `data of event '${event}' is invalid${first ? `: ${where}${first.message}` : ''}`)
    }
  }

  /**
   * The one publish path (client, server, broadcast to channels, routes): validate, measure,
   * store (for an offset), deliver here and on the other nodes, route. With a recipient filter
   * (`where`) the message is for some subscribers only, so it is not stored for replay.
   */
  publishResolved(
    channel: string,
    resolved: ResolvedChannel,
    event: string,
    data: unknown,
    opts: PublishOptions & { where?: FilterNode | undefined; revises?: Revises | undefined },
    connectionId: string | undefined,
    routed = false,
  ): MaybePromise<PublishResult> {
    const options = resolved.options
    const revises = opts.revises
    // A deletion carries no data: nothing to check.
    if (revises?.deleted !== true) {
      // Server code too: plaintext must never reach an encrypted channel's store or subscribers.
      if (options.encrypted === true && !isEncryptedEnvelope(data)) throw notAnEnvelope(channel)
      this.validateEvent(options, event, data)
    }
    const now = this.host.clock.now()
    const start = this.host.stats.start()
    const id = this.host.cluster.messageId()
    const awaitAcks = opts.awaitAcks
    const ack = options.delivery === 'at-least-once' || awaitAcks !== undefined ? (true as const) : undefined
    const base: MessageFrame = { type: 'message', channel, event, data: data ?? null, id, timestamp: isoTimestamp(now), sender: opts.sender, priority: opts.priority, ack, revises }
    // Measure before storing, so a message that is too large is never stored.
    const draft = this.host.fanout.encode(this.host.codec, base)
    const limit = options.maxMessageSize ?? this.host.options.limits.maxMessageSize
    if (draft.bytes > limit) throw new RealtimeError('RT_005', `message of ${draft.bytes} bytes is over the limit of ${limit}`, { limit })

    const where = opts.where !== undefined ? this.compileWhere(opts.where) : undefined
    const deliver = (frame: MessageFrame, out: Outbound, epoch?: string): MaybePromise<PublishResult> => {
      this.host.stats.published++
      const d = this.host.cluster.dispatchOf({ kind: 'channel', channel }, frame, { exclude: opts.exclude, priority: opts.priority, volatile: opts.volatile, where: opts.where, epoch })
      const result = awaitAcks === undefined ? { messageId: id, offset: frame.offset, duplicate: false, recipients: this.host.cluster.dispatch(d, out, where) } : undefined
      if (result !== undefined) this.host.stats.delivered(channel, start, now)
      if (this.host.signals.listenerCount('publish') > 0) this.host.signals.emit('publish', { channel, message: frame, connectionId })
      // A revision names an offset of this channel: it is not routed to others.
      if (!routed && this.routes.length > 0 && revises === undefined) this.applyRoutes(frame, opts)
      return result ?? this.deliverEverywhere(d, out, where, awaitAcks!, id)
    }

    const retention = where === undefined ? retentionOf(options, this.host.options.history) : null
    if (awaitAcks !== undefined && !retention) throw new RealtimeError('RT_007', 'awaitAcks needs a channel that keeps history (offsets)')
    if (!retention) {
      if (opts.idempotencyKey !== undefined) {
        const key = `${channel}\u0000${opts.idempotencyKey}`
        const seen = this.volatileKeys.get(key)
        if (seen && now - seen.at < this.host.options.dedupWindowMs) return { messageId: seen.messageId, offset: undefined, duplicate: true, recipients: 0 }
        this.volatileKeys.set(key, { messageId: id, at: now })
      }
      return deliver(base, draft)
    }
    const appended = this.host.options.store.append(
      channel,
      { id, event, data: base.data, sender: opts.sender, timestamp: now, exclude: opts.exclude?.connections?.length || opts.exclude?.users?.length ? opts.exclude : undefined, ...(revises !== undefined ? { revises } : {}) },
      { retention, idempotencyKey: opts.idempotencyKey, dedupWindowMs: this.host.options.dedupWindowMs, now, size: draft.bytes },
    )
    return andThen(appended, (r): MaybePromise<PublishResult> => {
      if (r.duplicate) return { messageId: r.message.id, offset: r.message.offset, duplicate: true, recipients: 0 }
      const offset = r.message.offset
      const frame: MessageFrame = { ...base, offset }
      return deliver(frame, this.host.fanout.withOffset(draft, frame, offset), r.epoch)
    })
  }

  /**
   * `awaitAcks`: deliver here and, as a request, on every other node; each node waits for its
   * recipients' acknowledgments (up to `waitMs`) and answers who did and who did not.
   */
  private async deliverEverywhere(d: Dispatch, out: Outbound, where: FilterPredicate | undefined, waitMs: number, messageId: string): Promise<PublishResult> {
    const local = this.deliverAndWait(d, waitMs, out, where)
    const { answers } = await this.host.cluster.ask<AckAnswer | null>({ op: 'deliver', dispatch: d, waitMs }, null, waitMs + this.host.requestTimeoutMs)
    const mine = await local
    const all = [mine, ...answers.map((a) => a.result).filter((r): r is AckAnswer => r !== null && typeof r === 'object' && Array.isArray(r.acknowledged))]
    return {
      messageId,
      offset: d.frame.type === 'message' ? d.frame.offset : undefined,
      duplicate: false,
      recipients: all.reduce((n, a) => n + a.recipients, 0),
      acknowledged: all.flatMap((a) => a.acknowledged),
      unacknowledged: all.flatMap((a) => a.unacknowledged),
    }
  }

  /** Deliver a dispatch to this node's connections and wait (up to `waitMs`) for their acknowledgments. */
  deliverAndWait(d: Dispatch, waitMs: number, out?: Outbound, where?: FilterPredicate): Promise<AckAnswer> {
    const collect: Subscription[] = []
    const filter = where ?? (d.where !== undefined ? compileFilter(d.where, RECIPIENT_FILTER_ROOTS) : undefined)
    const recipients = this.host.closing ? 0 : this.host.fanout.deliverLocal(d, out, filter, collect)
    const offset = d.frame.type === 'message' ? d.frame.offset : undefined
    if (offset === undefined || d.target.kind !== 'channel') return Promise.resolve({ recipients, acknowledged: [], unacknowledged: [] })
    return this.host.acks.waitFor(d.target.channel, offset, collect, waitMs).then((acks) => ({ recipients, ...acks }))
  }

  private applyRoutes(frame: MessageFrame, opts: PublishOptions): void {
    const seen = new Set<string>([frame.channel!])
    for (const route of this.routes) {
      let targets: string | readonly string[] | undefined | void
      try {
        targets = route({ channel: frame.channel!, event: frame.event, data: frame.data, sender: frame.sender })
      } catch (err) {
        this.host.signals.report(err, 'route')
        continue
      }
      for (const target of typeof targets === 'string' ? [targets] : targets ?? []) {
        if (seen.has(target)) continue
        seen.add(target)
        try {
          const resolved = this.host.subscriptions.resolve(target)
          const r = this.publishResolved(target, resolved, frame.event, frame.data, { sender: opts.sender, exclude: opts.exclude, priority: opts.priority, volatile: opts.volatile }, undefined, true)
          if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'route.publish'))
        } catch (err) {
          this.host.signals.report(err, 'route.publish')
        }
      }
    }
  }

  private compileWhere(where: FilterNode): FilterPredicate {
    try {
      return compileFilter(where, RECIPIENT_FILTER_ROOTS)
    } catch (err) {
      throw new RealtimeError('RT_007', err instanceof Error ? err.message : 'invalid filter')
    }
  }

  /** A server-side publish (any name a pattern matches). */
  async publish(channel: string, event: string, data?: unknown, options: PublishOptions = {}): Promise<PublishResult> {
    // A live channel's name was checked when it was first subscribed to.
    if (!this.host.live.has(channel) && !channelNameSchema.safeParse(channel).success) throw new RealtimeError('RT_007', `invalid channel name '${channel}'`)
    return this.publishResolved(channel, this.host.subscriptions.resolve(channel), event, data, options, undefined)
  }

  async broadcast(o: BroadcastOptions): Promise<BroadcastResult> {
    const where = o.where !== undefined ? this.compileWhere(o.where) : undefined
    const channels = o.to === 'all' ? [] : (o.to.channels ?? [])
    const resolved = channels.map((c) => {
      if (!channelNameSchema.safeParse(c).success) throw new RealtimeError('RT_007', `invalid channel name '${c}'`)
      return this.host.subscriptions.resolve(c)
    })
    const ids: string[] = []
    let recipients = 0
    const users = o.to === 'all' ? [] : (o.to.users ?? [])
    const connections = o.to === 'all' ? [] : (o.to.connections ?? [])
    if (o.to === 'all' || users.length > 0 || connections.length > 0) {
      const id = this.host.cluster.messageId()
      const frame: MessageFrame = { type: 'message', event: o.event, data: o.data ?? null, id, timestamp: isoTimestamp(this.host.clock.now()), sender: o.sender, priority: o.priority }
      const out = this.host.fanout.encode(this.host.codec, frame)
      const limit = this.host.options.limits.maxMessageSize
      if (out.bytes > limit) throw new RealtimeError('RT_005', `message of ${out.bytes} bytes is over the limit of ${limit}`, { limit })
      ids.push(id)
      const target: Dispatch['target'] = o.to === 'all' ? { kind: 'all' } : { kind: 'direct', users, connections }
      recipients += this.host.cluster.deliver(target, frame, { exclude: o.exclude, priority: o.priority, volatile: o.volatile, where: o.where }, out, where)
    }
    for (let i = 0; i < channels.length; i++) {
      const r = await this.publishResolved(channels[i]!, resolved[i]!, o.event, o.data, { sender: o.sender, exclude: o.exclude, priority: o.priority, volatile: o.volatile, where: o.where }, undefined)
      ids.push(r.messageId)
      recipients += r.recipients
    }
    return { messageIds: ids, recipients }
  }
}
