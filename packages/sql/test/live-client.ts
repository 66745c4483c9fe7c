/**
 * A small live query client for tests and benchmarks: it speaks the frames of
 * docs/protocol.md (§ Live queries) over a real `ws` socket, keeps each channel's result by
 * applying `query:snapshot` and `query:changes`, and checks what a client SDK must check
 * (versions only grow, every change fits the result it applies to).
 */
import { type LiveChange, type LiveDoc, type LiveResultFrame, applyLiveFrame } from '@tidings/core'
import WebSocket from 'ws'

export type Frame = Record<string, unknown> & { type: string }

/** One channel's result as the client holds it. */
export interface LiveView {
  docs: LiveDoc[]
  version: number
  hash: string
  key: string
  /** Every change applied, in order. */
  readonly changes: LiveChange[]
  snapshots: number
  resumed: number
}

/** Applies live query frames to views by channel; throws on a frame that does not fit. */
export class LiveViews {
  readonly views = new Map<string, LiveView>()

  apply(f: Frame): void {
    const channel = f['channel'] as string
    if (f.type !== 'query:snapshot' && f.type !== 'query:changes') return
    const view = this.views.get(channel)
    const step = applyLiveFrame(view, f as unknown as LiveResultFrame)
    if (!step.ok) throw new Error(`${channel}: ${step.reason}`)
    const next: LiveView = view ?? { docs: [], version: 0, hash: '', key: step.state.key, changes: [], snapshots: 0, resumed: 0 }
    next.docs = [...step.state.docs]
    next.version = step.state.version
    next.hash = step.state.hash
    next.key = step.state.key
    if (step.fromScratch) next.snapshots++
    else next.changes.push(...step.changes)
    if (f['resumed']) next.resumed++
    this.views.set(channel, next)
  }
}

/** A raw `ws` client: frames in order, requests by id, waits, live views. */
export async function connectWs(url: string): Promise<WsClient> {
  const ws = new WebSocket(url, 'tidings.v1.json')
  const client = new WsClient(ws)
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  await client.waitFor((f) => f.type === 'connected')
  return client
}

export class WsClient {
  readonly frames: Frame[] = []
  readonly live = new LiveViews()
  /** Errors thrown while applying frames (a change that does not fit): a test asserts this stays empty. */
  readonly faults: string[] = []
  private readonly waiters: Array<{ match: (f: Frame) => boolean; resolve: (f: Frame) => void }> = []
  private n = 0

  constructor(readonly ws: WebSocket) {
    ws.on('message', (raw) => {
      const f = JSON.parse(String(raw)) as Frame
      this.frames.push(f)
      try {
        this.live.apply(f)
      } catch (err) {
        this.faults.push(String(err))
      }
      for (const w of [...this.waiters]) {
        if (w.match(f)) {
          this.waiters.splice(this.waiters.indexOf(w), 1)
          w.resolve(f)
        }
      }
    })
  }

  /** The first frame (already received or to come) that matches. */
  waitFor(match: (f: Frame) => boolean, ms = 10_000, fromIndex = 0): Promise<Frame> {
    const found = this.frames.slice(fromIndex).find(match)
    if (found) return Promise.resolve(found)
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for a frame')), ms)
      this.waiters.push({ match, resolve: (f) => (clearTimeout(timer), resolve(f)) })
    })
  }

  /** Sends a frame with a fresh id; answers the first frame carrying that id. */
  async request(frame: Record<string, unknown>, ms = 10_000): Promise<Frame> {
    const id = `r${++this.n}`
    this.ws.send(JSON.stringify({ ...frame, id }))
    return this.waitFor((f) => f['id'] === id, ms)
  }

  /** Subscribes a live query; resolves with the first result frame (snapshot, or resumed changes). */
  async query(channel: string, query: Record<string, unknown>, resume?: { version: number; hash: string }): Promise<Frame> {
    const from = this.frames.length
    const reply = await this.request({ type: 'subscribe', channel, query, ...(resume ? { resume } : {}) })
    if (reply.type === 'error') return reply
    return this.waitFor((f) => (f.type === 'query:snapshot' || (f.type === 'query:changes' && f['resumed'] === true)) && f['channel'] === channel, 10_000, from)
  }

  close(): void {
    this.ws.close()
  }
}
