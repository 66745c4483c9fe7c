import { createHub, createManualClock, createMemoryBus, createMemoryPresenceStore, createMemoryTransport, silentLogger, type Hub } from '@tidings/core'
import { describe, expect, it } from 'vitest'

/*
 * Three hubs on the in-memory bus sharing one presence store; one stops heartbeating without
 * closing (its clock never moves again, so its timers never fire). Its members are removed once,
 * within the TTL, and each leave is announced once.
 */
describe('node heartbeats', () => {
  it('a hub that goes silent has its presence members removed within the TTL, with one leave each', async () => {
    const bus = createMemoryBus()
    const presenceStore = createMemoryPresenceStore()
    const live = createManualClock(0)
    const frozen = createManualClock(0)
    const options = { logger: silentLogger, presenceStore, nodes: { heartbeatMs: 5_000, nodeTtlMs: 20_000 } }
    const hubs: Hub[] = [
      createHub({ ...options, nodeId: 'a', clock: live, broker: bus.broker() }),
      createHub({ ...options, nodeId: 'b', clock: live, broker: bus.broker() }),
      createHub({ ...options, nodeId: 'c', clock: frozen, broker: bus.broker() }),
    ]
    const [a, b, c] = hubs as [Hub, Hub, Hub]
    const watcher = await createMemoryTransport(a).connect({ userId: 'watcher' })
    await watcher.subscribe('presence:room')
    const carol = await createMemoryTransport(c).connect({ userId: 'carol' })
    await carol.subscribe('presence:room')
    const dave = await createMemoryTransport(b).connect({ userId: 'dave' })
    await dave.subscribe('presence:room')
    expect((await a.presence.get('presence:room')).users.map((u) => u.id).sort()).toEqual(['carol', 'dave', 'watcher'])
    const leaves: string[] = []
    for (const h of hubs) h.on('presence:leave', (e) => leaves.push(e.member.id))

    // c stops heartbeating (its clock is frozen) but does not close; a and b go on
    for (let t = 0; t < 25_000; t += 1_000) {
      await live.advance(1_000)
    }
    // removed within the TTL plus one heartbeat (≤ 25 s after c's last beat), once
    expect((await a.presence.get('presence:room')).users.map((u) => u.id).sort()).toEqual(['dave', 'watcher'])
    expect(leaves).toEqual(['carol'])
    expect(watcher.received('presence:leave').map((f) => (f as { user: { id: string } }).user.id)).toEqual(['carol'])
    // b's subscriber saw the one leave too; live nodes keep their members
    expect(dave.received('presence:leave').map((f) => (f as { user: { id: string } }).user.id)).toEqual(['carol'])
    await live.advance(30_000)
    expect((await b.presence.get('presence:room')).users.map((u) => u.id).sort()).toEqual(['dave', 'watcher'])
    expect(leaves).toEqual(['carol'])
    for (const h of hubs) await h.close()
  })

  it('a single hub with the default ports starts no heartbeat timer', async () => {
    const clock = createManualClock(0)
    const hub = createHub({ clock, logger: silentLogger })
    expect(clock.pending()).toBe(0)
    await hub.close()
  })
})
