import { z } from 'zod'
import { ALL_ERROR_CODES, type ErrorCode } from './errors.js'
import { filterSchema } from './filter.js'
import { liveChangeSchema, liveDocSchema, liveQuerySchema, liveResumeSchema } from './live-query.js'

/**
 * The Tidings wire protocol, version 1. `docs/protocol.md` is the human spec of these shapes;
 * these schemas are the machine one. Client frames are validated at the edge of the hub;
 * server frames are validated by the client SDK.
 */
export const PROTOCOL_VERSION = 1

const CHANNEL_NAME = /^[A-Za-z0-9_\-:.@=,+~]+$/

export const channelNameSchema = z
  .string()
  .min(1)
  .max(200)
  .regex(CHANNEL_NAME, 'channel names use letters, digits and _ - : . @ = , + ~')

export const eventNameSchema = z.string().min(1).max(128)
const requestId = z.union([z.string().min(1).max(64), z.number().int().nonnegative()])
const version = z.literal(PROTOCOL_VERSION).optional()
export const prioritySchema = z.enum(['high', 'normal', 'low'])
export type Priority = z.infer<typeof prioritySchema>

/** A position in a channel's stream: the stream's epoch and the last offset seen. */
export const streamPositionSchema = z.object({
  epoch: z.string().min(1).max(64),
  offset: z.number().int().nonnegative(),
})
export type StreamPosition = z.infer<typeof streamPositionSchema>

const presenceData = z.record(z.string(), z.unknown())
const presenceState = z.string().min(1).max(32)

// ---------------------------------------------------------------- client → server

export const clientFrameSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('subscribe'), v: version, id: requestId.optional(),
    channel: channelNameSchema,
    /** A channel-specific credential, passed to the authorizer (e.g. a signed room token). */
    auth: z.string().max(8192).optional(),
    /** Server-side filter; on a repeated subscribe, replaces the current one (`null` removes it). */
    filter: filterSchema.nullable().optional(),
    /** Resume after this position (delivery issue: replay what was missed). */
    since: streamPositionSchema.optional(),
    /** Initial presence data for presence channels. */
    presence: presenceData.optional(),
    state: presenceState.optional(),
    /**
     * Live query channels (`db:collection:<name>[:<tag>]`) only: the query whose result the
     * subscription follows (`query:snapshot`, then `query:changes`). On a repeated subscribe,
     * replaces the current query (a new snapshot follows).
     */
    query: liveQuerySchema.optional(),
    /** Live query channels: the version and hash of the last result the client holds, to resume without a full reload. */
    resume: liveResumeSchema.optional(),
  }).strict(),
  z.object({ type: z.literal('unsubscribe'), v: version, id: requestId.optional(), channel: channelNameSchema }).strict(),
  z.object({
    type: z.literal('message'), v: version, id: requestId.optional(),
    channel: channelNameSchema,
    event: eventNameSchema,
    data: z.unknown().optional(),
    /** Publisher idempotency key: a repeat within the dedup window is answered with the first result. */
    idempotencyKey: z.string().min(1).max(128).optional(),
    priority: prioritySchema.optional(),
  }).strict(),
  z.object({
    type: z.literal('presence:update'), v: version, id: requestId.optional(),
    channel: channelNameSchema,
    data: presenceData.optional(),
    state: presenceState.optional(),
  }).strict(),
  z.object({ type: z.literal('presence:get'), v: version, id: requestId.optional(), channel: channelNameSchema }).strict(),
  z.object({ type: z.literal('typing'), v: version, id: requestId.optional(), channel: channelNameSchema, active: z.boolean() }).strict(),
  z.object({
    type: z.literal('ack'), v: version,
    channel: channelNameSchema,
    /** Cumulative: everything up to and including this offset was processed. */
    offset: z.number().int().nonnegative(),
  }).strict(),
  z.object({
    type: z.literal('read'), v: version,
    channel: channelNameSchema,
    /** Offsets of the messages read (batched). */
    offsets: z.array(z.number().int().positive()).min(1).max(500),
  }).strict(),
  z.object({
    type: z.literal('history'), v: version, id: requestId.optional(),
    channel: channelNameSchema,
    since: streamPositionSchema.optional(),
    limit: z.number().int().min(1).max(1000).optional(),
  }).strict(),
  /** Replace the data of one of your own messages (channels with `revisions: 'own'`); answered by `revised`. */
  z.object({
    type: z.literal('edit'), v: version, id: requestId.optional(),
    channel: channelNameSchema,
    offset: z.number().int().positive(),
    data: z.unknown().optional(),
  }).strict(),
  /** Delete one of your own messages (its offset stays, as a tombstone); answered by `revised`. */
  z.object({ type: z.literal('delete'), v: version, id: requestId.optional(), channel: channelNameSchema, offset: z.number().int().positive() }).strict(),
  /** Full-text search of a channel's history (a subscribed channel, or one the history rule allows); answered by `search`. */
  z.object({
    type: z.literal('search'), v: version, id: requestId.optional(),
    channel: channelNameSchema,
    query: z.string().min(1).max(256),
    limit: z.number().int().min(1).max(100).optional(),
    /** Only messages with offsets below this (the next page of a newest-first search). */
    before: z.number().int().positive().optional(),
  }).strict(),
  /** The connection's user's channels (those keeping an offline queue for it) with unread counts; answered by `channels`. */
  z.object({ type: z.literal('channels'), v: version, id: requestId.optional(), limit: z.number().int().min(1).max(500).optional() }).strict(),
  z.object({ type: z.literal('ping'), v: version, id: requestId.optional() }).strict(),
  z.object({ type: z.literal('auth'), v: version, id: requestId.optional(), token: z.string().min(1).max(8192) }).strict(),
])

export type ClientFrame = z.infer<typeof clientFrameSchema>
export type ClientFrameType = ClientFrame['type']
export type ClientFrameOf<T extends ClientFrameType> = Extract<ClientFrame, { type: T }>

// ---------------------------------------------------------------- server → client

export const presenceMemberSchema = z.object({
  /** The user id (presence is tracked per user; a user with three tabs is one member). */
  id: z.string(),
  state: z.string(),
  data: presenceData,
  /** How many of the user's connections are in the channel. */
  connections: z.number().int().nonnegative(),
  joinedAt: z.number(),
  lastSeen: z.number(),
})
export type PresenceMember = z.infer<typeof presenceMemberSchema>

const presenceSnapshot = z.object({ users: z.array(presenceMemberSchema), count: z.number().int().nonnegative() })
export type PresenceSnapshot = z.infer<typeof presenceSnapshot>

/** A message on a channel (or sent to users / connections directly). */
export const messageFrameSchema = z.object({
  type: z.literal('message'),
  /** Absent for messages sent to users or connections rather than a channel. */
  channel: z.string().optional(),
  event: z.string(),
  data: z.unknown(),
  /** Unique message id. */
  id: z.string(),
  /** Position in the channel stream, when the channel keeps one. */
  offset: z.number().int().optional(),
  timestamp: z.string(),
  sender: z.string().optional(),
  priority: prioritySchema.optional(),
  /**
   * The offset of the previous message this subscriber was sent on this channel, when it is not
   * `offset - 1` (messages it was not meant to see: its own, filtered, muted). A receiver that
   * has processed up to `prev` may process this one; otherwise something before it is missing.
   */
  prev: z.number().int().nonnegative().optional(),
  /** The receiver must acknowledge it (`ack` frame): on at-least-once channels, or when the publisher waits for acks. */
  ack: z.literal(true).optional(),
  /**
   * A revision event: this message edits (`data` is the new data) or deletes (`deleted`, data
   * null) the message at `revises.offset`, which is now at `revises.version`. A receiver holding
   * that message at a lower version applies it; otherwise ignores it (a revision is idempotent).
   */
  revises: z.object({ offset: z.number().int().positive(), version: z.number().int().min(2), deleted: z.literal(true).optional() }).optional(),
  /** The message's version when it was revised since it was published (history, replays). */
  version: z.number().int().min(2).optional(),
  /** The message was deleted (history, replays): its data is null. */
  deleted: z.literal(true).optional(),
})

const errorCode = z.enum(ALL_ERROR_CODES as [ErrorCode, ...ErrorCode[]])

export const serverFrameSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('connected'), v: z.literal(PROTOCOL_VERSION),
    connectionId: z.string(),
    userId: z.string().optional(),
    /** When the connection's credentials expire (ms since the epoch); `auth:expiring` comes before it. */
    expiresAt: z.number().optional(),
    limits: z.object({
      maxMessageSize: z.number(),
      messagesPerSecond: z.number(),
      maxSubscriptions: z.number(),
    }),
  }),
  z.object({
    type: z.literal('subscribed'), id: requestId.optional(), channel: z.string(),
    presence: presenceSnapshot.optional(),
    /** The stream position the subscription starts after; keep it to resume later. */
    position: streamPositionSchema.optional(),
    /** How the channel delivers: acknowledge messages that carry `ack: true`. */
    delivery: z.enum(['at-most-once', 'at-least-once']).optional(),
    /** With `since` (or an offline queue): whether every missed message was replayed; false comes with `reason`. */
    recovered: z.boolean().optional(),
    reason: z.string().optional(),
  }),
  z.object({ type: z.literal('unsubscribed'), id: requestId.optional(), channel: z.string(), reason: z.string().optional() }),
  messageFrameSchema,
  z.object({
    type: z.literal('history'), id: requestId.optional(), channel: z.string(),
    /** Oldest first. */
    messages: z.array(messageFrameSchema),
    /** Where the page ends: pass it as `since` for the next page. */
    position: streamPositionSchema,
    /** The newest offset in the channel when the page was read. */
    top: z.number().int().nonnegative(),
    /** False when messages after `since` were already dropped by retention: the page starts later. */
    complete: z.boolean(),
  }),
  z.object({
    type: z.literal('published'), id: requestId.optional(), channel: z.string(),
    messageId: z.string(), offset: z.number().int().optional(), duplicate: z.boolean().optional(),
  }),
  /** The answer to `edit` / `delete`: the message at `offset` is now at `version`; `revision` is the offset of the revision event. */
  z.object({
    type: z.literal('revised'), id: requestId.optional(), channel: z.string(),
    offset: z.number().int().positive(), version: z.number().int().min(2),
    revision: z.number().int().positive(), messageId: z.string(), deleted: z.literal(true).optional(),
  }),
  /** The answer to `search`: matching messages as they are now, newest first. */
  z.object({ type: z.literal('search'), id: requestId.optional(), channel: z.string(), messages: z.array(messageFrameSchema) }),
  /** The answer to `channels`: the user's channels, most recently active first. */
  z.object({
    type: z.literal('channels'), id: requestId.optional(),
    channels: z.array(z.object({
      name: z.string(),
      unread: z.number().int().nonnegative(),
      lastSeenOffset: z.number().int().nonnegative(),
      top: z.number().int().nonnegative(),
      lastActivity: z.number().nullable(),
      kind: z.string().nullable().optional(),
      activeUsers: z.number().int().nonnegative().optional(),
    })),
  }),
  z.object({ type: z.literal('presence:join'), channel: z.string(), user: presenceMemberSchema }),
  z.object({ type: z.literal('presence:leave'), channel: z.string(), user: presenceMemberSchema }),
  /** Sent to the channel's other members, and (with `id`) as the reply to the updater. */
  z.object({ type: z.literal('presence:update'), id: requestId.optional(), channel: z.string(), user: presenceMemberSchema }),
  z.object({ type: z.literal('presence'), id: requestId.optional(), channel: z.string(), users: z.array(presenceMemberSchema), count: z.number() }),
  z.object({ type: z.literal('typing'), channel: z.string(), userId: z.string(), active: z.boolean() }),
  /** To a message's sender: its messages were delivered (acknowledged) to, or read by, a user. */
  z.object({
    type: z.literal('receipt'), channel: z.string(), status: z.enum(['delivered', 'read']),
    userId: z.string(), offsets: z.array(z.number().int().positive()),
  }),
  z.object({
    type: z.literal('error'), id: requestId.optional(), code: errorCode, message: z.string(),
    channel: z.string().optional(), details: z.record(z.string(), z.unknown()).optional(),
  }),
  z.object({ type: z.literal('pong'), id: requestId.optional() }),
  /** The answer to an `auth` frame; `expiresAt` (ms since the epoch) when the new credentials expire. */
  z.object({ type: z.literal('authenticated'), id: requestId.optional(), userId: z.string().optional(), expiresAt: z.number().optional() }),
  /**
   * The connection's credentials expire at `expiresAt` (ms since the epoch): send an `auth` frame
   * with fresh ones before `closesAt`, or every subscription ends and the connection closes with 4001.
   */
  z.object({ type: z.literal('auth:expiring'), expiresAt: z.number(), closesAt: z.number() }),
  /**
   * A live query's whole result, after `subscribed` (and after a repeated subscribe that changed
   * the query). `reset: true` when the client asked to resume but the server no longer had its
   * result: this snapshot replaces whatever the client held.
   */
  z.object({
    type: z.literal('query:snapshot'), id: requestId.optional(), channel: z.string(),
    /** The field that identifies a doc (the collection's key). */
    key: z.string(),
    version: z.number().int().nonnegative(),
    /** Identifies this result: present it with `resume` (and `version`) when subscribing again. */
    hash: z.string(),
    docs: z.array(liveDocSchema),
    reset: z.literal(true).optional(),
  }),
  /**
   * A live query's result changed: apply `changes` in order (see `applyLiveChanges`) to the result
   * of the previous version. `resumed: true` on the first frame of a resumed subscription (the
   * changes since the result the client presented).
   */
  z.object({
    type: z.literal('query:changes'), channel: z.string(),
    version: z.number().int().nonnegative(),
    /**
     * The version these changes apply to (the one the client should hold). A client holding
     * another one missed a frame (a slow consumer's queue dropped): it subscribes again with `resume`.
     */
    prev: z.number().int().nonnegative().optional(),
    hash: z.string(),
    changes: z.array(liveChangeSchema),
    resumed: z.literal(true).optional(),
  }),
])

export type ServerFrame = z.infer<typeof serverFrameSchema>
export type ServerFrameType = ServerFrame['type']
export type ServerFrameOf<T extends ServerFrameType> = Extract<ServerFrame, { type: T }>
export type MessageFrame = ServerFrameOf<'message'>
export type RequestId = z.infer<typeof requestId>

/**
 * The same rules as the `ack` schema, by hand: acks are the most frequent frame on reliable
 * channels (one per subscriber per batch), so they skip the general validator.
 */
function asPlainAck(value: unknown): ClientFrameOf<'ack'> | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined
  const v = value as Record<string, unknown>
  let keys = 0
  for (const k in v) {
    if (k !== 'type' && k !== 'channel' && k !== 'offset' && k !== 'v') return undefined
    keys++
  }
  const { channel, offset } = v
  if (v.type !== 'ack' || (v.v !== undefined && v.v !== PROTOCOL_VERSION)) return undefined
  if (keys !== (v.v === undefined ? 3 : 4)) return undefined
  if (typeof channel !== 'string' || channel.length === 0 || channel.length > 200 || !CHANNEL_NAME.test(channel)) return undefined
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) return undefined
  return v as ClientFrameOf<'ack'>
}

/** Parses an already-decoded value as a client frame; returns the zod issues on failure. */
export function parseClientFrame(value: unknown): { ok: true; frame: ClientFrame } | { ok: false; reason: string } {
  const ack = asPlainAck(value)
  if (ack) return { ok: true, frame: ack }
  const result = clientFrameSchema.safeParse(value)
  if (result.success) return { ok: true, frame: result.data }
  const issue = result.error.issues[0]
  const where = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : ''
  return { ok: false, reason: issue ? `${where}${issue.message}` : 'malformed frame' }
}
