// The probe's verdicts from canary reports, with fake runs: what each broken promise says.
import t from 'tap'
import type { Limits, RunOutcome } from '../../src/backends/backend.js'
import { checkFacts, hint, probeBackend } from '../../src/backends/probe.js'
import { success } from '../helpers/fake-backend.js'
import { SandboxStartError } from '../../src/errors/errors.js'

const limits: Limits = { wallTimeMs: 1000, killGraceMs: 100, cpuSeconds: 2, memoryMiB: 128, processes: 16, openFiles: 64, tmpMiB: 8, tmpFiles: 1024, outputBytes: 1024, resultBytes: 1024, filesOut: 100, filesOutBytes: 8 * 1024 * 1024 }
const output = { stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false, durationMs: 1 }
const GOOD_FACTS = {
  uid: 65534,
  gid: 65534,
  caps: ['0000000000000000', '0000000000000000', '0000000000000000', '0000000000000000'],
  noNewPrivs: '1',
  seccomp: '2',
  env: ['HOME', 'LANG', 'MALLOC_ARENA_MAX', 'MKL_NUM_THREADS', 'MPLBACKEND', 'MPLCONFIGDIR', 'NUMEXPR_NUM_THREADS', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'OUTPUT_DIR', 'PATH', 'TMPDIR'],
  loopback: 101,
  metadata: 101,
  interfaces: 1,
  rootWritable: false,
  serverVisible: [],
  pids: [1],
  nproc: [16, 16],
  nofile: [64, 64],
  fsize: [8 * 1024 * 1024, 8 * 1024 * 1024],
  cpu: [2, 3],
  numpy: '2',
  pandas: '2'
}
const ok = (result: unknown): RunOutcome => success(result, output)
const fail = (code: 'MEMORY_LIMIT_EXCEEDED' | 'CRASHED', stderr = ''): RunOutcome => ({ ok: false, code, message: code, details: {}, ...output, stderr })

t.test('a canary that cannot start fails the probe with the reason', async t => {
  const report = await probeBackend(async () => { throw new Error('spawn nsjail ENOENT') }, limits, { isolated: true, seccomp: true })
  t.same([report.ok, report.reason], [false, 'the canary could not start: spawn nsjail ENOENT'])
  t.notOk(report.inconclusive)
})

t.test('a canary that cannot start for want of descriptors or processes (BUSY) is inconclusive: a busy host, not a broken sandbox', async t => {
  const report = await probeBackend(async () => { throw new SandboxStartError({ cause: new Error('spawn nsjail EMFILE') }) }, limits, { isolated: true, seccomp: true })
  t.same([report.ok, report.inconclusive], [false, true])
  t.match(report.reason, /^inconclusive, the canary could not start: the server cannot start a sandbox right now/)
})

t.test('a memory limit that does not stop the memory canary fails the probe', async t => {
  const runs = [ok(GOOD_FACTS), ok(200 * 1024 * 1024)]
  const report = await probeBackend(async () => runs.shift() as RunOutcome, limits, { isolated: true, seccomp: true })
  t.equal(report.ok, false)
  t.match(report.reason, /memory limit not enforced: allocating 192 MiB succeeded/)
})

t.test('a canary crashing in the launcher carries a hint, without the log prefixes', async t => {
  const report = await probeBackend(async () => fail('CRASHED', "[E][2026-11-26T13:10:31+0000][1] buildMountTree():328 Failed to mount mandatory point: '/proc'"), limits, { isolated: true, seccomp: true })
  t.match(report.reason, /stderr: buildMountTree\(\):328 Failed to mount mandatory point: '\/proc'\)/)
  t.match(report.reason, /hint: \/proc is masked/)
})

t.test('every broken promise is named', async t => {
  const broken = { ...GOOD_FACTS, uid: 0, caps: ['0', '0', '00000000a80425fb', '0'], noNewPrivs: '0', seccomp: '0', env: ['PATH', 'SECRET'], loopback: 0, metadata: 0, interfaces: 3, rootWritable: true, serverVisible: ['/app'], pids: [1, 7], nproc: [99, 99], nofile: [1, 1], fsize: [1, 1], cpu: [9, 9] }
  const problems = checkFacts(broken, limits, { isolated: true, seccomp: true })
  t.equal(problems.length, 15, problems.join('\n'))
  t.same(checkFacts(GOOD_FACTS, limits, { isolated: true, seccomp: true }), [])
  t.same(checkFacts({ ...broken, env: GOOD_FACTS.env, nproc: [16, 16], nofile: [64, 64], fsize: GOOD_FACTS.fsize, cpu: [2, 3] }, limits, { isolated: false, seccomp: false }), [], 'direct promises only a clean environment and the limits')
})

t.test('hints name the fix for the usual launcher complaints', async t => {
  t.match(hint('sethostname(): Operation not permitted'), /SYS_ADMIN/)
  t.match(hint('write(/proc/self/gid_map): Operation not permitted'), /CAP_SETUID/)
  t.equal(hint('something else'), '')
})

t.test('a canary that runs out of wall or CPU time is inconclusive (a busy host); every other failure is conclusive', async t => {
  const outcome = (code: 'TIME_LIMIT_EXCEEDED' | 'MEMORY_LIMIT_EXCEEDED' | 'CRASHED' | 'MAIN_RAISED'): RunOutcome => ({ ok: false, code, message: `${code} text`, details: {}, ...output })
  const table: Array<{ name: string, runs: RunOutcome[], inconclusive: boolean, reason: RegExp }> = [
    { name: 'the canary out of time', runs: [outcome('TIME_LIMIT_EXCEEDED')], inconclusive: true, reason: /^inconclusive, the canary ran out of time \(a busy host\?\): TIME_LIMIT_EXCEEDED/ },
    { name: 'the memory canary out of time', runs: [ok(GOOD_FACTS), outcome('TIME_LIMIT_EXCEEDED')], inconclusive: true, reason: /^inconclusive, the memory canary ran out of time/ },
    { name: 'the canary crashed', runs: [outcome('CRASHED')], inconclusive: false, reason: /^the canary failed: CRASHED/ },
    { name: 'the canary raised', runs: [outcome('MAIN_RAISED')], inconclusive: false, reason: /^the canary failed: MAIN_RAISED/ },
    { name: 'a broken promise', runs: [ok({ ...GOOD_FACTS, uid: 0 })], inconclusive: false, reason: /runs as uid 0/ },
    { name: 'the memory canary not stopped', runs: [ok(GOOD_FACTS), ok(1)], inconclusive: false, reason: /^memory limit not enforced/ },
    { name: 'the memory canary crashed', runs: [ok(GOOD_FACTS), outcome('CRASHED')], inconclusive: false, reason: /^memory limit not enforced/ },
    { name: 'the shared-memory canary out of time', runs: [ok(GOOD_FACTS), outcome('MEMORY_LIMIT_EXCEEDED'), outcome('TIME_LIMIT_EXCEEDED')], inconclusive: true, reason: /^inconclusive, the shared-memory canary ran out of time/ },
    { name: 'the shared-memory canary not stopped', runs: [ok(GOOD_FACTS), outcome('MEMORY_LIMIT_EXCEEDED'), ok({ children: 4, together: 4, memoryErrors: 0, killed: 0 })], inconclusive: false, reason: /^memory limit not enforced across processes/ }
  ]
  for (const { name, runs, inconclusive, reason } of table) {
    const report = await probeBackend(async () => runs.shift() as RunOutcome, limits, { isolated: true, seccomp: true, memoryPerRun: true })
    t.equal(report.ok, false, name)
    t.equal(report.inconclusive === true, inconclusive, `${name}: ${inconclusive ? 'inconclusive' : 'conclusive'}`)
    t.match(report.reason, reason, name)
  }
  const cannotStart = await probeBackend(async () => { throw new Error('spawn nsjail ENOENT') }, limits, { isolated: true, seccomp: true })
  t.equal(cannotStart.inconclusive, undefined, 'a sandbox that cannot start is conclusive')
})
