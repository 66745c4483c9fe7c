// What the page imports from /client.js: the client SDK, with fail-over between the nodes of a
// cluster demo (`npm run demo:cluster`). On one node it is the SDK's Realtime, unchanged.
import { Realtime as Client, type RealtimeOptions, type WebSocketConstructorLike } from '@tidings/client'

/** Every node's origin on a cluster (empty on one node): set by the server when it bundles this file. */
declare const __TIDINGS_NODES__: readonly string[]

interface BrowserGlobals {
  readonly location: { readonly origin: string; readonly hostname: string }
  readonly WebSocket: new (url: string, protocols?: string | string[]) => {
    addEventListener(type: 'open' | 'close', listener: (event: { code?: number }) => void): void
  }
}

const nodes: readonly string[] = typeof __TIDINGS_NODES__ === 'undefined' ? [] : __TIDINGS_NODES__
let node = '' // host of the node the current WebSocket went to

/**
 * The client opens each WebSocket through this constructor: it goes to this page's node first,
 * then, once a node went away (or would not open), to the next one. Connections resume from
 * their offsets on whichever node they reach: every node shares the Redis store.
 */
function failover(options: RealtimeOptions): RealtimeOptions {
  if (nodes.length === 0) return options
  const { location, WebSocket: Native } = globalThis as unknown as BrowserGlobals
  // On the page's host name (localhost or 127.0.0.1), this page's node first.
  const hosts = [...new Set([location.origin, ...nodes].map((n) => Object.assign(new URL(n), { hostname: location.hostname }).host))]
  let at = 0
  class FailoverWebSocket extends Native {
    constructor(url: string, protocols?: string | string[]) {
      const target = new URL(url)
      const mine = at
      target.host = hosts[mine]!
      super(target.toString(), protocols)
      let opened = false
      this.addEventListener('open', () => {
        opened = true
        node = target.host
      })
      // Gone (1001 going away, 1006 lost, 1012 restart) or never opened: next time, the next node.
      this.addEventListener('close', ({ code }) => {
        if ((!opened || code === 1001 || code === 1006 || code === 1012) && at === mine) at = (at + 1) % hosts.length
      })
    }
  }
  // Tokens are signed with the cluster's shared secret, so the last one is good on every node:
  // kept for when this page's own node (which `/login` goes to) is the one that went away.
  let token: string | undefined
  const auth = options.auth
  return {
    ...options,
    transports: options.transports ?? ['websocket'],
    WebSocket: FailoverWebSocket as unknown as WebSocketConstructorLike,
    auth:
      typeof auth === 'function'
        ? async () => {
            try {
              return (token = await auth())
            } catch (err) {
              if (token !== undefined) return token
              throw err
            }
          }
        : auth,
  }
}

export class Realtime extends Client {
  constructor(options: RealtimeOptions) {
    super(failover(options))
    // Which node this page is on, next to the transport in the page's status line.
    if (nodes.length > 0) this.on('state', (state) => state === 'connected' && this.transport !== undefined && (this.transport = `${this.transport} · ${node}`))
  }
}
