// The `pysandbox` command as users run it (`node dist/cli.js`, built by `npm run build`) against
// a real server with the nsjail backend (or the server at PYSANDBOX_URL): output on the right
// streams, the result as JSON, input, stdin and files sent, returned files saved with --out, and
// the documented exit statuses; the API key (from PYSANDBOX_KEY or --key-file) against a server
// that needs one, the run's own limits (--timeout, --memory), --version, --json, and
// --request-timeout (the client gives up; the server stops the run).
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { PROJECT_ROOT } from '../../src/config.js'
import { HELLO, externalUrl, startServer } from '../helpers/server.js'

const CLI = resolve(PROJECT_ROOT, 'dist/cli.js')

interface Run { code: number | null, stdout: string, stderr: string }

async function pysandbox (args: string[], options: { stdin?: string, env?: Record<string, string> } = {}): Promise<Run> {
  const env = { ...process.env, ...options.env }
  if (options.env?.PYSANDBOX_URL === undefined) delete env.PYSANDBOX_URL
  if (options.env?.PYSANDBOX_KEY === undefined) delete env.PYSANDBOX_KEY
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  child.stdin.end(options.stdin ?? '')
  const [code] = await once(child, 'close') as [number | null]
  return { code, stdout, stderr }
}

/** A loopback port nothing listens on. */
async function closedPort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

// The uids of this file's servers: SANDBOX_UID_BASE when given, so a run of this file beside
// another suite's servers shares no uid (and no RLIMIT_NPROC) with them.
const UID_BASE: Record<string, string> = process.env.SANDBOX_UID_BASE === undefined ? {} : { SANDBOX_UID_BASE: process.env.SANDBOX_UID_BASE }

const target = await startServer({ SANDBOX_BACKEND: 'nsjail', ...UID_BASE })
t.teardown(target.close)
const dir = mkdtempSync(join(tmpdir(), 'pysandbox-cli-'))
function file (name: string, text: string | Buffer): string {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

t.test('success: the script\'s stdout, then its result as JSON on stdout; exit 0', async t => {
  const run = await pysandbox(['run', file('hello.py', HELLO), '--url', target.url])
  t.equal(run.code, 0, run.stderr)
  t.equal(run.stdout, 'Hello from main!\n{"msg":"success","value":42}\n')
  t.equal(run.stderr, '')
})

t.test('a failing script: its output, then CODE: message and the traceback on stderr; exit 1', async t => {
  const script = 'import sys\ndef main():\n    print("before")\n    print("warned", file=sys.stderr)\n    return {"a": 1}["b"]\n'
  const run = await pysandbox(['run', file('fails.py', script), '-u', target.url])
  t.equal(run.code, 1)
  t.equal(run.stdout, 'before\n', 'the script\'s stdout, no result')
  t.match(run.stderr, /^warned\nMAIN_RAISED: KeyError: 'b'\nTraceback \(most recent call last\):\n {2}File "<script>", line 5, in main\n/)
  t.notMatch(run.stderr, /harness|run\.py/, 'only the user\'s frames')
})

t.test('the script from standard input ("-", or no file); the URL from PYSANDBOX_URL', async t => {
  const script = 'import sys\ndef main():\n    print("to stderr", file=sys.stderr)\n    return [1, 2.5, None]\n'
  for (const args of [['run', '-'], ['run']]) {
    const run = await pysandbox(args, { stdin: script, env: { PYSANDBOX_URL: target.url } })
    t.equal(run.code, 0, `${args.join(' ')}: ${run.stderr}`)
    t.equal(run.stdout, '[1,2.5,null]\n')
    t.equal(run.stderr, 'to stderr\n')
  }
  const syntax = await pysandbox(['run', '--url', target.url], { stdin: 'def main(:\n' })
  t.equal(syntax.code, 1)
  t.equal(syntax.stderr, 'SYNTAX_ERROR: line 1, column 10: invalid syntax\n')
})

t.test('no server at the URL: a clear message and exit 2', async t => {
  const url = `http://127.0.0.1:${await closedPort()}`
  const run = await pysandbox(['run', file('hello2.py', HELLO), '--url', url])
  t.equal(run.code, 2)
  t.equal(run.stdout, '')
  t.equal(run.stderr, `pysandbox: cannot reach ${url}: connect ECONNREFUSED ${url.slice('http://'.length)}\n`)
})

t.test('usage errors exit 2 with the usage, nothing sent', async t => {
  const run = await pysandbox(['exec', 'x.py'])
  t.equal(run.code, 2)
  t.match(run.stderr, /^pysandbox: unknown command "exec"\nusage: pysandbox run/)
  const hello = file('hello-usage.py', HELLO)
  const table: Array<[string[], RegExp]> = [
    [['--request-timeout', '0'], /^pysandbox: --request-timeout 0: give seconds, a number above 0 such as 2 or 0\.5 \(at least 0\.001, at most 300\)\nusage: /],
    [['--request-timeout', '301'], /^pysandbox: --request-timeout 301: give seconds/],
    [['--request-timeout', 'soon'], /^pysandbox: --request-timeout soon: give seconds/],
    [['--request-timeout'], /^pysandbox: Option '--request-timeout <value>' argument missing/],
    [['--json=1'], /^pysandbox: Option '--json' does not take an argument/]
  ]
  for (const [args, message] of table) {
    const bad = await pysandbox(['run', hello, '--url', target.url, ...args])
    t.same({ code: bad.code, stdout: bad.stdout }, { code: 2, stdout: '' }, args.join(' '))
    t.match(bad.stderr, message, args.join(' '))
  }
})

t.test('--version and -V print "pysandbox" and package.json\'s version; exit 0', async t => {
  const { version } = JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string }
  for (const flag of ['--version', '-V']) t.same(await pysandbox([flag]), { code: 0, stdout: `pysandbox ${version}\n`, stderr: '' }, flag)
})

t.test('--json: the whole reply on one line of stdout, for a success (exit 0) and for MAIN_RAISED (exit 1)', async t => {
  const ok = await pysandbox(['run', file('hello-json.py', HELLO), '--url', target.url, '--json'])
  t.equal(ok.code, 0, ok.stderr)
  t.equal(ok.stderr, '', 'nothing on stderr')
  t.match(ok.stdout, /^[^\n]+\n$/, 'one line')
  t.match(JSON.parse(ok.stdout), { result: { msg: 'success', value: 42 }, stdout: 'Hello from main!\n', stderr: '', backend: 'nsjail' })

  const script = 'import sys\ndef main():\n    print("before")\n    print("warned", file=sys.stderr)\n    return {"a": 1}["b"]\n'
  const raised = await pysandbox(['run', file('fails-json.py', script), '--url', target.url, '--json'])
  t.equal(raised.code, 1)
  t.equal(raised.stderr, '', 'nothing on stderr')
  t.match(raised.stdout, /^[^\n]+\n$/, 'one line')
  t.match(JSON.parse(raised.stdout), {
    statusCode: 422,
    code: 'MAIN_RAISED',
    message: 'KeyError: \'b\'',
    traceback: /^Traceback \(most recent call last\):\n {2}File "<script>", line 5, in main\n/,
    stdout: 'before\n',
    stderr: 'warned\n'
  })

  const float = await pysandbox(['run', '--url', target.url, '--json'], { stdin: 'def main():\n    return [1.0, 1e22]\n' })
  t.match(float.stdout, /^\{"result":\[1\.0, ?1e\+22\],/, 'the body as the server sent it (Python\'s json.dumps), not re-serialized')
})

/** The server's counts of finished runs and their seconds, from /metrics; undefined without access. */
async function runTotals (): Promise<{ count: number, seconds: number } | undefined> {
  const response = await fetch(`${target.url}/metrics`)
  if (!response.ok) return undefined
  const text = await response.text()
  const sum = (name: string): number => [...text.matchAll(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'gm'))].reduce((total, m) => total + Number(m[1]), 0)
  return { count: sum('pysandbox_execution_duration_seconds_count'), seconds: sum('pysandbox_execution_duration_seconds_sum') }
}

t.test('--request-timeout 0.5 with a script that sleeps 5 s: gives up within ~2 s, exit 2; the server stops the run', async t => {
  const before = await runTotals()
  const started = Date.now()
  const run = await pysandbox(['run', '--url', target.url, '--request-timeout', '0.5'], { stdin: 'import time\n\ndef main():\n    time.sleep(5)\n    return "slept"\n' })
  const took = Date.now() - started
  t.same(run, { code: 2, stdout: '', stderr: 'pysandbox: no reply within 0.5 s (--request-timeout): gave up on the request, and the server stops the run\n' })
  t.ok(took < 2000, `exited after ${took} ms`)
  if (before === undefined) return t.pass('skipped: /metrics needs a token on this server')
  // The run ends (is counted) well before its 5 s sleep would have.
  let after = await runTotals()
  while (after !== undefined && after.count === before.count && Date.now() - started < 4000) {
    await new Promise(resolve => setTimeout(resolve, 50))
    after = await runTotals()
  }
  t.equal(after?.count, before.count + 1, 'the run ended')
  t.ok(Date.now() - started < 4000 && (after?.seconds ?? Infinity) - before.seconds < 3, `stopped after ${((after?.seconds ?? 0) - before.seconds).toFixed(2)} s in its sandbox`)
})

t.test('--input, --stdin -, two --files (one binary) in; a CSV and a matplotlib figure saved with --out', async t => {
  const chart = `import hashlib, sys
import pandas as pd
import matplotlib.pyplot as plt

def main(options):
    df = pd.read_csv("data/temps.csv")
    means = df.groupby("city")["temp"].mean()
    means.to_csv("output/means.csv")
    means.plot.bar(title=options["title"])
    label = sys.stdin.read()
    print("stdin:", label.strip())
    return {"title": options["title"], "stdin": label, "blob": hashlib.sha256(open("blob.bin", "rb").read()).hexdigest()}
`
  const blob = Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i))
  const out = join(mkdtempSync(join(tmpdir(), 'pysandbox-cli-out-')), 'charts')
  const args = ['run', file('chart.py', chart), '--url', target.url, '--input', '{"title": "Mean temperature ✓"}', '--stdin', '-',
    '--file', `${file('temps.csv', 'city,temp\nOslo,3\nLima,19\nOslo,5\n')}=data/temps.csv`, '--file', file('blob.bin', blob), '--out', out]
  const run = await pysandbox(args, { stdin: 'Ada\n' })
  t.equal(run.code, 0, run.stderr)
  t.equal(run.stdout, `stdin: Ada\n${JSON.stringify({ title: 'Mean temperature ✓', stdin: 'Ada\n', blob: createHash('sha256').update(blob).digest('hex') })}\n`)
  const csv = 'city,temp\nLima,19.0\nOslo,4.0\n'
  t.equal(readFileSync(join(out, 'means.csv'), 'utf8'), csv)
  const png = readFileSync(join(out, 'figures/1.png'))
  t.same(png.subarray(0, 8), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), 'a PNG')
  t.ok(png.length > 1000, `${png.length} bytes`)
  t.same(readdirSync(out).sort(), ['figures', 'means.csv'])
  t.equal(run.stderr.split('\n').sort().join('\n'), [
    '',
    `pysandbox: wrote ${out}/figures/1.png (${png.length} bytes, image/png)`,
    `pysandbox: wrote ${out}/means.csv (${csv.length} bytes, text/csv)`
  ].join('\n'))

  const again = await pysandbox(args, { stdin: 'Bob\n' })
  t.same(again, {
    code: 2,
    stdout: '',
    stderr: `pysandbox: --out ${out} is not empty: returned files are the script's, so they go to a new or empty directory\n`
  }, 'the same DIR again: refused before anything is sent, exit 2')
  t.equal(readFileSync(join(out, 'means.csv'), 'utf8'), csv, 'the first run\'s files are unchanged')
  t.same(readFileSync(join(out, 'figures/1.png')), png)
  t.same(readdirSync(out).sort(), ['figures', 'means.csv'])

  const listed = await pysandbox(args.slice(0, -2), { stdin: 'Cy\n' })
  t.equal(listed.code, 0, 'without --out: the files are named, not saved')
  t.match(listed.stderr, /^pysandbox: returned means\.csv \(\d+ bytes\); use --out DIR to save it$/m)
  t.match(listed.stderr, /^pysandbox: returned figures\/1\.png \(\d+ bytes\); use --out DIR to save it$/m)
})

t.test('a file the server refuses: its message, exit 1', async t => {
  const run = await pysandbox(['run', file('hello3.py', HELLO), '--url', target.url, '--file', `${file('x.csv', 'a\n')}=output/x.csv`])
  t.equal(run.code, 1)
  t.match(run.stderr, /^INVALID_REQUEST: body\.files\[0\]\.path "output\/x\.csv" is under output\//)
})

const SLEEPS = 'import time\n\ndef main():\n    time.sleep(2)\n    return "slept"\n'

t.test('--timeout 0.5 ends a script that sleeps 2 s: TIME_LIMIT_EXCEEDED, exit 1; without it (the server\'s 4 s) it finishes', async t => {
  const sleeps = file('sleeps.py', SLEEPS)
  const limited = await pysandbox(['run', sleeps, '--url', target.url, '--timeout', '0.5'])
  t.equal(limited.code, 1, limited.stderr)
  t.equal(limited.stdout, '')
  t.match(limited.stderr, /^TIME_LIMIT_EXCEEDED: the script ran longer than the wall-time limit of 500 ms\n$/)
  const unlimited = await pysandbox(['run', sleeps, '--url', target.url])
  t.same(unlimited, { code: 0, stdout: '"slept"\n', stderr: '' })
})

t.test('--memory over the server\'s ceiling: 400 INVALID_REQUEST naming the ceiling, exit 1, nothing run', async t => {
  const run = await pysandbox(['run', file('hello-memory.py', HELLO), '--url', target.url, '--memory', '100000'])
  t.equal(run.code, 1)
  t.equal(run.stdout, '', 'the script did not run')
  t.equal(run.stderr, 'INVALID_REQUEST: body.limits.memoryMb is 100000, above this server\'s ceiling (LIMIT_MEMORY_MB_MAX) of 512\n', 'the ceiling, as the test server has it')
})

t.test('a server that needs a key: PYSANDBOX_KEY or --key-file is sent and taken; without it or with a wrong one, 401 and the hint, exit 1', async t => {
  if (externalUrl !== undefined) return t.pass('skipped: needs a server of its own with API_KEYS_FILE')
  const key = `psk_${randomBytes(32).toString('base64url')}`
  const keys = mkdtempSync(join(tmpdir(), 'pysandbox-cli-keys-'))
  writeFileSync(join(keys, 'keys'), `cli-test:${createHash('sha256').update(key).digest('hex')}\n`)
  // Its own uids, clear of the other server's (both are up at once).
  const uids = { SANDBOX_UID_BASE: String(Number(UID_BASE.SANDBOX_UID_BASE ?? 1_900_000_000) + 8192) }
  const keyed = await startServer({ SANDBOX_BACKEND: 'nsjail', API_KEYS_FILE: join(keys, 'keys'), ...uids })
  t.teardown(keyed.close)
  const hello = file('hello-keyed.py', HELLO)

  const fromEnv = await pysandbox(['run', hello, '--url', keyed.url], { env: { PYSANDBOX_KEY: key } })
  t.same(fromEnv, { code: 0, stdout: 'Hello from main!\n{"msg":"success","value":42}\n', stderr: '' }, 'PYSANDBOX_KEY: taken')
  const keyFile = file('key.txt', `${key}\n`)
  const fromFile = await pysandbox(['run', hello, '--url', keyed.url, '--key-file', keyFile])
  t.same(fromFile, fromEnv, '--key-file: taken')

  const none = await pysandbox(['run', hello, '--url', keyed.url])
  t.equal(none.code, 1)
  t.equal(none.stdout, '', 'nothing ran')
  t.match(none.stderr, /^UNAUTHORIZED: .+\nno API key was sent: set PYSANDBOX_KEY or use --key-file FILE\n$/, 'no key: 401 and the hint')

  const wrong = await pysandbox(['run', hello, '--url', keyed.url], { env: { PYSANDBOX_KEY: `psk_${randomBytes(32).toString('base64url')}` } })
  t.equal(wrong.code, 1)
  t.match(wrong.stderr, /^UNAUTHORIZED: .+\nthe key from PYSANDBOX_KEY was refused: set PYSANDBOX_KEY or use --key-file FILE with a key this server takes\n$/, 'a wrong key: 401 and the hint')

  const argument = await pysandbox(['run', hello, '--url', keyed.url, '--key', key])
  t.equal(argument.code, 2, '--key KEY: a usage error')
  t.match(argument.stderr, /^pysandbox: --key is not taken: .*; set PYSANDBOX_KEY or use --key-file FILE\nusage: /)

  const runs = [fromEnv, fromFile, none, wrong, argument]
  t.notOk(runs.some(run => run.stdout.includes(key) || run.stderr.includes(key)), 'the key is never printed')
})
