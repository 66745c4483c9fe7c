/**
 * The delivery guarantees, checked on many random schedules (packages/core/src/conformance/delivery.ts):
 * publishers with idempotency keys and retries, subscribers with lossy, duplicating, reordering and
 * delaying links, slow consumers, disconnects and resumes, on a manual clock. Prints, last:
 *   delivery: schedules=<n> messages=<m> lost=<l> app-duplicates=<d> inversions=<i>
 * and exits 1 when any of lost, app-duplicates or inversions is not 0.
 *
 * DELIVERY_SEED, DELIVERY_SCHEDULES (≥ 1000 by default) and DELIVERY_EXCLUDE (step kinds, comma
 * separated, e.g. `resubscribe`) change the run.
 */
import { type Step, runDeliverySchedules } from '../packages/core/src/conformance/delivery.js'

const seed = Number(process.env.DELIVERY_SEED ?? 20_260_101)
const schedules = Number(process.env.DELIVERY_SCHEDULES ?? 1000)
const exclude = (process.env.DELIVERY_EXCLUDE ?? '').split(',').filter(Boolean) as Array<Step['kind']>

const started = performance.now()
const r = await runDeliverySchedules({ seed, schedules, exclude })
const seconds = (performance.now() - started) / 1000

console.log(`seed ${seed}${exclude.length > 0 ? `, without ${exclude.join(', ')}` : ''}: ${r.schedules} schedules in ${seconds.toFixed(1)} s`)
console.log(`  ${r.deliveries} deliveries to applications, ${r.slowConsumerCloses} slow-consumer closes (4009), ${r.deliveryFailed} delivery:failed`)
if (r.failures.length > 0) {
  console.log(`${r.failures.length - (r.minimal ? 1 : 0)} failing schedules; the first ones:`)
  for (const f of r.failures.slice(0, 5)) if (!f.startsWith('minimal')) console.log(f)
  const minimal = r.failures.find((f) => f.startsWith('minimal'))
  if (minimal) console.log(minimal)
}
console.log(`delivery: schedules=${r.schedules} messages=${r.messages} lost=${r.lost} app-duplicates=${r.appDuplicates} inversions=${r.inversions}`)
process.exitCode = r.lost > 0 || r.appDuplicates > 0 || r.inversions > 0 ? 1 : 0
