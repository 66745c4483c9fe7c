import { boundedMap } from '../util.js'
import type { TimerHandle } from '../ports/clock.js'
import type { ResolvedHubOptions } from './options.js'

/** What notifications need from the hub. */
export interface NotificationHost {
  readonly options: ResolvedHubOptions
  /** Publish on the user's personal channel; resolves with the message's offset. */
  publish(userId: string, event: string, data: unknown): Promise<number | undefined>
  /** Tell the user's connections their unread count (not stored: the count is always current). */
  badge(userId: string, count: number): void
  report(error: unknown, stage: string): void
}

interface UserState {
  /** Unread notifications by the offset of the message that carried them (a batch carries several). */
  unread: Map<number, number>
  windowStart: number
  inWindow: number
  batch: unknown[] | null
  timer: TimerHandle | undefined
  /** Notifications being published (counted in the badge before their offset is known). */
  sending: number
}

/**
 * Notifications on each user's personal channel (`private:user-<id>`, at-least-once with an
 * offline queue), with an unread badge count kept by the hub and batching for busy users: past
 * `batchThreshold` notifications within `batchWindowMs`, the rest of the window's arrive as one
 * `notification:batch` message.
 */
export class NotificationService {
  private readonly users = boundedMap<string, UserState>(100_000)

  constructor(private readonly host: NotificationHost) {}

  private state(userId: string): UserState {
    let s = this.users.get(userId)
    if (!s) {
      s = { unread: new Map(), windowStart: 0, inWindow: 0, batch: null, timer: undefined, sending: 0 }
      this.users.set(userId, s)
    }
    return s
  }

  unreadCount(userId: string): number {
    let n = 0
    for (const c of this.users.get(userId)?.unread.values() ?? []) n += c
    return n
  }

  async notify(userId: string, notification: unknown): Promise<{ batched: boolean; offset: number | undefined; badge: number }> {
    const { clock, notifications } = this.host.options
    const s = this.state(userId)
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
      s.batch.push(notification)
      return { batched: true, offset: undefined, badge: this.unreadCount(userId) + s.batch.length }
    }
    s.sending++
    const badge = this.unreadCount(userId) + s.sending
    let offset: number | undefined
    try {
      offset = await this.host.publish(userId, 'notification', { notification, badge })
    } finally {
      s.sending--
    }
    if (offset !== undefined) s.unread.set(offset, 1)
    return { batched: false, offset, badge }
  }

  private flush(userId: string): void {
    const s = this.users.get(userId)
    if (!s?.batch) return
    const items = s.batch
    s.batch = null
    s.timer = undefined
    const badge = this.unreadCount(userId) + items.length
    this.host.publish(userId, 'notification:batch', { notifications: items, badge }).then(
      (offset) => {
        if (offset !== undefined) s.unread.set(offset, items.length)
      },
      (err) => this.host.report(err, 'notifications.batch'),
    )
  }

  /** The user read these messages of its personal channel: lower the badge and say so. */
  read(userId: string, offsets: readonly number[]): void {
    const s = this.users.get(userId)
    if (!s) return
    let changed = false
    for (const o of offsets) changed = s.unread.delete(o) || changed
    if (changed) this.host.badge(userId, this.unreadCount(userId))
  }

  /** Mark everything read. */
  readAll(userId: string): void {
    const s = this.users.get(userId)
    if (!s || s.unread.size === 0) return
    s.unread.clear()
    this.host.badge(userId, 0)
  }

  close(): void {
    for (const [userId, s] of this.users.entries()) {
      if (s.timer !== undefined) {
        this.host.options.clock.clearTimeout(s.timer)
        this.flush(userId)
      }
    }
  }
}
