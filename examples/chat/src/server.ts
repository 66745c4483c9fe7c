import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Authenticator, Hub } from '@tidings/core'
import { createRealtime, type Realtime } from '@tidings/http'
import { build } from 'esbuild'
import express from 'express'

const here = dirname(fileURLToPath(import.meta.url))

/** The client SDK as one browser module, bundled from source when the server starts. */
async function clientBundle(): Promise<string> {
  const out = await build({
    entryPoints: [join(here, 'browser-entry.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['source'],
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
 * Sign-in for the demo: `POST /login { name }` issues a random token for that name (the same
 * name is the same user, in as many tabs as you like). A real app would check a password or a
 * session cookie here; the Tidings side stays the same: an authenticator that maps a token to
 * a user id.
 */
export function createLogins() {
  const tokens = new Map<string, string>()
  return {
    issue(name: string): string {
      const token = randomBytes(18).toString('base64url')
      tokens.set(token, name)
      return token
    },
    authenticate: (({ token }) => {
      const name = token === undefined ? undefined : tokens.get(token)
      return name === undefined ? null : { userId: name }
    }) satisfies Authenticator,
  }
}

/**
 * The demo server: Express serves the page, the client bundle and `/login`; Tidings is mounted
 * at /realtime on the in-memory hub, with an authenticator (tokens from `/login`).
 */
export async function startChatServer(port = Number(process.env.PORT ?? 3000), host = '127.0.0.1'): Promise<ChatServer> {
  const logins = createLogins()
  const realtime = createRealtime({
    apiKey: process.env.TIDINGS_ADMIN_KEY ?? 'demo-admin-key',
    authenticate: logins.authenticate,
    hubOptions: {
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
  const bundle = await clientBundle()

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
