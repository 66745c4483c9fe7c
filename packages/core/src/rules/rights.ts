import type { ChannelGrant } from '../ports/auth.js'
import type { TimerHandle } from '../ports/clock.js'

/**
 * What the rules decided for one subscription, a field of it (the hot path never reads this):
 * whether it sees and joins presence, the grant of the subscribe rule, the `auth` string it
 * subscribed with (rules are decided again with it), the end of its grant and how many re-checks
 * are under way (a replay waits for none: it is refused while one is).
 */
export interface SubscriptionRights {
  presence: boolean
  grant: ChannelGrant | undefined
  readonly auth: string | undefined
  expiry: TimerHandle | undefined
  /** Bumped by every re-check; a re-check's answer applies only if it is still the latest. */
  generation: number
  /** Re-checks whose answer is not in yet. */
  checking: number
}

/** The rights of a new subscription: no re-check under way, no expiry timer yet. */
export function newRights(presence: boolean, grant: ChannelGrant | undefined, auth: string | undefined): SubscriptionRights {
  return { presence, grant, auth, expiry: undefined, generation: 0, checking: 0 }
}
