import { createMemoryBus } from '@tidings/core/testing'
import { brokerConformance, delayed } from '@tidings/core/conformance'

brokerConformance('memory bus', (count) => {
  const bus = createMemoryBus()
  return Array.from({ length: count }, () => bus.broker())
})

// The same contract when every call (start, publish, close) answers late, as a broker across a network does.
brokerConformance(
  'memory bus, answering 2 ms late',
  (count) => {
    const bus = createMemoryBus()
    return Array.from({ length: count }, () => delayed(bus.broker(), 2))
  },
  { timeoutMs: 30_000 },
)
