// Conformance suites for the ports: run them over every implementation (memory, Redis, SQL).
export { storeConformance, type StoreConformanceOptions } from './store.js'
