import { describe, expect, it } from 'vitest'
import { type ServerFrameOf, createHub, createTokenAuthenticator } from '@tidings/core'
import { testHubs, rejectsWith } from './helpers.js'

const makeHub = testHubs()
const MEMBERS = "auth.uid != null && data.members.includes(auth.uid)"

describe('rules at registration', () => {
  it('a syntax error throws a TypeError at hub creation naming the pattern, the action and the position', () => {
    let err: unknown
    try {
      createHub({ channels: { 'team:{id}': { subscribe: 'auth.uid != && true' } } })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(TypeError)
    const message = (err as Error).message
    expect(message).toContain("'team:{id}'")
    expect(message).toContain('subscribe rule')
    expect(message).toContain('at character 12')
  })

  it('hub.channels.register refuses a bad rule of any action and keeps the previous options', async () => {
    const t = makeHub({ channels: { 'doc:{id}': { subscribe: true } } })
    expect(() => t.hub.channels.register('doc:{id}', { rules: { history: "data.members.includes(" } })).toThrow(/'doc:\{id\}'.*history rule.*at character/)
    expect(() => t.hub.channels.register('doc:{id}', { rules: { presence: 'auth.constructor' } })).toThrow(/presence rule.*cannot be read/)
    expect(() => t.hub.channels.register('doc:{id}', { rules: { publish: "process == 'x'" } })).toThrow(/publish rule.*unknown name 'process'/)
    expect(() => t.hub.channels.register('doc:{id}', { rules: { publish: 'process.exit()' } })).toThrow(/publish rule.*'exit' cannot be called/)
    expect(() => t.hub.channels.register('doc:{id}', { rules: { subscribe: 42 as never } })).toThrow(/subscribe rule is a number/)
    expect(() => t.hub.channels.register('doc:{id}', { rules: { read: true } as never })).toThrow(/unknown rule 'read'/)
    // the pattern still works as registered first
    const c = await t.connect()
    await expect(c.subscribe('doc:1')).resolves.toMatchObject({ type: 'subscribed' })
  })

  it('top-level subscribe/publish win over rules.subscribe/publish', async () => {
    const t = makeHub({ channels: { 'a:*': { subscribe: true, rules: { subscribe: false, publish: 'false' }, publish: "auth.uid == 'alice'" } } })
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('a:1')
    await expect(alice.publish('a:1', 'e', {})).resolves.toMatchObject({ type: 'published' })
  })
})

describe('rules per action over a hub', () => {
  it("the seed's expression: members subscribe, non-members and anonymous users get RT_003", async () => {
    const t = makeHub({ channels: { 'team:{id}': { subscribe: MEMBERS } } })
    t.hub.rooms.create('team:1', { members: ['alice'] })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const anon = await t.connect()
    await expect(alice.subscribe('team:1')).resolves.toMatchObject({ type: 'subscribed' })
    await rejectsWith(bob.subscribe('team:1'), 'RT_003')
    await rejectsWith(anon.subscribe('team:1'), 'RT_003')
    // no room at all: data is null, the rule denies (no throw)
    await rejectsWith(alice.subscribe('team:2'), 'RT_003')
  })

  it('claims cannot forge uid or roles', async () => {
    const t = makeHub({ channels: { 'admin:*': { subscribe: "auth.uid == 'root' || auth.roles.includes('admin')" } } })
    const forger = await t.connect({ identity: { userId: 'bob', roles: [], claims: { uid: 'root', roles: ['admin'] } } })
    await rejectsWith(forger.subscribe('admin:panel'), 'RT_003')
    const admin = await t.connect({ identity: { userId: 'carol', roles: ['admin'] } })
    await expect(admin.subscribe('admin:panel')).resolves.toMatchObject({ type: 'subscribed' })
  })

  it('publish rule: owners publish, members only read; a role change is decided again', async () => {
    const t = makeHub({ channels: { 'team:{id}': { subscribe: MEMBERS, publish: "data.roles[auth.uid] == 'owner'" } } })
    t.hub.rooms.create('team:1', { members: { alice: 'owner', bob: 'member' } })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('team:1')
    await bob.subscribe('team:1')
    await expect(alice.publish('team:1', 'hi', {})).resolves.toMatchObject({ type: 'published' })
    await rejectsWith(bob.publish('team:1', 'hi', {}), 'RT_003')
    t.hub.rooms.addMember('team:1', 'alice', 'member')
    t.hub.rooms.addMember('team:1', 'bob', 'owner')
    await t.settle()
    await rejectsWith(alice.publish('team:1', 'again', {}), 'RT_003')
    await expect(bob.publish('team:1', 'mine', {})).resolves.toMatchObject({ type: 'published' })
  })

  it('presence rule denied: the subscription works without presence; presence requests get RT_003; no presence frames reach it', async () => {
    const t = makeHub({ channels: { 'lobby:*': { subscribe: 'authenticated', presence: true, rules: { presence: "auth.roles.includes('staff')" } } } })
    const bob = await t.connect({ userId: 'bob' })
    const sub = await bob.subscribe('lobby:1', { presence: { name: 'Bob' } })
    expect(sub.presence).toBeUndefined()
    const alice = await t.connect({ identity: { userId: 'alice', roles: ['staff'] } })
    const aliceSub = await alice.subscribe('lobby:1')
    await t.settle()
    // bob never joined presence; alice sees only herself
    expect(aliceSub.presence?.users.map((u) => u.id)).toEqual(['alice'])
    expect((await t.hub.presence.get('lobby:1')).users.map((u) => u.id)).toEqual(['alice'])
    await rejectsWith(bob.getPresence('lobby:1'), 'RT_003')
    await rejectsWith(bob.updatePresence('lobby:1', { state: 'away' }), 'RT_003')
    bob.typing('lobby:1')
    await t.settle()
    expect(bob.received('presence:join')).toEqual([])
    expect(bob.received('error').at(-1)?.code).toBe('RT_003')
    // messages still flow to bob
    await alice.publish('lobby:1', 'hello', {})
    await t.settle()
    expect(bob.messages('lobby:1').map((m) => m.event)).toEqual(['hello'])
    await expect(alice.getPresence('lobby:1')).resolves.toMatchObject({ count: 1 })
  })

  it('history rule denied: history requests get RT_003 and a resume is not replayed (recovered: false, a reason)', async () => {
    const t = makeHub({ channels: { 'log:*': { subscribe: 'authenticated', rules: { history: "auth.roles.includes('auditor')" } } } })
    const writer = await t.connect({ identity: { userId: 'w', roles: ['auditor'] } })
    const start = await writer.subscribe('log:1')
    const first = await writer.publish('log:1', 'a', 1)
    await writer.publish('log:1', 'b', 2)
    await writer.publish('log:1', 'c', 3)
    const bob = await t.connect({ userId: 'bob' })
    await rejectsWith(bob.request({ type: 'history', channel: 'log:1' }), 'RT_003')
    const since = { epoch: start.position!.epoch, offset: first.offset! }
    const resumed = await bob.subscribe('log:1', { since })
    expect(resumed.recovered).toBe(false)
    expect(resumed.reason).toMatch(/not allowed to read the history/)
    await t.settle()
    expect(bob.messages('log:1')).toEqual([])
    // live messages still come
    await writer.publish('log:1', 'd', 4)
    await t.settle()
    expect(bob.messages('log:1').map((m) => m.event)).toEqual(['d'])
    // the auditor resumes with a replay
    const auditor = await t.connect({ identity: { userId: 'aud', roles: ['auditor'] } })
    const replayed = await auditor.subscribe('log:1', { since })
    expect(replayed.recovered).toBe(true)
    await t.settle()
    expect(auditor.messages('log:1').map((m) => m.event)).toEqual(['b', 'c', 'd'])
    await expect(auditor.request<ServerFrameOf<'history'>>({ type: 'history', channel: 'log:1' })).resolves.toMatchObject({ type: 'history' })
  })

  it('presence and history follow subscribe when they have no rule', async () => {
    const t = makeHub({ channels: { 'team:{id}': { subscribe: MEMBERS, presence: true } } })
    t.hub.rooms.create('team:1', { members: ['alice'] })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    const s = await alice.subscribe('team:1')
    expect(s.presence?.users.map((u) => u.id)).toEqual(['alice'])
    await expect(alice.request({ type: 'history', channel: 'team:1' })).resolves.toMatchObject({ type: 'history' })
    await rejectsWith(bob.request({ type: 'history', channel: 'team:1' }), 'RT_003')
  })
})

describe('grants', () => {
  it("a grant's presence data replaces the client's; presence data updates are refused; the grant's end unsubscribes with 'expired'", async () => {
    const t = makeHub({
      channels: {
        'call:{id}': {
          presence: true,
          subscribe: (ctx) => (ctx.auth === 'signed-by-app' ? { presence: { name: 'Alice (verified)' }, expiresAt: t.hub.clock.now() + 1_000 } : false),
        },
      },
    })
    const alice = await t.connect({ userId: 'alice' })
    await rejectsWith(alice.subscribe('call:1', { presence: { name: 'forged' } }), 'RT_003')
    const s = await alice.subscribe('call:1', { presence: { name: 'Queen of England' }, auth: 'signed-by-app' })
    expect(s.presence?.users).toEqual([expect.objectContaining({ id: 'alice', data: { name: 'Alice (verified)' } })])
    await rejectsWith(alice.updatePresence('call:1', { data: { name: 'forged' } }), 'RT_003')
    await expect(alice.updatePresence('call:1', { state: 'away' })).resolves.toMatchObject({ type: 'presence:update' })
    const ended: string[] = []
    t.hub.on('unsubscribe', (e) => ended.push(e.reason ?? ''))
    await t.advance(999)
    expect(alice.received('unsubscribed')).toEqual([])
    await t.advance(1)
    expect(alice.received('unsubscribed')).toEqual([{ type: 'unsubscribed', channel: 'call:1', reason: 'expired' }])
    expect(ended).toEqual(['expired'])
    // subscribing again with fresh credentials works (a new grant)
    await expect(alice.subscribe('call:1', { auth: 'signed-by-app' })).resolves.toMatchObject({ type: 'subscribed' })
  })

  it('an expired grant denies; a malformed grant denies', async () => {
    const t = makeHub({
      channels: {
        'old:*': { subscribe: () => ({ expiresAt: t.hub.clock.now() - 1 }) },
        'bad:*': { subscribe: () => ({ presence: 'not an object' }) as never },
      },
    })
    const c = await t.connect({ userId: 'a' })
    await rejectsWith(c.subscribe('old:1'), 'RT_003')
    await rejectsWith(c.subscribe('bad:1'), 'RT_003')
  })
})

describe('revocation', () => {
  it("a member removed from the room is unsubscribed ('revoked'), cannot publish, read history or resume into it", async () => {
    const t = makeHub({ channels: { 'team:{id}': { subscribe: MEMBERS, publish: MEMBERS } } })
    t.hub.rooms.create('team:1', { members: ['alice', 'bob'] })
    const alice = await t.connect({ userId: 'alice' })
    const bob = await t.connect({ userId: 'bob' })
    await alice.subscribe('team:1')
    const bobSub = await bob.subscribe('team:1')
    const events: Array<[string, string]> = []
    t.hub.on('unsubscribe', (e) => events.push([e.userId ?? '', e.reason ?? '']))
    t.hub.rooms.removeMember('team:1', 'bob')
    await t.settle()
    expect(bob.received('unsubscribed')).toEqual([{ type: 'unsubscribed', channel: 'team:1', reason: 'revoked' }])
    expect(events).toEqual([['bob', 'revoked']])
    expect(alice.received('unsubscribed')).toEqual([])
    await alice.publish('team:1', 'secret', {})
    await t.settle()
    expect(bob.messages('team:1')).toEqual([])
    await rejectsWith(bob.publish('team:1', 'x', {}), 'RT_003')
    await rejectsWith(bob.request({ type: 'history', channel: 'team:1' }), 'RT_003')
    await rejectsWith(bob.subscribe('team:1', { since: bobSub.position! }), 'RT_003')
    expect(bob.messages('team:1')).toEqual([])
  })

  it("deleting the room revokes every subscription (room-deleted), and a room created later is read by the rules", async () => {
    const t = makeHub({ channels: { 'team:{id}': { subscribe: MEMBERS } } })
    t.hub.rooms.create('team:1', { members: ['alice'] })
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('team:1')
    t.hub.rooms.delete('team:1')
    await t.settle()
    expect(alice.received('unsubscribed').map((f) => f.reason)).toEqual(['room-deleted'])
    await rejectsWith(alice.subscribe('team:1'), 'RT_003')
    t.hub.rooms.create('team:1', { members: ['alice'] })
    await expect(alice.subscribe('team:1')).resolves.toMatchObject({ type: 'subscribed' })
  })

  it("a refreshed identity that the rule no longer allows is unsubscribed ('revoked'); others stay", async () => {
    const t = makeHub({
      authenticate: createTokenAuthenticator({
        pro: { userId: 'alice', claims: { plan: 'pro' } },
        free: { userId: 'alice', claims: { plan: 'free' } },
      }),
      channels: { 'premium:*': { subscribe: "auth.plan == 'pro'" } },
    })
    const alice = await t.connect({ token: 'pro' })
    await alice.subscribe('premium:1')
    await alice.subscribe('public:news')
    await alice.request({ type: 'auth', token: 'free' })
    await t.settle()
    expect(alice.received('unsubscribed')).toEqual([{ type: 'unsubscribed', channel: 'premium:1', reason: 'revoked' }])
    await rejectsWith(alice.subscribe('premium:1'), 'RT_003')
    await alice.request({ type: 'auth', token: 'pro' })
    await expect(alice.subscribe('premium:1')).resolves.toMatchObject({ type: 'subscribed' })
  })

  it('a function rule that hangs on a re-check denies after ruleTimeoutMs (revoked)', async () => {
    let hang = false
    const t = makeHub({
      limits: { ruleTimeoutMs: 500 },
      channels: { 'slow:*': { subscribe: (ctx) => (hang ? new Promise<boolean>(() => undefined) : ctx.room?.members.has(ctx.identity.userId ?? '') === true) } },
    })
    t.hub.rooms.create('slow:1', { members: ['alice', 'bob'] })
    const alice = await t.connect({ userId: 'alice' })
    await alice.subscribe('slow:1')
    hang = true
    t.hub.rooms.removeMember('slow:1', 'bob')
    await t.settle()
    expect(alice.received('unsubscribed')).toEqual([])
    await t.advance(500)
    expect(alice.received('unsubscribed')).toEqual([{ type: 'unsubscribed', channel: 'slow:1', reason: 'revoked' }])
  })

  it('a room metadata update that the rule no longer allows revokes the subscription', async () => {
    const t = makeHub({ channels: { 'doc:{id}': { subscribe: '!data.metadata.archived' } } })
    t.hub.rooms.create('doc:1', { metadata: { archived: false } })
    const c = await t.connect({ userId: 'a' })
    await c.subscribe('doc:1')
    t.hub.rooms.update('doc:1', { metadata: { archived: true } })
    await t.settle()
    expect(c.received('unsubscribed')).toEqual([{ type: 'unsubscribed', channel: 'doc:1', reason: 'revoked' }])
  })

  it('a refresh that loses the presence rule leaves presence (others see the leave, requests get RT_003); regaining it joins again', async () => {
    const t = makeHub({
      authenticate: createTokenAuthenticator({
        pro: { userId: 'alice', claims: { plan: 'pro' } },
        free: { userId: 'alice', claims: { plan: 'free' } },
        bob: { userId: 'bob', claims: { plan: 'pro' } },
      }),
      channels: { 'lobby:*': { presence: true, subscribe: 'authenticated', rules: { presence: "auth.plan == 'pro'" } } },
    })
    const bob = await t.connect({ token: 'bob' })
    await bob.subscribe('lobby:1')
    const alice = await t.connect({ token: 'pro' })
    await alice.subscribe('lobby:1')
    await t.settle()
    expect(bob.received('presence:join').map((f) => f.user.id)).toEqual(['alice'])
    await alice.request({ type: 'auth', token: 'free' })
    await t.settle()
    expect(bob.received('presence:leave').map((f) => f.user.id)).toEqual(['alice'])
    expect(alice.received('unsubscribed')).toEqual([])
    await rejectsWith(alice.getPresence('lobby:1'), 'RT_003')
    expect((await t.hub.presence.get('lobby:1')).users.map((u) => u.id)).toEqual(['bob'])
    await alice.request({ type: 'auth', token: 'pro' })
    await t.settle()
    expect(bob.received('presence:join').map((f) => f.user.id)).toEqual(['alice', 'alice'])
    await expect(alice.getPresence('lobby:1')).resolves.toMatchObject({ count: 2 })
  })

  it('a resume that creates its auto room on the way is replayed (its own room is not a stale decision)', async () => {
    const t = makeHub({ channels: { 'chat:{id}': { room: 'auto', subscribe: 'authenticated' } } })
    const alice = await t.connect({ userId: 'alice' })
    const first = await alice.subscribe('chat:1')
    await alice.unsubscribe('chat:1')
    await t.settle()
    expect(t.hub.rooms.get('chat:1')).toBeUndefined()
    await t.hub.publish('chat:1', 'a', 1)
    await t.hub.publish('chat:1', 'b', 2)
    const resumed = await alice.subscribe('chat:1', { since: first.position! })
    await t.settle()
    expect(resumed.recovered).toBe(true)
    expect(alice.messages('chat:1').map((m) => m.event)).toEqual(['a', 'b'])
  })

  it('a resume allowed by a decision that went stale while it was made is not replayed, and is revoked', async () => {
    let holdNext = false
    let release: ((v: boolean) => void) | undefined
    const t = makeHub({
      channels: {
        'gated:*': {
          subscribe: (ctx) => {
            if (holdNext) {
              holdNext = false
              return new Promise<boolean>((r) => (release = r))
            }
            return ctx.room?.members.has(ctx.identity.userId ?? '') === true
          },
        },
      },
    })
    t.hub.rooms.create('gated:1', { members: ['alice', 'bob'] })
    const alice = await t.connect({ userId: 'alice' })
    const first = await alice.subscribe('gated:1')
    await t.hub.publish('gated:1', 'a', 1)
    await t.hub.publish('gated:1', 'b', 2)
    const bob = await t.connect({ userId: 'bob' })
    holdNext = true
    void bob.subscribe('gated:1', { since: first.position! }).catch(() => undefined)
    for (let i = 0; i < 20 && release === undefined; i++) await new Promise((r) => setTimeout(r, 5))
    expect(release).toBeDefined()
    // bob is removed while his subscribe was being decided; the (now stale) decision allows
    t.hub.rooms.removeMember('gated:1', 'bob')
    release!(true)
    await t.settle()
    // either no reply went out before the revocation, or it said recovered: false; never a replay
    expect(bob.received('subscribed').every((f) => f.recovered === false)).toBe(true)
    expect(bob.messages('gated:1')).toEqual([])
    expect(bob.received('unsubscribed')).toEqual([{ type: 'unsubscribed', channel: 'gated:1', reason: 'revoked' }])
    // alice (still a member) is untouched
    expect(alice.received('unsubscribed')).toEqual([])
  })
})
