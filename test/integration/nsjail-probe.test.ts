// The nsjail backend's probe, with real jails: the warm path failing its probe (at start, or on a
// re-probe after it served) turns warm sandboxes off and runs go cold; a canary out of time is
// inconclusive without trying a weaker rung (both jail backends); the rlimit rung warns.
import t from 'tap'
import { limitsFrom } from '../../src/backends/backend.js'
import { nsjailOptions, unshareOptions } from '../../src/backends/index.js'
import type { Launch } from '../../src/backends/launch.js'
import type { MemoryRung } from '../../src/backends/memory.js'
import { NsjailBackend } from '../../src/backends/nsjail/backend.js'
import { UnshareBackend } from '../../src/backends/unshare/backend.js'
import { loadConfig } from '../../src/config.js'
import { TEST_LIMITS } from '../helpers/server.js'

const ROOT = { skip: process.getuid?.() !== 0 ? 'builds jails: needs root' : false }
const HELLO = { script: 'def main():\n    return 6 * 7\n', slot: 0 }

/** Warm jails that start normally until `breakAfter` of them have, then fail to start (a zygote
 *  that cannot start stands in for any warm jail that fails its canaries). */
class BreakableWarm extends NsjailBackend {
  breakAfter = Infinity
  override warmLaunch (slot: number, rung?: MemoryRung, allowanceMiB?: number): Launch {
    if (this.breakAfter-- <= 0) return { file: '/bin/false', args: [], env: {} }
    return super.warmLaunch(slot, rung, allowanceMiB)
  }
}

t.test('the warm path failing its probe turns warm sandboxes off; runs go cold; readiness says why', ROOT, async t => {
  const config = loadConfig({ ...TEST_LIMITS, WARM_SANDBOXES: 'true', CONCURRENCY: '1' })
  const logs: string[] = []
  const backend = new BreakableWarm({ ...nsjailOptions(config, limitsFrom(config)), rungs: ['cgroupv1', 'rlimit'], log: m => logs.push(m) })
  t.teardown(async () => { await backend.close() })

  const serving = await backend.probe()
  t.match(serving.features, { warm: 'zygote' }, 'first, the warm path passes')
  t.match(await backend.run(HELLO), { ok: true, result: 42 })

  backend.breakAfter = 1 // the measuring zygote starts; the probing pool's cannot
  const probingFails = await backend.probe()
  t.equal(probingFails.ok, true, 'the cold path passed: the backend serves')
  t.match(probingFails.features, { warm: 'off', warmReason: /no warm sandbox: / }, 'the canaries found no warm sandbox')
  t.equal(backend.warmStats(), undefined, 'the serving pool was closed')
  t.match(await backend.run(HELLO), { ok: true, result: 42 }, 'a run goes cold')

  backend.breakAfter = 0 // not even the measuring zygote starts
  const measuringFails = await backend.probe()
  t.match(measuringFails.features, { warm: 'off', warmReason: /^the zygote did not start: / })
  t.match(logs.join('\n'), /warm sandboxes OFF, every run is cold: the zygote did not start/)
  t.match(await backend.run(HELLO), { ok: true, result: 42 })
})

t.test('a canary out of time is inconclusive, and no weaker rung is tried (nsjail and unshare)', ROOT, async t => {
  // 100 ms: the canary imports numpy and pandas, which takes longer on any host.
  const config = loadConfig({ ...TEST_LIMITS, LIMIT_WALL_MS: '100', WARM_SANDBOXES: 'false' })
  for (const backend of [
    new NsjailBackend({ ...nsjailOptions(config, limitsFrom(config)), rungs: ['cgroupv1', 'rlimit'] }),
    new UnshareBackend({ ...unshareOptions(config, limitsFrom(config)), rungs: ['cgroupv1', 'rlimit'] })
  ]) {
    const report = await backend.probe()
    t.equal(report.ok, false, backend.name)
    t.equal(report.inconclusive, true, `${backend.name}: inconclusive`)
    t.match(report.reason, backend.name === 'unshare' ? /^cgroupv1: inconclusive, the canary ran out of time/ : /^inconclusive, the canary ran out of time/)
    await backend.close?.()
  }
})

t.test('nsjail on the rlimit rung warns that memory is bounded per process only', ROOT, async t => {
  const config = loadConfig({ ...TEST_LIMITS, WARM_SANDBOXES: 'false' })
  const warnings: string[] = []
  const backend = new NsjailBackend({ ...nsjailOptions(config, limitsFrom(config)), rungs: ['rlimit'], warn: m => warnings.push(m) })
  const report = await backend.probe()
  t.equal(report.ok, true)
  t.match(report.features, { memory: 'rlimit', warm: 'off' })
  t.match(warnings, [/^nsjail: memory is bounded per process only/])
  await backend.close()
})
