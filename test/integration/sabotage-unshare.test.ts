// Sabotage of unshare's memory cgroup: pinned to the rlimit rung (RLIMIT_AS alone, what a host
// without writable cgroups gets), the tests that a run's total memory is bounded must report
// the breach, and /readyz must say that memory is bounded per process only. Both attacks are
// bounded by construction (600 and 384 MiB).
import t from 'tap'
import { buildApp } from '../../src/app.js'
import { limitsFrom } from '../../src/backends/backend.js'
import { unshareOptions } from '../../src/backends/index.js'
import { UnshareBackend } from '../../src/backends/unshare/backend.js'
import { loadConfig } from '../../src/config.js'
import { GUARANTEES } from '../helpers/guarantees.js'
import { TEST_LIMITS, externalUrl, get, type Target } from '../helpers/server.js'

if (externalUrl !== undefined || process.getuid?.() !== 0) {
  t.pass('skipped: needs a server of its own, as root')
} else {
  const config = loadConfig({ ...TEST_LIMITS })
  const warnings: string[] = []
  const backend = new UnshareBackend({ ...unshareOptions(config, limitsFrom(config)), rungs: ['rlimit'], warn: m => warnings.push(m) })
  const app = await buildApp({ config, backends: [backend] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => await app.close())
  const { port } = app.server.address() as { port: number }
  const target: Target = { url: `http://127.0.0.1:${port}`, serverRoot: '', port, close: async () => {} }

  t.test('/readyz and the log say that memory is bounded per process only', async t => {
    const features = (await get(target, '/readyz')).body.probes.at(-1).features
    t.equal(features.memory, 'rlimit')
    t.match(features.memoryBound, /^per process: a run's total memory is not bounded/)
    t.match(warnings, [/memory is bounded per process only \(RLIMIT_AS\)/])
  })

  const memoryGuarantees = GUARANTEES.filter(g => g.name.startsWith('memory: '))
  t.equal(memoryGuarantees.length, 2, 'the processes together, and kernel memory')
  for (const guarantee of memoryGuarantees) {
    t.test(`without the memory cgroup the deny test catches the breach: ${guarantee.name}`, async t => {
      const attempt = await guarantee.deny(target)
      t.equal(attempt.breached, true, attempt.evidence)
    })
  }
}
