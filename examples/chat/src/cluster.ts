import type { HubOptions } from '@tidings/core'
import { createRedisBroker, createRedisPresenceStore, createRedisStore } from '@tidings/redis'
import { Redis } from 'ioredis'
import type { ChatServerOptions } from './server.js'

/**
 * One node of the chat on Redis (`npm run demo:cluster`), from the environment: `REDIS_URL`,
 * `NODE_ID`, `TIDINGS_NODES` (every node's origin, comma-separated: where the page fails over
 * to) and `TIDINGS_DEMO_SECRET` (shared, so a token from one node is good on every node).
 * Everything else is the single-node demo, unchanged.
 */
export function clusterNode(env: NodeJS.ProcessEnv): { nodeId: string; options: ChatServerOptions; close(): Promise<void> } {
  const redis = new Redis(env.REDIS_URL!, { maxRetriesPerRequest: null })
  let down = false
  redis.on('error', (err) => {
    if (!down) console.error(`redis: ${err.message}`)
    down = true
  })
  redis.on('ready', () => (down = false))
  const nodeId = env.NODE_ID ?? `node-${process.pid}`
  const hubOptions: HubOptions = {
    nodeId,
    broker: createRedisBroker({ client: redis }),
    store: createRedisStore({ client: redis }),
    presenceStore: createRedisPresenceStore({ client: redis }),
    // A node that dies (kill -9) has its members removed within 5 s, not the default 20 s.
    nodes: { heartbeatMs: 1_000, nodeTtlMs: 5_000 },
  }
  return {
    nodeId,
    options: { hubOptions, nodes: (env.TIDINGS_NODES ?? '').split(',').filter(Boolean), ...(env.TIDINGS_DEMO_SECRET ? { secret: env.TIDINGS_DEMO_SECRET } : {}) },
    async close() {
      await redis.quit().catch(() => redis.disconnect())
    },
  }
}
