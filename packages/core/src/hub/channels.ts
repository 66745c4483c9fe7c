import type { ChannelRule } from '../ports/auth.js'
import type { Retention } from '../ports/store.js'
import { compileChannelRules } from '../rules/compile.js'

/** Anything with zod's `safeParse` shape validates an event's data. */
export interface EventSchema {
  safeParse(data: unknown): { success: boolean; error?: { issues?: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>; message: string }> } | unknown }
}

/** Options of a channel pattern. Unset options take the hub's defaults. */
export interface ChannelOptions {
  /** Who may subscribe (a rule: see {@link ChannelRule}). Default `'authenticated'`. */
  readonly subscribe?: ChannelRule
  /** Who may publish from a client (server code always may). Default `'authenticated'`. */
  readonly publish?: ChannelRule
  /**
   * Rules per action, in the rules language, as functions or booleans: who may subscribe,
   * publish, see and join presence, and read history (and replay on resume). `subscribe` and
   * `publish` here are the same as the top-level `subscribe`/`publish` (which win when both are
   * given). Unset: presence and history follow `subscribe`.
   */
  readonly rules?: ChannelRules
  /**
   * End-to-end encrypted: every client publish must carry an encrypted envelope
   * (`{ e2e: 1, kid, iv, ct }`, see docs/encryption.md) as its data, anything else is refused with
   * `RT_007`; the server, the store and the broker relay ciphertext they cannot read. Filters
   * and event schemas cannot look inside. Default false.
   */
  readonly encrypted?: boolean
  /** Track presence (members, join/leave/update, typing). Default false. */
  readonly presence?: boolean
  /** The channel log, for offsets, history and recovery; `false` keeps none (no offsets). */
  readonly history?: Partial<Retention> | false
  /** Largest message data, in bytes of its encoded frame. Default: the hub's `maxMessageSize`. */
  readonly maxMessageSize?: number
  /**
   * Client publishes to one channel of this pattern per minute, across all its publishers
   * (`RT_006` past it). Default the hub's `limits.channelPublishesPerMinute` (none unless set).
   */
  readonly publishesPerMinute?: number
  /** Most distinct users (anonymous connections count one each) subscribed at once. */
  readonly capacity?: number
  /** Schemas for the data of named events; a publish that fails one gets `RT_007`. */
  readonly events?: Readonly<Record<string, EventSchema>>
  /** With `events`: refuse events that are not listed. */
  readonly strictEvents?: boolean
  /** `'required'`: subscribing needs a room record (else `RT_004`); `'auto'`: create one on first subscribe. */
  readonly room?: 'required' | 'auto' | false
  /** Deliver a client's publish back to the publishing connection too. Default false. */
  readonly echo?: boolean
  /** Reserved for live query channels (`db:collection:*`): served by a live query provider. */
  readonly liveQuery?: boolean
  /**
   * `'at-least-once'`: every message must be acknowledged and is sent again (from the log) until
   * it is, with backoff; with publisher idempotency keys and receivers that drop offsets they
   * already processed, this is exactly-once to the application. Default `'at-most-once'`.
   */
  readonly delivery?: 'at-most-once' | 'at-least-once'
  /**
   * Keep messages for users who are not connected and deliver them, in order, when the user next
   * subscribes (from the user's cursor: what it last acknowledged). The log's retention becomes
   * at most `maxMessages` and `ttlMs`. Default off; on for `private:user-*` (100, 5 minutes).
   */
  readonly offline?: { readonly maxMessages?: number; readonly ttlMs?: number } | false
  /** Send `receipt` frames to a message's sender when it is delivered (acknowledged) and read. Default false. */
  readonly receipts?: boolean
  /**
   * `'own'`: a client may edit and delete its own messages (`edit` / `delete` frames; its publish
   * rule must still allow it). Needs history and a store with `revise` (memory, SQL, Redis).
   * Server code may always revise (`hub.channel(name).edit` / `.delete`). Default false.
   */
  readonly revisions?: 'own' | false
}

/** Rules per action of a channel pattern (see `ChannelOptions.rules`). */
export interface ChannelRules {
  readonly subscribe?: ChannelRule
  readonly publish?: ChannelRule
  readonly presence?: ChannelRule
  readonly history?: ChannelRule
}

export interface ResolvedChannel {
  readonly pattern: string
  readonly options: ChannelOptions
  readonly params: Readonly<Record<string, string>>
}

interface CompiledPattern {
  readonly pattern: string
  readonly regex: RegExp
  readonly literalPrefix: string
  options: ChannelOptions
}

const RESERVED_PREFIXES = ['public:', 'private:', 'presence:', 'db:'] as const

const isOwnUserChannel: ChannelRule = (ctx) => ctx.identity.userId !== undefined && ctx.identity.userId === ctx.params['userId']
const isRoomMember: ChannelRule = (ctx) => ctx.identity.userId !== undefined && ctx.room?.members.has(ctx.identity.userId) === true

/** The channel kinds every hub knows. Apps may re-register any of these patterns to change its options. */
export const BUILT_IN_CHANNELS: ReadonlyArray<readonly [string, ChannelOptions]> = [
  ['public:*', { subscribe: true, publish: 'authenticated' }],
  ['private:user-{userId}', { subscribe: isOwnUserChannel, publish: isOwnUserChannel, delivery: 'at-least-once', offline: { maxMessages: 100, ttlMs: 5 * 60_000 } }],
  ['private:room-{roomId}', { subscribe: isRoomMember, publish: isRoomMember, presence: true, room: 'required' }],
  ['presence:*', { subscribe: 'authenticated', publish: 'authenticated', presence: true }],
  ['db:collection:*', { subscribe: 'authenticated', publish: false, liveQuery: true, history: false }],
]

/**
 * Channel patterns: `*` matches the rest of a name, `{name}` one part without `:`. Names under a
 * reserved prefix (`public:`, `private:`, `presence:`, `db:`) only match patterns that spell
 * that prefix out, so an app pattern like `{scope}:{entity}:{id}` can never capture them.
 * App patterns are tried first, in registration order, then the built-in ones.
 */
export class ChannelPatterns {
  private readonly app: CompiledPattern[] = []
  private readonly builtIn: CompiledPattern[]

  constructor() {
    this.builtIn = BUILT_IN_CHANNELS.map(([p, o]) => compilePattern(p, o))
  }

  /** Register (or replace the options of) a pattern. */
  register(pattern: string, options: ChannelOptions): void {
    const existing = [...this.app, ...this.builtIn].find((c) => c.pattern === pattern)
    if (existing) {
      validateOptions(pattern, options)
      existing.options = options
    }
    else this.app.push(compilePattern(pattern, options))
  }

  resolve(name: string): ResolvedChannel | undefined {
    const reserved = RESERVED_PREFIXES.find((p) => name.startsWith(p))
    for (const list of [this.app, this.builtIn]) {
      for (const c of list) {
        if (reserved !== undefined && !c.literalPrefix.startsWith(reserved)) continue
        const m = c.regex.exec(name)
        if (m) return { pattern: c.pattern, options: c.options, params: { ...m.groups } }
      }
    }
    return undefined
  }

  list(): Array<{ pattern: string; options: ChannelOptions; builtIn: boolean }> {
    return [
      ...this.app.map((c) => ({ pattern: c.pattern, options: c.options, builtIn: false })),
      ...this.builtIn.map((c) => ({ pattern: c.pattern, options: c.options, builtIn: true })),
    ]
  }
}

function compilePattern(pattern: string, options: ChannelOptions): CompiledPattern {
  if (!/^[A-Za-z0-9_\-:.@=,+~{}*]+$/.test(pattern)) throw new TypeError(`invalid channel pattern '${pattern}'`)
  validateOptions(pattern, options)
  let source = ''
  const names = new Set<string>()
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!
    if (ch === '*') source += '(.+)'
    else if (ch === '{') {
      const end = pattern.indexOf('}', i)
      const name = pattern.slice(i + 1, end)
      if (end < 0 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || names.has(name)) throw new TypeError(`invalid parameter in channel pattern '${pattern}'`)
      names.add(name)
      source += `(?<${name}>[^:]+)`
      i = end
    } else source += ch.replace(/[.+]/g, (c) => `\\${c}`)
  }
  const cut = pattern.search(/[{*]/)
  return { pattern, regex: new RegExp(`^${source}$`), literalPrefix: cut < 0 ? pattern : pattern.slice(0, cut), options }
}

/** Options that cannot work together are refused when the pattern is registered, not discovered later. */
function validateOptions(pattern: string, options: ChannelOptions): void {
  // Rules are compiled here, once: an expression with a syntax error throws now, with its position.
  compileChannelRules(pattern, options)
  const rate = options.publishesPerMinute
  if (rate !== undefined && (typeof rate !== 'number' || !(rate > 0))) throw new TypeError(`channel pattern '${pattern}': publishesPerMinute must be a positive number`)
  if (options.history === false && options.delivery === 'at-least-once') {
    throw new TypeError(`channel pattern '${pattern}': at-least-once delivery redelivers from the channel's history, so it needs history`)
  }
  if (options.history === false && options.offline) {
    throw new TypeError(`channel pattern '${pattern}': offline queues are kept in the channel's history, so they need history`)
  }
}
