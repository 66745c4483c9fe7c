// What the page imports from /client.js.
export { Realtime } from '@tidings/client'
