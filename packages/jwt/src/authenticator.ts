import type { Authenticator, AuthRequest, Identity } from '@tidings/core'
import { jwtVerify, type JWTVerifyOptions } from 'jose'
import { identityFrom } from './claims.js'
import { CHANNEL_TOKEN_TYPE } from './channel-tokens.js'
import { verifyKey } from './keys.js'
import { checkOptions, type JwtAuthenticatorOptions } from './options.js'

/** The bearer token of a request: `request.token`, else an `Authorization: Bearer` header. */
export function bearerToken(request: Pick<AuthRequest, 'token' | 'headers'>): string | undefined {
  if (request.token) return request.token
  const header = request.headers.authorization ?? request.headers.Authorization
  const value = Array.isArray(header) ? header[0] : header
  const match = value !== undefined ? /^Bearer\s+(\S+)\s*$/i.exec(value) : null
  return match?.[1]
}

/**
 * An `Authenticator` that accepts signed JWTs (through jose) and maps their claims to the
 * identity: `userId` from `sub` (or `userIdClaim`), `roles` from `rolesClaim`, every claim in
 * `claims`, `expiresAt` from `exp` (so the hub's `auth:expiring`, refresh and close 4001 apply).
 * Options are checked here and a mistake throws (a mixed HS/asymmetric allow-list, `none`, a short
 * secret, a private key given as the public one). A token that fails any check answers `null`
 * (the client gets RT_002), never a throw; so does a channel token (`typ: tidings-channel+jwt`),
 * even one signed with the same key: it grants one channel, not a connection.
 */
export function createJwtAuthenticator(options: JwtAuthenticatorOptions): Authenticator {
  const algorithms = checkOptions(options)
  const key = verifyKey(options)
  const userIdClaim = options.userIdClaim ?? 'sub'
  const rolesClaim = options.rolesClaim ?? 'roles'
  const now = options.now
  const onReject = options.onReject
  const base: JWTVerifyOptions = {
    algorithms,
    clockTolerance: options.clockToleranceSec ?? 5,
    ...(options.issuer !== undefined ? { issuer: options.issuer as string | string[] } : {}),
    ...(options.audience !== undefined ? { audience: options.audience as string | string[] } : {}),
    ...(options.maxTokenAgeSec !== undefined ? { maxTokenAge: options.maxTokenAgeSec } : {}),
    ...((options.requireExp ?? true) ? { requiredClaims: ['exp'] } : {}),
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
  return async (request): Promise<Identity | null> => {
    const token = bearerToken(request)
    if (token === undefined) return null
    try {
      const verifyOptions = now ? { ...base, currentDate: new Date(now()) } : base
      const { payload, protectedHeader } =
        typeof key === 'function' ? await jwtVerify(token, key, verifyOptions) : await jwtVerify(token, key, verifyOptions)
      // A channel token grants one channel, not a connection: refused here even when it shares the key.
      if (typeof protectedHeader.typ === 'string' && protectedHeader.typ.toLowerCase() === CHANNEL_TOKEN_TYPE) return reject('channel token')
      const identity = identityFrom(payload, userIdClaim, rolesClaim)
      return typeof identity === 'string' ? reject(identity) : identity
    } catch (err) {
      const code = err !== null && typeof err === 'object' && 'code' in err && typeof err.code === 'string' ? err.code : 'invalid token'
      return reject(code)
    }
  }
}
