import { boundedMap } from '../util.js'
import type {PresenceMember} from '@tidings/protocol'
import type { PresenceChange, PresenceEntry, PresenceStore } from '../ports/presence.js'

/** The in-memory PresenceStore: one map of entries per channel, grouped by user. */
export function createMemoryPresenceStore(options: { maxLastSeen?: number } = {}): PresenceStore & { channelCount(): number } {
  /** channel → userId → connectionId → entry */
  const channels = new Map<string, Map<string, Map<string, PresenceEntry>>>()
  const byConnection = new Map<string, Map<string, PresenceEntry>>() // `${channel}\0${conn}` lookups
  const lastSeen = boundedMap<string, number>(options.maxLastSeen ?? 100_000)
  const key = (channel: string, connectionId: string) => `${channel}\u0000${connectionId}`
  /** nodeId → the entry keys it holds (so removeNode and deadNodes do not scan every channel). */
  const byNode = new Map<string, Map<string, { readonly channel: string; readonly connectionId: string }>>()
  /** nodeId → its last heartbeat. */
  const heartbeats = new Map<string, number>()

  const track = (entry: PresenceEntry) => {
    let keys = byNode.get(entry.nodeId)
    if (!keys) byNode.set(entry.nodeId, (keys = new Map()))
    keys.set(key(entry.channel, entry.connectionId), { channel: entry.channel, connectionId: entry.connectionId })
  }
  const untrack = (entry: PresenceEntry) => {
    const keys = byNode.get(entry.nodeId)
    if (!keys) return
    keys.delete(key(entry.channel, entry.connectionId))
    if (keys.size === 0) byNode.delete(entry.nodeId)
  }
  /** The newest joinedAt/updatedAt of a node's entries (for a node that never heartbeated). */
  const newestActivity = (held: Map<string, { readonly connectionId: string }>) => {
    let newest = Number.NEGATIVE_INFINITY
    for (const [k, { connectionId }] of held) {
      const e = byConnection.get(k)?.get(connectionId)
      if (e) newest = Math.max(newest, e.joinedAt, e.updatedAt)
    }
    return newest
  }

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
    untrack(entry)
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
      const replaced = entries.get(entry.connectionId)
      if (replaced) untrack(replaced)
      entries.delete(entry.connectionId)
      entries.set(entry.connectionId, entry)
      track(entry)
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
      // Synchronous, so two nodes racing to remove the same node are served one after the
      // other: the second finds nothing left and reports nothing (remove-once).
      const out: Array<{ channel: string; change: PresenceChange }> = []
      heartbeats.delete(nodeId)
      const keys = byNode.get(nodeId)
      if (!keys) return out
      for (const { channel, connectionId } of [...keys.values()]) {
        const change = leave(channel, connectionId, now)
        if (change) out.push({ channel, change })
      }
      byNode.delete(nodeId)
      return out
    },
    heartbeat(nodeId, now) {
      const last = heartbeats.get(nodeId)
      if (last === undefined || now > last) heartbeats.set(nodeId, now)
      return last !== undefined
    },
    deadNodes(now, ttlMs) {
      const dead: string[] = []
      for (const [nodeId, keys] of byNode) {
        const last = heartbeats.get(nodeId) ?? newestActivity(keys)
        if (now - last > ttlMs) dead.push(nodeId)
      }
      // Heartbeats of nodes that hold nothing and went silent are forgotten (no unbounded growth).
      for (const [nodeId, last] of heartbeats) if (!byNode.has(nodeId) && now - last > ttlMs) heartbeats.delete(nodeId)
      return dead
    },
    liveNodes(now, ttlMs) {
      const live: string[] = []
      for (const [nodeId, last] of heartbeats) if (now - last <= ttlMs) live.push(nodeId)
      return live
    },
    channelCount: () => channels.size,
  }
}
