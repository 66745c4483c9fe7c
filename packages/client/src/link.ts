import type { RealtimeError, ServerFrame } from '@tidings/protocol'
import type { RealtimeOptions } from './options.js'
import { LongPollTransport } from './transports/long-poll.js'
import { SseTransport } from './transports/sse.js'
import type { ClientTransport, Credentials, TransportCloseInfo, TransportFactory, TransportName, TransportOptions } from './transports/types.js'
import { WebSocketTransport } from './transports/websocket.js'

/** One transport opened toward the hub: an attempt, an upgrade probe, or the connection in use. */
export interface Link {
  readonly transport: ClientTransport
  readonly name: string
  /** Its transport's place in the order of preference. */
  readonly index: number
  readonly probe: boolean
  /** The token it was opened with. */
  readonly token: string | undefined
  connected: boolean
  refusal: RealtimeError | undefined
  timer: ReturnType<typeof setTimeout> | undefined
}

/** What a link reports: every frame, and its close (also a connect timeout, or a transport that failed to start). */
export interface LinkEvents {
  frame(link: Link, frame: ServerFrame): void
  closed(link: Link, info: TransportCloseInfo): void
}

const BUILT_IN: Record<TransportName, (o: TransportOptions) => ClientTransport> = {
  websocket: (o) => new WebSocketTransport(o),
  sse: (o) => new SseTransport(o),
  'long-poll': (o) => new LongPollTransport(o),
}

type LinkOptions = Pick<RealtimeOptions, 'url' | 'transports' | 'WebSocket' | 'EventSource' | 'fetch' | 'withCredentials' | 'httpTimeoutMs' | 'connectTimeoutMs'>

/** The transports of a client in order of preference, and how a link is opened over one of them. */
export class Transports {
  private readonly factories: TransportFactory[]
  private readonly transportOptions: TransportOptions

  /** Throws a `TypeError` when `transports` names no usable transport. */
  constructor(
    private readonly options: LinkOptions,
    warn: (message: string) => void,
    private readonly events: LinkEvents,
  ) {
    const names = options.transports ?? ['websocket', 'sse', 'long-poll']
    this.factories = names.map((t) => (typeof t === 'string' ? { name: t, create: BUILT_IN[t] } : t))
    if (this.factories.length === 0 || this.factories.some((f) => typeof f.create !== 'function')) {
      throw new TypeError(`transports: expected names among ${Object.keys(BUILT_IN).join(', ')} or { name, create } factories`)
    }
    this.transportOptions = {
      WebSocket: options.WebSocket,
      EventSource: options.EventSource,
      fetch: options.fetch,
      withCredentials: options.withCredentials,
      requestTimeoutMs: options.httpTimeoutMs,
      warn,
    }
  }

  get count(): number {
    return this.factories.length
  }

  name(index: number): string {
    return this.factories[index]!.name
  }

  /** Open a link over the transport at `index`; a link with no `connected` frame within `connectTimeoutMs` closes. */
  open(index: number, credentials: Credentials, probe: boolean): Link {
    const factory = this.factories[index]!
    let transport: ClientTransport
    try {
      transport = factory.create(this.transportOptions)
    } catch (err) {
      transport = failedTransport(factory.name, err)
    }
    const link: Link = { transport, name: factory.name, index, probe, token: credentials.token, connected: false, refusal: undefined, timer: undefined }
    const timeout = this.options.connectTimeoutMs ?? 10_000
    link.timer = setTimeout(() => {
      transport.close(1000, 'connect timeout')
      this.events.closed(link, { code: 1006, reason: `${factory.name}: no connection within ${timeout} ms` })
    }, timeout)
    try {
      transport.connect(this.options.url, credentials, {
        open: () => {},
        frame: (frame) => this.events.frame(link, frame),
        close: (info) => this.events.closed(link, info),
      })
    } catch (err) {
      queueMicrotask(() => this.events.closed(link, { code: 1006, reason: err instanceof Error ? err.message : String(err) }))
    }
    return link
  }
}

/** Stands in for a transport whose factory threw: it fails to open. */
function failedTransport(name: string, err: unknown): ClientTransport {
  return {
    name,
    connect: (_url, _credentials, handlers) => {
      queueMicrotask(() => handlers.close({ code: 1006, reason: err instanceof Error ? err.message : String(err) }))
    },
    send: () => {},
    close: () => {},
  }
}
