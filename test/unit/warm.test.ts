// The warm pool's side of the zygote protocol (src/backends/warm.ts), against small Python
// stand-ins for harness/zygote.py that speak the frame protocol, well or badly. Whatever a
// zygote does wrong, the run in flight ends as CRASHED, the zygote is never served again and
// the next run gets a fresh one. (The real zygote, in a real jail: test/integration/warm.test.ts.)
import t, { type Test } from 'tap'
import type { Limits } from '../../src/backends/backend.js'
import { WarmPool } from '../../src/backends/warm.js'

const FAKE_ZYGOTE = `
import os, struct, sys
mode = sys.argv[1]
HEADER = struct.Struct(">IBI")
def frame(run, stream, payload=b""):
    os.write(1, HEADER.pack(run, stream, len(payload)) + payload)
def read(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data
if mode == "exit-at-start":
    sys.exit(3)
frame(0, 5, b"rss 2048 anon 1024")
while True:
    run, length = struct.unpack(">II", read(8))
    script = read(length)
    if mode == "ok":
        frame(run, 1, b"printed " + script)
        frame(run, 3, b'{"ok": true, "result": 7}')
        frame(run, 4, b"exit 0")
        frame(run, 5, b"rss 2048 anon 1024")
    elif mode == "unknown-stream":
        frame(run, 9, b"?")
    elif mode == "wrong-run":
        frame(run + 1, 1, b"?")
    elif mode == "malformed-status":
        frame(run, 4, b"fine, thanks")
    elif mode == "huge-frame":
        os.write(1, HEADER.pack(run, 1, 1 << 30))
    elif mode == "dies":
        os._exit(1)
    elif mode == "hangs":
        pass
`

const LIMITS: Limits = {
  wallTimeMs: 5000,
  killGraceMs: 500,
  cpuSeconds: 5,
  memoryMiB: 256,
  processes: 16,
  openFiles: 64,
  tmpMiB: 16,
  tmpFiles: 1024,
  outputBytes: 1 << 16,
  resultBytes: 1 << 16
}

/** A pool whose zygote of generation n runs `modes[n - 1]` (the last one from then on). */
function pool (t: Test, modes: string[], recycleRuns = 100, limits = LIMITS): { pool: WarmPool, log: string[] } {
  const log: string[] = []
  const warm = new WarmPool({
    launch: (_slot, generation) => ({ file: '/usr/bin/python3', args: ['-c', FAKE_ZYGOTE, modes[Math.min(generation, modes.length) - 1] ?? 'ok'], env: {} }),
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
  ['dies', /exited \(1\)/]
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

t.test('a run past its wall time is TIME_LIMIT_EXCEEDED; the jail is killed and replaced at once', async t => {
  const { pool: warm, log } = pool(t, ['hangs', 'ok'], 100, { ...LIMITS, wallTimeMs: 300 })
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
  for (let i = 0; i < 100 && warm.stats.zygotes.starting > 0; i++) await new Promise(resolve => setTimeout(resolve, 20))
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
