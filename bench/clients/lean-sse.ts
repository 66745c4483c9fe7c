/**
 * Lean SSE load generator for Tidings (`GET /realtime/sse` over `net`): reads the response
 * headers, de-chunks the body (Node answers `Transfer-Encoding: chunked`), splits events at blank
 * lines and looks only at each event's `event:` name; `message` events are counted, 1 in 100
 * parsed for latency. The `session` event gives the id and secret; after `connected` a `subscribe`
 * is POSTed (`x-tidings-secret`) per channel, ready at the last `subscribed`. Closing sends
 * `DELETE /realtime/sse/:id` so the session ends at once on the server.
 */
import http from 'node:http'
import net from 'node:net'
import { counters, delivered, noteError, type Opened, type OpenSpec, runClientWorker, timestampIn, withTimeout } from './common.js'
import { monoMs } from '../lib/stats.js'

const agent = new http.Agent({ keepAlive: true, maxSockets: 32 })

function post(port: number, path: string, secret: string, method: 'POST' | 'DELETE', body?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method, agent, headers: { 'x-tidings-secret': secret, ...(body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {}) }, timeout: 10_000 },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
        res.on('error', reject)
      },
    )
    req.on('timeout', () => req.destroy(new Error(`${method} timed out`)))
    req.on('error', reject)
    req.end(body)
  })
}

class LeanSse {
  readonly socket: net.Socket
  private headDone = false
  private head = ''
  private chunkLeft = -1 // bytes of chunk data still to read; -1: reading a size line
  private sizeLine = ''
  private skipCrlf = 0
  private text = ''
  done = false

  constructor(
    port: number,
    path: string,
    private readonly onEvent: (type: string, block: string) => void,
    private readonly onClosed: (err?: Error) => void,
  ) {
    this.socket = net.connect({ port, host: '127.0.0.1', noDelay: true })
    this.socket.on('connect', () => this.socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n\r\n`))
    this.socket.on('data', (chunk: Buffer) => this.data(chunk))
    this.socket.on('error', (err) => this.end(err))
    this.socket.on('close', () => this.end())
  }

  private data(chunk: Buffer): void {
    let s = chunk.toString('latin1')
    if (!this.headDone) {
      this.head += s
      const at = this.head.indexOf('\r\n\r\n')
      if (at < 0) return
      const status = this.head.slice(0, this.head.indexOf('\r\n'))
      if (!/^HTTP\/1\.1 200 /.test(status)) {
        this.socket.destroy()
        return this.end(new Error(`SSE refused: ${status}`))
      }
      if (!/\r\ntransfer-encoding: *chunked/i.test(this.head.slice(0, at))) {
        this.socket.destroy()
        return this.end(new Error('expected a chunked response'))
      }
      this.headDone = true
      s = this.head.slice(at + 4)
      this.head = ''
    }
    // De-chunk.
    let i = 0
    while (i < s.length) {
      if (this.skipCrlf > 0) {
        i++
        this.skipCrlf--
      } else if (this.chunkLeft < 0) {
        const nl = s.indexOf('\r\n', i)
        if (nl < 0) {
          this.sizeLine += s.slice(i)
          break
        }
        const size = parseInt(this.sizeLine + s.slice(i, nl), 16)
        this.sizeLine = ''
        i = nl + 2
        if (size === 0) {
          this.socket.destroy()
          return this.end()
        }
        this.chunkLeft = size
      } else {
        const take = Math.min(this.chunkLeft, s.length - i)
        this.text += s.slice(i, i + take)
        i += take
        this.chunkLeft -= take
        if (this.chunkLeft === 0) {
          this.chunkLeft = -1
          this.skipCrlf = 2
        }
      }
    }
    // Events end at a blank line.
    let from = 0
    for (;;) {
      const end = this.text.indexOf('\n\n', from)
      if (end < 0) break
      const block = this.text.slice(from, end)
      from = end + 2
      const e = block.indexOf('event: ')
      if (e >= 0) {
        const nl = block.indexOf('\n', e)
        this.onEvent(block.slice(e + 7, nl < 0 ? block.length : nl), block)
        if (this.done) return
      }
    }
    this.text = from === 0 ? this.text : this.text.slice(from)
  }

  private end(err?: Error): void {
    if (this.done) return
    this.done = true
    this.onClosed(err)
  }
}

function dataOf(block: string): string {
  const d = block.indexOf('data: ')
  if (d < 0) return ''
  const nl = block.indexOf('\n', d)
  return block.slice(d + 6, nl < 0 ? block.length : nl)
}

function openOne(spec: OpenSpec): Promise<Opened> {
  const t0 = monoMs()
  let sse!: LeanSse
  let session = ''
  let secret = ''
  const p = new Promise<Opened>((resolve, reject) => {
    let settled = false
    let live = false
    let connectMs = 0
    let subscribedLeft = spec.channels.length
    const conn = {
      close: async () => {
        const s = sse.socket as net.Socket & { resetAndDestroy?: () => void }
        if (session && !sse.done) await post(spec.port, `${spec.path}/sse/${session}`, secret, 'DELETE').catch(noteError)
        if (s.resetAndDestroy && !s.connecting && !s.destroyed) s.resetAndDestroy()
        else s.destroy()
      },
    }
    const ready = () => {
      live = true
      settled = true
      resolve({ conn, connectMs, readyMs: monoMs() - t0 })
    }
    sse = new LeanSse(
      spec.port,
      `${spec.path}/sse`,
      (type, block) => {
        if (type === 'message') {
          if (live) delivered(() => timestampIn(dataOf(block)))
        } else if (type === 'session') {
          const v = JSON.parse(dataOf(block)) as { session: string; secret: string }
          session = v.session
          secret = v.secret
        } else if (type === 'connected') {
          connectMs = monoMs() - t0
          if (subscribedLeft === 0) return ready()
          for (const channel of spec.channels) {
            post(spec.port, `${spec.path}/sse/${session}`, secret, 'POST', JSON.stringify({ type: 'subscribe', channel })).then(
              (status) => {
                if (status !== 204) noteError(new Error(`subscribe POST answered ${status}`))
              },
              noteError,
            )
          }
        } else if (type === 'subscribed') {
          if (--subscribedLeft === 0) ready()
        } else if (type === 'error') noteError(new Error(dataOf(block)))
      },
      (err) => {
        if (!settled) {
          settled = true
          reject(err ?? new Error('closed while connecting'))
        } else if (live && err) counters.closedEarly++
      },
    )
  })
  return withTimeout(p, spec.timeoutMs, () => sse.socket.destroy(), 'sse connect')
}

runClientWorker('lean-sse', openOne, {
  // Idle keep-alive sockets of the POST agent would count as connections on the server.
  afterClose: async () => agent.destroy(),
})
