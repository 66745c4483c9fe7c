import { afterEach, describe, expect, it } from 'vitest'
import type { Broker, ClusterMessage, Dispatch, Reply, Request } from '../ports/broker.js'
import { randomId } from '../util.js'

export interface BrokerConformanceOptions {
  /** Timeout of each test, in ms. Default 10,000. */
  readonly timeoutMs?: number | undefined
  /**
   * How long the suite waits, once everything it expects has arrived, to be sure nothing more
   * arrives (a message to its own origin, a second copy, a delivery after close). Default 50 ms.
   */
  readonly quietMs?: number | undefined
  /** First part of the node ids the suite uses (each run adds a random part). Default `'conformance'`. */
  readonly prefix?: string | undefined
}

/**
 * The `Broker` contract as a vitest suite: run it over every implementation.
 *
 *   brokerConformance('memory bus', (count) => {
 *     const bus = createMemoryBus()
 *     return Array.from({ length: count }, () => bus.broker())
 *   })
 *
 * `makeBrokers(count)` gives `count` brokers on one bus (one per node, not started). Node ids
 * are random per test, and only messages from the suite's own nodes are counted, so the suite
 * runs on a shared bus (a Redis server other tests use).
 */
/** The channel every node of the suite subscribes to (unless a test says otherwise). */
const CHANNEL = 'chat:conformance'

export function brokerConformance(name: string, makeBrokers: (count: number) => Broker[] | Promise<Broker[]>, options: BrokerConformanceOptions = {}): void {
  const timeout = options.timeoutMs ?? 10_000
  const quietMs = options.quietMs ?? 50
  const run = `${options.prefix ?? 'conformance'}:${randomId()}`
  let counter = 0
  const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

  describe(`Broker conformance: ${name}`, () => {
    let open: Broker[] = []

    afterEach(async () => {
      const brokers = open
      open = []
      for (const b of brokers) await b.close()
    }, timeout)

    interface Node {
      readonly id: string
      readonly broker: Broker
      /** Messages delivered to this node (from the suite's nodes). */
      readonly got: ClusterMessage[]
      /** Make `deliver` throw (a failing hub). */
      failing: boolean
    }

    /** `count` brokers on one bus, started as nodes with fresh ids. */
    const nodes = async (count: number, start = true): Promise<Node[]> => {
      const brokers = await makeBrokers(count)
      expect(brokers).toHaveLength(count)
      open.push(...brokers)
      const test = `${run}:${(++counter).toString(36)}`
      const out = brokers.map((broker, i) => ({ id: `${test}:n${i}`, broker, got: [] as ClusterMessage[], failing: false }))
      if (start) for (const n of out) await startNode(n, test)
      return out
    }
    /** Start a node and subscribe it to the suite's channel (unless told not to). */
    const startNode = async (n: Node, test = n.id.slice(0, n.id.lastIndexOf(':')), subscribe = true) => {
      await n.broker.start(n.id, (m) => {
        if (!m.origin.startsWith(`${test}:`)) return // another test or run on a shared bus
        n.got.push(m)
        if (n.failing) throw new Error('deliver failed (as the conformance suite asked)')
      })
      if (subscribe) await n.broker.subscribe(CHANNEL)
    }

    const dispatch = (origin: string, n: number, extra: Partial<Dispatch> = {}): Dispatch => ({
      kind: 'dispatch',
      origin,
      target: { kind: 'channel', channel: CHANNEL },
      frame: { type: 'message', channel: 'chat:conformance', event: 'say', data: { n, nested: { list: [n, { deep: true }] } }, id: `m${n}`, timestamp: new Date(1_767_225_600_000 + n).toISOString() } as Dispatch['frame'],
      ...extra,
    })
    const request = (origin: string, id = 'q1'): Request => ({ kind: 'request', origin, id, query: { op: 'disconnect', userId: 'alice', reason: 'conformance' } })
    const reply = (origin: string, to: string, id = 'q1'): Reply => ({ kind: 'reply', origin, to, id, result: { closed: 2, list: [{ id: 'c1', channels: ['a', 'b'] }] } })
    /** The `n` of a dispatch built by `dispatch`. */
    const numberOf = (m: ClusterMessage) => (m.kind === 'dispatch' ? ((m.frame as { data: { n: number } }).data.n as number) : -1)

    /** Wait until `check` holds (re-checked every few ms), then `quietMs` more, and check again. */
    const eventually = async (check: () => void, ms = timeout - 1_000) => {
      const deadline = Date.now() + ms
      for (;;) {
        try {
          check()
          break
        } catch (err) {
          if (Date.now() > deadline) throw err
          await sleep(2)
        }
      }
      await sleep(quietMs)
      check()
    }

    it('every other node receives each message once; the publisher never receives its own (origin)', async () => {
      const [a, b, c] = await nodes(3)
      await a!.broker.publish(dispatch(a!.id, 1))
      await eventually(() => {
        expect(b!.got.map(numberOf)).toEqual([1])
        expect(c!.got.map(numberOf)).toEqual([1])
        expect(a!.got).toEqual([])
      })
    }, timeout)

    it('messages arrive in publish order per publisher, also when several publish at once and nobody awaits', async () => {
      const ns = await nodes(3)
      const COUNT = 50
      const published: Array<unknown> = []
      for (let i = 1; i <= COUNT; i++) for (const n of ns) published.push(n.broker.publish(dispatch(n.id, i)))
      await Promise.all(published)
      await eventually(() => {
        for (const receiver of ns) {
          for (const sender of ns) {
            const from = receiver.got.filter((m) => m.origin === sender.id).map(numberOf)
            expect(from, `${receiver.id} from ${sender.id}`).toEqual(sender === receiver ? [] : Array.from({ length: COUNT }, (_, i) => i + 1))
          }
        }
      })
    }, timeout)

    it('dispatches of every target kind, requests and replies cross intact (plain data, deep-equal)', async () => {
      const [a, b] = await nodes(2)
      const sent: ClusterMessage[] = [
        dispatch(a!.id, 1),
        dispatch(a!.id, 2, { target: { kind: 'direct', users: ['alice', 'bob'], connections: ['c1'] }, exclude: { connections: ['c9'], users: ['eve'] }, priority: 'high', volatile: true, epoch: 'e.1' }),
        dispatch(a!.id, 3, { target: { kind: 'all' }, where: { field: 'user.roles', op: 'contains', value: 'admin' } as unknown as Dispatch['where'] }),
        request(a!.id),
        { kind: 'request', origin: a!.id, id: 'q2', query: { op: 'kick', channel: 'chat:x', userId: 'bob', reason: 'spam' } },
        reply(a!.id, b!.id),
      ]
      for (const m of sent) await a!.broker.publish(m)
      await eventually(() => expect(b!.got).toEqual(sent))
    }, timeout)

    it('a deep copy arrives: not the published object, and each node gets its own', async () => {
      const [a, b, c] = await nodes(3)
      const m = dispatch(a!.id, 7)
      await a!.broker.publish(m)
      await eventually(() => {
        expect(b!.got).toHaveLength(1)
        expect(c!.got).toHaveLength(1)
      })
      const atB = b!.got[0] as Dispatch
      const atC = c!.got[0] as Dispatch
      expect(atB).toEqual(m)
      expect(atB).not.toBe(m)
      expect(atB.frame).not.toBe(m.frame)
      expect(atB).not.toBe(atC)
      expect(atB.frame).not.toBe(atC.frame)
      // a node changing its copy changes nobody else's
      ;((atB.frame as { data: { nested: { list: unknown[] } } }).data.nested.list as unknown[]).push('changed by b')
      expect(atC).toEqual(m)
      expect(m.frame).toEqual(dispatch(a!.id, 7).frame)
    }, timeout)

    it('publish never throws synchronously, even for data that cannot be serialised (it rejects or drops it)', async () => {
      const [a, b] = await nodes(2)
      const circular: Record<string, unknown> = { n: 1 }
      circular['self'] = circular
      for (const bad of [dispatch(a!.id, 1, { frame: { type: 'message', channel: 'x', event: 'e', data: circular } as Dispatch['frame'] }), dispatch(a!.id, 2, { frame: { type: 'message', channel: 'x', event: 'e', data: { big: 10n } } as unknown as Dispatch['frame'] })]) {
        let answer: unknown
        expect(() => {
          answer = a!.broker.publish(bad)
        }).not.toThrow()
        await Promise.resolve(answer).catch(() => undefined)
      }
      // the broker still works afterwards
      await a!.broker.publish(dispatch(a!.id, 3))
      await eventually(() => expect(b!.got.map(numberOf)).toEqual([3]))
    }, timeout)

    it('a node whose deliver throws does not keep messages from the others, and still gets later ones', async () => {
      const [a, b, c] = await nodes(3)
      b!.failing = true
      await a!.broker.publish(dispatch(a!.id, 1))
      await eventually(() => expect(c!.got.map(numberOf)).toEqual([1]))
      b!.failing = false
      await a!.broker.publish(dispatch(a!.id, 2))
      await eventually(() => {
        expect(c!.got.map(numberOf)).toEqual([1, 2])
        expect(b!.got.map(numberOf)).toEqual([1, 2])
      })
    }, timeout)

    it('close stops delivery to that node, others still get messages, and close is idempotent', async () => {
      const [a, b, c] = await nodes(3)
      await a!.broker.publish(dispatch(a!.id, 1))
      await eventually(() => expect(c!.got.map(numberOf)).toEqual([1]))
      await c!.broker.close()
      await c!.broker.close() // idempotent
      await a!.broker.publish(dispatch(a!.id, 2))
      await b!.broker.publish(dispatch(b!.id, 3))
      await eventually(() => {
        expect(b!.got.map(numberOf)).toEqual([1, 2])
        expect(a!.got.map(numberOf)).toEqual([3])
        expect(c!.got.map(numberOf)).toEqual([1])
      })
    }, timeout)

    it('publishing on a closed broker neither throws synchronously nor delivers', async () => {
      const [a, b] = await nodes(2)
      await a!.broker.close()
      let answer: unknown
      expect(() => {
        answer = a!.broker.publish(dispatch(a!.id, 1))
      }).not.toThrow()
      await Promise.resolve(answer).catch(() => undefined)
      await sleep(quietMs)
      expect(b!.got).toEqual([])
    }, timeout)

    it('a node receives what others publish once its start() has answered, and closing before start is harmless', async () => {
      const [a, b, late] = await nodes(3, false)
      await startNode(a!)
      await startNode(b!)
      await a!.broker.publish(dispatch(a!.id, 1))
      await eventually(() => expect(b!.got.map(numberOf)).toEqual([1]))
      await startNode(late!)
      await a!.broker.publish(dispatch(a!.id, 2))
      await eventually(() => {
        // (whether a message published before start() arrives is the implementation's choice)
        expect(late!.got.map(numberOf).filter((n) => n === 2)).toEqual([2])
        expect(b!.got.map(numberOf)).toEqual([1, 2])
      })
      const [never] = await nodes(1, false)
      await never!.broker.close()
      await never!.broker.close()
    }, timeout)

    it('a channel dispatch reaches only the nodes subscribed to that channel; unsubscribe stops it; subscribing twice is once', async () => {
      const [a, b, c] = await nodes(3)
      await c!.broker.unsubscribe(CHANNEL)
      await a!.broker.publish(dispatch(a!.id, 1))
      await eventually(() => expect(b!.got.map(numberOf)).toEqual([1]))
      expect(c!.got).toEqual([])
      await b!.broker.subscribe(CHANNEL) // twice: still one subscription
      await b!.broker.unsubscribe(CHANNEL)
      await c!.broker.subscribe(CHANNEL)
      await a!.broker.publish(dispatch(a!.id, 2))
      await eventually(() => expect(c!.got.map(numberOf)).toEqual([2]))
      expect(b!.got.map(numberOf)).toEqual([1])
      await b!.broker.unsubscribe('chat:never-subscribed') // harmless
    }, timeout)

    it('subscribe, unsubscribe, subscribe made without awaiting take effect in call order', async () => {
      const [a, b] = await nodes(2)
      const calls = [b!.broker.unsubscribe(CHANNEL), b!.broker.subscribe(CHANNEL), b!.broker.unsubscribe(CHANNEL), b!.broker.subscribe(CHANNEL)]
      await Promise.all(calls)
      await a!.broker.publish(dispatch(a!.id, 1))
      await eventually(() => expect(b!.got.map(numberOf)).toEqual([1]))
    }, timeout)

    it('dispatches to users, connections or everyone and requests reach every other node, subscribed or not', async () => {
      const [a, b, c] = await nodes(3)
      await b!.broker.unsubscribe(CHANNEL)
      await c!.broker.unsubscribe(CHANNEL)
      const sent: ClusterMessage[] = [dispatch(a!.id, 1, { target: { kind: 'direct', users: ['bob'], connections: [] } }), dispatch(a!.id, 2, { target: { kind: 'all' } }), request(a!.id)]
      for (const m of sent) await a!.broker.publish(m)
      await eventually(() => {
        expect(b!.got).toEqual(sent)
        expect(c!.got).toEqual(sent)
      })
    }, timeout)

    it('a reply reaches only the node it is addressed to', async () => {
      const [a, b, c] = await nodes(3)
      await b!.broker.publish(reply(b!.id, a!.id, 'x1'))
      await c!.broker.publish(reply(c!.id, a!.id, 'x1'))
      await eventually(() => expect(a!.got.map((m) => m.origin).sort()).toEqual([b!.id, c!.id].sort()))
      expect(b!.got).toEqual([])
      expect(c!.got).toEqual([])
      // to a node that is gone: delivered to nobody, no error
      await a!.broker.publish(reply(a!.id, `${a!.id}-gone`, 'x2'))
      await sleep(quietMs)
      expect(b!.got).toEqual([])
      expect(c!.got).toEqual([])
    }, timeout)
  })
}
