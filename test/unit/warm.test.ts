// The warm pool's side of the zygote protocol (src/backends/nsjail/warm-pool.ts, zygote.ts), against small Python
// stand-ins for harness/zygote.py that speak the frame protocol, well or badly. Whatever a
// zygote does wrong, the run in flight ends as CRASHED, the zygote is never served again and
// the next run gets a fresh one. (The real zygote, in a real jail: test/integration/warm.test.ts.)
import { join } from 'node:path'
import t, { type Test } from 'tap'
import type { Limits } from '../../src/backends/backend.js'
import { PROJECT_ROOT } from '../../src/config.js'
import { WarmPool } from '../../src/backends/nsjail/warm-pool.js'
import { Zygote } from '../../src/backends/nsjail/zygote.js'
import { SMALL_LIMITS } from '../helpers/small-limits.js'

/** A stand-in for harness/zygote.py whose behaviour its first argument names. */
const FAKE_ZYGOTE = join(PROJECT_ROOT, 'test/fixtures/fake_zygote.py')

const LIMITS: Limits = SMALL_LIMITS

/** A pool whose zygote of generation n runs `modes[n - 1]` (the last one from then on). */
function pool (t: Test, modes: string[], recycleRuns = 100, limits = LIMITS): { pool: WarmPool, log: string[] } {
  const log: string[] = []
  const warm = new WarmPool({
    launch: (_slot, generation) => ({ file: '/usr/bin/python3', args: [FAKE_ZYGOTE, modes[Math.min(generation, modes.length) - 1] ?? 'ok'], env: {} }),
    limits,
    channelLimit: LIMITS.resultBytes + 1024,
    recycleRuns,
    memoryByCgroup: false,
    log: message => log.push(message)
  })
  t.teardown(async () => { await warm.close() })
  return { pool: warm, log }
}

t.test('a well-behaved zygote serves runs', async t => {
  const { pool: warm } = pool(t, ['ok'])
  const outcome = await warm.run(0, { script: 'hi' })
  t.match(outcome, { ok: true, result: 7, stdout: 'printed hi' })
  t.same(warm.stats.runs, { ready: 0, waited: 1, cold: 0 }, 'the first run waited for the zygote to start')
  await warm.run(0, { script: 'again' })
  t.same(warm.stats.runs, { ready: 1, waited: 1, cold: 0 }, 'the second found it ready')
})

for (const [mode, reason] of [
  ['unknown-stream', /unknown stream 9/],
  ['wrong-run', /frame for run 2 out of turn/],
  ['malformed-status', /malformed status frame/],
  ['huge-frame', /malformed frame \(length 1073741824\)/],
  ['dies', /exited \(1\)/],
  ['ready-while-running', /unexpected ready frame/]
] as const) {
  t.test(`a zygote that misbehaves (${mode}) fails its run as CRASHED and is replaced`, async t => {
    const { pool: warm, log } = pool(t, [mode, 'ok'])
    const crashed = await warm.run(0, { script: 'x' })
    t.match(crashed, { ok: false, code: 'CRASHED', message: 'the sandbox ended before the script reported a status' })
    t.match(log.join('\n'), reason, 'the reason is logged')
    const next = await warm.run(0, { script: 'y' })
    t.match(next, { ok: true, result: 7 }, 'the next run has a fresh zygote')
  })
}

t.test('a zygote that dies mid-run: CRASHED with what the script printed until then', async t => {
  const { pool: warm, log } = pool(t, ['dies-after-output', 'ok'])
  const crashed = await warm.run(0, { script: 'x' })
  t.match(crashed, { ok: false, code: 'CRASHED', stdout: 'half a line', stderr: 'a warning' })
  t.match(log.join('\n'), /exited \(1\)/)
  t.match(await warm.run(0, { script: 'y' }), { ok: true, result: 7 }, 'the next run has a fresh zygote')
})

t.test('a zygote whose ready frame is malformed never serves: its slot goes cold', async t => {
  const { pool: warm, log } = pool(t, ['malformed-ready'])
  t.equal(await warm.run(0, { script: 'x' }), undefined, 'no warm run: the backend runs it cold')
  t.match(log.join('\n'), /malformed ready frame/)
  t.same(warm.stats.runs, { ready: 0, waited: 0, cold: 1 })
})

t.test('a zygote whose ready frame comes with a frame that ends it is not handed out: the run goes cold', async t => {
  const { pool: warm, log } = pool(t, ['ready-then-dies'])
  t.equal(await warm.run(0, { script: 'x' }), undefined)
  t.same(warm.stats.runs, { ready: 0, waited: 0, cold: 1 })
  t.match(log.join('\n'), /frame for run 9 out of turn/)
})

t.test('a result over its cap: RESULT_TOO_LARGE, and the jail is replaced', async t => {
  const { pool: warm, log } = pool(t, ['result-over-cap', 'ok'])
  t.match(await warm.run(0, { script: 'x' }), { ok: false, code: 'RESULT_TOO_LARGE' })
  t.match(log.join('\n'), /result over its cap/)
  t.match(await warm.run(0, { script: 'y' }), { ok: true, result: 7 })
})

t.test('a run whose client left before it started is stopped at once (the stop follows its script frame)', async t => {
  const { pool: warm } = pool(t, ['hangs'])
  const started = performance.now()
  const outcome = await warm.run(0, { script: 'x', signal: AbortSignal.abort() })
  t.match(outcome, { ok: false, code: 'TIME_LIMIT_EXCEEDED', message: /shutting down/ })
  t.ok(performance.now() - started < 1500, 'the zygote honoured the stop: no stop grace spent')
  t.match(await warm.run(0, { script: 'y', signal: AbortSignal.abort() }), { ok: false, code: 'TIME_LIMIT_EXCEEDED' }, 'and the jail was kept')
})

t.test('one zygote: not ready yet, a run is refused; once dead, it never says ready', async t => {
  const deaths: string[] = []
  const zygote = new Zygote({ file: '/usr/bin/python3', args: [FAKE_ZYGOTE, 'exit-at-start'], env: {} }, LIMITS, LIMITS.resultBytes, dead => deaths.push(dead.reason))
  await t.rejects(zygote.run({ script: 'x' }, false), /zygote not ready \(starting\)/)
  t.equal(await zygote.whenReady(), false, 'it died while starting')
  t.equal(await zygote.whenReady(), false, 'and stays dead')
  await zygote.exited
  t.match(deaths, [/exited \(3\)/])
})

t.test('a run past its wall time whose zygote ignores the stop: TIME_LIMIT_EXCEEDED; the jail is killed and replaced', async t => {
  const { pool: warm, log } = pool(t, ['ignores-stop', 'ok'], 100, { ...LIMITS, wallTimeMs: 300 })
  t.match(await warm.run(0, { script: 'x' }), { ok: false, code: 'TIME_LIMIT_EXCEEDED' })
  t.match(log.join('\n'), /wall time expired/)
  t.match(await warm.run(0, { script: 'y' }), { ok: true, result: 7 }, 'the next run is warm again, no back-off')
})

t.test('a zygote that cannot start sends its slot cold, then it backs off', async t => {
  const { pool: warm, log } = pool(t, ['exit-at-start'])
  t.equal(await warm.run(0, { script: 'x' }), undefined, 'the run goes cold')
  t.equal(await warm.run(0, { script: 'x' }), undefined, 'and the next, without a new attempt')
  t.same(warm.stats.runs, { ready: 0, waited: 0, cold: 2 })
  t.equal(log.length, 1, 'one attempt in the back-off period')
  t.match(warm.lastFailure, /exited \(3\)/)
})

t.test('a successor that dies before its turn is dropped; the recycling starts a fresh one', async t => {
  const { pool: warm, log } = pool(t, ['ok', 'exit-at-start', 'ok'], 2)
  t.match(await warm.run(0, { script: 'a' }), { ok: true }, 'generation 1, run 1: its successor starts')
  for (let i = 0; i < 100 && !log.some(line => line.includes('ended after 0 runs')); i++) await new Promise(resolve => setTimeout(resolve, 20))
  t.match(log.join('\n'), /ended after 0 runs: exited \(3\)/, 'the successor died')
  t.match(await warm.run(0, { script: 'b' }), { ok: true }, 'generation 1, run 2: recycled')
  t.match(await warm.run(0, { script: 'c' }), { ok: true }, 'generation 3 serves')
  t.same(warm.stats.runs, { ready: 1, waited: 2, cold: 0 }, 'with no successor ready, the third run waited')
})

t.test('a closed pool serves nothing and keeps no process', async t => {
  const { pool: warm } = pool(t, ['ok'])
  warm.prewarm(2)
  t.equal(warm.stats.zygotes.starting, 2)
  await warm.close()
  t.equal(await warm.run(0, { script: 'x' }), undefined)
  t.same(warm.stats.zygotes, { starting: 0, ready: 0, running: 0, cleaning: 0, dead: 0 })
})
