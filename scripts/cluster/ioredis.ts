/**
 * ioredis for the cluster scripts. The root package does not depend on ioredis (only
 * @tidings/redis does, as a dev dependency), so it is loaded from that package's own
 * node_modules, as the Redis tests load it.
 */
import { createRequire } from 'node:module'
import type * as IORedis from '../../packages/redis/node_modules/ioredis/built/index.js'

const require = createRequire(new URL('../../packages/redis/package.json', import.meta.url))
const ioredis = require('ioredis') as typeof IORedis

export const Redis = ioredis.Redis
export type Redis = IORedis.Redis
