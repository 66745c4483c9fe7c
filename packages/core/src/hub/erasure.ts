import { RealtimeError } from '@tidings/protocol'
import type { Clock } from '../ports/clock.js'
import type { UserErasure } from '../ports/store.js'
import type { Analytics } from './analytics.js'
import type { Cluster } from './cluster.js'
import type { ResolvedHubOptions } from './options.js'

/** What erasing a user needs from the hub. */
export interface ErasureHost {
  readonly options: Pick<ResolvedHubOptions, 'store'>
  readonly clock: Clock
  readonly analytics: Pick<Analytics, 'forget'>
  readonly cluster: Pick<Cluster, 'ask'>
}

/**
 * Erasing one user (GDPR): the message store's `eraseUser` (the user's messages become
 * tombstones, its cursors and idempotency records go: the store is shared, so one call covers
 * the cluster) and what each node remembers of the user besides its connections (analytics).
 */
export class Erasure {
  constructor(private readonly host: ErasureHost) {}

  async eraseUser(userId: string): Promise<UserErasure> {
    if (typeof userId !== 'string' || userId.length === 0) throw new RealtimeError('RT_007', 'a user id is a non-empty string')
    const store = this.host.options.store
    if (typeof store.eraseUser !== 'function') throw new RealtimeError('RT_007', 'the hub’s message store cannot erase users (it has no eraseUser())')
    const erased = await store.eraseUser(userId, { now: this.host.clock.now() })
    this.host.analytics.forget(userId)
    await this.host.cluster.ask({ op: 'forget', userId }, true)
    return { messages: erased.messages, cursors: erased.cursors, keys: erased.keys }
  }
}
