/**
 * Raw `ws` with one pre-built frame: the message is framed once (`Sender.frame`, unmasked, FIN,
 * text) and the same buffer is written to every raw socket. The floor Tidings aims at.
 */
import type { Duplex } from 'node:stream'
import * as wsModule from 'ws'
import { WebSocketServer } from 'ws'
import { serveSystem } from './common.js'
import { channelsOf, MAIN, Rooms } from './raw-rooms.js'

interface SenderStatics {
  frame(data: Buffer, options: { fin: boolean; rsv1: boolean; opcode: number; mask: boolean; readOnly: boolean }): Buffer[]
}
// A named export of ws's ESM wrapper (`WebSocket.Sender` on the CommonJS export).
const Sender = (wsModule as unknown as { Sender: SenderStatics }).Sender

function preframe(text: string): Buffer {
  const parts = Sender.frame(Buffer.from(text), { fin: true, rsv1: false, opcode: 1, mask: false, readOnly: false })
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
}

await serveSystem('ws-preframed', (server) => {
  const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: false })
  const sockets = new Set<Duplex>()
  const rooms = new Rooms<Duplex>()
  wss.on('connection', (ws, req) => {
    // The upgrade request's socket is the raw TCP socket ws reads and writes.
    const socket = req.socket
    ws.on('error', () => {})
    sockets.add(socket)
    const n = channelsOf(req.url)
    if (n > 0) rooms.join(socket, n)
    ws.once('close', () => {
      sockets.delete(socket)
      if (n > 0) rooms.leave(socket, n)
    })
  })
  return {
    publish(channel, data) {
      const frame = preframe(JSON.stringify({ type: 'message', channel, event: 'tick', data }))
      if (channel === MAIN) for (const s of sockets) s.write(frame)
      else for (const s of rooms.get(channel)) s.write(frame)
    },
    subscribers: (channel) => (channel === MAIN ? sockets.size : rooms.get(channel).size),
    connections: () => sockets.size,
  }
})
