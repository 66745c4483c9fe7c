import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, type Hub, silentLogger } from '@tidings/core'
import { createRealtime, type RealtimeOptions } from '@tidings/http'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { type ApiKeyAccess, createApiKeys, hashApiKey } from '../src/api-keys.js'
import { createAdminApi } from '../src/admin.js'

// Every call of crypto.timingSafeEqual made by the source is counted (and still done by node).
const timing = vi.hoisted(() => ({ calls: 0 }))
vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>()
  return {
    ...real,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      timing.calls++
      return real.timingSafeEqual(a, b)
    },
  }
})

const PUBLISH_KEY = 'pk_live_publisher_0123456789abcdef'
const READ_KEY = 'rk_live_reader_0123456789abcdef'
const ADMIN_KEY = 'ak_live_operator_0123456789abcdef'
const KEYS = [PUBLISH_KEY, READ_KEY, ADMIN_KEY]

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function serve(options: Omit<RealtimeOptions, 'hub'>): Promise<{ base: string; hub: Hub }> {
  const hub = createHub({ logger: silentLogger })
  cleanups.push(() => hub.close())
  const rt = createRealtime({ hub, ...options })
  cleanups.push(() => rt.close())
  const server = createServer()
  rt.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => new Promise((r) => (server.closeAllConnections(), server.close(r))))
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}/realtime`, hub }
}

interface Route {
  readonly method: string
  readonly path: string
  readonly scope: 'publish' | 'read' | 'admin'
  readonly body?: unknown
}

const ROUTES: Route[] = [
  { method: 'POST', path: '/channels/public:news/broadcast', scope: 'publish', body: { event: 'e', data: 1 } },
  { method: 'POST', path: '/broadcast', scope: 'publish', body: { event: 'e', to: 'all' } },
  { method: 'GET', path: '/channels/public:news/presence', scope: 'read' },
  { method: 'GET', path: '/channels/public:news/history', scope: 'read' },
  { method: 'GET', path: '/connections', scope: 'read' },
  { method: 'GET', path: '/metrics?format=json', scope: 'read' },
  { method: 'POST', path: '/channels/public:news/kick', scope: 'admin', body: { userId: 'u1' } },
  { method: 'DELETE', path: '/connections/no-such-connection', scope: 'admin' },
  { method: 'DELETE', path: '/users/u1/connections', scope: 'admin' },
  // Message revisions, search and the per-user channel list.
  { method: 'PATCH', path: '/channels/public:news/messages/1', scope: 'publish', body: { data: 1 } },
  { method: 'DELETE', path: '/channels/public:news/messages/1', scope: 'publish' },
  { method: 'GET', path: '/channels/public:news/search?q=hello', scope: 'read' },
  { method: 'GET', path: '/users/u1/channels', scope: 'read' },
  // GDPR erasure.
  { method: 'POST', path: '/users/u1/erase', scope: 'admin' },
]

const call = (base: string, r: Route, headers: Record<string, string>) =>
  fetch(`${base}${r.path}`, {
    method: r.method,
    headers: { ...(r.body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(r.body !== undefined ? { body: JSON.stringify(r.body) } : {}),
  })

const TABLE = {
  publisher: { key: PUBLISH_KEY, scopes: ['publish'] },
  reader: { key: hashApiKey(READ_KEY), scopes: ['read'] },
  operator: { key: ADMIN_KEY, scopes: ['admin'] },
} as const

describe('admin API keys with scopes, over real HTTP', () => {
  it('the matrix below covers every admin route with the scope the route table gives it (a new route cannot be left out)', () => {
    const hub = createHub({ logger: silentLogger })
    cleanups.push(() => hub.close())
    const table = createAdminApi(hub, undefined, 1024).routes
    const pattern = (p: string) => new RegExp(`^${p.replace(/:[a-z]+/g, '[^/]+')}$`)
    const missing = table.filter((t) => !ROUTES.some((r) => r.method === t.method && pattern(t.path).test(r.path.split('?')[0]!) && r.scope === t.scope))
    expect(missing).toEqual([])
    expect(table.length).toBe(ROUTES.length)
  })

  it('each scope: 0 routes allowed without the scope, 0 refused with it (admin covers every route)', async () => {
    const { base } = await serve({ apiKeys: TABLE })
    const holds = { [PUBLISH_KEY]: ['publish'], [READ_KEY]: ['read'], [ADMIN_KEY]: ['publish', 'read', 'admin'] } as Record<string, string[]>
    const wronglyAllowed: string[] = []
    const wronglyForbidden: string[] = []
    for (const key of KEYS) {
      for (const r of ROUTES) {
        const res = await call(base, r, { 'x-api-key': key })
        const body = (await res.json().catch(() => ({}))) as { code?: string }
        const should = holds[key]!.includes(r.scope)
        const label = `${key.slice(0, 2)} ${r.method} ${r.path} → ${res.status}`
        expect(res.status, label).not.toBe(401)
        if (should && res.status === 403) wronglyForbidden.push(label)
        if (!should && !(res.status === 403 && body.code === 'RT_003')) wronglyAllowed.push(label)
      }
    }
    expect({ wronglyAllowed, wronglyForbidden }).toEqual({ wronglyAllowed: [], wronglyForbidden: [] })
  })

  it('a refused key is 401 RT_002 on every route: none, wrong, a prefix or an extension of a real key, the sha256 digest itself presented as the key', async () => {
    const { base } = await serve({ apiKeys: TABLE })
    const refused = [{}, { 'x-api-key': 'wrong-key-0123456789' }, { 'x-api-key': ADMIN_KEY.slice(0, -1) }, { 'x-api-key': `${ADMIN_KEY}x` }, { 'x-api-key': hashApiKey(READ_KEY) }, { authorization: `Bearer ${hashApiKey(READ_KEY)}` }, { authorization: `Basic ${ADMIN_KEY}` }]
    for (const headers of refused as Array<Record<string, string>>) {
      for (const r of ROUTES) {
        const res = await call(base, r, headers)
        expect(res.status, `${JSON.stringify(headers)} ${r.method} ${r.path}`).toBe(401)
        expect(await res.json()).toMatchObject({ type: 'error', code: 'RT_002' })
      }
    }
    // The same keys pass as Authorization: Bearer.
    expect((await call(base, ROUTES[4]!, { authorization: `Bearer ${ADMIN_KEY}` })).status).toBe(200)
  })

  it('a hashed key (sha256:<hex>, either case) accepts its plaintext key; the configuration never holds it', async () => {
    const digest = hashApiKey(READ_KEY)
    expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/)
    const { base } = await serve({ apiKeys: { reader: { key: `sha256:${digest.slice(7).toUpperCase()}`, scopes: ['read'] } } })
    expect((await call(base, ROUTES[4]!, { 'x-api-key': READ_KEY })).status).toBe(200)
    expect((await call(base, ROUTES[0]!, { 'x-api-key': READ_KEY })).status).toBe(403)
    expect((await call(base, ROUTES[4]!, { 'x-api-key': digest })).status).toBe(401)
  })

  it('timing-safe path: timingSafeEqual runs once per configured key for a right key, a wrong key and a wrong-length key alike (no early exit)', async () => {
    const { base } = await serve({ apiKeys: { ...TABLE, rotating: { key: ['rot_old_0123456789abcdef', 'rot_new_0123456789abcdef'], scopes: ['read'] } } })
    const route = ROUTES[4]!
    const counts: number[] = []
    for (const key of [ADMIN_KEY, PUBLISH_KEY, 'wrong-key-0123456789', 'x', 'y'.repeat(4000), 'rot_new_0123456789abcdef']) {
      timing.calls = 0
      await call(base, route, { 'x-api-key': key })
      counts.push(timing.calls)
    }
    expect(counts).toEqual([5, 5, 5, 5, 5, 5])
  })

  it('the key never appears in an error body nor in what onAccess hears; the name does', async () => {
    const heard: ApiKeyAccess[] = []
    const { base } = await serve({ apiKeys: createApiKeys(TABLE, { onAccess: (a) => heard.push(a) }) })
    const bodies: string[] = []
    const wrong = 'wrong-key-that-must-not-echo-42'
    for (const [key, r] of [
      [wrong, ROUTES[0]!],
      [PUBLISH_KEY, ROUTES[6]!],
      [READ_KEY, ROUTES[0]!],
      [PUBLISH_KEY, { ...ROUTES[0]!, body: { nope: true } }],
      [ADMIN_KEY, ROUTES[7]!],
      [ADMIN_KEY, { method: 'PUT', path: '/connections', scope: 'read' }],
    ] as Array<[string, Route]>) {
      const res = await call(base, r, { 'x-api-key': key })
      expect(res.status).toBeGreaterThanOrEqual(400)
      bodies.push(await res.text())
    }
    const text = bodies.join('\n') + JSON.stringify(heard)
    for (const key of [...KEYS, wrong]) expect(text).not.toContain(key)
    expect(text).not.toContain(hashApiKey(READ_KEY).slice(7))
    expect(bodies[1]).toContain("'publisher'")
    expect(heard.map((a) => [a.outcome, a.name, a.scope])).toEqual([
      ['refused', undefined, 'publish'],
      ['forbidden', 'publisher', 'admin'],
      ['forbidden', 'reader', 'publish'],
      ['allowed', 'publisher', 'publish'],
      ['allowed', 'operator', 'admin'],
    ])
  })

  it('the single apiKey keeps working with every scope, next to named keys, and is reported as apiKey', async () => {
    const heard: ApiKeyAccess[] = []
    const legacy = 'legacy'
    const { base } = await serve({ apiKey: legacy, apiKeys: createApiKeys({ reader: TABLE.reader }, { onAccess: (a) => heard.push(a) }) })
    for (const r of ROUTES) expect((await call(base, r, { 'x-api-key': legacy })).status, `${r.method} ${r.path}`).not.toBe(403)
    expect((await call(base, ROUTES[4]!, { 'x-api-key': READ_KEY })).status).toBe(200)
    expect((await call(base, ROUTES[0]!, { 'x-api-key': READ_KEY })).status).toBe(403)
    expect(new Set(heard.slice(0, ROUTES.length).map((a) => a.name))).toEqual(new Set(['apiKey']))
    const only = await serve({ apiKey: [legacy, 'second'] })
    expect((await call(only.base, ROUTES[6]!, { 'x-api-key': 'second' })).status).toBe(200)
  })

  it('without apiKey or apiKeys the admin API is off (403 RT_003)', async () => {
    const { base } = await serve({})
    const res = await call(base, ROUTES[4]!, { 'x-api-key': ADMIN_KEY })
    expect(res.status).toBe(403)
    expect(await res.json()).toMatchObject({ code: 'RT_003' })
  })

  it('mistakes in the key table throw when created, naming the key but never showing it', async () => {
    const secretish = 'short-key'
    const cases: Array<[Parameters<typeof createApiKeys>[0], RegExp]> = [
      [{ a: { key: secretish, scopes: ['read'] } }, /'a' is shorter than 16/],
      [{ a: { key: 'sha256:abc', scopes: ['read'] } }, /'a' starts with sha256:/],
      [{ a: { key: ADMIN_KEY, scopes: [] } }, /'a' needs at least one scope/],
      [{ a: { key: ADMIN_KEY, scopes: ['write' as never] } }, /unknown scope "write"/],
      [{ a: { key: ADMIN_KEY, scopes: ['read'] }, b: { key: hashApiKey(ADMIN_KEY), scopes: ['admin'] } }, /'a' and 'b' are the same key/],
      [{ a: { key: [], scopes: ['read'] } }, /'a' has no key/],
      [{ '': { key: ADMIN_KEY, scopes: ['read'] } }, /non-empty name/],
    ]
    for (const [table, message] of cases) {
      expect(() => createApiKeys(table)).toThrow(message)
      try {
        createApiKeys(table)
      } catch (err) {
        expect(String(err)).not.toContain(secretish)
        expect(String(err)).not.toContain(ADMIN_KEY)
      }
    }
    const hub = createHub({ logger: silentLogger })
    cleanups.push(() => hub.close())
    expect(() => createRealtime({ hub, apiKey: 'x', apiKeys: { apiKey: { key: ADMIN_KEY, scopes: ['read'] } } })).toThrow(/'apiKey' is taken/)
  })
})
