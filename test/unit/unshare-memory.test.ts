// The unshare backend's memory rungs, without a jail: util-linux 2.38's report of a SIGKILLed
// child read as the SIGKILL it is (a cgroup's OOM kill is then MEMORY_LIMIT_EXCEEDED), and the
// verdict of the shared-memory canary that a cgroup rung must pass.
import { constants } from 'node:os'
import t from 'tap'
import type { Limits, RunOutcome } from '../../src/backends/backend.js'
import { sharedMemoryCanaryScript, sharedMemoryProblem } from '../../src/backends/probe.js'
import { interpret } from '../../src/backends/outcome.js'
import type { SpawnResult } from '../../src/backends/spawn.js'
import { jailBinds, undoSigkillQuirk } from '../../src/backends/unshare/backend.js'
import { success } from '../helpers/fake-backend.js'

const limits = { wallTimeMs: 4000, killGraceMs: 500, cpuSeconds: 3, memoryMiB: 256, processes: 32 } as Limits
const COMPLAINT = 'unshare: sigprocmask unblock failed: Invalid argument\n'

function spawned (overrides: Partial<SpawnResult>): SpawnResult {
  const empty = Buffer.alloc(0)
  const base = { exitCode: 0, signal: null, stdout: empty, stderr: empty, channel: empty, durationMs: 300 }
  const flags = { stdoutTruncated: false, stderrTruncated: false, channelOverflow: false, timedOut: false, aborted: false }
  return { ...base, ...flags, ...overrides }
}

t.test('util-linux 2.38 reporting a SIGKILLed child as exit 1 with a complaint', async t => {
  const killed = undoSigkillQuirk(spawned({ exitCode: 1, stderr: Buffer.from(`the script's own\n${COMPLAINT}`) }))
  t.equal(killed.signal, constants.signals.SIGKILL)
  t.equal(killed.exitCode, null)
  t.equal(killed.stderr.toString(), 'the script\'s own\n', 'the complaint is not the script\'s: dropped')
  const outcome = await interpret(killed, { limits, memoryByCgroup: true })
  t.match(outcome, { ok: false, code: 'MEMORY_LIMIT_EXCEEDED', message: /256 MiB/ }, 'under a memory cgroup: its OOM kill')

  for (const [name, overrides] of [
    ['exit 1 without the complaint', { exitCode: 1, stderr: Buffer.from('boom\n') }],
    ['the complaint not last', { exitCode: 1, stderr: Buffer.from(`${COMPLAINT}more\n`) }],
    ['the complaint with another status', { exitCode: 0, stderr: Buffer.from(COMPLAINT) }]
  ] as const) {
    const before = spawned(overrides)
    t.equal(undoSigkillQuirk(before), before, `${name}: unchanged`)
  }
})

t.test('the shared-memory canary', async t => {
  const ok = (result: unknown): RunOutcome => success(result, { durationMs: 300 })
  const script = sharedMemoryCanaryScript(limits)
  t.match(script, /^CHILDREN, SHARE_BYTES, DEADLINE_SECONDS = 4, /m, 'four children within the process limit')
  t.match(script, String(80 * 1024 * 1024), 'of 80 MiB each: 64 MiB over the limit together')
  t.match(sharedMemoryCanaryScript({ ...limits, processes: 4 }), /^CHILDREN, SHARE_BYTES, DEADLINE_SECONDS = 3, /m, 'no more children than the process limit allows')

  t.equal(sharedMemoryProblem(ok({ children: 4, together: 3, memoryErrors: 0, killed: 1 }), limits), undefined, 'one killed: bounded')
  const failed: RunOutcome = { ...ok(null), ok: false, code: 'MEMORY_LIMIT_EXCEEDED', message: 'm', details: {} }
  t.equal(sharedMemoryProblem(failed, limits), undefined, 'the whole run killed: bounded')
  t.match(sharedMemoryProblem(ok({ children: 4, together: 4, memoryErrors: 0, killed: 0 }), limits),
    /not enforced across processes: 4 children held 80 MiB each at once \(320 MiB, limit 256 MiB\)/)
  t.match(sharedMemoryProblem(ok({ children: 4, together: 2, memoryErrors: 2, killed: 0 }), limits), /proves nothing: 2 of its children/)
  t.match(sharedMemoryProblem({ ...failed, code: 'CRASHED', message: 'gone' }, limits), /canary failed: CRASHED: gone/)
})

t.test('the unshare jail\'s read-only binds, with and without a loader to bind at its usual name', async t => {
  const runtime = { executable: '/usr/bin/python3.11', stdlib: '/usr/lib/python3.11', readOnlyPaths: ['/usr/bin/python3.11'], loader: { source: '/lib/ld.so', target: '/lib64/ld-linux-x86-64.so.2' }, hostSitePackages: undefined, version: '3.11.2' }
  const binds = jailBinds(runtime, '/sp')
  t.ok(binds.includes('/usr/bin/python3.11:/usr/bin/python3.11'))
  t.ok(binds.includes('/usr/bin/prlimit:/usr/bin/prlimit'), 'the tools the jail execs')
  t.ok(binds.includes('/lib/ld.so:/lib64/ld-linux-x86-64.so.2'))
  t.ok(binds.includes('/sp:/sandbox/site-packages'))
  t.notOk(jailBinds({ ...runtime, loader: undefined }, '/sp').some(b => b.includes('ld-linux')))
})
