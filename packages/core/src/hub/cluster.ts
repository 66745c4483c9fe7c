import { RECIPIENT_FILTER_ROOTS, compileFilter, type FilterPredicate } from '@tidings/protocol'
import type { Broker, ClusterMessage, ClusterQuery, Dispatch, DispatchTarget, Reply, Request } from '../ports/broker.js'
import type { ServerFrame } from '@tidings/protocol'
import type { Clock, TimerHandle } from '../ports/clock.js'
import type { Log } from '../ports/logger.js'
import type { Outbound } from '../ports/session.js'
import { type MaybePromise, isPromise } from '../util.js'
import type { Subscription } from './connection.js'
import type { Signals } from './events.js'

/** How this node answers each query of another node (with what it has: possibly nothing). */
export interface ClusterAnswers {
  answer(query: ClusterQuery): MaybePromise<unknown>
}

/** What the cluster side needs: the broker, local delivery, and the nodes known to be alive. */
export interface ClusterHost {
  readonly nodeId: string
  readonly broker: Broker
  readonly clock: Clock
  readonly logger: Log
  /** How long a cluster-wide question waits for the other nodes. */
  readonly requestTimeoutMs: number
  /** A broker was given: there may be other nodes (else every question is answered here alone). */
  readonly clustered: boolean
  /** The hub is closing: local connections are going away. */
  readonly closing: boolean
  /** The broker is subscribed again after losing its bus: look for what it may have missed. */
  resumed(): void
  /** Deliver a dispatch to this node's connections; returns how many it reached. */
  deliverLocal(d: Dispatch, out: Outbound | undefined, where: FilterPredicate | undefined, collect: Subscription[] | null): number
  /**
   * The other nodes alive now (their heartbeats), or undefined when nodes do not heartbeat
   * (then a question waits its whole timeout for answers).
   */
  liveNodes(): MaybePromise<readonly string[] | undefined>
  readonly signals: Signals
}

/** How a dispatch goes, besides its target and frame. */
export type DispatchOptions = Pick<Dispatch, 'exclude' | 'where' | 'priority' | 'volatile' | 'epoch'>

/** Each node's answer to a cluster-wide question, and the nodes that did not answer in time. */
export interface Answers<T> {
  /** This node's answer first, then the others' as they came. */
  readonly answers: ReadonlyArray<{ readonly nodeId: string; readonly result: T }>
  /** Nodes expected (alive by their heartbeats) that did not answer within the timeout. */
  readonly missing: readonly string[]
}

interface Pending {
  readonly expected: Set<string> | null
  readonly answers: Array<{ nodeId: string; result: unknown }>
  readonly resolve: () => void
  timer: TimerHandle | undefined
}

/**
 * This node among others, over the broker: every dispatch is delivered here and handed to the
 * broker for the other nodes; the broker is told which channels this node has subscribers for
 * (interest), so it brings only those channels' dispatches; questions for every node (`ask`) go
 * out as requests and wait for one reply per live node, up to a timeout; questions from other
 * nodes are answered by `answers`.
 */
export class Cluster {
  /** Resolved once the broker has started (requests wait for it). */
  readonly ready: MaybePromise<void>
  private answers: ClusterAnswers | undefined
  private readonly pending = new Map<string, Pending>()
  /** Channels this node told the broker it wants, with the answer of that call while it is outstanding. */
  private readonly interest = new Map<string, MaybePromise<void>>()
  private seq = 0
  private messages = 0

  constructor(private readonly host: ClusterHost) {
    this.ready = this.startBroker()
  }

  /** Who answers other nodes' questions (set once, when the hub is wired). */
  answerWith(answers: ClusterAnswers): void {
    this.answers = answers
  }

  /** A new message id of this node (`<node>-<n>`): unique across the cluster when node ids are. */
  messageId(): string {
    return `${this.host.nodeId}-${(++this.messages).toString(36)}`
  }

  /** The one place a dispatch is made: a frame from this node to a target. */
  dispatchOf(target: DispatchTarget, frame: ServerFrame, extra: DispatchOptions = {}): Dispatch {
    return { kind: 'dispatch', origin: this.host.nodeId, target, frame, ...extra }
  }

  /** Make a dispatch and deliver it here and on the other nodes. Returns local recipients. */
  deliver(target: DispatchTarget, frame: ServerFrame, extra?: DispatchOptions, out?: Outbound, where?: FilterPredicate): number {
    return this.dispatch(this.dispatchOf(target, frame, extra), out, where)
  }

  /** Deliver locally and hand to the broker for the other nodes. Returns local recipients. */
  dispatch(d: Dispatch, out?: Outbound, where?: FilterPredicate, collect: Subscription[] | null = null): number {
    // While closing, local connections are going away: only the other nodes need to hear (leaves).
    const n = this.host.closing ? 0 : this.host.deliverLocal(d, out, where, collect)
    this.toBroker(d)
    return n
  }

  // ------------------------------------------------------------------ interest

  /**
   * This node has a subscriber for `channel` now: ask the broker for its dispatches. The answer
   * (await it before reading the channel's position, so no message falls between the two) is
   * shared by every subscriber that arrives while it is outstanding.
   */
  want(channel: string): MaybePromise<void> {
    if (this.interest.has(channel)) return this.interest.get(channel)
    let answer: MaybePromise<void>
    try {
      answer = this.host.broker.subscribe(channel)
    } catch (err) {
      answer = Promise.reject(err)
    }
    if (!isPromise(answer)) {
      this.interest.set(channel, undefined)
      return
    }
    const settled = answer.then(
      () => {
        if (this.interest.get(channel) === settled) this.interest.set(channel, undefined)
      },
      (err) => {
        if (this.interest.get(channel) === settled) this.interest.delete(channel)
        this.host.signals.report(err, 'broker.subscribe')
        throw err
      },
    )
    this.interest.set(channel, settled)
    return settled
  }

  /** The last local subscriber of `channel` left. */
  unwant(channel: string): void {
    if (!this.interest.delete(channel)) return
    try {
      const r = this.host.broker.unsubscribe(channel)
      if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'broker.unsubscribe'))
    } catch (err) {
      this.host.signals.report(err, 'broker.unsubscribe')
    }
  }

  // ------------------------------------------------------------------ questions for every node

  /**
   * Ask every other node and gather their answers: waits for one reply from each live node (by
   * heartbeats), or until `requestTimeoutMs`; nodes that did not answer are listed in `missing`
   * (and logged). `local` is this node's own answer, listed first.
   */
  async ask<T>(query: ClusterQuery, local: T, timeoutMs = this.host.requestTimeoutMs): Promise<Answers<T>> {
    const own = { nodeId: this.host.nodeId, result: local }
    if (!this.host.clustered) return { answers: [own], missing: [] }
    let expected: Set<string> | null
    try {
      const live = await this.host.liveNodes()
      expected = live === undefined ? null : new Set(live.filter((n) => n !== this.host.nodeId))
    } catch (err) {
      this.host.signals.report(err, 'nodes.live')
      expected = null
    }
    await this.ready
    const id = `${this.host.nodeId}:${(++this.seq).toString(36)}`
    const answers: Array<{ nodeId: string; result: unknown }> = []
    await new Promise<void>((resolve) => {
      const p: Pending = { expected, answers, resolve, timer: undefined }
      this.pending.set(id, p)
      // Sent even when no other node is known alive: the request still acts on nodes that do not
      // heartbeat into a shared presence store; their answers are then not waited for.
      this.toBroker({ kind: 'request', origin: this.host.nodeId, id, query })
      if (expected !== null && expected.size === 0) this.finish(id)
      else p.timer = this.host.clock.setTimeout(() => this.finish(id), timeoutMs)
    })
    const missing = expected === null ? [] : [...expected]
    if (missing.length > 0) this.host.logger.warn('nodes did not answer a cluster request in time', { op: query.op, missing, timeoutMs })
    return { answers: [own, ...(answers as Array<{ nodeId: string; result: T }>)], missing }
  }

  private finish(id: string): void {
    const p = this.pending.get(id)
    if (!p) return
    this.pending.delete(id)
    if (p.timer !== undefined) this.host.clock.clearTimeout(p.timer)
    p.resolve()
  }

  /** A node was found dead: questions stop waiting for it. */
  nodeGone(nodeId: string): void {
    for (const [id, p] of this.pending) {
      if (p.expected?.delete(nodeId) && p.expected.size === 0) this.finish(id)
    }
  }

  /** Stop waiting: every outstanding question answers with what it has. */
  stop(): void {
    for (const id of [...this.pending.keys()]) this.finish(id)
  }

  // ------------------------------------------------------------------ what other nodes send

  private fromCluster(m: ClusterMessage): void {
    if (m.origin === this.host.nodeId) return
    try {
      if (m.kind === 'dispatch') {
        this.host.deliverLocal(m, undefined, m.where !== undefined ? compileFilter(m.where, RECIPIENT_FILTER_ROOTS) : undefined, null)
      } else if (m.kind === 'request') this.answer(m)
      else this.replied(m)
    } catch (err) {
      this.host.signals.report(err, 'broker.deliver')
    }
  }

  private answer(m: Request): void {
    if (!this.answers) return
    const reply = (result: unknown) => this.toBroker({ kind: 'reply', origin: this.host.nodeId, to: m.origin, id: m.id, result: result ?? null })
    const r = this.answers.answer(m.query)
    if (isPromise(r)) r.then(reply, (err) => this.host.signals.report(err, `cluster.${m.query.op}`))
    else reply(r)
  }

  private replied(m: Reply): void {
    const p = this.pending.get(m.id)
    if (!p || m.to !== this.host.nodeId) return
    if (p.answers.some((a) => a.nodeId === m.origin)) return
    p.answers.push({ nodeId: m.origin, result: m.result })
    if (p.expected?.delete(m.origin) && p.expected.size === 0) this.finish(m.id)
  }

  // ------------------------------------------------------------------ the broker

  private toBroker(m: ClusterMessage): void {
    try {
      const r = this.host.broker.publish(m)
      if (isPromise(r)) r.catch((err) => this.host.signals.report(err, 'broker.publish'))
    } catch (err) {
      this.host.signals.report(err, 'broker.publish')
    }
  }

  private startBroker(): MaybePromise<void> {
    try {
      const r = this.host.broker.start(this.host.nodeId, (m) => this.fromCluster(m), { resumed: () => this.host.resumed(), error: (err) => this.host.signals.report(err, 'broker') })
      return isPromise(r) ? r.catch((err) => this.host.signals.report(err, 'broker.start')) : r
    } catch (err) {
      this.host.signals.report(err, 'broker.start')
    }
  }
}
