import type { AuthorizeContext, ChannelAction, ChannelGrant, ChannelRule } from '../ports/auth.js'
import type { ChannelOptions } from '../hub/channels.js'
import type { MaybePromise } from '../util.js'
import { type CompiledExpression, type RoomData, type RuleScope, RuleSyntaxError, compileExpression } from './expression.js'

/** A channel rule as the hub runs it: decided once at registration what kind it is. */
export type CompiledRule =
  | { readonly kind: 'constant'; readonly value: boolean }
  | { readonly kind: 'authenticated' }
  | { readonly kind: 'expression'; readonly source: string; readonly run: CompiledExpression }
  | { readonly kind: 'function'; readonly run: (ctx: AuthorizeContext) => MaybePromise<boolean | ChannelGrant> }

/**
 * The rules of a channel pattern, one per action. `presence` and `history` are undefined when
 * not given: they follow the subscribe decision.
 */
export interface CompiledRules {
  readonly subscribe: CompiledRule
  readonly publish: CompiledRule
  readonly presence: CompiledRule | undefined
  readonly history: CompiledRule | undefined
}

const ACTIONS = ['subscribe', 'publish', 'presence', 'history'] as const satisfies readonly ChannelAction[]

/** Compiled rules by the options object they were compiled from (live channels keep theirs). */
const compiled = new WeakMap<ChannelOptions, CompiledRules>()

const AUTHENTICATED: CompiledRule = { kind: 'authenticated' }

/**
 * Compile a rule. Throws a TypeError naming the pattern, the action and (for a syntax error)
 * the character position.
 */
export function compileRule(pattern: string, action: ChannelAction, rule: unknown): CompiledRule {
  if (rule === true || rule === false) return { kind: 'constant', value: rule }
  if (rule === 'authenticated') return AUTHENTICATED
  if (typeof rule === 'function') return { kind: 'function', run: rule as Extract<ChannelRule, (...a: never[]) => unknown> }
  if (typeof rule === 'string') {
    try {
      return { kind: 'expression', source: rule, run: compileExpression(rule) }
    } catch (err) {
      const e = err as RuleSyntaxError
      const where = e.index !== undefined ? ` at character ${e.index}` : ''
      const shown = rule.length > 60 ? `${rule.slice(0, 57)}...` : rule
      const out = new RuleSyntaxError(`channel pattern '${pattern}': the ${action} rule ${JSON.stringify(shown)} is invalid${where}: ${e.message}`, e.index)
      throw out
    }
  }
  throw new TypeError(`channel pattern '${pattern}': the ${action} rule is a ${rule === null ? 'null' : typeof rule}; a rule is true, false, 'authenticated', an expression string or a function`)
}

/**
 * Compile every rule of a pattern's options (at registration). Top-level `subscribe`/`publish`
 * win over `rules.subscribe`/`rules.publish`; unset subscribe and publish are `'authenticated'`.
 */
export function compileChannelRules(pattern: string, options: ChannelOptions): CompiledRules {
  const rules = options.rules
  if (rules !== undefined && (rules === null || typeof rules !== 'object')) throw new TypeError(`channel pattern '${pattern}': rules must be an object`)
  for (const key of Object.keys(rules ?? {})) {
    if (!(ACTIONS as readonly string[]).includes(key)) throw new TypeError(`channel pattern '${pattern}': unknown rule '${key}' (rules are subscribe, publish, presence, history)`)
  }
  const pick = (action: ChannelAction): unknown => {
    if ((action === 'subscribe' || action === 'publish') && options[action] !== undefined) return options[action]
    return rules?.[action]
  }
  const sub = pick('subscribe')
  const pub = pick('publish')
  const pres = pick('presence')
  const hist = pick('history')
  const out: CompiledRules = {
    subscribe: sub === undefined ? AUTHENTICATED : compileRule(pattern, 'subscribe', sub),
    publish: pub === undefined ? AUTHENTICATED : compileRule(pattern, 'publish', pub),
    presence: pres === undefined ? undefined : compileRule(pattern, 'presence', pres),
    history: hist === undefined ? undefined : compileRule(pattern, 'history', hist),
  }
  compiled.set(options, out)
  return out
}

/** The compiled rules of a pattern's options (compiled now if they never were registered). */
export function rulesOf(options: ChannelOptions): CompiledRules {
  return compiled.get(options) ?? compileChannelRules('(unregistered)', options)
}

/** What rules see of a room. */
export interface RoomLike {
  readonly members: ReadonlyMap<string, string>
  readonly metadata: Readonly<Record<string, unknown>>
}

const roomData = new WeakMap<object, { revision: number; data: RoomData }>()

/** The room as `data` (built once per room revision when the room has a `revision`). */
export function roomDataOf(room: (RoomLike & { readonly revision?: number }) | undefined): RoomData | null {
  if (!room) return null
  const revision = room.revision
  const cached = revision === undefined ? undefined : roomData.get(room)
  if (cached && cached.revision === revision) return cached.data
  const roles: Record<string, string> = {}
  for (const [user, role] of room.members) Object.defineProperty(roles, user, { value: role, enumerable: true, writable: false, configurable: false })
  const data: RoomData = Object.freeze({ members: Object.freeze([...room.members.keys()]), roles: Object.freeze(roles), metadata: room.metadata })
  if (revision !== undefined) roomData.set(room, { revision, data })
  return data
}

/** The scope of an expression: `auth` is the claims with `uid` and `roles` set after them, so claims cannot forge them. */
export function scopeOf(ctx: AuthorizeContext, now: number, data: RoomData | null): RuleScope {
  const identity = ctx.identity
  const auth: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(identity.claims ?? {})) Object.defineProperty(auth, k, { value: v, enumerable: true, writable: true, configurable: true })
  Object.defineProperty(auth, 'uid', { value: identity.userId ?? null, enumerable: true })
  Object.defineProperty(auth, 'roles', { value: [...(identity.roles ?? [])], enumerable: true })
  return { auth, channel: ctx.channel, params: ctx.params, data, action: ctx.action, now }
}

/** An expression's answer: only exactly `true` allows. */
export function runExpression(rule: Extract<CompiledRule, { kind: 'expression' }>, scope: RuleScope): boolean {
  return rule.run(scope) === true
}

export { RuleSyntaxError }
