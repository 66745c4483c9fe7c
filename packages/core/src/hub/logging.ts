import { CloseCode } from '@tidings/protocol'
import type { EventEmitter } from 'eventemitter3'
import type { Clock } from '../ports/clock.js'
import { LEVEL_VALUES, type Log, type LogFields, type LogLevel, type Logger } from '../ports/logger.js'
import type { HubEvents } from './events.js'

// Logging: the app's pino-compatible `Logger` turned into the hub's `Log` (message first, secrets
// redacted), and the hub's typed events written as structured lines (only those of the levels
// the logger writes are listened to).

const REDACTED = '[redacted]'
/** Nested objects and arrays deeper than this are cut (a log line is not a dump). */
const MAX_DEPTH = 4
/** Keys and items kept per object or array. */
const MAX_ENTRIES = 50
/** Longest string value written. */
const MAX_STRING = 2048

/**
 * A key that names a secret: token(s), secret, password, passphrase, api key, authorization,
 * cookie, jwt, signature, credential(s), session id, or any `key` (`key`, `apiKey`, `api_key`,
 * `privateKey`, `x-api-key`). Compared lower-cased with `-` and `_` removed.
 */
const SECRET_PARTS = ['token', 'secret', 'password', 'passwd', 'passphrase', 'apikey', 'authorization', 'cookie', 'jwt', 'signature', 'credential', 'sessionid', 'privatekey']

export function isSecretKey(key: string): boolean {
  const k = key.toLowerCase().replace(/[-_]/g, '')
  if (k.endsWith('key')) return true
  for (const part of SECRET_PARTS) if (k.includes(part)) return true
  return false
}

/** JWT-looking strings (three base64url parts, the first a JSON header), bearer credentials and passwords in URLs. Each pattern is linear (no nested quantifiers). */
const JWT = /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g
const BEARER = /\b(Bearer|Basic) +[A-Za-z0-9._~+/=-]{8,}/g
const URL_PASSWORD = /(\/\/[^\s/@:]*):[^\s/@]*@/g

/** A string with JWTs, bearer credentials and URL passwords taken out, cut at `MAX_STRING`. */
export function scrub(value: string): string {
  let s = value.length > MAX_STRING ? `${value.slice(0, MAX_STRING)}…` : value
  if (s.includes('eyJ')) s = s.replace(JWT, REDACTED)
  if (s.includes('Bearer') || s.includes('Basic')) s = s.replace(BEARER, `$1 ${REDACTED}`)
  if (s.includes('@')) s = s.replace(URL_PASSWORD, `$1:${REDACTED}@`)
  return s
}

/** A copy of `fields` safe to write: secret keys redacted at any depth, strings scrubbed, depth and width bounded, errors as `{ type, message, stack }`. */
export function redact(fields: LogFields): LogFields {
  return redactValue(fields, 0) as LogFields
}

function redactValue(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return scrub(value)
  if (value === null || typeof value !== 'object') return typeof value === 'function' || typeof value === 'symbol' ? undefined : value
  if (depth >= MAX_DEPTH) return '[truncated]'
  if (value instanceof Error) {
    return { type: value.name, message: scrub(value.message), stack: value.stack === undefined ? undefined : scrub(value.stack) }
  }
  if (Array.isArray(value)) {
    const out = value.slice(0, MAX_ENTRIES).map((v) => redactValue(v, depth + 1))
    if (value.length > MAX_ENTRIES) out.push(`[${value.length - MAX_ENTRIES} more]`)
    return out
  }
  const out: LogFields = {}
  let n = 0
  for (const key of Object.keys(value)) {
    if (n++ >= MAX_ENTRIES) {
      out['…'] = '[more keys]'
      break
    }
    out[key] = isSecretKey(key) ? REDACTED : redactValue((value as LogFields)[key], depth + 1)
  }
  return out
}

/** Whether the app's logger writes `level`: `isLevelEnabled`, else its `level` name, else yes. */
function levelEnabled(logger: Logger, level: LogLevel): boolean {
  try {
    if (typeof logger.isLevelEnabled === 'function') return logger.isLevelEnabled(level) === true
    if (typeof logger.level === 'string') return LEVEL_VALUES[level]! >= (LEVEL_VALUES[logger.level] ?? LEVEL_VALUES['info']!)
  } catch {
    // a logger that cannot answer writes everything it is given
  }
  return true
}

/**
 * The hub's `Log` over the app's logger: pino argument order, secrets redacted, `bindings`
 * (the hub's `nodeId`) bound through `child` when the logger has one, and never a throw into the hub.
 */
export function createLog(logger: Logger, bindings: LogFields = {}): Log {
  let target = logger
  if (Object.keys(bindings).length > 0 && typeof logger.child === 'function') {
    try {
      target = logger.child(redact(bindings)) ?? logger
    } catch {
      target = logger
    }
  }
  const enabled = {
    debug: levelEnabled(logger, 'debug'),
    info: levelEnabled(logger, 'info'),
    warn: levelEnabled(logger, 'warn'),
    error: levelEnabled(logger, 'error'),
  }
  const at =
    (level: LogLevel) =>
    (message: string, fields?: LogFields): void => {
      if (!enabled[level]) return
      try {
        target[level](redact(fields ?? {}), scrub(message))
      } catch {
        // a logger MUST NOT throw; one that does must not break the hub either
      }
    }
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), enabled: (level) => enabled[level] }
}

/** Close codes that end a connection because of a fault (logged at `warn` rather than `info`). */
const FAULT_CLOSES: ReadonlySet<number> = new Set([CloseCode.SlowConsumer, CloseCode.DeliveryFailed, CloseCode.AuthenticationFailed, CloseCode.PolicyViolation, 1011])

/**
 * Writes the hub's events as log lines. Only the events of enabled levels are listened to: the
 * hub builds an event's payload only when someone listens, so a level that is off costs nothing.
 * Never writes message data, presence data, tokens or keys. `connection:refused` is logged where
 * it happens (admission, `warn`) and internal errors by `hub.report` (`error`), not here.
 */
export function attachLogging(hub: Pick<EventEmitter<HubEvents>, 'on'>, log: Log, clock: Clock): void {
  const info = log.enabled('info')
  const debug = log.enabled('debug')
  const warn = log.enabled('warn')

  // connection lifecycle
  if (info) {
    hub.on('connection', (c) => log.info('connection opened', { connectionId: c.id, userId: c.userId, transport: c.transport, ip: c.ip }))
  }
  if (info || warn) {
    hub.on('disconnect', (c, close) => {
      const fault = FAULT_CLOSES.has(close.code)
      if (!fault && !info) return
      const fields = { connectionId: c.id, userId: c.userId, transport: c.transport, code: close.code, reason: close.reason, durationMs: Math.max(0, clock.now() - c.connectedAt) }
      if (fault) log.warn('connection closed', fields)
      else log.info('connection closed', fields)
    })
  }

  // authentication and authorization failures on open connections; other refused frames at debug
  if (warn || debug) {
    hub.on('client:error', (e) => {
      const fields = { connectionId: e.connectionId, userId: e.userId, code: e.code, frameType: e.frameType, channel: e.channel, reason: e.message }
      if (e.code === 'RT_003') log.warn('permission denied', fields)
      else if (e.code === 'RT_002') log.warn('authentication failed', fields)
      else log.debug('client frame refused', fields)
    })
  }

  // channels, rooms and presence
  if (debug) {
    hub.on('subscribe', (e) => log.debug('channel subscribed', { connectionId: e.connectionId, userId: e.userId, channel: e.channel }))
    hub.on('channel:occupied', (e) => log.debug('channel occupied', { channel: e.channel }))
    hub.on('channel:vacated', (e) => log.debug('channel vacated', { channel: e.channel }))
    hub.on('room:member-joined', (e) => log.debug('room member joined', { room: e.room.channel, userId: e.userId, connectionId: e.connectionId }))
    hub.on('room:member-left', (e) => log.debug('room member left', { room: e.room.channel, userId: e.userId, connectionId: e.connectionId }))
    hub.on('presence:join', (e) => log.debug('presence join', { channel: e.channel, userId: e.member.id }))
    hub.on('presence:leave', (e) => log.debug('presence leave', { channel: e.channel, userId: e.member.id }))
  }
  if (info || debug) {
    // An unsubscribe the client asked for (or its disconnect) is routine; one the server decided
    // (kicked, revoked, expired, removed from a room) is worth an `info` line.
    hub.on('unsubscribe', (e) => {
      const routine = e.reason === 'unsubscribed' || e.reason === 'disconnected' || e.reason === 'failed'
      const fields = { connectionId: e.connectionId, userId: e.userId, channel: e.channel, reason: e.reason }
      if (!routine) log.info('channel unsubscribed', fields)
      else log.debug('channel unsubscribed', fields)
    })
  }
  if (info) {
    hub.on('room:created', (r) => log.info('room created', { room: r.channel }))
    hub.on('room:deleted', (r) => log.info('room deleted', { room: r.channel }))
  }

  // delivery, slow consumers and content
  if (warn) {
    hub.on('delivery:failed', (e) => log.warn('delivery failed', { connectionId: e.connectionId, userId: e.userId, channel: e.channel, fromOffset: e.fromOffset, toOffset: e.toOffset, attempts: e.attempts, reason: e.reason }))
    hub.on('connection:slow', (e) => log.warn('slow consumer', { connectionId: e.connectionId, userId: e.userId, queuedBytes: e.queuedBytes, action: e.action }))
    hub.on('content:flagged', (e) => log.warn('content flagged', { channel: e.channel, event: e.event, userId: e.userId, connectionId: e.connectionId, reason: e.reason, messageId: e.messageId }))
  }
  if (info) {
    hub.on('content:refused', (e) => log.info('content refused', { channel: e.channel, event: e.event, userId: e.userId, connectionId: e.connectionId, code: e.code, reason: e.reason }))
  }
}
