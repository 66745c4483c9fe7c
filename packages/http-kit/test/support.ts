/**
 * Test harness shared by the HTTP transports' suites (`@tidings/sse`, `@tidings/long-poll`): a
 * transport served on a real `http.Server` over loopback, polling and clean-up helpers.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createHub, createTokenAuthenticator, type Hub, type HubOptions } from '@tidings/core'
import { afterEach } from 'vitest'

/** A response body as JSON (checked field by field by the tests). */
export const json = async (r: Response): Promise<any> => r.json()
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Polls `check` every 10 ms until it gives something (not undefined or false); throws after `ms`. */
export async function until<T>(check: () => T | undefined | false, ms = 3000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const r = check()
    if (r !== undefined && r !== false) return r
    if (Date.now() > deadline) throw new Error('timed out')
    await sleep(10)
  }
}

/** Run after the current test, last registered first. */
export const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

export const TOKENS = { 'tok-a': { userId: 'alice' }, 'tok-b': { userId: 'bob' } }

interface HttpTransport {
  handle(req: IncomingMessage, res: ServerResponse): Promise<boolean>
  close(): Promise<void>
}

/**
 * A hub (token authenticator over `TOKENS`) and the transport `make` builds on it, served on
 * loopback: by the transport alone (404 for what it does not handle) or by `app`. Everything is
 * closed after the test.
 */
export async function serveTransport<T extends HttpTransport>(
  make: (hub: Hub) => T,
  hubOptions: HubOptions = {},
  app?: (t: T) => http.RequestListener,
): Promise<{ hub: Hub; transport: T; base: string; server: http.Server }> {
  const hub = createHub({ authenticate: createTokenAuthenticator(TOKENS), ...hubOptions })
  const transport = make(hub)
  const listener: http.RequestListener =
    app?.(transport) ??
    ((req, res) =>
      void transport.handle(req, res).then((handled) => {
        if (!handled) {
          res.statusCode = 404
          res.end()
        }
      }))
  const server = http.createServer(listener)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  cleanups.push(async () => {
    await transport.close()
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
    await hub.close()
  })
  return { hub, transport, base, server }
}

/** Records what every `Session.send` of the hub's future connections returns (true, or false when full). */
export function recordSends(hub: Hub): boolean[] {
  const sends: boolean[] = []
  const connect = hub.connect.bind(hub)
  hub.connect = (session, options) => {
    const send = session.send.bind(session)
    session.send = (frame) => {
      const ok = send(frame)
      sends.push(ok)
      return ok
    }
    return connect(session, options)
  }
  return sends
}
