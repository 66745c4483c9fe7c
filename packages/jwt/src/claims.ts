import type { Identity } from '@tidings/core'
import type { JWTPayload } from 'jose'
import type { ClaimPath } from './options.js'

/** The value at a claim name or a path into nested claims; undefined if any step is missing. */
export function claimAt(payload: JWTPayload, path: ClaimPath): unknown {
  if (typeof path === 'string') return Object.hasOwn(payload, path) ? payload[path] : undefined
  let at: unknown = payload
  for (const step of path) {
    if (at === null || typeof at !== 'object' || Array.isArray(at) || !Object.hasOwn(at, step)) return undefined
    at = (at as Record<string, unknown>)[step]
  }
  return at
}

/** Roles from a claim: an array (its strings kept) or one space-separated string (as OAuth's `scope`). */
export function rolesFrom(value: unknown): string[] | undefined {
  if (Array.isArray(value)) return value.filter((r): r is string => typeof r === 'string' && r.length > 0)
  if (typeof value === 'string') return value.split(/\s+/).filter((r) => r.length > 0)
  return undefined
}

/**
 * The identity a verified payload stands for, or a reason to refuse it: the user id (a non-empty
 * string, or a finite number as its decimal string), the roles, every claim, and `expiresAt`
 * from `exp` so the hub warns before it and closes after it unless the client refreshes.
 */
export function identityFrom(payload: JWTPayload, userIdClaim: ClaimPath, rolesClaim: ClaimPath): Identity | string {
  const raw = claimAt(payload, userIdClaim)
  const userId = typeof raw === 'string' ? raw : typeof raw === 'number' && Number.isFinite(raw) ? String(raw) : undefined
  if (userId === undefined || userId.length === 0) return 'no user id claim'
  const roles = rolesFrom(claimAt(payload, rolesClaim))
  return {
    userId,
    ...(roles !== undefined ? { roles } : {}),
    claims: payload as Readonly<Record<string, unknown>>,
    ...(typeof payload.exp === 'number' ? { expiresAt: payload.exp * 1000 } : {}),
  }
}
