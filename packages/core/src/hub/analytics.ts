import type { LRUCache } from 'lru-cache'
import { boundedMap } from '../util.js'

/** How many channels and users the analytics remember at most (least recently active go first). */
export const ANALYTICS_MAX_CHANNELS = 10_000
export const ANALYTICS_MAX_USERS = 10_000

const HOUR_MS = 3_600_000

/** One channel's activity on this node. */
export interface ChannelActivity {
  readonly channel: string
  /** Messages published to it on this node since the hub started (while it stayed among the remembered channels). */
  readonly messages: number
  /** When the last one was (hub clock, ms); undefined for a channel with subscribers and no message yet. */
  readonly lastMessageAt: number | undefined
  /** Subscribers on this node now. */
  readonly subscribers: number
}

/** Usage in one hour of the day (UTC), summed over every day since the hub started. */
export interface HourFigures {
  /** 0–23, UTC. */
  readonly hour: number
  readonly connections: number
  readonly messages: number
  /** The most connections open at once during this hour of any day. */
  readonly peakConnections: number
}

/** One user's engagement on this node. */
export interface UserEngagement {
  readonly userId: string
  /** Messages the user's connections published (accepted publishes). */
  readonly messagesSent: number
  /** Time connected, summed over the user's connections (open ones count up to now). */
  readonly connectedMs: number
  /** Connections opened. */
  readonly connections: number
  /** Connected now. */
  readonly online: boolean
  /** The last time a connection of the user opened or closed (hub clock, ms). */
  readonly lastSeen: number
}

/** `hub.analytics()`: this node's activity since the hub started. */
export interface HubAnalytics {
  readonly nodeId: string
  /** When counting began (hub start, hub clock ms) and when this view was taken. */
  readonly since: number
  readonly at: number
  readonly connections: {
    readonly current: number
    /** The most connections open at once, and when. */
    readonly peak: number
    readonly peakAt: number | undefined
  }
  readonly channels: {
    /** Channels with subscribers on this node now. */
    readonly live: number
    /** Channels remembered with their message counts (at most {@link ANALYTICS_MAX_CHANNELS}). */
    readonly tracked: number
    /** Most messages first. */
    readonly mostActive: ChannelActivity[]
    /** Most subscribers first. */
    readonly popular: ChannelActivity[]
  }
  /** 24 entries, hour 0 to 23 (UTC). */
  readonly hours: HourFigures[]
  /** The hour (UTC) with the most messages, and the one with the highest connection peak; undefined before any. */
  readonly busiestHour: number | undefined
  readonly peakConnectionsHour: number | undefined
  readonly users: {
    /** Users remembered (at most {@link ANALYTICS_MAX_USERS}). */
    readonly tracked: number
    /** Most messages sent first (then longest connected). */
    readonly top: UserEngagement[]
  }
}

export interface AnalyticsOptions {
  /** Entries in each list (most active, popular, top users). Default 10, at most 1,000. */
  readonly limit?: number
}

interface ChannelCount {
  messages: number
  lastAt: number
}

interface UserCount {
  messagesSent: number
  connectedMs: number
  connections: number
  lastSeen: number
}

interface Hour {
  connections: number
  messages: number
  peak: number
}

/** A connection as the analytics see it, while it is open. */
export interface LiveConnection {
  readonly userId: string | undefined
  readonly connectedAt: number
  /** Publishes accepted from it so far. */
  readonly sent: number
}

/** What a report reads from the hub. */
export interface AnalyticsSources {
  readonly nodeId: string
  readonly now: number
  readonly peak: number
  readonly peakAt: number | undefined
  readonly connections: Iterable<LiveConnection>
  readonly connectionCount: number
  readonly channels: Iterable<{ readonly name: string; readonly subscribers: { readonly size: number } }>
}

/**
 * Activity counters behind `hub.analytics()`: messages per channel and per hour of day,
 * connections and peaks per hour of day, engagement per user. Channels and users are bounded
 * (LRU); each record is a few integer increments, once per publish or per connection, never
 * per delivery.
 */
export class Analytics {
  since = 0
  private readonly channels: LRUCache<string, ChannelCount> = boundedMap(ANALYTICS_MAX_CHANNELS)
  private readonly users: LRUCache<string, UserCount> = boundedMap(ANALYTICS_MAX_USERS)
  private readonly hours: Hour[] = Array.from({ length: 24 }, () => ({ connections: 0, messages: 0, peak: 0 }))

  /** `open`: connections open now, so an hour without new connections still shows how many stayed. */
  published(channel: string, now: number, open: number): void {
    let c = this.channels.get(channel)
    if (c === undefined) this.channels.set(channel, (c = { messages: 0, lastAt: now }))
    c.messages++
    c.lastAt = now
    const h = this.hours[hourOf(now)]!
    h.messages++
    if (open > h.peak) h.peak = open
  }

  connected(open: number, now: number, userId?: string): void {
    const h = this.hours[hourOf(now)]!
    h.connections++
    if (open > h.peak) h.peak = open
    if (userId !== undefined) {
      const u = this.user(userId, now)
      u.connections++
      u.lastSeen = now
    }
  }

  disconnected(userId: string | undefined, sent: number, connectedAt: number, now: number): void {
    if (userId === undefined) return
    const u = this.user(userId, now)
    u.messagesSent += sent
    u.connectedMs += Math.max(0, now - connectedAt)
    u.lastSeen = now
  }

  /** Forgets a user's engagement (erasure); true when there was any. */
  forget(userId: string): boolean {
    return this.users.delete(userId)
  }

  private user(userId: string, now: number): UserCount {
    let u = this.users.get(userId)
    if (u === undefined) this.users.set(userId, (u = { messagesSent: 0, connectedMs: 0, connections: 0, lastSeen: now }))
    return u
  }

  report(s: AnalyticsSources, options: AnalyticsOptions = {}): HubAnalytics {
    const limit = Math.max(0, Math.min(1_000, Math.floor(options.limit ?? 10)))
    const live = new Map<string, number>()
    for (const c of s.channels) live.set(c.name, c.subscribers.size)
    const activity = (channel: string): ChannelActivity => {
      const c = this.channels.peek(channel)
      return { channel, messages: c?.messages ?? 0, lastMessageAt: c?.lastAt, subscribers: live.get(channel) ?? 0 }
    }
    const mostActive = [...this.channels.entries()]
      .sort((a, b) => b[1].messages - a[1].messages || b[1].lastAt - a[1].lastAt)
      .slice(0, limit)
      .map(([name]) => activity(name))
    const popular = [...live.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, limit)
      .map(([name]) => activity(name))

    // Closed connections are in the LRU; open ones add what they have done so far.
    const users = new Map<string, { messagesSent: number; connectedMs: number; connections: number; online: boolean; lastSeen: number }>()
    for (const [userId, u] of this.users.entries()) users.set(userId, { ...u, online: false })
    for (const c of s.connections) {
      if (c.userId === undefined) continue
      let u = users.get(c.userId)
      if (u === undefined) users.set(c.userId, (u = { messagesSent: 0, connectedMs: 0, connections: 1, online: true, lastSeen: c.connectedAt }))
      u.online = true
      u.messagesSent += c.sent
      u.connectedMs += Math.max(0, s.now - c.connectedAt)
    }
    const top = [...users.entries()]
      .sort((a, b) => b[1].messagesSent - a[1].messagesSent || b[1].connectedMs - a[1].connectedMs)
      .slice(0, limit)
      .map(([userId, u]) => ({ userId, ...u }))

    // The connections open now were open during this hour too.
    const current = this.hours[hourOf(s.now)]!
    if (s.connectionCount > current.peak) current.peak = s.connectionCount
    const hours = this.hours.map((h, hour) => ({ hour, connections: h.connections, messages: h.messages, peakConnections: h.peak }))
    const argmax = (value: (h: HourFigures) => number): number | undefined => {
      let best: HourFigures | undefined
      for (const h of hours) if (value(h) > 0 && (best === undefined || value(h) > value(best))) best = h
      return best?.hour
    }
    return {
      nodeId: s.nodeId,
      since: this.since,
      at: s.now,
      connections: { current: s.connectionCount, peak: s.peak, peakAt: s.peakAt },
      channels: { live: live.size, tracked: this.channels.size, mostActive, popular },
      hours,
      busiestHour: argmax((h) => h.messages),
      peakConnectionsHour: argmax((h) => h.peakConnections),
      users: { tracked: users.size, top },
    }
  }
}

/** The hour of the day (UTC) of a time in ms since the epoch. */
function hourOf(ms: number): number {
  return Math.floor(ms / HOUR_MS) % 24
}
