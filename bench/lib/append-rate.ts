/**
 * What the store benchmarks share (`bench:sql`, `bench:sqlite`): one phase of appends to a fresh
 * channel of a store with `inflight` appends outstanding (many callers publishing to one channel,
 * as a hub under load does) until `count` resolved, retention keeping the newest 10,000; the
 * rate in messages per second, checked against the channel's final offset.
 */
import { performance } from 'node:perf_hooks'
import type { MessageStore } from '../../packages/core/src/index.js'

const retention = { maxCount: 10_000, maxAgeMs: 3_600_000 }

/** A number from the environment, or the fallback. */
export const envNumber = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback)

let phase = 0
export async function appendRate(store: MessageStore, count: number, inflight: number): Promise<number> {
  const channel = `bench:${++phase}`
  let next = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: Math.min(inflight, count) }, async () => {
      while (next < count) {
        const n = next++
        const now = Date.now()
        await store.append(channel, { id: `m${n}`, event: 'chat', data: { text: 'hello world, a typical short chat line', n }, sender: 'alice', timestamp: now }, { retention, now })
      }
    }),
  )
  const rate = count / ((performance.now() - t0) / 1000)
  const { offset } = await store.position(channel)
  if (offset !== count) throw new Error(`${channel}: ${offset} offsets for ${count} appends`)
  return rate
}
