import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

const root = join(import.meta.dirname, '..', '..', '..')

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return port
}

async function answers(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/rooms`, { signal: AbortSignal.timeout(1000) })
    return res.ok
  } catch {
    return false
  }
}

async function waitFor(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

describe('npm run demo', () => {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`the demo server dies with its npm process (${signal} to npm's PID leaves the port free)`, async () => {
      const port = await freePort()
      const npm = spawn('npm', ['run', 'demo'], { cwd: root, env: { ...process.env, PORT: String(port), TIDINGS_DATA_DIR: 'memory' }, stdio: 'ignore' })
      try {
        await waitFor(() => answers(port), 30_000, 'the demo to listen')
        npm.kill(signal)
        await waitFor(async () => !(await answers(port)), 6_000, 'the port to be free')
        expect(await answers(port)).toBe(false)
      } finally {
        npm.kill('SIGKILL')
      }
    }, 45_000)
  }
})
