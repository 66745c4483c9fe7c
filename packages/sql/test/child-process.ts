import { type ChildProcess, spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

/**
 * A test script (a `.ts` file beside the tests) in a process of its own, speaking JSON lines: each
 * line it prints is kept (non-JSON lines are ignored), a line can be awaited, and lines can be sent
 * to its stdin. Used by the crash-point and multi-process SQLite tests.
 */
export interface ChildScript {
  readonly child: ChildProcess
  readonly lines: Array<Record<string, unknown>>
  /** The first line (printed already or to come) that matches; rejects on timeout, or when the process exits first other than by SIGKILL. */
  waitFor(match: (line: Record<string, unknown>) => boolean, ms?: number): Promise<Record<string, unknown>>
  send(line: string): void
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..', '..', '..')

/** Starts `test/<script>` with tsx (sources, not dist) and `env` added to this process's environment. */
export function startScript(script: string, env: Record<string, string>, label = script): ChildScript {
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', join(here, script)], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const lines: Array<Record<string, unknown>> = []
  const waiters: Array<{ match: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }> = []
  let stderr = ''
  child.stderr!.on('data', (d) => (stderr += String(d)))
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: Record<string, unknown>
    try {
      line = JSON.parse(text)
    } catch {
      return
    }
    lines.push(line)
    for (const w of [...waiters]) {
      if (w.match(line)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(line)
      }
    }
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  const context = () => `lines ${JSON.stringify(lines).slice(-2_000)}; stderr ${stderr.slice(-2_000)}`
  return {
    child,
    lines,
    exited,
    send: (line) => child.stdin!.write(`${line}\n`),
    waitFor: (match, ms = 30_000) =>
      new Promise((resolve, reject) => {
        const found = lines.find(match)
        if (found) return resolve(found)
        const timer = setTimeout(() => reject(new Error(`${label}: no matching line after ${ms} ms; ${context()}`)), ms)
        waiters.push({ match, resolve: (l) => (clearTimeout(timer), resolve(l)) })
        // killed on purpose (SIGKILL): the timeout still answers a wait for a line that never came
        void exited.then(({ code, signal }) => {
          if (signal === 'SIGKILL') return
          clearTimeout(timer)
          reject(new Error(`${label} exited (${code ?? signal}) before a matching line; ${context()}`))
        })
      }),
  }
}
