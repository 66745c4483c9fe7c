import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { createPGliteStore } from '@tidings/sql'
import { startChatServer } from './server.js'

// With REDIS_URL, one node of a cluster on Redis (npm run demo:cluster); without, one node whose
// history lives in PGlite (in-process PostgreSQL) in .data/chat, so it survives a restart with no
// database to install (TIDINGS_DATA_DIR moves it; TIDINGS_DATA_DIR=memory keeps it in memory).
const cluster = process.env.REDIS_URL ? (await import('./cluster.js')).clusterNode(process.env) : undefined
const dataDir = process.env.TIDINGS_DATA_DIR ?? join(import.meta.dirname, '..', '..', '..', '.data', 'chat')
if (!cluster && dataDir !== 'memory') mkdirSync(dataDir, { recursive: true })
const store = cluster ? undefined : createPGliteStore(dataDir === 'memory' ? {} : { dataDir })
await store?.ready
const chat = await startChatServer(Number(process.env.PORT ?? 3000), process.env.HOST ?? '127.0.0.1', cluster?.options ?? (store ? { hubOptions: { store } } : undefined))
if (cluster) {
  console.log(`${cluster.nodeId} on ${chat.url.replace('127.0.0.1', 'localhost')} (pid ${process.pid})`)
} else {
  console.log(`Tidings chat demo on ${chat.url.replace('127.0.0.1', 'localhost')} — open it in two browser windows.`)
  console.log(`History is kept in ${dataDir === 'memory' ? 'memory' : dataDir} (PGlite).`)
  console.log(`Admin API: ${chat.url}/realtime/openapi.json (key: ${process.env.TIDINGS_ADMIN_KEY ?? 'demo-admin-key'})`)
}
let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  const force = setTimeout(() => process.exit(0), 2000)
  force.unref()
  await chat.close().catch(() => {})
  await cluster?.close()
  process.exit(0)
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
process.on('SIGHUP', stop)
// Started by scripts/tasks.mjs with a pipe as stdin: when that process dies (however it was
// killed), the pipe closes and the server goes with it.
if (process.env.TIDINGS_EXIT_WITH_STDIN === '1') {
  process.stdin.on('end', stop)
  process.stdin.on('close', stop)
  process.stdin.resume()
}
