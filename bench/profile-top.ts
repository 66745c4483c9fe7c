/**
 * Top self-time functions of a V8 CPU profile (`node --cpu-prof`), e.g. of a server run with
 * `PROFILE=tidings PHASES=cpu ROUNDS=1 pnpm bench`:
 *
 *   tsx bench/profile-top.ts bench/results/profiles/tidings-round0.cpuprofile [top=30]
 */
import { readFileSync } from 'node:fs'

interface Node {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
  children?: number[]
}
const [file, topArg] = process.argv.slice(2)
if (!file) throw new Error('usage: profile-top.ts <file.cpuprofile> [top]')
const profile = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
// Self time per node from the samples and their time deltas.
const self = new Map<number, number>()
for (let i = 0; i < profile.samples.length; i++) self.set(profile.samples[i]!, (self.get(profile.samples[i]!) ?? 0) + (profile.timeDeltas[i] ?? 0))
const total = [...self.values()].reduce((a, b) => a + b, 0)
const idle = [...self.entries()].filter(([id]) => ['(idle)', '(program)'].includes(byId.get(id)!.callFrame.functionName)).reduce((a, [, v]) => a + v, 0)
const agg = new Map<string, number>()
for (const [id, us] of self) {
  const f = byId.get(id)!.callFrame
  const where = f.url ? `${f.url.replace(/^.*\/(node_modules\/\.pnpm\/[^/]+\/node_modules\/|packages\/|node:)/, '')}:${f.lineNumber + 1}` : ''
  const key = `${f.functionName || '(anonymous)'} ${where}`
  agg.set(key, (agg.get(key) ?? 0) + us)
}
const busy = total - idle
console.log(`profile: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s not idle (percentages below are of the non-idle time)`)
for (const [key, us] of [...agg.entries()].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, Number(topArg ?? 30))) {
  console.log(`${((us / busy) * 100).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${key}`)
}
