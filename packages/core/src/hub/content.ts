import { RealtimeError } from '@tidings/protocol'
import type { LRUCache } from 'lru-cache'
import type { Clock } from '../ports/clock.js'
import { type MaybePromise, boundedMap, isPromise } from '../util.js'
import type { Signals } from './events.js'

// The content filter: a hook that sees each client publish before it is stored or delivered and
// allows it, flags it (delivered; the app is told) or refuses it (RT_006 / RT_007 to the
// publisher). `createSpamFilter` is a ready-made one: repeats, bursts and links per user.

/** What a content filter sees of one client publish. Never called for server publishes, nor on `encrypted` channels. */
export interface ContentContext {
  readonly channel: string
  /** The channel pattern the name matched (e.g. `chat:*`), so one filter can treat patterns apart. */
  readonly pattern: string
  readonly event: string
  readonly data: unknown
  readonly userId: string | undefined
  readonly connectionId: string
  /** Bytes of the client's frame as received. */
  readonly size: number
  /** The hub clock's time (ms). */
  readonly now: number
}

/** A refusal: the publisher gets `RealtimeError(code, reason)`; nothing is stored or delivered. */
export interface ContentRefusal {
  readonly refuse: 'RT_006' | 'RT_007'
  readonly reason: string
  /** Sent to the client in the error's details (with `RT_006`: when to try again). */
  readonly retryAfterMs?: number
}

/**
 * A filter's answer: `undefined` / `true` / `'allow'` lets the message through; `{ flag: reason }`
 * delivers it and emits `content:flagged`; a `ContentRefusal` refuses it.
 */
export type ContentVerdict = undefined | void | true | 'allow' | { readonly flag: string } | ContentRefusal

/** A content filter. It may answer asynchronously (e.g. ask a moderation service), within `limits.contentTimeoutMs`. */
export type ContentFilter = (ctx: ContentContext) => MaybePromise<ContentVerdict>

/** What the publish path needs: the hub clock, the time limit and where failures go. */
export interface ContentCheckHost {
  readonly clock: Clock
  readonly timeoutMs: number
  readonly signals: Signals
}

/**
 * Runs the hub's content filter on one client publish. Answers the flag reason (or undefined)
 * and throws a `RealtimeError` for a refusal; emits `content:refused`. A filter that throws is an
 * internal error (reported; the publisher gets `RT_001`); one that does not answer within the
 * time limit refuses with `RT_006` (fail closed: a moderation service that is down lets nothing
 * through unchecked).
 */
export class ContentCheck {
  constructor(
    private readonly filter: ContentFilter,
    private readonly host: ContentCheckHost,
  ) {}

  check(ctx: ContentContext): MaybePromise<string | undefined> {
    const verdict = this.filter(ctx)
    if (!isPromise(verdict)) return this.decide(ctx, verdict)
    return new Promise<ContentVerdict | typeof TIMED_OUT>((resolve, reject) => {
      const timer = this.host.clock.setTimeout(() => resolve(TIMED_OUT), this.host.timeoutMs)
      verdict.then(
        (v) => {
          this.host.clock.clearTimeout(timer)
          resolve(v)
        },
        (err: unknown) => {
          this.host.clock.clearTimeout(timer)
          reject(err)
        },
      )
    }).then((v) =>
      v === TIMED_OUT
        ? this.refuse(ctx, { refuse: 'RT_006', reason: `content check did not answer within ${this.host.timeoutMs} ms`, retryAfterMs: 1000 })
        : this.decide(ctx, v),
    )
  }

  private decide(ctx: ContentContext, v: ContentVerdict): string | undefined {
    if (v === undefined || v === null || v === true || v === 'allow') return undefined
    if (typeof v === 'object') {
      if ('flag' in v && typeof v.flag === 'string') return v.flag || 'flagged'
      if ('refuse' in v && (v.refuse === 'RT_006' || v.refuse === 'RT_007')) return this.refuse(ctx, v)
    }
    // A verdict of no known shape: a bug in the filter. Reported, and nothing goes out unchecked.
    this.host.signals.report(new TypeError(`content filter answered an unknown verdict: ${safeString(v)}`), 'content')
    return this.refuse(ctx, { refuse: 'RT_007', reason: 'content check failed' })
  }

  private refuse(ctx: ContentContext, r: ContentRefusal): never {
    const reason = typeof r.reason === 'string' && r.reason.length > 0 ? r.reason : 'refused by the content filter'
    if (this.host.signals.listenerCount('content:refused') > 0) {
      this.host.signals.emit('content:refused', { channel: ctx.channel, event: ctx.event, userId: ctx.userId, connectionId: ctx.connectionId, code: r.refuse, reason })
    }
    throw new RealtimeError(r.refuse, reason, r.retryAfterMs !== undefined ? { retryAfterMs: r.retryAfterMs, scope: 'content' } : { scope: 'content' })
  }
}

const TIMED_OUT: unique symbol = Symbol('timed out')

function safeString(v: unknown): string {
  try {
    return String(JSON.stringify(v)).slice(0, 100)
  } catch {
    return typeof v
  }
}

// ---------------------------------------------------------------------------------- spam filter

export interface SpamFilterOptions {
  /**
   * Identical messages (same event and data) from one user: more than `max` of them among the
   * user's last 16 messages within `windowMs` is spam (`RT_006`, without `retryAfterMs`, so the
   * client SDK does not send it again by itself). Default `{ max: 3, windowMs: 30_000 }`.
   */
  readonly repeats?: { readonly max?: number; readonly windowMs?: number } | false
  /** Messages per user (all channels, all connections of the user on this node): at most `max` per `windowMs` (token bucket; `RT_006`). Default `{ max: 30, windowMs: 10_000 }`. */
  readonly burst?: { readonly max?: number; readonly windowMs?: number } | false
  /** Links (`scheme://` or `www.`) in the string values of a message's data: more than `max` is spam (`RT_007`). Default `{ max: 3 }`. */
  readonly links?: { readonly max?: number } | false
  /** Refuse spam (default) or only flag it (`content:flagged`: delivered, the app decides). */
  readonly action?: 'refuse' | 'flag'
  /** Users (or anonymous connections) remembered at once, least recently active forgotten first. Default 10 000. */
  readonly maxUsers?: number
  /** Characters of string data scanned for links per message (the rest is not looked at). Default 16 384. */
  readonly maxScanChars?: number
  /** Which channels it looks at (by name and pattern). Default: every channel it is asked about. */
  readonly appliesTo?: (channel: string, pattern: string) => boolean
}

/** Messages per user kept for the repeat check. */
const RECENT = 16

interface UserState {
  /** Burst bucket. */
  tokens: number
  refilledAt: number
  /** Ring of the last RECENT message hashes and their times. */
  readonly hashes: Float64Array
  readonly times: Float64Array
  next: number
}

/**
 * A content filter for chat-like channels: repeated identical messages, bursts per user and
 * too many links. Synchronous and bounded: per user a 16-message ring and a token bucket, at
 * most `maxUsers` users (an LRU); the link scan stops after `maxScanChars` characters and
 * uses `indexOf`, no regular expression. Anonymous publishers are counted per connection.
 */
export function createSpamFilter(options: SpamFilterOptions = {}): ContentFilter {
  const repeats = options.repeats === false ? undefined : { max: positive(options.repeats?.max, 3, 'repeats.max'), windowMs: positive(options.repeats?.windowMs, 30_000, 'repeats.windowMs') }
  const burst = options.burst === false ? undefined : { max: positive(options.burst?.max, 30, 'burst.max'), windowMs: positive(options.burst?.windowMs, 10_000, 'burst.windowMs') }
  const links = options.links === false ? undefined : { max: nonNegative(options.links?.max, 3, 'links.max') }
  const maxScan = positive(options.maxScanChars, 16_384, 'maxScanChars')
  const flagOnly = options.action === 'flag'
  const appliesTo = options.appliesTo
  const users: LRUCache<string, UserState> = boundedMap(positive(options.maxUsers, 10_000, 'maxUsers'))

  const spam = (code: 'RT_006' | 'RT_007', reason: string, retryAfterMs?: number): ContentVerdict =>
    flagOnly ? { flag: reason } : retryAfterMs === undefined ? { refuse: code, reason } : { refuse: code, reason, retryAfterMs }

  return (ctx) => {
    if (appliesTo !== undefined && !appliesTo(ctx.channel, ctx.pattern)) return undefined
    const now = ctx.now
    const key = ctx.userId !== undefined ? `u:${ctx.userId}` : `c:${ctx.connectionId}`
    let user = users.get(key)
    if (user === undefined) {
      user = { tokens: burst?.max ?? 0, refilledAt: now, hashes: new Float64Array(RECENT), times: new Float64Array(RECENT).fill(-Infinity), next: 0 }
      users.set(key, user)
    }
    if (burst !== undefined) {
      if (now > user.refilledAt) {
        user.tokens = Math.min(burst.max, user.tokens + ((now - user.refilledAt) * burst.max) / burst.windowMs)
        user.refilledAt = now
      }
      if (user.tokens < 1) {
        const retryAfterMs = Math.ceil(((1 - user.tokens) * burst.windowMs) / burst.max)
        return spam('RT_006', `more than ${burst.max} messages in ${burst.windowMs} ms`, retryAfterMs)
      }
      user.tokens -= 1
    }
    if (links !== undefined) {
      const n = countLinks(ctx.data, maxScan, links.max + 1)
      if (n > links.max) return spam('RT_007', `more than ${links.max} links in one message`)
    }
    if (repeats !== undefined) {
      const h = hashMessage(ctx.event, ctx.data)
      const since = now - repeats.windowMs
      let same = 0
      for (let i = 0; i < RECENT; i++) if (user.hashes[i] === h && user.times[i]! > since) same++
      user.hashes[user.next] = h
      user.times[user.next] = now
      user.next = (user.next + 1) % RECENT
      // No retryAfterMs: the client SDK would send the same message again once the window passed.
      if (same >= repeats.max) return spam('RT_006', `the same message more than ${repeats.max} times in ${repeats.windowMs} ms`)
    }
    return undefined
  }
}

/**
 * Links in the string values of `data` (`://` or a `www.` not right after one), counting stops at
 * `stopAt`; at most `budget` characters are looked at, over at most 1 000 values, no recursion.
 */
export function countLinks(data: unknown, budget: number, stopAt = Infinity): number {
  let count = 0
  let left = budget
  let visited = 0
  const stack: unknown[] = [data]
  while (stack.length > 0 && left > 0 && visited++ < 1000) {
    const v = stack.pop()
    if (typeof v === 'string') {
      const s = (v.length > left ? v.slice(0, left) : v).toLowerCase()
      left -= s.length
      for (let i = s.indexOf('://'); i !== -1; i = s.indexOf('://', i + 3)) if (++count >= stopAt) return count
      for (let i = s.indexOf('www.'); i !== -1; i = s.indexOf('www.', i + 4)) {
        if (i >= 2 && s.charCodeAt(i - 1) === 47 && s.charCodeAt(i - 2) === 47) continue // "//www." was counted as "://"
        if (++count >= stopAt) return count
      }
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push(v[i])
    } else if (v !== null && typeof v === 'object') {
      for (const k of Object.keys(v)) stack.push((v as Record<string, unknown>)[k])
    }
  }
  return count
}

/** A 53-bit hash (cyrb53) of a message's event and data, for the repeat check. */
export function hashMessage(event: string, data: unknown): number {
  let text: string
  try {
    text = `${event}\u0000${JSON.stringify(data) ?? ''}`
  } catch {
    text = `${event}\u0000${String(data)}`
  }
  let h1 = 0xdeadbeef
  let h2 = 0x41c6ce57
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 2654435761)
    h2 = Math.imul(h2 ^ c, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return 4294967296 * (2097151 & h2) + (h1 >>> 0)
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new TypeError(`createSpamFilter: ${name} must be a positive number`)
  return value
}

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new TypeError(`createSpamFilter: ${name} must be a non-negative number`)
  return value
}
