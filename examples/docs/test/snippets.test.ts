/**
 * The TypeScript blocks of README.md and docs/getting-started.md, kept true: each block is
 * written to a file as it is (with two pieces of scaffolding: `import { expect } from 'vitest'`
 * when a block uses `expect` without importing it, and the port 3000 replaced by a free one),
 * TYPE-CHECKED with tsc against the workspace packages, and RUN in order with tsx: a block that
 * calls `.listen(` is a server (started, waited for, stopped at the end of its document), every
 * other block must exit with code 0. Shell and HTML blocks are not run.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join, relative } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'

const root = join(import.meta.dirname, '..', '..', '..')
const out = join(import.meta.dirname, '..', '.generated')
const DOCS = ['README.md', 'docs/getting-started.md']

interface Block {
  readonly doc: string
  readonly line: number
  readonly file: string
  readonly server: boolean
}

/** The ```ts / ```typescript blocks of a Markdown file, with the line each starts on. */
export function tsBlocks(markdown: string): Array<{ line: number; code: string }> {
  const blocks: Array<{ line: number; code: string }> = []
  const lines = markdown.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(ts|typescript)\b/.exec(lines[i]!)
    if (!open) continue
    const start = i + 1
    while (i + 1 < lines.length && !lines[i + 1]!.startsWith('```')) i++
    blocks.push({ line: start + 1, code: lines.slice(start, i + 1).join('\n') })
    i++
  }
  return blocks
}

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return port
}

const children: ChildProcess[] = []
afterAll(() => {
  for (const c of children) c.kill('SIGKILL')
})

function runBlock(block: Block): ChildProcess & { output: string[] } {
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', block.file], {
    cwd: out,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_NO_WARNINGS: '1' },
  }) as ChildProcess & { output: string[] }
  child.output = []
  child.stdout!.on('data', (d: Buffer) => child.output.push(d.toString()))
  child.stderr!.on('data', (d: Buffer) => child.output.push(d.toString()))
  children.push(child)
  return child
}

async function listening(port: number, child: ChildProcess, ms: number): Promise<void> {
  const end = Date.now() + ms
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server block exited with ${child.exitCode}`)
    try {
      await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(500) })
      return
    } catch {
      if (Date.now() > end) throw new Error(`no server on port ${port} after ${ms} ms`)
      await new Promise((r) => setTimeout(r, 150))
    }
  }
}

describe('code blocks in the docs', () => {
  rmSync(out, { recursive: true, force: true })
  mkdirSync(out, { recursive: true })
  const ports = new Map<string, Promise<number>>()
  const blocks: Block[] = []
  const sources = new Map<string, string>()
  for (const doc of DOCS) {
    const markdown = readFileSync(join(root, doc), 'utf8')
    tsBlocks(markdown).forEach((b, i) => {
      const file = join(out, `${doc.replace(/[/.]/g, '_')}-${i + 1}.ts`)
      blocks.push({ doc, line: b.line, file, server: b.code.includes('.listen(') })
      sources.set(file, b.code)
    })
  }

  it('finds the blocks (README: server, client, hub, testing; guide: server, bot)', () => {
    expect(blocks.filter((b) => b.doc === 'README.md')).toHaveLength(4)
    expect(blocks.filter((b) => b.doc === 'docs/getting-started.md')).toHaveLength(2)
    expect(blocks.filter((b) => b.server).map((b) => b.doc)).toEqual(['README.md', 'docs/getting-started.md'])
  })

  it('every block type-checks against the workspace packages', async () => {
    for (const doc of DOCS) ports.set(doc, freePort())
    for (const b of blocks) {
      let code = sources.get(b.file)!
      if (/\bexpect\(/.test(code) && !/import\s*\{[^}]*\bexpect\b/.test(code)) code = `import { expect } from 'vitest'\n${code}`
      code = code.replace(/\b3000\b/g, String(await ports.get(b.doc)!))
      writeFileSync(b.file, `${code}\nexport {}\n`)
    }
    writeFileSync(
      join(out, 'tsconfig.json'),
      JSON.stringify({
        extends: relative(out, join(root, 'tsconfig.base.json')),
        compilerOptions: { noEmit: true, types: ['node'], declaration: false, sourceMap: false },
        files: blocks.map((b) => relative(out, b.file)),
      }),
    )
    const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(out, 'tsconfig.json')], { encoding: 'utf8' })
    const where = (text: string) =>
      text.replace(/([\w-]+_md)-(\d+)\.ts\((\d+),/g, (_m, doc: string, n: string, line: string) => {
        const b = blocks.find((x) => x.file.endsWith(`${doc}-${n}.ts`))
        return `${b?.doc} block ${n} (doc line ${b ? b.line + Number(line) - 1 : '?'}), line ${line},`
      })
    expect(where(tsc.stdout + tsc.stderr)).toBe('')
    expect(tsc.status).toBe(0)
  }, 120_000)

  for (const doc of DOCS) {
    it(`the blocks of ${doc} run, in order, against the servers they start`, async () => {
      const port = await ports.get(doc)!
      const servers: ChildProcess[] = []
      try {
        for (const b of blocks.filter((x) => x.doc === doc)) {
          const child = runBlock(b)
          if (b.server) {
            await listening(port, child, 30_000)
            servers.push(child)
            continue
          }
          const code = await new Promise<number | null>((resolve) => {
            const timer = setTimeout(() => {
              child.kill('SIGKILL')
              resolve(null)
            }, 30_000)
            child.on('exit', (c) => {
              clearTimeout(timer)
              resolve(c)
            })
          })
          expect({ block: `${doc}:${b.line}`, code, output: code === 0 ? '' : child.output.join('') }).toEqual({ block: `${doc}:${b.line}`, code: 0, output: '' })
        }
      } finally {
        for (const s of servers) s.kill('SIGTERM')
      }
    }, 120_000)
  }
})
