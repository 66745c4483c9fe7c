import { type AuthorizeContext, type ChannelGrant, channelNameSchema } from '@tidings/core'
import { type CryptoKey, importJWK, importPKCS8, type JWK, type JWSAlgorithm, jwtVerify, type JWTVerifyOptions, type KeyObject, SignJWT } from 'jose'
import { verifyKey } from './keys.js'
import { type AsymmetricAlgorithm, checkOptions, type JwksOptions, type JwtAlgorithm, type SymmetricAlgorithm } from './options.js'

/**
 * The `typ` header of a channel token. Required when a channel token is verified, and refused by
 * `createJwtAuthenticator`: a connection token is never a channel token, nor the reverse, even
 * when the app signs both with the same key.
 */
export const CHANNEL_TOKEN_TYPE = 'tidings-channel+jwt'

/** The claim naming the one channel a token grants. */
export const CHANNEL_CLAIM = 'ch'
/** The claim holding the presence data that becomes the grant's `presence`. */
export const INFO_CLAIM = 'info'

const CALLER = 'createChannelTokens'
/** No option may allow more than this: a week. */
const TTL_CEILING_SEC = 7 * 24 * 3600

interface ChannelTokensCommon {
  /** The algorithms accepted: only HS* (with `secret`) or only asymmetric ones. `none` never. */
  readonly algorithms: readonly JwtAlgorithm[]
  /** The algorithm `sign` uses. Default: the first of `algorithms`. */
  readonly signingAlgorithm?: JwtAlgorithm
  /** `iss` set by `sign` (the first, for a list) and required by `verify` (one of them). */
  readonly issuer?: string | readonly string[]
  /** `aud` set by `sign` (the first, for a list) and required by `verify` (one of them). */
  readonly audience?: string | readonly string[]
  /** Clock skew allowed on `exp`, `nbf` and `iat`, in seconds. Default 5. */
  readonly clockToleranceSec?: number
  /** Lifetime `sign` gives a token when `ttlSeconds` is not given. Default 600 (10 minutes). */
  readonly defaultTtlSec?: number
  /**
   * The longest lifetime a token may have, in seconds (at most a week). `sign` throws beyond it;
   * `verify` refuses a token whose `exp - iat`, or whose time left, is longer (plus the skew).
   * Default 3600 (an hour).
   */
  readonly maxTtlSec?: number
  /** Current time in ms since the epoch (the hub's clock, in tests). Default `Date.now`. */
  readonly now?: () => number
  /** Told why a token was refused (a jose error code or a short reason), never the token. */
  readonly onReject?: (reason: string) => void
}

/** Channel tokens signed and verified with an HMAC secret (at least as many bytes as the hash). */
export interface SecretChannelTokensOptions extends ChannelTokensCommon {
  readonly secret: string | Uint8Array
  readonly algorithms: readonly SymmetricAlgorithm[]
  readonly signingAlgorithm?: SymmetricAlgorithm
  readonly publicKey?: undefined
  readonly jwksUrl?: undefined
  readonly privateKey?: undefined
}

/** Tokens verified with a public key; `privateKey` (only where tokens are signed) lets `sign` work. */
export interface PublicKeyChannelTokensOptions extends ChannelTokensCommon {
  readonly publicKey: string | JWK | CryptoKey | KeyObject
  readonly privateKey?: string | JWK | CryptoKey | KeyObject
  /** `kid` header set by `sign`. */
  readonly kid?: string
  readonly algorithms: readonly AsymmetricAlgorithm[]
  readonly signingAlgorithm?: AsymmetricAlgorithm
  readonly secret?: undefined
  readonly jwksUrl?: undefined
}

/** Tokens verified with keys from a remote JWKS (chosen by `kid`); `privateKey` and `kid` for `sign`. */
export interface JwksChannelTokensOptions extends ChannelTokensCommon {
  readonly jwksUrl: string | URL
  readonly jwks?: JwksOptions
  readonly privateKey?: string | JWK | CryptoKey | KeyObject
  readonly kid?: string
  readonly algorithms: readonly AsymmetricAlgorithm[]
  readonly signingAlgorithm?: AsymmetricAlgorithm
  readonly secret?: undefined
  readonly publicKey?: undefined
}

export type ChannelTokensOptions = SecretChannelTokensOptions | PublicKeyChannelTokensOptions | JwksChannelTokensOptions

/** What a channel token grants. */
export interface ChannelTokenClaims {
  /** The one channel (exact name, not a pattern). */
  readonly channel: string
  /** The one user: the token is refused on any connection whose `userId` differs. */
  readonly userId: string
  /** Presence data the subscriber joins with (becomes the grant's `presence`); a plain JSON object. */
  readonly presence?: Readonly<Record<string, unknown>>
  /** Lifetime in seconds. Default `defaultTtlSec`; at most `maxTtlSec` (else `sign` throws). */
  readonly ttlSeconds?: number
}

export interface ChannelTokens {
  /** A signed token for one channel and one user (on the app's backend, after its own checks). */
  sign(claims: ChannelTokenClaims): Promise<string>
  /**
   * The grant a token carries for `channel` and `userId`, or `null` when it is refused (bad
   * signature, algorithm, type, time, issuer, audience, another channel or user, an anonymous
   * connection, a lifetime over `maxTtlSec`, `info` that is not an object). Never throws.
   */
  verify(token: string, target: { readonly channel: string; readonly userId: string | undefined }): Promise<ChannelGrant | null>
  /**
   * A channel rule: allows with the grant of the `auth` string the client sent with `subscribe`,
   * denies without one or with a refused one. `channels: { 'private:orders-{id}': { subscribe: tokens.rule } }`.
   */
  readonly rule: (ctx: AuthorizeContext) => Promise<ChannelGrant | false>
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null)

const seconds = (value: number | undefined, fallback: number, name: string): number => {
  const v = value ?? fallback
  if (!(Number.isInteger(v) && v > 0 && v <= TTL_CEILING_SEC)) throw new TypeError(`${CALLER}: ${name} must be a whole number of seconds from 1 to ${TTL_CEILING_SEC}`)
  return v
}

const first = (v: string | readonly string[] | undefined): string | undefined => (typeof v === 'string' ? v : v?.[0])

/**
 * Short-lived tokens that grant one user one channel (and presence data the user cannot forge),
 * signed by the app's backend in its own authorization endpoint, as Pusher's and Centrifugo's
 * channel authorization works. Options are checked here (the same allow-list rules as
 * `createJwtAuthenticator`: never `none`, no HS/asymmetric mix, a secret at least as long as the
 * hash) and a mistake throws.
 *
 * A token is a JWT with header `typ: tidings-channel+jwt` and claims `sub` (the user id), `ch`
 * (the channel), `iat`, `exp` and optionally `info` (presence data), `iss`, `aud`.
 *
 * Anonymous connections (no `userId`) are always refused: a token bound to nobody could be
 * replayed by anyone who saw it. Give such clients an identity first (a guest id in their
 * connection token) and sign channel tokens for that id.
 */
export function createChannelTokens(options: ChannelTokensOptions): ChannelTokens {
  const algorithms = checkOptions(options, CALLER)
  const key = verifyKey(options)
  const tolerance = options.clockToleranceSec ?? 5
  const maxTtl = seconds(options.maxTtlSec, 3600, 'maxTtlSec')
  const defaultTtl = seconds(options.defaultTtlSec, Math.min(600, maxTtl), 'defaultTtlSec')
  if (defaultTtl > maxTtl) throw new TypeError(`${CALLER}: defaultTtlSec (${defaultTtl}) is over maxTtlSec (${maxTtl})`)
  const signingAlgorithm = (options.signingAlgorithm ?? algorithms[0]) as JWSAlgorithm
  if (!algorithms.includes(signingAlgorithm)) throw new TypeError(`${CALLER}: signingAlgorithm ${signingAlgorithm} is not in algorithms`)
  const privateKey = options.privateKey
  if (privateKey !== undefined) {
    if (typeof privateKey === 'string' && !/-----BEGIN PRIVATE KEY-----/.test(privateKey)) {
      throw new TypeError(`${CALLER}: a privateKey string must be a PKCS#8 PEM (BEGIN PRIVATE KEY)`)
    }
    if (typeof privateKey === 'object' && 'kty' in privateKey && (privateKey as JWK).d === undefined) {
      throw new TypeError(`${CALLER}: privateKey is a public JWK; give the private one`)
    }
  }
  const now = options.now ?? Date.now
  const onReject = options.onReject
  const kid = 'kid' in options ? options.kid : undefined
  const issuer = first(options.issuer)
  const audience = first(options.audience)
  const base: JWTVerifyOptions = {
    algorithms,
    typ: CHANNEL_TOKEN_TYPE,
    clockTolerance: tolerance,
    requiredClaims: ['exp', 'iat', 'sub', CHANNEL_CLAIM],
    ...(options.issuer !== undefined ? { issuer: options.issuer as string | string[] } : {}),
    ...(options.audience !== undefined ? { audience: options.audience as string | string[] } : {}),
  }

  let signingKey: Promise<Uint8Array | CryptoKey | KeyObject> | undefined
  const keyForSigning = (): Promise<Uint8Array | CryptoKey | KeyObject> => {
    if (signingKey) return signingKey
    if (options.secret !== undefined) {
      signingKey = Promise.resolve(typeof options.secret === 'string' ? new TextEncoder().encode(options.secret) : options.secret)
    } else if (privateKey === undefined) {
      return Promise.reject(new TypeError(`${CALLER}: sign needs a privateKey (this instance only verifies)`))
    } else if (typeof privateKey === 'string') {
      signingKey = importPKCS8(privateKey, signingAlgorithm)
    } else if (typeof privateKey === 'object' && 'kty' in privateKey) {
      signingKey = importJWK(privateKey as JWK, signingAlgorithm) as Promise<CryptoKey | Uint8Array>
    } else {
      signingKey = Promise.resolve(privateKey as CryptoKey | KeyObject)
    }
    signingKey.catch(() => {
      signingKey = undefined
    })
    return signingKey
  }

  const reject = (reason: string): null => {
    if (onReject) {
      try {
        onReject(reason)
      } catch {
        // A failing listener must not turn a refusal into a throw.
      }
    }
    return null
  }

  async function sign(claims: ChannelTokenClaims): Promise<string> {
    if (typeof claims.channel !== 'string' || !channelNameSchema.safeParse(claims.channel).success) {
      throw new TypeError(`${CALLER}: sign: channel must be a valid channel name`)
    }
    if (typeof claims.userId !== 'string' || claims.userId.length === 0) throw new TypeError(`${CALLER}: sign: userId must be a non-empty string`)
    const ttl = claims.ttlSeconds ?? defaultTtl
    if (!(Number.isInteger(ttl) && ttl > 0)) throw new RangeError(`${CALLER}: sign: ttlSeconds must be a whole number > 0`)
    if (ttl > maxTtl) throw new RangeError(`${CALLER}: sign: ttlSeconds ${ttl} is over maxTtlSec ${maxTtl}`)
    if (claims.presence !== undefined && !isPlainObject(claims.presence)) throw new TypeError(`${CALLER}: sign: presence must be a plain object`)
    const iat = Math.floor(now() / 1000)
    const jwt = new SignJWT({ [CHANNEL_CLAIM]: claims.channel, ...(claims.presence !== undefined ? { [INFO_CLAIM]: claims.presence } : {}) })
      .setProtectedHeader({ alg: signingAlgorithm, typ: CHANNEL_TOKEN_TYPE, ...(kid !== undefined ? { kid } : {}) })
      .setSubject(claims.userId)
      .setIssuedAt(iat)
      .setExpirationTime(iat + ttl)
    if (issuer !== undefined) jwt.setIssuer(issuer)
    if (audience !== undefined) jwt.setAudience(audience)
    return jwt.sign(await keyForSigning())
  }

  async function verify(token: string, target: { readonly channel: string; readonly userId: string | undefined }): Promise<ChannelGrant | null> {
    if (target.userId === undefined || target.userId === '') return reject('anonymous connection')
    if (typeof token !== 'string' || token.length === 0) return reject('no token')
    const at = now()
    let payload: Record<string, unknown>
    try {
      const verifyOptions = { ...base, currentDate: new Date(at) }
      const result = typeof key === 'function' ? await jwtVerify(token, key, verifyOptions) : await jwtVerify(token, key, verifyOptions)
      payload = result.payload
    } catch (err) {
      const code = err !== null && typeof err === 'object' && 'code' in err && typeof err.code === 'string' ? err.code : 'invalid token'
      return reject(code)
    }
    if (payload[CHANNEL_CLAIM] !== target.channel) return reject('another channel')
    if (payload.sub !== target.userId) return reject('another user')
    const exp = payload.exp as number
    const iat = payload.iat as number
    if (exp - iat > maxTtl || exp - at / 1000 > maxTtl + tolerance) return reject('lifetime over maxTtlSec')
    const info = payload[INFO_CLAIM]
    if (info !== undefined && !isPlainObject(info)) return reject('info is not an object')
    return { expiresAt: exp * 1000, ...(info !== undefined ? { presence: info } : {}) }
  }

  const rule = async (ctx: AuthorizeContext): Promise<ChannelGrant | false> => {
    if (ctx.auth === undefined) return false
    return (await verify(ctx.auth, { channel: ctx.channel, userId: ctx.identity.userId })) ?? false
  }

  return { sign, verify, rule }
}
