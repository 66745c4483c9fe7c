import type { MaybePromise } from '../util.js'

/** Who is on the other end of a connection. Anonymous connections have no `userId`. */
export interface Identity {
  readonly userId?: string | undefined
  readonly roles?: readonly string[] | undefined
  /** Claims from the token or the app (plan, tenant, …); read by rules and subscription limits. */
  readonly claims?: Readonly<Record<string, unknown>> | undefined
  /**
   * When these credentials stop being valid (ms since the epoch, e.g. a JWT's `exp` × 1000).
   * Before then the client is sent `auth:expiring` and may refresh with an `auth` frame; without
   * a refresh within the hub's `credentials.graceMs`, its subscriptions end and it is closed (4001).
   */
  readonly expiresAt?: number | undefined
}

/** What an authenticator sees of a connection attempt. */
export interface AuthRequest {
  /** Bearer token (query parameter, header or first frame, depending on the transport). */
  readonly token?: string | undefined
  readonly apiKey?: string | undefined
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  readonly remoteAddress?: string | undefined
  readonly transport: string
}

/**
 * Turns credentials into an identity. Called for every connection, with or without a token or
 * key (it may read headers, such as a session cookie). Return the identity to accept; return
 * `null` or throw to reject: the client gets `RT_002` and is closed, unless it brought no
 * credentials and the hub allows anonymous connections, in which case it is anonymous. MUST NOT hold the request
 * longer than the caller's patience: the transport applies its own handshake timeout.
 */
export type Authenticator = (request: AuthRequest) => MaybePromise<Identity | null | undefined>

/**
 * What a channel rule is asked about: subscribing, publishing from a client, seeing and joining
 * the channel's presence, and reading its history (a history request, or the replay of a
 * subscription that resumes from an offset).
 */
export type ChannelAction = 'subscribe' | 'publish' | 'presence' | 'history'

/** What a channel rule sees when it decides. */
export interface AuthorizeContext {
  readonly identity: Identity
  readonly channel: string
  readonly action: ChannelAction
  /** Named parts of the matched pattern, e.g. `{ userId: '42' }` for `private:user-{userId}`. */
  readonly params: Readonly<Record<string, string>>
  /** The room record, when the channel has one. */
  readonly room?: { readonly members: ReadonlyMap<string, string>; readonly metadata: Readonly<Record<string, unknown>> } | undefined
  /**
   * The `auth` string the client sent with `subscribe`, if any (e.g. a channel token). Later
   * decisions on that subscription (publish, history, re-checks) see the same string.
   */
  readonly auth?: string | undefined
}

/**
 * What a rule that allows may add to the subscription it allows: presence data that the client
 * cannot forge (e.g. from a channel token signed by the app) and an end (ms since the epoch) after
 * which the subscription is ended with reason `'expired'` unless the client subscribes again
 * with fresh credentials. Returning a grant means "allowed".
 */
export interface ChannelGrant {
  readonly presence?: Readonly<Record<string, unknown>> | undefined
  readonly expiresAt?: number | undefined
}

/**
 * A channel rule: `true` (anyone), `false` (server only), `'authenticated'` (any identified
 * user), an expression in the rules language (e.g. `"auth.uid != null && data.members.includes(auth.uid)"`,
 * compiled once when the channel is registered; a syntax error throws there, with its position),
 * or a function. Only a function result of exactly `true` or a {@link ChannelGrant} object allows;
 * a function that throws or rejects denies. Publish decisions are cached per subscription until
 * the identity is refreshed or the channel's room changes.
 */
export type ChannelRule = boolean | 'authenticated' | (string & {}) | ((ctx: AuthorizeContext) => MaybePromise<boolean | ChannelGrant>)

/** Accepts connections carrying one of the given API keys, as the identity mapped to it. */
export function createApiKeyAuthenticator(keys: Readonly<Record<string, Identity>>): Authenticator {
  const table = new Map(Object.entries(keys))
  return (req) => (req.apiKey !== undefined ? table.get(req.apiKey) ?? null : null)
}

/** Accepts the given static tokens (for tests and demos; use a signed token in production). */
export function createTokenAuthenticator(tokens: Readonly<Record<string, Identity>>): Authenticator {
  const table = new Map(Object.entries(tokens))
  return (req) => (req.token !== undefined ? table.get(req.token) ?? null : null)
}

/**
 * The credentials of a request that opens a connection (any transport): `token` from the query
 * parameter `token` or an `Authorization: Bearer` header; `apiKey` from the query parameter
 * `apiKey` or an `x-api-key` header. Pure: takes the request URL (path and query) and headers.
 */
export function credentialsFromRequest(
  url: string,
  headers: Readonly<Record<string, string | string[] | undefined>>,
): { token?: string; apiKey?: string } {
  const q = url.indexOf('?')
  const params = q >= 0 ? new URLSearchParams(url.slice(q + 1)) : undefined
  const header = (name: string) => {
    const v = headers[name]
    return Array.isArray(v) ? v[0] : v
  }
  const auth = header('authorization')
  const bearer = auth !== undefined && /^Bearer\s+/i.test(auth) ? auth.replace(/^Bearer\s+/i, '').trim() : undefined
  const token = params?.get('token') ?? bearer
  const apiKey = params?.get('apiKey') ?? header('x-api-key')
  const out: { token?: string; apiKey?: string } = {}
  if (token) out.token = token
  if (apiKey) out.apiKey = apiKey
  return out
}
