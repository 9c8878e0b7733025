// The HTTP suite every isolating backend must pass, over real HTTP against a listening server
// with the real sandbox: the contract (the README's API section and the served OpenAPI document),
// every script error the README's table lists, every limit, every guarantee as a deny/allow
// pair, each followed by a hello world that must still answer.
import t, { type Test as TapTest } from 'tap'
import { GUARANTEES } from './guarantees.js'
import { filesSuite } from './files-suite.js'
import { limitsSuite } from './limits-suite.js'
import { seriesValue } from './prometheus.js'
import { readdirSync, readFileSync } from 'node:fs'
import { HELLO, TEST_LIMITS, externalUrl, get, post, postBody, script, startServer, type Target } from './server.js'

type Test = TapTest

const limit = (name: string): number => Number(TEST_LIMITS[name])

/** After an attack: the service still answers a hello world, promptly. */
async function stillServes (t: Test, target: Target): Promise<void> {
  const started = performance.now()
  const reply = await post(target, HELLO)
  const ms = Math.round(performance.now() - started)
  t.equal(reply.status, 200, 'a hello world still answers')
  t.ok(ms < 3000, `and promptly (${ms} ms)`)
}

/** Runs the warm pool served from a warm sandbox (ready or waited for). */
async function warmRuns (target: Target): Promise<number> {
  const text = await (await fetch(`${target.url}/metrics`)).text()
  return ['ready', 'waited'].reduce((sum, served) => sum + (seriesValue(text, `pysandbox_warm_runs_total{served="${served}"}`) ?? 0), 0)
}

/** Host processes whose command line contains `marker`. */
function hostProcessesWith (marker: string): string[] {
  return readdirSync('/proc').filter(pid => {
    try {
      return /^\d+$/.test(pid) && readFileSync(`/proc/${pid}/cmdline`).includes(marker)
    } catch {
      return false // the process ended while we looked
    }
  })
}

interface ErrorCase {
  name: string
  source: string
  code: string
  /** The request's `limits`, when not the server's defaults. */
  limits?: Record<string, number>
  check?: (t: Test, body: Record<string, any>, target: Target) => void
}

const ERROR_CASES: ErrorCase[] = [
  {
    name: 'a script that does not compile',
    source: 'def main(:\n    return 1\n',
    code: 'SYNTAX_ERROR',
    check: (t, body) => { t.equal(body.line, 1); t.ok(body.column > 0); t.match(body.message, /^line 1, column \d+/) }
  },
  { name: 'a script without main', source: 'x = 1\n', code: 'MISSING_MAIN' },
  { name: 'a main that is not callable', source: 'main = 3\n', code: 'MAIN_NOT_CALLABLE', check: (t, body) => t.match(body.message, /int/) },
  {
    name: 'main raising',
    source: 'def helper():\n    raise ValueError("boom")\n\ndef main():\n    print("before")\n    helper()\n',
    code: 'MAIN_RAISED',
    check: (t, body, target) => {
      t.equal(body.exception, 'ValueError')
      t.equal(body.message, 'ValueError: boom')
      t.equal(body.stdout, 'before\n', 'stdout printed before the error is kept')
      t.match(body.traceback, /File "<script>", line 6, in main/)
      t.match(body.traceback, /File "<script>", line 2, in helper/)
      t.notMatch(body.traceback, /run\.py|\/sandbox\/harness/, 'no harness frames')
      t.notOk(String(body.traceback).includes(target.serverRoot), 'no host paths')
    }
  },
  { name: 'top-level code raising', source: 'import nosuchmodule\ndef main():\n    return 1\n', code: 'MAIN_RAISED', check: (t, body) => t.equal(body.exception, 'ModuleNotFoundError') },
  { name: 'main calling sys.exit', source: 'import sys\ndef main():\n    sys.exit(3)\n', code: 'MAIN_RAISED', check: (t, body) => t.equal(body.exception, 'SystemExit') },
  { name: 'main needing an argument', source: 'def main(x):\n    return x\n', code: 'MAIN_RAISED', check: (t, body) => t.equal(body.exception, 'TypeError') },
  {
    name: 'a numpy value in the result',
    source: 'import numpy\ndef main():\n    return {"rows": [1, 2, 3, numpy.int64(4)]}\n',
    code: 'RESULT_NOT_JSON',
    check: (t, body) => t.match(body.message, 'result[\'rows\'][3] is a numpy.int64')
  },
  { name: 'NaN in the result', source: 'def main():\n    return [float("nan")]\n', code: 'RESULT_NOT_JSON', check: (t, body) => t.match(body.message, 'result[0] is nan, which is not JSON (NaN and Infinity are not numbers in JSON); return None for a missing value') },
  { name: 'a set in the result', source: 'def main():\n    return {1, 2}\n', code: 'RESULT_NOT_JSON', check: (t, body) => t.match(body.message, 'result is a set') },
  { name: 'an integer JSON readers cannot hold', source: 'def main():\n    return 10**5000\n', code: 'RESULT_NOT_JSON' },
  { name: 'a result that contains itself', source: 'def main():\n    x = []\n    x.append(x)\n    return x\n', code: 'RESULT_NOT_JSON', check: (t, body) => t.match(body.message, 'contains itself') },
  { name: 'a result over the size limit', source: `def main():\n    return "x" * ${limit('LIMIT_RESULT_BYTES') + 1}\n`, code: 'RESULT_TOO_LARGE' },
  { name: 'an infinite loop (CPU limit)', source: 'def main():\n    while True:\n        pass\n', code: 'TIME_LIMIT_EXCEEDED' },
  { name: 'a long sleep (wall limit)', source: 'import time\ndef main():\n    time.sleep(100)\n', code: 'TIME_LIMIT_EXCEEDED', check: (t, body) => t.match(body.message, /wall-time limit/) },
  {
    name: 'a script that ignores SIGTERM',
    source: 'import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ndef main():\n    time.sleep(100)\n',
    code: 'TIME_LIMIT_EXCEEDED'
  },
  { name: 'a memory bomb', source: 'def main():\n    block = bytearray(b"x") * (2 * 1024**3)\n    return len(block)\n', code: 'MEMORY_LIMIT_EXCEEDED' },
  {
    name: 'a segfault through ctypes',
    source: 'import ctypes\ndef main():\n    ctypes.string_at(0)\n',
    code: 'CRASHED',
    check: (t, body) => t.equal(body.signal, 'SIGSEGV')
  },
  { name: 'os._exit before returning', source: 'import os\ndef main():\n    os._exit(3)\n', code: 'CRASHED', check: (t, body) => t.equal(body.exitCode, 3) },
  { name: 'KeyboardInterrupt', source: 'def main():\n    raise KeyboardInterrupt\n', code: 'MAIN_RAISED', check: (t, body) => t.equal(body.exception, 'KeyboardInterrupt') },
  { name: 'a BaseException subclass', source: 'class Escape(BaseException):\n    pass\ndef main():\n    raise Escape("out")\n', code: 'MAIN_RAISED', check: (t, body) => t.equal(body.exception, 'sandboxed_script.Escape') },
  { name: 'input() with no stdin', source: 'def main():\n    return input()\n', code: 'MAIN_RAISED', check: (t, body) => t.equal(body.exception, 'EOFError') },
  { name: 'a lone surrogate in the result', source: 'def main():\n    return "\\ud800"\n', code: 'RESULT_NOT_JSON', check: (t, body) => t.match(body.message, /surrogate/) },
  { name: '100,000 nested lists in the result', source: 'def main():\n    x = []\n    for _ in range(100000):\n        x = [x]\n    return x\n', code: 'RESULT_NOT_JSON', check: (t, body) => t.match(body.message, /nested deeper/) },
  { name: 'CPU-spinning threads', source: 'import threading\ndef spin():\n    while True:\n        pass\ndef main():\n    for _ in range(4):\n        threading.Thread(target=spin, daemon=True).start()\n    spin()\n', code: 'TIME_LIMIT_EXCEEDED' },
  // The memory cases get a long wall time: near its limit a loaded host can take seconds to
  // reclaim before the limit bites (CI once saw TIME_LIMIT_EXCEEDED at 4 s for the small objects,
  // which take 0.4 s outside a jail; under unshare's memory cgroup, reclaim near the limit once
  // took over 3 s of CPU here), and what is tested is which limit ends them.
  { name: 'a list doubling until memory runs out', source: 'def main():\n    x = [0] * 1024\n    while True:\n        x = x + x\n', code: 'MEMORY_LIMIT_EXCEEDED', limits: { wallMs: 20_000, cpuSeconds: 15 } },
  { name: 'many small objects', source: 'def main():\n    keep = []\n    while True:\n        keep.append({"k": len(keep)})\n', code: 'MEMORY_LIMIT_EXCEEDED', limits: { wallMs: 20_000, cpuSeconds: 15 } }
]

export function sandboxSuite (backend: string, env: Record<string, string> = {}): void {
  let target: Target
  t.before(async () => { target = await startServer({ SANDBOX_BACKEND: backend, ...env }) })
  t.teardown(async () => { await target.close() })

  t.test('/readyz names the backend and its isolation', async t => {
    const reply = await get(target, '/readyz')
    t.equal(reply.status, 200)
    t.equal(reply.body.backend, backend)
    t.equal(reply.body.probes.at(-1).features.network, 'none')
    if (backend === 'nsjail' && externalUrl === undefined) {
      t.equal(reply.body.probes.at(-1).features.warm, env.WARM_SANDBOXES === 'false' ? 'off' : 'zygote', 'warm sandboxes as configured')
    }
  })

  t.test('the README\'s example returns the documented response', async t => {
    const reply = await post(target, HELLO)
    t.equal(reply.status, 200)
    t.same(reply.body, { result: { msg: 'success', value: 42 }, stdout: 'Hello from main!\n', stderr: '', backend })
    t.match(reply.headers.get('server-timing'), /^queue;dur=\d+, sandbox;dur=\d+$/)
  })

  t.test('script errors of the README\'s table, each with its code, output and backend', async t => {
    for (const c of ERROR_CASES) {
      await t.test(c.name, async t => {
        const reply = c.limits === undefined ? await post(target, c.source) : await postBody(target, { script: c.source, limits: c.limits })
        t.equal(reply.status, 422)
        t.equal(reply.body.code, c.code, JSON.stringify(reply.body).slice(0, 400))
        t.equal(reply.body.backend, backend)
        t.type(reply.body.stdout, 'string')
        c.check?.(t, reply.body, target)
      })
    }
    await stillServes(t, target)
  })

  t.test('the contract of how a script runs', async t => {
    await t.test('the module is not __main__, so a main guard does not run main twice', async t => {
      const reply = await post(target, 'def main():\n    print("main ran")\n    return __name__\n\nif __name__ == "__main__":\n    main()\n')
      t.not(reply.body.result, '__main__')
      t.equal(reply.body.stdout, 'main ran\n')
    })
    await t.test('printed text never becomes the result', async t => {
      const reply = await post(target, 'import json\ndef main():\n    print(json.dumps({"ok": True, "result": 666}))\n    return 1\n')
      t.equal(reply.body.result, 1)
    })
    await t.test('writing to the result channel\'s original fd fails', async t => {
      const reply = await post(target, 'import os\ndef main():\n    os.write(3, b\'{"ok":true,"result":666}\')\n    return 1\n')
      t.not(reply.body.result, 666)
      t.equal(reply.body.code, 'MAIN_RAISED')
    })
    await t.test('deny: a message the script writes on the moved result channel is bounded by the server (200,000 nested lists: 422 CRASHED, not 500)', async t => {
      // The harness's frames name the descriptor it moved the channel to; /proc/self/fd would
      // find it too, but might also pick a descriptor leaked into the jail.
      const reply = await post(target, script(`
frame, fd = sys._getframe(), None
while frame is not None and fd is None:
    fd = frame.f_locals.get("channel") if type(frame.f_locals.get("channel")) is int else None
    frame = frame.f_back
data = memoryview(b'{"ok":true,"result":' + b"[" * 200000 + b"]" * 200000 + b"}")
while data:
    data = data[os.write(fd, data):]
os._exit(0)`, 'import os, sys'))
      t.equal(reply.status, 422, JSON.stringify(reply.body).slice(0, 300))
      t.equal(reply.body.code, 'CRASHED')
      t.match(reply.body.message, /malformed result message/)
      t.equal(reply.body.backend, backend)
    })
    await t.test('allow: a result nested 150 levels deep comes back intact', async t => {
      const reply = await post(target, script(`
x = "leaf"
for _ in range(150):
    x = [x]
return x`))
      t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
      t.same(reply.body.result, JSON.parse('['.repeat(150) + '"leaf"' + ']'.repeat(150)))
    })
    await t.test('stderr is returned apart from stdout', async t => {
      const reply = await post(target, 'import sys\ndef main():\n    print("out")\n    print("err", file=sys.stderr)\n    return None\n')
      t.same([reply.body.stdout, reply.body.stderr, reply.body.result], ['out\n', 'err\n', null])
    })
    await t.test('unicode survives both ways', async t => {
      const reply = await post(target, 'def main():\n    print("héllo ✓")\n    return {"ключ": "值"}\n')
      t.same([reply.body.stdout, reply.body.result], ['héllo ✓\n', { ключ: '值' }])
    })
    await t.test('a fork that prints twice: both lines kept, the parent\'s result returned', async t => {
      const reply = await post(target, 'import os\ndef main():\n    pid = os.fork()\n    print("child" if pid == 0 else "parent")\n    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\n    return "parent result"\n')
      t.equal(reply.body.result, 'parent result')
      t.match(reply.body.stdout, /child/)
      t.match(reply.body.stdout, /parent/)
    })
    await t.test('a forked process that comes back from main() (returning or raising) reports nothing: the original\'s result stands', async t => {
      for (const ending of ['return "the child\'s"', 'raise ValueError("the child\'s")']) {
        const reply = await post(target, `import os\ndef main():\n    pid = os.fork()\n    if pid == 0:\n        ${ending}\n    os.waitpid(pid, 0)\n    return "the parent's"\n`)
        t.equal(reply.body.result, 'the parent\'s', ending)
      }
    })
    await t.test('RESULT_NOT_JSON says how to make the common data-science values JSON', async t => {
      const values: Array<[string, string]> = [
        ['np.int64(3)', 'is a numpy.int64, which is not JSON; convert it with x.item() (or int(x), float(x), bool(x))'],
        ['np.arange(3)', 'is a numpy.ndarray, which is not JSON; return x.tolist()'],
        ['pd.DataFrame({"a": [1]})', 'is a pandas.core.frame.DataFrame, which is not JSON; return df.to_dict("records") (or df.to_dict("list"))'],
        ['pd.Series([1])', 'is a pandas.core.series.Series, which is not JSON; return s.tolist() or s.to_dict()'],
        ['pd.Timestamp("2026-01-01")', 'is a pandas._libs.tslibs.timestamps.Timestamp, which is not JSON; return x.isoformat()'],
        ['{1}', 'is a set, which is not JSON; return sorted(x) or list(x)'],
        ['b"x"', 'is a bytes, which is not JSON; return x.decode() for text, or write the bytes to a file under output/'],
        ['datetime.date(2026, 1, 1)', 'is a datetime.date, which is not JSON; return x.isoformat()'],
        ['decimal.Decimal("1.5")', 'is a decimal.Decimal, which is not JSON; return str(x) or float(x)'],
        ['object()', 'is a object, which is not JSON']
      ]
      for (const [value, message] of values) {
        const reply = await post(target, `import datetime, decimal\nimport numpy as np, pandas as pd\ndef main():\n    return {"v": ${value}}\n`)
        t.match(reply.body, { code: 'RESULT_NOT_JSON', message: `main() returned something that is not JSON: result['v'] ${message}` }, value)
      }
    })
    await t.test('monkeypatched print, json, atexit and sys.excepthook change nothing of the result', async t => {
      const reply = await post(target, script(`
builtins.print = lambda *a, **k: None
json.dumps = lambda *a, **k: '{"ok": true, "result": 666}'
atexit.register(lambda: os.write(1, b"atexit ran"))
sys.excepthook = lambda *a: None
return {"real": 1}`, 'import atexit, builtins, json, os, sys'))
      t.same(reply.body.result, { real: 1 })
      t.notMatch(reply.body.stdout, /atexit ran/, 'no atexit hook runs after the result is final')
    })
    await t.test('closing stdout and writing non-UTF-8 bytes do not break the reply', async t => {
      const reply = await post(target, 'import os\ndef main():\n    os.write(1, b"bad \\xff\\xfe bytes\\n")\n    os.close(1)\n    return "fine"\n')
      t.equal(reply.status, 200)
      t.equal(reply.body.result, 'fine')
      t.match(reply.body.stdout, /^bad \uFFFD\uFFFD bytes/)
    })
    await t.test('async def main is awaited', async t => {
      const reply = await post(target, 'import asyncio\nasync def main():\n    await asyncio.sleep(0)\n    return "awaited"\n')
      t.equal(reply.body.result, 'awaited')
    })
    await t.test('numpy and pandas import and compute inside the sandbox', async t => {
      const reply = await post(target, script(`
frame = pandas.DataFrame({"g": [i % 3 for i in range(1000)], "v": numpy.arange(1000)})
sums = frame.groupby("g")["v"].sum()
return {"sums": {str(k): int(v) for k, v in sums.items()}, "dot": float(numpy.ones((20, 20)).dot(numpy.ones(20)).sum())}`, 'import numpy, pandas'))
      t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
      t.same(reply.body.result, { sums: { 0: 166833, 1: 166167, 2: 166500 }, dot: 400 })
    })
    await t.test('threads, subprocesses of the interpreter and os work', async t => {
      const reply = await post(target, script(`
box = []
thread = threading.Thread(target=lambda: box.append(1))
thread.start()
thread.join()
child = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
return [box, child.stdout.strip(), os.getcwd(), os.listdir("/tmp") == [] or True]`, 'import os, subprocess, sys, threading'))
      t.same(reply.body.result, [[1], '42', '/tmp', true])
    })
  })

  t.test('data in: input for main(), stdin for the script', async t => {
    await t.test('input present (any JSON, null included) is main()\'s one argument; absent, main() takes none', async t => {
      const echo = 'def main(data):\n    return {"got": data, "type": type(data).__name__}\n'
      for (const input of [{ values: [1, 2.5, 'x', true, null] }, [1, [2, [3]]], 'text', 0, false, null]) {
        const reply = await postBody(target, { script: echo, input })
        t.equal(reply.status, 200, JSON.stringify(input))
        t.same(reply.body.result.got, input, `${JSON.stringify(input)} arrives as it was sent`)
      }
      t.equal((await postBody(target, { script: echo, input: null })).body.result.type, 'NoneType', 'null is None, and still an argument')
      t.same((await post(target, 'def main(data=7):\n    return data\n')).body.result, 7, 'absent: main() is called with none')
      t.same((await postBody(target, { script: 'async def main(data):\n    return data * 2\n', input: 21 })).body.result, 42, 'async def main(data) too')
    })
    await t.test('deny: input sent to a main that cannot take it: 422 MAIN_SIGNATURE with the signature', async t => {
      const sent = await postBody(target, { script: 'def main():\n    return 1\n', input: { a: 1 } })
      t.equal(sent.status, 422)
      t.match(sent.body, { code: 'MAIN_SIGNATURE', signature: 'main()', message: /^main\(\) cannot be called with the input as its one argument: / })
      const two = await postBody(target, { script: 'def main(data, *, flag):\n    return 1\n', input: 1 })
      t.match(two.body, { code: 'MAIN_SIGNATURE', signature: 'main(data, *, flag)' })
      const unchanged = await post(target, 'def main(data):\n    return 1\n')
      t.match(unchanged.body, { code: 'MAIN_RAISED', exception: 'TypeError' }, 'without input, as before the field existed')
    })
    await t.test('allow: a TypeError raised inside main(data) is the script\'s own: MAIN_RAISED with its traceback', async t => {
      const reply = await postBody(target, { script: 'def main(data):\n    return len(data)\n', input: 5 })
      t.match(reply.body, { code: 'MAIN_RAISED', exception: 'TypeError', traceback: /line 2, in main/ })
    })
    await t.test('stdin is what input() and sys.stdin read, unicode and 512 KiB included', async t => {
      const lines = await postBody(target, { script: 'import sys\ndef main():\n    first = input()\n    return [first, sys.stdin.read()]\n', stdin: 'Ada\nLovelace ✓\n' })
      t.same(lines.body.result, ['Ada', 'Lovelace ✓\n'])
      const big = 'x'.repeat(512 * 1024)
      const sized = await postBody(target, { script: 'import sys\ndef main():\n    return len(sys.stdin.buffer.read())\n', stdin: big })
      t.equal(sized.body.result, big.length)
    })
    await t.test('without stdin, input() raises EOFError saying stdin is empty', async t => {
      const reply = await post(target, 'def main():\n    return input()\n')
      t.match(reply.body, { code: 'MAIN_RAISED', exception: 'EOFError', message: /stdin is empty: send it in the request's "stdin" field/ })
    })
    await t.test('deny: one run\'s stdin and input never reach the next run', async t => {
      await postBody(target, { script: 'def main(data):\n    return input()\n', input: 'secret-input', stdin: 'secret-stdin\n' })
      const next = await post(target, 'import sys, os\ndef main():\n    return [sys.stdin.read(), os.fstat(0).st_size]\n')
      t.same(next.body.result, ['', 0], 'the next run\'s stdin is empty')
    })
    await t.test('a request header inside the script, input or stdin is only text', async t => {
      const magic = 'PYSANDBOX-REQUEST 1 1 1\n'
      const reply = await postBody(target, { script: `# ${magic}def main(data):\n    return [data, input()]\n`, input: magic, stdin: magic })
      t.same(reply.body.result, [magic, magic.trim()])
    })
    await stillServes(t, target)
  })

  t.test('files in, files and figures out', async t => {
    await filesSuite(t, target)
    await stillServes(t, target)
  })

  t.test('per-request limits: each raised and lowered, within the ceilings', async t => {
    const warm = backend === 'nsjail' && env.WARM_SANDBOXES !== 'false' && externalUrl === undefined
    await limitsSuite(t, target, warm ? { warmRuns: async () => await warmRuns(target) } : {})
    await stillServes(t, target)
  })

  t.test('limits end runaway scripts and keep the service answering', async t => {
    await t.test('output beyond the cap is dropped and flagged, without failing the run', async t => {
      const reply = await post(target, `import sys\ndef main():\n    sys.stdout.write("x" * ${limit('LIMIT_OUTPUT_BYTES') * 3})\n    sys.stderr.write("y" * ${limit('LIMIT_OUTPUT_BYTES') * 2})\n    return "done"\n`)
      t.equal(reply.status, 200)
      t.equal(reply.body.result, 'done')
      t.equal(reply.body.stdout.length, limit('LIMIT_OUTPUT_BYTES'))
      t.equal(reply.body.stdoutTruncated, true)
      t.equal(reply.body.stderrTruncated, true)
    })
    await t.test('an endless flood without newlines ends at the time limit, output capped', async t => {
      const reply = await post(target, 'import sys\ndef main():\n    while True:\n        sys.stdout.write("x" * 65536)\n')
      t.equal(reply.body.code, 'TIME_LIMIT_EXCEEDED')
      t.ok(reply.body.stdout.length <= limit('LIMIT_OUTPUT_BYTES'))
    })
    await t.test('a fork bomb hits the process limit', async t => {
      const reply = await post(target, 'import os\ndef main():\n    while True:\n        os.fork()\n')
      t.equal(reply.status, 422)
      t.match(reply.body.code, /MAIN_RAISED|TIME_LIMIT_EXCEEDED|CRASHED/)
    })
    await t.test('threads stop at the process limit', async t => {
      const reply = await post(target, script(`
started = 0
try:
    for _ in range(10000):
        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
        started += 1
except RuntimeError:
    pass
return started`, 'import threading, time'))
      t.equal(reply.status, 200)
      t.ok(reply.body.result < limit('LIMIT_PROCESSES'), `${String(reply.body.result)} threads started`)
    })
    await t.test('filling the disk stops at the /tmp size', async t => {
      const reply = await post(target, script(`
written = 0
try:
    with open("/tmp/fill", "wb") as f:
        while True:
            f.write(b"x" * 1048576)
            f.flush()
            written += 1048576
except OSError as e:
    return [e.errno, written]
return [0, written]`))
      t.equal(reply.status, 200)
      const [errno, written] = reply.body.result as [number, number]
      t.ok([27, 28].includes(errno), `EFBIG or ENOSPC, got ${errno}`)
      t.ok(written <= limit('LIMIT_TMP_MB') * 1024 * 1024)
    })
    await t.test('/dev/shm fills up at its size, like /tmp', async t => {
      const reply = await post(target, script(`
try:
    with open("/dev/shm/fill", "wb") as f:
        while True:
            f.write(b"x" * 1048576)
            f.flush()
except OSError as e:
    return [e.errno, os.path.getsize("/dev/shm/fill") <= ${limit('LIMIT_TMP_MB')} * 1048576]`, 'import os'))
      t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
      t.ok([27, 28].includes(reply.body.result[0]), `EFBIG or ENOSPC, got ${String(reply.body.result[0])}`)
      t.equal(reply.body.result[1], true)
    })
    await t.test('a sparse file cannot pass the file-size limit', async t => {
      const reply = await post(target, script(`
with open("/tmp/sparse", "wb") as f:
    try:
        f.truncate(1 << 40)
        return "grew"
    except OSError as e:
        return e.errno`))
      t.equal(reply.body.result, 27, 'EFBIG')
    })
    await t.test('creating files without end stops at LIMIT_TMP_FILES with ENOSPC; the next run is prompt', async t => {
      const reply = await post(target, script(`
made = 0
try:
    while True:
        open(f"/tmp/i{made}", "w").close()
        made += 1
except OSError as e:
    return [e.errno, made]`))
      t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 200))
      const [errno, made] = reply.body.result as [number, number]
      t.equal(errno, 28, 'ENOSPC')
      t.ok(made < limit('LIMIT_TMP_FILES') && made > limit('LIMIT_TMP_FILES') / 2, `${made} files made`)
      await stillServes(t, target)
    })
    await t.test('allow: a thousand files in nested directories', async t => {
      const reply = await post(target, script(`
for d in range(10):
    os.makedirs(f"/tmp/d{d}/e", exist_ok=True)
    for i in range(100):
        open(f"/tmp/d{d}/e/f{i}", "w").write("x")
return sum(len(files) for _, _, files in os.walk("/tmp"))`, 'import os'))
      t.equal(reply.body.result, 1000)
    })
    await t.test('open files stop at the limit', async t => {
      const reply = await post(target, script(`
files = []
try:
    while True:
        files.append(open("/dev/null"))
except OSError as e:
    return [e.errno, len(files)]`))
      t.equal(reply.body.result[0], 24, 'EMFILE')
      t.ok(reply.body.result[1] < 256)
    })
    await stillServes(t, target)
  })

  t.test('isolation guarantees: each attack fails, its legitimate twin works', async t => {
    const features = (await get(target, '/readyz')).body.probes.at(-1).features
    for (const guarantee of GUARANTEES) {
      await t.test(guarantee.name, async t => {
        if (guarantee.needsRunMemoryBound === true && /^per process/.test(String(features.memoryBound))) {
          // No memory cgroup here (the image's rlimit rung): the exposure must be declared.
          t.match(features.memoryBound, /^per process: a run's total memory is not bounded/, '/readyz declares that a run\'s total memory is not bounded')
          t.equal(await guarantee.allow(target), true, 'allow: the legitimate twin works')
          return
        }
        const denied = await guarantee.deny(target)
        t.equal(denied.breached, false, `deny: ${denied.evidence}`)
        t.equal(await guarantee.allow(target), true, 'allow: the legitimate twin works')
        await stillServes(t, target)
      })
    }
  })

  t.test('attacks too destructive to run outside a sandbox', async t => {
    await t.test('kill(-1) only reaches the script\'s own sandbox', async t => {
      const bystander = post(target, 'import time\ndef main():\n    time.sleep(1.5)\n    return "unharmed"\n')
      await new Promise(resolve => setTimeout(resolve, 300))
      const killer = await post(target, script(`
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
os.kill(-1, signal.SIGKILL)
return ["still here", child.wait()]`, 'import os, signal, subprocess, sys'))
      t.same(killer.body.result, ['still here', -9], 'it kills its own child and survives')
      t.equal((await bystander).body.result, 'unharmed')
    })
    await t.test('a background process does not survive its run', async t => {
      const marker = `pysandbox-daemon-${Date.now()}`
      await post(target, script(`
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)", "${marker}"])
    os._exit(0)
return "spawned"`, 'import os, signal, sys'))
      const reply = await post(target, script(`
return [p for p in os.listdir("/proc") if p.isdigit() and b"${marker}" in open(f"/proc/{p}/cmdline", "rb").read()]`, 'import os'))
      t.same(reply.body.result, [], 'not in a later sandbox')
      if (externalUrl === undefined) t.same(hostProcessesWith(marker), [], 'not on the host')
    })
    await stillServes(t, target)
  })
}
