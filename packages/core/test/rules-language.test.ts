import { describe, expect, it } from 'vitest'
import { type RuleScope, MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_LENGTH, RuleSyntaxError, compileExpression } from '@tidings/core'

const scope = (over: Partial<RuleScope> = {}): RuleScope => ({
  auth: { uid: 'alice', roles: ['member'], plan: 'pro', tenant: 't1', age: 30 },
  channel: 'team:t1:general',
  params: { tenant: 't1', room: 'general' },
  data: { members: ['alice', 'bob'], roles: { alice: 'owner', bob: 'member' }, metadata: { locked: false, topic: 'x' } },
  action: 'subscribe',
  now: 1_000,
  ...over,
})

const run = (source: string, s: RuleScope = scope()) => compileExpression(source)(s)
const allows = (source: string, s?: RuleScope) => run(source, s) === true

describe('rules language: what it allows and denies', () => {
  it("the seed's membership rule allows members and denies others and anonymous users", () => {
    const rule = "auth.uid != null && data.members.includes(auth.uid)"
    expect(allows(rule)).toBe(true)
    expect(allows(rule, scope({ auth: { uid: 'mallory', roles: [] } }))).toBe(false)
    expect(allows(rule, scope({ auth: { uid: null, roles: [] } }))).toBe(false)
    // no room: reading through null is undefined, not a throw
    expect(allows(rule, scope({ data: null }))).toBe(false)
  })

  it('compares params, claims, roles, metadata and the clock', () => {
    expect(allows("params.tenant == auth.tenant")).toBe(true)
    expect(allows("params.tenant == auth.tenant", scope({ auth: { uid: 'a', roles: [], tenant: 't2' } }))).toBe(false)
    expect(allows("auth.roles.includes('member') && data.roles[auth.uid] == 'owner'")).toBe(true)
    expect(allows("data.roles[auth.uid] == 'owner'", scope({ auth: { uid: 'bob', roles: [] } }))).toBe(false)
    expect(allows("!data.metadata.locked")).toBe(true)
    expect(allows("now < 2000 && now >= 1000")).toBe(true)
    expect(allows("now > 1000")).toBe(false)
    expect(allows("channel.startsWith('team:' + params.tenant + ':')")).toBe(true)
    expect(allows("channel.endsWith(':general') && channel.indexOf('t1') == 5")).toBe(true)
    expect(allows("auth.plan == 'pro' ? auth.age >= 18 : false")).toBe(true)
    expect(allows("['pro', 'team'].includes(auth.plan)")).toBe(true)
    expect(allows("data.members.length == 2 && auth.uid.length == 5")).toBe(true)
    expect(allows("(auth.age + 5) * 2 - 10 == 60 && auth.age % 7 == 2 && -auth.age == -30 && auth.age / 3 == 10")).toBe(true)
    expect(allows("action == 'subscribe'")).toBe(true)
    expect(allows("action == 'subscribe'", scope({ action: 'publish' }))).toBe(false)
  })

  it('only exactly true allows: truthy values, numbers and strings deny', () => {
    expect(run('auth.uid')).toBe('alice')
    expect(allows('auth.uid')).toBe(false)
    expect(allows('1')).toBe(false)
    expect(allows("'true'")).toBe(false)
    expect(allows('data.members')).toBe(false)
    expect(allows('true')).toBe(true)
    expect(allows('false')).toBe(false)
  })

  it('== is strict except that null and undefined are equal; mixed types never coerce', () => {
    expect(allows('auth.missing == null')).toBe(true)
    expect(allows("auth.age == '30'")).toBe(false)
    expect(allows('[] == false')).toBe(false)
    expect(allows("'2' > 10")).toBe(false)
    expect(allows("auth.age + '1' == '301'")).toBe(false)
    expect(run("auth.age + '1'")).toBeUndefined()
    expect(run('-auth.uid')).toBeUndefined()
  })

  it('reading through null or undefined yields undefined, never a throw', () => {
    expect(run('auth.a.b.c.d')).toBeUndefined()
    expect(run('data.metadata.nothing.here[0]')).toBeUndefined()
    expect(run('auth.nothing.includes(1)')).toBeUndefined()
    expect(allows('auth.nothing.length > 0')).toBe(false)
    expect(run('data.members[5]')).toBeUndefined()
    expect(run('data.members[-1]')).toBeUndefined()
    expect(run('data.members[0.5]')).toBeUndefined()
    expect(run("data.members['1']")).toBe('bob')
  })
})

describe('rules language: injection attempts', () => {
  const compileErrors = [
    "auth.constructor.constructor('return process')()",
    'auth.constructor',
    'auth.__proto__',
    'data.members.__proto__.polluted',
    'params.prototype',
    "''.constructor",
    'this',
    'this.process',
    'process.exit(1)',
    'globalThis',
    'require',
    'eval',
    'Function',
    'undefined',
    "auth.uid.toString()",
    "auth.roles.push('admin')",
    "auth.roles.map(x)",
    "data.members.concat(auth.roles)",
    "auth.uid.replace('a', 'b')",
    "auth['includes']('x')",
    "(auth.uid)('x')",
    "includes('x')",
    "auth.uid.includes('a', 'b')",
    "data.members.includes()",
    'auth.uid = 1',
    'auth.uid == 1; true',
    'true, true',
    'auth.age | 0',
    'auth.age & 1',
    'auth.age << 1',
    'auth.age ** 2',
    '~auth.age',
    '[1,,2]',
    '`x`',
    'new Date()',
    'x => x',
  ]
  for (const source of compileErrors) {
    it(`refuses at compile time: ${source}`, () => {
      expect(() => compileExpression(source)).toThrow(RuleSyntaxError)
    })
  }

  it('computed keys cannot reach prototypes or constructors (denial, not a throw)', () => {
    for (const key of ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__']) {
      expect(run(`auth['${key}']`), key).toBeUndefined()
      expect(run(`data.members['${key}']`), key).toBeUndefined()
      expect(run(`channel['${key}']`), key).toBeUndefined()
    }
    // a method read as a property is no value
    expect(run('auth.uid.includes')).toBeUndefined()
    expect(run('data.members.indexOf')).toBeUndefined()
    // a key built at run time
    expect(run("auth['__pro' + 'to__']")).toBeUndefined()
    expect(run("auth['const' + 'ructor']")).toBeUndefined()
    expect(run("data.metadata[auth.evil]", scope({ auth: { uid: 'a', roles: [], evil: '__proto__' } }))).toBeUndefined()
    expect(run("data.roles[auth.uid]", scope({ auth: { uid: 'constructor', roles: [] } }))).toBeUndefined()
  })

  it('a __proto__ claim (as JSON.parse makes it) pollutes nothing and reads as nothing', () => {
    const claims = JSON.parse('{"uid":"root","roles":["admin"],"__proto__":{"polluted":true}}') as Record<string, unknown>
    expect(run('auth.polluted == true', scope({ auth: claims }))).toBe(false)
    expect(run("auth['__proto__']", scope({ auth: claims }))).toBeUndefined()
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined()
  })

  it('values that are functions or class instances are opaque', () => {
    const s = scope({ auth: { uid: 'a', roles: [], fn: () => true, when: new Date(0), map: new Map([['k', 1]]) } })
    expect(run('auth.fn', s)).toBeUndefined()
    expect(run('auth.when.getTime', s)).toBeUndefined()
    expect(run("auth.map.size", s)).toBeUndefined()
  })

  it('huge and deep inputs are refused at compile time, not by a stack overflow', () => {
    expect(() => compileExpression('true || '.repeat(600) + 'true')).toThrow(/longer than 4096/)
    expect(MAX_EXPRESSION_LENGTH).toBe(4096)
    const deepParens = '('.repeat(MAX_EXPRESSION_DEPTH + 1) + 'true' + ')'.repeat(MAX_EXPRESSION_DEPTH + 1)
    expect(() => compileExpression(deepParens)).toThrow(/nested deeper/)
    const deepArrays = '['.repeat(1000) + ']'.repeat(1000)
    expect(() => compileExpression(deepArrays)).toThrow(RuleSyntaxError)
    const deepNot = '!'.repeat(2000) + 'true'
    expect(() => compileExpression(deepNot)).toThrow(RuleSyntaxError)
    const longChain = Array.from({ length: 100 }, () => 'true').join(' && ')
    expect(() => compileExpression(longChain)).toThrow(/deeper than/)
    const ternaries = Array.from({ length: 40 }, () => 'now > 0 ?').join(' ') + ' true' + ' : false'.repeat(40)
    expect(() => compileExpression(ternaries)).toThrow(RuleSyntaxError)
    // within the limits: fine
    expect(compileExpression(Array.from({ length: 20 }, () => 'true').join(' && '))(scope())).toBe(true)
  })

  it('a syntax error carries the character position', () => {
    try {
      compileExpression('auth.uid != && true')
      expect.unreachable()
    } catch (err) {
      expect(err).toBeInstanceOf(RuleSyntaxError)
      expect((err as RuleSyntaxError).index).toBe(12)
    }
    expect(() => compileExpression('')).toThrow(RuleSyntaxError)
    expect(() => compileExpression("auth.uid == 'unterminated")).toThrow(RuleSyntaxError)
  })
})
