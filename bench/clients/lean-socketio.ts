/**
 * Lean Socket.IO load generator, WebSocket transport only: the upgrade on
 * `/socket.io/?EIO=4&transport=websocket`, then Engine.IO packets: `0{…}` (open) is answered
 * with `40` (connect to the main namespace), `40{"sid":…}` means connected (the server joins
 * the room in its connection handler), `2` (ping) is answered `3`, and each `42["tick",…]` is a
 * delivered message (recognised by its first two bytes; only samples are parsed).
 */
import { delivered, noteError, type Opened, type OpenSpec, runClientWorker, timestampIn, withTimeout } from './common.js'
import { LeanWs } from './ws-frames.js'
import { monoMs } from '../lib/stats.js'

const C0 = 0x30
const C2 = 0x32
const C4 = 0x34

function openOne(spec: OpenSpec): Promise<Opened> {
  const t0 = monoMs()
  const path = `${spec.path}?EIO=4&transport=websocket${spec.urlChannels > 0 ? `&channels=${spec.urlChannels}` : ''}`
  let ws!: LeanWs
  const p = new Promise<Opened>((resolve, reject) => {
    let settled = false
    let live = false
    const conn = { close: () => ws.destroy() }
    ws = new LeanWs(spec.port, path, {
      open() {},
      message(buf, start, end) {
        const a = buf[start]
        const b = end - start > 1 ? buf[start + 1] : -1
        if (a === C4 && b === C2) {
          if (live) delivered(() => timestampIn(buf.toString('utf8', start + 2, end)))
        } else if (a === C2 && end - start === 1) ws.send('3')
        else if (a === C0) ws.send('40')
        else if (a === C4 && b === C0) {
          live = true
          settled = true
          const ms = monoMs() - t0
          resolve({ conn, connectMs: ms, readyMs: ms })
        } else if (a === C4 && b === 0x34) noteError(new Error(`connect error: ${buf.toString('utf8', start, end)}`))
      },
      closed(err) {
        if (!settled) {
          settled = true
          reject(err ?? new Error('closed while connecting'))
        }
      },
    })
  })
  return withTimeout(p, spec.timeoutMs, () => ws.destroy(), 'socket.io connect')
}

runClientWorker('lean-socketio', openOne)
