import type { FilterPredicate, MessageFrame, ServerFrame } from '@tidings/protocol'
import type { StoredMessage } from '../ports/store.js'
import { type Connection, PRIORITY, type PriorityClass, type Subscription } from './connection.js'

/*
 * Who gets a frame: the per-dispatch decisions (exclusions, recipient filters, preferences) and
 * "would this subscriber have received stored message m", asked by replays, redeliveries and
 * receipts alike.
 */

/** A dispatch as one node applies it to its own connections (compiled once per dispatch). */
export interface LocalDispatch {
  /** Subscribers the message was written to, when the publisher waits for their acks. */
  readonly collect: Subscription[] | null
  /** The one excluded connection (the usual case: a publisher), compared by identity. */
  readonly excludeOne: Connection | null
  /** True when `admits()` must run for every recipient (several exclusions, users, `where`). */
  readonly general: boolean
  readonly excludeConnections: ReadonlySet<string> | null
  readonly excludeUsers: ReadonlySet<string> | null
  readonly where: FilterPredicate | null
  readonly priority: PriorityClass
  readonly volatile: boolean
}

export const NO_EXCLUSIONS: LocalDispatch = { collect: null, excludeOne: null, general: false, excludeConnections: null, excludeUsers: null, where: null, priority: PRIORITY.normal, volatile: false }

/** Messages read from the store per page by replays, redeliveries and receipts. */
export const REPLAY_PAGE = 500

/** Whether a connection passes a dispatch's exclusions, its recipient filter and its own preferences (mutes). */
export function admits(conn: Connection, d: LocalDispatch, frame: ServerFrame): boolean {
  if (d.excludeConnections !== null && d.excludeConnections.has(conn.id)) return false
  if (d.excludeUsers !== null && conn.userId !== undefined && d.excludeUsers.has(conn.userId)) return false
  if (d.where !== null && !d.where({ user: conn.recipient, transport: conn.session.transport })) return false
  const prefs = conn.preferences
  if (prefs !== undefined && frame.type === 'message') {
    if (prefs.mutedEvents.has(frame.event)) return false
    if (frame.channel !== undefined && prefs.mutedChannels.has(frame.channel)) return false
  }
  return true
}

/** Whether a stored message was published with this connection (or its user) excluded. */
export function excludes(m: StoredMessage, conn: Connection): boolean {
  const ex = m.exclude
  if (ex === undefined) return false
  return ex.connections?.includes(conn.id) === true || (conn.userId !== undefined && ex.users?.includes(conn.userId) === true)
}

/**
 * The frame a subscriber would have been sent for stored message `m`, or undefined when live
 * delivery would have left it out (its own publish, its filter, its mutes, an exclusion).
 */
export function frameFor(sub: Subscription, m: StoredMessage, ack = false): MessageFrame | undefined {
  const frame = storedToFrame(m, ack)
  return receives(sub, m, frame) ? frame : undefined
}

/**
 * Whether live delivery would have sent stored message `m` (as `frame`, its `storedToFrame`) to
 * this subscriber: the same decision as `frameFor`, for a frame shared by every subscriber.
 */
export function receives(sub: Subscription, m: StoredMessage, frame: MessageFrame): boolean {
  if (excludes(m, sub.connection)) return false
  if (sub.filter !== null && !isDeletion(frame) && !sub.filter(frame)) return false
  return admits(sub.connection, NO_EXCLUSIONS, frame)
}

/**
 * A deletion reaches every subscriber its message could have reached: subscription filters test
 * data, and a deletion has none (a receiver ignores deletions of messages it does not hold).
 */
export function isDeletion(frame: MessageFrame): boolean {
  return frame.revises?.deleted === true
}

export function storedToFrame(m: StoredMessage, ack = false): MessageFrame {
  return {
    type: 'message',
    channel: m.channel,
    event: m.event,
    data: m.data,
    id: m.id,
    offset: m.offset,
    timestamp: new Date(m.timestamp).toISOString(),
    sender: m.sender,
    ack: ack ? true : undefined,
    revises: m.revises,
    version: m.version !== undefined && m.version > 1 ? m.version : undefined,
    deleted: m.deleted,
  }
}
