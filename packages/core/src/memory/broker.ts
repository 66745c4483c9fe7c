import type { Broker, ClusterMessage } from '../ports/broker.js'

/** The single-node broker: there are no other nodes, so publishing goes nowhere. */
export function createMemoryBroker(): Broker {
  return { start() {}, publish() {}, subscribe() {}, unsubscribe() {}, close() {} }
}

/**
 * An in-process bus joining several hubs, as Redis pub/sub joins hubs in different processes.
 * Each `broker()` is one node's end. Messages are copied through JSON and delivered
 * asynchronously, so what crosses the bus behaves as it would over a network: a message that is
 * not plain data makes `publish` reject; a closed end neither publishes nor receives. Channel
 * dispatches reach only the ends subscribed to the channel, replies only the node they are
 * addressed to. It passes `brokerConformance` (`@tidings/core/conformance`).
 */
export interface MemoryBus {
  broker(): Broker
  /** Hold (true) or release (false) delivery, to test partitions; held messages are kept in order. */
  hold(held: boolean): void
  /** Messages published on the bus so far. */
  readonly published: number
  /** Deliveries to nodes so far (one message reaching three nodes is three). */
  readonly delivered: number
}

interface End {
  readonly deliver: (m: ClusterMessage) => void
  readonly channels: Set<string>
  open: boolean
}

export function createMemoryBus(): MemoryBus {
  const nodes = new Map<string, End>()
  let held = false
  let backlog: Array<() => void> = []
  let published = 0
  let delivered = 0

  const give = (end: End, json: string) => {
    delivered++
    try {
      end.deliver(JSON.parse(json) as ClusterMessage)
    } catch {
      // One node failing to take a message must not keep it from the others.
    }
  }

  /** The ends a message goes to, decided when it is published (interest as it was then). */
  const route = (m: ClusterMessage): End[] => {
    if (m.kind === 'reply') {
      const end = m.to === m.origin ? undefined : nodes.get(m.to)
      return end ? [end] : []
    }
    const out: End[] = []
    const channel = m.kind === 'dispatch' && m.target.kind === 'channel' ? m.target.channel : undefined
    for (const [nodeId, end] of nodes) {
      if (nodeId === m.origin) continue
      if (channel !== undefined && !end.channels.has(channel)) continue
      out.push(end)
    }
    return out
  }

  return {
    broker() {
      let own: string | undefined
      let ownEnd: End | undefined
      let closed = false
      const channels = new Set<string>()
      return {
        start(nodeId, fn) {
          if (closed) return
          own = nodeId
          ownEnd = { deliver: fn, channels, open: true }
          nodes.set(nodeId, ownEnd)
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
          const ends = route(message)
          const send = () => {
            for (const end of ends) if (end.open) give(end, json)
          }
          if (held) backlog.push(send)
          else queueMicrotask(send)
        },
        subscribe(channel) {
          if (!closed) channels.add(channel)
        },
        unsubscribe(channel) {
          channels.delete(channel)
        },
        close() {
          closed = true
          channels.clear()
          if (ownEnd) ownEnd.open = false
          // Only this end's registration (another end started with the same id keeps its own).
          if (own !== undefined && nodes.get(own) === ownEnd) nodes.delete(own)
        },
      }
    },
    hold(h) {
      held = h
      if (!h) {
        const pending = backlog
        backlog = []
        queueMicrotask(() => pending.forEach((send) => send()))
      }
    },
    get published() {
      return published
    },
    get delivered() {
      return delivered
    },
  }
}
