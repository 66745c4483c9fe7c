import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, expect, it } from 'vitest'
import { createPGliteStore } from '../src/index.js'

const dir = mkdtempSync(join(tmpdir(), 'tidings-pglite-'))
const dataDir = join(dir, 'data')
const KEEP = { maxCount: 1_000, maxAgeMs: 24 * 3_600_000 }
const T0 = Date.UTC(2026, 0, 1)

afterAll(() => rmSync(dir, { recursive: true, force: true }))

it('history on a PGlite data directory survives close and reopen: same epoch, messages, cursors, idempotency keys; appends in flight at close() all land', async () => {
  const first = createPGliteStore({ dataDir, sweepIntervalMs: false })
  const ch = 'room:durable'
  await Promise.all(
    Array.from({ length: 20 }, (_, i) => i + 1).map((n) =>
      first.append(ch, { id: `m${n}`, event: 'chat', data: { n }, sender: 'alice', timestamp: T0 + n }, { retention: KEEP, now: T0 + n, idempotencyKey: `k${n}`, dedupWindowMs: 3_600_000 }),
    ),
  )
  await first.commit(ch, 'bob', 15)
  // 30 more appends not awaited before close(): close() waits for them
  const late = Array.from({ length: 30 }, (_, i) => first.append(ch, { id: `late${i}`, event: 'chat', data: { i }, timestamp: T0 + 100 }, { retention: KEEP, now: T0 + 100 }))
  const before = await first.position(ch)
  await first.close()
  const resolved = await Promise.all(late)
  expect(resolved.map((r) => r.message.offset)).toEqual(Array.from({ length: 30 }, (_, i) => 21 + i))

  const second = createPGliteStore({ dataDir, sweepIntervalMs: false })
  const now = await second.position(ch)
  expect(now).toEqual({ epoch: before.epoch, offset: 50 })
  const r = await second.read(ch, { after: 0, limit: 100, now: T0 + 100 })
  expect(r.messages.map((m) => m.id)).toEqual([...Array.from({ length: 20 }, (_, i) => `m${i + 1}`), ...Array.from({ length: 30 }, (_, i) => `late${i}`)])
  expect(r.messages[4]).toEqual({ offset: 5, id: 'm5', channel: ch, event: 'chat', data: { n: 5 }, sender: 'alice', timestamp: T0 + 5 })
  expect(await second.cursor(ch, 'bob')).toEqual({ offset: 15, epoch: before.epoch })
  const again = await second.append(ch, { id: 'retry', event: 'chat', data: {}, timestamp: T0 + 200 }, { retention: KEEP, now: T0 + 200, idempotencyKey: 'k3', dedupWindowMs: 3_600_000 })
  expect(again).toMatchObject({ duplicate: true, message: { offset: 3, id: 'm3' } })
  expect((await second.append(ch, { id: 'next', event: 'chat', data: {}, timestamp: T0 + 200 }, { retention: KEEP, now: T0 + 200 })).message.offset).toBe(51)
  await second.close()
}, 60_000)
