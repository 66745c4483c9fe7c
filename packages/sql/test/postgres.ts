/**
 * Real PostgreSQL for the tests: a private server (the image's PostgreSQL 15) in a temporary
 * directory on a free loopback port, trust authentication, no fsync. Started once per test file
 * (`startPostgres()`), stopped at the end and killed with the run if it dies. initdb refuses to
 * run as root, so the cluster belongs to the `postgres` user when the tests run as root.
 */
import { execFile, execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const exec = promisify(execFile)

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Retries `check` (an assertion) every `everyMs` until it passes, or throws its last failure after `ms`. */
export async function until(check: () => void | Promise<void>, ms = 20_000, everyMs = 20): Promise<void> {
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

function binDir(): string {
  for (const dir of ['/usr/lib/postgresql/15/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/17/bin']) {
    try {
      execFileSync(join(dir, 'pg_ctl'), ['--version'], { stdio: 'ignore' })
      return dir
    } catch {}
  }
  return '' // on the PATH
}

const asRoot = typeof process.getuid === 'function' && process.getuid() === 0
const running = new Set<string>()
process.once('exit', () => {
  for (const dir of running) {
    try {
      execFileSync(...runAs(join(BIN, 'pg_ctl'), ['-D', dir, '-m', 'immediate', 'stop']), { stdio: 'ignore' })
    } catch {}
  }
})

const BIN = binDir()
function runAs(cmd: string, args: string[]): [string, string[]] {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]
}

export interface PostgresServer {
  readonly host: string
  readonly port: number
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  readonly url: string
  /** A fresh, empty database on this server (one per test or suite); returns its URL. */
  createDatabase(name?: string): Promise<string>
  /** Stop with SIGKILL-like immediacy (as a crash looks to clients) and start again. */
  restart(): Promise<void>
  /** Stop with SIGKILL-like immediacy and stay down until `start()`. */
  crash(): Promise<void>
  start(): Promise<void>
  stop(): Promise<void>
}

let databases = 0

/** A private PostgreSQL on a free port. */
export async function startPostgres(): Promise<PostgresServer> {
  const dir = mkdtempSync(join(tmpdir(), 'tidings-pg-'))
  chmodSync(dir, 0o777)
  const data = join(dir, 'data')
  if (asRoot) await exec('install', ['-d', '-o', 'postgres', '-g', 'postgres', data])
  await exec(...runAs(join(BIN, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C']))
  const port = await freePort()
  const start = async () => {
    await exec(
      ...runAs(join(BIN, 'pg_ctl'), [
        '-D', data, '-l', join(data, 'server.log'), '-w', '-t', '30',
        '-o', `-p ${port} -c listen_addresses=127.0.0.1 -k ${data} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200`,
        'start',
      ]),
    )
    running.add(data)
  }
  const stop = async (mode: 'fast' | 'immediate') => {
    await exec(...runAs(join(BIN, 'pg_ctl'), ['-D', data, '-m', mode, '-w', 'stop']))
    running.delete(data)
  }
  await start()
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`
  return {
    host: '127.0.0.1',
    port,
    url,
    async createDatabase(name = `t${process.pid}_${++databases}`) {
      await exec(...runAs(join(BIN, 'psql'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-c', `CREATE DATABASE "${name}"`]))
      return `postgres://postgres@127.0.0.1:${port}/${name}`
    },
    async restart() {
      await stop('immediate')
      await start()
    },
    async crash() {
      await stop('immediate')
    },
    async start() {
      await start()
    },
    async stop() {
      try {
        await stop('fast')
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    },
  }
}
