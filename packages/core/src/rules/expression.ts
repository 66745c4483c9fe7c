import jsep from 'jsep'

/*
 * The rules language: a small, safe subset of JavaScript expressions, parsed with jsep and
 * compiled once into closures (no eval, no new Function). Nothing an expression can name reaches
 * a prototype, a function or a host object: reads are of own properties of plain data only, and
 * the only calls are a few read-only methods of strings and arrays.
 */

/** What an expression can read: these names and nothing else. */
export interface RuleScope {
  /** The identity: its claims, then `uid` (the user id or null) and `roles` (never forged by claims). */
  readonly auth: Readonly<Record<string, unknown>>
  /** The channel name. */
  readonly channel: string
  /** Named parts of the matched pattern. */
  readonly params: Readonly<Record<string, string>>
  /** The room record (`members`, `roles`, `metadata`) or null. */
  readonly data: RoomData | null
  /** `'subscribe'`, `'publish'`, `'presence'` or `'history'`. */
  readonly action: string
  /** The hub clock, ms since the epoch. */
  readonly now: number
}

/** The room record as rules see it. */
export interface RoomData {
  readonly members: readonly string[]
  readonly roles: Readonly<Record<string, string>>
  readonly metadata: Readonly<Record<string, unknown>>
}

export type CompiledExpression = (scope: RuleScope) => unknown

/** Longest expression source, in characters. */
export const MAX_EXPRESSION_LENGTH = 4096
/** Deepest expression tree (and bracket nesting). */
export const MAX_EXPRESSION_DEPTH = 32

const ROOTS = new Set(['auth', 'channel', 'params', 'data', 'action', 'now'])
/** Never read, whatever the object: the ways to a prototype or a constructor. */
const FORBIDDEN = new Set(['__proto__', 'constructor', 'prototype', '__defineGetter__', '__defineSetter__', '__lookupGetter__', '__lookupSetter__'])
const METHODS = new Set(['includes', 'startsWith', 'endsWith', 'indexOf'])
const BINARY = new Set(['||', '&&', '??', '==', '!=', '===', '!==', '<', '<=', '>', '>=', '+', '-', '*', '/', '%'])
const UNARY = new Set(['!', '-', '+'])

/** A rule expression that cannot be compiled; `index` is the character position when known. */
export class RuleSyntaxError extends TypeError {
  constructor(
    message: string,
    readonly index: number | undefined,
  ) {
    super(message)
    this.name = 'RuleSyntaxError'
  }
}

type Node = jsep.Expression

/**
 * Compile an expression once. Throws a {@link RuleSyntaxError} for a syntax error (with the
 * character position), for anything outside the language (unknown names, assignments, `this`,
 * calls other than the whitelisted methods, forbidden property names) and for expressions
 * longer than {@link MAX_EXPRESSION_LENGTH} or deeper than {@link MAX_EXPRESSION_DEPTH}.
 */
export function compileExpression(source: string): CompiledExpression {
  if (typeof source !== 'string') throw new RuleSyntaxError('a rule expression must be a string', undefined)
  if (source.length > MAX_EXPRESSION_LENGTH) throw new RuleSyntaxError(`expression longer than ${MAX_EXPRESSION_LENGTH} characters`, MAX_EXPRESSION_LENGTH)
  if (source.trim() === '') throw new RuleSyntaxError('empty expression', 0)
  checkNesting(source)
  let ast: Node
  try {
    ast = jsep(source)
  } catch (err) {
    if (err instanceof RangeError) throw new RuleSyntaxError('expression nested too deeply', undefined)
    const e = err as { description?: string; message?: string; index?: number }
    throw new RuleSyntaxError(e.description ?? e.message ?? 'syntax error', typeof e.index === 'number' ? e.index : undefined)
  }
  return compileNode(ast, source, 1)
}

/** Bracket nesting past the depth limit is refused before jsep (a recursive parser) sees it. */
function checkNesting(source: string): void {
  let depth = 0
  let quote: string | undefined
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!
    if (quote !== undefined) {
      if (c === '\\') i++
      else if (c === quote) quote = undefined
      continue
    }
    if (c === '"' || c === "'") quote = c
    else if (c === '(' || c === '[') {
      if (++depth > MAX_EXPRESSION_DEPTH) throw new RuleSyntaxError(`expression nested deeper than ${MAX_EXPRESSION_DEPTH}`, i)
    } else if (c === ')' || c === ']') depth--
  }
}

function fail(message: string, source: string, hint?: string): never {
  const at = hint === undefined ? -1 : source.indexOf(hint)
  throw new RuleSyntaxError(message, at >= 0 ? at : undefined)
}

/** Own, plain data only: arrays by index and `length`, strings by `length` and index, plain objects by own key. */
export function readMember(obj: unknown, key: unknown): unknown {
  if (obj === null || obj === undefined) return undefined
  if (typeof key === 'number') {
    if (!Number.isInteger(key) || key < 0) return undefined
    if (Array.isArray(obj) || typeof obj === 'string') return key < obj.length ? plain(obj[key]) : undefined
    key = String(key)
  }
  if (typeof key !== 'string' || FORBIDDEN.has(key)) return undefined
  if (typeof obj === 'string' || Array.isArray(obj)) {
    if (key === 'length') return obj.length
    if (/^(0|[1-9]\d*)$/.test(key)) return readMember(obj, Number(key))
    return undefined
  }
  if (typeof obj !== 'object') return undefined
  const proto = Object.getPrototypeOf(obj)
  if (proto !== Object.prototype && proto !== null) return undefined
  return Object.prototype.hasOwnProperty.call(obj, key) ? plain((obj as Record<string, unknown>)[key]) : undefined
}

/** Functions and symbols are never values of the language. */
function plain(v: unknown): unknown {
  return typeof v === 'function' || typeof v === 'symbol' ? undefined : v
}

function callMethod(method: string, target: unknown, args: unknown[]): unknown {
  if (typeof target === 'string') {
    const arg = args[0]
    if (typeof arg !== 'string') return method === 'indexOf' ? -1 : false
    switch (method) {
      case 'includes':
        return target.includes(arg)
      case 'startsWith':
        return target.startsWith(arg)
      case 'endsWith':
        return target.endsWith(arg)
      case 'indexOf':
        return target.indexOf(arg)
    }
  }
  if (Array.isArray(target)) {
    if (method === 'includes') return target.includes(args[0])
    if (method === 'indexOf') return target.indexOf(args[0])
    return false
  }
  return undefined
}

function looseEquals(a: unknown, b: unknown): boolean {
  return a === b || (a == null && b == null)
}

function compare(op: string, a: unknown, b: unknown): boolean {
  if (!((typeof a === 'number' && typeof b === 'number') || (typeof a === 'string' && typeof b === 'string'))) return false
  switch (op) {
    case '<':
      return a < b
    case '<=':
      return a <= b
    case '>':
      return a > b
    default:
      return a >= b
  }
}

function arithmetic(op: string, a: unknown, b: unknown): unknown {
  if (op === '+' && typeof a === 'string' && typeof b === 'string') return a + b
  if (typeof a !== 'number' || typeof b !== 'number') return undefined
  switch (op) {
    case '+':
      return a + b
    case '-':
      return a - b
    case '*':
      return a * b
    case '/':
      return a / b
    default:
      return a % b
  }
}

function compileNode(node: Node, source: string, depth: number): CompiledExpression {
  if (depth > MAX_EXPRESSION_DEPTH) throw new RuleSyntaxError(`expression deeper than ${MAX_EXPRESSION_DEPTH}`, undefined)
  const next = depth + 1
  switch (node.type) {
    case 'Literal': {
      const value = (node as jsep.Literal).value
      if (value !== null && typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') fail('only string, number, boolean and null literals', source, String((node as jsep.Literal).raw))
      return () => value
    }
    case 'Identifier': {
      const name = (node as jsep.Identifier).name
      if (!ROOTS.has(name)) fail(`unknown name '${name}' (the scope is auth, channel, params, data, action, now)`, source, name)
      switch (name) {
        case 'auth':
          return (s) => s.auth
        case 'channel':
          return (s) => s.channel
        case 'params':
          return (s) => s.params
        case 'data':
          return (s) => s.data
        case 'action':
          return (s) => s.action
        default:
          return (s) => s.now
      }
    }
    case 'ArrayExpression': {
      const elements = (node as jsep.ArrayExpression).elements.map((e) => {
        if (e === null) fail('holes in array literals are not allowed', source, ',,')
        return compileNode(e, source, next)
      })
      return (s) => elements.map((e) => e(s))
    }
    case 'MemberExpression': {
      const m = node as jsep.MemberExpression
      const object = compileNode(m.object, source, next)
      if (!m.computed) {
        const key = (m.property as jsep.Identifier).name
        if (m.property.type !== 'Identifier' || typeof key !== 'string') fail('invalid property access', source)
        if (FORBIDDEN.has(key)) fail(`'${key}' cannot be read`, source, key)
        return (s) => readMember(object(s), key)
      }
      const property = compileNode(m.property, source, next)
      return (s) => readMember(object(s), property(s))
    }
    case 'CallExpression': {
      const c = node as jsep.CallExpression
      const callee = c.callee as jsep.MemberExpression
      if (callee.type !== 'MemberExpression' || callee.computed || callee.property.type !== 'Identifier') {
        fail('only the methods includes, startsWith, endsWith and indexOf can be called', source, '(')
      }
      const method = (callee.property as jsep.Identifier).name
      if (!METHODS.has(method)) fail(`'${method}' cannot be called (only includes, startsWith, endsWith, indexOf)`, source, method)
      if (c.arguments.length !== 1) fail(`${method} takes one argument`, source, method)
      const target = compileNode(callee.object, source, next)
      const arg = compileNode(c.arguments[0]!, source, next)
      return (s) => callMethod(method, target(s), [arg(s)])
    }
    case 'UnaryExpression': {
      const u = node as jsep.UnaryExpression
      if (!UNARY.has(u.operator)) fail(`operator '${u.operator}' is not allowed`, source, u.operator)
      const arg = compileNode(u.argument, source, next)
      if (u.operator === '!') return (s) => !arg(s)
      if (u.operator === '-') return (s) => {
        const v = arg(s)
        return typeof v === 'number' ? -v : undefined
      }
      return (s) => {
        const v = arg(s)
        return typeof v === 'number' ? v : undefined
      }
    }
    case 'BinaryExpression': {
      const b = node as jsep.BinaryExpression
      const op = b.operator
      if (!BINARY.has(op)) fail(`operator '${op}' is not allowed`, source, op)
      const left = compileNode(b.left, source, next)
      const right = compileNode(b.right, source, next)
      switch (op) {
        case '&&':
          return (s) => left(s) && right(s)
        case '||':
          return (s) => left(s) || right(s)
        case '??':
          return (s) => left(s) ?? right(s)
        case '==':
          return (s) => looseEquals(left(s), right(s))
        case '!=':
          return (s) => !looseEquals(left(s), right(s))
        case '===':
          return (s) => left(s) === right(s)
        case '!==':
          return (s) => left(s) !== right(s)
        case '<':
        case '<=':
        case '>':
        case '>=':
          return (s) => compare(op, left(s), right(s))
        default:
          return (s) => arithmetic(op, left(s), right(s))
      }
    }
    case 'ConditionalExpression': {
      const t = node as jsep.ConditionalExpression
      const test = compileNode(t.test, source, next)
      const yes = compileNode(t.consequent, source, next)
      const no = compileNode(t.alternate, source, next)
      return (s) => (test(s) ? yes(s) : no(s))
    }
    case 'ThisExpression':
      return fail("'this' is not allowed", source, 'this')
    case 'Compound':
    case 'SequenceExpression':
      return fail('one expression only (no commas or semicolons between expressions)', source, ',')
    default:
      return fail(`${node.type} is not allowed`, source)
  }
}
