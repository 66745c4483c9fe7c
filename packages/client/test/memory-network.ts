import type { Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { afterEach } from 'vitest'
import { type ClientFrame, type ConnectionHandle, type Hub, type ServerFrame, type Session, createHub, silentLogger, type HubOptions } from '@tidings/core'
import type { ClientTransport, Credentials, TransportFactory, TransportHandlers } from '../src/index.js'
import { Realtime, type RealtimeOptions } from '../src/index.js'

const decoder = new TextDecoder()

/**
 * A ClientTransport over a core hub in the same process: each link is a hub `Session`
 * (`hub.connect(session, { token })`), frames cross as JSON text on microtasks. Links of a
 * transport name can be made to fail (`blocked`) or never answer (`hang`), and be cut (`kill`).
 */
export class MemoryLink implements ClientTransport {
  handle: ConnectionHandle | undefined
  closed = false
  /** Frames the client sent, in order. */
  readonly sent: ClientFrame[] = []
  /** Frames from the hub, as delivered to the client. */
  readonly received: ServerFrame[] = []
  /** Drop server frames that match (simulates a lost answer). */
  dropInbound: ((frame: ServerFrame) => boolean) | undefined
  /** Deliver every server `message` frame twice. */
  duplicateMessages = false
  private handlers: TransportHandlers | undefined
  private outQueue: string[] = []

  constructor(
    readonly name: string,
    private readonly net: MemoryNetwork,
  ) {}

  connect(_url: string, credentials: Credentials, handlers: TransportHandlers): void {
    this.handlers = handlers
    if (this.net.blocked.has(this.name)) {
      queueMicrotask(() => this.finish(1006, 'blocked'))
      return
    }
    if (this.net.hang.has(this.name)) return
    this.credentials = credentials
    queueMicrotask(() => {
      if (this.closed) return
      handlers.open()
      this.startSession()
    })
  }

  private credentials: Credentials = {}
  private generation = 0

  /** A hub connection behind this link (a new one after `renew`). */
  private startSession(): void {
    const generation = ++this.generation
    const session: Session = {
      transport: this.name,
      headers: {},
      send: (out) => {
        if (this.closed || generation !== this.generation) return true
        const frame = JSON.parse(typeof out.data === 'string' ? out.data : decoder.decode(out.data)) as ServerFrame
        queueMicrotask(() => this.fromServer(frame))
        return true
      },
      bufferedAmount: () => 0,
      close: (code, reason) => {
        // After the frames already on their way.
        if (generation === this.generation) queueMicrotask(() => this.finish(code, reason))
      },
    }
    this.net.hub
      .connect(session, { token: this.credentials.token, apiKey: this.credentials.apiKey })
      .then((handle) => {
        this.handle = handle
        if (this.closed) return handle.closed(1000, 'closed while connecting')
        const queued = this.outQueue
        this.outQueue = []
        for (const data of queued) handle.receive(data)
      })
      .catch(() => {})
  }

  /**
   * The link stays but its hub connection is replaced by a new one (an SSE stream resumed after
   * its session expired): the client sees a second `connected` frame on the same transport.
   */
  renew(): void {
    const old = this.handle
    this.handle = undefined
    this.generation++
    old?.closed(1006, 'session expired')
    this.startSession()
  }

  private fromServer(frame: ServerFrame): void {
    if (this.closed) return
    if (this.dropInbound?.(frame)) return
    this.received.push(frame)
    this.handlers?.frame(frame)
    if (this.duplicateMessages && frame.type === 'message' && !this.closed) this.handlers?.frame(frame)
  }

  send(frame: ClientFrame): void {
    if (this.closed) return
    this.sent.push(frame)
    const data = JSON.stringify(frame)
    queueMicrotask(() => {
      if (this.closed) return
      if (this.handle) this.handle.receive(data)
      else this.outQueue.push(data)
    })
  }

  close(code = 1000, reason = 'client closed'): void {
    if (this.closed) return
    this.closed = true
    this.handle?.closed(code, reason)
  }

  /** A frame as if the hub had sent it (e.g. `auth:expiring` from a hub that does not send it yet). */
  inject(frame: ServerFrame): void {
    this.fromServer(frame)
  }

  /** The hub closes the connection with this code (e.g. 4001 when credentials expired). */
  closeFromServer(code: number, reason: string): void {
    this.finish(code, reason)
  }

  /** The network drops: the hub sees 1006, the client a close without code. */
  kill(): void {
    if (this.closed) return
    this.handle?.closed(1006, 'connection lost')
    this.finish(1006, 'connection lost')
  }

  private finish(code: number, reason: string): void {
    if (this.closed) return
    this.closed = true
    this.handle?.closed(code, reason)
    this.handlers?.close({ code, reason })
  }
}

export class MemoryNetwork {
  readonly hub: Hub
  readonly links: MemoryLink[] = []
  readonly blocked = new Set<string>()
  readonly hang = new Set<string>()

  constructor(options: HubOptions = {}) {
    this.hub = createHub({ logger: silentLogger, ...options })
  }

  /** A transport factory that impersonates a transport name. */
  transport(name: string): TransportFactory {
    return {
      name,
      create: () => {
        const link = new MemoryLink(name, this)
        this.links.push(link)
        return link
      },
    }
  }

  /** The links that reached the hub and are still open. */
  get open(): MemoryLink[] {
    return this.links.filter((l) => !l.closed && l.handle)
  }

  last(): MemoryLink {
    const link = this.links.at(-1)
    if (!link) throw new Error('no link yet')
    return link
  }

  /** A client on this network; its transports are memory ones named as given. */
  client(options: Partial<RealtimeOptions> & { names?: string[] } = {}): Realtime {
    const { names = ['websocket'], ...rest } = options
    return new Realtime({
      url: 'memory://hub',
      transports: names.map((n) => this.transport(n)),
      reconnectDelay: 5,
      maxReconnectDelay: 20,
      ackIntervalMs: 10,
      heartbeatIntervalMs: 0,
      ...rest,
    })
  }

  close(): Promise<void> {
    return this.hub.close()
  }
}

/** Wait until `check` is true (polling), or fail after `timeoutMs`. */
export async function until(check: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const start = Date.now()
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 2))
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Tokens `user:<id>` authenticate as that user; anything else is refused. */
export const userTokens = { authenticate: async (r: { token?: string | undefined }) => (r.token?.startsWith('user:') ? { userId: r.token.slice(5) } : null) }

/**
 * Registers the clean-up every test file needs: after each test, disconnect the clients it
 * tracked and close its network. Returns `track`, which registers a client and returns it.
 */
export function trackClients(network: () => MemoryNetwork | undefined): <T extends Realtime>(rt: T) => T {
  const clients: Realtime[] = []
  afterEach(async () => {
    for (const c of clients.splice(0)) c.disconnect()
    await network()?.close()
  })
  return (rt) => (clients.push(rt), rt)
}

/**
 * A real server for the suites that run over sockets: listens on loopback, tracks its TCP
 * connections, and gives the base URL, `cut()` (destroy every connection from the server side:
 * sockets, event streams, polls) and `close()` (`shutdown`, then every connection, then the server).
 */
export async function listenTracked(server: Server, shutdown: () => Promise<unknown>): Promise<{ url: string; cut(): void; close(): Promise<void> }> {
  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as AddressInfo
  const cut = () => {
    for (const s of sockets) s.destroy()
  }
  return {
    url: `http://127.0.0.1:${port}/realtime`,
    cut,
    async close() {
      await shutdown()
      cut()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}
