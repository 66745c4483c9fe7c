import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { RealtimeError } from '@tidings/core'
import { createTestHub } from '@tidings/core/testing'

// `encrypted: true` channels on the server: only envelopes go in, from clients and from server code.

const ENVELOPE = { e2e: 1, kid: 'k1', iv: 'AAAAAAAAAAAAAAAA', ct: 'c2VjcmV0LWNpcGhlcnRleHQtd2l0aC10YWc' }

async function rejection(p: Promise<unknown>): Promise<RealtimeError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(RealtimeError)
  return err as RealtimeError
}

function setup(content?: () => { refuse: 'RT_007'; reason: string }) {
  return createTestHub({
    channels: {
      'secret:*': { subscribe: true, publish: true, encrypted: true, events: { msg: z.object({ text: z.string() }) } },
      'chat:*': { subscribe: true, publish: true },
    },
    ...(content ? { content } : {}),
  })
}

describe('encrypted channels', () => {
  it('a client publishing plaintext is refused with RT_007: nothing stored, nothing delivered', async () => {
    await using t = setup()
    const ada = await t.connect({ userId: 'ada' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('secret:1')
    for (const data of [{ text: 'plain' }, 'plain', null, [ENVELOPE], { ...ENVELOPE, extra: 'x' }, { ...ENVELOPE, e2e: 2 }, { e2e: 1, kid: 'k1', iv: ENVELOPE.iv }, { ...ENVELOPE, iv: 'short' }]) {
      const err = await rejection(ada.publish('secret:1', 'msg', data))
      expect(err.code).toBe('RT_007')
      expect(err.message).toMatch(/encrypted/)
    }
    await t.settle()
    expect(bob.messages('secret:1')).toEqual([])
    expect((await t.hub.channel('secret:1').history()).messages).toEqual([])
  })

  it('an envelope is accepted and delivered and stored unchanged (the event schema does not apply to ciphertext)', async () => {
    await using t = setup()
    const ada = await t.connect({ userId: 'ada' })
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('secret:1')
    await expect(ada.publish('secret:1', 'msg', ENVELOPE)).resolves.toMatchObject({ type: 'published', offset: 1 })
    await t.settle()
    expect(bob.messages('secret:1').map((m) => [m.event, m.data])).toEqual([['msg', ENVELOPE]])
    expect((await t.hub.channel('secret:1').history()).messages.map((m) => m.data)).toEqual([ENVELOPE])
  })

  it('the content filter is not asked about ciphertext (it could only misjudge it)', async () => {
    let asked = 0
    await using t = setup(() => {
      asked++
      return { refuse: 'RT_007', reason: 'no' }
    })
    const ada = await t.connect({ userId: 'ada' })
    await expect(ada.publish('secret:1', 'msg', ENVELOPE)).resolves.toMatchObject({ type: 'published' })
    expect(asked).toBe(0)
    // on a plain channel it is asked
    expect((await rejection(ada.publish('chat:1', 'msg', 1))).code).toBe('RT_007')
    expect(asked).toBe(1)
  })

  it('server code publishing plaintext on an encrypted channel throws RT_007 (no plaintext leaks into it); an envelope goes through', async () => {
    await using t = setup()
    const bob = await t.connect({ userId: 'bob' })
    await bob.subscribe('secret:1')
    expect((await rejection(t.hub.publish('secret:1', 'msg', { text: 'plain' }))).code).toBe('RT_007')
    expect((await rejection(t.hub.broadcast({ to: { channels: ['secret:1'] }, event: 'msg', data: 'plain' }))).code).toBe('RT_007')
    await expect(t.hub.publish('secret:1', 'msg', ENVELOPE)).resolves.toMatchObject({ offset: 1 })
    await t.settle()
    expect(bob.messages('secret:1').map((m) => m.data)).toEqual([ENVELOPE])
  })

  it('a route from a plain channel into an encrypted one is refused and reported, never published there', async () => {
    const stages: string[] = []
    await using t = createTestHub({
      channels: { 'secret:*': { subscribe: true, publish: true, encrypted: true }, 'chat:*': { subscribe: true, publish: true } },
      onError: (_e, c) => stages.push(c.stage),
    })
    t.hub.route(() => 'secret:mirror')
    await t.hub.publish('chat:1', 'msg', { text: 'plain' })
    await t.settle()
    expect(stages).toEqual(['route.publish'])
    expect((await t.hub.channel('secret:mirror').history()).messages).toEqual([])
  })
})
