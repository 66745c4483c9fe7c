import type { ErrorCode, MessageFrame, PresenceMember } from '@tidings/protocol'
import type { ConnectionInfo } from './connection.js'
import type { RoomInfo } from './rooms.js'

/** The hub's typed events (`hub.on(name, listener)`). A listener that throws is reported to `onError`, never to the caller. */
export interface HubEvents {
  connection: (info: ConnectionInfo) => void
  disconnect: (info: ConnectionInfo, close: { code: number; reason: string }) => void
  /**
   * A connection attempt was refused (bad or missing credentials, expired credentials, too many
   * connections, shutting down). Never carries the credentials themselves.
   */
  'connection:refused': (e: { transport: string; remoteAddress: string | undefined; userId: string | undefined; code: ErrorCode; reason: string; closeCode: number }) => void
  /** A channel got its first subscriber on this node (`nodeId`: this node; on a cluster each node reports its own). */
  'channel:occupied': (e: { channel: string; nodeId: string }) => void
  /** A channel's last subscriber on this node left. */
  'channel:vacated': (e: { channel: string; nodeId: string }) => void
  subscribe: (e: { connectionId: string; userId: string | undefined; channel: string }) => void
  unsubscribe: (e: { connectionId: string; userId: string | undefined; channel: string; reason: string }) => void
  /** A message was published on a channel (by a client of this node, or server code here). */
  publish: (e: { channel: string; message: MessageFrame; connectionId: string | undefined }) => void
  'presence:join': (e: { channel: string; member: PresenceMember }) => void
  'presence:leave': (e: { channel: string; member: PresenceMember }) => void
  'presence:update': (e: { channel: string; member: PresenceMember }) => void
  'room:created': (room: RoomInfo) => void
  /** A user (or anonymous connection) entered a room: its first connection subscribed. */
  'room:member-joined': (e: { room: RoomInfo; userId: string | undefined; connectionId: string }) => void
  /** A user left a room: its last connection unsubscribed or disconnected. */
  'room:member-left': (e: { room: RoomInfo; userId: string | undefined; connectionId: string }) => void
  'room:emptied': (room: RoomInfo) => void
  'room:deleted': (room: RoomInfo) => void
  /**
   * Messages to a subscriber could not be delivered: not acknowledged after every attempt, or
   * dropped by retention before a redelivery. The range is inclusive.
   */
  'delivery:failed': (e: { connectionId: string; userId: string | undefined; channel: string; fromOffset: number; toOffset: number; attempts: number; reason: string }) => void
  /** A client frame was rejected with an error code (the connection stays open). */
  'client:error': (e: { connectionId: string; userId: string | undefined; code: ErrorCode; message: string; frameType: string | undefined; channel?: string | undefined }) => void
  /**
   * A connection's outbound queue went over its limit (or it held the largest queue when the
   * hub-wide budget was spent): `action` says whether it was closed (4009) or its queue dropped.
   */
  'connection:slow': (e: { connectionId: string; userId: string | undefined; queuedBytes: number; action: 'disconnect' | 'drop' }) => void
  /**
   * The content filter (`HubOptions.content`) flagged a client's message: it was delivered, and
   * the app may review it (`messageId`, `offset` when the channel keeps history). Never carries the data.
   */
  'content:flagged': (e: { channel: string; event: string; userId: string | undefined; connectionId: string; reason: string; messageId: string; offset: number | undefined }) => void
  /** The content filter refused a client's message (`RT_006` or `RT_007` to the publisher; nothing stored or delivered). Never carries the data. */
  'content:refused': (e: { channel: string; event: string; userId: string | undefined; connectionId: string; code: 'RT_006' | 'RT_007'; reason: string }) => void
  /** An internal failure (store, broker, listener); also passed to `options.onError`. */
  error: (error: unknown, context: { stage: string }) => void
}

/**
 * How a concept tells the app what happened: the hub's events, and failures that must reach
 * `onError`, the logger and the `error` event without ever throwing into the caller. The hub
 * makes one and hands it to every concept.
 */
export interface Signals {
  emit<K extends keyof HubEvents>(event: K, ...args: Parameters<HubEvents[K]>): unknown
  /** Listeners of an event (an event nobody listens to is not even built). */
  listenerCount(event: keyof HubEvents): number
  report(error: unknown, stage: string): void
}
