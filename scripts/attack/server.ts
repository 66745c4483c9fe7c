/**
 * The server under attack, run as a CHILD process by scripts/check-fuzz.ts and
 * scripts/check-memory.ts (through bench/lib/ipc.ts: `Child.start` with --expose-gc, from source).
 *
 * `createRealtime` from @tidings/http on node:http, loopback, a random port, default hub limits,
 * a token authenticator accepting the tokens in `TOKENS`, an admin API key `ADMIN_KEY`, and a
 * generous `edge` (per-IP limits) so that one loopback attacker is not simply refused at the door.
 *
 * Channels added to the built-in ones:
 * - `canary:*` at-least-once with a 100,000-message log (the canary the fuzz run counts losses on);
 * - `big:*` open to anyone, with a 1,000-message log (history amplification in check:memory).
 *
 * IPC requests (answered by `serveRequests`): `health`, `mem` (after three GCs), `metrics`,
 * `canary-start { channel, intervalMs }`, `canary-stop` (→ `{ published, top }`),
 * `fill { channel, count, bytes }`, `publish { channel, event, data }`.
 * The child installs no `uncaughtException` handler: a thrown error ends it, and the parent
 * counts that as a crash (the stack is on the inherited stderr).
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, createTokenAuthenticator, silentLogger } from '@tidings/core'
import type { EdgeOptions } from '@tidings/http-kit'
import { createRealtime, type RealtimeOptions } from '@tidings/http'
import { serveRequests } from '../../bench/lib/ipc.js'
import { ADMIN_KEY, EDGE, TOKENS } from './config.js'

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

async function main(): Promise<void> {
  const errors = new Map<string, number>()
  const hub = createHub({
    logger: silentLogger,
    authenticate: createTokenAuthenticator(TOKENS),
    channels: {
      'canary:*': { subscribe: 'authenticated', publish: 'authenticated', delivery: 'at-least-once', history: { maxCount: 100_000, maxAgeMs: 60 * 60_000 } },
      'big:*': { subscribe: true, publish: 'authenticated', history: { maxCount: 1000, maxAgeMs: 60 * 60_000 } },
    },
    onError: (_err, ctx) => errors.set(ctx.stage, (errors.get(ctx.stage) ?? 0) + 1),
  })
  // `edge` is the createRealtime option agreed across helpers; passed through a wider type so this
  // file type-checks whether or not the option exists yet (when it does not, it is ignored).
  const options: RealtimeOptions & { edge?: EdgeOptions } = {
    hub,
    apiKey: ADMIN_KEY,
    edge: EDGE,
    // A long-poll with nothing to say answers after 1 s instead of 30 s, so every fuzzed poll gets its answer within the run.
    longPoll: { pollTimeoutMs: 1000 },
  }
  const realtime = createRealtime(options)
  const server = createServer()
  realtime.attach(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port

  let canary: { timer: NodeJS.Timeout; published: number; failed: number; channel: string } | undefined

  serveRequests(async (req) => {
    switch (req.cmd) {
      case 'health':
        return { connections: hub.metrics().connections }
      case 'mem': {
        const gc = (globalThis as { gc?: () => void }).gc
        if (!gc) throw new Error('start the server with --expose-gc')
        for (let i = 0; i < 3; i++) {
          gc()
          await sleep(50)
        }
        const m = process.memoryUsage()
        return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, connections: hub.metrics().connections }
      }
      case 'metrics': {
        const m = hub.metrics()
        return { connections: m.connections, errors: Object.fromEntries(Object.entries(m.errors).filter(([, v]) => v > 0)), onError: Object.fromEntries(errors) }
      }
      case 'canary-start': {
        if (canary) throw new Error('canary already running')
        const channel = req.channel as string
        const c = { channel, published: 0, failed: 0, timer: setInterval(() => {
          const seq = ++c.published
          hub.publish(channel, 'tick', { seq }).catch(() => c.failed++)
        }, (req.intervalMs as number) ?? 10) }
        canary = c
        return {}
      }
      case 'canary-stop': {
        if (!canary) throw new Error('no canary running')
        clearInterval(canary.timer)
        await sleep(50)
        const position = await hub.channel(canary.channel).history({ limit: 1 })
        const out = { published: canary.published, failed: canary.failed, top: position.top }
        canary = undefined
        return out
      }
      case 'fill': {
        const channel = req.channel as string
        const count = req.count as number
        const text = 'x'.repeat(req.bytes as number)
        let top = 0
        for (let i = 0; i < count; i++) top = (await hub.publish(channel, 'big', { i, text })).offset ?? top
        return { top }
      }
      case 'publish': {
        const r = await hub.publish(req.channel as string, (req.event as string) ?? 'note', req.data)
        return { offset: r.offset ?? null }
      }
      default:
        throw new Error(`unknown command ${req.cmd}`)
    }
  })
  process.send?.({ type: 'ready', port, pid: process.pid })
}

await main()
