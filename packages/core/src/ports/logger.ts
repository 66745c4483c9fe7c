export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

/** The structured fields of one log line. */
export type LogFields = Record<string, unknown>

/**
 * Structured logging, in pino's argument order: `logger.info(fields, message)`. A pino instance
 * (or any logger of that shape: pino, or a child of it) can be passed to `createHub({ logger })`
 * as it is. Implementations MUST NOT throw.
 *
 * - `level` / `isLevelEnabled(level)` (optional): the hub reads them once, when it is created, and
 *   listens only to the events whose lines the logger would write (a `warn` logger costs nothing
 *   on the subscribe and publish paths). Without either, every level is taken as enabled.
 * - `child(bindings)` (optional): when present the hub logs through `child({ nodeId })`; without
 *   it, each line carries only its own fields.
 *
 * The hub never hands a logger tokens, keys, message data or presence data: fields whose names
 * look like secrets are replaced by `'[redacted]'` before they reach it (see docs/logging.md).
 */
export interface Logger {
  debug(fields: LogFields, message?: string): void
  info(fields: LogFields, message?: string): void
  warn(fields: LogFields, message?: string): void
  error(fields: LogFields, message?: string): void
  /** The lowest level written (pino: `trace`, `debug`, `info`, `warn`, `error`, `fatal`, `silent`). */
  readonly level?: string
  isLevelEnabled?(level: string): boolean
  child?(bindings: LogFields): Logger
}

/**
 * The hub's own logging API (message first), as concepts call it: `log.warn('message', fields)`.
 * Made from the app's `Logger` by `resolveHubOptions`: it calls the logger in pino order and
 * redacts secrets on the way (`hub/logging.ts`).
 */
export interface Log {
  debug(message: string, fields?: LogFields): void
  info(message: string, fields?: LogFields): void
  warn(message: string, fields?: LogFields): void
  error(message: string, fields?: LogFields): void
  /** Whether the logger writes lines of this level (decided once, when the hub is created). */
  enabled(level: LogLevel): boolean
}

/** pino's numeric levels. */
export const LEVEL_VALUES: Readonly<Record<string, number>> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity }

/** Logs at `level` and above to the console (the default is `warn`). */
export function createConsoleLogger(level: LogLevel = 'warn'): Logger {
  const min = LEVEL_VALUES[level]!
  const at = (l: LogLevel) => (fields: LogFields, message?: string) => {
    if (LEVEL_VALUES[l]! < min) return
    const line = `[tidings] ${l} ${message ?? ''}`
    if (fields && Object.keys(fields).length > 0) console[l](line, fields)
    else console[l](line)
  }
  return {
    level,
    isLevelEnabled: (l: string) => (LEVEL_VALUES[l] ?? Infinity) >= min,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
  }
}

export const silentLogger: Logger = { level: 'silent', isLevelEnabled: () => false, debug() {}, info() {}, warn() {}, error() {} }
