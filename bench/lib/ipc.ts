/**
 * IPC between the orchestrator (bench/run.ts) and its child processes (servers, load
 * generators). Requests carry an id; each child answers every request once with the same id.
 * Children stop by themselves: when the parent goes away (IPC disconnect) and after a maximum
 * lifetime, so nothing outlives a crashed or interrupted run.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export interface Request {
  id: number
  cmd: string
  [key: string]: unknown
}
export type Reply = { id: number; ok: true; [key: string]: unknown } | { id: number; ok: false; error: string }

/** The longest any child lives (ms): a backstop, normally the parent ends them. */
const MAX_LIFETIME_MS = Number(process.env.BENCH_CHILD_MAX_MS ?? 45 * 60_000)

/** Child side: answer requests with a handler; exit when the parent disconnects or after the lifetime. */
export function serveRequests(handler: (req: Request) => Promise<Record<string, unknown>> | Record<string, unknown>): void {
  if (!process.send) throw new Error('this file runs as a child process of bench/run.ts')
  const send = (msg: unknown) => {
    try {
      process.send?.(msg)
    } catch {
      process.exit(1)
    }
  }
  process.on('disconnect', () => process.exit(0))
  setTimeout(() => {
    console.error(`[${process.pid}] lifetime of ${MAX_LIFETIME_MS} ms reached, exiting`)
    process.exit(2)
  }, MAX_LIFETIME_MS).unref()
  process.on('message', (raw) => {
    const req = raw as Request
    if (req.cmd === 'exit') {
      send({ id: req.id, ok: true })
      // Let the reply leave, then exit (a --cpu-prof profile is written on a normal exit).
      setTimeout(() => process.exit(0), 50)
      return
    }
    Promise.resolve()
      .then(() => handler(req))
      .then(
        (out) => send({ id: req.id, ok: true, ...out }),
        (err: unknown) => send({ id: req.id, ok: false, error: err instanceof Error ? err.stack ?? err.message : String(err) }),
      )
  })
}

/** Parent side: one child process and its pending requests. */
export class Child {
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>()
  private exited = false
  readonly exit: Promise<number | null>

  private constructor(
    readonly name: string,
    readonly proc: ChildProcess,
  ) {
    this.exit = new Promise((resolve) => {
      proc.once('exit', (code) => {
        this.exited = true
        for (const p of this.pending.values()) {
          clearTimeout(p.timer)
          p.reject(new Error(`${name}: process exited (code ${code}) with a request pending`))
        }
        this.pending.clear()
        resolve(code)
      })
    })
    proc.on('message', (raw) => {
      const m = raw as Reply
      const p = this.pending.get(m.id)
      if (!p) return
      this.pending.delete(m.id)
      clearTimeout(p.timer)
      if (m.ok) p.resolve(m)
      else p.reject(new Error(`${name}: ${m.error}`))
    })
  }

  /**
   * Starts `file` (TypeScript, through tsx; packages from dist/ unless BENCH_FROM_SOURCE) and waits for its first
   * message (`{ type: 'ready', ... }`), returned as `ready`.
   */
  static async start(
    name: string,
    file: string | URL,
    opts: { nodeArgs?: string[]; env?: Record<string, string>; readyTimeoutMs?: number } = {},
  ): Promise<{ child: Child; ready: Record<string, unknown> }> {
    const path = typeof file === 'string' ? file : fileURLToPath(file)
    const proc = fork(path, [], {
      // Servers import the built packages (dist/), as applications do; BENCH_FROM_SOURCE=1 runs src/.
      execArgv: ['--import', 'tsx', ...(process.env.BENCH_FROM_SOURCE ? ['--conditions=source'] : []), ...(opts.nodeArgs ?? [])],
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    track(proc)
    const child = new Child(name, proc)
    const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.kill('SIGKILL')
        reject(new Error(`${name}: not ready within ${opts.readyTimeoutMs ?? 20_000} ms`))
      }, opts.readyTimeoutMs ?? 20_000)
      const onMessage = (m: unknown) => {
        if ((m as { type?: string }).type !== 'ready') return
        clearTimeout(timer)
        proc.off('message', onMessage)
        resolve(m as Record<string, unknown>)
      }
      proc.on('message', onMessage)
      proc.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`${name}: exited (code ${code}) before it was ready`))
      })
    })
    return { child, ready }
  }

  request<T = Record<string, unknown>>(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`${this.name}: process has exited`))
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`${this.name}: '${cmd}' timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, { resolve: resolve as (r: Record<string, unknown>) => void, reject, timer })
      this.proc.send({ id, cmd, ...args })
    })
  }

  /** Ask the child to exit (so profiles are written); kill it if it has not within the timeout. */
  async stop(timeoutMs = 5_000): Promise<void> {
    if (this.exited) return
    this.request('exit', {}, timeoutMs).catch(() => {})
    const killer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs)
    await this.exit
    clearTimeout(killer)
  }

  kill(): void {
    if (!this.exited) this.proc.kill('SIGKILL')
  }
}

// Every child started here, killed (by pid, each one) when the orchestrator exits for any reason.
const children = new Set<ChildProcess>()
function track(proc: ChildProcess): void {
  children.add(proc)
  proc.once('exit', () => children.delete(proc))
}
export function killAllChildren(): void {
  for (const proc of children) {
    try {
      proc.kill('SIGKILL')
    } catch {
      // already gone
    }
  }
}
process.on('exit', killAllChildren)
