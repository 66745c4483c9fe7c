import { runChat } from './chat.js'

// The Tidings demo on the embedded in-memory hub: every line below is a frame a client received.
const scene = await runChat((line) => console.log(line))
const m = scene.hub.metrics()
console.log(`\nhub: ${m.connections} connections, ${m.published} messages published, ${m.messagesOut} frames delivered, ${Object.values(m.errors).reduce((a, b) => a + b, 0)} errors sent`)
await scene.hub.close()
