import type { IncomingMessage } from 'node:http'
import { addressKey } from '@tidings/core'

/*
 * The edge guard: what every transport checks about a connection attempt before the hub sees
 * it — the client's address (believing `X-Forwarded-For` only from trusted proxies), its
 * browser origin, and the per-address limits on open and new connections, bodies in flight
 * included. One guard is shared by the WebSocket, SSE and long-poll transports of a server, so
 * the limits hold across them. Imports nothing of this package.
 */

/** Options of the edge guard (`createEdgeGuard`), or of the one a transport makes for itself. */
export interface EdgeOptions {
  /** Open connections (sessions) per client address; more are refused with 429. Default 100; 0 = no limit. */
  readonly maxConnectionsPerIp?: number
  /** New connections per client address per minute (token bucket, burst = rate); more are refused with 429. Default 100; 0 = no limit. */
  readonly maxNewConnectionsPerIpPerMinute?: number
  /**
   * Client → server request bodies (SSE and long-poll POSTs) being received at once from one
   * address; more are refused with 429 before they are read. Default 16; 0 = no limit.
   */
  readonly maxBodiesInFlightPerIp?: number
  /**
   * Whether `X-Forwarded-For` names the client. `false` (default): never, the socket's peer is the
   * client. `true`: the left-most address (only behind a proxy that overwrites the header). A
   * number `n`: the address `n` hops from the right (n trusted proxies). A function: the peer
   * addresses it returns true for are trusted proxies; the right-most untrusted address is the client.
   */
  readonly trustProxy?: boolean | number | ((address: string) => boolean)
  /**
   * Browser origins allowed to connect (`Origin` header), e.g. `['https://app.example.com']`.
   * Default: same-origin only (the `Origin`'s host equals the request's `Host`); requests without
   * an `Origin` (not a browser) always pass. `['*']` allows every origin.
   */
  readonly allowedOrigins?: readonly string[]
}

export type Admission =
  | { readonly ok: true; readonly release: () => void }
  | { readonly ok: false; readonly status: 429; readonly message: string; readonly retryAfterMs: number }

export interface EdgeGuard {
  /** The client's address, as decided by `trustProxy`. */
  clientIp(req: IncomingMessage): string
  /** Whether the request's `Origin` may connect. */
  originAllowed(req: IncomingMessage): boolean
  /**
   * CORS headers for a cross-origin request from an allowed origin (undefined when none apply:
   * same-origin, no `Origin`, or a refused origin).
   */
  corsHeaders(req: IncomingMessage): Record<string, string> | undefined
  /**
   * Count one new connection from `ip`. On `ok`, call `release()` exactly once when it closes
   * (extra calls are ignored). Refused: over the open or the per-minute limit.
   */
  admit(ip: string): Admission
  /**
   * Count one request body being received from `ip`: a release function to call once it is
   * read (or failed), or undefined when the address already has `maxBodiesInFlightPerIp`.
   */
  beginBody(ip: string): (() => void) | undefined
  /** Open connections counted for `ip`'s key (its /64 for IPv6), for tests and metrics. */
  openFrom(ip: string): number
  readonly options: Readonly<{ maxConnectionsPerIp: number; maxNewConnectionsPerIpPerMinute: number; maxBodiesInFlightPerIp: number }>
}

/** Addresses whose rate buckets are kept at most; past it the oldest are forgotten. */
const MAX_TRACKED_ADDRESSES = 100_000

export function createEdgeGuard(options: EdgeOptions = {}, now: () => number = Date.now): EdgeGuard {
  const maxOpen = nonNegative(options.maxConnectionsPerIp, 100, 'maxConnectionsPerIp')
  const perMinute = nonNegative(options.maxNewConnectionsPerIpPerMinute, 100, 'maxNewConnectionsPerIpPerMinute')
  const maxBodies = nonNegative(options.maxBodiesInFlightPerIp, 16, 'maxBodiesInFlightPerIp')
  const bodies = new Map<string, number>()
  const allowAny = options.allowedOrigins?.includes('*') === true
  const allowed = options.allowedOrigins === undefined ? undefined : new Set(options.allowedOrigins.map(normalizeOrigin))
  const trust = options.trustProxy ?? false
  const open = new Map<string, number>()
  const buckets = new Map<string, { tokens: number; at: number }>()
  const refillPerMs = perMinute / 60_000

  function clientIp(req: IncomingMessage): string {
    const peer = stripMapped(req.socket?.remoteAddress ?? 'unknown')
    if (trust === false) return peer
    const raw = req.headers['x-forwarded-for']
    const list = (Array.isArray(raw) ? raw.join(',') : raw ?? '')
      .split(',')
      .map((s) => stripMapped(s.trim()))
      .filter((s) => s.length > 0 && s.length <= 64)
    if (list.length === 0) return peer
    if (trust === true) return list[0]!
    if (typeof trust === 'number') {
      // The peer is the nearest proxy; `trust` proxies in all, so the client is `trust - 1` from the right.
      const i = list.length - trust
      return i >= 0 ? list[i]! : list[0]!
    }
    if (!trust(peer)) return peer
    for (let i = list.length - 1; i >= 0; i--) if (!trust(list[i]!)) return list[i]!
    return list[0]!
  }

  function originOf(req: IncomingMessage): string | undefined {
    const o = req.headers.origin
    const v = Array.isArray(o) ? o[0] : o
    return v === undefined || v === '' ? undefined : v
  }

  function sameOrigin(origin: string, req: IncomingMessage): boolean {
    const host = req.headers.host
    if (host === undefined) return false
    try {
      return new URL(origin).host.toLowerCase() === host.toLowerCase()
    } catch {
      return false
    }
  }

  function originAllowed(req: IncomingMessage): boolean {
    const origin = originOf(req)
    if (origin === undefined || allowAny) return true
    if (allowed?.has(normalizeOrigin(origin))) return true
    return sameOrigin(origin, req)
  }

  function corsHeaders(req: IncomingMessage): Record<string, string> | undefined {
    const origin = originOf(req)
    if (origin === undefined || sameOrigin(origin, req) || !originAllowed(req)) return undefined
    return {
      'Access-Control-Allow-Origin': origin,
      'Access-Control-Allow-Credentials': 'true',
      'Access-Control-Allow-Methods': 'GET, POST, DELETE, OPTIONS',
      'Access-Control-Allow-Headers': 'Content-Type, Authorization, X-Api-Key, X-Tidings-Secret, Last-Event-ID',
      'Access-Control-Expose-Headers': 'X-Tidings-Session, X-Tidings-Secret',
      'Access-Control-Max-Age': '600',
      Vary: 'Origin',
    }
  }

  function takeToken(ip: string): number {
    if (perMinute === 0) return 0
    const t = now()
    let b = buckets.get(ip)
    if (b === undefined) {
      if (buckets.size >= MAX_TRACKED_ADDRESSES) prune(t)
      buckets.set(ip, (b = { tokens: perMinute, at: t }))
    } else {
      b.tokens = Math.min(perMinute, b.tokens + (t - b.at) * refillPerMs)
      b.at = t
    }
    if (b.tokens < 1) return Math.ceil((1 - b.tokens) / refillPerMs)
    b.tokens -= 1
    return 0
  }

  /** Forget buckets that are full again; if none is, the oldest tenth (memory stays bounded). */
  function prune(t: number): void {
    for (const [ip, b] of buckets) if (b.tokens + (t - b.at) * refillPerMs >= perMinute) buckets.delete(ip)
    if (buckets.size < MAX_TRACKED_ADDRESSES) return
    let drop = Math.ceil(MAX_TRACKED_ADDRESSES / 10)
    for (const ip of buckets.keys()) {
      if (drop-- <= 0) break
      buckets.delete(ip)
    }
  }

  function admit(address: string): Admission {
    const ip = addressKey(address)
    const count = open.get(ip) ?? 0
    if (maxOpen > 0 && count >= maxOpen) {
      return { ok: false, status: 429, message: `too many connections from this address (limit ${maxOpen})`, retryAfterMs: 1000 }
    }
    const wait = takeToken(ip)
    if (wait > 0) {
      return { ok: false, status: 429, message: `too many new connections from this address (limit ${perMinute} per minute)`, retryAfterMs: wait }
    }
    open.set(ip, count + 1)
    let released = false
    return {
      ok: true,
      release: () => {
        if (released) return
        released = true
        const n = (open.get(ip) ?? 1) - 1
        if (n <= 0) open.delete(ip)
        else open.set(ip, n)
      },
    }
  }

  function beginBody(address: string): (() => void) | undefined {
    const ip = addressKey(address)
    const n = bodies.get(ip) ?? 0
    if (maxBodies > 0 && n >= maxBodies) return undefined
    bodies.set(ip, n + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const left = (bodies.get(ip) ?? 1) - 1
      if (left <= 0) bodies.delete(ip)
      else bodies.set(ip, left)
    }
  }

  return {
    clientIp,
    beginBody,
    originAllowed,
    corsHeaders,
    admit,
    openFrom: (ip) => open.get(addressKey(ip)) ?? 0,
    options: Object.freeze({ maxConnectionsPerIp: maxOpen, maxNewConnectionsPerIpPerMinute: perMinute, maxBodiesInFlightPerIp: maxBodies }),
  }
}

/** Whether `edge` is a guard already made (shared between transports) rather than options for one. */
export function isEdgeGuard(edge: EdgeGuard | EdgeOptions | undefined): edge is EdgeGuard {
  return edge !== undefined && typeof (edge as Partial<EdgeGuard>).admit === 'function' && typeof (edge as Partial<EdgeGuard>).originAllowed === 'function'
}

/** The guard given, or one made from the options given (defaults when none). */
export function resolveEdgeGuard(edge: EdgeGuard | EdgeOptions | undefined): EdgeGuard {
  return isEdgeGuard(edge) ? edge : createEdgeGuard(edge ?? {})
}

/** `https://App.example.com/` → `https://app.example.com`. */
export function normalizeOrigin(origin: string): string {
  return origin.trim().toLowerCase().replace(/\/+$/, '')
}

/** `::ffff:127.0.0.1` → `127.0.0.1`, so one client is one key whichever way the socket reports it. */
function stripMapped(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address
}

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new TypeError(`edge: ${name} must be a non-negative number`)
  return Math.floor(value)
}
