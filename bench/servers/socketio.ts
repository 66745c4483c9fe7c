/**
 * Socket.IO 4.8, WebSocket transport only: every connection joins room `bench` (or, with
 * `?channels=N` in the handshake query, rooms `bench-0` … `bench-(N-1)`); publish is
 * `io.to(room).emit('tick', data)`.
 */
import { Server } from 'socket.io'
import { serveSystem } from './common.js'

await serveSystem('socketio', (server) => {
  const io = new Server(server, { transports: ['websocket'], serveClient: false, perMessageDeflate: false, httpCompression: false })
  io.on('connection', (socket) => {
    const n = Number(socket.handshake.query['channels'] ?? 0)
    if (Number.isInteger(n) && n > 0 && n <= 1000) {
      const rooms: string[] = []
      for (let i = 0; i < n; i++) rooms.push(`bench-${i}`)
      void socket.join(rooms)
    } else void socket.join('bench')
  })
  return {
    publish(channel, data) {
      io.to(channel).emit('tick', data)
    },
    subscribers: (channel) => io.of('/').adapter.rooms.get(channel)?.size ?? 0,
    connections: () => io.engine.clientsCount,
  }
})
