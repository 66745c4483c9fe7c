#!/usr/bin/env node
// The entry points a fresh machine needs (`npm run demo`, `npm run demo:cluster`, `npm test`): make sure the pinned
// pnpm and the workspace's packages are installed, then run the task. Plain Node, no deps, so it
// works before anything is installed.
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs'
import { connect, createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
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

/** Whether a PostgreSQL server (initdb, pg_ctl) is installed: Debian's versioned directory, or on the PATH. */
function hasPostgres() {
  for (const v of ['15', '16', '17']) if (existsSync(`/usr/lib/postgresql/${v}/bin/pg_ctl`)) return true
  return spawnSync('pg_ctl', ['--version'], { stdio: 'ignore' }).status === 0
}

/**
 * System packages the tests use (Debian): Chromium for the browser tests, redis-server (and
 * redis-cli) for the Redis adapter's tests against a real Redis and a local Redis Cluster,
 * PostgreSQL for the SQL adapter's tests, Prometheus (with promtool) for the metrics and alert
 * rules tests. Installed when missing.
 */
function ensureSystemPackages(only) {
  const wanted = [
    ['chromium', () => existsSync('/usr/bin/chromium')],
    ['redis-server', () => existsSync('/usr/bin/redis-server')],
    ['redis-tools', () => existsSync('/usr/bin/redis-cli')],
    ['postgresql', hasPostgres],
    ['prometheus', () => existsSync('/usr/bin/prometheus') && existsSync('/usr/bin/promtool')],
  ].filter(([name, present]) => !present() && (only === undefined || only.includes(name)))
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
if (task === 'demo:cluster') ensureSystemPackages(['redis-server'])

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
  const watch = watchNpm(() => {
    stopChild()
    setTimeout(() => process.exit(0), 2500).unref()
  })
  child.on('exit', (code, signal) => {
    clearInterval(watch)
    process.exit(code ?? (signal ? 0 : 1))
  })
}

/** A port free now: `preferred` when nobody listens on it, else any. */
function freePort(preferred = 0) {
  return new Promise((resolve, reject) => {
    const server = createNetServer()
    server.once('error', (err) => (preferred === 0 ? reject(err) : resolve(freePort(0))))
    server.listen(preferred, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** Whether redis-server on 127.0.0.1:port answers PING within a second. */
function pong(port) {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let got = ''
    const done = (ok) => (socket.destroy(), resolve(ok))
    socket.setTimeout(1000, () => done(false))
    socket.on('error', () => done(false))
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (d) => (got += d).includes('+PONG') && done(true))
  })
}

async function waitUntil(check, what, ms = 30_000) {
  const end = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/**
 * `npm run demo:cluster`: a private redis-server on a free port and three chat nodes on it
 * (3001-3003 when free), each one `examples/chat/src/main.ts` with `REDIS_URL`. Every child
 * dies with this process as the single-node demo does (stdin pipes, signals, npm watched);
 * redis-server runs under `sh`, which stops it when its stdin pipe closes. Type `stop 2`,
 * `kill 2` (SIGKILL) or `start 2` to take a node down and bring it back.
 */
async function demoCluster() {
  const nodes = new Map() // index → child process
  let redis
  let closing = false
  // The nodes first; Redis once they are gone (or as this process exits), so they close cleanly.
  const stopRedis = () => redis?.stdin.end()
  const stopAll = () => {
    closing = true
    if (nodes.size === 0) stopRedis()
    for (const child of nodes.values()) {
      child.stdin.end()
      child.kill('SIGTERM')
    }
    setTimeout(() => process.exit(0), 2500).unref()
  }
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, stopAll)
  process.on('exit', () => {
    for (const child of nodes.values()) child.kill('SIGTERM')
    stopRedis()
  })
  watchNpm(stopAll)

  const redisPort = await freePort()
  const redisArgs = ['--port', redisPort, '--bind', '127.0.0.1', '--save', "''", '--appendonly', 'no'].join(' ')
  // In its own session (no Ctrl-C from the terminal), sh stops redis-server when its stdin (a
  // pipe from here) closes, however this process ended.
  const script = `trap '' INT TERM HUP; redis-server ${redisArgs} >/dev/null & r=$!; cat >/dev/null; kill $r; wait $r`
  redis = spawn('sh', ['-c', script], { cwd: root, stdio: ['pipe', 'inherit', 'inherit'], detached: true })
  redis.on('exit', () => closing && process.exit(0))
  await waitUntil(() => pong(redisPort), `redis-server on port ${redisPort}`)

  const ports = []
  for (const preferred of [3001, 3002, 3003]) ports.push(await freePort(ports.includes(preferred) ? 0 : preferred))
  const origins = ports.map((p) => `http://localhost:${p}`)
  const secret = randomBytes(24).toString('base64url')
  const start = (i) => {
    const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', join('examples', 'chat', 'src', 'main.ts')], {
      cwd: root,
      stdio: ['pipe', 'inherit', 'inherit'],
      env: {
        ...process.env,
        TIDINGS_EXIT_WITH_STDIN: '1',
        PORT: String(ports[i]),
        NODE_ID: `node-${i + 1}`,
        REDIS_URL: `redis://127.0.0.1:${redisPort}`,
        TIDINGS_NODES: origins.join(','),
        TIDINGS_DEMO_SECRET: secret,
      },
    })
    nodes.set(i, child)
    child.on('exit', (code, signal) => {
      if (nodes.get(i) === child) nodes.delete(i)
      if (closing && nodes.size === 0) stopRedis()
      if (!closing) console.log(`::: node-${i + 1} stopped (${signal ?? `exit ${code}`}); \`start ${i + 1}\` brings it back`)
    })
    const up = () => fetch(`http://127.0.0.1:${ports[i]}/rooms`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false)
    return waitUntil(up, `node-${i + 1} on port ${ports[i]}`, 60_000)
  }
  await Promise.all(ports.map((_, i) => start(i)))
  console.log(`
::: Tidings chat demo, three nodes on one Redis (redis-server on port ${redisPort})
${origins.map((o, i) => `:::   node-${i + 1}  ${o}`).join('\n')}
::: Open two of them in two browser windows and sign in with two names: messages, presence and
::: history cross nodes. Stop the node a window is on: it moves to another node and catches up.
::: Type \`stop N\` (SIGTERM), \`kill N\` (SIGKILL: its members leave within 5 s) or \`start N\`; Ctrl-C ends it all.
`)
  const lines = createInterface({ input: process.stdin })
  lines.on('line', (line) => {
    const [command, arg] = line.trim().split(/\s+/)
    const i = Number(arg) - 1
    if (!['stop', 'kill', 'start'].includes(command) || !(i >= 0 && i < ports.length)) {
      if (line.trim()) console.log(`::: commands: stop N, kill N, start N (N from 1 to ${ports.length})`)
      return
    }
    const child = nodes.get(i)
    if (command === 'start') {
      if (child) return console.log(`::: node-${i + 1} is running`)
      console.log(`::: starting node-${i + 1}`)
      start(i).catch((err) => console.error(err.message))
    } else if (!child) {
      console.log(`::: node-${i + 1} is not running`)
    } else {
      child.kill(command === 'kill' ? 'SIGKILL' : 'SIGTERM')
    }
  })
}

/** When npm (our parent, and the `sh -c` between us) goes away, call `gone` once. Returns the (unref'd) interval. */
function watchNpm(gone) {
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
      clearInterval(watch)
      gone()
    }
  }, 300)
  watch.unref()
  return watch
}


if (task === 'demo') {
  demo()
} else if (task === 'demo:cluster') {
  demoCluster().catch((err) => {
    console.error(err)
    process.exit(1)
  })
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
  console.error('usage: node scripts/tasks.mjs demo|demo:cluster|test')
  process.exit(2)
}
