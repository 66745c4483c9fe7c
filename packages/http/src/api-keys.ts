import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { RealtimeError } from '@tidings/core'

/**
 * What a key may do on the admin API: `publish` (broadcasts, message edits and deletes), `read`
 * (presence, history, search, users' channel lists, connections, metrics), `admin` (kicks and
 * disconnections, and everything `publish` and `read` allow).
 */
export const API_KEY_SCOPES = ['publish', 'read', 'admin'] as const
export type ApiKeyScope = (typeof API_KEY_SCOPES)[number]

/** Checks an admin request's API key (header `x-api-key` or `Authorization: Bearer`). */
export type ApiKeyCheck = (key: string) => boolean

/** One named key. */
export interface ApiKeyEntry {
  /**
   * The key in plaintext (at least 16 characters), or `sha256:<64 hex digits>`: the SHA-256 of
   * the key (`hashApiKey(key)`), so the app's configuration need not hold the key itself. Several
   * keys under one name while it is rotated (the new one added, callers moved, the old one removed).
   */
  readonly key: string | readonly string[]
  /** What the key may do (at least one). */
  readonly scopes: readonly ApiKeyScope[]
}

/** Named keys: `{ billing: { key: process.env.BILLING_KEY_SHA256, scopes: ['publish'] } }`. The name, never the key, is what logs and reports show. */
export type ApiKeyTable = Readonly<Record<string, ApiKeyEntry>>

/** The key a request presented: its name and scopes. */
export interface ApiKeyMatch {
  readonly name: string
  readonly scopes: ReadonlySet<ApiKeyScope>
}

/** One decision on an admin request, for logs and audits: the key's name, never the key. */
export interface ApiKeyAccess {
  /** `allowed`; `refused` (no key or an unknown one: 401 RT_002); `forbidden` (the key lacks the route's scope: 403 RT_003). */
  readonly outcome: 'allowed' | 'refused' | 'forbidden'
  /** The name of the key presented (absent when it was refused). */
  readonly name?: string
  /** The scope the route needs. */
  readonly scope: ApiKeyScope
  readonly method: string
  /** The path below the realtime prefix, e.g. `/channels/orders/broadcast`. */
  readonly path: string
}

export interface ApiKeysOptions {
  /** Told of every decision (never the key). A listener that throws is ignored. */
  readonly onAccess?: (access: ApiKeyAccess) => void
}

/** Checked named keys, as `createRealtime({ apiKeys })` takes them. */
export interface ApiKeys {
  readonly kind: 'tidings.api-keys'
  /** The names of the keys. */
  readonly names: readonly string[]
  /**
   * The key a presented string is, or undefined. Constant time: the SHA-256 of the presented
   * string is compared with every configured digest by `crypto.timingSafeEqual`, all of them,
   * so the time tells neither whether nor which key matched.
   */
  match(presented: string): ApiKeyMatch | undefined
  /** Whether a key may act in a scope (`admin` covers every scope). */
  allows(key: ApiKeyMatch, scope: ApiKeyScope): boolean
  /** Tells the `onAccess` listener. */
  report(access: ApiKeyAccess): void
}

const HASHED = /^sha256:([0-9a-f]{64})$/i
const MIN_PLAINTEXT = 16

/** `sha256:<hex>` of a key: what to put in the configuration instead of the key. */
export function hashApiKey(key: string): string {
  return `sha256:${digest(key).toString('hex')}`
}

function digest(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest()
}

/**
 * Named API keys with scopes for the REST admin API. Checked here; a mistake throws a TypeError
 * that names the key (never shows it): an empty name or key, a plaintext key under 16 characters,
 * a malformed `sha256:` digest, no or unknown scopes, one key under two names.
 */
export function createApiKeys(table: ApiKeyTable, options: ApiKeysOptions = {}): ApiKeys {
  const entries: Array<{ name: string; digest: Buffer; scopes: ReadonlySet<ApiKeyScope> }> = []
  for (const [name, entry] of Object.entries(table)) {
    if (name.length === 0) throw new TypeError('createApiKeys: a key needs a non-empty name')
    const scopes = entry?.scopes
    if (!Array.isArray(scopes) || scopes.length === 0) throw new TypeError(`createApiKeys: key '${name}' needs at least one scope (${API_KEY_SCOPES.join(', ')})`)
    for (const s of scopes) {
      if (!(API_KEY_SCOPES as readonly string[]).includes(s)) throw new TypeError(`createApiKeys: key '${name}' has an unknown scope ${JSON.stringify(s)}`)
    }
    const keys = typeof entry.key === 'string' ? [entry.key] : entry.key
    if (!Array.isArray(keys) || keys.length === 0) throw new TypeError(`createApiKeys: key '${name}' has no key`)
    for (const key of keys) {
      if (typeof key !== 'string' || key.length === 0) throw new TypeError(`createApiKeys: key '${name}' is empty`)
      let d: Buffer
      const hashed = HASHED.exec(key)
      if (hashed) d = Buffer.from(hashed[1]!, 'hex')
      else if (/^sha256:/i.test(key)) throw new TypeError(`createApiKeys: key '${name}' starts with sha256: but is not sha256:<64 hex digits>`)
      else if (key.length < MIN_PLAINTEXT) throw new TypeError(`createApiKeys: key '${name}' is shorter than ${MIN_PLAINTEXT} characters; use a random key (e.g. 32 random bytes, base64url)`)
      else d = digest(key)
      const twin = entries.find((e) => e.digest.equals(d))
      if (twin) throw new TypeError(`createApiKeys: keys '${twin.name}' and '${name}' are the same key`)
      entries.push({ name, digest: d, scopes: new Set(scopes) })
    }
  }
  const onAccess = options.onAccess
  return {
    kind: 'tidings.api-keys',
    names: [...new Set(entries.map((e) => e.name))],
    match(presented) {
      const d = digest(presented)
      let found: (typeof entries)[number] | undefined
      // Every digest is compared, whatever the outcome: no early exit.
      for (const e of entries) if (timingSafeEqual(e.digest, d) && found === undefined) found = e
      return found ? { name: found.name, scopes: found.scopes } : undefined
    },
    allows: (key, scope) => key.scopes.has('admin') || key.scopes.has(scope),
    report(access) {
      if (!onAccess) return
      try {
        onAccess(access)
      } catch {
        // A listener must not change the answer.
      }
    },
  }
}

const isApiKeys = (v: unknown): v is ApiKeys => v !== null && typeof v === 'object' && (v as { kind?: unknown }).kind === 'tidings.api-keys'

/** The name the single `apiKey` option's key(s) go by. */
export const LEGACY_KEY_NAME = 'apiKey'

/**
 * The keys of the admin API from `createRealtime`'s options: the named `apiKeys` (a table, or
 * `createApiKeys(…)` for an `onAccess` listener) and the single `apiKey` check, which stays one
 * key named `apiKey` with every scope. Undefined when neither is given (the admin API is off).
 */
export function adminApiKeys(apiKey: ApiKeyCheck | undefined, apiKeys: ApiKeyTable | ApiKeys | undefined): ApiKeys | undefined {
  if (apiKeys === undefined && apiKey === undefined) return undefined
  const named = apiKeys === undefined ? createApiKeys({}) : isApiKeys(apiKeys) ? apiKeys : createApiKeys(apiKeys)
  if (apiKey === undefined) return named
  if (named.names.includes(LEGACY_KEY_NAME)) throw new TypeError(`createRealtime: the name '${LEGACY_KEY_NAME}' is taken by the apiKey option; rename that entry of apiKeys`)
  const every: ReadonlySet<ApiKeyScope> = new Set(API_KEY_SCOPES)
  return {
    ...named,
    names: [...named.names, LEGACY_KEY_NAME],
    match(presented) {
      const found = named.match(presented)
      // The legacy check runs either way (it compares in constant time itself).
      const legacy = apiKey(presented)
      return found ?? (legacy ? { name: LEGACY_KEY_NAME, scopes: every } : undefined)
    },
  }
}

/** The key a request presents: header `x-api-key`, else `Authorization: Bearer`. */
export function apiKeyOf(req: IncomingMessage): string | undefined {
  const header = req.headers['x-api-key']
  if (typeof header === 'string' && header) return header
  const auth = req.headers.authorization
  if (auth && /^Bearer\s+/i.test(auth)) return auth.replace(/^Bearer\s+/i, '').trim()
  return undefined
}

/**
 * Checks a request against the keys for a scope: answers the key, or throws RT_002 (no key or an
 * unknown one; 401) or RT_003 (the key lacks the scope; 403). The messages never hold the key.
 * For routes an app adds next to the admin API with the same keys.
 */
export function authorizeApiKey(keys: ApiKeys, req: IncomingMessage, scope: ApiKeyScope, path: string): ApiKeyMatch {
  const method = req.method ?? 'GET'
  const presented = apiKeyOf(req)
  const key = presented === undefined ? undefined : keys.match(presented)
  if (key === undefined) {
    keys.report({ outcome: 'refused', scope, method, path })
    throw new RealtimeError('RT_002', 'a valid API key is required (x-api-key or Authorization: Bearer)')
  }
  if (!keys.allows(key, scope)) {
    keys.report({ outcome: 'forbidden', name: key.name, scope, method, path })
    throw new RealtimeError('RT_003', `the API key '${key.name}' does not have the scope '${scope}'`)
  }
  keys.report({ outcome: 'allowed', name: key.name, scope, method, path })
  return key
}
