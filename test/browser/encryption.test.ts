/**
 * End-to-end encryption in a real browser: the client SDK, bundled from source, seals and opens
 * with Chromium's WebCrypto (Debian's Chromium, driven by playwright-core), and a Node client
 * (Node's WebCrypto) reads what the page sent and the other way round. The hub stores envelopes only.
 */
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { isEncryptedEnvelope } from '@tidings/core'
import { Realtime } from '@tidings/client'
import { type Browser, chromium } from 'playwright-core'
import WebSocket from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RealServer, startRealServer } from '../../packages/client/test/real-hub.js'

const root = join(import.meta.dirname, '..', '..')
const MARKER = 'BROWSER-PLAINTEXT-j4Kq'
const KEY = { id: 'k1', key: randomBytes(32).toString('base64url') }

/** The SDK as one browser module, from source (esbuild as tsup brings it: the workspace does not list it at the top). */
async function clientModule(): Promise<string> {
  type Build = (o: Record<string, unknown>) => Promise<{ outputFiles: Array<{ text: string }> }>
  const esbuild = createRequire(createRequire(join(root, 'package.json')).resolve('tsup'))('esbuild') as { build: Build }
  const out = await esbuild.build({
    entryPoints: [join(root, 'packages/client/src/index.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['source', 'browser'],
    external: ['ws'],
    write: false,
    logLevel: 'silent',
  })
  return out.outputFiles[0]!.text
}

let server: RealServer
let browser: Browser
let node: Realtime | undefined

beforeAll(async () => {
  const code = await clientModule()
  const page = `<!doctype html><meta charset="utf-8"><script type="module">import * as sdk from '/client.js'; window.sdk = sdk; document.body.dataset.ready = '1'</script><body></body>`
  server = await startRealServer({
    options: { channels: { 'e2e:*': { encrypted: true, subscribe: 'authenticated', publish: 'authenticated' } } },
    app: (req, res) => {
      if (req.url === '/') return void res.writeHead(200, { 'content-type': 'text/html' }).end(page), true
      if (req.url === '/client.js') return void res.writeHead(200, { 'content-type': 'text/javascript' }).end(code), true
      return false
    },
  })
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}, 60_000)

afterAll(async () => {
  node?.close()
  await browser?.close()
  await server?.close()
})

describe('end-to-end encryption in Chromium', () => {
  it("WebCrypto mismatch between Chromium and Node: the page's sealed message opens in Node and Node's opens in the page; the hub stores envelopes only", async () => {
    const page = await browser.newPage()
    const errors: string[] = []
    page.on('pageerror', (e) => errors.push(String(e)))
    await page.goto(server.url.replace(/\/realtime$/, '/'))
    await page.waitForSelector('body[data-ready="1"]', { state: 'attached', timeout: 10_000 })

    node = new Realtime({ url: server.url, auth: 'user:node', transports: ['websocket'], WebSocket, heartbeatIntervalMs: 0 })
    const fromPage: unknown[] = []
    const ch = node.channel('e2e:room', { encryption: { key: () => KEY } })
    ch.on('chat', (d: unknown) => fromPage.push(d))
    await ch.subscribe()

    const secureContext = await page.evaluate(
      async ({ url, key, marker }) => {
        const w = globalThis as unknown as { sdk: typeof import('@tidings/client'); got: unknown[]; isSecureContext: boolean }
        const rt = new w.sdk.Realtime({ url, auth: 'user:page', transports: ['websocket'] })
        const c = rt.channel('e2e:room', { encryption: { key: () => key } })
        w.got = []
        c.on('chat', (d: unknown) => w.got.push(d))
        await c.subscribe()
        await c.send('chat', { text: `${marker} from the page` })
        return w.isSecureContext && typeof crypto.subtle?.encrypt === 'function'
      },
      { url: server.url, key: KEY, marker: MARKER },
    )
    expect(secureContext).toBe(true)
    await ch.send('chat', { text: `${MARKER} from node` })
    await expect.poll(() => fromPage, { timeout: 5000 }).toEqual([{ text: `${MARKER} from the page` }])
    await expect.poll(() => page.evaluate(() => (globalThis as unknown as { got: unknown[] }).got), { timeout: 5000 }).toEqual([{ text: `${MARKER} from node` }])
    const stored = await server.hub.channel('e2e:room').history()
    expect(stored.messages).toHaveLength(2)
    for (const m of stored.messages) expect(isEncryptedEnvelope(m.data)).toBe(true)
    expect(JSON.stringify(stored)).not.toContain(MARKER)
    expect(errors).toEqual([])
    await page.close()
  }, 30_000)
})
