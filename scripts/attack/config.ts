/** What the attacked server (server.ts) and its attackers agree on: the admin key, the tokens, the per-IP limits. */
import type { Identity } from '@tidings/core'
import type { EdgeOptions } from '@tidings/http-kit'

export const ADMIN_KEY = 'admin-key-0123456789'
export const TOKENS: Readonly<Record<string, Identity>> = {
  'tok-canary': { userId: 'canary' },
  'tok-alice': { userId: 'alice' },
  'tok-bob': { userId: 'bob' },
  'tok-carol': { userId: 'carol' },
  'tok-dave': { userId: 'dave' },
  'tok-erin': { userId: 'erin' },
  'tok-x': { userId: 'x' },
  'tok-flood': { userId: 'flood' },
}
/**
 * Per-IP limits of the attacked server: every attack comes from 127.0.0.1, so the defaults (100
 * open, 100 new per minute) would turn most of it into 429s before it reaches the code under test.
 */
export const EDGE: EdgeOptions = { maxConnectionsPerIp: 5000, maxNewConnectionsPerIpPerMinute: 1_000_000 }

