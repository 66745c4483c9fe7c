import type { ClientFrame } from '@tidings/protocol'
import { type ClientTransport, type Credentials, type TransportHandlers, type TransportOptions, type WebSocketConstructorLike, type WebSocketLike, endpoint, parseServerFrame } from './types.js'

/** The subprotocol of the wire protocol version 1 with the JSON codec. */
export const SUBPROTOCOL = 'tidings.v1.json'

const OPEN = 1
const decoder = /* @__PURE__ */ new TextDecoder()

/**
 * WebSocket transport: `GET <url>` upgraded, subprotocol `tidings.v1.json`, one frame per text
 * message. Credentials go in the query (`?token=`, `?apiKey=`): browsers cannot set headers on a
 * WebSocket handshake. In Node 20 (no global WebSocket) the `ws` package is imported when
 * installed; otherwise pass an implementation as the `WebSocket` option.
 */
export class WebSocketTransport implements ClientTransport {
  readonly name = 'websocket'
  private socket: WebSocketLike | undefined
  private handlers: TransportHandlers | undefined
  private done = false

  constructor(private readonly options: TransportOptions) {}

  connect(url: string, credentials: Credentials, handlers: TransportHandlers): void {
    this.handlers = handlers
    const Ctor = this.options.WebSocket ?? (globalThis as { WebSocket?: TransportOptions['WebSocket'] }).WebSocket
    if (Ctor) return this.open(Ctor, url, credentials, handlers)
    // Node 20 has no global WebSocket: use the `ws` package when it is installed.
    loadNodeWebSocket().then(
      (Loaded) => {
        if (this.done) return
        if (Loaded) return this.open(Loaded, url, credentials, handlers)
        const reason = 'no WebSocket implementation: install the ws package (npm i ws) or pass one as the WebSocket option'
        this.options.warn?.(reason)
        this.finish(1006, reason)
      },
      () => this.finish(1006, 'could not load the ws package'),
    )
  }

  private open(Ctor: WebSocketConstructorLike, url: string, credentials: Credentials, handlers: TransportHandlers): void {
    const target = endpoint(url, '', { token: credentials.token, apiKey: credentials.apiKey })
    if (target.protocol === 'http:') target.protocol = 'ws:'
    else if (target.protocol === 'https:') target.protocol = 'wss:'
    let socket: WebSocketLike
    try {
      socket = new Ctor(target.toString(), SUBPROTOCOL)
    } catch (err) {
      return this.fail(1006, err instanceof Error ? err.message : 'could not open a WebSocket')
    }
    this.socket = socket
    try {
      socket.binaryType = 'arraybuffer'
    } catch {
      // read-only in some implementations
    }
    socket.onopen = () => {
      if (!this.done) handlers.open()
    }
    socket.onmessage = (event: { data: unknown }) => {
      if (this.done) return
      const text = toText(event.data)
      const frame = text === undefined ? undefined : parseServerFrame(text)
      if (frame) handlers.frame(frame)
    }
    socket.onclose = (event: { code?: number; reason?: string }) => this.finish(event.code ?? 1006, event.reason ?? '')
    // An error is always followed by a close event.
    socket.onerror = () => {}
  }

  send(frame: ClientFrame): void {
    const socket = this.socket
    if (this.done || !socket || socket.readyState !== OPEN) return
    try {
      socket.send(JSON.stringify(frame))
    } catch {
      // the close event follows
    }
  }

  close(code = 1000, reason = 'client closed'): void {
    if (this.done) return
    this.done = true
    const socket = this.socket
    if (!socket) return
    // No-ops rather than null: `ws` throws on an 'error' event without a listener, which it
    // emits when a socket is closed before its handshake finished.
    const noop = () => {}
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = noop
    try {
      socket.close(code, reason)
    } catch {
      // already closed
    }
  }

  private finish(code: number, reason: string): void {
    if (this.done) return
    this.done = true
    this.handlers?.close({ code, reason })
  }

  private fail(code: number, reason: string): void {
    queueMicrotask(() => this.finish(code, reason))
  }
}

function toText(data: unknown): string | undefined {
  if (typeof data === 'string') return data
  if (data instanceof ArrayBuffer) return decoder.decode(data)
  if (ArrayBuffer.isView(data)) return decoder.decode(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
  return undefined
}

let nodeWebSocket: Promise<WebSocketConstructorLike | undefined> | undefined

/**
 * The `ws` package's WebSocket, imported on first use (outside browsers only), or undefined when
 * it is not installed. The specifier is a variable so that bundlers do not try to bundle `ws`.
 */
export function loadNodeWebSocket(): Promise<WebSocketConstructorLike | undefined> {
  const isNode = typeof (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node === 'string'
  if (!isNode) return Promise.resolve(undefined)
  const specifier = 'ws'
  nodeWebSocket ??= import(/* @vite-ignore */ /* webpackIgnore: true */ specifier).then(
    (m: { default?: unknown; WebSocket?: unknown }) => (typeof m.WebSocket === 'function' ? m.WebSocket : m.default) as WebSocketConstructorLike | undefined,
    () => undefined,
  )
  return nodeWebSocket
}
