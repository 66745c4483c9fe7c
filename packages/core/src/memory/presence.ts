import { boundedMap } from '../util.js'
import type { PresenceMember } from '../protocol.js'
import type { PresenceChange, PresenceEntry, PresenceStore } from '../ports/presence.js'

/** The in-memory PresenceStore: one map of entries per channel, grouped by user. */
export function createMemoryPresenceStore(options: { maxLastSeen?: number } = {}): PresenceStore & { channelCount(): number } {
  /** channel → userId → connectionId → entry */
  const channels = new Map<string, Map<string, Map<string, PresenceEntry>>>()
  const byConnection = new Map<string, Map<string, PresenceEntry>>() // `${channel}\0${conn}` lookups
  const lastSeen = boundedMap<string, number>(options.maxLastSeen ?? 100_000)
  const key = (channel: string, connectionId: string) => `${channel}\u0000${connectionId}`

  const member = (entries: Map<string, PresenceEntry>): PresenceMember => {
    let latest: PresenceEntry | undefined
    let joinedAt = Number.POSITIVE_INFINITY
    for (const e of entries.values()) {
      if (!latest || e.updatedAt >= latest.updatedAt) latest = e
      if (e.joinedAt < joinedAt) joinedAt = e.joinedAt
    }
    const l = latest!
    return { id: l.userId, state: l.state, data: l.data, connections: entries.size, joinedAt, lastSeen: l.updatedAt }
  }

  const leave = (channel: string, connectionId: string, now: number): PresenceChange | undefined => {
    const users = channels.get(channel)
    const k = key(channel, connectionId)
    const userEntries = byConnection.get(k)
    if (!users || !userEntries) return undefined
    const entry = userEntries.get(connectionId)!
    const before = member(userEntries)
    userEntries.delete(connectionId)
    byConnection.delete(k)
    lastSeen.set(entry.userId, now)
    if (userEntries.size === 0) {
      users.delete(entry.userId)
      if (users.size === 0) channels.delete(channel)
      return { member: { ...before, connections: 0, lastSeen: now }, edge: true }
    }
    return { member: member(userEntries), edge: false }
  }

  return {
    join(entry) {
      let users = channels.get(entry.channel)
      if (!users) channels.set(entry.channel, (users = new Map()))
      let entries = users.get(entry.userId)
      const edge = !entries
      if (!entries) users.set(entry.userId, (entries = new Map()))
      // Re-insert so that Map order breaks ties between entries updated in the same millisecond.
      entries.delete(entry.connectionId)
      entries.set(entry.connectionId, entry)
      byConnection.set(key(entry.channel, entry.connectionId), entries)
      return { member: member(entries), edge }
    },
    update(channel, connectionId, patch) {
      const entries = byConnection.get(key(channel, connectionId))
      const entry = entries?.get(connectionId)
      if (!entries || !entry) return undefined
      entries.delete(connectionId)
      entries.set(connectionId, {
        ...entry,
        state: patch.state ?? entry.state,
        data: patch.data ?? entry.data,
        updatedAt: patch.now,
      })
      lastSeen.set(entry.userId, patch.now)
      return member(entries)
    },
    leave,
    members(channel) {
      const users = channels.get(channel)
      return users ? [...users.values()].map(member) : []
    },
    entries(channel) {
      const users = channels.get(channel)
      return users ? [...users.values()].flatMap((m) => [...m.values()]) : []
    },
    lastSeen: (userId) => lastSeen.get(userId),
    removeNode(nodeId, now) {
      const out: Array<{ channel: string; change: PresenceChange }> = []
      for (const [channel, users] of [...channels]) {
        for (const entries of [...users.values()]) {
          for (const e of [...entries.values()]) {
            if (e.nodeId !== nodeId) continue
            const change = leave(channel, e.connectionId, now)
            if (change) out.push({ channel, change })
          }
        }
      }
      return out
    },
    channelCount: () => channels.size,
  }
}
