import type { LRUCache } from 'lru-cache'
import { boundedMap } from '../util.js'
import type { CompiledPreferences, Connection } from './connection.js'
import type { HubPreferences, UserPreferences } from './api.js'

/**
 * What users asked not to receive (muted channels and events) and not to send (typing
 * indicators, read receipts), kept per user (bounded) and compiled once onto each of the user's
 * connections, where fan-out reads it.
 */
export class Preferences implements HubPreferences {
  private readonly byId: LRUCache<string, { raw: UserPreferences; compiled: CompiledPreferences }> = boundedMap(100_000)

  constructor(private readonly byUser: ReadonlyMap<string, ReadonlySet<Connection>>) {}

  set(userId: string, raw: UserPreferences): void {
    const compiled: CompiledPreferences = {
      mutedChannels: new Set(raw.mutedChannels ?? []),
      mutedEvents: new Set(raw.mutedEvents ?? []),
      typing: raw.typingIndicators !== false,
      readReceipts: raw.readReceipts !== false,
    }
    const empty = compiled.mutedChannels.size === 0 && compiled.mutedEvents.size === 0 && compiled.typing && compiled.readReceipts
    if (empty) this.byId.delete(userId)
    else this.byId.set(userId, { raw: { ...raw }, compiled })
    for (const conn of this.byUser.get(userId) ?? []) {
      conn.preferences = empty ? undefined : compiled
      conn.refreshFastPath()
    }
  }

  get(userId: string): UserPreferences | undefined {
    return this.byId.get(userId)?.raw
  }

  /** The compiled preferences a new connection of the user starts with. */
  compiled(userId: string): CompiledPreferences | undefined {
    return this.byId.get(userId)?.compiled
  }
}
