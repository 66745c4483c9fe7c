// Conformance suites for the ports: run them over every implementation (memory, Redis, SQL).
export { storeConformance, type StoreConformanceOptions, type StoreSizes } from './store.js'
export { delayed } from './delayed.js'
