import { createMemoryPresenceStore, createMemoryStore } from '@tidings/core'
import { delayed, hubConformance } from '@tidings/core/conformance'
import { createMemoryBus } from '@tidings/core/testing'

// Hubs on one memory bus sharing one memory store and one memory presence store.
hubConformance('memory ports', (nodes) => {
  const bus = createMemoryBus()
  const store = createMemoryStore()
  const presenceStore = createMemoryPresenceStore()
  return Array.from({ length: nodes }, () => ({ broker: bus.broker(), store, presenceStore }))
})

// The same, every port answering 2 ms late, as ports across a network do.
hubConformance(
  'memory ports, answering 2 ms late',
  (nodes) => {
    const bus = createMemoryBus()
    const store = delayed(createMemoryStore(), 2)
    const presenceStore = delayed(createMemoryPresenceStore(), 2)
    return Array.from({ length: nodes }, () => ({ broker: delayed(bus.broker(), 2), store, presenceStore }))
  },
  { timeoutMs: 30_000 },
)
