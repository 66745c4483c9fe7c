export { createWsTransport, type WsTransport } from './transport.js'
export type { WsTransportOptions, WsDeflateOptions } from './options.js'
export { JSON_SUBPROTOCOL } from './handshake.js'
export { type HandshakeDeadline, watchHandshakes } from './deadline.js'
