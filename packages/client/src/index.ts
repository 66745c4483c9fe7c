export { Realtime } from './realtime.js'
export type { RealtimeOptions, RealtimeEvents, ConnectionState, ChannelSummary } from './options.js'
export {
  Channel,
  type ChannelOptions,
  type ChannelEvents,
  type ChannelState,
  type SendOptions,
  type SendResult,
  type HistoryPage,
  type Revision,
  type RevisionResult,
  type SearchOptions,
  type EditOptions,
  applyRevisions,
  type ChannelAuth,
  type ChannelAuthContext,
  type ChannelAuthResult,
} from './channel.js'
export { Database, LiveQueryRef, and, or, type QuerySnapshot, type DocChange, type SnapshotListener, type SnapshotErrorListener } from './database.js'
export type { ChannelKey, ChannelEncryption, DecryptFailure, WebCryptoKey } from './e2e.js'
export { backoffDelay, type BackoffOptions } from './backoff.js'
export { WebSocketTransport, SUBPROTOCOL } from './transports/websocket.js'
export { SseTransport } from './transports/sse.js'
export { LongPollTransport } from './transports/long-poll.js'
export { SseParser, type SseEvent } from './transports/sse-parser.js'
export type {
  ClientTransport,
  TransportFactory,
  TransportHandlers,
  TransportCloseInfo,
  TransportName,
  TransportOptions,
  Credentials,
  WebSocketLike,
  WebSocketConstructorLike,
  EventSourceLike,
  EventSourceConstructorLike,
  FetchLike,
  FetchInit,
  FetchResponseLike,
} from './transports/types.js'
export { RealtimeError, isRealtimeError, type ErrorCode, type MessageFrame, type PresenceMember, type PresenceSnapshot, type StreamPosition, type FilterNode, type LiveQuery, type LiveWhere, type LiveCondition, type LiveScalar, type LiveDoc, type LiveChange, type LiveQueryOperator } from '@tidings/protocol'
