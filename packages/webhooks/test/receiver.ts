import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { WebhookPayload } from '../src/index.js'

/** One request as the receiver got it: raw body and headers, and how it was answered. */
export interface Received {
  readonly n: number
  readonly at: number
  readonly headers: IncomingHttpHeaders
  readonly body: string
  readonly payload: WebhookPayload
  status: number | 'hung'
}

/** How the receiver answers its n-th request (0-based): a status, after a delay; or never. */
export type Answer = { status: number; delayMs?: number; headers?: Record<string, string> } | 'hang'

/**
 * A real HTTP webhook receiver on a free port. It records every request and keeps, per event
 * id, whether a 2xx was already answered for it: `duplicatesAfterAck` counts events that came
 * again after that.
 */
export class Receiver {
  readonly requests: Received[] = []
  /** Event ids a 2xx answer has acknowledged. */
  readonly acked = new Set<string>()
  duplicatesAfterAck = 0
  /** Requests being handled at once, and the most seen. */
  concurrent = 0
  maxConcurrent = 0
  url = ''
  private readonly hung = new Set<() => void>()
  private waiters: Array<() => void> = []

  private constructor(
    private readonly server: Server,
    public answer: (n: number, payload: WebhookPayload) => Answer,
  ) {}

  static async start(answer: (n: number, payload: WebhookPayload) => Answer = () => ({ status: 200 })): Promise<Receiver> {
    const server = createServer()
    const r = new Receiver(server, answer)
    server.on('request', (req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8')
        const payload = JSON.parse(body) as WebhookPayload
        const rec: Received = { n: r.requests.length, at: performance.now(), headers: req.headers, body, payload, status: 'hung' }
        r.requests.push(rec)
        for (const e of payload.events) if (r.acked.has(e.id)) r.duplicatesAfterAck++
        r.concurrent++
        r.maxConcurrent = Math.max(r.maxConcurrent, r.concurrent)
        const a = r.answer(rec.n, payload)
        const finish = () => {
          r.concurrent--
          r.notify()
        }
        if (a === 'hang') {
          const release = () => {
            res.destroy()
            finish()
          }
          r.hung.add(release)
          res.on('close', () => {
            if (r.hung.delete(release)) finish()
          })
          r.notify()
          return
        }
        setTimeout(() => {
          rec.status = a.status
          // Acknowledged once the answer is on its way: from here on these ids must never come again.
          if (a.status >= 200 && a.status < 300) for (const e of payload.events) r.acked.add(e.id)
          res.writeHead(a.status, { 'content-type': 'text/plain', ...a.headers })
          res.end(a.status < 300 ? 'ok' : 'no')
          finish()
        }, a.delayMs ?? 0)
      })
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    r.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`
    return r
  }

  /** Every event received, in arrival order, retries included. */
  events(): WebhookPayload['events'] {
    return this.requests.flatMap((r) => r.payload.events)
  }

  /** Events acknowledged, in the order of their acknowledgment, each once. */
  ackedEvents(): WebhookPayload['events'] {
    return this.requests.filter((r) => typeof r.status === 'number' && r.status < 300).flatMap((r) => r.payload.events)
  }

  private notify(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  /** Wait until `pred` holds (checked after each request), at most `ms`. */
  async until(pred: () => boolean, ms = 5_000): Promise<void> {
    const end = Date.now() + ms
    while (!pred()) {
      if (Date.now() > end) throw new Error('receiver: condition not reached in time')
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve)
        setTimeout(resolve, 20)
      })
    }
  }

  async close(): Promise<void> {
    for (const release of [...this.hung]) release()
    this.server.closeAllConnections()
    this.server.close()
    await once(this.server, 'close').catch(() => undefined)
  }
}
