import { RealtimeError } from '@tidings/protocol'

/**
 * Frames waiting for a connection, in the order they must go out. New entries are bounded by
 * `limit`; entries taken back from a lost connection (sent but never answered) are put back at
 * the front without counting against it, because they were accepted already.
 */
export class Outbox<T> {
  private items: T[] = []

  constructor(private readonly limit: number) {}

  get size(): number {
    return this.items.length
  }

  /** Queue a new entry; throws `RT_006` when `limit` entries are already waiting. */
  push(item: T): void {
    if (this.items.length >= this.limit) {
      throw new RealtimeError('RT_006', `outbox is full: ${this.limit} sends are already waiting for a connection`, { limit: this.limit })
    }
    this.items.push(item)
  }

  /** Put entries back at the front, keeping their order (they were sent before anything queued). */
  restore(items: readonly T[]): void {
    if (items.length > 0) this.items = [...items, ...this.items]
  }

  /** Take everything, oldest first. */
  drain(): T[] {
    const items = this.items
    this.items = []
    return items
  }

  /** Remove the entries that match (e.g. on explicit disconnect). */
  remove(match: (item: T) => boolean): T[] {
    const removed = this.items.filter(match)
    if (removed.length > 0) this.items = this.items.filter((i) => !match(i))
    return removed
  }
}
