import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHub, createTokenAuthenticator, type Hub, type HubOptions, type Identity, silentLogger } from '@tidings/core'
import { createRealtime, type Realtime, type RealtimeOptions } from '@tidings/http'
import WebSocket from 'ws'
import { afterEach } from 'vitest'

/*
 * The hostile suite's harness: a real server (createRealtime on node:http, loopback) and real
 * `ws` clients that record every frame. Each test names the fault it pins.
 */

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})
export function onCleanup(fn: () => unknown): void {
  cleanups.push(fn)
}

export const TOKENS: Record<string, Identity> = {
  'tok-ada': { userId: 'ada' },
  'tok-bob': { userId: 'bob' },
  'tok-eve': { userId: 'eve' },
}

export interface Served {
  readonly hub: Hub
  readonly realtime: Realtime
  /** `http://127.0.0.1:<port>` */
  readonly base: string
  readonly ws: string
}

export async function serve(hubOptions: HubOptions = {}, realtimeOptions: Omit<RealtimeOptions, 'hub'> = {}): Promise<Served> {
  const hub = createHub({ logger: silentLogger, authenticate: createTokenAuthenticator(TOKENS), ...hubOptions })
  const realtime = createRealtime({ hub, apiKey: 'admin-key', ...realtimeOptions })
  const server = createServer()
  realtime.attach(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  onCleanup(async () => {
    await realtime.close()
    await hub.close()
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
  })
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { hub, realtime, base, ws: `${base.replace('http', 'ws')}/realtime` }
}

export type Frame = Record<string, unknown> & { type: string }

/** A real WebSocket client that records every frame and can wait for one. */
export class Client {
  readonly frames: Frame[] = []
  closed: { code: number; reason: string } | undefined
  private waiters: Array<{ test: (f: Frame) => boolean; resolve: (f: Frame) => void }> = []
  private closeWaiters: Array<(c: { code: number; reason: string }) => void> = []
  private seq = 0

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => {
      const f = JSON.parse(String(data)) as Frame
      this.frames.push(f)
      for (const w of [...this.waiters]) {
        if (w.test(f)) {
          this.waiters.splice(this.waiters.indexOf(w), 1)
          w.resolve(f)
        }
      }
    })
    socket.on('close', (code, reason) => {
      this.closed = { code, reason: String(reason) }
      for (const w of this.closeWaiters.splice(0)) w(this.closed)
    })
    socket.on('error', () => {})
  }

  static async open(url: string, token?: string): Promise<Client> {
    const socket = new WebSocket(token ? `${url}?token=${token}` : url, 'tidings.v1.json')
    onCleanup(() => socket.terminate())
    const c = new Client(socket)
    const connected = c.next((f) => f.type === 'connected' || f.type === 'error')
    await new Promise((resolve, reject) => {
      socket.once('open', resolve)
      socket.once('error', reject)
    })
    await connected
    return c
  }

  send(frame: object | string): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame))
  }

  /** Send a frame with a fresh id and wait for the answer carrying that id. */
  request(frame: Record<string, unknown>, timeoutMs = 5_000): Promise<Frame> {
    const id = `r${++this.seq}`
    const answer = this.next((f) => f.id === id, timeoutMs)
    this.send({ ...frame, id })
    return answer
  }

  next(test: (f: Frame) => boolean, timeoutMs = 5_000): Promise<Frame> {
    const seen = this.frames.find(test)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames.map((f) => f.type))}`)), timeoutMs)
      this.waiters.push({ test, resolve: (f) => (clearTimeout(timer), resolve(f)) })
    })
  }

  /** Frames of a type received so far. */
  of(type: string): Frame[] {
    return this.frames.filter((f) => f.type === type)
  }

  whenClosed(timeoutMs = 5_000): Promise<{ code: number; reason: string }> {
    if (this.closed) return Promise.resolve(this.closed)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('socket did not close')), timeoutMs)
      this.closeWaiters.push((c) => (clearTimeout(timer), resolve(c)))
    })
  }
}

/** `[[[[…]]]]` `depth` deep, as text (built without recursion). */
export function nested(depth: number, open = '[', close = ']'): string {
  return open.repeat(depth) + close.repeat(depth)
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** Wait until `check` is true, polling. */
export async function until(check: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}
