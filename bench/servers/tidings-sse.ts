/** Tidings for the `tidings-sse` system (the same server; the clients choose the channel and the transport). */
import { serveTidings } from './tidings-server.js'

await serveTidings('tidings-sse')
