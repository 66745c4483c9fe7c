import type { Codec, PresenceSnapshot, FilterNode, Priority } from '@tidings/protocol'
import type { EventEmitter } from 'eventemitter3'
import type { Identity } from '../ports/auth.js'
import type { Clock } from '../ports/clock.js'
import type { ConnectionHandle, Session } from '../ports/session.js'
import type { ConsumerChannel, StoredMessage, UserErasure } from '../ports/store.js'
import type { ChannelOptions } from './channels.js'
import type { ConnectionInfo } from './connection.js'
import type { AckRecipient } from './delivery/acks.js'
import type { HubEvents } from './events.js'
import type { MetricsSnapshot } from './metrics.js'
import type { AnalyticsOptions, HubAnalytics } from './analytics.js'
import type { RoomInfo, Rooms } from './rooms.js'

// The public surface of a hub, grouped by concept: `hub.connections`, `hub.channels`,
// `hub.presence`, `hub.rooms`, `hub.notifications`, `hub.preferences`, and one handle per channel
// (`hub.channel(name)`). What a user expects to hold across nodes (connections, kicks, presence,
// limits, acknowledgments, badges) is cluster-wide and asynchronous.

export type { AckRecipient } from './delivery/acks.js'

export interface ConnectOptions {
  readonly token?: string | undefined
  readonly apiKey?: string | undefined
  /** An identity the host app already established (its own session, cookie, …): skips the authenticator. */
  readonly identity?: Identity | undefined
}

export interface PublishOptions {
  /** Shown to recipients as `sender`. */
  readonly sender?: string | undefined
  readonly exclude?: { readonly connections?: readonly string[]; readonly users?: readonly string[] } | undefined
  readonly priority?: Priority | undefined
  /** May be dropped under backpressure (typing, cursors). */
  readonly volatile?: boolean | undefined
  /** A repeat within the dedup window returns the first result and delivers nothing. */
  readonly idempotencyKey?: string | undefined
  /**
   * Ask every recipient, on every node, to acknowledge the message, and resolve once all have or
   * after this many ms, with who did and who did not. Needs a channel that keeps history.
   */
  readonly awaitAcks?: number | undefined
}


export interface PublishResult {
  readonly messageId: string
  /** The message's offset in the channel stream (absent when the channel keeps no history). */
  readonly offset: number | undefined
  readonly duplicate: boolean
  /** Connections on this node that it was written or queued to (with `awaitAcks`: on every node). */
  readonly recipients: number
  /** With `awaitAcks`: the recipients that acknowledged in time. */
  readonly acknowledged?: AckRecipient[]
  /** With `awaitAcks`: the recipients that did not. */
  readonly unacknowledged?: AckRecipient[]
}

export interface BroadcastOptions extends Omit<PublishOptions, 'idempotencyKey' | 'awaitAcks'> {
  readonly event: string
  readonly data?: unknown
  /** `'all'` connections, or any mix of channels, users and connection ids. */
  readonly to: 'all' | { readonly channels?: readonly string[]; readonly users?: readonly string[]; readonly connections?: readonly string[] }
  /** Only recipients passing this filter (fields `user.id`, `user.roles`, `user.claims.<path>`, `transport`). */
  readonly where?: FilterNode | undefined
}

export interface BroadcastResult {
  readonly messageIds: string[]
  readonly recipients: number
}

export interface UserPreferences {
  /** Channels whose messages this user does not want delivered. */
  readonly mutedChannels?: readonly string[]
  /** Events this user does not want delivered, on any channel. */
  readonly mutedEvents?: readonly string[]
  /** Send this user's typing indicators to others. Default true. */
  readonly typingIndicators?: boolean
  /** Send read receipts for this user's reads. Default true. */
  readonly readReceipts?: boolean
}

export interface ChannelInfo {
  readonly name: string
  readonly pattern: string
  readonly subscribers: number
  readonly occupants: number
  readonly room: RoomInfo | undefined
}

/** Content-based routing: extra channels a published message should also go to. */
export type Route = (message: { channel: string; event: string; data: unknown; sender: string | undefined }) => string | readonly string[] | undefined | void

/** A server-side handle on one channel. */
export interface ChannelHandle {
  readonly name: string
  publish(event: string, data?: unknown, options?: PublishOptions): Promise<PublishResult>
  /** The seeds' name for publish. */
  broadcast(event: string, data?: unknown, options?: PublishOptions): Promise<PublishResult>
  /** Who is present (users, each once, across nodes). */
  getPresence(): Promise<PresenceSnapshot>
  /** Unsubscribe a user from this channel on every node; resolves with how many subscriptions ended. */
  kick(userId: string, reason?: string): Promise<number>
  history(options?: { after?: number; limit?: number }): Promise<{ epoch: string; messages: StoredMessage[]; top: number; complete: boolean }>
  /** Users whose cursor on this channel (kept for offline channels) has passed an offset. */
  deliveredTo(offset: number): Promise<string[]>
  /**
   * Replace the data of a stored message: the store makes it the next version, and a revision
   * event (a message with `revises`) goes to the channel's subscribers, is kept in the log and
   * replayed like any message; it is not for whoever the message was not for (its `exclude`).
   * `RT_004` when the message is not retained (or deleted) or the channel keeps no history;
   * `RT_007` when the store has no `revise`.
   */
  edit(offset: number, data: unknown, options?: RevisionOptions): Promise<RevisionResult>
  /** Delete a stored message (its data becomes null; its offset stays as a tombstone), as `edit` does. */
  delete(offset: number, options?: RevisionOptions): Promise<RevisionResult>
  /**
   * Full-text search of the channel's retained history, newest first (default limit 20, at most
   * 100); `before` pages on. `RT_007` when the store has no `search`.
   */
  search(query: string, options?: { limit?: number; before?: number }): Promise<StoredMessage[]>
}

export interface RevisionOptions {
  /** Revise on behalf of this user: `RT_003` unless the message's sender is this user. Shown as the revision's `sender`. */
  readonly by?: string | undefined
}

export interface RevisionResult {
  /** The revised message's offset. */
  readonly offset: number
  /** Its version now (2 after the first revision). */
  readonly version: number
  readonly deleted: boolean
  /** The offset of the revision event in the channel's log. */
  readonly revision: number
  /** The revision event's message id. */
  readonly messageId: string
  /** Connections on this node that the revision event was written or queued to. */
  readonly recipients: number
}

/** Connections across every node. */
export interface HubConnections {
  /**
   * Connections on every node (each with its `nodeId`), optionally of one user or on one channel,
   * at most `limit` (default 1,000; each node answers at most as many, so an answer crossing the
   * broker stays bounded). Waits for each live node's answer up to `nodes.requestTimeoutMs`.
   */
  list(filter?: { readonly userId?: string; readonly channel?: string; readonly limit?: number }): Promise<ConnectionInfo[]>
  /** One connection, wherever it is. */
  get(connectionId: string): Promise<ConnectionInfo | undefined>
  /** Close a connection wherever it is (code 4000 with the reason); true when a node had it. */
  disconnect(connectionId: string, reason?: string): Promise<boolean>
  /** Close every connection of a user on every node; resolves with how many were closed. */
  disconnectUser(userId: string, reason?: string): Promise<number>
  /** This node's connections, synchronously (per-node admin, tests). */
  local(filter?: { readonly userId?: string; readonly channel?: string; readonly limit?: number }): ConnectionInfo[]
}

/** Channel patterns and the channels live on this node. */
export interface HubChannels {
  /**
   * Add a channel pattern (or change the options of an existing one). Channels already live on
   * this node keep the options they were opened with until their last subscriber leaves.
   */
  register(pattern: string, options: ChannelOptions): void
  /** Live channels on this node. */
  list(): ChannelInfo[]
  /**
   * The pattern a channel name resolves to (app patterns first, then the built-in ones) and its
   * named parts, or undefined when no pattern matches (clients get `RT_004` for such names).
   */
  resolve(name: string): { readonly pattern: string; readonly params: Readonly<Record<string, string>> } | undefined
  /**
   * A user's channels: those where the store keeps a cursor for the user (channels with an
   * `offline` queue it has subscribed to), with unread counts and last activity, most recently
   * active first (default limit 100, at most 500). `RT_007` when the store has no `channelsOf`.
   */
  forUser(userId: string, options?: { readonly limit?: number }): Promise<ConsumerChannel[]>
}

/** Presence across nodes (the presence store). */
export interface HubPresence {
  /** Who is present in a channel: users, each once, across nodes. */
  get(channel: string): Promise<PresenceSnapshot>
}

/** Notifications on each user's personal channel, with an unread badge count across nodes. */
export interface HubNotifications {
  /**
   * Send a notification to a user's personal channel (`private:user-<id>`: acknowledged, kept
   * while the user is offline). Batches bursts. Resolves with the user's new badge count.
   */
  send(userId: string, notification: unknown): Promise<{ batched: boolean; offset: number | undefined; badge: number }>
  /** The user's unread notifications (those its personal channel still keeps), on any node. */
  unread(userId: string): Promise<number>
  /** Mark notifications read (by the offsets of their messages, or all); the user's connections get the new badge count. Resolves with it. */
  markRead(userId: string, offsets?: readonly number[]): Promise<number>
}

/** Per-user delivery preferences (this node). */
export interface HubPreferences {
  set(userId: string, preferences: UserPreferences): void
  get(userId: string): UserPreferences | undefined
}

/** What a load balancer's health check needs to know of this node. */
export interface HubHealth {
  /** Serving: not closing, and the broker is up or has been down for less than `nodes.unhealthyAfterMs`. */
  readonly ok: boolean
  readonly nodeId: string
  readonly closing: boolean
  /** Connections on this node. */
  readonly connections: number
  /** The broker's view of its bus (`unknown` when the broker does not say); `downForMs` while down. */
  readonly broker: { readonly state: 'up' | 'down' | 'unknown'; readonly since?: number; readonly downForMs?: number }
}

export interface Hub extends EventEmitter<HubEvents> {
  readonly nodeId: string
  /** The limits in force (transports size their buffers and bodies from them). */
  readonly limits: Readonly<{ maxMessageSize: number; messagesPerSecond: number; presenceUpdatesPerSecond: number; highWaterMark: number; maxQueuedBytes: number; maxDepth: number; maxReplyBytes: number }>
  /** How long a presence member lingers after its last connection left (`presence.leaveDelayMs`). */
  readonly leaveDelayMs: number
  /**
   * The hub has an authenticator, which also sees the handshake headers when a connection
   * re-authenticates (an `auth` frame). Without one, transports may let go of a session's headers
   * once the hub accepted it (a few hundred bytes per connection).
   */
  readonly authenticates: boolean
  readonly clock: Clock
  readonly codec: Codec
  readonly connections: HubConnections
  readonly channels: HubChannels
  readonly presence: HubPresence
  readonly rooms: Rooms
  readonly notifications: HubNotifications
  readonly preferences: HubPreferences
  /** Accept a transport session: authenticate, register, send `connected`. Rejects with `RT_002` / `RT_001` (and closes the session). */
  connect(session: Session, options?: ConnectOptions): Promise<ConnectionHandle>
  publish(channel: string, event: string, data?: unknown, options?: PublishOptions): Promise<PublishResult>
  broadcast(options: BroadcastOptions): Promise<BroadcastResult>
  /**
   * Erase one user (GDPR): in the message store (its `eraseUser`: every message the user sent
   * becomes a tombstone, as a deletion leaves it, and no longer names the user; the user's cursors,
   * so its offline queues and channel list, and the idempotency records of its messages go) and in
   * every node's analytics. Resolves with the store's counts; `RT_007` when the store cannot erase
   * (the memory, SQL and SQLite stores can; the Redis store cannot). It does not close the user's
   * connections (`connections.disconnectUser` first), and what subscribers already received stays
   * with them: their next history read shows the messages deleted.
   */
  eraseUser(userId: string): Promise<UserErasure>
  /** A handle on one channel: publish, presence, kick, history, delivery cursors. */
  channel(name: string): ChannelHandle
  /** Add a content-based route; returns a function that removes it. */
  route(route: Route): () => void
  metrics(): MetricsSnapshot
  /**
   * This node's activity since the hub started: channel activity and popular channels, peak
   * concurrent connections (with the time), usage per hour of day (UTC), engagement per user
   * (messages sent, time connected; at most 10,000 users and channels are remembered, the least
   * recently active forgotten first). `GET <prefix>/analytics` in `@tidings/http`.
   */
  analytics(options?: AnalyticsOptions): HubAnalytics
  /** This node's health, for a load balancer's check (`GET /realtime/health` in `@tidings/http`). */
  health(): HubHealth
  /**
   * Report an error that happened outside the app's call stack (a transport's socket, a timer):
   * it goes to `onError`, the logger and the `error` event, like the hub's own. Adapters use it
   * instead of emitting `error` themselves, so `onError` sees every failure.
   */
  report(error: unknown, stage: string): void
  /** Close every connection (1001, reconnect elsewhere), stop the broker. */
  close(): Promise<void>
}
