// Sessions' jails (docs/sessions.md) with real nsjail, through NsjailBackend.openSession: state
// that persists between calls (allow), what one session cannot reach of another, of a stateless
// run or of the host (deny), the per-call limits and what ends a session, and the spares.
import t, { type Test } from 'tap'
import { limitsFrom, type SessionSandbox } from '../../src/backends/backend.js'
import { nsjailOptions } from '../../src/backends/index.js'
import type { Launch } from '../../src/backends/launch.js'
import { NsjailBackend } from '../../src/backends/nsjail/backend.js'
import type { SessionJail } from '../../src/backends/nsjail/session-jail.js'
import { MAX_SESSION_SEATS, SESSION_PARENT_UID_OFFSET, SESSION_UID_OFFSET } from '../../src/backends/uids.js'
import {
  ROOT, SESSIONS, SESSION_UID_BASE, call, cpuOverBudget, hostProcesses, hostUid, idleBusyProcess, idleThaw, nonDumpableChild, sessionBackend, sessionConfig,
  spareReady, testLimits
} from '../helpers/sessions.js'

// Jails are unref'd (an idle pool keeps no process alive): keep the test process up meanwhile.
const keepAlive = setInterval(() => {}, 1000)
t.teardown(() => clearInterval(keepAlive))

let backend: NsjailBackend
t.before(async () => { if (ROOT.skip === false) backend = await sessionBackend() })
t.teardown(async () => { await backend?.close() })

async function open (t: Test): Promise<SessionSandbox> {
  const session = await backend.openSession()
  t.teardown(() => session.close('test over'))
  return session
}

t.test('allow: state persists between calls (values, imports, functions, files, DataFrames)', ROOT, async t => {
  const session = await open(t)
  const steps: Array<[string, unknown]> = [
    ['x = 41', null],
    ['x + 1', 42],
    ['import json\ndef double(v):\n    return 2 * v', null],
    ['json.dumps(double(x))', '82'],
    ['with open("notes.txt", "w") as f:\n    f.write("from call 5")', null],
    ['import pandas as pd\ndf = pd.DataFrame({"a": [1, 2, 3]})', null],
    ['open("notes.txt").read()', 'from call 5'],
    ['df["b"] = df.a * 10\nint(df.b.sum())', 60]
  ]
  for (const [script, expected] of steps) {
    const outcome = await call(session, script)
    t.match(outcome, { ok: true }, script)
    if (outcome.ok) t.same(outcome.result, expected, script)
  }
})

t.test('allow: cell semantics: last expression, null for a statement, main() wins, MISSING_MAIN', ROOT, async t => {
  const session = await open(t)
  t.match(await call(session, 'y = 5\ny * 2'), { ok: true, result: 10 })
  t.match(await call(session, 'y = 6'), { ok: true, result: null })
  t.match(await call(session, 'def main():\n    return y + 1\n99'), { ok: true, result: 7 }, 'main() wins over a last expression')
  t.match(await call(session, 'def main(v):\n    return v * y', { input: { value: 7 } }), { ok: true, result: 42 })
  t.match(await call(session, 'async def main():\n    return "async"'), { ok: true, result: 'async' })
  t.match(await call(session, 'y', { input: { value: 1 } }), { ok: false, code: 'MISSING_MAIN', message: "input is main()'s argument, and this call's script defines no main()" })
  t.match(await call(session, 'y'), { ok: true, result: 6 }, 'main() of an earlier call is not called')
  t.match(await call(session, 'def f(:'), { ok: false, code: 'SYNTAX_ERROR' })
  t.match(await call(session, 'object()'), { ok: false, code: 'RESULT_NOT_JSON' })
})

t.test('allow: an exception keeps the state as the cell left it; SystemExit is MAIN_RAISED', ROOT, async t => {
  const session = await open(t)
  const raised = await call(session, 'z = 1\nraise ValueError("boom")\nz = 2')
  t.match(raised, { ok: false, code: 'MAIN_RAISED', message: 'ValueError: boom', details: { traceback: /File "<script>", line 2/ } })
  t.notMatch(raised.ok ? '' : String(raised.details.traceback), /session\.py/, 'only the user\'s frames')
  t.match(await call(session, 'z'), { ok: true, result: 1 })
  t.match(await call(session, 'import sys\nsys.exit(3)'), { ok: false, code: 'MAIN_RAISED', message: /SystemExit/ })
  t.match(await call(session, 'z + 1'), { ok: true, result: 2 }, 'the session goes on')
})

t.test('allow: stdout and stderr per call, a subprocess\'s output relayed to its call; stdin and files in', ROOT, async t => {
  const session = await open(t)
  t.match(await call(session, 'import sys\nprint("one")\nprint("err", file=sys.stderr)'), { ok: true, stdout: 'one\n', stderr: 'err\n' })
  t.match(await call(session, 'import subprocess\nsubprocess.run([sys.executable, "-c", "print(\'hi from a child\')"])\nprint("two")'),
    { ok: true, stdout: 'hi from a child\ntwo\n', stderr: '' })
  t.match(await call(session, 'input()', { stdin: 'typed\n' }), { ok: true, result: 'typed' })
  t.match(await call(session, 'open("data.csv").read()', { files: [{ path: 'data.csv', content: Buffer.from('a,b\n1,2\n') }] }), { ok: true, result: 'a,b\n1,2\n' })
  t.match(await call(session, 'open("data.csv").read()', { files: [{ path: 'data.csv', content: Buffer.from('new') }] }), { ok: true, result: 'new' }, 'a later call replaces a file')
  t.match(await call(session, 'import os\nos.symlink("/etc/passwd", "link.txt")'), { ok: true })
  t.match(await call(session, '1', { files: [{ path: 'link.txt', content: Buffer.from('x') }] }), { ok: false, code: 'MAIN_RAISED', message: /link\.txt could not be placed/ }, 'deny: a planted link is not followed')
})

t.test('allow: a call returns the files it wrote under output/ and its open figures, not earlier calls\'', ROOT, async t => {
  const session = await open(t)
  const first = await call(session, 'import os\nos.makedirs("output", exist_ok=True)\nopen("output/a.txt", "w").write("a")\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n1')
  t.same(first.ok ? first.files?.map(f => f.path) : first, ['a.txt', 'figures/1.png'])
  const second = await call(session, 'open("output/b.txt", "w").write("b")\nimport matplotlib.pyplot as plt\nlen(plt.get_fignums())')
  t.match(second, { ok: true, result: 0 }, 'figures were closed after the call that returned them')
  t.same(second.ok ? second.files?.map(f => f.path) : second, ['b.txt'])
  t.match(await call(session, '2'), { ok: true, files: undefined })
})

t.test('deny: two sessions have their own host uids, files and processes; nor do they see a stateless run\'s', ROOT, async t => {
  const a = await open(t)
  const b = await open(t)
  const [uidA, uidB] = [await hostUid(a), await hostUid(b)]
  t.not(uidA, uidB)
  for (const uid of [uidA, uidB]) t.ok(uid >= SESSION_UID_BASE + SESSION_UID_OFFSET && uid < SESSION_UID_BASE + SESSION_UID_OFFSET + SESSIONS.seats, `${uid} is a session seat's`)
  t.match(await call(a, 'import subprocess, sys\nopen("/tmp/secret-a", "w").write("a")\nsleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "sleeper-a"])\n1'), { ok: true })
  const look = 'import os\ndef cmd(p):\n    try:\n        return open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")\n    except OSError:\n        return ""\n' +
    '[os.path.exists("/tmp/secret-a"), any("sleeper-a" in cmd(p) for p in os.listdir("/proc") if p.isdigit())]'
  t.match(await call(a, look), { ok: true, result: [true, true] }, 'allow: a sees its own file and sleeper')
  t.match(await call(b, look), { ok: true, result: [false, false] }, 'deny: b sees neither')
  const run = await backend.run({ slot: 0, script: `${look.replace(/\n\[/, '\ndef main():\n    return [')}` })
  t.match(run, { ok: true, result: [false, false] }, 'deny: a stateless run sees neither')
})

t.test('deny: a background process is stopped while the session is idle, and gone after close()', ROOT, async t => {
  const session = await backend.openSession()
  const { breached, idleTicks, callTicks, pid } = await idleBusyProcess(session)
  t.equal(breached, false, `idle: ${idleTicks} ticks of CPU in 1 s`)
  t.ok(callTicks > 20, `allow: it runs during a call (${callTicks} ticks in 1 s)`)
  const uid = await hostUid(session)
  session.close('test over')
  t.same(await session.ended, { code: 'CLOSED', message: 'test over' })
  await (session as SessionJail).exited // `ended` is said at once; the processes go with the jail
  t.same(hostProcesses(uid), [], `no process of uid ${uid} (busy was host pid ${pid}) after close()`)
  t.same(hostProcesses(uid + SESSION_PARENT_UID_OFFSET), [], 'nor of its parent\'s uid')
})

t.test('deny: the parent is uid 0 of the jail on a host uid of its own; the user\'s code is 65534 with no capability', ROOT, async t => {
  const session = await open(t)
  const [uid, parent] = [await hostUid(session), await hostUid(session, 0)]
  t.equal(parent, uid + SESSION_PARENT_UID_OFFSET, `the parent is host uid ${parent}, the seat ${uid}`)
  t.ok(parent >= SESSION_UID_BASE + SESSION_UID_OFFSET + MAX_SESSION_SEATS && parent < SESSION_UID_BASE + SESSION_UID_OFFSET + 2 * MAX_SESSION_SEATS)
  const ids = 'import os\nstatus = dict(line.split(":", 1) for line in open("/proc/self/status"))\n' +
    '[os.getresuid(), os.getresgid(), os.getgroups(), [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")]]'
  const zero = '0000000000000000'
  t.match(await call(session, ids), { ok: true, result: [[65534, 65534, 65534], [65534, 65534, 65534], [], [zero, zero, zero, zero, zero]] })
  const child = 'import os\nprint(os.getuid(), sorted(set(v.strip() for k, v in (l.split(":", 1) for l in open("/proc/self/status")) if k.startswith("Cap"))))'
  t.match(await call(session, `import subprocess, sys\nsubprocess.run([sys.executable, "-c", ${JSON.stringify(child)}], capture_output=True, text=True).stdout`),
    { ok: true, result: `65534 ['${zero}']\n` }, 'nor has a process it starts')
  const touch = 'import os, resource, signal\nout = []\n' +
    'for what in (lambda: os.kill(1, signal.SIGKILL), lambda: resource.prlimit(1, resource.RLIMIT_NOFILE, (3, 3)), lambda: os.setpriority(os.PRIO_PROCESS, 1, 19)):\n' +
    '    try:\n        what()\n        out.append("done")\n    except OSError as exc:\n        out.append(exc.errno)\nout'
  const touched = await call(session, touch)
  t.match(touched, { ok: true }, 'deny: the parent refuses the user\'s signals, limits and priority')
  t.notMatch(touched.ok ? touched.result : [], ['done'], JSON.stringify(touched.ok ? touched.result : touched))
  t.match(await call(session, '1 + 1'), { ok: true, result: 2 }, 'the session goes on')
})

t.test('deny: a process thawed while idle (a SIGCONT timer) ends the session within a second, and its CPU stops', ROOT, async t => {
  const session = await backend.openSession()
  t.teardown(() => session.close('test over'))
  const uid = await hostUid(session)
  const { breached, endedAfterMs, idleTicks, ended } = await idleThaw(session)
  t.comment(`ended after ${endedAfterMs?.toFixed(0) ?? 'never'} ms of idle, ${idleTicks} ticks of CPU meanwhile`)
  t.equal(breached, false, `ended after ${endedAfterMs?.toFixed(0) ?? 'never'} ms, ${idleTicks} ticks`)
  t.match(ended, /^CRASHED: .*exited \(72\): a process of the session ran while the session was idle/)
  if (endedAfterMs === undefined) session.close('test over') // a failed deny must not hang on the jail's exit
  await (session as SessionJail).exited
  t.same(hostProcesses(uid), [], 'no spinner is left')
})

t.test('allow: an idle session whose thread and child sleep stays alive for 2 s and answers the next call', ROOT, async t => {
  const session = await open(t)
  t.match(await call(session, 'import subprocess, sys, threading, time\n' +
    'ticker = threading.Thread(target=lambda: [time.sleep(0.01) for _ in range(100_000)], daemon=True)\nticker.start()\n' +
    'sleeper = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(0.01)"])\n1'), { ok: true, result: 1 })
  let ended = false
  session.ended.then(() => { ended = true }, () => {})
  await new Promise(resolve => setTimeout(resolve, 2000))
  t.equal(ended, false, 'still open after 2 s idle')
  t.match(await call(session, '[ticker.is_alive(), sleeper.poll()]'), { ok: true, result: [true, null] })
})

t.test('deny: a non-dumpable child\'s CPU counts against its call (TIME_LIMIT_EXCEEDED); allow: one that sleeps', ROOT, async t => {
  const allowed = await open(t)
  const sleeps = await nonDumpableChild(allowed, false)
  t.equal(sleeps.code, undefined, `a sleeping non-dumpable child: ${sleeps.message}`)
  t.match(await call(allowed, '2'), { ok: true, result: 2 })
  const denied = await open(t)
  const { breached, code, message, ms } = await nonDumpableChild(denied)
  t.equal(breached, false, `${code ?? 'ok'}: ${message} after ${Math.round(ms)} ms`)
  t.ok(ms < 2400, `ended before the child's 2.5 s: ${Math.round(ms)} ms`)
  t.match(await denied.ended, { code: 'TIME_LIMIT_EXCEEDED' })
})

t.test('limits: a call over its wall time ends the session with TIME_LIMIT_EXCEEDED', ROOT, async t => {
  const session = await open(t)
  t.match(await call(session, 'import time\ntime.sleep(10)', {}, { wallTimeMs: 1000 }), { ok: false, code: 'TIME_LIMIT_EXCEEDED', message: /wall-time limit of 1000 ms/ })
  t.match(await session.ended, { code: 'TIME_LIMIT_EXCEEDED' })
  t.match(await call(session, '1'), { ok: false, code: 'CRASHED', message: /the session has ended/ }, 'no call after the end')
})

t.test('limits: a call over its CPU budget ends the session with TIME_LIMIT_EXCEEDED', ROOT, async t => {
  const session = await open(t)
  const { breached, code, message, ms } = await cpuOverBudget(session)
  t.equal(breached, false, `${code}: ${message} after ${Math.round(ms)} ms`)
  t.match(await session.ended, { code: 'TIME_LIMIT_EXCEEDED' })
})

t.test('limits: memory grown over many calls ends the session with MEMORY_LIMIT_EXCEEDED', ROOT, async t => {
  const session = await open(t)
  t.match(await call(session, 'chunks = []'), { ok: true })
  let last
  for (let i = 0; i < 12; i++) {
    last = await call(session, 'chunks.append(b"x" * (40 << 20))\nlen(chunks)')
    if (!last.ok) break
  }
  t.match(last, { ok: false, code: 'MEMORY_LIMIT_EXCEEDED' })
  t.match(await session.ended, { code: 'MEMORY_LIMIT_EXCEEDED' })
})

t.test('limits: output over its cap is truncated and the session goes on', ROOT, async t => {
  const session = await open(t)
  const outcome = await call(session, 'print("x" * 100_000)\n1', {}, { outputBytes: 1000 })
  t.match(outcome, { ok: true, result: 1, stdoutTruncated: true })
  t.equal(outcome.stdout.length, 1000)
  t.match(await call(session, 'print("y")\n2'), { ok: true, result: 2, stdout: 'y\n', stdoutTruncated: false })
})

t.test('limits: a call may ask for CPU time and output up to the ceilings, above the defaults, with warm sandboxes off', ROOT, async t => {
  // The session jail's caps are the ceilings (LIMIT_CPU_S_MAX, LIMIT_OUTPUT_BYTES_MAX), not the
  // defaults: with warm sandboxes off they were the defaults (3 s, 64 KiB here), and a call that
  // asked for more lost output unflagged and ended early (an outside review).
  const config = sessionConfig()
  t.equal(config.WARM_SANDBOXES, false)
  const session = await open(t)
  const output = 2 * config.LIMIT_OUTPUT_BYTES
  t.match(await call(session, `print("x" * ${output})\n1`, {}, { outputBytes: 4 * config.LIMIT_OUTPUT_BYTES }), { ok: true, result: 1, stdoutTruncated: false, stdout: 'x'.repeat(output) + '\n' })
  const spin = config.LIMIT_CPU_S + 0.5
  const outcome = await call(session, `import time\nstarted = time.process_time()\nwhile time.process_time() - started < ${spin}:\n    pass\n"spun"`, {}, { cpuSeconds: config.LIMIT_CPU_S + 3, wallTimeMs: 20_000 })
  t.match(outcome, { ok: true, result: 'spun' }, `${spin} s of CPU within ${config.LIMIT_CPU_S + 3} s`)
})

t.test('limits: os._exit(3) ends the session, CRASHED', ROOT, async t => {
  const session = await open(t)
  t.match(await call(session, 'import os\nos._exit(3)'), { ok: false, code: 'CRASHED', message: /status 3/ })
  t.match(await session.ended, { code: 'CRASHED' })
})

t.test('memory: the MEMORY frame reports the session\'s anonymous memory after each call', ROOT, async t => {
  const session = await open(t)
  // The MEMORY frame follows the call's STATUS, once the jail is frozen: off the reply's path.
  const settled = async (): Promise<number> => { await new Promise(resolve => setTimeout(resolve, 300)); return session.memoryKiB }
  await call(session, '1')
  const idle = await settled()
  t.ok(idle > 10_000 && idle < 200_000, `idle session: ${idle} KiB`)
  await call(session, 'big = b"x" * (50 << 20)')
  t.ok(await settled() > idle + 45_000, `after 50 MiB: ${session.memoryKiB} KiB`)
})

t.test('spares: a ready spare opens a session in well under a pandas import; without one it takes the import', ROOT, async t => {
  await spareReady(backend)
  let t0 = performance.now()
  const warm = await backend.openSession()
  const withSpare = performance.now() - t0
  warm.close('test over')
  const bare = await sessionBackend({ ...SESSIONS, spares: 0 })
  t.teardown(async () => await bare.close())
  t0 = performance.now()
  const cold = await bare.openSession()
  const withoutSpare = performance.now() - t0
  cold.close('test over')
  t0 = performance.now()
  await call(warm, '1').catch(() => undefined)
  const session = await backend.openSession()
  t.teardown(() => session.close('test over'))
  const hellos: number[] = []
  for (let i = 0; i < 20; i++) {
    t0 = performance.now()
    await session.call({ script: 'def main():\n    return 6 * 7\n', limits: testLimits() })
    hellos.push(performance.now() - t0)
  }
  hellos.sort((x, y) => x - y)
  t.comment(`open with a spare ${withSpare.toFixed(1)} ms, without ${withoutSpare.toFixed(1)} ms; hello p50 ${hellos[10]?.toFixed(1)} ms; idle ${session.memoryKiB} KiB`)
  t.ok(withSpare < 200, `with a spare: ${withSpare.toFixed(1)} ms`)
  t.ok(withoutSpare > withSpare, `without: ${withoutSpare.toFixed(1)} ms`)
  t.match(backend.sessionStats(), { open: Number })
})

t.test('deny: a spare taken by an open is replaced at most once per spareIntervalMs (its import runs outside any slot); allow: at once with 0', ROOT, async t => {
  // An outside review looped open/delete: every open's replacement spare imported numpy and
  // pandas outside any execution slot, about a core's worth. Opens in between find no spare and
  // import in their own slot.
  for (const [spareIntervalMs, replaced] of [[3000, false], [0, true]] as const) {
    const throttled = await sessionBackend({ ...SESSIONS, seats: 4, spares: 1, spareIntervalMs })
    t.teardown(async () => await throttled.close())
    await spareReady(throttled)
    const first = await throttled.openSession() // takes the spare: its replacement starts (the first)
    await spareReady(throttled)
    const second = await throttled.openSession() // takes that one: the next waits for the interval
    const taken = performance.now()
    await new Promise(resolve => setTimeout(resolve, 200))
    t.same(throttled.sessionStats().spares, replaced ? 1 : 0, `interval ${spareIntervalMs} ms: ${replaced ? 'replaced at once' : 'no replacement started within it'}`)
    if (!replaced) {
      await spareReady(throttled)
      t.same(throttled.sessionStats().ready, 1, 'allow: once the interval is over the replacement starts')
      t.ok(performance.now() - taken > 1000, `and not before (${Math.round(performance.now() - taken)} ms after the open)`)
    }
    for (const session of [first, second]) session.close('done')
  }
})

t.test('seats: a spare still starting is waited for; no free seat is an error; a seat is free again once its jail has exited', ROOT, async t => {
  const small = await sessionBackend({ ...SESSIONS, seats: 2, spares: 1 })
  t.teardown(async () => await small.close())
  await new Promise(resolve => setImmediate(resolve)) // the first spare is starting
  const a = await small.openSession() // takes the spare while it starts
  const b = await small.openSession() // the replacement spare, the second seat
  await t.rejects(small.openSession(), /no free session seat/)
  t.same(small.sessionStats(), { open: 2, spares: 0, ready: 0 })
  a.close('done')
  await a.ended
  const c = await small.openSession()
  t.match(await call(c, '1 + 1'), { ok: true, result: 2 })
  for (const s of [b, c]) s.close('done')
})

t.test('sessions are off without options or before a probe; a spare that cannot start is logged', ROOT, async t => {
  const config = sessionConfig()
  const off = new NsjailBackend({ ...nsjailOptions(config, limitsFrom(config)), sessions: undefined })
  await t.rejects(off.openSession(), /sessions are not available/)
  t.throws(() => off.sessionLaunch(0), { message: /sessions are off/ })
  t.throws(() => new NsjailBackend({ ...nsjailOptions(config, limitsFrom(config)), sessions: { ...SESSIONS, seats: MAX_SESSION_SEATS + 1, spares: 0 } }), { message: /at most 1024 session seats/ })
  const logs: string[] = []
  class Broken extends NsjailBackend {
    override sessionLaunch (): Launch {
      return { file: '/bin/false', args: [], env: {} }
    }
  }
  const broken = new Broken({ ...nsjailOptions(config, limitsFrom(config)), sessions: { ...SESSIONS, seats: 2, spares: 1 }, log: m => logs.push(m) })
  t.teardown(async () => await broken.close())
  t.equal((await broken.probe()).ok, true)
  await t.rejects(broken.openSession(), /the session's sandbox did not start: exited \(1\)/)
  for (let i = 0; i < 50 && logs.length === 0; i++) await new Promise(resolve => setTimeout(resolve, 100))
  t.match(logs.join('\n'), /a spare session sandbox did not start/)
})
