import { type ClientFrameOf, type MessageFrame, RealtimeError, wireLength } from '@tidings/protocol'
import type { Clock } from '../ports/clock.js'
import type { MessageStore, Revision, StoredMessage } from '../ports/store.js'
import type { PublishOptions, RevisionOptions, RevisionResult } from './api.js'
import type { ResolvedChannel } from './channels.js'
import type { Connection } from './connection.js'
import type { Signals } from './events.js'
import type { FanOut } from './fanout.js'
import type { ResolvedHubOptions } from './options.js'
import { type Publisher, retentionOf } from './publish.js'
import type { RoomRegistry } from './rooms.js'
import type { SubscriptionService } from './subscriptions.js'
import { isoTimestamp } from '../util.js'

/** What revisions need from the hub. */
export interface RevisionsHost {
  readonly clock: Clock
  readonly options: Pick<ResolvedHubOptions, 'store' | 'history' | 'codec' | 'limits' | 'nodeId'>
  readonly rooms: RoomRegistry
  readonly subscriptions: Pick<SubscriptionService, 'resolve' | 'authorize'>
  readonly publisher: Publisher
  readonly fanout: FanOut
  readonly signals: Signals
}

interface ReviseRequest {
  /** Revise on behalf of this user: only the message's sender may. */
  readonly by?: string | undefined
  /** The client connection asking (its own revision event is left out unless the channel echoes). */
  readonly connection?: Connection | undefined
}

/**
 * Edits and deletes of stored messages. The store makes the message its next version (`revise`),
 * then a revision event (a message with `revises: { offset, version, deleted? }`) is published on
 * the channel through the one publish path: it gets an offset, is kept in the log, delivered,
 * acknowledged and replayed like any message, so a subscriber that was away learns of the edit
 * when it resumes. Receivers apply a revision only over a lower version, so revisions that cross
 * (two editors, a replay) converge on the highest version.
 */
export class Revisions {
  constructor(private readonly host: RevisionsHost) {}

  /** Server code: `hub.channel(name).edit` / `.delete`. */
  revise(channel: string, offset: number, revision: Revision, options: RevisionOptions = {}): Promise<RevisionResult> {
    if (!Number.isSafeInteger(offset) || offset < 1) return Promise.reject(new RealtimeError('RT_007', `offset must be a positive integer, not ${String(offset)}`))
    return this.apply(channel, this.host.subscriptions.resolve(channel), offset, revision, { by: options.by })
  }

  /** A client's `edit` or `delete` frame: its own messages, on channels with `revisions: 'own'`. */
  async onClientRevise(conn: Connection, frame: ClientFrameOf<'edit'> | ClientFrameOf<'delete'>, bytes: number): Promise<void> {
    const resolved = this.host.subscriptions.resolve(frame.channel)
    if (resolved.options.revisions !== 'own') throw new RealtimeError('RT_003', `messages of '${frame.channel}' cannot be revised by clients`)
    if (conn.userId === undefined) throw new RealtimeError('RT_003', 'an anonymous connection has no messages of its own to revise')
    const denied = await this.host.subscriptions.authorize(conn, 'publish', frame.channel, resolved, this.host.rooms.rooms.get(frame.channel), undefined)
    if (denied) throw new RealtimeError('RT_003', denied)
    const revision: Revision = frame.type === 'delete' ? { deleted: true } : { data: frame.data ?? null }
    const result = await this.apply(frame.channel, resolved, frame.offset, revision, { by: conn.userId, connection: conn, bytes })
    this.host.fanout.sendFrame(conn, {
      type: 'revised',
      id: frame.id,
      channel: frame.channel,
      offset: result.offset,
      version: result.version,
      revision: result.revision,
      messageId: result.messageId,
      deleted: result.deleted || undefined,
    })
  }

  /**
   * After a deletion: the earlier edits of the message (revision events after it in the log, each
   * holding data of a version) lose their data too, so history, replays and redeliveries never
   * carry the deleted message's words again. Bounded by what the log retains, and over as soon as
   * the `edits` the message had (its versions before the deletion, less the first) were seen: a
   * message never edited has no edit events, and its deletion reads nothing (an edit still on its
   * way blanks its own event, see `apply`).
   */
  private async scrubEdits(channel: string, offset: number, edits: number, revise: NonNullable<MessageStore['revise']>): Promise<void> {
    if (edits <= 0) return
    const store = this.host.options.store
    let after = offset
    let seen = 0
    for (;;) {
      const page = await store.read(channel, { after, limit: SCRUB_PAGE, now: this.host.clock.now() })
      for (const m of page.messages) {
        if (m.revises?.offset !== offset || m.revises.deleted === true) continue
        if (m.deleted !== true) await revise(channel, m.offset, { deleted: true }, { now: this.host.clock.now() })
        if (++seen >= edits) return
      }
      const last = page.messages.at(-1)
      if (last === undefined || last.offset >= page.top) return
      after = last.offset
    }
  }

  /**
   * The revision event measured before the store changes, as it will go out (its `sender`, `ack`
   * on an at-least-once channel) and with room for its offset, message id and version: a refused
   * revision changes nothing, so the size limit publish applies to the event must never be the
   * one to refuse it after the store made the new version.
   */
  private checkEventSize(channel: string, resolved: ResolvedChannel, original: StoredMessage, data: unknown, by: string | undefined, deleted: boolean): void {
    const o = this.host.options
    const probe: MessageFrame = {
      type: 'message',
      channel,
      event: original.event,
      data,
      id: `${o.nodeId}-${'z'.repeat(11)}`,
      timestamp: isoTimestamp(this.host.clock.now()),
      sender: by,
      ack: resolved.options.delivery === 'at-least-once' ? true : undefined,
      revises: { offset: original.offset, version: Number.MAX_SAFE_INTEGER, ...(deleted ? { deleted: true as const } : {}) },
      offset: Number.MAX_SAFE_INTEGER,
    }
    const bytes = wireLength(o.codec.encode(probe))
    const limit = resolved.options.maxMessageSize ?? o.limits.maxMessageSize
    if (bytes > limit) throw new RealtimeError('RT_005', `the revision event of ${bytes} bytes would be over the limit of ${limit}`, { limit })
  }

  private async apply(channel: string, resolved: ResolvedChannel, offset: number, revision: Revision, request: ReviseRequest & { bytes?: number }): Promise<RevisionResult> {
    const store = this.host.options.store
    if (!retentionOf(resolved.options, this.host.options.history)) throw new RealtimeError('RT_004', `'${channel}' keeps no history: its messages cannot be revised`)
    if (typeof store.revise !== 'function') throw new RealtimeError('RT_007', 'the hub’s message store cannot revise messages (it has no revise())')
    const now = this.host.clock.now()
    const page = await store.read(channel, { after: offset - 1, limit: 1, now })
    const original: StoredMessage | undefined = page.messages[0]?.offset === offset ? page.messages[0] : undefined
    if (original === undefined) throw new RealtimeError('RT_004', `message ${offset} of '${channel}' is not retained`, { offset })
    // Whose it is comes first: someone else's message says nothing more of itself (whether it
    // was deleted, whether it is a revision event), also on a channel the reviser may not read.
    if (request.by !== undefined && original.sender !== request.by) throw new RealtimeError('RT_003', `message ${offset} of '${channel}' is not yours to revise`, { offset })
    if (original.deleted === true) throw new RealtimeError('RT_004', `message ${offset} of '${channel}' was deleted`, { offset })
    if (original.revises !== undefined) throw new RealtimeError('RT_007', `message ${offset} of '${channel}' is a revision: revise the message it revises (${original.revises.offset})`)
    const deleted = revision.deleted === true
    const data = deleted ? null : (revision.data ?? null)
    this.checkEventSize(channel, resolved, original, data, request.by, deleted)
    let flag: string | undefined
    if (!deleted) {
      // Everything a publish of the new data would be refused for, before the message changes.
      this.host.publisher.check(channel, resolved, original.event, data)
      const conn = request.connection
      if (conn !== undefined) flag = await this.host.publisher.screen(conn, channel, resolved, original.event, data, request.bytes ?? 0)
    }
    // A client's revision is published like a message: it spends the channel's publish budget.
    if (request.connection !== undefined) await this.host.publisher.chargeChannel(channel, resolved)
    const revise = store.revise.bind(store)
    const revised = await revise(channel, offset, deleted ? { deleted: true } : { data }, { now: this.host.clock.now() })
    if (revised === undefined) throw new RealtimeError('RT_004', `message ${offset} of '${channel}' is no longer retained, or was deleted meanwhile`, { offset })
    const version = revised.message.version
    const conn = request.connection
    let published
    try {
      published = await this.host.publisher.publishResolved(
        channel,
        resolved,
        original.event,
        data,
        {
          sender: request.by,
          exclude: revisionExclusions(original.exclude, conn !== undefined && !resolved.options.echo ? conn.id : undefined),
          revises: deleted ? { offset, version, deleted: true } : { offset, version },
        },
        conn?.id,
      )
    } catch (err) {
      // The store holds the new version (history shows it) but no subscriber was told: never silent.
      this.host.signals.report(err, 'revision.publish')
      throw err
    }
    if (published.offset === undefined) throw new RealtimeError('RT_004', `'${channel}' keeps no history: its messages cannot be revised`)
    if (flag !== undefined && conn !== undefined && this.host.signals.listenerCount('content:flagged') > 0) {
      this.host.signals.emit('content:flagged', { channel, event: original.event, userId: conn.userId, connectionId: conn.id, reason: flag, messageId: published.messageId, offset: published.offset })
    }
    try {
      // A deleted message's words must not come back through its edits: a deletion blanks the
      // edit events before it, and an edit whose message was deleted while its event was on its
      // way (a deletion that scrubbed before this event was appended) blanks its own.
      if (deleted) await this.scrubEdits(channel, offset, version - 2, revise)
      else {
        const now = await store.read(channel, { after: offset - 1, limit: 1, now: this.host.clock.now() })
        if (now.messages[0]?.offset === offset && now.messages[0].deleted === true) await revise(channel, published.offset, { deleted: true }, { now: this.host.clock.now() })
      }
    } catch (err) {
      // The revision happened and was published; what is left is the blanking of older data.
      this.host.signals.report(err, 'revision.scrub')
    }
    return { offset, version, deleted, revision: published.offset, messageId: published.messageId, recipients: published.recipients }
  }
}

/** Messages read per page when a deletion looks for the edits of its message. */
const SCRUB_PAGE = 500

/**
 * Who a revision event is not for: whoever the message itself was not for (a publish's
 * `exclude`: an edit must not reach them either), and the revising connection unless the channel
 * echoes.
 */
function revisionExclusions(original: StoredMessage['exclude'], reviser: string | undefined): PublishOptions['exclude'] {
  const connections = [...new Set([...(original?.connections ?? []), ...(reviser !== undefined ? [reviser] : [])])]
  const users = original?.users ?? []
  if (connections.length === 0 && users.length === 0) return undefined
  return { ...(connections.length > 0 ? { connections } : {}), ...(users.length > 0 ? { users } : {}) }
}
