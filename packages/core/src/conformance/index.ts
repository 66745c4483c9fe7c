// Conformance suites for the ports: run them over every implementation (memory, Redis, SQL).
export { storeConformance, type StoreConformanceOptions, type StoreSizes } from './store.js'
export type { StoreCapability } from './store-optional.js'
export { presenceConformance, type PresenceConformanceOptions } from './presence.js'
export { delayed, PORT_METHODS, type DelayedOptions } from './delayed.js'
export { brokerConformance, type BrokerConformanceOptions } from './broker.js'
export { limitConformance, type LimitConformanceOptions } from './limits.js'
export { sessionConformance, captureSessions, type SessionUnderTest, type SessionConformanceOptions, type CapturedSession, type HandleCalls } from './session.js'
export { hubConformance, type HubConformanceOptions, type HubPorts } from './hub.js'
