/**
 * Real Redis for the tests: a private `redis-server` on a free loopback port (no persistence),
 * and a local three-master Redis Cluster. Each is a child process of the test run, stopped at
 * the end (and killed with it if the run dies). `redis-server` is the Debian package; the test
 * command installs it when it is missing (scripts/tasks.mjs).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const exec = promisify(execFile)
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A port nobody listens on now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

/** Whether a redis-server answers PING on this loopback port. */
export async function ping(port: number): Promise<boolean> {
  try {
    const { stdout } = await exec('redis-cli', ['-p', String(port), 'ping'], { timeout: 2_000 })
    return stdout.trim() === 'PONG'
  } catch {
    return false
  }
}

async function waitFor(check: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

const children = new Set<ChildProcess>()
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL')
})

function launch(port: number, extra: string[] = [], cwd?: string): ChildProcess {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra], { cwd, stdio: 'ignore' })
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

export interface RedisServer {
  readonly host: string
  readonly port: number
  readonly url: string
  /** Stop it (SIGKILL: as a crash looks to clients) and start it again on the same port, empty. */
  restart(downMs?: number): Promise<void>
  /** Stop it for good. */
  stop(): Promise<void>
  /** Stop it (for an outage); `start()` brings it back, empty. */
  kill(): Promise<void>
  start(): Promise<void>
}

/** A private standalone redis-server on a free port. */
export async function startRedis(): Promise<RedisServer> {
  const port = await freePort()
  let child: ChildProcess | undefined
  const start = async () => {
    child = launch(port)
    await waitFor(() => ping(port), `redis-server on ${port}`)
  }
  const kill = async () => {
    const c = child
    child = undefined
    if (!c || c.exitCode !== null) return
    const gone = new Promise((resolve) => c.once('exit', resolve))
    c.kill('SIGKILL')
    await gone
  }
  await start()
  return {
    host: '127.0.0.1',
    port,
    url: `redis://127.0.0.1:${port}`,
    start,
    kill,
    async restart(downMs = 0) {
      await kill()
      if (downMs > 0) await sleep(downMs)
      await start()
    },
    stop: kill,
  }
}

export interface RedisCluster {
  /** The masters, as ioredis `Cluster` takes its start-up nodes. */
  readonly nodes: Array<{ host: string; port: number }>
  stop(): Promise<void>
}

/** A local Redis Cluster of three masters, no replicas, every slot assigned. */
export async function startCluster(): Promise<RedisCluster> {
  const ports = [await freePort(), await freePort(), await freePort()]
  const dir = mkdtempSync(join(tmpdir(), 'tidings-redis-cluster-'))
  const procs = ports.map((port) => launch(port, ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '2000'], dir))
  for (const port of ports) await waitFor(() => ping(port), `cluster node on ${port}`)
  await exec('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30_000 })
  await waitFor(async () => {
    for (const port of ports) {
      const { stdout } = await exec('redis-cli', ['-p', String(port), 'cluster', 'info'])
      if (!stdout.includes('cluster_state:ok')) return false
    }
    return true
  }, 'cluster_state:ok', 30_000)
  return {
    nodes: ports.map((port) => ({ host: '127.0.0.1', port })),
    async stop() {
      await Promise.all(
        procs.map((c) => {
          if (c.exitCode !== null) return undefined
          const gone = new Promise((resolve) => c.once('exit', resolve))
          c.kill('SIGKILL')
          return gone
        }),
      )
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** Retry `check` (an assertion) every `everyMs` until it passes; past `ms`, its last failure is thrown. */
export async function until(check: () => void | Promise<void>, ms = 10_000, everyMs = 20): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      await check()
      return
    } catch (err) {
      if (Date.now() > deadline) throw err
      await sleep(everyMs)
    }
  }
}
