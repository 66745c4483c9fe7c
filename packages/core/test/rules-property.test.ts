import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { type ServerFrameOf, RealtimeError, createMemoryStore, createTokenAuthenticator } from '@tidings/core'
import { type MemoryClient, createTestHub } from '@tidings/core/testing'

/*
 * The rules property: users × channels × actions (subscribe, publish, presence, history, resume)
 * with room membership changes and identity refreshes mid-stream, each answer of the hub
 * compared with a plain oracle of the same rules written in TypeScript. Also counted: messages
 * that reach a user in a channel the oracle says it may not read (live, or replayed).
 */

const USERS = ['u0', 'u1', 'u2'] as const
const CHANNELS = ['r:0', 'r:1'] as const
type User = (typeof USERS)[number]
type Chan = (typeof CHANNELS)[number]
type Plan = 'pro' | 'free'

const RULES = {
  subscribe: 'auth.uid != null && data.members.includes(auth.uid)',
  publish: "data.roles[auth.uid] == 'owner' || (auth.plan == 'pro' && data.members.includes(auth.uid))",
  presence: "data.members.includes(auth.uid) && auth.plan == 'pro'",
  history: "data.roles[auth.uid] == 'owner' || auth.plan == 'pro'",
}

/** The oracle: the same rules, in plain TypeScript. */
interface World {
  members: Record<Chan, Map<User, 'owner' | 'member'>>
  plan: Record<User, Plan>
}
const oracle = {
  subscribe: (w: World, u: User, c: Chan) => w.members[c].has(u),
  publish: (w: World, u: User, c: Chan) => w.members[c].get(u) === 'owner' || (w.plan[u] === 'pro' && w.members[c].has(u)),
  presence: (w: World, u: User, c: Chan) => w.members[c].has(u) && w.plan[u] === 'pro',
  history: (w: World, u: User, c: Chan) => w.members[c].get(u) === 'owner' || w.plan[u] === 'pro',
}

type Op =
  | { kind: 'subscribe' | 'publish' | 'presence' | 'history' | 'resume'; u: User; c: Chan }
  | { kind: 'add'; u: User; c: Chan; role: 'owner' | 'member' }
  | { kind: 'remove'; u: User; c: Chan }
  | { kind: 'refresh'; u: User; plan: Plan }

const user = fc.constantFrom(...USERS)
const chan = fc.constantFrom(...CHANNELS)
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constantFrom('subscribe' as const, 'publish' as const, 'presence' as const, 'history' as const, 'resume' as const), u: user, c: chan }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('add' as const), u: user, c: chan, role: fc.constantFrom('owner' as const, 'member' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove' as const), u: user, c: chan }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('refresh' as const), u: user, plan: fc.constantFrom('pro' as const, 'free' as const) }) },
)
const initialMembers = fc.record({ 'r:0': fc.subarray([...USERS]), 'r:1': fc.subarray([...USERS]) })
const initialPlans = fc.record({ u0: fc.constantFrom<Plan>('pro', 'free'), u1: fc.constantFrom<Plan>('pro', 'free'), u2: fc.constantFrom<Plan>('pro', 'free') })

const codeOf = async (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (e: unknown) => (e instanceof RealtimeError ? e.code : `threw ${String(e)}`),
  )

describe('rules property', () => {
  it('users × channels × actions with membership changes and identity refreshes: 0 mismatches with the oracle, 0 replays into a revoked channel', async () => {
    let cases = 0
    let mismatches = 0
    let revokedReplays = 0
    const details: string[] = []

    await fc.assert(
      fc.asyncProperty(initialMembers, initialPlans, fc.array(op, { minLength: 5, maxLength: 30 }), async (members0, plans0, ops) => {
        const tokens: Record<string, { userId: string; claims: { plan: Plan } }> = {}
        for (const u of USERS) for (const plan of ['pro', 'free'] as const) tokens[`${u}-${plan}`] = { userId: u, claims: { plan } }
        const store = createMemoryStore()
        const t = createTestHub({
          store,
          authenticate: createTokenAuthenticator(tokens),
          channels: { 'r:{id}': { presence: true, rules: RULES } },
        })
        try {
          const world: World = {
            members: { 'r:0': new Map(members0['r:0'].map((u) => [u, 'member' as const])), 'r:1': new Map(members0['r:1'].map((u) => [u, 'member' as const])) },
            plan: { ...plans0 },
          }
          for (const c of CHANNELS) t.hub.rooms.create(c, { members: Object.fromEntries(world.members[c]) })
          const clients = {} as Record<User, MemoryClient>
          for (const u of USERS) clients[u] = await t.connect({ token: `${u}-${world.plan[u]}` })
          const subscribed = new Set<string>()
          /** Messages of each channel in offset order, with the connection that published them (not echoed to it). */
          const log: Record<Chan, Array<{ offset: number; by: string }>> = { 'r:0': [], 'r:1': [] }
          const seen = new Map<MemoryClient, number>()
          for (const u of USERS) seen.set(clients[u], 0)

          const mismatch = (what: string) => {
            mismatches++
            if (details.length < 10) details.push(what)
          }
          const check = (what: string, got: string, want: string) => {
            cases++
            if (got !== want) mismatch(`${what}: got ${got}, oracle ${want}`)
          }
          /** Messages a client received since the last look, each in a channel the oracle lets it read now. */
          const newMessages = (u: User) => {
            const all = clients[u].messages()
            const fresh = all.slice(seen.get(clients[u]))
            seen.set(clients[u], all.length)
            return fresh
          }

          for (const o of ops) {
            const client = clients[o.u]
            const key = `${o.u} ${'c' in o ? o.c : ''}`
            switch (o.kind) {
              case 'subscribe': {
                const got = await codeOf(client.subscribe(o.c))
                check(`subscribe ${key}`, got, oracle.subscribe(world, o.u, o.c) ? 'ok' : 'RT_003')
                if (got === 'ok') subscribed.add(key)
                break
              }
              case 'publish': {
                const r = client.publish(o.c, 'e', { n: log[o.c].length })
                const got = await codeOf(r)
                check(`publish ${key}`, got, oracle.publish(world, o.u, o.c) ? 'ok' : 'RT_003')
                if (got === 'ok') {
                  const f = (await r) as ServerFrameOf<'published'>
                  log[o.c].push({ offset: f.offset!, by: client.connectionId })
                }
                break
              }
              case 'presence': {
                const got = await codeOf(client.getPresence(o.c))
                const want = !subscribed.has(key) ? 'RT_009' : oracle.presence(world, o.u, o.c) ? 'ok' : 'RT_003'
                check(`presence ${key}`, got, want)
                break
              }
              case 'history': {
                const got = await codeOf(client.request({ type: 'history', channel: o.c }))
                check(`history ${key}`, got, oracle.history(world, o.u, o.c) ? 'ok' : 'RT_003')
                break
              }
              case 'resume': {
                if (subscribed.has(key)) {
                  await client.unsubscribe(o.c)
                  subscribed.delete(key)
                }
                // Something to replay: a server publish (reaches no one this user may not read).
                const published = await t.hub.publish(o.c, 'srv', {})
                log[o.c].push({ offset: published.offset!, by: '' })
                await t.settle()
                newMessages(o.u)
                const { epoch } = await store.position(o.c)
                const top = log[o.c].at(-1)?.offset ?? 0
                const from = Math.max(0, top - 3)
                const p = client.subscribe(o.c, { since: { epoch, offset: from } })
                const got = await codeOf(p)
                check(`resume ${key}`, got, oracle.subscribe(world, o.u, o.c) ? 'ok' : 'RT_003')
                await t.settle()
                const replayed = newMessages(o.u).filter((m) => m.channel === o.c)
                if (got !== 'ok') {
                  revokedReplays += replayed.length
                  break
                }
                subscribed.add(key)
                const frame = (await p) as ServerFrameOf<'subscribed'>
                const historyOk = oracle.history(world, o.u, o.c)
                cases++
                if (frame.recovered !== historyOk) mismatch(`resume ${key}: recovered ${String(frame.recovered)}, oracle history ${historyOk}`)
                const expected = historyOk ? log[o.c].filter((m) => m.offset > from && m.by !== client.connectionId).map((m) => m.offset) : []
                cases++
                if (JSON.stringify(replayed.map((m) => m.offset)) !== JSON.stringify(expected)) mismatch(`resume ${key}: replayed ${JSON.stringify(replayed.map((m) => m.offset))}, oracle ${JSON.stringify(expected)}`)
                if (!historyOk) revokedReplays += replayed.length
                break
              }
              case 'add': {
                world.members[o.c].set(o.u, o.role)
                t.hub.rooms.addMember(o.c, o.u, o.role)
                break
              }
              case 'remove': {
                world.members[o.c].delete(o.u)
                t.hub.rooms.removeMember(o.c, o.u)
                break
              }
              case 'refresh': {
                world.plan[o.u] = o.plan
                const got = await codeOf(client.request({ type: 'auth', token: `${o.u}-${o.plan}` }))
                check(`refresh ${o.u}`, got, 'ok')
                break
              }
            }
            await t.settle()
            // Subscriptions the rules no longer allow are gone (revoked), the others are kept.
            for (const u of USERS) {
              for (const c of CHANNELS) {
                const k = `${u} ${c}`
                if (subscribed.has(k) && !oracle.subscribe(world, u, c)) subscribed.delete(k)
              }
              const info = await t.hub.connections.get(clients[u].connectionId)
              for (const c of CHANNELS) {
                cases++
                const has = info?.channels.includes(c) === true
                if (has !== subscribed.has(`${u} ${c}`)) mismatch(`after ${o.kind}: ${u} in ${c} is ${has}, oracle ${subscribed.has(`${u} ${c}`)}`)
              }
              // Anything that reached a user since the last look is in a channel it may read now.
              for (const m of newMessages(u)) {
                if (!oracle.subscribe(world, u, m.channel as Chan)) revokedReplays++
              }
            }
          }
          // Every subscription the server ended was revoked, and said so.
          for (const u of USERS) for (const f of clients[u].received('unsubscribed')) {
            if (f.id !== undefined) continue // the reply to the client's own unsubscribe
            cases++
            if (f.reason !== 'revoked') mismatch(`unsubscribed with reason ${String(f.reason)}`)
          }
        } finally {
          await t.close()
        }
      }),
      { numRuns: Number(process.env.RULES_RUNS ?? 60), seed: Number(process.env.RULES_SEED ?? 20261203) },
    )
    console.log(`rules-property: cases=${cases} mismatches=${mismatches} revoked-replays=${revokedReplays}`)
    expect(details).toEqual([])
    expect(mismatches).toBe(0)
    expect(revokedReplays).toBe(0)
    expect(cases).toBeGreaterThan(1000)
  }, 120_000)
})
