import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Authenticator, Hub, HubOptions } from '@tidings/core'
import { createRealtime, type Realtime } from '@tidings/http'
import { build } from 'esbuild'
import express from 'express'

const here = dirname(fileURLToPath(import.meta.url))

/** The client SDK as one browser module, bundled from source when the server starts (with the cluster's nodes). */
async function clientBundle(nodes: readonly string[]): Promise<string> {
  const out = await build({
    entryPoints: [join(here, 'browser-entry.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['source'],
    define: { __TIDINGS_NODES__: JSON.stringify(nodes) },
    write: false,
    minify: true,
    logLevel: 'silent',
  })
  return out.outputFiles[0]!.text
}

export interface ChatServer {
  readonly url: string
  readonly hub: Hub
  readonly realtime: Realtime
  readonly server: Server
  close(): Promise<void>
}

export const ROOMS = ['general', 'design', 'random']

/** A display name: 1 to 32 letters, digits, spaces and . _ ' - (any script), not only spaces. */
export const NAME = /^[\p{L}\p{N}][\p{L}\p{N} ._'-]{0,31}$/u

/**
 * Sign-in for the demo: `POST /login { name }` issues a token for that name (the same name is
 * the same user, in as many tabs as you like). The token is the name signed with the server's
 * secret (HMAC), so the nodes of a cluster that share the secret accept each other's tokens. A
 * real app would check a password or a session cookie here; the Tidings side stays the same: an
 * authenticator that maps a token to a user id.
 */
export function createLogins(secret: string | Buffer = randomBytes(32)) {
  const sign = (name: string) => createHmac('sha256', secret).update(name).digest()
  return {
    issue(name: string): string {
      return `${Buffer.from(name).toString('base64url')}.${sign(name).toString('base64url')}`
    },
    authenticate: (({ token }) => {
      const [name, mac] = (token ?? '').split('.').map((part) => Buffer.from(part, 'base64url'))
      if (!name || !mac || mac.length !== 32) return null
      const userId = name.toString()
      return timingSafeEqual(mac, sign(userId)) ? { userId } : null
    }) satisfies Authenticator,
  }
}

export interface ChatServerOptions {
  /** Merged into the hub's options (a cluster node gives its nodeId and the Redis ports here). */
  readonly hubOptions?: HubOptions
  /**
   * Every node of the same chat, as origins (`http://localhost:3001`, …): the page's client
   * fails over to the next one when its node goes away (see browser-entry.ts), so each node
   * accepts WebSockets from the others' pages. Empty (default): one node.
   */
  readonly nodes?: readonly string[]
  /** Signs the login tokens; nodes that share it accept each other's tokens. Default: random. */
  readonly secret?: string
}

/**
 * The demo server: Express serves the page, the client bundle and `/login`; Tidings is mounted
 * at /realtime on the in-memory hub (or on the ports given in `options.hubOptions`, e.g. Redis
 * for a cluster node), with an authenticator (tokens from `/login`).
 */
export async function startChatServer(port = Number(process.env.PORT ?? 3000), host = '127.0.0.1', options: ChatServerOptions = {}): Promise<ChatServer> {
  const logins = createLogins(options.secret)
  const nodes = options.nodes ?? []
  // A page served by one node talks to the others after a failover: their origins are allowed.
  const origins = nodes.flatMap((n) => [n, n.replace('//localhost:', '//127.0.0.1:'), n.replace('//127.0.0.1:', '//localhost:')])
  const realtime = createRealtime({
    apiKey: process.env.TIDINGS_ADMIN_KEY ?? 'demo-admin-key',
    authenticate: logins.authenticate,
    ...(nodes.length > 0 ? { edge: { allowedOrigins: origins } } : {}),
    hubOptions: {
      ...options.hubOptions,
      allowAnonymous: false,
      channels: {
        // Every room: presence (who is here, typing), history, and at-least-once delivery so
        // that the sender gets delivered/read receipts.
        'presence:room-{room}': {
          subscribe: (ctx) => ROOMS.includes(ctx.params.room!),
          publish: (ctx) => ROOMS.includes(ctx.params.room!),
          presence: true,
          history: { maxCount: 200 },
          delivery: 'at-least-once',
          receipts: true,
        },
      },
    },
  })
  const bundle = await clientBundle(nodes)

  const app = express()
  app.use(realtime.express())
  app.get('/client.js', (_req, res) => {
    res.type('text/javascript').send(bundle)
  })
  app.get('/rooms', (_req, res) => {
    res.json(ROOMS)
  })
  app.post('/login', express.json({ limit: '1kb' }), (req, res) => {
    const name = typeof req.body?.name === 'string' ? req.body.name.trim().replace(/\s+/g, ' ') : ''
    if (!NAME.test(name)) {
      res.status(400).json({ type: 'error', code: 'RT_007', message: 'Use 1 to 32 letters, digits, spaces or . _ \' - (starting with a letter or digit).' })
      return
    }
    res.json({ token: logins.issue(name), userId: name })
  })
  app.use(express.static(join(here, '..', 'public')))
  const server = createServer(app)
  realtime.upgrades(server)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, resolve)
  })
  const address = server.address()
  const actualPort = typeof address === 'object' && address ? address.port : port
  return {
    url: `http://${host === '0.0.0.0' ? 'localhost' : host}:${actualPort}`,
    hub: realtime.hub,
    realtime,
    server,
    async close() {
      await realtime.close()
      server.closeAllConnections()
      await new Promise((r) => server.close(() => r(undefined)))
    },
  }
}
