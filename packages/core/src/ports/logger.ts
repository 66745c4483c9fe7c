export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

/** Structured logging. Implementations MUST NOT throw. */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void
  info(message: string, fields?: Record<string, unknown>): void
  warn(message: string, fields?: Record<string, unknown>): void
  error(message: string, fields?: Record<string, unknown>): void
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }

/** Logs at `level` and above to the console (the default is `warn`). */
export function createConsoleLogger(level: LogLevel = 'warn'): Logger {
  const min = ORDER[level]
  const at = (l: LogLevel) => (message: string, fields?: Record<string, unknown>) => {
    if (ORDER[l] < min) return
    const line = `[tidings] ${l} ${message}`
    if (fields) console[l](line, fields)
    else console[l](line)
  }
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} }
