export { createWsTransport, type WsTransport } from './transport.js'
export type { WsTransportOptions, WsDeflateOptions } from './options.js'
export { JSON_SUBPROTOCOL } from './handshake.js'
export { type HandshakeDeadline, watchHandshakes } from './deadline.js'
/** The edge guard, shared by the transports of one server (re-exported from @tidings/http-kit for @tidings/http). */
export { createEdgeGuard, type EdgeGuard, type EdgeOptions } from '@tidings/http-kit'
