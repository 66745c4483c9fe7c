import { readFileSync, readdirSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import * as kit from '../src/index.js'

// index.ts is the public face of the package and nothing else: the helpers live in files named
// after their concept (edge.ts, http.ts, frames.ts, sessions.ts), each importing only the ones
// before it. sessions.ts used to import its helpers from index.ts, which re-exports sessions.ts:
// a cycle that only module evaluation order kept working.

const src = fileURLToPath(new URL('../src/', import.meta.url))
const index = join(src, 'index.ts')

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name))
}

/** Every module specifier a file imports or re-exports, type-only ones and `import()` included. */
function specifiers(file: string): string[] {
  const text = readFileSync(file, 'utf8')
  return [
    ...text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]/gm),
    ...text.matchAll(/^\s*import\s+['"]([^'"]+)['"]/gm),
    ...text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g),
  ].map((m) => m[1]!)
}

/** The source file a relative specifier names (`./http.js` → `http.ts`, `.` → `index.ts`). */
function resolve(from: string, spec: string): string {
  const target = join(from, '..', spec)
  if (spec === '.' || spec === './' || spec.endsWith('/')) return join(target, 'index.ts')
  return target.replace(/\.js$/, '.ts')
}

describe('@tidings/http-kit boundaries', () => {
  const files = sourceFiles(src)

  it('a source file importing ./index.js (sessions.ts → index.ts → sessions.ts) fails', () => {
    expect(files.length).toBeGreaterThanOrEqual(5)
    const offenders = files.filter((f) => f !== index && specifiers(f).some((s) => s.startsWith('.') && resolve(f, s) === index))
    expect(offenders.map((f) => relative(src, f))).toEqual([])
  })

  it('an import cycle between the http-kit modules fails', () => {
    const graph = new Map(files.map((f) => [f, specifiers(f).filter((s) => s.startsWith('.')).map((s) => resolve(f, s))]))
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
    expect(cycles).toEqual([])
  })

  it('index.ts declaring code of its own instead of only re-exporting fails', () => {
    const code = readFileSync(index, 'utf8')
      .replace(/\/\*[\s\S]*?\*\//g, '')
      .replace(/\/\/.*$/gm, '')
      .split(/\n/)
      .join(' ')
    // Whatever is left once the `export { … } from '…'` statements are taken out is whitespace.
    expect(code.replace(/export\s*\{[^}]*\}\s*from\s*'[^']+'/g, '').trim()).toBe('')
  })

  it('a helper the transports import going missing from the public API fails', () => {
    // What @tidings/sse, @tidings/long-poll, @tidings/ws and @tidings/http take from the package.
    for (const name of [
      'createEdgeGuard',
      'isEdgeGuard',
      'resolveEdgeGuard',
      'drainBody',
      'hasBody',
      'header',
      'maxMessageSizeOf',
      'normalizePrefix',
      'positiveOption',
      'randomToken',
      'receiveFrames',
      'readFrames',
      'sendError',
      'sendJson',
      'sendNoContent',
      'sendRefusal',
      'secretMatches',
      'SessionRegistry',
      'SHUTTING_DOWN',
      'AUTH_TIMED_OUT',
      'MAX_FRAMES_PER_REQUEST',
      'SECRET_HEADER',
    ]) {
      expect(kit, name).toHaveProperty(name)
    }
  })
})
