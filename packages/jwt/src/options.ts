import type { CryptoKey, JWK, JWSAlgorithm, KeyObject } from 'jose'

/** HMAC with a shared secret. */
export const SYMMETRIC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const
/** Signatures checked with a public key (RSA, RSA-PSS, ECDSA, EdDSA). */
export const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const

export type SymmetricAlgorithm = (typeof SYMMETRIC_ALGORITHMS)[number]
export type AsymmetricAlgorithm = (typeof ASYMMETRIC_ALGORITHMS)[number]
export type JwtAlgorithm = SymmetricAlgorithm | AsymmetricAlgorithm

/** A claim by name (`'sub'`, `'https://example.com/roles'`), or a path into nested claims (`['realm_access', 'roles']`). */
export type ClaimPath = string | readonly string[]

/** Options of `createRemoteJWKSet` that an app may tune. */
export interface JwksOptions {
  /** How long fetched keys are kept before a token makes them fetched again. Default 10 minutes. */
  readonly cacheMaxAgeMs?: number
  /** After a fetch, how long an unknown `kid` waits before it may trigger another. Default 30 s. */
  readonly cooldownMs?: number
  /** Timeout of one fetch of the key set. Default 5 s. */
  readonly timeoutMs?: number
  /** Headers sent with the fetch. */
  readonly headers?: Record<string, string>
}

interface CommonOptions {
  /**
   * The algorithms accepted, required. Either only HMAC (`HS*`, with `secret`) or only
   * asymmetric ones (with `publicKey` or `jwksUrl`): a list mixing the two is refused when the
   * authenticator is created (no HS/RS key confusion). `none` is never accepted.
   */
  readonly algorithms: readonly JwtAlgorithm[]
  /** Expected `iss` (one of them). When set, tokens without `iss` are refused. */
  readonly issuer?: string | readonly string[]
  /** Expected `aud` (the token must name one of them). When set, tokens without `aud` are refused. */
  readonly audience?: string | readonly string[]
  /** Clock skew allowed on `exp`, `nbf` and `iat`, in seconds. Default 5. */
  readonly clockToleranceSec?: number
  /** Refuse tokens whose `iat` is older than this (requires `iat`). Default: no limit. */
  readonly maxTokenAgeSec?: number
  /** Refuse tokens without `exp`. Default true. */
  readonly requireExp?: boolean
  /** The claim holding the user id. Default `'sub'`. A token without it is refused. */
  readonly userIdClaim?: ClaimPath
  /** The claim holding the roles: an array of strings, or one space-separated string. Default `'roles'`. */
  readonly rolesClaim?: ClaimPath
  /** Current time in ms since the epoch (the hub's clock, in tests). Default `Date.now`. */
  readonly now?: () => number
  /**
   * Told why a token was refused (a jose error code such as `ERR_JWT_EXPIRED`, or a short
   * reason), for logs and metrics. Never given the token.
   */
  readonly onReject?: (reason: string) => void
}

/** Tokens signed with HMAC and a shared secret (at least as many bytes as the hash: 32 for HS256, 64 for HS512). */
export interface SecretKeyOptions extends CommonOptions {
  readonly secret: string | Uint8Array
  readonly publicKey?: undefined
  readonly jwksUrl?: undefined
  readonly algorithms: readonly SymmetricAlgorithm[]
}

/** Tokens signed with a private key whose public key is given: a PEM (SPKI or X.509 certificate), a JWK, a CryptoKey or a KeyObject. */
export interface PublicKeyOptions extends CommonOptions {
  readonly publicKey: string | JWK | CryptoKey | KeyObject
  readonly secret?: undefined
  readonly jwksUrl?: undefined
  readonly algorithms: readonly AsymmetricAlgorithm[]
}

/** Tokens whose key is found by `kid` in a remote JSON Web Key Set (cached; a new `kid` makes it fetched again). */
export interface JwksKeyOptions extends CommonOptions {
  readonly jwksUrl: string | URL
  readonly jwks?: JwksOptions
  readonly secret?: undefined
  readonly publicKey?: undefined
  readonly algorithms: readonly AsymmetricAlgorithm[]
}

export type JwtAuthenticatorOptions = SecretKeyOptions | PublicKeyOptions | JwksKeyOptions

const HASH_BYTES: Record<SymmetricAlgorithm, number> = { HS256: 32, HS384: 48, HS512: 64 }

const isSymmetric = (alg: string): alg is SymmetricAlgorithm => (SYMMETRIC_ALGORITHMS as readonly string[]).includes(alg)
const isAsymmetric = (alg: string): alg is AsymmetricAlgorithm => (ASYMMETRIC_ALGORITHMS as readonly string[]).includes(alg)

/** The fields of the options that choose the verification key and the algorithms (shared by the authenticator and channel tokens). */
export interface KeySourceOptions {
  readonly secret?: string | Uint8Array | undefined
  readonly publicKey?: string | JWK | CryptoKey | KeyObject | undefined
  readonly jwksUrl?: string | URL | undefined
  readonly jwks?: JwksOptions | undefined
  readonly algorithms: readonly JwtAlgorithm[]
  readonly clockToleranceSec?: number | undefined
  readonly maxTokenAgeSec?: number | undefined
}

/**
 * Checks the options when the authenticator (or `caller`) is created; throws a TypeError naming
 * what is wrong.
 */
export function checkOptions(o: KeySourceOptions, caller = 'createJwtAuthenticator'): JWSAlgorithm[] {
  const given = [o.secret !== undefined, o.publicKey !== undefined, o.jwksUrl !== undefined].filter(Boolean).length
  if (given !== 1) throw new TypeError(`${caller}: give exactly one of secret, publicKey or jwksUrl`)
  const algorithms = o.algorithms as readonly string[] | undefined
  if (!Array.isArray(algorithms) || algorithms.length === 0) {
    throw new TypeError(`${caller}: algorithms is required (a non-empty allow-list)`)
  }
  for (const alg of algorithms) {
    if (typeof alg === 'string' && alg.toLowerCase() === 'none') throw new TypeError(`${caller}: the algorithm "none" is never accepted`)
    if (!isSymmetric(alg) && !isAsymmetric(alg)) throw new TypeError(`${caller}: unknown algorithm ${JSON.stringify(alg)}`)
  }
  const symmetric = algorithms.filter(isSymmetric)
  if (symmetric.length > 0 && symmetric.length < algorithms.length) {
    throw new TypeError(`${caller}: algorithms mixes HMAC (HS*) with asymmetric algorithms; a public key could then be used as an HMAC secret (key confusion)`)
  }
  if (o.secret !== undefined) {
    if (symmetric.length === 0) throw new TypeError(`${caller}: a secret verifies only HS256, HS384 or HS512`)
    const bytes = typeof o.secret === 'string' ? new TextEncoder().encode(o.secret).byteLength : o.secret.byteLength
    const needed = Math.max(...symmetric.map((a) => HASH_BYTES[a]))
    if (bytes < needed) throw new TypeError(`${caller}: the secret has ${bytes} bytes; ${symmetric.join(', ')} need at least ${needed} (RFC 7518 §3.2)`)
  } else if (symmetric.length > 0) {
    throw new TypeError(`${caller}: HS* algorithms need a secret, not a public key or a JWKS`)
  }
  if (typeof o.publicKey === 'string' && /PRIVATE KEY/.test(o.publicKey)) {
    throw new TypeError(`${caller}: publicKey is a private key; give the public key (SPKI PEM) or a certificate`)
  }
  if (typeof o.publicKey === 'string' && !/-----BEGIN (PUBLIC KEY|CERTIFICATE)-----/.test(o.publicKey)) {
    throw new TypeError(`${caller}: a publicKey string must be a PEM public key (BEGIN PUBLIC KEY) or certificate (BEGIN CERTIFICATE)`)
  }
  if (o.publicKey !== undefined && typeof o.publicKey === 'object' && 'd' in o.publicKey && (o.publicKey as JWK).d !== undefined) {
    throw new TypeError(`${caller}: publicKey is a private JWK; give its public part`)
  }
  const tolerance = o.clockToleranceSec ?? 5
  if (!(Number.isFinite(tolerance) && tolerance >= 0)) throw new TypeError(`${caller}: clockToleranceSec must be a number >= 0`)
  if (o.maxTokenAgeSec !== undefined && !(Number.isFinite(o.maxTokenAgeSec) && o.maxTokenAgeSec > 0)) {
    throw new TypeError(`${caller}: maxTokenAgeSec must be a number > 0`)
  }
  return [...algorithms] as JWSAlgorithm[]
}
