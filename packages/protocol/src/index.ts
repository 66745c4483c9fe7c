/**
 * `@tidings/protocol`: what crosses the wire between a Tidings hub and its clients, and what a
 * client needs to speak it. No engine, no ports, no `node:` imports; zod is its only dependency.
 * `@tidings/core` (the hub) and `@tidings/client` both build on it.
 *
 * Modules, in dependency order (no cycles):
 *   bytes    WireData, UTF-8 / wire byte lengths
 *   errors   ErrorCode, RealtimeError, CloseCode, clampCloseReason        (bytes)
 *   filter   filter trees: schema, limits, roots, compileFilter           (zod)
 *   protocol frames v1 as zod schemas, parseClientFrame                  (zod, errors, filter)
 *   codec    Codec, jsonCodec, jsonWithNumber                             (bytes, protocol types)
 *   budget   the decode budget: depth scans, decodeWithin, parseJsonWithin (bytes, codec types)
 *   receiver createReceiver: dedup, hold-until-prev, cumulative acks      (protocol types)
 *   envelope the end-to-end encrypted envelope: shape check, additional data
 *   live-result live query results: diffs, applying changes, the client's step (no zod)
 *   live-query live query shape (zod), normal form and key                 (live-result)
 */
export { type WireData, wireLength, utf8Length } from './bytes.js'
export { ErrorCode, ERROR_MESSAGES, ALL_ERROR_CODES, RealtimeError, isRealtimeError, CloseCode, clampCloseReason } from './errors.js'
export {
  PROTOCOL_VERSION,
  channelNameSchema,
  eventNameSchema,
  prioritySchema,
  type Priority,
  streamPositionSchema,
  type StreamPosition,
  clientFrameSchema,
  type ClientFrame,
  type ClientFrameType,
  type ClientFrameOf,
  presenceMemberSchema,
  type PresenceMember,
  type PresenceSnapshot,
  messageFrameSchema,
  serverFrameSchema,
  type ServerFrame,
  type ServerFrameType,
  type ServerFrameOf,
  type MessageFrame,
  type RequestId,
  parseClientFrame,
} from './protocol.js'
export { type Codec, jsonCodec, jsonWithNumber } from './codec.js'
export { DEFAULT_MAX_DEPTH, jsonDepth, valueDepth, decodeWithin, parseJsonWithin, peekRequestId, type Decoded } from './budget.js'
export {
  type FilterNode,
  type FilterOp,
  type FilterPredicate,
  type FilterRoots,
  type FilterTarget,
  FilterError,
  FILTER_LIMITS,
  MESSAGE_FILTER_ROOTS,
  RECIPIENT_FILTER_ROOTS,
  compileFilter,
  filterSchema,
} from './filter.js'
export { createReceiver, type Receiver, type ReceiverOptions } from './receiver.js'
export { type EncryptedEnvelope, isEncryptedEnvelope, envelopeAad } from './envelope.js'
export {
  LIVE_QUERY_LIMITS,
  LIVE_QUERY_OPERATORS,
  type LiveQueryOperator,
  type LiveFieldCapability,
  type LiveScalar,
  type LiveCondition,
  type LiveWhere,
  type LiveQuery,
  type NormalizedLiveQuery,
  liveQuerySchema,
  liveChangeSchema,
  liveDocSchema,
  liveResumeSchema,
  normalizeLiveQuery,
  liveQueryKey,
  parseLiveQuery,
  conditionsOf,
  isCondition,
} from './live-query.js'
export {
  type LiveDoc,
  type LiveChange,
  type LiveResume,
  type LiveResultState,
  type LiveResultFrame,
  type LiveResultStep,
  diffLiveResults,
  applyLiveChanges,
  applyLiveFrame,
  resumeOf,
} from './live-result.js'
