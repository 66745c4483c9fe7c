import type { IncomingMessage, ServerResponse } from 'node:http'
import { type ChannelHandle, type Hub, RealtimeError, channelNameSchema, eventNameSchema, filterSchema, prioritySchema } from '@tidings/core'
import type { Registry } from 'prom-client'
import { z } from 'zod'
import { drainBody, hasBody } from '@tidings/http-kit'
import { type ApiKeys, type ApiKeyScope, apiKeyOf, authorizeApiKey } from './api-keys.js'
import { readJsonBody, sendError, sendJson } from './respond.js'
import { createMetricsRegistry } from './metrics.js'

export type { ApiKeyCheck } from './api-keys.js'

const exclude = z.object({ connections: z.array(z.string()).max(1000).optional(), users: z.array(z.string()).max(1000).optional() }).strict()

export const broadcastToChannelBody = z
  .object({
    event: eventNameSchema,
    data: z.unknown().optional(),
    exclude: exclude.optional(),
    priority: prioritySchema.optional(),
    idempotencyKey: z.string().min(1).max(128).optional(),
    sender: z.string().max(128).optional(),
  })
  .strict()

export const broadcastBody = z
  .object({
    event: eventNameSchema,
    data: z.unknown().optional(),
    to: z.union([
      z.literal('all'),
      z
        .object({
          channels: z.array(channelNameSchema).max(100).optional(),
          users: z.array(z.string()).max(1000).optional(),
          connections: z.array(z.string()).max(1000).optional(),
        })
        .strict(),
    ]),
    where: filterSchema.optional(),
    exclude: exclude.optional(),
    priority: prioritySchema.optional(),
    sender: z.string().max(128).optional(),
  })
  .strict()

export const kickBody = z.object({ userId: z.string().min(1), reason: z.string().max(120).optional() }).strict()

/** A user id in a path, a query or a body of the revision and channel-list routes. */
export const adminUserIdSchema = z.string().min(1).max(256)

/** `PATCH /channels/:id/messages/:offset`: the new data (required, `null` allowed), and the user to edit on behalf of. */
export const editMessageBody = z.object({ data: z.unknown(), by: adminUserIdSchema.optional() }).strict()

/** Bounds of the query parameters of the search and channel-list routes. */
export const SEARCH_QUERY_MAX = 256
export const SEARCH_LIMIT_MAX = 100
export const USER_CHANNELS_LIMIT_MAX = 500

/** The `Content-Type`s a JSON body may be sent with (absent is taken as JSON too). */
const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i

interface Route {
  readonly method: string
  /** Path below the prefix, with `:name` parameters. */
  readonly path: string
  /** The scope a key needs for this route. */
  readonly scope: ApiKeyScope
  readonly run: (ctx: { req: IncomingMessage; res: ServerResponse; params: Record<string, string>; query: URLSearchParams }) => Promise<void>
}

/**
 * The REST admin API: broadcast, presence, kick, history, message edits and deletes, search,
 * users' channel lists, connections, metrics. Every route needs an API key with the route's scope
 * (`publish`: broadcasts, edits and deletes; `read`: presence, history, search, users' channel
 * lists, connections, metrics; `admin`: kicks and disconnections, and the rest): no key or an unknown
 * one is 401 RT_002, a key without the scope 403 RT_003. Bodies are validated with zod; errors
 * are `{ type: 'error', code, message }` with the HTTP status that matches the code.
 */
/**
 * `registry`: the Prometheus registry `?format=prometheus` answers from (the one behind
 * `<prefix>/metrics`), or undefined: a registry made for the admin API on first use.
 */
export function createAdminApi(hub: Hub, keys: ApiKeys | undefined, maxBodyBytes: number, registry?: Registry) {
  let ownRegistry: Registry | undefined
  const channelParam = (raw: string): string => {
    const name = decodeParam(raw)
    if (!channelNameSchema.safeParse(name).success) throw new RealtimeError('RT_007', `invalid channel name '${name}'`)
    return name
  }
  /** A channel some pattern matches (else 404 RT_004, as publish and history answer). */
  const knownChannel = (raw: string): string => {
    const name = channelParam(raw)
    if (hub.channels.resolve(name) === undefined) throw new RealtimeError('RT_004', `no channel pattern matches '${name}'`)
    return name
  }
  const body = async <T>(req: IncomingMessage, schema: z.ZodType<T>): Promise<T> => {
    const raw = await readJsonBody(req, maxBodyBytes)
    if (raw === undefined) throw new RealtimeError('RT_007', 'a JSON request body is required')
    const parsed = schema.safeParse(raw)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]
      throw new RealtimeError('RT_007', issue ? `${issue.path.join('.') || 'body'}: ${issue.message}` : 'invalid body')
    }
    return parsed.data
  }

  /** A JSON body only: a declared `Content-Type` that is not JSON (a form, text) is 400 RT_007, before the body is read. */
  const jsonBody = async <T>(req: IncomingMessage, schema: z.ZodType<T>): Promise<T> => {
    const type = req.headers['content-type']
    if (type !== undefined && type !== '' && !JSON_TYPE.test(type)) throw new RealtimeError('RT_007', `the request body must be application/json, not '${type.slice(0, 100)}'`)
    return body(req, schema)
  }
  /** A message offset in a path: a positive safe integer in plain digits (`0`, `-1`, `1e3`, `0x10`, `01`, past 2^53 − 1: 400 RT_007). */
  const offsetParam = (raw: string): number => {
    const text = decodeParam(raw)
    const n = Number(text)
    if (!/^[1-9][0-9]{0,15}$/.test(text) || !Number.isSafeInteger(n)) throw new RealtimeError('RT_007', 'offset: a whole number from 1 to 9007199254740991')
    return n
  }
  /** A whole-number query parameter from `min` to `max`, in plain digits; undefined when absent. */
  const intQuery = (query: URLSearchParams, name: string, min: number, max: number): number | undefined => {
    const v = query.get(name)
    if (v === null) return undefined
    const n = Number(v)
    if (!/^[0-9]{1,16}$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) throw new RealtimeError('RT_007', `${name}: a whole number from ${min} to ${max}`)
    return n
  }
  const userIdOf = (value: string, what: string): string => {
    if (!adminUserIdSchema.safeParse(value).success) throw new RealtimeError('RT_007', `${what}: a user id of 1 to 256 characters`)
    return value
  }

  const routes: Route[] = [
    {
      method: 'POST',
      path: '/channels/:id/broadcast',
      scope: 'publish',
      run: async ({ req, res, params }) => {
        const b = await body(req, broadcastToChannelBody)
        const r = await hub.publish(channelParam(params.id!), b.event, b.data, { exclude: b.exclude, priority: b.priority, idempotencyKey: b.idempotencyKey, sender: b.sender })
        sendJson(res, 200, { messageId: r.messageId, offset: r.offset, duplicate: r.duplicate, recipients: r.recipients })
      },
    },
    {
      method: 'GET',
      path: '/channels/:id/presence',
      scope: 'read',
      run: async ({ res, params }) => sendJson(res, 200, await hub.presence.get(knownChannel(params.id!))),
    },
    {
      method: 'POST',
      path: '/channels/:id/kick',
      scope: 'admin',
      run: async ({ req, res, params }) => {
        const channel = knownChannel(params.id!)
        const b = await body(req, kickBody)
        const removed = await hub.channel(channel).kick(b.userId, b.reason)
        sendJson(res, 200, { removed })
      },
    },
    {
      method: 'GET',
      path: '/channels/:id/history',
      scope: 'read',
      run: async ({ res, params, query }) => {
        const after = intQuery(query, 'after', 0, Number.MAX_SAFE_INTEGER)
        const limit = intQuery(query, 'limit', 1, 1000)
        const h = await hub.channel(channelParam(params.id!)).history({ after, limit })
        sendJson(res, 200, h)
      },
    },
    {
      method: 'PATCH',
      path: '/channels/:id/messages/:offset',
      scope: 'publish',
      run: async ({ req, res, params }) => {
        const channel = knownChannel(params.id!)
        const offset = offsetParam(params.offset!)
        const b = await jsonBody(req, editMessageBody)
        sendJson(res, 200, revisionOf(await hub.channel(channel).edit(offset, b.data, b.by === undefined ? {} : { by: b.by })))
      },
    },
    {
      method: 'DELETE',
      path: '/channels/:id/messages/:offset',
      scope: 'publish',
      run: async ({ res, params, query }) => {
        const channel = knownChannel(params.id!)
        const offset = offsetParam(params.offset!)
        const by = query.get('by')
        sendJson(res, 200, revisionOf(await hub.channel(channel).delete(offset, by === null ? {} : { by: userIdOf(by, 'by') })))
      },
    },
    {
      method: 'GET',
      path: '/channels/:id/search',
      scope: 'read',
      run: async ({ res, params, query }) => {
        const channel = knownChannel(params.id!)
        const q = query.get('q')
        if (q === null || q.length === 0 || q.length > SEARCH_QUERY_MAX) throw new RealtimeError('RT_007', `q: a search of 1 to ${SEARCH_QUERY_MAX} characters is required`)
        const limit = intQuery(query, 'limit', 1, SEARCH_LIMIT_MAX)
        const before = intQuery(query, 'before', 1, Number.MAX_SAFE_INTEGER)
        const messages = await hub.channel(channel).search(q, { ...(limit !== undefined ? { limit } : {}), ...(before !== undefined ? { before } : {}) })
        sendJson(res, 200, { messages })
      },
    },
    {
      method: 'GET',
      path: '/users/:id/channels',
      scope: 'read',
      run: async ({ res, params, query }) => {
        const userId = userIdOf(decodeParam(params.id!), 'user id')
        const limit = intQuery(query, 'limit', 1, USER_CHANNELS_LIMIT_MAX)
        const channels = await hub.channels.forUser(userId, limit !== undefined ? { limit } : {})
        sendJson(res, 200, { channels })
      },
    },
    {
      method: 'POST',
      path: '/users/:id/erase',
      scope: 'admin',
      run: async ({ res, params }) => {
        const userId = userIdOf(decodeParam(params.id!), 'user id')
        const erased = await hub.eraseUser(userId)
        sendJson(res, 200, { messages: erased.messages, cursors: erased.cursors, keys: erased.keys })
      },
    },
    {
      method: 'POST',
      path: '/broadcast',
      scope: 'publish',
      run: async ({ req, res }) => {
        const b = await body(req, broadcastBody)
        sendJson(res, 200, await hub.broadcast(b))
      },
    },
    {
      method: 'GET',
      path: '/connections',
      scope: 'read',
      run: async ({ res, query }) => {
        const filter: { userId?: string; channel?: string; limit?: number } = {}
        const userId = query.get('userId')
        const channel = query.get('channel')
        const limit = query.get('limit')
        if (userId) filter.userId = userId
        if (channel) filter.channel = channel
        if (limit !== null) {
          if (!/^[1-9][0-9]{0,4}$/.test(limit) || Number(limit) > 10_000) throw new RealtimeError('RT_007', 'limit: a whole number from 1 to 10000')
          filter.limit = Number(limit)
        }
        const connections = await hub.connections.list(filter)
        sendJson(res, 200, { connections, count: connections.length })
      },
    },
    {
      method: 'DELETE',
      path: '/connections/:id',
      scope: 'admin',
      run: async ({ res, params }) => {
        if (!(await hub.connections.disconnect(decodeParam(params.id!), 'disconnected by admin'))) throw new RealtimeError('RT_004', 'no such connection on any node')
        res.statusCode = 204
        res.end()
      },
    },
    {
      method: 'DELETE',
      path: '/users/:id/connections',
      scope: 'admin',
      run: async ({ res, params }) => sendJson(res, 200, { disconnected: await hub.connections.disconnectUser(decodeParam(params.id!), 'disconnected by admin') }),
    },
    {
      method: 'GET',
      path: '/metrics',
      scope: 'read',
      run: async ({ res, query }) => {
        const m = hub.metrics()
        if (query.get('format') !== 'prometheus') return sendJson(res, 200, m)
        const r = registry ?? (ownRegistry ??= createMetricsRegistry(hub))
        const text = await r.metrics()
        res.statusCode = 200
        res.setHeader('content-type', r.contentType)
        res.end(text)
      },
    },
  ]

  const compiled = routes.map((r) => {
    const names: string[] = []
    const source = r.path.replace(/:([a-z]+)/g, (_, name: string) => {
      names.push(name)
      return '([^/]+)'
    })
    return { ...r, regex: new RegExp(`^${source}$`), names }
  })

  /** Handle `rest` (the path below the prefix); false when no admin route matches. */
  async function handleAdmin(req: IncomingMessage, res: ServerResponse, rest: string, query: URLSearchParams): Promise<boolean> {
    const matches = compiled.filter((r) => r.regex.test(rest))
    if (matches.length === 0) return false
    const route = matches.find((r) => r.method === req.method)
    try {
      const declared = Number(req.headers['content-length'])
      // A body no route will read is drained first, so the answer is not lost to a reset.
      if (hasBody(req) && (route === undefined || !BODY_METHODS.has(route.method) || declared > maxBodyBytes)) await drainBody(req)
      if (declared > maxBodyBytes) {
        res.setHeader('connection', 'close')
        req.resume()
        throw new RealtimeError('RT_005', `request body over ${maxBodyBytes} bytes`, { limit: maxBodyBytes })
      }
      if (!keys) throw new RealtimeError('RT_003', 'the admin API is disabled: no apiKey or apiKeys configured')
      if (!route) {
        const presented = apiKeyOf(req)
        if (presented === undefined || keys.match(presented) === undefined) throw new RealtimeError('RT_002', 'a valid API key is required (x-api-key or Authorization: Bearer)')
        res.setHeader('allow', matches.map((r) => r.method).join(', '))
        sendJson(res, 405, { type: 'error', code: 'RT_007', message: `method ${req.method} not allowed here` })
        return true
      }
      authorizeApiKey(keys, req, route.scope, rest)
      const m = route.regex.exec(rest)!
      const params = Object.fromEntries(route.names.map((n, i) => [n, m[i + 1]!]))
      await route.run({ req, res, params, query })
    } catch (err) {
      await drainBody(req)
      sendError(res, err)
    }
    return true
  }
  /** The route table (method, path with `:name` parameters, scope), for tests and documents. */
  const table: ReadonlyArray<{ readonly method: string; readonly path: string; readonly scope: ApiKeyScope }> = routes.map(({ method, path, scope }) => ({ method, path, scope }))
  return Object.assign(handleAdmin, { routes: table })
}

/** Methods whose routes read a request body. */
const BODY_METHODS: ReadonlySet<string> = new Set(['POST', 'PATCH'])

/** `RevisionResult` of `@tidings/core` (its hub API; not exported by name from the package). */
type RevisionResult = Awaited<ReturnType<ChannelHandle['edit']>>

/** The answer of the edit and delete routes: the hub's result, field by field (nothing else it may carry). */
function revisionOf(r: RevisionResult) {
  return { offset: r.offset, version: r.version, deleted: r.deleted, revision: r.revision, messageId: r.messageId, recipients: r.recipients }
}

/** A percent-encoded path segment; bad encoding (`%E0%A4%A`) is the client's error, 400 RT_007. */
function decodeParam(raw: string): string {
  try {
    return decodeURIComponent(raw)
  } catch {
    throw new RealtimeError('RT_007', 'bad percent-encoding in the path')
  }
}
