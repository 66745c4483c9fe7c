/**
 * One hub node of `pnpm check:cluster` and `pnpm bench:cluster`, run as a child process (through
 * bench/lib/ipc.ts, from source): `createHub` on the three Redis ports of @tidings/redis, served
 * over WebSocket by `createRealtime` on node:http, on a fixed loopback port (so a node started
 * again after a SIGKILL listens where its clients knew it).
 *
 * Environment: CLUSTER_NODE_ID, CLUSTER_PORT, CLUSTER_REDIS_PORT, CLUSTER_HEARTBEAT_MS (250),
 * CLUSTER_NODE_TTL_MS (2000).
 *
 * Clients authenticate with `?token=tok-<user>` (any user). Channels:
 * - `cluster:*` at-least-once, with presence and a 200,000-message log (the check's channel);
 * - `bench:*` at-most-once, with a log (offsets), for the bench.
 *
 * IPC requests: `presence { channel }` (the cluster-wide snapshot), `metrics`, `health`,
 * `close` (hub.close(), then the process exits). Sent unasked: `{ type: 'event', kind:
 * 'delivery:failed', ... }` for every `delivery:failed` event of this hub.
 */
import { createServer } from 'node:http'
import { createHub, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import { serveRequests } from '../bench/lib/ipc.js'
import { createRedisBroker, createRedisPresenceStore, createRedisStore } from '@tidings/redis'
import { Redis } from 'ioredis'

const env = process.env
const nodeId = env.CLUSTER_NODE_ID ?? 'node'
const port = Number(env.CLUSTER_PORT)
const redisPort = Number(env.CLUSTER_REDIS_PORT)

// As an app would: reconnect every 100 ms, keep commands queued while Redis is away (ioredis fails
// them after 20 retries), and listen for errors.
const redis = new Redis(redisPort, '127.0.0.1', { retryStrategy: () => 100 })
redis.on('error', () => undefined)

const errors = new Map<string, number>()
const hub = createHub({
  nodeId,
  logger: silentLogger,
  authenticate: (req) => (req.token?.startsWith('tok-') ? { userId: req.token.slice(4) } : null),
  broker: createRedisBroker({ client: redis }),
  store: createRedisStore({ client: redis }),
  presenceStore: createRedisPresenceStore({ client: redis }),
  nodes: { heartbeatMs: Number(env.CLUSTER_HEARTBEAT_MS ?? 250), nodeTtlMs: Number(env.CLUSTER_NODE_TTL_MS ?? 2000) },
  channels: {
    'cluster:*': { subscribe: 'authenticated', publish: 'authenticated', delivery: 'at-least-once', presence: true, history: { maxCount: 200_000, maxAgeMs: 60 * 60_000, maxBytes: 256 * 1024 * 1024 } },
    'bench:*': { subscribe: 'authenticated', publish: 'authenticated', history: { maxCount: 10_000, maxAgeMs: 10 * 60_000 } },
  },
  limits: { messagesPerSecond: 100_000 },
  delivery: { ackTimeoutMs: 1000, maxAttempts: 30, maxBackoffMs: 5000 },
  onError: (_err, { stage }) => errors.set(stage, (errors.get(stage) ?? 0) + 1),
})
hub.on('delivery:failed', (e) => process.send?.({ type: 'event', kind: 'delivery:failed', nodeId, ...e }))

const realtime = createRealtime({ hub, edge: { maxConnectionsPerIp: 100_000, maxNewConnectionsPerIpPerMinute: 10_000_000 } })
const server = createServer()
realtime.attach(server)
await new Promise<void>((resolve, reject) => {
  server.once('error', reject)
  server.listen(port, '127.0.0.1', resolve)
})

serveRequests(async (req) => {
  switch (req.cmd) {
    case 'presence': {
      const snapshot = await hub.presence.get(req.channel as string)
      return { users: snapshot.users.map((u) => ({ id: u.id, connections: u.connections })), count: snapshot.count }
    }
    case 'metrics': {
      const m = hub.metrics()
      return {
        connections: m.connections, published: m.published, redelivered: m.redelivered, deliveryFailed: m.deliveryFailed,
        messagesOut: m.messagesOut, errors: Object.fromEntries(Object.entries(m.errors).filter(([, v]) => v > 0)), onError: Object.fromEntries(errors),
        cpu: process.cpuUsage(),
      }
    }
    case 'health':
      return { ...hub.health() }
    case 'close': {
      await hub.close()
      server.close()
      redis.disconnect()
      setTimeout(() => process.exit(0), 50)
      return {}
    }
    default:
      throw new Error(`unknown command ${req.cmd}`)
  }
})
process.send?.({ type: 'ready', nodeId, port, pid: process.pid })
