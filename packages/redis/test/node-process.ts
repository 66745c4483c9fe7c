/**
 * One hub node in its own process, for processes.test.ts: the three Redis ports, the WebSocket
 * transport and the admin API (createRealtime) on a free port. Configured by the environment
 * (REDIS_PORT, NODE_ID, API_KEY, PREFIX); prints `{"port":<n>}` once listening. A token is the user id.
 * Ends when its stdin closes (the test run died) or on SIGTERM.
 */
import { createServer } from 'node:http'
import { silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import { Redis } from 'ioredis'
import { createRedisBroker, createRedisPresenceStore, createRedisStore } from '../src/index.js'

const redis = new Redis(Number(process.env.REDIS_PORT), '127.0.0.1', { maxRetriesPerRequest: null })
redis.on('error', () => undefined)
const prefix = process.env.PREFIX ?? 'processes:'
const realtime = createRealtime({
  apiKey: process.env.API_KEY!,
  authenticate: ({ token }) => (token ? { userId: token } : null),
  sse: false,
  longPoll: false,
  hubOptions: {
    nodeId: process.env.NODE_ID,
    logger: silentLogger,
    allowAnonymous: false,
    broker: createRedisBroker({ client: redis, prefix }),
    store: createRedisStore({ client: redis, prefix }),
    presenceStore: createRedisPresenceStore({ client: redis, prefix }),
    // A node silent for 1 s is dead (the default is 20 s).
    nodes: { heartbeatMs: 200, nodeTtlMs: 1_000 },
    limits: { maxConnectionsPerUser: 2 },
    channels: { 'room:*': { presence: true, history: { maxCount: 1_000 }, delivery: 'at-least-once' } },
  },
})
const server = createServer((_req, res) => {
  res.statusCode = 404
  res.end()
})
realtime.attach(server)
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`)
})

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  setTimeout(() => process.exit(0), 2_000).unref()
  await realtime.close().catch(() => undefined)
  server.closeAllConnections()
  redis.disconnect()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.stdin.on('close', stop)
process.stdin.resume()
