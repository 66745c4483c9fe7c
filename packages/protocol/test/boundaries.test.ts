import { readFileSync, readdirSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as core from '@tidings/core'
import { describe, expect, it } from 'vitest'
import * as protocol from '../src/index.js'

// What the wire package promises its two users: the client gets the protocol without the
// engine, and the engine re-exports the very same objects, so `instanceof RealtimeError` and
// the schemas agree on both sides of a connection.

const packages = fileURLToPath(new URL('../../', import.meta.url))

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name))
}

/** Every module specifier a file imports or re-exports, type-only ones included. */
function specifiers(file: string): string[] {
  const text = readFileSync(file, 'utf8')
  return [...text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]/gm), ...text.matchAll(/^\s*import\s+['"]([^'"]+)['"]/gm)].map((m) => m[1]!)
}

describe('@tidings/protocol boundaries', () => {
  const src = join(packages, 'protocol/src')
  const files = sourceFiles(src)

  it('an import cycle between the wire modules (codec → protocol → errors → codec) fails', () => {
    const graph = new Map<string, string[]>()
    for (const f of files) {
      const deps = specifiers(f)
        .filter((s) => s.startsWith('.'))
        .map((s) => join(f, '..', s.replace(/\.js$/, '.ts')))
      graph.set(f, deps)
    }
    const cycles: string[] = []
    const state = new Map<string, 'open' | 'done'>()
    const visit = (f: string, path: string[]): void => {
      if (state.get(f) === 'done') return
      if (state.get(f) === 'open') {
        cycles.push([...path.slice(path.indexOf(f)), f].map((p) => relative(src, p)).join(' → '))
        return
      }
      state.set(f, 'open')
      for (const d of graph.get(f) ?? []) visit(d, [...path, f])
      state.set(f, 'done')
    }
    for (const f of files) visit(f, [])
    expect(files.length).toBeGreaterThanOrEqual(8)
    expect(cycles).toEqual([])
  })

  it('a wire module importing the engine, node: or any package but zod fails', () => {
    const external = new Set<string>()
    for (const f of files) for (const s of specifiers(f)) if (!s.startsWith('.')) external.add(s)
    expect([...external]).toEqual(['zod'])
    const manifest = JSON.parse(readFileSync(join(packages, 'protocol/package.json'), 'utf8'))
    expect(Object.keys(manifest.dependencies)).toEqual(['zod'])
  })

  it("the client's runtime depending on the engine (@tidings/core) fails", () => {
    const manifest = JSON.parse(readFileSync(join(packages, 'client/package.json'), 'utf8'))
    expect(Object.keys(manifest.dependencies)).toEqual(['@tidings/protocol'])
    const offenders = sourceFiles(join(packages, 'client/src')).filter((f) => specifiers(f).some((s) => s.startsWith('@tidings/') && s !== '@tidings/protocol'))
    expect(offenders.map((f) => relative(packages, f))).toEqual([])
  })

  it('core re-exporting a copy instead of the same objects (RealtimeError, schemas, codecs) fails', () => {
    const coreExports = core as unknown as Record<string, unknown>
    const shared = Object.keys(protocol).filter((name) => name in coreExports)
    // Every value of the wire package is core's too, except the hub-internal JSON helper.
    expect(Object.keys(protocol).filter((name) => !(name in coreExports))).toEqual(['jsonWithNumber'])
    for (const name of shared) expect(coreExports[name], name).toBe((protocol as Record<string, unknown>)[name])
    // So an error raised on one side is recognised on the other.
    expect(new core.RealtimeError(core.ErrorCode.RateLimitExceeded)).toBeInstanceOf(protocol.RealtimeError)
    expect(protocol.isRealtimeError(new core.RealtimeError('RT_007'))).toBe(true)
  })
})
