/**
 * Lean WebSocket load generator (raw `ws` servers and Tidings over @tidings/ws).
 *
 * Raw: every frame is a delivered message. Tidings: offers `tidings.v1.json`, waits for
 * `connected`, sends `{"type":"subscribe","channel":…}` per channel and is ready at the last
 * `subscribed`; then every `{"type":"message"…` frame is a delivery (recognised by its first bytes,
 * not parsed). At-least-once: the offset of each message is read from its bytes and a cumulative
 * `{"type":"ack",…}` (masked text frame) goes out every `ackEvery` messages, and once more on
 * `report` with `flush`.
 */
import { counters, delivered, noteError, type Opened, type OpenSpec, runClientWorker, timestampIn, withTimeout } from './common.js'
import { LeanWs } from './ws-frames.js'
import { monoMs } from '../lib/stats.js'

const MESSAGE_PREFIX = Buffer.from('{"type":"message"')
const OFFSET = Buffer.from('"offset":')

function isMessage(buf: Buffer, start: number, end: number): boolean {
  // `{"type":"message"`: compare the bytes that tell it apart (the hub writes `type` first).
  return end - start > 17 && buf[start + 9] === 0x6d && buf[start + 10] === 0x65 && buf[start + 16] === 0x22 && buf.compare(MESSAGE_PREFIX, 0, 17, start, start + 17) === 0
}

function offsetIn(buf: Buffer, start: number, end: number): number {
  const at = buf.indexOf(OFFSET, start)
  if (at < 0 || at >= end) return -1
  let v = 0
  for (let i = at + OFFSET.length; i < end; i++) {
    const c = buf[i]!
    if (c < 0x30 || c > 0x39) break
    v = v * 10 + (c - 0x30)
  }
  return v
}

/** Connections with acknowledgments outstanding (at-least-once), for the final flush. */
const unacked = new Set<{ flush(): void }>()

function openOne(spec: OpenSpec): Promise<Opened> {
  const t0 = monoMs()
  const tidings = spec.kind === 'tidings'
  const path = !tidings && spec.urlChannels > 0 ? `${spec.path}?channels=${spec.urlChannels}` : spec.path
  let connectMs = 0
  let ws!: LeanWs
  const p = new Promise<Opened>((resolve, reject) => {
    let settled = false
    let subscribedLeft = spec.channels.length
    let live = false
    let sinceAck = 0
    let lastOffset = -1
    const ackChannel = spec.channels[0]
    const conn = {
      close: () => {
        unacked.delete(tracker)
        ws.destroy()
      },
    }
    const tracker = {
      flush() {
        if (sinceAck > 0 && lastOffset >= 0) {
          ws.send(`{"type":"ack","channel":${JSON.stringify(ackChannel)},"offset":${lastOffset}}`)
          counters.acks++
          sinceAck = 0
        }
      },
    }
    const ready = () => {
      live = true
      settled = true
      resolve({ conn, connectMs, readyMs: monoMs() - t0 })
    }
    ws = new LeanWs(
      spec.port,
      path,
      {
        open() {
          if (tidings) return
          connectMs = monoMs() - t0
          ready()
        },
        message(buf, start, end) {
          if (live) {
            if (tidings && !isMessage(buf, start, end)) return
            delivered(() => timestampIn(buf.toString('utf8', start, end)))
            if (spec.ackEvery > 0) {
              lastOffset = offsetIn(buf, start, end)
              if (++sinceAck === 1) unacked.add(tracker)
              if (sinceAck >= spec.ackEvery) {
                tracker.flush()
                unacked.delete(tracker)
              }
            }
            return
          }
          // Tidings, before it is live: the protocol's own frames.
          let frame: { type?: string; channel?: string; code?: string; message?: string }
          try {
            frame = JSON.parse(buf.toString('utf8', start, end))
          } catch {
            return
          }
          if (frame.type === 'connected') {
            connectMs = monoMs() - t0
            if (subscribedLeft === 0) return ready()
            for (const channel of spec.channels) ws.send(JSON.stringify({ type: 'subscribe', channel }))
          } else if (frame.type === 'subscribed') {
            if (--subscribedLeft === 0) ready()
          } else if (frame.type === 'error') {
            noteError(new Error(`${frame.code}: ${frame.message}`))
          }
        },
        closed(err) {
          unacked.delete(tracker)
          if (!settled) {
            settled = true
            reject(err ?? new Error('closed while connecting'))
          } else if (live && err) counters.closedEarly++
        },
      },
      tidings ? 'tidings.v1.json' : undefined,
    )
  })
  return withTimeout(p, spec.timeoutMs, () => ws.destroy(), `${spec.kind} connect`)
}

runClientWorker('lean-ws', openOne, {
  flush() {
    for (const t of unacked) t.flush()
    unacked.clear()
  },
})
