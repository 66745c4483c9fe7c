/**
 * Raw `ws`: the hand-written broadcast loop, `for (const c of wss.clients) c.send(msg)` (ws turns
 * the string into bytes and frames it once per socket). The main channel is every client; with
 * `?channels=N` in the URL a connection is also in channels `bench-0` … `bench-(N-1)`.
 */
import type { WebSocket } from 'ws'
import { WebSocketServer } from 'ws'
import { serveSystem } from './common.js'
import { channelsOf, MAIN, Rooms } from './raw-rooms.js'

await serveSystem('ws', (server) => {
  const wss = new WebSocketServer({ server, perMessageDeflate: false })
  const rooms = new Rooms<WebSocket>()
  wss.on('connection', (ws, req) => {
    ws.on('error', () => {})
    const n = channelsOf(req.url)
    if (n > 0) {
      rooms.join(ws, n)
      ws.once('close', () => rooms.leave(ws, n))
    }
  })
  return {
    publish(channel, data) {
      const msg = JSON.stringify({ type: 'message', channel, event: 'tick', data })
      if (channel === MAIN) for (const c of wss.clients) c.send(msg)
      else for (const c of rooms.get(channel)) c.send(msg)
    },
    subscribers: (channel) => (channel === MAIN ? wss.clients.size : rooms.get(channel).size),
    connections: () => wss.clients.size,
  }
})
