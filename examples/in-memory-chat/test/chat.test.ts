import { describe, expect, it } from 'vitest'
import { runChat } from '../src/chat.js'

describe('in-memory chat demo', () => {
  it('shows each user what they should see', async () => {
    const scene = await runChat()
    const { ada, grace, linus, eve } = scene.transcript
    expect(grace).toContain('[public:general #1] ada: Morning! Anyone up for the design review?')
    expect(ada).toContain('[presence:lobby] + grace joined (online)')
    expect(grace).toContain('[presence:lobby] ada is typing…')
    expect(linus).toContain('(history) grace: I pushed the new mock-ups.')
    expect(eve!.some((l) => l.startsWith('error RT_003'))).toBe(true)
    expect(ada).toContain('[presence:lobby] ~ grace is now away')
    expect(ada).toContain('[public:general #3] server: Coffee break in 5 minutes')
    expect(ada).toContain('[presence:lobby] - grace left')
    // A publisher does not get its own message back.
    expect(ada).not.toContain('[public:general #1] ada: Morning! Anyone up for the design review?')
    await scene.hub.close()
  })
})
