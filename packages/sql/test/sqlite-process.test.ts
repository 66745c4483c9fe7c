import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createSqliteStore } from '../src/sqlite/index.js'
import { type ChildScript, startScript } from './child-process.js'

// Other processes on the same file: SQLite's own locking (BEGIN IMMEDIATE, busy_timeout), not the
// in-process queue of writers, is what keeps their offsets apart.

const here = dirname(fileURLToPath(import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'tidings-sqlite-proc-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const children: ChildScript[] = []
afterEach(() => {
  for (const { child } of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
})

function startWriter(env: Record<string, string>): ChildScript {
  const w = startScript('sqlite-writer.ts', env, `writer ${env['TAG']}`)
  children.push(w)
  return w
}

const KEEP = { maxCount: 1_000_000, maxAgeMs: 86_400_000 }

describe('SQLite store across processes', () => {
  it('two processes and this one appending to one channel of one file never share an offset, and leave no hole (new file: migrated once)', async () => {
    const file = join(dir, 'shared.sqlite')
    const common = { FILE: file, CHANNEL: 'shared', COUNT: '400', INFLIGHT: '25' }
    // the two children start together on a file that does not exist yet: both migrate it at once
    const one = startWriter({ ...common, TAG: 'one' })
    const two = startWriter({ ...common, TAG: 'two' })
    await Promise.all([one.waitFor((l) => l.ready === true), two.waitFor((l) => l.ready === true)])
    const local = createSqliteStore({ db: { filename: file }, sweepIntervalMs: false })
    await local.ready
    one.send('go')
    two.send('go')
    const mine = []
    for (let wave = 0; wave < 8; wave++) {
      mine.push(...(await Promise.all(Array.from({ length: 50 }, (_, i) => local.append('shared', { id: `here-${wave * 50 + i}`, event: 'e', data: {}, timestamp: Date.now() }, { retention: KEEP, now: Date.now() })))))
    }
    await Promise.all([one.waitFor((l) => l.done === true, 60_000), two.waitFor((l) => l.done === true, 60_000)])
    expect((await one.exited).code).toBe(0)
    expect((await two.exited).code).toBe(0)

    const reported = new Map<number, string>()
    const claim = (offset: number, id: string) => {
      expect(reported.has(offset), `offset ${offset} given to ${reported.get(offset)} and ${id}`).toBe(false)
      reported.set(offset, id)
    }
    for (const r of mine) claim(r.message.offset, r.message.id)
    for (const w of [one, two]) for (const l of w.lines) if (typeof l.stored === 'number') claim(l.stored, String(l.id))
    expect(reported.size).toBe(1_200)
    const r = await local.read('shared', { after: 0, limit: 2_000, now: Date.now() })
    expect(r.top).toBe(1_200)
    expect(r.messages.map((m) => [m.offset, m.id])).toEqual([...reported].sort(([a], [b]) => a - b))
    await local.close()
  }, 120_000)

  it('a writer killed (SIGKILL) mid-load loses none of the appends it saw committed; the file reopens in the same epoch', async () => {
    const file = join(dir, 'killed.sqlite')
    const w = startWriter({ FILE: file, CHANNEL: 'k', COUNT: '100000', INFLIGHT: '50', TAG: 'w', HANG: '1' })
    await w.waitFor((l) => l.ready === true)
    w.send('go')
    await w.waitFor((l) => typeof l.stored === 'number' && l.stored >= 3_000, 60_000)
    w.child.kill('SIGKILL')
    await w.exited
    const acked = new Map<number, string>()
    for (const l of w.lines) if (typeof l.stored === 'number') acked.set(l.stored, String(l.id))

    const store = createSqliteStore({ db: { filename: file }, sweepIntervalMs: false })
    const r = await store.read('k', { after: 0, limit: 1_000_000, now: Date.now() })
    expect(r.top).toBeGreaterThanOrEqual(Math.max(...acked.keys()))
    const held = new Map(r.messages.map((m) => [m.offset, m.id]))
    for (const [offset, id] of acked) expect(held.get(offset)).toBe(id)
    expect(r.messages.map((m) => m.offset)).toEqual(Array.from({ length: r.top }, (_, i) => i + 1))
    // appends continue after the last committed offset, in the same epoch
    const next = await store.append('k', { id: 'after', event: 'e', data: null, timestamp: Date.now() }, { retention: KEEP, now: Date.now() })
    expect(next).toMatchObject({ epoch: r.epoch, message: { offset: r.top + 1 } })
    await store.close()
  }, 120_000)

  it('better-sqlite3 is loaded only when a store opens a file by name (an app on PostgreSQL never needs it)', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--conditions=source', '--import', 'tsx', join(here, 'sqlite-lazy.ts')], { cwd: join(here, '..') })
    expect(JSON.parse(stdout.trim())).toEqual({ afterImport: false, afterGiven: false, afterFilename: true })
  }, 60_000)
})
