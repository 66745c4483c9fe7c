import { type Broker, ClusterArrivals } from '@tidings/core'
import { type Probe, decodeEnvelope } from './broker-envelope.js'
import { type RedisClient, isCluster } from './client.js'

/**
 * The broker on Redis pub/sub.
 *
 * Topics (Redis channels), under `prefix`:
 * - `<prefix>ch:<channel>`: the dispatches to one hub channel; a node subscribes to it while it
 *   has local subscribers for the channel (`subscribe`/`unsubscribe` from the hub), so a node
 *   receives only the channels it has interest in;
 * - `<prefix>all`: every other dispatch (to users, connections, everyone) and every request;
 *   every node subscribes to it;
 * - `<prefix>node:<nodeId>`: replies addressed to that node (and its own health probes).
 *
 * On a Redis Cluster every topic is a sharded channel (SSUBSCRIBE/SPUBLISH): each message goes to
 * the one shard that owns its topic's slot, never across the whole cluster bus.
 */
export interface RedisBrokerOptions {
  /** The app's connection (ioredis `Redis` or `Cluster`): publishes go through it. Never closed by the broker. */
  readonly client: RedisClient
  /** First part of every Redis channel the broker uses. Default `'tidings:'`. */
  readonly prefix?: string | undefined
  /**
   * A connection for the broker's subscriptions alone (it is put in subscriber mode). Default: a
   * `duplicate()` of `client` (a `Cluster` duplicate gets `shardedSubscribers: true`), made on
   * `start()` and closed by `close()`. A connection given here is never closed by the broker.
   */
  readonly subscriber?: RedisClient | undefined
  /**
   * Where the broker reports what goes wrong outside a call the hub made: the subscriber
   * connection lost (once per outage, not once per reconnect attempt), a resubscription that
   * failed, a malformed message dropped, a lost probe. Default: `console.warn`.
   */
  readonly onError?: ((err: Error) => void) | undefined
  /**
   * How often (ms) the broker publishes a probe to its own node topic, to check that its
   * subscriber connection really delivers (a connection can stay open while its subscriptions
   * are gone or it is wedged): a probe Redis reports no subscriber for makes the broker
   * subscribe again; a probe that does not arrive within the next interval makes it reconnect.
   * Either way `health()` says `down` until delivery is confirmed. 0 turns probes off. Default 5,000.
   */
  readonly probeIntervalMs?: number | undefined
  /**
   * Check the frame of each dispatch against the protocol's schema on arrival (the envelope is
   * always checked). Default true; turn it off only when every publisher on `prefix` is trusted.
   */
  readonly validateFrames?: boolean | undefined
  /** The time source of `health().since` (ms). Default `Date.now`. */
  readonly now?: (() => number) | undefined
}

/** What a health endpoint needs: whether the broker delivers now, and since when. */
export interface RedisBrokerHealth {
  /**
   * `up`: started, publishing connection ready, subscriber connection ready and every topic
   * (re)subscribed, and no probe lost. `down` otherwise (also before `start()` and after `close()`).
   */
  readonly state: 'up' | 'down'
  /** When the state last changed (ms, from `now`). Down for longer than a threshold: unhealthy. */
  readonly since: number
  /** Why it is down (absent when up). */
  readonly reason?: string | undefined
}

export interface RedisBrokerStats {
  /** Messages Redis accepted from this node. */
  readonly published: number
  /** Messages that arrived at this node's subscriber connection (probes not counted). */
  readonly received: number
  /** Messages handed to the hub. */
  readonly delivered: number
  /** Messages dropped because they were malformed or arrived on the wrong topic (each reported). */
  readonly malformed: number
  /** Messages from this node itself, or for a channel it no longer wants (dropped, as they should be). */
  readonly ignored: number
  /** Times every topic was subscribed again (after a reconnect or a failed probe). */
  readonly resubscribes: number
  /** Publishes rejected because Redis was unreachable. */
  readonly rejected: number
}

export interface RedisBroker extends Broker {
  health(): RedisBrokerHealth
  stats(): RedisBrokerStats
}

/** Redis is unreachable, or said no: what `publish` rejects with, and what `onError` hears. */
export class RedisBrokerError extends Error {
  override readonly name = 'RedisBrokerError'
  constructor(
    message: string,
    /** A short machine-readable cause: `unavailable`, `malformed`, `misrouted`, `subscriber`, `resubscribe`, `probe`, `deliver`, `closed`. */
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

// The part of ioredis the broker uses, for a Redis and a Cluster alike.
interface Conn {
  status: string
  on(event: string, fn: (...args: never[]) => void): unknown
  off(event: string, fn: (...args: never[]) => void): unknown
  publish(channel: string, message: string): Promise<number>
  spublish(channel: string, message: string): Promise<number>
  subscribe(...channels: string[]): Promise<unknown>
  unsubscribe(...channels: string[]): Promise<unknown>
  ssubscribe(...channels: string[]): Promise<unknown>
  sunsubscribe(...channels: string[]): Promise<unknown>
  connect(): Promise<void>
  disconnect(reconnect?: boolean): void
}

const SUBSCRIBE_CHUNK = 500
/** How long close() waits for Redis to confirm that a given subscriber left the broker's topics. */
const CLOSE_WAIT_MS = 1_000
const asError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)))

export function createRedisBroker(options: RedisBrokerOptions): RedisBroker {
  const client = options.client as unknown as Conn
  const sharded = isCluster(options.client)
  const prefix = options.prefix ?? 'tidings:'
  const now = options.now ?? Date.now
  const probeEvery = options.probeIntervalMs ?? 5_000

  const allTopic = `${prefix}all`
  const nodeTopic = (id: string) => `${prefix}node:${id}`
  const channelTopic = (channel: string) => `${prefix}ch:${channel}`
  /** The node, the hub channels it wants (kept across reconnects, applied on every (re)connect), arrivals handed to the hub, reports. */
  const arrivals = new ClusterArrivals({
    topics: { all: allTopic, node: nodeTopic, channel: channelTopic },
    validateFrames: options.validateFrames ?? true,
    error: (message, reason, cause) => new RedisBrokerError(message, reason, cause === undefined ? undefined : { cause }),
    onError: options.onError,
    label: '[tidings/redis broker]',
  })
  const { channels } = arrivals
  const report = (err: Error) => arrivals.report(err)

  let nodeId: string | undefined
  let sub: Conn | undefined
  let ownSub = false
  let started = false
  let closed = false
  /** Every topic is subscribed on the current subscriber connection (set once the resubscription answered). */
  let subscribed = false
  /** Counts (re)subscriptions, so a late answer of an older one is ignored. */
  let generation = 0
  /** The resubscription under way, if any (start() waits for it). */
  let resubscribing: Promise<void> | undefined
  /** The subscriber connection was lost and that was reported: report the next loss only after it came back. */
  let lossReported = false
  let publisherSeenReady = client.status === 'ready'
  let probeLost: string | undefined
  let probeSent = 0
  let probeSeen = 0
  let probeTimer: ReturnType<typeof setInterval> | undefined

  const stats = { published: 0, received: 0, resubscribes: 0, rejected: 0 }
  let health: RedisBrokerHealth = { state: 'down', since: now(), reason: 'not started' }

  const downReason = (): string | undefined => {
    if (closed) return 'closed'
    if (!started) return 'not started'
    if (client.status !== 'ready') return `publishing connection ${client.status}`
    if (!sub || sub.status !== 'ready') return `subscriber connection ${sub?.status ?? 'missing'}`
    if (!subscribed) return 'subscribing'
    return probeLost
  }
  const refresh = () => {
    const reason = downReason()
    const state = reason === undefined ? 'up' : 'down'
    if (state !== health.state) health = { state, since: now(), reason }
    else if (reason !== health.reason) health = { ...health, reason }
  }

  // ------------------------------------------------------------------ subscriptions

  const subCall = (op: 'sub' | 'unsub', topics: string[]): Promise<unknown> => {
    const s = sub!
    if (sharded) {
      // One command per topic: topics of one command must share a slot on a cluster.
      return Promise.all(topics.map((t) => (op === 'sub' ? s.ssubscribe(t) : s.sunsubscribe(t))))
    }
    return op === 'sub' ? s.subscribe(...topics) : s.unsubscribe(...topics)
  }

  const wantedTopics = (): string[] => [allTopic, nodeTopic(nodeId!), ...[...channels].map(channelTopic)]

  /** Subscribe every wanted topic on the (re)connected subscriber: the broker's own resubscription, after any reconnect. */
  const resubscribe = (): Promise<void> => {
    const p = subscribeAll().finally(() => {
      if (resubscribing === p) resubscribing = undefined
    })
    resubscribing = p
    return p
  }
  const subscribeAll = async (): Promise<void> => {
    if (closed || !started || !sub || sub.status !== 'ready') return
    const gen = ++generation
    subscribed = false
    refresh()
    const topics = wantedTopics()
    try {
      for (let i = 0; i < topics.length; i += SUBSCRIBE_CHUNK) await subCall('sub', topics.slice(i, i + SUBSCRIBE_CHUNK))
      if (gen !== generation || closed) return
      stats.resubscribes++
      subscribed = true
      // Every subscription after the first follows a loss: the hub looks for what it missed.
      if (stats.resubscribes > 1) arrivals.resumed()
      probeLost = undefined
      lossReported = false
      refresh()
    } catch (err) {
      if (gen !== generation || closed) return
      // The connection dropped while subscribing: its next 'ready' subscribes again. Anything
      // else (an ACL refusing the channel) is reported, and retried on the next probe.
      if (sub.status === 'ready') report(new RedisBrokerError(`subscribing to ${topics.length} topics failed: ${asError(err).message}`, 'resubscribe', { cause: err }))
      refresh()
    }
  }

  const onSubReady = () => void resubscribe()
  const onSubDown = () => {
    subscribed = false
    generation++
    refresh()
  }
  const onSubError = (err: Error) => {
    if (closed) return
    if (!lossReported) {
      lossReported = true
      report(new RedisBrokerError(`subscriber connection: ${err.message} (reported once until it is back)`, 'subscriber', { cause: err }))
    }
    refresh()
  }
  const onClientChange = () => {
    if (client.status === 'ready') publisherSeenReady = true
    refresh()
  }

  // ------------------------------------------------------------------ arrivals

  const onMessage = (topic: string | Buffer, payload: string | Buffer) => {
    if (closed || !arrivals.delivering) return
    const t = String(topic)
    const decoded = decodeEnvelope(String(payload))
    if (decoded.ok && decoded.probe) {
      const p = decoded.probe
      if (p.origin === nodeId && t === nodeTopic(nodeId)) {
        probeSeen = Math.max(probeSeen, p.n)
        if (probeLost !== undefined && probeSeen >= probeSent) {
          probeLost = undefined
          refresh()
        }
      }
      return
    }
    stats.received++
    if (!decoded.ok) arrivals.malformed(`message on ${t}: ${decoded.reason}`)
    else arrivals.take(decoded.message, t)
  }

  // ------------------------------------------------------------------ probes

  const probe = () => {
    if (closed || !started || !sub) return
    if (client.status !== 'ready' || sub.status !== 'ready' || !subscribed) return
    if (probeSent > probeSeen && probeLost === undefined) {
      // Redis took the last probe and said it had a subscriber, but it never arrived: the
      // connection is wedged. Reconnect it (its 'ready' subscribes everything again).
      probeLost = 'probe lost: reconnecting the subscriber'
      refresh()
      report(new RedisBrokerError(`probe ${probeSent} did not come back within ${probeEvery} ms: reconnecting the subscriber connection`, 'probe'))
      sub.disconnect(true)
      return
    }
    const n = ++probeSent
    const payload = JSON.stringify({ kind: 'probe', origin: nodeId!, n } satisfies Probe)
    const topic = nodeTopic(nodeId!)
    const sent = sharded ? client.spublish(topic, payload) : client.publish(topic, payload)
    sent.then(
      (receivers) => {
        if (closed || receivers > 0 || n !== probeSent) return
        // Redis knows no subscriber of our own topic: subscriptions were lost without a reconnect.
        probeSeen = n // not a wedged connection: do not reconnect for this one
        probeLost = 'subscriptions missing: subscribing again'
        report(new RedisBrokerError('Redis has no subscriber for this node: subscribing every topic again', 'probe'))
        void resubscribe()
      },
      () => {
        // Not taken: nothing to wait for (the publishing connection's state says why).
        if (n === probeSent) probeSeen = n
      },
    )
  }

  // ------------------------------------------------------------------ the port

  const makeSubscriber = (): Conn => {
    if (options.subscriber) return options.subscriber as unknown as Conn
    ownSub = true
    if (sharded) {
      const cluster = options.client as import('ioredis').Cluster
      return cluster.duplicate([], { shardedSubscribers: true, lazyConnect: true }) as unknown as Conn
    }
    const redis = options.client as import('ioredis').Redis
    return redis.duplicate({
      lazyConnect: true,
      // The broker resubscribes itself on every 'ready' (with what is wanted then), so nothing
      // is left to ioredis: no automatic resubscription, no resending of commands from before
      // the drop, no queueing while down, commands in flight fail at once when the link drops.
      autoResubscribe: false,
      autoResendUnfulfilledCommands: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      // Always reconnect, whatever the app's client does.
      retryStrategy: (times: number) => Math.min(50 * times, 1_000),
      connectionName: `tidings-broker:${nodeId}`,
    }) as unknown as Conn
  }

  const listen = (on: boolean) => {
    const method = on ? 'on' : 'off'
    client[method]('ready', onClientChange)
    client[method]('close', onClientChange)
    client[method]('end', onClientChange)
    client[method]('reconnecting', onClientChange)
    if (!sub) return
    sub[method]('ready', onSubReady)
    sub[method]('close', onSubDown)
    sub[method]('end', onSubDown)
    sub[method]('error', onSubError as never)
    sub[method](sharded ? 'smessage' : 'message', onMessage as never)
  }

  return {
    async start(id, fn, hooks) {
      if (closed || started) return
      nodeId = id
      arrivals.start(id, fn, hooks)
      sub = makeSubscriber()
      started = true
      listen(true)
      if (sub.status === 'wait') {
        try {
          await sub.connect()
        } catch (err) {
          // Redis is down at start: the subscriber keeps trying, and subscribes when it gets through.
          if (!lossReported) report(new RedisBrokerError(`subscriber connection: ${asError(err).message}`, 'subscriber', { cause: err }))
          lossReported = true
        }
      } else if (sub.status !== 'ready' && sub.status !== 'end') {
        // A given subscriber still connecting: wait for its first answer (ready, or a failure).
        const s = sub
        await new Promise<void>((resolve) => {
          const done = () => {
            for (const e of ['ready', 'error', 'close', 'end']) s.off(e, done)
            resolve()
          }
          for (const e of ['ready', 'error', 'close', 'end']) s.on(e, done)
        })
      }
      if (probeEvery > 0) {
        probeTimer = setInterval(probe, probeEvery)
        probeTimer.unref?.()
      }
      // Its 'ready' started the subscription (or, for a subscriber given ready, nothing did yet).
      if (resubscribing) await resubscribing
      else if (sub.status === 'ready' && !subscribed) await resubscribe()
      refresh()
    },

    publish(message) {
      if (closed) return
      let payload: string
      let topic: string
      try {
        topic = arrivals.topicOf(message)
        payload = JSON.stringify(message)
        if (typeof payload !== 'string') throw new TypeError('not a message')
      } catch (err) {
        return Promise.reject(asError(err))
      }
      if (client.status === 'end' || (publisherSeenReady && client.status !== 'ready')) {
        stats.rejected++
        return Promise.reject(new RedisBrokerError(`Redis is unreachable (publishing connection ${client.status}): message not sent`, 'unavailable'))
      }
      try {
        return (sharded ? client.spublish(topic, payload) : client.publish(topic, payload)).then(
          () => {
            stats.published++
          },
          (err: unknown) => {
            stats.rejected++
            throw new RedisBrokerError(`publishing failed: ${asError(err).message}`, 'unavailable', { cause: err })
          },
        )
      } catch (err) {
        return Promise.reject(asError(err))
      }
    },

    subscribe(channel) {
      if (closed || channels.has(channel)) return
      channels.add(channel)
      // Not started or not connected: recorded, subscribed on the next (re)connect.
      if (!started || !sub || sub.status !== 'ready') return
      const s = sub
      return subCall('sub', [channelTopic(channel)]).then(
        () => undefined,
        (err: unknown) => {
          // The link dropped: the next 'ready' subscribes it with everything else.
          if (closed || s !== sub || s.status !== 'ready') return
          channels.delete(channel)
          throw new RedisBrokerError(`subscribing to ${channel} failed: ${asError(err).message}`, 'resubscribe', { cause: err })
        },
      )
    },

    unsubscribe(channel) {
      if (!channels.delete(channel)) return
      if (closed || !started || !sub || sub.status !== 'ready') return
      // A failure leaves a subscription Redis still has: its messages are dropped on arrival.
      return subCall('unsub', [channelTopic(channel)]).then(
        () => undefined,
        () => undefined,
      )
    },

    async close() {
      if (closed) return
      const topics = started && nodeId !== undefined ? wantedTopics() : []
      closed = true
      arrivals.stop()
      if (probeTimer !== undefined) clearInterval(probeTimer)
      listen(false)
      refresh()
      const s = sub
      sub = undefined
      if (!s) return
      if (ownSub) {
        s.disconnect()
        return
      }
      // A subscriber the app gave: leave it open, but take back this broker's topics.
      if (topics.length > 0 && s.status === 'ready') {
        const gone = (sharded ? Promise.all(topics.map((t) => s.sunsubscribe(t))) : s.unsubscribe(...topics)).catch(() => undefined)
        // Delivery has stopped already; wait a little for Redis to confirm, never for ever.
        let timer: ReturnType<typeof setTimeout> | undefined
        await Promise.race([gone, new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)))])
        clearTimeout(timer)
      }
    },

    health() {
      refresh()
      return health
    },

    stats() {
      return { ...stats, ...arrivals.counts }
    },
  }
}
