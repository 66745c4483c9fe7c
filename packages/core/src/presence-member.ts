import type { PresenceMember } from '@tidings/protocol'
import type { PresenceChange, PresenceEntry } from './ports/presence.js'

/**
 * Members folded from entries, by the `PresenceStore` contract, for stores that keep entries
 * and fold them when asked (Redis, PostgreSQL): a member is a user, its `state` and `data` those
 * of its most recently updated entry (later on ties), `connections` its entries, `joinedAt` its
 * earliest entry's, `lastSeen` its latest entry's `updatedAt`. Pure.
 */

/** One user's member from its entries (at least one) in update order: the latest updated, later on ties, gives state and data. */
export function presenceMember(entries: readonly PresenceEntry[]): PresenceMember {
  let latest = entries[0]!
  let joinedAt = latest.joinedAt
  for (const e of entries) {
    if (e.updatedAt >= latest.updatedAt) latest = e
    if (e.joinedAt < joinedAt) joinedAt = e.joinedAt
  }
  return { id: latest.userId, state: latest.state, data: latest.data, connections: entries.length, joinedAt, lastSeen: latest.updatedAt }
}

/** The members of a channel from its entries in update order: one per user, in the order of each user's first entry. */
export function presenceMembers(entries: readonly PresenceEntry[]): PresenceMember[] {
  const byUser = new Map<string, PresenceEntry[]>()
  for (const e of entries) {
    let list = byUser.get(e.userId)
    if (!list) byUser.set(e.userId, (list = []))
    list.push(e)
  }
  return [...byUser.values()].map(presenceMember)
}

/** The change a removed entry makes: `others` the user's entries left in the channel; none left, the leave edge (`connections: 0`, `lastSeen: now`). */
export function presenceRemoval(removed: PresenceEntry, others: readonly PresenceEntry[], now: number): PresenceChange {
  return others.length > 0 ? { edge: false, member: presenceMember(others) } : { edge: true, member: { ...presenceMember([removed]), connections: 0, lastSeen: now } }
}
