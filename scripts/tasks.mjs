#!/usr/bin/env node
// The two entry points a fresh machine needs (`npm run demo`, `npm test`): make sure the pinned
// pnpm and the workspace's packages are installed, then run the task. Plain Node, no deps, so it
// works before anything is installed.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const PNPM_VERSION = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).packageManager.split('@')[1]

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts })
  if (r.error) throw r.error
  return r.status ?? 1
}

function pnpmCommand() {
  const probe = spawnSync('pnpm', ['--version'], { encoding: 'utf8' })
  if (probe.status === 0 && probe.stdout.trim() === PNPM_VERSION) return ['pnpm', []]
  return ['npx', ['--yes', `pnpm@${PNPM_VERSION}`]]
}

const [pnpmBin, pnpmPrefix] = pnpmCommand()
const pnpm = (...args) => run(pnpmBin, [...pnpmPrefix, ...args])

function ensureInstalled() {
  const marker = join(root, 'node_modules', '.modules.yaml')
  const lock = join(root, 'pnpm-lock.yaml')
  if (existsSync(marker) && statSync(marker).mtimeMs >= statSync(lock).mtimeMs) return
  const code = pnpm('install', '--frozen-lockfile')
  if (code !== 0) process.exit(code)
}

/**
 * System packages the tests use (Debian): Chromium for the browser tests, redis-server (and
 * redis-cli) for the Redis adapter's tests against a real Redis and a local Redis Cluster.
 * Installed when missing.
 */
function ensureSystemPackages() {
  const wanted = [
    ['chromium', '/usr/bin/chromium'],
    ['redis-server', '/usr/bin/redis-server'],
    ['redis-tools', '/usr/bin/redis-cli'],
  ].filter(([, bin]) => !existsSync(bin))
  if (wanted.length === 0) return
  const names = wanted.map(([name]) => name)
  const root = process.getuid?.() === 0
  const sudo = root ? [] : ['sudo', '-n']
  console.log(`::: installing ${names.join(', ')} (apt-get)`)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const cmd = (args) => run(sudo[0] ?? args[0], sudo.length ? [...sudo.slice(1), ...args] : args.slice(1), { env })
  if (cmd(['apt-get', 'update', '-qq']) !== 0 || cmd(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...names]) !== 0) {
    console.error(`could not install ${names.join(', ')}: install them, then run the tests again`)
    process.exit(1)
  }
}

const task = process.argv[2]
ensureInstalled()
if (task === 'test') ensureSystemPackages()

/**
 * The demo server runs as this process's only child, and dies with it: signals are forwarded,
 * its stdin is a pipe from here (closed by the OS when this process dies, even by SIGKILL, and
 * the server exits on that), and when this process's own parent (npm) goes away, so do we.
 */
function demo() {
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', join('examples', 'chat', 'src', 'main.ts')], {
    cwd: root,
    stdio: ['pipe', 'inherit', 'inherit'],
    env: { ...process.env, TIDINGS_EXIT_WITH_STDIN: '1' },
  })
  const stopChild = (signal = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
  }
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => stopChild(signal))
  process.on('exit', () => stopChild())
  // npm runs scripts through `sh -c`, which stays behind when npm is killed: watch npm too.
  const watched = [process.ppid]
  try {
    const stat = readFileSync(`/proc/${process.ppid}/stat`, 'utf8')
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
    if (/^(sh|bash|dash)$/.test(comm)) watched.push(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
  } catch {
    // not Linux: the parent alone
  }
  const alive = (pid) => {
    try {
      process.kill(pid, 0)
      return true
    } catch {
      return false
    }
  }
  const parent = process.ppid
  const watch = setInterval(() => {
    if (process.ppid !== parent || !watched.every(alive)) {
      stopChild()
      setTimeout(() => process.exit(0), 2500).unref()
    }
  }, 300)
  child.on('exit', (code, signal) => {
    clearInterval(watch)
    process.exit(code ?? (signal ? 0 : 1))
  })
}

if (task === 'demo') {
  demo()
} else if (task === 'test') {
  // vitest prints its own report; the JSON one gives the closing line CI reads.
  const out = join(mkdtempSync(join(tmpdir(), 'tidings-test-')), 'vitest.json')
  const code = pnpm('exec', 'vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${out}`, ...process.argv.slice(3))
  let passed = 0
  let failed = 0
  let skipped = 0
  if (existsSync(out)) {
    const r = JSON.parse(readFileSync(out, 'utf8'))
    passed = r.numPassedTests
    failed = r.numFailedTests + (r.numRuntimeErrorTestSuites ?? 0) + (r.numFailedTestSuites ?? 0)
    skipped = r.numPendingTests + r.numTodoTests
  } else failed = 1
  console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`)
  process.exit(code !== 0 || failed > 0 || skipped > 0 || passed === 0 ? 1 : 0)
} else {
  console.error('usage: node scripts/tasks.mjs demo|test')
  process.exit(2)
}
