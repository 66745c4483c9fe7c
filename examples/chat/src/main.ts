import { startChatServer } from './server.js'

const chat = await startChatServer(Number(process.env.PORT ?? 3000), process.env.HOST ?? '127.0.0.1')
console.log(`Tidings chat demo on ${chat.url.replace('127.0.0.1', 'localhost')} — open it in two browser windows.`)
console.log(`Admin API: ${chat.url}/realtime/openapi.json (key: ${process.env.TIDINGS_ADMIN_KEY ?? 'demo-admin-key'})`)
const stop = async () => {
  await chat.close()
  process.exit(0)
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
