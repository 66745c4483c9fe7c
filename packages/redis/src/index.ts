// @tidings/redis: the ports of a hub on many nodes, on Redis (through ioredis).
export type { RedisClient } from './client.js'
export { createRedisStore, type RedisMessageStore, type RedisStoreOptions, type RedisStoreStats } from './store.js'
export { createRedisPresenceStore, type RedisPresenceStoreOptions } from './presence.js'
export { createRedisLimitStore, type RedisLimitStoreOptions } from './limits.js'
export { createRedisBroker, RedisBrokerError, type RedisBroker, type RedisBrokerOptions, type RedisBrokerHealth, type RedisBrokerStats } from './broker.js'
