/**
 * A private redis-server for the cluster check and bench: a free loopback port, started and
 * stopped by this process (killed with it). Built on the Redis tests' harness
 * (packages/redis/test/servers.ts: free ports, PING), plus a choice of
 * persistence: `durable` runs with an append-only file fsynced on every write (`appendfsync
 * always`), so a SIGKILL and a start bring it back with every acknowledged write; otherwise no
 * persistence, and a restart brings it back empty.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freePort, ping } from '../../packages/redis/test/servers.js'

export { freePort }

const exec = promisify(execFile)
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export async function redisCli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await exec('redis-cli', ['-p', String(port), ...args], { timeout: 5_000 })
  return stdout
}

const children = new Set<ChildProcess>()
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL')
})

export interface PrivateRedis {
  readonly port: number
  readonly durable: boolean
  /** SIGKILL (as a crash looks to clients). */
  kill(): Promise<void>
  start(): Promise<void>
  stop(): Promise<void>
}

export async function startPrivateRedis(opts: { durable: boolean }): Promise<PrivateRedis> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'tidings-cluster-redis-'))
  const persistence = opts.durable ? ['--appendonly', 'yes', '--appendfsync', 'always', '--save', ''] : ['--appendonly', 'no', '--save', '']
  let child: ChildProcess | undefined
  const start = async () => {
    const c = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--maxmemory-policy', 'noeviction', ...persistence], { stdio: 'ignore' })
    children.add(c)
    c.once('exit', () => children.delete(c))
    child = c
    const deadline = Date.now() + 15_000
    while (!(await ping(port))) {
      if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not answer`)
      await sleep(50)
    }
    // An AOF being loaded answers LOADING to commands; wait until it is done.
    while ((await redisCli(port, 'info', 'persistence')).includes('loading:1')) await sleep(50)
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
    port,
    durable: opts.durable,
    kill,
    start,
    async stop() {
      await kill()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
