export { createRealtime, type Realtime, type RealtimeOptions } from './realtime.js'
export { openApiDocument } from './openapi.js'
export { HTTP_STATUS } from './respond.js'
export type { ApiKeyCheck } from './admin.js'
