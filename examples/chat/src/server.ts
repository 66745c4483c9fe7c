import { createServer, type Server } from 'node:http'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createHub, type Hub, type Identity } from '@tidings/core'
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

const ROOMS = ['general', 'design', 'random']

/**
 * The demo server: Express serves the page and the client bundle; Tidings is mounted at
 * /realtime on the in-memory hub. Anyone may pick a name (the token is `demo:<name>`).
 */
export async function startChatServer(port = Number(process.env.PORT ?? 3000), host = '127.0.0.1'): Promise<ChatServer> {
  const hub = createHub({
    authenticate: ({ token }) => {
      const m = /^demo:([A-Za-z0-9_-]{1,24})$/.exec(token ?? '')
      return m ? ({ userId: m[1] } satisfies Identity) : null
    },
    allowAnonymous: false,
    channels: {
      // Every room is a presence channel with history: members, typing and the last messages.
      'presence:room-{room}': { subscribe: (ctx) => ROOMS.includes(ctx.params.room!), publish: 'authenticated', presence: true, history: { maxCount: 200 } },
    },
  })
  const realtime = createRealtime({ hub, apiKey: process.env.TIDINGS_ADMIN_KEY ?? 'demo-admin-key' })
  const bundle = await clientBundle()

  const app = express()
  app.use(realtime.express())
  app.get('/client.js', (_req, res) => {
    res.type('text/javascript').send(bundle)
  })
  app.get('/rooms', (_req, res) => {
    res.json(ROOMS)
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
    hub,
    realtime,
    server,
    async close() {
      await realtime.close()
      await hub.close()
      server.closeAllConnections()
      await new Promise((r) => server.close(() => r(undefined)))
    },
  }
}
