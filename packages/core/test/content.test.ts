import { describe, expect, it } from 'vitest'
import { type ContentContext, type ContentFilter, type HubEvents, RealtimeError, createHub, createSpamFilter } from '@tidings/core'
import { createTestHub } from '@tidings/core/testing'

// The content filter hook (HubOptions.content) and the ready-made spam filter.

const CHANNELS = { 'chat:*': { subscribe: true, publish: true } } as const

function ctx(over: Partial<ContentContext> = {}): ContentContext {
  return { channel: 'chat:1', pattern: 'chat:*', event: 'msg', data: { text: 'hi' }, userId: 'ada', connectionId: 'c1', size: 40, now: 0, ...over }
}

async function rejection(p: Promise<unknown>): Promise<RealtimeError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(RealtimeError)
  return err as RealtimeError
}

describe('createSpamFilter', () => {
  it('repeats: the 4th identical message within the window is refused with RT_006, a different one and a later one pass', () => {
    const f = createSpamFilter({ repeats: { max: 3, windowMs: 1000 }, burst: false })
    for (let i = 0; i < 3; i++) expect(f(ctx({ now: i }))).toBeUndefined()
    // refused without retryAfterMs: the client SDK must not resend the same message by itself
    expect(f(ctx({ now: 3 }))).toEqual({ refuse: 'RT_006', reason: 'the same message more than 3 times in 1000 ms' })
    expect(f(ctx({ now: 4, data: { text: 'hello' } }))).toBeUndefined()
    // same data under another event is another message
    expect(f(ctx({ now: 5, event: 'edit' }))).toBeUndefined()
    // another user has its own count
    expect(f(ctx({ now: 6, userId: 'bob' }))).toBeUndefined()
    // once the earlier ones are older than the window, it passes again
    expect(f(ctx({ now: 1004 }))).toBeUndefined()
  })

  it('repeats: identical data with keys in the same order only (the hash is of the JSON), and arrays vs objects apart', () => {
    const f = createSpamFilter({ repeats: { max: 1, windowMs: 1000 }, burst: false })
    expect(f(ctx({ data: [1, 2] }))).toBeUndefined()
    expect(f(ctx({ data: { 0: 1, 1: 2 } }))).toBeUndefined()
    expect(f(ctx({ data: [1, 2] }))).toMatchObject({ refuse: 'RT_006' })
  })

  it('bursts: more than max messages per window per user are refused with RT_006 and a retry delay, refilled over time', () => {
    const f = createSpamFilter({ burst: { max: 5, windowMs: 1000 }, repeats: false })
    for (let i = 0; i < 5; i++) expect(f(ctx({ data: i }))).toBeUndefined()
    const refused = f(ctx({ data: 5 })) as { refuse: string; retryAfterMs: number }
    expect(refused).toMatchObject({ refuse: 'RT_006' })
    expect(refused.retryAfterMs).toBe(200)
    // one token back after 200 ms (5 per 1000 ms)
    expect(f(ctx({ data: 6, now: 200 }))).toBeUndefined()
    expect(f(ctx({ data: 7, now: 200 }))).toMatchObject({ refuse: 'RT_006' })
    // the user's other connections share the budget; another user does not
    expect(f(ctx({ data: 8, now: 200, connectionId: 'c2' }))).toMatchObject({ refuse: 'RT_006' })
    expect(f(ctx({ data: 9, now: 200, userId: 'bob' }))).toBeUndefined()
  })

  it('anonymous publishers are counted per connection', () => {
    const f = createSpamFilter({ burst: { max: 1, windowMs: 1000 }, repeats: false })
    expect(f(ctx({ userId: undefined, connectionId: 'a' }))).toBeUndefined()
    expect(f(ctx({ userId: undefined, connectionId: 'a' }))).toMatchObject({ refuse: 'RT_006' })
    expect(f(ctx({ userId: undefined, connectionId: 'b' }))).toBeUndefined()
  })

  it('links: more than max links anywhere in the data is refused with RT_007; https://www. counts once', () => {
    const f = createSpamFilter({ links: { max: 3 }, repeats: false, burst: false })
    expect(f(ctx({ data: { text: 'see https://www.a.example and http://b.example, www.c.example' } }))).toBeUndefined()
    expect(f(ctx({ data: { text: 'https://a.example', more: ['http://b.example', { deep: 'WWW.C.EXAMPLE' }], x: 'ftp://d.example' } }))).toMatchObject({ refuse: 'RT_007' })
    expect(f(ctx({ data: 'a://b a://c a://d a://e' }))).toMatchObject({ refuse: 'RT_007' })
  })

  it('links: the scan stops after maxScanChars, so a huge message costs a bounded time', () => {
    const f = createSpamFilter({ links: { max: 3 }, repeats: false, burst: false, maxScanChars: 100 })
    // the links are past the first 100 characters: not seen
    expect(f(ctx({ data: `${'x'.repeat(200)} http://a http://b http://c http://d` }))).toBeUndefined()
    const g = createSpamFilter({ links: { max: 1_000_000 }, repeats: false, burst: false })
    const huge = 'www.'.repeat(2_000_000)
    const started = performance.now()
    expect(g(ctx({ data: { text: huge } }))).toBeUndefined()
    expect(performance.now() - started).toBeLessThan(200)
  })

  it("action 'flag' flags instead of refusing", () => {
    const f = createSpamFilter({ action: 'flag', links: { max: 0 }, repeats: false, burst: false })
    expect(f(ctx({ data: 'http://x' }))).toEqual({ flag: 'more than 0 links in one message' })
  })

  it('appliesTo: channels it does not apply to are not looked at', () => {
    const f = createSpamFilter({ links: { max: 0 }, appliesTo: (_channel, pattern) => pattern === 'chat:*' })
    expect(f(ctx({ data: 'http://x' }))).toMatchObject({ refuse: 'RT_007' })
    expect(f(ctx({ data: 'http://x', channel: 'feed:1', pattern: 'feed:*' }))).toBeUndefined()
  })

  it('memory is bounded by maxUsers: with 20 000 users the first one is forgotten (least recently active first)', () => {
    const f = createSpamFilter({ repeats: { max: 1, windowMs: 60_000 }, burst: false, maxUsers: 1000 })
    expect(f(ctx({ userId: 'first' }))).toBeUndefined()
    expect(f(ctx({ userId: 'first' }))).toMatchObject({ refuse: 'RT_006' })
    for (let i = 0; i < 20_000; i++) f(ctx({ userId: `u${i}` }))
    // forgotten: its repeat passes (it is remembered afresh)
    expect(f(ctx({ userId: 'first' }))).toBeUndefined()
    // a recently active user is still remembered
    expect(f(ctx({ userId: 'u19999' }))).toMatchObject({ refuse: 'RT_006' })
  })

  it('bad options are refused when the filter is made', () => {
    expect(() => createSpamFilter({ burst: { max: 0 } })).toThrow(/burst.max/)
    expect(() => createSpamFilter({ repeats: { windowMs: Number.NaN } })).toThrow(/repeats.windowMs/)
    expect(() => createSpamFilter({ links: { max: -1 } })).toThrow(/links.max/)
    expect(() => createHub({ content: 'spam' as unknown as ContentFilter })).toThrow(/content/)
  })
})

describe('the content hook on client publishes', () => {
  it('the filter sees the channel, pattern, event, data, user, connection, size and hub time', async () => {
    const seen: ContentContext[] = []
    await using t = createTestHub({ channels: CHANNELS, content: (c) => void seen.push(c) })
    await t.clock.advance(1234)
    const ada = await t.connect({ userId: 'ada' })
    await ada.publish('chat:1', 'msg', { text: 'hi' })
    expect(seen).toHaveLength(1)
    expect(seen[0]).toMatchObject({ channel: 'chat:1', pattern: 'chat:*', event: 'msg', data: { text: 'hi' }, userId: 'ada', now: t.clock.now() })
    expect(seen[0]!.connectionId).toMatch(/.+/)
    expect(seen[0]!.size).toBeGreaterThan(20)
  })

  it("'allow' delivers; { flag } delivers and emits content:flagged (without the data) with the message id", async () => {
    const filter: ContentFilter = (c) => ((c.data as { text: string }).text.includes('buy') ? { flag: 'looks like an ad' } : 'allow')
    await using t = createTestHub({ channels: CHANNELS, content: filter })
    const flagged: Array<Parameters<HubEvents['content:flagged']>[0]> = []
    t.hub.on('content:flagged', (e) => flagged.push(e))
    const ada = await t.connect({ userId: 'ada' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('chat:1')
    await ada.publish('chat:1', 'msg', { text: 'hello' })
    const published = await ada.publish('chat:1', 'msg', { text: 'buy now' })
    await t.settle()
    expect(bob.messages('chat:1').map((m) => m.data)).toEqual([{ text: 'hello' }, { text: 'buy now' }])
    expect(flagged).toEqual([{ channel: 'chat:1', event: 'msg', userId: 'ada', connectionId: expect.any(String), reason: 'looks like an ad', messageId: published.messageId, offset: published.offset }])
    expect(JSON.stringify(flagged)).not.toContain('buy now')
  })

  for (const code of ['RT_007', 'RT_006'] as const) {
    it(`a refusal with ${code}: the publisher gets ${code}, nothing is stored or delivered, content:refused is emitted`, async () => {
      await using t = createTestHub({ channels: CHANNELS, content: () => ({ refuse: code, reason: 'no thanks', retryAfterMs: code === 'RT_006' ? 5000 : undefined }) })
      const refused: Array<Parameters<HubEvents['content:refused']>[0]> = []
      t.hub.on('content:refused', (e) => refused.push(e))
      const ada = await t.connect({ userId: 'ada' })
      const bob = await t.connect({ userId: 'bob' })
      await bob.subscribe('chat:1')
      const err = await rejection(ada.publish('chat:1', 'msg', { text: 'spam' }))
      expect(err.code).toBe(code)
      expect(err.message).toBe('no thanks')
      if (code === 'RT_006') expect(ada.received('error').at(-1)?.details).toMatchObject({ retryAfterMs: 5000 })
      await t.settle()
      expect(bob.messages('chat:1')).toEqual([])
      expect((await t.hub.channel('chat:1').history()).messages).toEqual([])
      expect(refused).toEqual([{ channel: 'chat:1', event: 'msg', userId: 'ada', connectionId: expect.any(String), code, reason: 'no thanks' }])
      expect(t.hub.metrics().errors[code]).toBe(1)
    })
  }

  it('an async filter that does not answer within contentTimeoutMs refuses with RT_006 (fail closed) and stores nothing', async () => {
    await using t = createTestHub({ channels: CHANNELS, limits: { contentTimeoutMs: 500 }, content: () => new Promise(() => {}) })
    const ada = await t.connect({ userId: 'ada' })
    const result = rejection(ada.publish('chat:1', 'msg', { text: 'hi' }))
    await t.advance(499)
    expect(ada.received('error')).toEqual([])
    await t.advance(1)
    const err = await result
    expect(err.code).toBe('RT_006')
    expect(err.message).toMatch(/500 ms/)
    expect((await t.hub.channel('chat:1').history()).messages).toEqual([])
  })

  it('an async filter that answers in time decides, and its timer is cleared', async () => {
    await using t = createTestHub({ channels: CHANNELS, limits: { contentTimeoutMs: 500 }, content: async (c) => ((c.data as { n: number }).n > 1 ? { refuse: 'RT_007', reason: 'too big' } : undefined) })
    const ada = await t.connect({ userId: 'ada' })
    await expect(ada.publish('chat:1', 'msg', { n: 1 })).resolves.toMatchObject({ type: 'published' })
    expect((await rejection(ada.publish('chat:1', 'msg', { n: 2 }))).code).toBe('RT_007')
    await t.advance(1000)
    expect(ada.received('error')).toHaveLength(1)
  })

  it('a filter that throws is an internal error: reported, RT_001 to the publisher, nothing stored', async () => {
    const errors: string[] = []
    await using t = createTestHub({ channels: CHANNELS, onError: (_e, c) => errors.push(c.stage), content: () => { throw new Error('moderation bug') } })
    const ada = await t.connect({ userId: 'ada' })
    expect((await rejection(ada.publish('chat:1', 'msg', 1))).code).toBe('RT_001')
    expect(errors).toEqual(['frame:message'])
    expect((await t.hub.channel('chat:1').history()).messages).toEqual([])
  })

  it('a verdict of no known shape is reported and refused (RT_007), never let through', async () => {
    const errors: string[] = []
    await using t = createTestHub({ channels: CHANNELS, onError: (_e, c) => errors.push(c.stage), content: () => ({ refuse: 'RT_999', reason: 'x' }) as never })
    const ada = await t.connect({ userId: 'ada' })
    expect((await rejection(ada.publish('chat:1', 'msg', 1))).code).toBe('RT_007')
    expect(errors).toEqual(['content'])
  })

  it('server publishes (hub.publish, broadcasts) are trusted: the filter is not asked', async () => {
    let asked = 0
    await using t = createTestHub({ channels: CHANNELS, content: () => { asked++; return { refuse: 'RT_007', reason: 'no' } } })
    await t.hub.publish('chat:1', 'msg', { text: 'from the server' })
    await t.hub.broadcast({ to: { channels: ['chat:1'] }, event: 'msg', data: 1 })
    expect(asked).toBe(0)
    expect((await t.hub.channel('chat:1').history()).messages).toHaveLength(2)
  })

  it('a publisher refused by authorization (RT_003) never reaches the filter, so it cannot spend the spam budget', async () => {
    let asked = 0
    await using t = createTestHub({ channels: { 'chat:*': { subscribe: true, publish: (ctx) => ctx.identity.userId === 'ada' } }, content: () => void asked++ })
    const eve = await t.connect({ userId: 'eve' })
    expect((await rejection(eve.publish('chat:1', 'msg', 1))).code).toBe('RT_003')
    expect(asked).toBe(0)
  })

  it('with createSpamFilter on the hub: the 4th identical message is refused, the subscriber got 3', async () => {
    await using t = createTestHub({ channels: CHANNELS, content: createSpamFilter() })
    const ada = await t.connect({ userId: 'ada' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('chat:1')
    for (let i = 0; i < 3; i++) await ada.publish('chat:1', 'msg', { text: 'same' })
    expect((await rejection(ada.publish('chat:1', 'msg', { text: 'same' }))).code).toBe('RT_006')
    await t.settle()
    expect(bob.messages('chat:1')).toHaveLength(3)
  })
})
