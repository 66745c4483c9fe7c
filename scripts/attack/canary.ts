/**
 * The canary: one authenticated subscriber on an at-least-once channel that the server publishes
 * on every ~10 ms while the attack runs. It acknowledges what it got, resumes with `since` if its
 * connection drops, and at the end says which offsets never arrived.
 */
import WebSocket from 'ws'

export class Canary {
  readonly received = new Set<number>()
  disconnects = 0
  private epoch: string | undefined
  private contiguous = 0
  private ws: WebSocket | undefined
  private stopping = false
  private ready: (() => void) | undefined

  constructor(
    private readonly url: string,
    private readonly channel: string,
  ) {}

  /** Connect and subscribe; resolves once `subscribed` arrived. */
  start(): Promise<void> {
    return new Promise((resolve) => {
      this.ready = resolve
      this.connect()
    })
  }

  private connect(): void {
    const ws = new WebSocket(this.url, 'tidings.v1.json')
    this.ws = ws
    ws.on('error', () => {})
    ws.on('message', (raw) => {
      const f = JSON.parse(raw.toString()) as { type: string; channel?: string; offset?: number; position?: { epoch: string } }
      if (f.type === 'connected') {
        const since = this.epoch === undefined ? {} : { since: { epoch: this.epoch, offset: this.contiguous } }
        ws.send(JSON.stringify({ type: 'subscribe', id: 'canary', channel: this.channel, ...since }))
      } else if (f.type === 'subscribed' && f.channel === this.channel) {
        if (f.position) this.epoch = f.position.epoch
        this.ready?.()
        this.ready = undefined
      } else if (f.type === 'message' && f.channel === this.channel && typeof f.offset === 'number') {
        this.received.add(f.offset)
        while (this.received.has(this.contiguous + 1)) this.contiguous++
        ws.send(JSON.stringify({ type: 'ack', channel: this.channel, offset: this.contiguous }))
      }
    })
    ws.on('close', () => {
      if (this.stopping) return
      this.disconnects++
      setTimeout(() => this.connect(), 100)
    })
  }

  /** Offsets from 1 to `top` that never arrived. */
  lost(top: number): number {
    let n = 0
    for (let o = 1; o <= top; o++) if (!this.received.has(o)) n++
    return n
  }

  stop(): void {
    this.stopping = true
    this.ws?.close(1000)
  }
}
