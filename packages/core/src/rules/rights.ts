import type { ChannelGrant } from '../ports/auth.js'
import type { TimerHandle } from '../ports/clock.js'
import type { Subscription } from '../hub/connection.js'

/**
 * What the rules decided for one subscription, kept beside it (the hot path never reads this):
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

const rights = new WeakMap<Subscription, SubscriptionRights>()

export function rightsOf(sub: Subscription | undefined): SubscriptionRights | undefined {
  return sub === undefined ? undefined : rights.get(sub)
}

export function setRights(sub: Subscription, r: SubscriptionRights): void {
  rights.set(sub, r)
}

/**
 * Connections (by id) whose subscription to a channel may not see its presence, per hub (keyed
 * by the hub's resolved options, which the subscription and presence services share): presence
 * frames to the channel exclude them.
 */
const presenceDenied = new WeakMap<object, Map<string, Set<string>>>()

export function presenceDeniedOf(hubOptions: object): Map<string, Set<string>> {
  let m = presenceDenied.get(hubOptions)
  if (!m) presenceDenied.set(hubOptions, (m = new Map()))
  return m
}
