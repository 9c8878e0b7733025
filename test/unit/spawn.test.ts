import { closeSync, openSync, readFileSync } from 'node:fs'
import { constants } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { SMALL_LIMITS } from '../helpers/small-limits.js'
import type { Limits } from '../../src/backends/backend.js'
import { exhausted, runLaunch, startFailure } from '../../src/backends/launch.js'
import { crashed } from '../../src/backends/outcome.js'
import { WarmPool } from '../../src/backends/nsjail/warm-pool.js'
import { Zygote } from '../../src/backends/nsjail/zygote.js'
import { spawnCapped, type SpawnRequest, type SpawnResult } from '../../src/backends/spawn.js'
import { UnshareBackend } from '../../src/backends/unshare/backend.js'
import { PROJECT_ROOT } from '../../src/config.js'
import { SandboxStartError } from '../../src/errors/errors.js'

const ENV = { PATH: '/usr/bin:/bin' }

/** Runs a shell one-liner through spawnCapped with roomy defaults. */
async function sh (script: string, overrides: Partial<SpawnRequest> = {}): Promise<SpawnResult> {
  return await spawnCapped({
    file: '/bin/sh',
    args: ['-c', script],
    env: ENV,
    input: '',
    outputLimit: 64 * 1024,
    channelLimit: 64 * 1024,
    wallTimeMs: 10_000,
    killGraceMs: 200,
    ...overrides
  })
}

/** Whether `pid` runs: gone or a zombie (the test machine's init may not reap) is not running. */
function running (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

t.test('stdout and stderr are captured separately, as bytes', async t => {
  const r = await sh('printf "out\\n"; printf "err\\n" >&2; printf "\\377\\376"')
  t.same([...r.stdout], [...Buffer.from('out\n'), 0xff, 0xfe], 'raw bytes kept, including invalid UTF-8')
  t.equal(r.stderr.toString(), 'err\n')
  t.equal(r.stdoutTruncated, false)
  t.equal(r.stderrTruncated, false)
  t.equal(r.exitCode, 0)
  t.equal(r.signal, null)
  t.equal(r.timedOut, false)
  t.equal(r.aborted, false)
  t.equal(r.spawnError, undefined)
  t.equal(r.channel.length, 0)
  t.equal(r.channelOverflow, false)
  t.type(r.durationMs, 'number')
})

t.test('output at exactly outputLimit bytes is kept whole and not flagged', async t => {
  const r = await sh('printf abcd; printf efgh >&2', { outputLimit: 4 })
  t.equal(r.stdout.toString(), 'abcd')
  t.equal(r.stderr.toString(), 'efgh')
  t.equal(r.stdoutTruncated, false)
  t.equal(r.stderrTruncated, false)
})

t.test('output one byte over outputLimit is cut to the limit and flagged', async t => {
  const r = await sh('printf abcde; printf fghij >&2', { outputLimit: 4 })
  t.equal(r.stdout.toString(), 'abcd')
  t.equal(r.stderr.toString(), 'fghi')
  t.equal(r.stdoutTruncated, true)
  t.equal(r.stderrTruncated, true)
})

t.test('a 5 MB flood is capped at outputLimit, flagged, and read to the end without deadlock', async t => {
  const table = [
    { stream: 'stdout', script: 'yes | head -c 5000000; echo done >&2' },
    { stream: 'stderr', script: 'yes | head -c 5000000 >&2; echo done' }
  ] as const
  for (const { stream, script } of table) {
    const r = await sh(script, { outputLimit: 1024, wallTimeMs: 20_000 })
    const other = stream === 'stdout' ? 'stderr' : 'stdout'
    t.equal(r[stream].length, 1024, `${stream}: exactly the limit kept`)
    t.equal(r[stream].toString(), 'y\n'.repeat(512), `${stream}: the first bytes are kept`)
    t.equal(r[`${stream}Truncated`], true, `${stream}: flagged`)
    t.equal(r[other].toString(), 'done\n', `${stream}: the process ran to the end`)
    t.equal(r[`${other}Truncated`], false)
    t.equal(r.exitCode, 0, `${stream}: exited normally, not killed for its output`)
    t.equal(r.timedOut, false)
  }
})

t.test('fd 3 is the result channel, captured apart from stdout', async t => {
  const r = await sh('printf "{\\"ok\\":true}" >&3; echo printed')
  t.equal(r.channel.toString(), '{"ok":true}')
  t.equal(r.stdout.toString(), 'printed\n')
  t.equal(r.channelOverflow, false)
  t.equal(r.exitCode, 0)
})

t.test('the channel at exactly channelLimit bytes is accepted', async t => {
  const r = await sh('printf 12345678 >&3', { channelLimit: 8 })
  t.equal(r.channel.toString(), '12345678')
  t.equal(r.channelOverflow, false)
  t.equal(r.exitCode, 0)
})

t.test('channel overflow kills the process group at once', async t => {
  const started = performance.now()
  const r = await sh('sleep 30 & printf 123456789 >&3; sleep 30', { channelLimit: 8, wallTimeMs: 20_000 })
  t.ok(performance.now() - started < 5000, 'did not wait for the sleeps')
  t.equal(r.channelOverflow, true)
  t.equal(r.channel.toString(), '12345678', 'kept up to the limit')
  t.equal(r.signal, constants.signals.SIGKILL)
  t.equal(r.exitCode, null)
  t.equal(r.timedOut, false)
})

t.test('input is delivered on fd 4 and then closed', async t => {
  const table = [
    { name: 'small', input: 'print("héllo")\n' },
    { name: 'empty', input: '' },
    { name: '300 KB, larger than a pipe buffer', input: 'x'.repeat(300_000) }
  ]
  for (const { name, input } of table) {
    const r = await sh('cat <&4', { input, outputLimit: 1_000_000 })
    t.equal(r.stdout.toString(), input, name)
    t.equal(r.exitCode, 0, `${name}: cat saw end of input`)
  }
})

t.test('a child that exits without reading its input is not an error', async t => {
  const r = await sh('exit 0', { input: 'x'.repeat(4 * 1024 * 1024) })
  t.equal(r.exitCode, 0)
  t.equal(r.spawnError, undefined)
})

t.test('the child sees only the env it is given and runs in cwd', async t => {
  process.env.PYSANDBOX_TEST_SECRET = 'leak'
  t.teardown(() => { delete process.env.PYSANDBOX_TEST_SECRET })
  // eslint-disable-next-line no-template-curly-in-string -- shell parameter expansion, not a template
  const r = await sh('echo "${FOO}|${PYSANDBOX_TEST_SECRET-unset}"; pwd', { env: { ...ENV, FOO: 'bar' }, cwd: '/tmp' })
  t.equal(r.stdout.toString(), 'bar|unset\n/tmp\n')
})

t.test('the child leads a process group of its own', async t => {
  const r = await sh('echo $$; cut -d" " -f5 /proc/$$/stat')
  const [pid, pgrp] = r.stdout.toString().trim().split('\n')
  t.ok(pid !== undefined && pid !== '')
  t.equal(pgrp, pid)
  t.not(pgrp, String(process.pid))
})

t.test('exit code and signal are reported', async t => {
  const table = [
    { script: 'exit 0', exitCode: 0, signal: null },
    { script: 'exit 3', exitCode: 3, signal: null },
    { script: 'exit 137', exitCode: 137, signal: null },
    { script: 'kill -USR1 $$', exitCode: null, signal: constants.signals.SIGUSR1 },
    { script: 'kill -SEGV $$', exitCode: null, signal: constants.signals.SIGSEGV }
  ]
  for (const { script, exitCode, signal } of table) {
    const r = await sh(script)
    t.equal(r.exitCode, exitCode, `${script}: exit code`)
    t.equal(r.signal, signal, `${script}: signal`)
    t.equal(r.timedOut, false)
  }
})

t.test('wall timeout: SIGTERM, timedOut true', async t => {
  const started = performance.now()
  const r = await sh('echo started; exec sleep 30', { wallTimeMs: 200, killGraceMs: 5000 })
  const elapsed = performance.now() - started
  t.equal(r.timedOut, true)
  t.equal(r.aborted, false)
  t.equal(r.signal, constants.signals.SIGTERM, 'SIGTERM was enough')
  t.ok(elapsed >= 190, `not before the limit (${Math.round(elapsed)} ms)`)
  t.ok(elapsed < 3000, `not after the grace either (${Math.round(elapsed)} ms)`)
  t.equal(r.stdout.toString(), 'started\n', 'output before the kill is kept')
})

t.test('wall timeout: a process that ignores SIGTERM is killed with SIGKILL after killGraceMs', async t => {
  const started = performance.now()
  const r = await sh('trap "" TERM; sleep 30; echo survived', { wallTimeMs: 200, killGraceMs: 300 })
  const elapsed = performance.now() - started
  t.equal(r.timedOut, true)
  t.equal(r.signal, constants.signals.SIGKILL)
  t.equal(r.stdout.toString(), '', 'it never got past the sleep')
  t.ok(elapsed >= 480, `the grace was given (${Math.round(elapsed)} ms)`)
  t.ok(elapsed < 5000, `killed well before the sleep ends (${Math.round(elapsed)} ms)`)
})

t.test('abort via AbortSignal kills the run and flags aborted', async t => {
  const controller = new AbortController()
  const started = performance.now()
  const pending = sh('exec sleep 30', { signal: controller.signal, killGraceMs: 200 })
  setTimeout(() => controller.abort(), 100)
  const r = await pending
  t.equal(r.aborted, true)
  t.equal(r.timedOut, false)
  t.equal(r.signal, constants.signals.SIGTERM)
  t.ok(performance.now() - started < 5000)
})

t.test('abort escalates to SIGKILL for a process that ignores SIGTERM', async t => {
  const controller = new AbortController()
  const pending = sh('trap "" TERM; sleep 30', { signal: controller.signal, killGraceMs: 200 })
  setTimeout(() => controller.abort(), 100)
  const r = await pending
  t.equal(r.aborted, true)
  t.equal(r.signal, constants.signals.SIGKILL)
})

t.test('a signal aborted before the start kills the run at once', async t => {
  const started = performance.now()
  const r = await sh('exec sleep 30', { signal: AbortSignal.abort(), killGraceMs: 200 })
  t.equal(r.aborted, true)
  t.not(r.exitCode, 0)
  t.ok(performance.now() - started < 5000)
})

t.test('aborting after the run settled changes nothing', async t => {
  const controller = new AbortController()
  const r = await sh('echo hi', { signal: controller.signal })
  controller.abort()
  t.equal(r.aborted, false)
  t.equal(r.exitCode, 0)
})

t.test('a file that cannot be started sets spawnError', async t => {
  const table = [
    { name: 'missing file', file: '/nonexistent/definitely-not-here', code: 'ENOENT' },
    { name: 'a directory', file: '/', code: 'EACCES' }
  ]
  for (const { name, file, code } of table) {
    const r = await spawnCapped({
      file, args: [], env: ENV, input: 'x', outputLimit: 1024, channelLimit: 1024, wallTimeMs: 10_000, killGraceMs: 100
    })
    t.match(r.spawnError, { code }, name)
    t.equal(r.timedOut, false, `${name}: settled at once, not by the wall timer`)
  }
})

t.test('a file that cannot be started with an already aborted signal still settles with spawnError', async t => {
  const r = await spawnCapped({
    file: '/nonexistent/definitely-not-here',
    args: [],
    env: ENV,
    input: '',
    outputLimit: 1024,
    channelLimit: 1024,
    wallTimeMs: 10_000,
    killGraceMs: 100,
    signal: AbortSignal.abort()
  })
  t.match(r.spawnError, { code: 'ENOENT' })
})

t.test('a background grandchild in the group is killed when the child exits, and does not hold the result', async t => {
  const started = performance.now()
  const r = await sh('sleep 30 & echo $! >&3; echo hi')
  const elapsed = performance.now() - started
  t.equal(r.stdout.toString(), 'hi\n')
  t.equal(r.exitCode, 0)
  t.ok(elapsed < 1500, `settled within ~1 s of the exit (${Math.round(elapsed)} ms)`)
  const grandchild = Number(r.channel.toString())
  t.ok(grandchild > 0)
  // Its pipes close a moment before the kernel marks it dead: allow that moment, not 30 s.
  const deadline = Date.now() + 500
  while (running(grandchild) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  t.equal(running(grandchild), false, 'the grandchild was killed with its group')
})

t.test('a grandchild that left the group and holds the pipes delays the result by at most ~1 s', async t => {
  // setsid puts the holder in a session of its own (the pause lets it get there before the
  // shell exits): only the drain timeout can end the wait.
  const started = performance.now()
  const r = await sh('setsid sleep 4 & echo $! >&3; sleep 0.3; echo hi', { wallTimeMs: 10_000 })
  const elapsed = performance.now() - started
  t.equal(r.stdout.toString(), 'hi\n', 'output written before the exit is kept')
  t.equal(r.exitCode, 0)
  t.equal(r.timedOut, false)
  t.ok(elapsed >= 1200, `waited for the pipes to drain (${Math.round(elapsed)} ms)`)
  t.ok(elapsed < 3000, `but not until the holder exited (${Math.round(elapsed)} ms)`)
  t.equal(running(Number(r.channel.toString())), true, 'the holder really was outside the group')
})

t.test('a process that exits before the wall limit is not reported timed out while a stray holder keeps its pipes open', async t => {
  // The shell exits after ~300 ms; the drain wait (~1 s) outlasts the 700 ms wall limit.
  const r = await sh('setsid sleep 4 & sleep 0.3; echo hi', { wallTimeMs: 700 })
  t.equal(r.exitCode, 0)
  t.equal(r.stdout.toString(), 'hi\n')
  t.equal(r.timedOut, false, 'the wall timer must not fire for a process that already exited')
})

// Out of descriptors, processes or memory (issue 14): every spawn is guarded. None of these may
// throw, leave an 'error' event unheard (that ends the process), or blame the script.

/** Runs `start` while this process has no descriptor left (EMFILE), then gives them back: the spawn
 *  fails inside, and Node reports it on the next tick, once they are back. */
function withoutDescriptors<T> (start: () => T): T {
  const taken: number[] = []
  try {
    for (;;) taken.push(openSync('/dev/null', 'r'))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EMFILE') throw error
  }
  try {
    return start()
  } finally {
    for (const fd of taken) closeSync(fd)
  }
}

const LIMITS: Limits = SMALL_LIMITS

t.test('what counts as the host being short: EMFILE, ENFILE, EAGAIN, ENOMEM', async t => {
  const errno = (code: string): Error => Object.assign(new Error(code), { code })
  for (const code of ['EMFILE', 'ENFILE', 'EAGAIN', 'ENOMEM']) t.equal(exhausted(errno(code)), true, code)
  for (const code of ['ENOENT', 'EACCES', 'E2BIG']) t.equal(exhausted(errno(code)), false, code)
  t.equal(exhausted({ code: 'EMFILE' }), false, 'not an Error')
  t.equal(exhausted(undefined), false)
  const busy = startFailure(errno('EAGAIN'))
  t.ok(busy instanceof SandboxStartError)
  t.match(busy, { code: 'BUSY', statusCode: 503, cause: { code: 'EAGAIN' } })
  const other = errno('ENOENT')
  t.equal(startFailure(other), other, 'anything else as it is')
})

t.test('out of descriptors, a spawn settles with spawnError EMFILE: no exception, nothing unheard', async t => {
  const pending = withoutDescriptors(async () => await sh('echo never'))
  const r = await pending
  t.match(r.spawnError, { code: 'EMFILE' })
  t.equal(r.exitCode, null)
  t.equal(r.stdout.length, 0)
  t.equal(r.timedOut, false)
})

t.test('a run that cannot start for lack of descriptors is BUSY (503, retryable), never the script\'s failure', async t => {
  const request = { script: 'def main():\n    return 1\n', slot: 0 }
  const launch = { file: '/bin/true', args: [], env: ENV }
  const rejected = withoutDescriptors(async () => await runLaunch(launch, request, LIMITS, false))
  await t.rejects(rejected, { code: 'BUSY', statusCode: 503, message: 'the server cannot start a sandbox right now; nothing ran; retry later', cause: { code: 'EMFILE' } })
  await t.rejects(runLaunch({ file: '/nonexistent/launcher', args: [], env: ENV }, request, LIMITS, false), { code: 'ENOENT' }, 'a launcher that is not there stays an internal error')
  await t.rejects(runLaunch({ file: '/bin/true', args: ['nul\0byte'], env: ENV }, request, LIMITS, false), { code: 'ERR_INVALID_ARG_VALUE' }, 'so does one Node refuses at once')
})

t.test('a launcher\'s normaliser may tell the outcome itself (nsjail killed from outside), or hand the process on to be interpreted', async t => {
  const request = { script: 'def main():\n    return 1\n', slot: 0 }
  const launch = { file: '/bin/true', args: [], env: ENV }
  const told = await runLaunch(launch, request, LIMITS, false, spawned => crashed(`told by the launcher (exit ${String(spawned.exitCode)})`))
  t.match(told, { ok: false, code: 'CRASHED', message: 'told by the launcher (exit 0)' })
  const interpreted = await runLaunch(launch, request, LIMITS, false, spawned => spawned)
  t.match(interpreted, { ok: false, code: 'CRASHED', message: /exited with status 0 before returning a result/ })
})

t.test('unshare: a run whose jail cannot be prepared throws what prepared it, BUSY when the host is short', async t => {
  const backend = new UnshareBackend({ python: '/usr/bin/python3', sitePackages: '/nonexistent', uidBase: 1_000_000, limits: LIMITS })
  await t.rejects(backend.run({ script: 'x', slot: 0 }), { message: 'unshare backend used before its probe' })
})

/** A stand-in for harness/zygote.py (test/unit/warm.test.ts uses it too). */
const FAKE_ZYGOTE = join(PROJECT_ROOT, 'test/fixtures/fake_zygote.py')

t.test('a warm jail that cannot start for lack of descriptors dies on the next tick, like any other', async t => {
  const deaths: string[] = []
  const zygote = withoutDescriptors(() => new Zygote({ file: '/usr/bin/python3', args: [FAKE_ZYGOTE, 'ok'], env: {} }, LIMITS, 1024, dead => deaths.push(dead.reason)))
  t.same(deaths, [], 'not while it is being made (its pool does not hold it yet)')
  t.equal(await zygote.whenReady(), false)
  await zygote.exited
  t.match(deaths, [/could not start: spawn \/usr\/bin\/python3 EMFILE/])
  t.equal(zygote.state, 'dead')
  zygote.kill('again') // nothing left to stop
  t.equal(deaths.length, 1)
})

t.test('a warm jail Node refuses to start at once dies on the next tick too', async t => {
  const deaths: string[] = []
  const zygote = new Zygote({ file: '/usr/bin/python3', args: ['nul\0byte'], env: {} }, LIMITS, 1024, dead => deaths.push(dead.reason))
  t.same(deaths, [])
  t.equal(await zygote.whenReady(), false)
  await zygote.exited
  t.match(deaths, [/could not start: .*null bytes/])
})

t.test('a warm jail whose replacement cannot start, in the exit handler of the one it replaces: no exception; the slot backs off and goes cold', async t => {
  const log: string[] = []
  const pool = new WarmPool({
    // Generation 2 cannot be started (Node refuses it at once, as it does a fork without memory).
    launch: (_slot, generation) => ({ file: '/usr/bin/python3', args: generation === 1 ? [FAKE_ZYGOTE, 'dies'] : ['nul\0byte'], env: {} }),
    limits: LIMITS,
    channelLimit: LIMITS.resultBytes + 1024,
    recycleRuns: 100,
    memoryByCgroup: false,
    log: message => log.push(message)
  })
  t.teardown(async () => { await pool.close() })
  t.match(await pool.run(0, { script: 'x' }), { ok: false, code: 'CRASHED' }, 'the first jail dies mid-run')
  await new Promise(resolve => setTimeout(resolve, 50))
  t.match(log.join('\n'), /ended after 0 runs: could not start/, 'its replacement could not start')
  t.equal(await pool.run(0, { script: 'y' }), undefined, 'the next run goes cold (the slot backs off)')
  t.equal(pool.stats.runs.cold, 1)
})
