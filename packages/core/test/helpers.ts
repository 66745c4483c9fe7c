import { afterEach, expect } from 'vitest'
import { createTestHub, type TestHub } from '@tidings/core/testing'
import { type HubOptions, RealtimeError } from '@tidings/core'

/**
 * A `makeHub` for one test file: test hubs made with `defaults` under the given options, each
 * closed after its test.
 */
export function testHubs(defaults: HubOptions = {}): (options?: HubOptions & { seed?: number }) => TestHub {
  const open: TestHub[] = []
  afterEach(async () => {
    for (const t of open.splice(0)) await t.close()
  })
  return (options = {}) => {
    const t = createTestHub({ ...defaults, ...options })
    open.push(t)
    return t
  }
}

/** Expect a promise to reject with a RealtimeError carrying this code. */
export async function rejectsWith(p: Promise<unknown>, code: string): Promise<RealtimeError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err, `expected a rejection with ${code}`).toBeInstanceOf(RealtimeError)
  expect((err as RealtimeError).code).toBe(code)
  return err as RealtimeError
}
