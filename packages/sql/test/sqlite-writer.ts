/**
 * A second process writing a SQLite store file (test/sqlite-process.test.ts), run with tsx. It
 * opens the store on FILE (migrating it when it is new), says { ready }, waits for "go" on stdin,
 * then appends COUNT messages to CHANNEL, INFLIGHT at a time, saying { stored: offset, id } after
 * each append resolved, then { done } and exits. With HANG=1 it does not exit after the appends
 * (the parent kills it).
 * Env: FILE, CHANNEL, COUNT, INFLIGHT (default 20), TAG (ids are `<TAG>-<n>`), HANG.
 */
import { createInterface } from 'node:readline'
import { createSqliteStore } from '../src/sqlite/index.js'

const env = process.env
const file = env['FILE']!
const channel = env['CHANNEL']!
const count = Number(env['COUNT'] ?? 100)
const inflight = Number(env['INFLIGHT'] ?? 20)
const tag = env['TAG'] ?? 'child'
// Buffered (a pipe may refuse a synchronous write): a line the parent reads was written after the append resolved.
const say = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`)

const store = createSqliteStore({ db: { filename: file }, sweepIntervalMs: false })
await store.ready
say({ ready: true })

const input = createInterface({ input: process.stdin })
await new Promise<void>((resolve) => input.on('line', (line) => line.trim() === 'go' && resolve()))

let next = 0
const retention = { maxCount: 1_000_000, maxAgeMs: 86_400_000 }
await Promise.all(
  Array.from({ length: Math.min(inflight, count) }, async () => {
    while (next < count) {
      const n = next++
      const now = Date.now()
      const r = await store.append(channel, { id: `${tag}-${n}`, event: 'e', data: { n, tag }, sender: tag, timestamp: now }, { retention, now })
      say({ stored: r.message.offset, id: r.message.id })
    }
  }),
)
say({ done: true })
if (env['HANG'] !== '1') {
  await store.close()
  input.close()
  process.stdin.destroy()
}
