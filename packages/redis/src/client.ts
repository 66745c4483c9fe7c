import type { Cluster, Redis } from 'ioredis'

/**
 * The Redis connection the app already has: an ioredis client (`new Redis(…)`) or cluster
 * (`new Cluster(…)`). The adapters never close it; they make what extra connections they need
 * (a subscriber) with `duplicate()` and close those themselves.
 */
export type RedisClient = Redis | Cluster

/** A Redis Cluster client (keys of one channel share a hash tag, so one slot). */
export function isCluster(client: RedisClient): client is Cluster {
  return (client as { isCluster?: boolean }).isCluster === true
}
