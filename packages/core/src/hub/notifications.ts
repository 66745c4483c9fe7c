import type { TimerHandle } from '../ports/clock.js'
import type { Retention, StoredMessage } from '../ports/store.js'
import { SerialQueue, boundedMap } from '../util.js'
import type { HubNotifications } from './api.js'
import type { ResolvedHubOptions } from './options.js'
import type { Signals } from './events.js'

/** What notifications need from the hub. */
export interface NotificationHost {
  readonly options: Pick<ResolvedHubOptions, 'clock' | 'store' | 'notifications'>
  /** Publish on the user's personal channel; resolves with the message's offset. */
  publish(userId: string, event: string, data: unknown): Promise<number | undefined>
  /** Tell the user's connections, on every node, their unread count (not stored: the count is always current). */
  badge(userId: string, count: number): void
  readonly signals: Signals
}

/**
 * The store log where a user's badge is kept: one entry per notification message sent (its
 * offset on the personal channel and how many notifications it carried) and one per read. Every
 * node folds the same log, so the badge is one count across nodes and survives restarts with a
 * durable store. `$` cannot start a client's channel name.
 */
export const badgeLog = (userId: string): string => `$notifications:${userId}`

/** How much of a user's badge log is kept: the badge counts the unread notifications in it. */
const BADGE_RETENTION: Retention = { maxCount: 1000, maxAgeMs: 30 * 24 * 3_600_000, maxBytes: 256 * 1024 }

interface Burst {
  windowStart: number
  inWindow: number
  batch: unknown[] | null
  timer: TimerHandle | undefined
}

/** A badge log folded up to `top`: unread notification counts by the offset of the message that carried them. */
interface Folded {
  epoch: string
  top: number
  unread: Map<number, number>
}

/**
 * Notifications on each user's personal channel (`private:user-<id>`, at-least-once with an
 * offline queue), with an unread badge count across nodes and batching for busy users: past
 * `batchThreshold` notifications within `batchWindowMs` (on this node), the rest of the window's
 * arrive as one `notification:batch` message. A user's notifications and reads are handled one
 * at a time, so concurrent ones count in order.
 */
export class NotificationService implements HubNotifications {
  private readonly bursts = boundedMap<string, Burst>(100_000)
  private readonly folded = boundedMap<string, Folded>(100_000)
  private readonly serial = new SerialQueue()

  constructor(private readonly host: NotificationHost) {}

  private burst(userId: string): Burst {
    let s = this.bursts.get(userId)
    if (!s) {
      s = { windowStart: 0, inWindow: 0, batch: null, timer: undefined }
      this.bursts.set(userId, s)
    }
    return s
  }

  /** The user's unread notifications: its badge log folded (only what is new since the last fold is read). */
  async unread(userId: string): Promise<number> {
    const f = await this.fold(userId)
    let n = 0
    for (const c of f.unread.values()) n += c
    return n
  }

  private async fold(userId: string): Promise<Folded> {
    const { store, clock } = this.host.options
    const log = badgeLog(userId)
    let f = this.folded.get(userId)
    for (;;) {
      const page = await store.read(log, { after: f?.top ?? 0, limit: 500, now: clock.now() })
      if (f !== undefined && f.top > 0 && (f.epoch !== page.epoch || !page.complete)) {
        // A new history, or entries not yet folded are gone: fold it all again from the start.
        f = undefined
        this.folded.delete(userId)
        continue
      }
      if (f === undefined || f.epoch !== page.epoch) {
        f = { epoch: page.epoch, top: 0, unread: new Map() }
        this.folded.set(userId, f)
      }
      for (const m of page.messages) apply(f, m)
      if (page.messages.length === 0 || f.top >= page.top) return f
    }
  }

  private append(userId: string, event: 'sent' | 'read', data: unknown): Promise<unknown> {
    const { store, clock } = this.host.options
    return Promise.resolve(store.append(badgeLog(userId), { id: `${event}-${clock.now()}`, event, data, timestamp: clock.now() }, { retention: BADGE_RETENTION, now: clock.now() }))
  }

  send(userId: string, notification: unknown): Promise<{ batched: boolean; offset: number | undefined; badge: number }> {
    const { clock, notifications } = this.host.options
    const s = this.burst(userId)
    const now = clock.now()
    if (now - s.windowStart >= notifications.batchWindowMs) {
      s.windowStart = now
      s.inWindow = 0
    }
    s.inWindow++
    if (s.inWindow > notifications.batchThreshold) {
      if (s.batch === null) {
        s.batch = []
        s.timer = clock.setTimeout(() => this.flush(userId), Math.max(0, s.windowStart + notifications.batchWindowMs - now))
      }
      const batch = s.batch
      batch.push(notification)
      const waiting = batch.length
      return Promise.resolve(this.serial.run(userId, async () => ({ batched: true, offset: undefined, badge: (await this.unread(userId)) + waiting })))
    }
    return Promise.resolve(
      this.serial.run(userId, async () => {
        const badge = (await this.unread(userId)) + 1
        const offset = await this.host.publish(userId, 'notification', { notification, badge })
        if (offset !== undefined) await this.append(userId, 'sent', { offset, count: 1 })
        return { batched: false, offset, badge }
      }),
    )
  }

  private flush(userId: string): void {
    const s = this.bursts.get(userId)
    if (!s?.batch) return
    const items = s.batch
    s.batch = null
    s.timer = undefined
    const done = this.serial.run(userId, async () => {
      const badge = (await this.unread(userId)) + items.length
      const offset = await this.host.publish(userId, 'notification:batch', { notifications: items, badge })
      if (offset !== undefined) await this.append(userId, 'sent', { offset, count: items.length })
    })
    Promise.resolve(done).catch((err) => this.host.signals.report(err, 'notifications.batch'))
  }

  /** The user read these messages of its personal channel (or all): lower the badge and tell its connections. */
  markRead(userId: string, offsets?: readonly number[]): Promise<number> {
    return Promise.resolve(
      this.serial.run(userId, async () => {
        const before = await this.fold(userId)
        const changes = offsets === undefined ? before.unread.size > 0 : offsets.some((o) => before.unread.has(o))
        if (!changes) return this.unread(userId)
        await this.append(userId, 'read', offsets === undefined ? { all: true } : { offsets: [...offsets] })
        const count = await this.unread(userId)
        this.host.badge(userId, count)
        return count
      }),
    )
  }

  /** A `read` frame on the personal channel. */
  read(userId: string, offsets: readonly number[]): void {
    this.markRead(userId, offsets).catch((err) => this.host.signals.report(err, 'notifications.read'))
  }

  close(): void {
    for (const [userId, s] of this.bursts.entries()) {
      if (s.timer !== undefined) {
        this.host.options.clock.clearTimeout(s.timer)
        this.flush(userId)
      }
    }
  }
}

/** One badge-log entry into the fold. */
function apply(f: Folded, m: StoredMessage): void {
  f.top = Math.max(f.top, m.offset)
  const data = m.data as { offset?: unknown; count?: unknown; offsets?: unknown; all?: unknown } | null
  if (data === null || typeof data !== 'object') return
  if (m.event === 'sent' && typeof data.offset === 'number' && typeof data.count === 'number') f.unread.set(data.offset, data.count)
  else if (m.event === 'read') {
    if (data.all === true) f.unread.clear()
    else if (Array.isArray(data.offsets)) for (const o of data.offsets) f.unread.delete(o as number)
  }
}
