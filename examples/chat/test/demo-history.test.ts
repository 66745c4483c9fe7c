import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'

const root = join(import.meta.dirname, '..', '..', '..')
const KEY = 'history-test-admin-key'

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return port
}

async function waitFor(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!(await check().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

function startDemo(port: number, dataDir: string): ChildProcess {
  return spawn(process.execPath, ['--conditions=source', '--import', 'tsx', join('examples', 'chat', 'src', 'main.ts')], {
    cwd: root,
    env: { ...process.env, PORT: String(port), TIDINGS_DATA_DIR: dataDir, TIDINGS_ADMIN_KEY: KEY },
    stdio: 'ignore',
  })
}

const admin = (port: number, path: string, init?: RequestInit) =>
  fetch(`http://127.0.0.1:${port}/realtime${path}`, { ...init, headers: { 'x-api-key': KEY, 'content-type': 'application/json', ...init?.headers }, signal: AbortSignal.timeout(5000) })

const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

describe('the demo on its embedded default (PGlite)', () => {
  it('keeps a room\'s history across a restart with no configuration but a data directory', async () => {
    const base = mkdtempSync(join(tmpdir(), 'tidings-demo-data-'))
    dirs.push(base)
    const dataDir = join(base, 'not-yet-made', 'chat') // the demo makes the folders it needs
    const port = await freePort()
    const channel = encodeURIComponent('presence:room-general')
    let demo = startDemo(port, dataDir)
    try {
      await waitFor(async () => (await admin(port, `/channels/${channel}/history`)).ok, 60_000, 'the demo to listen')
      for (const text of ['before the restart 1', 'before the restart 2']) {
        const r = await admin(port, `/channels/${channel}/broadcast`, { method: 'POST', body: JSON.stringify({ event: 'chat', data: { text } }) })
        expect(r.status).toBe(200)
      }
      const before = (await (await admin(port, `/channels/${channel}/history`)).json()) as { messages: Array<{ data: { text: string } }>; epoch: string }
      expect(before.messages.map((m) => m.data.text)).toEqual(['before the restart 1', 'before the restart 2'])
      demo.kill('SIGTERM')
      await new Promise((r) => demo.once('exit', r))

      demo = startDemo(port, dataDir)
      await waitFor(async () => (await admin(port, `/channels/${channel}/history`)).ok, 60_000, 'the demo to listen again')
      const after = (await (await admin(port, `/channels/${channel}/history`)).json()) as { messages: Array<{ data: { text: string }; offset: number }>; epoch: string }
      expect(after.epoch).toBe(before.epoch)
      expect(after.messages.map((m) => [m.offset, m.data.text])).toEqual([
        [1, 'before the restart 1'],
        [2, 'before the restart 2'],
      ])
    } finally {
      demo.kill('SIGKILL')
    }
  }, 150_000)
})
