import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'

/**
 * The browser build (`@tidings/client/browser`, tsup.config.ts): bundled here the same way, in
 * memory, with the esbuild that tsup uses (the workspace's build tool; not a dependency of the
 * client package).
 */
const root = fileURLToPath(new URL('../../../', import.meta.url))
/** What this test uses of esbuild's API (its types are not reachable from this package). */
interface Esbuild {
  build(options: Record<string, unknown>): Promise<{
    outputFiles: Array<{ contents: Uint8Array }>
    metafile: { outputs: Record<string, { inputs: Record<string, { bytesInOutput: number }> }> }
  }>
}
const esbuild = createRequire(createRequire(`${root}package.json`).resolve('tsup'))('esbuild') as Esbuild

describe('browser bundle', () => {
  it('does not pull zod (or the engine) into the browser build, and stays under 64 KB min / 20 KB gzipped', async () => {
    const result = await esbuild.build({
      entryPoints: [fileURLToPath(new URL('../src/index.ts', import.meta.url))],
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      external: ['ws'],
      minify: true,
      write: false,
      metafile: true,
      conditions: ['source', 'browser', 'module', 'import'],
      logLevel: 'silent',
    })
    // What the output carries (esbuild lists every module it read as an input, tree-shaken or not).
    const output = Object.values(result.metafile.outputs)[0]!
    const inputs = Object.entries(output.inputs).filter(([, i]) => i.bytesInOutput > 0).map(([name]) => name)
    expect(inputs.filter((i) => /(^|\/)(zod|packages\/core)\//.test(i))).toEqual([])
    // The wire package is inlined (that is the point of the browser build), without its zod schemas.
    expect(inputs.some((i) => i.includes('packages/protocol/src/receiver.ts'))).toBe(true)
    expect(inputs.some((i) => i.includes('packages/protocol/src/protocol.ts'))).toBe(false)
    const code = result.outputFiles[0]!.contents
    const gz = gzipSync(code, { level: 9 }).length
    expect(code.length).toBeLessThan(64 * 1024)
    expect(gz).toBeLessThan(20 * 1024)
  })
})
