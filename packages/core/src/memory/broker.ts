import type { Broker, ClusterMessage } from '../ports/broker.js'

/** The single-node broker: there are no other nodes, so publishing goes nowhere. */
export function createMemoryBroker(): Broker {
  return { start() {}, publish() {}, close() {} }
}

/**
 * An in-process bus joining several hubs, as Redis pub/sub joins hubs in different processes.
 * Each `broker()` is one node's end. Dispatches are copied through JSON and delivered
 * asynchronously, so what crosses the bus behaves as it would over a network: a message that is
 * not plain data makes `publish` reject; a closed end neither publishes nor receives. It passes
 * `brokerConformance` (`@tidings/core/conformance`).
 */
export interface MemoryBus {
  broker(): Broker
  /** Hold (true) or release (false) delivery, to test partitions; held dispatches are kept in order. */
  hold(held: boolean): void
  readonly published: number
}

export function createMemoryBus(): MemoryBus {
  const nodes = new Map<string, (m: ClusterMessage) => void>()
  let held = false
  let backlog: string[] = []
  let published = 0

  const deliver = (json: string) => {
    const { origin } = JSON.parse(json) as ClusterMessage
    for (const [nodeId, fn] of nodes) {
      if (nodeId === origin) continue
      try {
        fn(JSON.parse(json) as ClusterMessage)
      } catch {
        // One node failing to take a message must not keep it from the others.
      }
    }
  }

  return {
    broker() {
      let own: string | undefined
      let ownFn: ((m: ClusterMessage) => void) | undefined
      let closed = false
      return {
        start(nodeId, fn) {
          if (closed) return
          own = nodeId
          ownFn = fn
          nodes.set(nodeId, fn)
        },
        publish(message) {
          if (closed) return
          let json: string
          try {
            json = JSON.stringify(message)
          } catch (err) {
            // Not plain data (a cycle, a BigInt): the publish fails, as it would over a network; never a synchronous throw.
            return Promise.reject(err instanceof Error ? err : new Error(String(err)))
          }
          published++
          if (held) backlog.push(json)
          else queueMicrotask(() => deliver(json))
        },
        close() {
          closed = true
          // Only this end's registration (another end started with the same id keeps its own).
          if (own !== undefined && nodes.get(own) === ownFn) nodes.delete(own)
        },
      }
    },
    hold(h) {
      held = h
      if (!h) {
        const pending = backlog
        backlog = []
        queueMicrotask(() => pending.forEach(deliver))
      }
    },
    get published() {
      return published
    },
  }
}
