import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const DIR = fileURLToPath(new URL('../../../ops/prometheus/', import.meta.url))

/** Runs promtool; resolves with its exit code and output (a missing promtool is a failure, not a skip). */
function promtool(...args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile('promtool', args, { cwd: DIR, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1
      resolve({ code, output: `${stdout}${stderr}${err && typeof err.code !== 'number' ? String(err) : ''}` })
    })
  })
}

describe('ops/prometheus alert rules', () => {
  it('pass promtool check rules (a syntax or PromQL error in alerts.yml fails here)', async () => {
    const r = await promtool('check', 'rules', 'alerts.yml')
    expect(r.output).toContain('SUCCESS: 7 rules found')
    expect(r.code, r.output).toBe(0)
  })

  it('pass their promtool unit tests (each alert fires for the node that should have it, and only that one)', async () => {
    const r = await promtool('test', 'rules', 'alerts.test.yml')
    expect(r.code, r.output).toBe(0)
    expect(r.output).toContain('SUCCESS')
  })
})
