// @tidings/redis: the ports of a hub on many nodes, on Redis (through ioredis).
export type { RedisClient } from './client.js'
