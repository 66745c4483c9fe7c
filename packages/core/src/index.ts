// The wire: errors, frames, codecs, the decode budget, filters and the receiver live in
// @tidings/protocol (shared with @tidings/client); core re-exports them unchanged.
export {
  ErrorCode,
  ERROR_MESSAGES,
  ALL_ERROR_CODES,
  RealtimeError,
  isRealtimeError,
  CloseCode,
  clampCloseReason,
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
  type Codec,
  type WireData,
  jsonCodec,
  wireLength,
  utf8Length,
  DEFAULT_MAX_DEPTH,
  jsonDepth,
  valueDepth,
  decodeWithin,
  parseJsonWithin,
  peekRequestId,
  type Decoded,
  type FilterNode,
  type FilterOp,
  type FilterPredicate,
  type FilterRoots,
  FilterError,
  FILTER_LIMITS,
  MESSAGE_FILTER_ROOTS,
  RECIPIENT_FILTER_ROOTS,
  compileFilter,
  filterSchema,
  createReceiver,
  type Receiver,
  type ReceiverOptions,
  type EncryptedEnvelope,
  isEncryptedEnvelope,
  envelopeAad,
} from '@tidings/protocol'

// Ports
export { Outbound, type Session, type ConnectionHandle } from './ports/session.js'
export type { Broker, BrokerHealth, BrokerHooks, ClusterMessage, ClusterQuery, Dispatch, DispatchTarget, Reply, Request } from './ports/broker.js'
export type { MessageStore, StoredMessage, Retention, AppendOptions, AppendResult, ReadOptions, ReadResult, ConsumerCursor, Revises, Revision, ReviseResult, ConsumerChannel, UserErasure, AsyncMessageStore } from './ports/store.js'
export type { PresenceStore, PresenceEntry, PresenceChange } from './ports/presence.js'
export type { LimitStore } from './ports/limits.js'
export { type Identity, type AuthRequest, type Authenticator, type AuthorizeContext, type ChannelAction, type ChannelRule, type ChannelGrant, createApiKeyAuthenticator, createTokenAuthenticator, credentialsFromRequest } from './ports/auth.js'
export { type Clock, type TimerHandle, systemClock } from './ports/clock.js'
export { type Logger, type LogLevel, createConsoleLogger, silentLogger } from './ports/logger.js'

// In-memory implementations
export { createMemoryBroker, createMemoryBus, type MemoryBus } from './memory/broker.js'
export { createMemoryStore, type MemoryMessageStore, type MemoryStoreOptions, type MemoryStoreStats } from './memory/store.js'
export { createMemoryPresenceStore } from './memory/presence.js'
export { createMemoryLimitStore, type MemoryLimitStoreOptions } from './memory/limits.js'
export { createManualClock, type ManualClock } from './memory/clock.js'
export { createMemoryTransport, MemoryClient, type Faults, type MemoryConnectOptions, type MemoryTransport } from './memory/transport.js'

// The hub
export {
  createHub,
  type Hub,
  type ConnectOptions,
  type PublishOptions,
  type PublishResult,
  type BroadcastOptions,
  type BroadcastResult,
  type UserPreferences,
  type ChannelInfo,
  type ChannelHandle,
  type RevisionOptions,
  type RevisionResult,
  type Route,
  type AckRecipient,
  storedToFrame,
} from './hub/hub.js'
export type { HubOptions, HubLimits, PresenceOptions, DeliveryOptions, NotificationOptions, CredentialOptions } from './hub/options.js'
export type { HubEvents } from './hub/events.js'
export { type ChannelOptions, type ChannelRules, type EventSchema, BUILT_IN_CHANNELS } from './hub/channels.js'
export type { ConnectionInfo } from './hub/connection.js'
export type { Rooms, RoomInfo, RoomOptions, RoomAccess } from './hub/rooms.js'
export type { MetricsSnapshot } from './hub/metrics.js'
export { type MaybePromise, addressKey, seededRandom } from './util.js'
export { searchWords, holdsWords } from './text-search.js'
export { OutboundLog } from './outbound-log.js'
export { type HistogramSnapshot, type TransportFigures, CLOSE_CODE_LABELS, ABNORMAL_CLOSE_CODES } from './hub/metrics.js'
export { type HubAnalytics, type AnalyticsOptions, type ChannelActivity, type HourFigures, type UserEngagement, ANALYTICS_MAX_CHANNELS, ANALYTICS_MAX_USERS } from './hub/analytics.js'
export { type RuleScope, type RoomData, type CompiledExpression, RuleSyntaxError, compileExpression, MAX_EXPRESSION_LENGTH, MAX_EXPRESSION_DEPTH } from './rules/expression.js'
export type { LogFields } from './ports/logger.js'
export { createSpamFilter, type ContentFilter, type ContentContext, type ContentVerdict, type ContentRefusal, type SpamFilterOptions } from './hub/content.js'

// Live queries: the query shape and result changes (from @tidings/protocol), the provider port
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
  type LiveDoc,
  type LiveChange,
  type LiveResume,
  liveQuerySchema,
  liveChangeSchema,
  liveDocSchema,
  liveResumeSchema,
  normalizeLiveQuery,
  liveQueryKey,
  parseLiveQuery,
  conditionsOf,
  isCondition,
  diffLiveResults,
  applyLiveChanges,
  type LiveResultState,
  type LiveResultFrame,
  type LiveResultStep,
  applyLiveFrame,
  resumeOf,
} from '@tidings/protocol'
export type { LiveQueryProvider, LiveQueryContext, LiveQuerySubscription, LiveQueryUpdate } from './ports/live.js'
export { clusterMessageProblem, clusterTopicOf, type ClusterTopics, ClusterArrivals, type ClusterArrivalOptions } from './cluster-message.js'
export { presenceMember, presenceMembers, presenceRemoval } from './presence-member.js'
