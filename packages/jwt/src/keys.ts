import { createRemoteJWKSet, importSPKI, importX509, type CryptoKey, type JWK, type JWTVerifyGetKey, type KeyObject } from 'jose'
import type { KeySourceOptions } from './options.js'

/** What `jwtVerify` is given: a key, or a function choosing one by the token's header. */
export type VerifyKey = Uint8Array | JWTVerifyGetKey

/**
 * The verification key of checked options. A PEM is imported once per algorithm a token names
 * (jose needs the algorithm to import it), lazily, and kept; a JWK, CryptoKey or KeyObject is
 * handed to jose, which checks it fits the token's algorithm; a JWKS is jose's remote key set.
 */
export function verifyKey(o: KeySourceOptions): VerifyKey {
  if (o.secret !== undefined) return typeof o.secret === 'string' ? new TextEncoder().encode(o.secret) : o.secret
  if (o.jwksUrl !== undefined) {
    const j = o.jwks ?? {}
    return createRemoteJWKSet(new URL(o.jwksUrl), {
      ...(j.cacheMaxAgeMs !== undefined ? { cacheMaxAge: j.cacheMaxAgeMs } : {}),
      ...(j.cooldownMs !== undefined ? { cooldownDuration: j.cooldownMs } : {}),
      ...(j.timeoutMs !== undefined ? { timeoutDuration: j.timeoutMs } : {}),
      ...(j.headers !== undefined ? { headers: j.headers } : {}),
    })
  }
  const key = o.publicKey as string | JWK | CryptoKey | KeyObject
  if (typeof key !== 'string') return () => key
  const pem = key
  const imported = new Map<string, Promise<CryptoKey>>()
  return (header) => {
    const alg = header.alg ?? ''
    let found = imported.get(alg)
    if (!found) {
      found = pem.includes('BEGIN CERTIFICATE') ? importX509(pem, alg) : importSPKI(pem, alg)
      // A failed import (the key does not fit this algorithm) is not kept: the next token tries again.
      found.catch(() => imported.delete(alg))
      imported.set(alg, found)
    }
    return found
  }
}
