import type { IncomingMessage } from 'node:http'
import { BlockList, isIP } from 'node:net'
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
  /**
   * Client addresses allowed to connect: CIDR blocks or single addresses, IPv4 and IPv6
   * (`['10.0.0.0/8', '2001:db8::/32', '192.0.2.7']`; `::ffff:`-mapped IPv4 counts as IPv4).
   * When non-empty, every other address is refused with 403 `RT_003`, before the upgrade or the
   * open. The address is the one `trustProxy` decides. Default: every address.
   */
  readonly allowIps?: readonly string[]
  /**
   * Client addresses refused with 403 `RT_003` (same forms as `allowIps`), before the upgrade or
   * the open; checked first, so a denied address stays denied even when `allowIps` lists it.
   */
  readonly denyIps?: readonly string[]
}

export type Admission =
  | { readonly ok: true; readonly release: () => void }
  | { readonly ok: false; readonly status: 429; readonly message: string; readonly retryAfterMs: number }

export interface EdgeGuard {
  /** The client's address, as decided by `trustProxy`. */
  clientIp(req: IncomingMessage): string
  /**
   * Whether the request's `Origin` is allowed (same-origin, listed, or none). The transports
   * check `addressAllowed(clientIp(req))` first, then this, and refuse with 403 when either fails.
   */
  originAllowed(req: IncomingMessage): boolean
  /** Whether a client address passes `denyIps` and a non-empty `allowIps` (true when neither is set). */
  addressAllowed(address: string): boolean
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
  const allowList = compileIpList(options.allowIps, 'allowIps')
  const denyList = compileIpList(options.denyIps, 'denyIps')
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

  function addressAllowed(address: string): boolean {
    if (allowList === undefined && denyList === undefined) return true
    if (denyList !== undefined && denyList(address)) return false
    return allowList === undefined || allowList(address)
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
    addressAllowed,
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

/**
 * A matcher for a list of CIDR blocks or single addresses (IPv4, IPv6, `::ffff:`-mapped IPv4 as
 * IPv4), undefined for an empty list; a malformed entry throws a TypeError naming it. Matching is
 * Node's own `net.BlockList`, one per family, so an IPv6 block never catches an IPv4 client.
 */
export function compileIpList(entries: readonly string[] | undefined, name = 'ip list'): ((address: string) => boolean) | undefined {
  if (entries === undefined) return undefined
  if (!Array.isArray(entries)) throw new TypeError(`edge: ${name} must be an array of addresses or CIDR blocks`)
  if (entries.length === 0) return undefined
  const v4 = new BlockList()
  const v6 = new BlockList()
  for (const entry of entries) {
    const bad = (): TypeError => new TypeError(`edge: ${name} has an invalid entry ${JSON.stringify(String(entry).slice(0, 100))} (expected an IPv4 or IPv6 address or CIDR block)`)
    if (typeof entry !== 'string') throw bad()
    const slash = entry.indexOf('/')
    const rawAddress = (slash < 0 ? entry : entry.slice(0, slash)).trim()
    const rawPrefix = slash < 0 ? undefined : entry.slice(slash + 1).trim()
    let address = rawAddress.toLowerCase()
    let family = isIP(address)
    if (family === 0) throw bad()
    let prefix = family === 4 ? 32 : 128
    if (rawPrefix !== undefined) {
      if (!/^\d{1,3}$/.test(rawPrefix) || Number(rawPrefix) > prefix) throw bad()
      prefix = Number(rawPrefix)
    }
    const mapped = family === 6 ? mappedIpv4(address) : undefined
    if (mapped !== undefined) {
      if (prefix < 96) throw bad() // wider than the mapped range: not an IPv4 block
      address = mapped
      family = 4
      prefix -= 96
    }
    if (family === 4) v4.addSubnet(address, prefix, 'ipv4')
    else v6.addSubnet(address, prefix, 'ipv6')
  }
  return (input: string): boolean => {
    const address = input.trim().toLowerCase()
    const family = isIP(address)
    if (family === 4) return v4.check(address, 'ipv4')
    if (family !== 6) return false
    const mapped = mappedIpv4(address)
    return mapped !== undefined ? v4.check(mapped, 'ipv4') : v6.check(address, 'ipv6')
  }
}

/** The IPv4 address of an IPv6 address in `::ffff:0:0/96` (`::ffff:1.2.3.4` or `::ffff:102:304`), else undefined. */
function mappedIpv4(address: string): string | undefined {
  const m = /^(?:0{1,4}:){0,5}:?:ffff:(.+)$/.exec(address) ?? /^(?:0{1,4}:){5}ffff:(.+)$/.exec(address)
  if (m === null) return undefined
  const tail = m[1]!
  if (isIP(tail) === 4) return tail
  const hex = /^([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(tail)
  if (hex === null) return undefined
  const hi = parseInt(hex[1]!, 16)
  const lo = parseInt(hex[2]!, 16)
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`
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
