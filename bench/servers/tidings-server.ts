/**
 * Tidings: a hub served by `createRealtime({ hub }).attach(server)` (WebSocket at `/realtime`,
 * SSE at `/realtime/sse`). Channels: `public:*` (the built-in at-most-once pattern, default
 * history), and `alo:*`, at-least-once (log of 1,000). Publishing is `hub.publish(channel, 'tick', data)`.
 */
import { createHub, silentLogger } from '@tidings/core'
import { createRealtime } from '@tidings/http'
import { serveSystem } from './common.js'

export async function serveTidings(name: string): Promise<void> {
  await serveSystem(name, (server) => {
    let failures = 0
    const hub = createHub({
      logger: silentLogger,
      // Acks (every 50 messages) and, in the full run, 100 subscribes per connection stay under the frame rate limit.
      limits: { messagesPerSecond: 1000 },
      channels: { 'alo:*': { subscribe: true, publish: 'authenticated', delivery: 'at-least-once', history: { maxCount: 1000 } } },
      onError: () => {
        failures++
      },
    })
    const realtime = createRealtime({
      hub,
      // A detached SSE session (its client gone without DELETE) is closed after 2 s, not 30 s, so it cannot linger into the next measurement.
      sse: { sessionTimeoutMs: 2000 },
      // The load generator opens thousands of connections from one loopback address: no per-address limits.
      edge: { maxConnectionsPerIp: 0, maxNewConnectionsPerIpPerMinute: 0 },
    })
    realtime.attach(server)
    const report = () => {
      failures++
    }
    return {
      publish(channel, data) {
        hub.publish(channel, 'tick', data).catch(report)
      },
      subscribers: (channel) => hub.metrics().subscriptionsByChannel[channel] ?? 0,
      connections: () => hub.metrics().connections,
      extra() {
        const m = hub.metrics()
        return { redelivered: m.redelivered, dropped: m.dropped, deliveryFailed: m.deliveryFailed, errors: Object.fromEntries(Object.entries(m.errors).filter(([, v]) => v > 0)), failures }
      },
    }
  })
}
