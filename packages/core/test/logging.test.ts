import { afterEach, describe, expect, it, vi } from 'vitest'
import { type LogFields, type Logger, createConsoleLogger, createHub, silentLogger } from '@tidings/core'
import { createTestHub } from '@tidings/core/testing'
import { createLog, isSecretKey, redact, scrub } from '../src/hub/logging.js'

// The Logger port (pino order), the hub's redacting Log, and the hub's events as log lines.

interface Captured {
  level: string
  message: string | undefined
  fields: LogFields
}

/** A pino-shaped logger that keeps what it is given. */
function capture(level = 'debug', withChild = true): { logger: Logger; lines: Captured[] } {
  const lines: Captured[] = []
  const order = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']
  const make = (bindings: LogFields): Logger => {
    const at = (l: string) => (fields: LogFields, message?: string) => void lines.push({ level: l, message, fields: { ...bindings, ...fields } })
    return {
      level,
      isLevelEnabled: (l: string) => order.indexOf(l) >= order.indexOf(level),
      debug: at('debug'),
      info: at('info'),
      warn: at('warn'),
      error: at('error'),
      ...(withChild ? { child: (b: LogFields) => make({ ...bindings, ...b }) } : {}),
    }
  }
  return { logger: make({}), lines }
}

afterEach(() => {
  vi.restoreAllMocks()
})

describe('redaction', () => {
  it('fields whose names look like secrets are redacted at any depth; others are kept', () => {
    const out = redact({
      token: 't',
      accessToken: 't',
      refresh_token: 't',
      apiKey: 'k',
      api_key: 'k',
      'x-api-key': 'k',
      key: 'k',
      privateKey: 'k',
      clientSecret: 's',
      password: 'p',
      Authorization: 'Bearer x',
      cookie: 'c',
      'set-cookie': ['c'],
      jwt: 'j',
      signature: 's',
      credentials: { user: 'u' },
      userId: 'ada',
      channel: 'chat:1',
      nested: { deeper: { headers: { authorization: 'Basic abc', accept: 'json' } }, list: [{ token: 't', n: 1 }] },
    })
    expect(out).toEqual({
      token: '[redacted]',
      accessToken: '[redacted]',
      refresh_token: '[redacted]',
      apiKey: '[redacted]',
      api_key: '[redacted]',
      'x-api-key': '[redacted]',
      key: '[redacted]',
      privateKey: '[redacted]',
      clientSecret: '[redacted]',
      password: '[redacted]',
      Authorization: '[redacted]',
      cookie: '[redacted]',
      'set-cookie': '[redacted]',
      jwt: '[redacted]',
      signature: '[redacted]',
      credentials: '[redacted]',
      userId: 'ada',
      channel: 'chat:1',
      nested: { deeper: { headers: { authorization: '[redacted]', accept: 'json' } }, list: [{ token: '[redacted]', n: 1 }] },
    })
    for (const k of ['connectionId', 'code', 'reason', 'room', 'transport', 'durationMs', 'monkeys']) expect(isSecretKey(k), k).toBe(false)
  })

  it('JWT-looking strings, bearer credentials and URL passwords are taken out of any string, the message too', () => {
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl'
    expect(scrub(`token ${jwt} refused`)).toBe('token [redacted] refused')
    expect(scrub('header Bearer abc.def-123 and basic Basic dXNlcjpwYXNz')).toBe('header Bearer [redacted] and basic Basic [redacted]')
    expect(scrub('the bearer of bad news: basic facts')).toBe('the bearer of bad news: basic facts')
    expect(scrub('redis://:hunter2@cache:6379 and postgres://app:pw@db/x')).toBe('redis://:[redacted]@cache:6379 and postgres://app:[redacted]@db/x')
    expect(scrub('mail ada@example.com stays')).toBe('mail ada@example.com stays')
    expect(redact({ reason: `bad ${jwt}`, deep: { list: [jwt] } })).toEqual({ reason: 'bad [redacted]', deep: { list: ['[redacted]'] } })
  })

  it('depth, width and string length are bounded, a cycle does not hang, errors become { type, message, stack }', () => {
    const cyclic: Record<string, unknown> = { a: 1 }
    cyclic['self'] = cyclic
    const out = redact({ cyclic, wide: Object.fromEntries(Array.from({ length: 80 }, (_, i) => [`k${i}`, i])), long: 'x'.repeat(5000), list: Array.from({ length: 60 }, (_, i) => i) }) as Record<string, Record<string, unknown>>
    expect(JSON.stringify(out).length).toBeLessThan(5000)
    expect(out['cyclic']!['self']).toMatchObject({ a: 1, self: { a: 1, self: '[truncated]' } })
    expect(Object.keys(out['wide']!)).toHaveLength(51)
    expect((out['long'] as unknown as string).length).toBe(2049)
    expect(out['list']).toHaveLength(51)
    const err = redact({ error: new Error('failed for postgres://u:pw@h/db') })['error'] as Record<string, unknown>
    expect(err).toMatchObject({ type: 'Error', message: 'failed for postgres://u:[redacted]@h/db' })
    expect(String(err['stack'])).not.toContain(':pw@')
  })
})

describe('createLog over a pino-compatible logger', () => {
  it('calls the logger in pino order (fields, message), through child({ nodeId }) when it has one', () => {
    const { logger, lines } = capture('debug')
    const log = createLog(logger, { nodeId: 'n1' })
    log.warn('something happened', { channel: 'c', token: 'secret-value' })
    expect(lines).toEqual([{ level: 'warn', message: 'something happened', fields: { nodeId: 'n1', channel: 'c', token: '[redacted]' } }])
  })

  it('without child, lines carry only their own fields (a plain logger gets exactly what the hub says)', () => {
    const { logger, lines } = capture('debug', false)
    createLog(logger, { nodeId: 'n1' }).info('hello', { channel: 'c' })
    expect(lines).toEqual([{ level: 'info', message: 'hello', fields: { channel: 'c' } }])
  })

  it('levels: isLevelEnabled first, else the level name, else everything', () => {
    const { logger, lines } = capture('warn')
    const log = createLog(logger)
    log.info('dropped')
    log.warn('kept')
    expect(lines.map((l) => l.message)).toEqual(['kept'])
    expect([log.enabled('debug'), log.enabled('info'), log.enabled('warn'), log.enabled('error')]).toEqual([false, false, true, true])
    const named = createLog({ level: 'error', debug() {}, info() {}, warn() {}, error() {} })
    expect([named.enabled('warn'), named.enabled('error')]).toEqual([false, true])
    const bare = createLog({ debug() {}, info() {}, warn() {}, error() {} })
    expect(bare.enabled('debug')).toBe(true)
    expect(createLog(silentLogger).enabled('error')).toBe(false)
  })

  it('a logger that throws never throws into the hub', () => {
    const log = createLog({ debug() {}, info() {}, warn() {}, error() { throw new Error('disk full') } })
    expect(() => log.error('x', { a: 1 })).not.toThrow()
    const hub = createHub({ logger: { debug() {}, info() {}, warn() {}, error() { throw new Error('disk full') } } })
    expect(() => hub.report(new Error('boom'), 'test')).not.toThrow()
  })

  it('createConsoleLogger takes pino order and keeps its level', () => {
    const info = vi.spyOn(console, 'info').mockImplementation(() => {})
    const debug = vi.spyOn(console, 'debug').mockImplementation(() => {})
    const logger = createConsoleLogger('info')
    logger.info({ channel: 'c' }, 'hello')
    logger.debug({}, 'hidden')
    expect(info).toHaveBeenCalledWith('[tidings] info hello', { channel: 'c' })
    expect(debug).not.toHaveBeenCalled()
    expect(logger.isLevelEnabled?.('debug')).toBe(false)
    expect(logger.isLevelEnabled?.('warn')).toBe(true)
  })
})

describe('hub events as log lines', () => {
  it('a warn-level logger attaches no listener to the subscribe, publish, presence, connection or room events; a debug one does, once each', async () => {
    const warnHub = createHub({ logger: capture('warn').logger })
    for (const e of ['subscribe', 'unsubscribe', 'publish', 'connection', 'presence:join', 'presence:leave', 'room:created', 'room:member-joined', 'channel:occupied', 'content:refused'] as const) {
      expect(warnHub.listenerCount(e), e).toBe(0)
    }
    for (const e of ['delivery:failed', 'client:error', 'connection:slow', 'content:flagged', 'disconnect'] as const) expect(warnHub.listenerCount(e), e).toBe(1)
    const silentHub = createHub({ logger: silentLogger })
    for (const e of ['disconnect', 'client:error', 'delivery:failed', 'subscribe'] as const) expect(silentHub.listenerCount(e), e).toBe(0)
    const debugHub = createHub({ logger: capture('debug').logger })
    for (const e of ['subscribe', 'unsubscribe', 'connection', 'disconnect', 'presence:join', 'room:created', 'client:error'] as const) expect(debugHub.listenerCount(e), e).toBe(1)
    // message data is never a log line, at any level
    expect(debugHub.listenerCount('publish')).toBe(0)
    expect(debugHub.listenerCount('presence:update')).toBe(0)
    await Promise.all([warnHub.close(), silentHub.close(), debugHub.close()])
  })

  it("a connection's close line carries its duration on the hub clock, its code and reason", async () => {
    const { logger, lines } = capture('info')
    await using t = createTestHub({ logger })
    const ada = await t.connect({ userId: 'ada' })
    await t.advance(5000)
    ada.close(1000, 'bye')
    await t.settle()
    expect(lines.filter((l) => l.message === 'connection closed').map((l) => l.fields)).toEqual([
      { nodeId: t.hub.nodeId, connectionId: expect.any(String), userId: 'ada', transport: 'memory', code: 1000, reason: 'bye', durationMs: 5000 },
    ])
  })

  it('slow consumers (connection:slow) are logged at warn, without the queue contents', async () => {
    const { logger, lines } = capture('warn')
    const hub = createHub({ logger })
    hub.emit('connection:slow', { connectionId: 'c1', userId: 'ada', queuedBytes: 9_000_000, action: 'drop' })
    expect(lines).toEqual([{ level: 'warn', message: 'slow consumer', fields: { nodeId: hub.nodeId, connectionId: 'c1', userId: 'ada', queuedBytes: 9_000_000, action: 'drop' } }])
    await hub.close()
  })

  it('internal errors reported by the hub are logged once at error, with the stage', async () => {
    const { logger, lines } = capture('error')
    const hub = createHub({ logger })
    hub.report(new Error('store down: redis://:pw@cache'), 'store.append')
    expect(lines).toEqual([{ level: 'error', message: 'store.append failed', fields: { nodeId: hub.nodeId, error: 'store down: redis://:[redacted]@cache' } }])
    await hub.close()
  })
})
