/*
 * Public API of @tidings/http-kit: re-exports only. Each file imports the ones above it and never
 * this one (test/boundaries.test.ts): edge.ts → http.ts → frames.ts → sessions.ts.
 */
export { type Admission, type EdgeGuard, type EdgeOptions, createEdgeGuard, isEdgeGuard, normalizeOrigin, resolveEdgeGuard } from './edge.js'
export { addressKey } from '@tidings/core'
export { drainBody, hasBody, header, maxMessageSizeOf, normalizePrefix, positiveOption, randomToken, requestTarget, SECRET_HEADER, secretMatches, sendError, sendJson, sendNoContent, sendRefusal } from './http.js'
export { type FramesResult, MAX_FRAMES_PER_REQUEST, readFrames, type ReceiveOptions, receiveFrames } from './frames.js'
export { AUTH_TIMED_OUT, type HttpSessionTransport, type HttpSessionTransportOptions, type RegisteredSession, type RegistryOptions, type SessionRoute, SessionRegistry, SHUTTING_DOWN } from './sessions.js'
