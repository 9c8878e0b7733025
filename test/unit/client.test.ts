// The command-line client's logic, in process: arguments, where the script, its input, stdin and
// files come from, what is printed where, where returned files are saved (and the hostile ones
// refused), and the exit status for every kind of reply. A fake backend, or a bare HTTP server
// for replies no PySandbox server sends, serves over HTTP.
import t, { type Test } from 'tap'
import { once } from 'node:events'
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { buildApp } from '../../src/app.js'
import type { RunOutcome } from '../../src/backends/backend.js'
import { PROJECT_ROOT, loadConfig } from '../../src/config.js'
import { DEFAULT_URL, EXIT, FETCH_WAIT_MAX_S, USAGE, main, parseCommand, returnedPathProblem } from '../../src/client.js'
import { FakeBackend, HeldRun, failingProbe, failure, success } from '../helpers/fake-backend.js'

interface Ran { code: number, stdout: string, stderr: string }

async function cli (argv: string[], options: { stdin?: string, tty?: boolean, env?: Record<string, string> } = {}): Promise<Ran> {
  const stdin = Readable.from([Buffer.from(options.stdin ?? '')]) as Readable & { isTTY?: boolean }
  if (options.tty === true) stdin.isTTY = true
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  stderr.on('data', (chunk: Buffer) => { err += chunk.toString() })
  const code = await main(argv, { stdin, stdout, stderr, env: options.env ?? {} })
  return { code, stdout: out, stderr: err }
}

async function serve (t: Test, run?: RunOutcome | FakeBackend, env: Record<string, string> = {}): Promise<string> {
  const backend = run instanceof FakeBackend ? run : new FakeBackend('nsjail', run === undefined ? {} : { run })
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0', ...env }), backends: [backend] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await app.close() })
  return `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
}

async function listen (t: Test, handler: Parameters<typeof createServer>[1]): Promise<string> {
  const server: Server = createServer(handler).listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.close() })
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}

const dir = mkdtempSync(join(tmpdir(), 'pysandbox-client-'))
const script = join(dir, 'main.py')
writeFileSync(script, 'def main():\n    return 42\n')

t.test('--help prints the usage and exits 0, before anything else (--version too)', async t => {
  for (const argv of [['--help'], ['-h'], ['run', 'missing.py', '-h'], ['--version', '--help']]) {
    t.same(await cli(argv), { code: EXIT.ok, stdout: `${USAGE}\n`, stderr: '' }, argv.join(' '))
  }
})

t.test('--version (-V) prints "pysandbox" and package.json\'s version, read from beside the module; exit 0', async t => {
  const { version } = JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string }
  t.match(version, /^\d+\.\d+\.\d+/)
  for (const argv of [['--version'], ['-V'], ['run', 'missing.py', '--version']]) {
    t.same(await cli(argv), { code: EXIT.ok, stdout: `pysandbox ${version}\n`, stderr: '' }, argv.join(' '))
  }
  const unknown = await cli(['--version', '--port', '1'])
  t.equal(unknown.code, EXIT.usage, 'an unknown option is still a usage error')
  t.match(unknown.stderr, /^pysandbox: Unknown option '--port'/)
})

t.test('usage errors exit 2 with a reason and the usage', async t => {
  const table = [
    { argv: [], reason: 'no command' },
    { argv: ['exec'], reason: 'unknown command "exec"' },
    { argv: ['run', 'a.py', 'b.py'], reason: 'one script at a time (got also b.py)' },
    { argv: ['run', '--port', '1'], reason: /Unknown option '--port'/ },
    { argv: ['run', '--url', 'not a url'], reason: 'not a URL: not a url' },
    { argv: ['run', '--url', 'ftp://host/'], reason: 'not an http(s) URL: ftp://host/' }
  ]
  for (const { argv, reason } of table) {
    const ran = await cli(argv)
    t.equal(ran.code, EXIT.usage, argv.join(' '))
    t.equal(ran.stdout, '')
    t.match(ran.stderr, typeof reason === 'string' ? `pysandbox: ${reason}\nusage: ` : reason, argv.join(' '))
  }
})

t.test('the script: a file, "-" or nothing for standard input; an unreadable file exits 2', async t => {
  const fake = new FakeBackend('nsjail')
  const url = await serve(t, fake)
  t.equal((await cli(['run', script, '--url', url])).code, EXIT.ok)
  t.equal(fake.runs[0]?.script, 'def main():\n    return 42\n')
  t.equal((await cli(['run', '-', '--url', url], { stdin: 'from stdin' })).code, EXIT.ok)
  t.equal(fake.runs[1]?.script, 'from stdin')
  const tty = await cli(['run', '--url', url], { stdin: 'typed', tty: true })
  t.equal(tty.code, EXIT.ok)
  t.equal(tty.stderr, 'pysandbox: reading the script from standard input (end it with Ctrl-D)\n', 'a hint on a terminal')
  t.equal(fake.runs[2]?.script, 'typed')

  const missing = await cli(['run', join(dir, 'missing.py'), '--url', url])
  t.equal(missing.code, EXIT.usage)
  t.match(missing.stderr, /^pysandbox: cannot read .*missing\.py: ENOENT/)
  const broken = new Readable({ read () { this.destroy(new Error('stdin broke')) } })
  const ran = await main(['run', '--url', url], { stdin: broken, stdout: new PassThrough(), stderr: new PassThrough(), env: {} })
  t.equal(ran, EXIT.usage, 'an unreadable standard input')
  t.equal(fake.runs.length, 3, 'nothing else was sent')
})

t.test('the URL: --url, else PYSANDBOX_URL, else localhost:8080; a path prefix is kept', async t => {
  t.equal(DEFAULT_URL, 'http://localhost:8080')
  const paths: string[] = []
  const url = await listen(t, (request, response) => {
    paths.push(request.url ?? '')
    response.setHeader('content-type', 'application/json')
    response.end('{"result": 1, "stdout": "", "stderr": "", "backend": "nsjail"}')
  })
  t.equal((await cli(['run', script], { env: { PYSANDBOX_URL: url } })).code, EXIT.ok)
  t.equal((await cli(['run', script, '--url', `${url}/sandbox/`], { env: { PYSANDBOX_URL: 'http://127.0.0.1:9' } })).code, EXIT.ok)
  t.equal((await cli(['run', script, '-u', `${url}/sandbox`])).code, EXIT.ok)
  t.same(paths, ['/execute', '/sandbox/execute', '/sandbox/execute'])
  for (const env of [{}, { PYSANDBOX_URL: '' }]) {
    t.match(parseCommand(['run'], env), { file: '-', url: new URL('http://localhost:8080/execute') }, `default URL with ${JSON.stringify(env)}`)
  }
})

t.test('success: stdout, stderr, then the result as JSON; a missing newline is added', async t => {
  const url = await serve(t, success({ rows: [1, 'two', null] }, { stdout: 'no newline', stderr: 'warn\n' }))
  t.same(await cli(['run', script, '--url', url]), { code: EXIT.ok, stdout: 'no newline\n{"rows":[1,"two",null]}\n', stderr: 'warn\n' })
  const quiet = await serve(t, success(null))
  t.same(await cli(['run', script, '--url', quiet]), { code: EXIT.ok, stdout: 'null\n', stderr: '' })
})

t.test('truncated output is said on stderr', async t => {
  const url = await serve(t, success(1, { stdout: 'x\n', stderr: 'y\n', stdoutTruncated: true, stderrTruncated: true }))
  const ran = await cli(['run', script, '--url', url])
  t.equal(ran.code, EXIT.ok)
  t.equal(ran.stderr, 'y\npysandbox: stdout was truncated at the server\'s limit\npysandbox: stderr was truncated at the server\'s limit\n')
})

t.test('script errors: output, then CODE: message (and the traceback); exit 1', async t => {
  const raised = await serve(t, failure('MAIN_RAISED', 'KeyError: \'b\'', { exception: 'KeyError', traceback: 'Traceback (most recent call last):\nKeyError: \'b\'\n' }, { stdout: 'before\n', stderr: 'warned\n' }))
  t.same(await cli(['run', script, '--url', raised]), {
    code: EXIT.failed,
    stdout: 'before\n',
    stderr: 'warned\nMAIN_RAISED: KeyError: \'b\'\nTraceback (most recent call last):\nKeyError: \'b\'\n'
  })
  const limit = await serve(t, failure('TIME_LIMIT_EXCEEDED', 'the script ran longer than the wall-time limit of 10000 ms'))
  t.same(await cli(['run', script, '--url', limit]), { code: EXIT.failed, stdout: '', stderr: 'TIME_LIMIT_EXCEEDED: the script ran longer than the wall-time limit of 10000 ms\n' })
})

t.test('refusals: the code, Retry-After when given, the request id for our faults; exit 1', async t => {
  const unavailable = await serve(t, new FakeBackend('nsjail', { probe: failingProbe('no') }))
  const refused = await cli(['run', script, '--url', unavailable])
  t.equal(refused.code, EXIT.failed)
  t.match(refused.stderr, /^SANDBOX_UNAVAILABLE: no permitted sandbox backend passed its probe/)

  // The one slot held; the next request waits no time at all (QUEUE_TIMEOUT_MS=0): BUSY.
  const held = new HeldRun()
  const busyUrl = await serve(t, new FakeBackend('nsjail', { run: held.run }), { CONCURRENCY: '1', QUEUE_SIZE: '1', QUEUE_TIMEOUT_MS: '0' })
  const first = cli(['run', script, '--url', busyUrl])
  await held.started()
  const busy = await cli(['run', script, '--url', busyUrl])
  held.finish()
  t.equal((await first).code, EXIT.ok)
  t.equal(busy.code, EXIT.failed)
  t.equal(busy.stderr, 'BUSY: every execution slot is taken and the wait queue is full; retry later\nretry after 1 s\n')

  // The one slot held and this caller's one place in the queue taken: CONCURRENCY_LIMITED.
  const share = new HeldRun()
  const shareUrl = await serve(t, new FakeBackend('nsjail', { run: share.run }), { CONCURRENCY: '1', QUEUE_SIZE: '2', TENANT_QUEUE: '1' })
  const running = cli(['run', script, '--url', shareUrl])
  await share.started()
  // Whichever of the next two arrives first waits; the other is refused at once.
  const next = [cli(['run', script, '--url', shareUrl]), cli(['run', script, '--url', shareUrl])]
  const limited = await Promise.race(next)
  share.finish()
  await share.started(2)
  share.finish()
  t.equal((await running).code, EXIT.ok)
  t.same((await Promise.all(next)).map(ran => ran.code).sort(), [EXIT.ok, EXIT.failed], 'one waited and ran, one was refused')
  t.equal(limited.code, EXIT.failed)
  t.match(limited.stderr, /^CONCURRENCY_LIMITED: this caller already has its share: 1 running and 1 waiting.*\nretry after 1 s\n$/)

  const internal = await serve(t, new FakeBackend('nsjail', { run: async () => { throw new Error('boom') } }))
  const ours = await cli(['run', script, '--url', internal])
  t.equal(ours.code, EXIT.failed)
  t.match(ours.stderr, /^INTERNAL_ERROR: internal error; quote the request id (\S+) when reporting it\nrequest id: \1\n$/)
})

t.test('a server that is not PySandbox: JSON without a code, or no JSON at all', async t => {
  const plain = await listen(t, (_request, response) => {
    response.statusCode = 502
    response.setHeader('x-request-id', 'proxy-1')
    response.end('{"detail": "bad gateway"}')
  })
  t.same(await cli(['run', script, '--url', plain]), { code: EXIT.failed, stdout: '', stderr: 'HTTP_502: Bad Gateway\nrequest id: proxy-1\n' })
  const bare = await listen(t, (_request, response) => { response.statusCode = 500; response.end('{}') })
  t.same(await cli(['run', script, '--url', bare]), { code: EXIT.failed, stdout: '', stderr: 'HTTP_500: Internal Server Error\nrequest id: none\n' })
  for (const text of ['<html>', 'null', '[]', '42', '"done"']) {
    const odd = await listen(t, (_request, response) => { response.end(text) })
    for (const json of [[], ['--json']]) {
      t.same(await cli(['run', script, '--url', odd, ...json]), {
        code: EXIT.usage,
        stdout: '',
        stderr: `pysandbox: ${odd}/execute answered 200 without a JSON object: is it a PySandbox server?\n`
      }, `${text} ${json.join(' ')}`)
    }
  }
})

t.test('no server at the URL, or a URL fetch refuses: exit 2 with the reason', async t => {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const closed = `http://127.0.0.1:${(server.address() as { port: number }).port}`
  server.close()
  await once(server, 'close')
  const refused = await cli(['run', script, '--url', closed])
  t.equal(refused.code, EXIT.usage)
  t.equal(refused.stderr, `pysandbox: cannot reach ${closed}: connect ECONNREFUSED ${closed.slice('http://'.length)}\n`)
  const credentials = await cli(['run', script, '--url', 'http://user:secret@127.0.0.1:8080'])
  t.equal(credentials.code, EXIT.usage)
  t.match(credentials.stderr, /^pysandbox: cannot reach http:\/\/127\.0\.0\.1:8080: Request cannot be constructed from a URL that includes credentials/)
  t.equal(refused.stdout + credentials.stdout, '')
})

t.test('parseCommand: --input, --stdin, --file (repeatable), --out', async t => {
  const url = new URL('http://localhost:8080/execute')
  t.same(parseCommand(['run', 'a.py'], {}), { file: 'a.py', url, files: [] }, 'none of them')
  t.same(parseCommand(['run', 'a.py', '--input', '{"values": [1, 2]}', '--stdin', 'in.txt', '--out', 'results'], {}),
    { file: 'a.py', url, input: { value: { values: [1, 2] } }, stdin: 'in.txt', files: [], out: 'results' })
  t.same(parseCommand(['run', 'a.py', '--input', 'null'], {}), { file: 'a.py', url, input: { value: null }, files: [] }, 'null is an input')
  t.same(parseCommand(['run', 'a.py', '--input=-1'], {}), { file: 'a.py', url, input: { value: -1 }, files: [] })
  t.same(parseCommand(['run', 'a.py', '--input', '@data/in.json'], {}), { file: 'a.py', url, input: { file: 'data/in.json' }, files: [] })
  t.same(parseCommand(['run', 'a.py', '--stdin', '-'], {}), { file: 'a.py', url, stdin: '-', files: [] }, 'standard input for the script when the script is a file')
  const files = ['--file', 'data/in.csv', '--file', '../x/chart.png=img/c.png', '--file', 'a=b.csv=b.csv', '--file', 'é/ü.txt']
  t.match(parseCommand(['run', 'a.py', ...files], {}), {
    files: [
      { path: 'data/in.csv', name: 'in.csv' },
      { path: '../x/chart.png', name: 'img/c.png' },
      { path: 'a=b.csv', name: 'b.csv' },
      { path: 'é/ü.txt', name: 'ü.txt' }
    ]
  }, 'the base name by default; split at the last "="')
})

t.test('usage errors of the new options exit 2 naming the problem, before anything is read or sent', async t => {
  const table = [
    { argv: ['run', script, '--input', '{"a": 1'], reason: /^pysandbox: --input is not JSON \(.+\); --input @FILE reads it from a file\nusage: / },
    { argv: ['run', script, '--input', ''], reason: /^pysandbox: --input is not JSON \(Unexpected end of JSON input\)/ },
    { argv: ['run', script, '--input', "{'a': 1}"], reason: /^pysandbox: --input is not JSON/ },
    { argv: ['run', script, '--input', '@'], reason: /^pysandbox: --input @FILE needs a file name\n/ },
    { argv: ['run', script, '--input', '-1'], reason: /^pysandbox: Option '--input' argument is ambiguous/ },
    { argv: ['run', '--stdin', '-'], reason: /^pysandbox: --stdin - reads standard input, so the script must come from a file\n/ },
    { argv: ['run', '-', '--stdin', '-'], reason: /^pysandbox: --stdin - reads standard input/ },
    { argv: ['run', script, '--file', ''], reason: /^pysandbox: --file : give PATH or PATH=NAME, neither empty\n/ },
    { argv: ['run', script, '--file', '=x.csv'], reason: /^pysandbox: --file =x\.csv: give PATH or PATH=NAME/ },
    { argv: ['run', script, '--file', 'x.csv='], reason: /^pysandbox: --file x\.csv=: give PATH or PATH=NAME/ },
    { argv: ['run', script, '--file'], reason: /^pysandbox: Option '--file <value>' argument missing/ },
    { argv: ['run', script, '--out'], reason: /^pysandbox: Option '--out <value>' argument missing/ }
  ]
  for (const { argv, reason } of table) {
    const ran = await cli(argv, { env: { PYSANDBOX_URL: 'http://127.0.0.1:9' } })
    t.equal(ran.code, EXIT.usage, argv.join(' '))
    t.equal(ran.stdout, '')
    t.match(ran.stderr, reason, argv.join(' '))
  }
})

t.test('USAGE names every option', async t => {
  const options = ['--url', '--input JSON', '--input @FILE', '--stdin FILE', '--stdin -', '--file PATH[=NAME]', '--out DIR',
    '--key-file FILE', '$PYSANDBOX_KEY', '--timeout SECONDS', '--cpu SECONDS', '--memory MB', '--json',
    '--request-timeout SECONDS', `at most ${FETCH_WAIT_MAX_S}`, '-V, --version', '-h, --help']
  for (const option of options) t.match(USAGE, option)
  t.match(USAGE, 'There is no --key', 'and why there is no --key')
})

// An API key as the server makes them: "psk_" and 43 base64url characters.
const KEY = `psk_${randomBytes(32).toString('base64url')}`

/** Fails unless the key appears nowhere in what the command printed. */
function keyNotPrinted (t: Test, ran: Ran, what: string): void {
  t.notOk(ran.stdout.includes(KEY) || ran.stderr.includes(KEY), `${what}: the key is not printed`)
}

interface Seen { url: string, headers: IncomingHttpHeaders, body: Record<string, unknown> }

/** A server that records every request (its URL, headers and JSON body) and answers `status`
 *  with `reply` (by default a success) and `headers`. */
async function recording (t: Test, status = 200, reply: Record<string, unknown> = {}, headers: Record<string, string> = {}): Promise<{ url: string, seen: Seen[] }> {
  const seen: Seen[] = []
  const url = await listen(t, (request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      seen.push({ url: request.url ?? '', headers: request.headers, body: JSON.parse(Buffer.concat(chunks).toString()) })
      response.statusCode = status
      for (const [name, value] of Object.entries({ 'content-type': 'application/json', ...headers })) response.setHeader(name, value)
      response.end(JSON.stringify(status === 200 ? { result: 'done', stdout: '', stderr: '', backend: 'nsjail', ...reply } : reply))
    })
  })
  return { url, seen }
}

t.test('parseCommand: --timeout in seconds (decimals) becomes limits.wallMs, --cpu limits.cpuSeconds, --memory limits.memoryMb', async t => {
  const table: Array<[string[], Record<string, number>]> = [
    [['--timeout', '2'], { wallMs: 2000 }],
    [['--timeout', '0.5'], { wallMs: 500 }],
    [['--timeout', '.25'], { wallMs: 250 }],
    [['--timeout', '3.'], { wallMs: 3000 }],
    [['--timeout', '0.001'], { wallMs: 1 }],
    [['--timeout', '1.0004'], { wallMs: 1000 }],
    [['--timeout', '0.0015'], { wallMs: 2 }],
    [['--timeout=90'], { wallMs: 90_000 }],
    [['--cpu', '3'], { cpuSeconds: 3 }],
    [['--cpu', '007'], { cpuSeconds: 7 }],
    [['--memory', '128'], { memoryMb: 128 }],
    [['--memory=100000'], { memoryMb: 100_000 }],
    [['--timeout', '1.5', '--cpu', '1', '--memory', '64'], { wallMs: 1500, cpuSeconds: 1, memoryMb: 64 }]
  ]
  for (const [argv, limits] of table) t.same(parseCommand(['run', 'a.py', ...argv], {}), { file: 'a.py', url: new URL('http://localhost:8080/execute'), files: [], limits }, argv.join(' '))
  t.notOk('limits' in parseCommand(['run', 'a.py'], {}), 'none given: no limits at all (the server\'s defaults)')
})

t.test('bad limits are usage errors (exit 2) naming the option, before anything is read or sent', async t => {
  const { url, seen } = await recording(t)
  const table: Array<[string[], RegExp]> = [
    [['--timeout', '0'], /^pysandbox: --timeout 0: give seconds, a number above 0 such as 2 or 0\.5 \(at least 0\.001\)\n/],
    [['--timeout', '0.0'], /^pysandbox: --timeout 0\.0: give seconds/],
    [['--timeout', '0.0004'], /^pysandbox: --timeout 0\.0004: give seconds/],
    [['--timeout=-1'], /^pysandbox: --timeout -1: give seconds/],
    [['--timeout', '-1'], /^pysandbox: Option '--timeout' argument is ambiguous/],
    [['--timeout', 'ten'], /^pysandbox: --timeout ten: give seconds/],
    [['--timeout', '1e3'], /^pysandbox: --timeout 1e3: give seconds/],
    [['--timeout', 'Infinity'], /^pysandbox: --timeout Infinity: give seconds/],
    [['--timeout', '0x10'], /^pysandbox: --timeout 0x10: give seconds/],
    [['--timeout', ' 1'], /^pysandbox: --timeout {2}1: give seconds/],
    [['--timeout', '1s'], /^pysandbox: --timeout 1s: give seconds/],
    [['--timeout', ''], /^pysandbox: --timeout : give seconds/],
    [['--timeout', '9'.repeat(20)], /^pysandbox: --timeout 9+: give seconds/],
    [['--timeout'], /^pysandbox: Option '--timeout <value>' argument missing/],
    [['--cpu', '0'], /^pysandbox: --cpu 0: give whole seconds, a whole number above 0\n/],
    [['--cpu', '1.5'], /^pysandbox: --cpu 1\.5: give whole seconds/],
    [['--cpu=-2'], /^pysandbox: --cpu -2: give whole seconds/],
    [['--cpu', 'two'], /^pysandbox: --cpu two: give whole seconds/],
    [['--cpu', '9'.repeat(17)], /^pysandbox: --cpu 9+: give whole seconds/],
    [['--memory', '0'], /^pysandbox: --memory 0: give megabytes, a whole number above 0\n/],
    [['--memory', '12.5'], /^pysandbox: --memory 12\.5: give megabytes/],
    [['--memory', '1e3'], /^pysandbox: --memory 1e3: give megabytes/],
    [['--memory', '512MB'], /^pysandbox: --memory 512MB: give megabytes/],
    [['--memory=-64'], /^pysandbox: --memory -64: give megabytes/],
    [['--memory', ''], /^pysandbox: --memory : give megabytes/]
  ]
  for (const [argv, message] of table) {
    const ran = await cli(['run', script, '--url', url, ...argv])
    t.equal(ran.code, EXIT.usage, argv.join(' '))
    t.equal(ran.stdout, '')
    t.match(ran.stderr, message, argv.join(' '))
    t.match(ran.stderr, /\nusage: pysandbox run/, 'with the usage')
  }
  t.equal(seen.length, 0, 'nothing was sent')
})

t.test('limits are sent only when given, exactly as the flags say', async t => {
  const { url, seen } = await recording(t)
  t.equal((await cli(['run', script, '--url', url])).code, EXIT.ok)
  t.same(seen[0]?.body, { script: 'def main():\n    return 42\n' }, 'no flag: no limits field')
  t.equal((await cli(['run', script, '--url', url, '--timeout', '0.5'])).code, EXIT.ok)
  t.same(seen[1]?.body.limits, { wallMs: 500 })
  t.equal((await cli(['run', script, '--url', url, '--memory', '64', '--cpu', '2', '--timeout', '2.25', '--input', '1'])).code, EXIT.ok)
  t.same(seen[2]?.body, { script: 'def main():\n    return 42\n', input: 1, limits: { wallMs: 2250, cpuSeconds: 2, memoryMb: 64 } })
})

t.test('a limit over the server\'s ceiling: its 400 is printed as any refusal, exit 1', async t => {
  const message = 'body.limits.memoryMb is 100000, above this server\'s ceiling (LIMIT_MEMORY_MB_MAX) of 512'
  const { url } = await recording(t, 400, { statusCode: 400, error: 'Bad Request', code: 'INVALID_REQUEST', message, requestId: 'r-1' })
  t.same(await cli(['run', script, '--url', url, '--memory', '100000']), { code: EXIT.failed, stdout: '', stderr: `INVALID_REQUEST: ${message}\n` })
})

t.test('the key: PYSANDBOX_KEY, or --key-file (which wins); none: none', async t => {
  const url = new URL('http://localhost:8080/execute')
  t.same(parseCommand(['run', 'a.py'], { PYSANDBOX_KEY: KEY }), { file: 'a.py', url, files: [], key: { env: KEY } })
  t.same(parseCommand(['run', 'a.py', '--key-file', 'k.txt'], { PYSANDBOX_KEY: KEY }), { file: 'a.py', url, files: [], key: { file: 'k.txt' } })
  t.same(parseCommand(['run', 'a.py', '--key-file=k.txt'], {}), { file: 'a.py', url, files: [], key: { file: 'k.txt' } })
  t.notOk('key' in parseCommand(['run', 'a.py'], {}), 'no key')
  t.same(parseCommand(['run', '--', '--key'], {}), { file: '--key', url, files: [] }, 'after "--", --key is a file name')
})

t.test('the key is sent as Authorization: Bearer, from PYSANDBOX_KEY or the first line of --key-file; never in the URL', async t => {
  const { url, seen } = await recording(t)
  const keys = mkdtempSync(join(tmpdir(), 'pysandbox-client-keys-'))
  const keyFile = (name: string, content: string | Buffer): string => {
    const path = join(keys, name)
    writeFileSync(path, content)
    return path
  }
  const runs: Array<[string, string[], Record<string, string>]> = [
    ['PYSANDBOX_KEY', [], { PYSANDBOX_KEY: KEY }],
    ['--key-file, the key alone', ['--key-file', keyFile('alone', KEY)], {}],
    ['--key-file, spaces and CRLF trimmed, later lines ignored', ['--key-file', keyFile('lines', `  ${KEY}\t\r\nsecond line\n`)], {}],
    ['--key-file, a byte order mark trimmed', ['--key-file', keyFile('bom', `\ufeff${KEY}\n`)], {}],
    ['--key-file wins over PYSANDBOX_KEY', ['--key-file', keyFile('wins', `${KEY}\n`)], { PYSANDBOX_KEY: 'psk_other' }],
    ['--key-file over a bad PYSANDBOX_KEY (not read)', ['--key-file', keyFile('over-bad', `${KEY}\n`)], { PYSANDBOX_KEY: 'bad key' }]
  ]
  for (const [what, argv, env] of runs) {
    const ran = await cli(['run', script, '--url', url, ...argv], { env })
    t.same(ran, { code: EXIT.ok, stdout: '"done"\n', stderr: '' }, what)
    t.equal(seen.at(-1)?.headers.authorization, `Bearer ${KEY}`, `${what}: Authorization: Bearer KEY`)
    t.equal(seen.at(-1)?.url, '/execute', `${what}: not in the URL`)
    t.notOk(JSON.stringify(seen.at(-1)?.body).includes(KEY), `${what}: not in the body`)
  }
  t.equal((await cli(['run', script, '--url', url])).code, EXIT.ok)
  t.equal(seen.at(-1)?.headers.authorization, undefined, 'no key: no Authorization header')
})

t.test('--key is refused (exit 2) pointing to PYSANDBOX_KEY and --key-file; the key is never printed', async t => {
  const { url, seen } = await recording(t)
  const table = [
    ['--key', KEY],
    [`--key=${KEY}`],
    ['--key'],
    ['--key', KEY, '--port', '1'],
    ['--port', '1', '--key', KEY],
    ['--input', '--key']
  ]
  for (const argv of table) {
    const ran = await cli(['run', script, '--url', url, ...argv], { env: { PYSANDBOX_KEY: KEY } })
    t.equal(ran.code, EXIT.usage, argv.join(' '))
    t.match(ran.stderr, /^pysandbox: --key is not taken: a key on the command line shows in ps and stays in the shell's history; set PYSANDBOX_KEY or use --key-file FILE\nusage: /, argv.join(' '))
    keyNotPrinted(t, ran, argv.join(' '))
  }
  const after = await cli(['run', script, '--url', url, '--port', '1', '--', '--key'])
  t.match(after.stderr, /^pysandbox: Unknown option '--port'/, 'after "--", --key is no option: the other error is the one told')
  t.equal(seen.length, 0, 'nothing was sent')
})

t.test('a key that cannot be sent (empty, whitespace, control characters, not ASCII) or a key file that cannot be read: exit 2, the key never printed', async t => {
  const { url, seen } = await recording(t)
  const keys = mkdtempSync(join(tmpdir(), 'pysandbox-client-badkeys-'))
  const keyFile = (name: string, content: string | Buffer): string => {
    const path = join(keys, name)
    writeFileSync(path, content)
    return path
  }
  const fromEnv = /^pysandbox: PYSANDBOX_KEY holds whitespace, a control character or a character outside ASCII, which a key never does\nusage: /
  const inFile = (name: string): RegExp => new RegExp(`^pysandbox: the first line of --key-file .*/${name} holds whitespace, a control character or a character outside ASCII, which a key never does\n$`)
  const table: Array<[string, string[], Record<string, string>, RegExp]> = [
    ['PYSANDBOX_KEY empty', [], { PYSANDBOX_KEY: '' }, /^pysandbox: PYSANDBOX_KEY is empty: give the key there \(or no key at all for a server that needs none\)\nusage: /],
    ['PYSANDBOX_KEY with a space', [], { PYSANDBOX_KEY: `${KEY} x` }, fromEnv],
    ['PYSANDBOX_KEY with a trailing newline', [], { PYSANDBOX_KEY: `${KEY}\n` }, fromEnv],
    ['PYSANDBOX_KEY with a tab', [], { PYSANDBOX_KEY: `\t${KEY}` }, fromEnv],
    ['PYSANDBOX_KEY with DEL', [], { PYSANDBOX_KEY: `${KEY}\u007f` }, fromEnv],
    ['PYSANDBOX_KEY with NUL', [], { PYSANDBOX_KEY: `${KEY}\u0000` }, fromEnv],
    ['PYSANDBOX_KEY not ASCII', [], { PYSANDBOX_KEY: `${KEY}é` }, fromEnv],
    ['an empty key file', ['--key-file', keyFile('empty', '')], {}, /^pysandbox: the first line of --key-file .*\/empty is empty: give the key there/],
    ['a comment first (as npm run keygen prints one)', ['--key-file', keyFile('comment', `# the key for me\n${KEY}\n`)], {}, /^pysandbox: the first line of --key-file .*\/comment is a comment: the key goes alone on the first line\n$/],
    ['a blank first line', ['--key-file', keyFile('blank', ` \t\r\n${KEY}\n`)], {}, /^pysandbox: the first line of --key-file .*\/blank is empty/],
    ['a space inside', ['--key-file', keyFile('space', `${KEY.slice(0, 20)} ${KEY.slice(20)}\n`)], {}, inFile('space')],
    ['an escape inside', ['--key-file', keyFile('escape', `${KEY}\u001b[2J\n`)], {}, inFile('escape')],
    ['not UTF-8', ['--key-file', keyFile('latin1', Buffer.concat([Buffer.from(KEY), Buffer.from([0xe9, 0x0a])]))], {}, inFile('latin1')],
    ['a first line over 4096 bytes', ['--key-file', keyFile('long', `${KEY}${'x'.repeat(5000)}\n`)], {}, /^pysandbox: --key-file .*\/long: its first line is over 4096 bytes, which no key is\n$/],
    ['a missing key file', ['--key-file', join(keys, 'missing')], {}, /^pysandbox: cannot read .*\/missing: ENOENT/],
    ['a directory', ['--key-file', keys], {}, /^pysandbox: cannot read .*: EISDIR/],
    ['--key-file without a name', ['--key-file='], {}, /^pysandbox: --key-file needs a file name\nusage: /]
  ]
  for (const [what, argv, env, message] of table) {
    const ran = await cli(['run', script, '--url', url, ...argv], { env })
    t.equal(ran.code, EXIT.usage, what)
    t.equal(ran.stdout, '', what)
    t.match(ran.stderr, message, what)
    keyNotPrinted(t, ran, what)
  }
  t.equal(seen.length, 0, 'nothing was sent')
})

t.test('a key file that is a pipe: its first line is read, the rest not waited for', async t => {
  const { url, seen } = await recording(t)
  const fifo = join(mkdtempSync(join(tmpdir(), 'pysandbox-client-fifo-')), 'key')
  execFileSync('mkfifo', [fifo])
  // The writer sends the first line and keeps the pipe open: only the line is needed.
  const writer = spawn('sh', ['-c', 'exec 3>"$FIFO"; printf \'%s\\n\' "$KEY" >&3; exec sleep 30'], { env: { ...process.env, KEY, FIFO: fifo }, stdio: 'ignore' })
  t.teardown(() => { writer.kill() })
  const ran = await cli(['run', script, '--url', url, '--key-file', fifo])
  t.same(ran, { code: EXIT.ok, stdout: '"done"\n', stderr: '' })
  t.equal(seen[0]?.headers.authorization, `Bearer ${KEY}`)
})

t.test('401: UNAUTHORIZED and its message, then where a key goes (and whether the one sent was refused); exit 1', async t => {
  const missing = { statusCode: 401, error: 'Unauthorized', code: 'UNAUTHORIZED', message: 'this server needs an API key: send Authorization: Bearer <key>', requestId: 'r-401' }
  const challenge = { 'www-authenticate': 'Bearer realm="pysandbox"' }
  const { url, seen } = await recording(t, 401, missing, challenge)
  const none = await cli(['run', script, '--url', url])
  t.same(none, {
    code: EXIT.failed,
    stdout: '',
    stderr: 'UNAUTHORIZED: this server needs an API key: send Authorization: Bearer <key>\n' +
      'no API key was sent: set PYSANDBOX_KEY or use --key-file FILE\n'
  }, 'no key sent')

  const wrong = await recording(t, 401, { ...missing, message: 'the API key is not one this server knows' }, { 'www-authenticate': 'Bearer realm="pysandbox", error="invalid_token"' })
  const fromEnv = await cli(['run', script, '--url', wrong.url], { env: { PYSANDBOX_KEY: KEY } })
  t.same(fromEnv, {
    code: EXIT.failed,
    stdout: '',
    stderr: 'UNAUTHORIZED: the API key is not one this server knows\n' +
      'the key from PYSANDBOX_KEY was refused: set PYSANDBOX_KEY or use --key-file FILE with a key this server takes\n'
  }, 'a key from PYSANDBOX_KEY refused')
  const keyFile = join(mkdtempSync(join(tmpdir(), 'pysandbox-client-401-')), 'key.txt')
  writeFileSync(keyFile, `${KEY}\n`)
  const fromFile = await cli(['run', script, '--url', wrong.url, '--key-file', keyFile])
  t.equal(fromFile.code, EXIT.failed)
  t.equal(fromFile.stderr.split('\n')[1], `the key from --key-file ${keyFile} was refused: set PYSANDBOX_KEY or use --key-file FILE with a key this server takes`, 'a key from a file refused')
  for (const [what, ran] of [['none', none], ['env', fromEnv], ['file', fromFile]] as const) keyNotPrinted(t, ran, what)
  t.equal(seen.length, 1)

  const proxy = await recording(t, 401, { detail: 'unauthorized' })
  t.same(await cli(['run', script, '--url', proxy.url]), {
    code: EXIT.failed,
    stdout: '',
    stderr: 'HTTP_401: Unauthorized\nno API key was sent: set PYSANDBOX_KEY or use --key-file FILE\nrequest id: none\n'
  }, 'a 401 of a server that is not PySandbox (JSON without a code): the hint all the same')
})

t.test('429 CONCURRENCY_LIMITED, like RATE_LIMITED: the code, the message, Retry-After; exit 1', async t => {
  for (const code of ['CONCURRENCY_LIMITED', 'RATE_LIMITED']) {
    const message = `${code === 'RATE_LIMITED' ? 'too many requests' : 'this key already has 2 executions running or queued'}; retry later`
    const { url } = await recording(t, 429, { statusCode: 429, error: 'Too Many Requests', code, message, requestId: 'r-429' },
      { 'retry-after': '2', 'ratelimit-limit': '10', 'ratelimit-remaining': '0', 'ratelimit-reset': '2' })
    t.same(await cli(['run', script, '--url', url]), { code: EXIT.failed, stdout: '', stderr: `${code}: ${message}\nretry after 2 s\n` }, code)
  }
})

t.test('a key put where a key does not go (a script name, an argument, a reply) is not printed', async t => {
  const message = (ran: Ran): string => ran.stderr.split('\n')[0] ?? ''
  const extra = await cli(['run', script, KEY])
  t.equal(message(extra), 'pysandbox: one script at a time (got also psk_(hidden))')
  const asScript = await cli(['run', KEY, '--url', 'http://127.0.0.1:9'])
  t.equal(message(asScript), 'pysandbox: cannot read psk_(hidden): ENOENT: no such file or directory, open \'psk_(hidden)\'')
  const asUrl = await cli(['run', script, '--url', KEY])
  t.equal(message(asUrl), 'pysandbox: not a URL: psk_(hidden)')
  const { url } = await recording(t, 400, { statusCode: 400, error: 'Bad Request', code: 'INVALID_REQUEST', message: `body.files[0].path "${KEY}/x" is under output/`, requestId: 'r' })
  const quoted = await cli(['run', script, '--url', url])
  t.equal(message(quoted), 'INVALID_REQUEST: body.files[0].path "psk_(hidden)/x" is under output/', 'a reply quoting one')
  for (const ran of [extra, asScript, asUrl, quoted]) keyNotPrinted(t, ran, message(ran))
})

/** Writes files under `dir`: at(name, content) gives the file's path. */
function fileIn (dir: string): (name: string, content: string | Buffer) => string {
  return (name, content) => {
    const path = join(dir, name)
    writeFileSync(path, content)
    return path
  }
}

t.test('what is sent: input (inline or @FILE), stdin (a file or "-"), files (UTF-8 as text, else base64)', async t => {
  const fake = new FakeBackend('nsjail')
  const url = await serve(t, fake)
  const inputs = mkdtempSync(join(tmpdir(), 'pysandbox-client-in-'))
  const at = fileIn(inputs)
  const binary = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0xfe, 0x80])
  const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('a,b\n1,2\n')])
  const ran = await cli(['run', script, '--url', url,
    '--input', '{"n": [1, 2.5, "x", null]}',
    '--stdin', at('stdin.txt', 'Ada\nLovelace ✓\n'),
    '--file', at('data.csv', 'city,temp\nOslo,3\n'),
    '--file', `${at('blob.bin', binary)}=bin/blob.bin`,
    '--file', `${at('bom.csv', bom)}=données/é.csv`,
    '--file', `${at('empty', '')}`])
  t.same(ran, { code: EXIT.ok, stdout: '{"msg":"success","value":42}\n', stderr: '' })
  const sent = fake.runs[0]
  t.same(sent?.input, { value: { n: [1, 2.5, 'x', null] } })
  t.equal(sent?.stdin, 'Ada\nLovelace ✓\n')
  t.same(sent?.files, [
    { path: 'data.csv', content: Buffer.from('city,temp\nOslo,3\n') },
    { path: 'bin/blob.bin', content: binary },
    { path: 'données/é.csv', content: bom },
    { path: 'empty', content: Buffer.alloc(0) }
  ], 'every byte arrives, a byte order mark included')

  t.equal((await cli(['run', script, '--url', url, '--input', `@${at('in.json', '\ufeff{"from": "file"}\n')}`, '--stdin', '-'], { stdin: 'piped\n' })).code, EXIT.ok)
  t.same(fake.runs[1]?.input, { value: { from: 'file' } }, '@FILE, a byte order mark dropped')
  t.equal(fake.runs[1]?.stdin, 'piped\n', '--stdin -: this command\'s standard input')
  t.equal(fake.runs[1]?.files, undefined)

  t.equal((await cli(['run', script, '--url', url, '--input', 'null'])).code, EXIT.ok)
  t.same(fake.runs[2]?.input, { value: null }, 'null is sent')
  t.equal((await cli(['run', script, '--url', url])).code, EXIT.ok)
  t.same([fake.runs[3]?.input, fake.runs[3]?.stdin, fake.runs[3]?.files], [undefined, undefined, undefined], 'none of them: none sent')

  const tty = await cli(['run', script, '--url', url, '--stdin', '-'], { stdin: 'typed', tty: true })
  t.equal(tty.stderr, 'pysandbox: reading the script\'s standard input from standard input (end it with Ctrl-D)\n')
  t.equal(fake.runs[4]?.stdin, 'typed')

  t.test('the script\'s byte order mark is dropped, as an editor would', async t => {
    t.equal((await cli(['run', '--url', url], { stdin: '\ufeffdef main():\n    return 1\n' })).code, EXIT.ok)
    t.equal(fake.runs[5]?.script, 'def main():\n    return 1\n')
  })
})

t.test('an unreadable or unusable file, or --out that cannot be made: exit 2, nothing sent', async t => {
  const fake = new FakeBackend('nsjail')
  const url = await serve(t, fake)
  const inputs = mkdtempSync(join(tmpdir(), 'pysandbox-client-bad-'))
  const at = fileIn(inputs)
  const missing = join(inputs, 'missing')
  const table: Array<{ argv: string[], stdin?: Readable, message: RegExp }> = [
    { argv: ['--file', missing], message: /^pysandbox: cannot read .*missing: ENOENT/ },
    { argv: ['--file', inputs], message: /^pysandbox: cannot read .*: EISDIR/ },
    { argv: ['--input', `@${missing}`], message: /^pysandbox: cannot read .*missing: ENOENT/ },
    { argv: ['--input', `@${at('bad.json', '{"a": }')}`], message: /^pysandbox: --input @.*bad\.json: not JSON \(.+\)\n$/ },
    { argv: ['--stdin', missing], message: /^pysandbox: cannot read .*missing: ENOENT/ },
    { argv: ['--stdin', at('latin1.txt', Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0a]))], message: /^pysandbox: --stdin .*latin1\.txt: not UTF-8 text, as the script's standard input travels; send bytes with --file\n$/ },
    { argv: ['--stdin', '-'], stdin: new Readable({ read () { this.destroy(new Error('stdin broke')) } }), message: /^pysandbox: cannot read standard input: stdin broke\n$/ },
    { argv: ['--out', join(at('a-file', 'x'), 'out')], message: /^pysandbox: cannot make or read --out .*a-file\/out: ENOTDIR/ }
  ]
  for (const { argv, stdin, message } of table) {
    const stderr = new PassThrough()
    let err = ''
    stderr.on('data', (chunk: Buffer) => { err += chunk.toString() })
    const code = await main(['run', script, '--url', url, ...argv], { stdin: stdin ?? Readable.from([]), stdout: new PassThrough(), stderr, env: {} })
    t.equal(code, EXIT.usage, argv.join(' '))
    t.match(err, message, argv.join(' '))
  }
  t.equal(fake.runs.length, 0, 'nothing was sent')
})

/** A server that answers every request with this 200 reply (whatever a server may send), after
 *  `meanwhile` (what another local process may do while the request is in flight). */
async function replying (t: Test, reply: Record<string, unknown>, meanwhile?: () => void): Promise<string> {
  return await listen(t, (_request, response) => {
    meanwhile?.()
    response.setHeader('content-type', 'application/json')
    response.end(JSON.stringify({ result: 'done', stdout: '', stderr: '', backend: 'nsjail', ...reply }))
  })
}

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d])

function returned (path: unknown, content: string | Buffer = 'x', mediaType = 'text/plain'): Record<string, unknown> {
  return typeof content === 'string'
    ? { path, size: Buffer.byteLength(content), mediaType, encoding: 'utf8', content }
    : { path, size: content.length, mediaType, encoding: 'base64', content: content.toString('base64') }
}

t.test('without --out: each returned file named on stderr, none saved; left-out ones reported', async t => {
  const url = await replying(t, {
    files: [returned('figures/1.png', PNG, 'image/png'), returned('report.csv', 'a,b\n')],
    filesLeftOut: [{ path: 'link', reason: 'a symbolic link (not followed)' }]
  })
  t.same(await cli(['run', script, '--url', url]), {
    code: EXIT.ok,
    stdout: '"done"\n',
    stderr: 'pysandbox: returned figures/1.png (12 bytes); use --out DIR to save it\n' +
      'pysandbox: returned report.csv (4 bytes); use --out DIR to save it\n' +
      'pysandbox: left out link: a symbolic link (not followed)\n'
  })
})

t.test('--out: every returned file at its path under DIR, directories made, bytes exact', async t => {
  const out = join(mkdtempSync(join(tmpdir(), 'pysandbox-client-out-')), 'new', 'results')
  const url = await replying(t, {
    files: [
      returned('figures/1.png', PNG, 'image/png'),
      returned('sub/dir/deep.csv', 'a,b\n1,2\n', 'text/csv'),
      returned('sub/second.csv', 'c\n', 'text/csv'),
      returned('données/é ✓.txt', 'héllo\n'),
      returned('..data', 'dots in a name are a name'),
      returned('empty.json', '', 'application/json')
    ],
    filesLeftOut: [{ path: 'fifo', reason: 'a FIFO' }]
  })
  const ran = await cli(['run', script, '--url', url, '--out', out])
  t.equal(ran.code, EXIT.ok, ran.stderr)
  t.equal(ran.stdout, '"done"\n')
  t.equal(ran.stderr, [
    `pysandbox: wrote ${out}/figures/1.png (12 bytes, image/png)`,
    `pysandbox: wrote ${out}/sub/dir/deep.csv (8 bytes, text/csv)`,
    `pysandbox: wrote ${out}/sub/second.csv (2 bytes, text/csv)`,
    `pysandbox: wrote ${out}/données/é ✓.txt (7 bytes, text/plain)`,
    `pysandbox: wrote ${out}/..data (25 bytes, text/plain)`,
    `pysandbox: wrote ${out}/empty.json (0 bytes, application/json)`,
    'pysandbox: left out fifo: a FIFO', ''
  ].join('\n'))
  t.same(readFileSync(join(out, 'figures/1.png')), PNG)
  t.equal(readFileSync(join(out, 'sub/dir/deep.csv'), 'utf8'), 'a,b\n1,2\n')
  t.equal(readFileSync(join(out, 'données/é ✓.txt'), 'utf8'), 'héllo\n')
  t.equal(readFileSync(join(out, 'empty.json'), 'utf8'), '')
  t.equal(statSync(join(out, 'figures/1.png')).mode & 0o111, 0, 'nothing is made executable')
})

t.test('--out refuses what is not a place under DIR, and never follows or replaces what is there (deny/allow pairs)', async t => {
  const base = mkdtempSync(join(tmpdir(), 'pysandbox-client-hostile-'))
  const out = join(base, 'out')
  const outside = join(base, 'outside')
  mkdirSync(out)
  mkdirSync(outside)
  writeFileSync(join(outside, 'target.txt'), 'outside, untouched')
  // DIR must be empty when the command starts; another local process plants these while the
  // request is in flight, after that check (and before any file is written).
  let planted = 0
  const plant = (): void => {
    planted++
    symlinkSync(outside, join(out, 'linkdir'))
    symlinkSync(join(outside, 'target.txt'), join(out, 'link.txt'))
    symlinkSync(join(outside, 'dangling.txt'), join(out, 'dangling.txt'))
    writeFileSync(join(out, 'existing.txt'), 'kept')
    mkdirSync(join(out, 'existing-dir'))
  }
  // Each hostile path, then the harmless one it is the twin of.
  const pairs: Array<[unknown, string, string]> = [
    ['../x', 'x', 'has an empty, "." or ".." part'],
    ['../outside/target.txt', 'outside/target.txt', 'has an empty, "." or ".." part'],
    [join(outside, 'abs.txt'), 'abs.txt', 'is absolute'],
    ['a/../../x', 'a/x', 'has an empty, "." or ".." part'],
    ['a/../b', 'a/b', 'has an empty, "." or ".." part'],
    ['./c', 'c', 'has an empty, "." or ".." part'],
    ['d//e', 'd/e', 'has an empty, "." or ".." part'],
    ['f/', 'f', 'has an empty, "." or ".." part'],
    ['', 'g', 'has an empty, "." or ".." part'],
    ['.', 'h', 'has an empty, "." or ".." part'],
    ['nul\u0000.txt', 'nul.txt', 'holds a control character (NUL, newline, ...) or is not valid Unicode'],
    ['line\nfeed.txt', 'linefeed.txt', 'holds a control character (NUL, newline, ...) or is not valid Unicode'],
    ['c1\u009b.txt', 'c1.txt', 'holds a control character (NUL, newline, ...) or is not valid Unicode'],
    ['lone\ud800.txt', 'lone.txt', 'holds a control character (NUL, newline, ...) or is not valid Unicode'],
    ['linkdir/planted.txt', 'realdir/planted.txt', 'linkdir is already there and is not a directory (a link is never followed)'],
    ['link.txt', 'link2.txt', 'a symbolic link is already there (never followed)'],
    ['dangling.txt', 'dangling2.txt', 'a symbolic link is already there (never followed)'],
    ['existing.txt', 'existing2.txt', 'it already exists (nothing is overwritten)'],
    ['existing-dir', 'existing-dir/inside.txt', 'it already exists (nothing is overwritten)'],
    ['existing.txt/under', 'existing2-dir/under', 'existing.txt is already there and is not a directory (a link is never followed)']
  ]
  const url = await replying(t, { files: pairs.flatMap(([bad, good]) => [returned(bad, `bad ${String(bad)}`), returned(good, `good ${good}`)]) }, plant)
  const ran = await cli(['run', script, '--url', url, '--out', out])
  t.equal(planted, 1, 'planted once, while the request was in flight')
  t.equal(ran.code, EXIT.failed, 'exit 1: files were refused')
  t.equal(ran.stdout, '"done"\n', 'the result is printed all the same')
  const lines = ran.stderr.split('\n')
  for (const [bad, good, reason] of pairs) {
    // eslint-disable-next-line no-control-regex
    const shown = String(bad).replace(/[\u0000-\u001f\u007f-\u009f]|\p{Cs}/gu, c => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
    t.ok(lines.includes(`pysandbox: did not save ${shown}: ${reason}`), `deny ${JSON.stringify(bad)}: ${reason}`)
    t.equal(readFileSync(join(out, good), 'utf8'), `good ${good}`, `allow ${good}`)
  }
  t.same(readdirSync(outside).sort(), ['target.txt'], 'nothing was written outside DIR')
  t.equal(readFileSync(join(outside, 'target.txt'), 'utf8'), 'outside, untouched')
  t.equal(readFileSync(join(out, 'existing.txt'), 'utf8'), 'kept')
  t.ok(lstatSync(join(out, 'link.txt')).isSymbolicLink(), 'the planted link is still a link')
  t.notOk(existsSync(join(base, 'x')))
  t.equal(lines.filter(line => line.startsWith('pysandbox: did not save')).length, pairs.length)
})

t.test('--out DIR must be new or empty: one already in use exits 2, nothing sent or written (deny/allow pairs)', async t => {
  const base = mkdtempSync(join(tmpdir(), 'pysandbox-client-used-'))
  let requests = 0
  const url = await replying(t, { files: [returned('conftest.py', 'import os\n'), returned('.git/hooks/pre-commit', 'evil\n')] }, () => { requests++ })
  const refuse = async (out: string, what: string): Promise<void> => {
    const before = readdirSync(out, { recursive: true }).map(String).sort()
    const sent = requests
    const ran = await cli(['run', script, '--url', url, '--out', out])
    t.same(ran, {
      code: EXIT.usage,
      stdout: '',
      stderr: `pysandbox: --out ${out} is not empty: returned files are the script's, so they go to a new or empty directory\n`
    }, `deny ${what}`)
    t.equal(requests, sent, `deny ${what}: nothing sent`)
    t.same(readdirSync(out, { recursive: true }).map(String).sort(), before, `deny ${what}: nothing written`)
  }
  const allow = async (out: string, what: string): Promise<void> => {
    const sent = requests
    const ran = await cli(['run', script, '--url', url, '--out', out])
    t.equal(ran.code, EXIT.ok, `allow ${what}: ${ran.stderr}`)
    t.equal(requests, sent + 1, `allow ${what}: sent`)
    t.equal(readFileSync(join(out, 'conftest.py'), 'utf8'), 'import os\n', `allow ${what}: written`)
    t.equal(readFileSync(join(out, '.git/hooks/pre-commit'), 'utf8'), 'evil\n', `allow ${what}: written`)
  }
  const made = (name: string, fill: (dir: string) => void): string => {
    const dir = join(base, name)
    mkdirSync(dir)
    fill(dir)
    return dir
  }
  // Each directory in use, then its harmless twin.
  const project = made('project', dir => { mkdirSync(join(dir, '.git/hooks'), { recursive: true }) })
  await refuse(project, 'a DIR holding .git/')
  t.notOk(existsSync(join(project, 'conftest.py')), 'no conftest.py planted in the project')
  await allow(join(base, 'new', 'results'), 'a new DIR (its parents made too)')
  await refuse(made('dotfile', dir => { writeFileSync(join(dir, '.envrc'), 'export A=1\n') }), 'a DIR holding only a dotfile')
  const empty = made('empty', () => {})
  await allow(empty, 'an empty DIR')
  await refuse(made('dangling', dir => { symlinkSync(join(base, 'nowhere'), join(dir, 'link')) }), 'a DIR holding only a dangling link')
  await refuse(empty, 'the DIR of an earlier run')
  t.equal(readFileSync(join(empty, 'conftest.py'), 'utf8'), 'import os\n', 'the earlier run\'s files are unchanged')
})

t.test('--out: a reply that is not what PySandbox sends is refused, and nothing it says reaches the terminal raw', async t => {
  const out = mkdtempSync(join(tmpdir(), 'pysandbox-client-odd-'))
  const url = await replying(t, {
    files: [
      null,
      'figures/1.png',
      { content: 'x', encoding: 'utf8' },
      { path: 'no-content.txt', encoding: 'utf8' },
      { path: 'hex.txt', content: '00', encoding: 'hex' },
      returned(`${'n'.repeat(300)}.txt`),
      returned(`${'d'.repeat(300)}/x.txt`),
      returned('\u001b]0;owned\u0007title.txt'),
      returned('bidi\u202etxt.exe', 'x', 'text/plain\u001b[2J'),
      { path: 'no-type.txt', content: 'x', encoding: 'utf8' }
    ],
    filesLeftOut: [{ path: 'evil\u001b[31m', reason: 'red\u009b1m' }, null]
  })
  const ran = await cli(['run', script, '--url', url, '--out', out])
  t.equal(ran.code, EXIT.failed)
  t.equal(ran.stderr, [
    'pysandbox: did not save files[0]: not a file as PySandbox returns one (a path, and content in utf8 or base64)',
    'pysandbox: did not save files[1]: not a file as PySandbox returns one (a path, and content in utf8 or base64)',
    'pysandbox: did not save files[2]: not a file as PySandbox returns one (a path, and content in utf8 or base64)',
    'pysandbox: did not save no-content.txt: not a file as PySandbox returns one (a path, and content in utf8 or base64)',
    'pysandbox: did not save hex.txt: not a file as PySandbox returns one (a path, and content in utf8 or base64)',
    `pysandbox: did not save ${'n'.repeat(300)}.txt: cannot write ${out}/${'n'.repeat(300)}.txt: ENAMETOOLONG: name too long, open '${out}/${'n'.repeat(300)}.txt'`,
    `pysandbox: did not save ${'d'.repeat(300)}/x.txt: cannot write ${out}/${'d'.repeat(300)}/x.txt: ENAMETOOLONG: name too long, mkdir '${out}/${'d'.repeat(300)}'`,
    'pysandbox: did not save \\u001b]0;owned\\u0007title.txt: holds a control character (NUL, newline, ...) or is not valid Unicode',
    `pysandbox: wrote ${out}/bidi\\u202etxt.exe (1 bytes, text/plain\\u001b[2J)`,
    `pysandbox: wrote ${out}/no-type.txt (1 bytes, no media type)`,
    'pysandbox: left out evil\\u001b[31m: red\\u009b1m',
    'pysandbox: left out undefined: undefined',
    ''
  ].join('\n'))
  // eslint-disable-next-line no-control-regex
  t.notMatch(ran.stderr, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/u, 'no control character but the newlines')
})

t.test('--out with a reply of no files, or files that are not a list: nothing written', async t => {
  const out = mkdtempSync(join(tmpdir(), 'pysandbox-client-none-'))
  for (const reply of [{}, { files: 'figures/1.png', filesLeftOut: { path: 'x' } }]) {
    t.same(await cli(['run', script, '--url', await replying(t, reply), '--out', out]), { code: EXIT.ok, stdout: '"done"\n', stderr: '' })
  }
  t.same(readdirSync(out), [])
})

t.test('a failed script\'s reply is not searched for files', async t => {
  const out = mkdtempSync(join(tmpdir(), 'pysandbox-client-failed-'))
  const url = await listen(t, (_request, response) => {
    response.statusCode = 422
    response.setHeader('content-type', 'application/json')
    response.end(JSON.stringify({ code: 'MAIN_RAISED', message: 'ValueError: late', files: [returned('x.txt')] }))
  })
  t.same(await cli(['run', script, '--url', url, '--out', out]), { code: EXIT.failed, stdout: '', stderr: 'MAIN_RAISED: ValueError: late\n' })
  t.same(readdirSync(out), [])
})

t.test('returnedPathProblem: deny/allow pairs', async t => {
  const root = '/srv/out'
  const pairs: Array<[string, string]> = [
    ['../x', 'x'], ['/abs', 'abs'], ['a/../../x', 'a/x'], ['a/..', 'a'], ['a/.', 'a/b'], ['a//b', 'a/b'],
    ['', 'e'], ['\u0000', 'z'], ['tab\tname', 'tab name'], ['del\u007f', 'del'], ['\udc80', '\u{1f600}']
  ]
  for (const [bad, good] of pairs) {
    t.type(returnedPathProblem(bad, root), 'string', `deny ${JSON.stringify(bad)}`)
    t.equal(returnedPathProblem(good, root), undefined, `allow ${JSON.stringify(good)}`)
  }
  for (const good of ['figures/1.png', 'données/é.csv', '..data', 'a..b/c', '.hidden', '日本語/ファイル.txt', 'x\\..\\y']) {
    t.equal(returnedPathProblem(good, root), undefined, `allow ${good}`)
    t.equal(returnedPathProblem(good, '/'), undefined, `allow ${good} under /`)
  }
})

t.test('parseCommand: --json; --request-timeout in seconds (decimals, at most FETCH_WAIT_MAX_S) in milliseconds', async t => {
  const url = new URL('http://localhost:8080/execute')
  t.same(parseCommand(['run', 'a.py', '--json'], {}), { file: 'a.py', url, files: [], json: true })
  const table: Array<[string[], number]> = [
    [['--request-timeout', '0.5'], 500],
    [['--request-timeout', '.25'], 250],
    [['--request-timeout=2'], 2000],
    [['--request-timeout', '0.001'], 1],
    [['--request-timeout', String(FETCH_WAIT_MAX_S)], FETCH_WAIT_MAX_S * 1000],
    [['--request-timeout', `${FETCH_WAIT_MAX_S}.0004`], FETCH_WAIT_MAX_S * 1000]
  ]
  for (const [argv, ms] of table) t.same(parseCommand(['run', 'a.py', ...argv], {}), { file: 'a.py', url, files: [], requestTimeoutMs: ms }, argv.join(' '))
  t.match(parseCommand(['run', 'a.py', '--timeout', '5', '--request-timeout', '10'], {}), { limits: { wallMs: 5000 }, requestTimeoutMs: 10_000 }, 'the run\'s limit and the request\'s are apart')
  t.notOk('json' in parseCommand(['run', 'a.py'], {}) || 'requestTimeoutMs' in parseCommand(['run', 'a.py'], {}), 'neither given: neither there')
})

t.test('bad --request-timeout values and --json with a value are usage errors (exit 2), nothing sent', async t => {
  const { url, seen } = await recording(t)
  const range = `at least 0.001, at most ${FETCH_WAIT_MAX_S}`
  const table: Array<[string[], RegExp | string]> = [
    [['--request-timeout', '0'], `pysandbox: --request-timeout 0: give seconds, a number above 0 such as 2 or 0.5 (${range})\nusage: `],
    [['--request-timeout', '0.0004'], 'pysandbox: --request-timeout 0.0004: give seconds'],
    [['--request-timeout', `${FETCH_WAIT_MAX_S}.001`], `pysandbox: --request-timeout ${FETCH_WAIT_MAX_S}.001: give seconds`],
    [['--request-timeout', '3600'], `pysandbox: --request-timeout 3600: give seconds, a number above 0 such as 2 or 0.5 (${range})`],
    [['--request-timeout=-1'], 'pysandbox: --request-timeout -1: give seconds'],
    [['--request-timeout', 'ten'], 'pysandbox: --request-timeout ten: give seconds'],
    [['--request-timeout', '1e3'], 'pysandbox: --request-timeout 1e3: give seconds'],
    [['--request-timeout', ''], 'pysandbox: --request-timeout : give seconds'],
    [['--request-timeout', '9'.repeat(20)], /^pysandbox: --request-timeout 9+: give seconds/],
    [['--request-timeout'], /^pysandbox: Option '--request-timeout <value>' argument missing/],
    [['--json=yes'], /^pysandbox: Option '--json' does not take an argument/]
  ]
  for (const [argv, message] of table) {
    const ran = await cli(['run', script, '--url', url, ...argv])
    t.equal(ran.code, EXIT.usage, argv.join(' '))
    t.equal(ran.stdout, '')
    t.match(ran.stderr, typeof message === 'string' ? new RegExp(`^${message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`) : message, argv.join(' '))
    t.match(ran.stderr, /\nusage: pysandbox run/, 'with the usage')
  }
  t.equal(seen.length, 0, 'nothing was sent')
})

/** A server that answers every request with `status` and exactly `text`. */
async function answering (t: Test, status: number, text: string, headers: Record<string, string> = {}): Promise<string> {
  return await listen(t, (_request, response) => {
    response.statusCode = status
    for (const [name, value] of Object.entries({ 'content-type': 'application/json', ...headers })) response.setHeader(name, value)
    response.end(text)
  })
}

t.test('--json: the reply body as sent, on one line of stdout, and nothing else printed; exit 0 or 1 as without it', async t => {
  const success = JSON.stringify({ result: { rows: [1, 'two'] }, stdout: 'printed\n', stderr: 'warned\n', stdoutTruncated: true, backend: 'nsjail', durationMs: 12, files: [returned('x.csv', 'a\n')] })
  t.same(await cli(['run', script, '--url', await answering(t, 200, success), '--json']), { code: EXIT.ok, stdout: `${success}\n`, stderr: '' }, 'success: no output, no truncation note, no file listed')

  const asSent = '{"result":[1.0, 1e+22, "\\u00e9"],"stdout":"","stderr":"","backend":"nsjail"}'
  t.same(await cli(['run', script, '--url', await answering(t, 200, asSent), '--json']), { code: EXIT.ok, stdout: `${asSent}\n`, stderr: '' }, 'as sent: not re-serialized')

  const raised = JSON.stringify({ statusCode: 422, error: 'Unprocessable Entity', code: 'MAIN_RAISED', message: 'KeyError: \'b\'', exception: 'KeyError', traceback: 'Traceback (most recent call last):\nKeyError: \'b\'\n', stdout: 'before\n', stderr: '', requestId: 'r-1' })
  const failed = await cli(['run', script, '--url', await answering(t, 422, raised), '--json'])
  t.same(failed, { code: EXIT.failed, stdout: `${raised}\n`, stderr: '' }, 'a failed script: the error body, exit 1')
  t.match(JSON.parse(failed.stdout), { code: 'MAIN_RAISED', traceback: /^Traceback/ })

  const busy = JSON.stringify({ statusCode: 503, error: 'Service Unavailable', code: 'BUSY', message: 'retry later', requestId: 'r-2' })
  t.same(await cli(['run', script, '--url', await answering(t, 503, busy, { 'retry-after': '1' }), '--json']), { code: EXIT.failed, stdout: `${busy}\n`, stderr: '' }, 'a refusal: exit 1')
  const unauthorized = JSON.stringify({ statusCode: 401, error: 'Unauthorized', code: 'UNAUTHORIZED', message: 'this server needs an API key', requestId: 'r-3' })
  t.same(await cli(['run', script, '--url', await answering(t, 401, unauthorized), '--json'], { env: { PYSANDBOX_KEY: KEY } }), { code: EXIT.failed, stdout: `${unauthorized}\n`, stderr: '' }, '401: no hint')
})

t.test('--json: a body over several lines is put on one line as it is; whatever looks like a key is hidden, wherever it is', async t => {
  const pretty = JSON.stringify({ detail: 'bad gateway', retry: [1, 2] }, null, 2)
  t.same(await cli(['run', script, '--url', await answering(t, 502, `${pretty}\r\n`), '--json']), { code: EXIT.failed, stdout: `${pretty.replace(/\n/g, ' ')} \n`, stderr: '' }, 'a proxy\'s pretty JSON, on one line')
  const prettyOk = '{\n "result": 1.0,\n "n": 12345678901234567890123,\n "stdout": "",\n "stderr": ""\n}'
  const line = await cli(['run', script, '--url', await answering(t, 200, prettyOk), '--json'])
  t.same(line, { code: EXIT.ok, stdout: '{  "result": 1.0,  "n": 12345678901234567890123,  "stdout": "",  "stderr": "" }\n', stderr: '' }, 'numbers as sent (1.0 stays 1.0)')
  t.same(JSON.parse(line.stdout), JSON.parse(prettyOk), 'the same JSON')
  const quoting = { statusCode: 400, error: 'Bad Request', code: 'INVALID_REQUEST', message: `body.files[0].path "${KEY}/x" is under output/`, requestId: 'r' }
  const ran = await cli(['run', script, '--url', await answering(t, 400, JSON.stringify(quoting)), '--json'])
  t.same(ran, { code: EXIT.failed, stdout: `${JSON.stringify({ ...quoting, message: 'body.files[0].path "psk_(hidden)/x" is under output/' })}\n`, stderr: '' })
  keyNotPrinted(t, ran, 'a message quoting a key')
  const elsewhere = await cli(['run', script, '--url', await answering(t, 502, JSON.stringify({ detail: KEY, message: 1, more: { message: KEY } })), '--json'])
  keyNotPrinted(t, elsewhere, 'a key in any field of a foreign reply')
  t.same(JSON.parse(elsewhere.stdout), { detail: 'psk_(hidden)', message: 1, more: { message: 'psk_(hidden)' } })
})

t.test('--json with --out: returned files saved (noted on stderr), the body on stdout; a refused one exits 1', async t => {
  const base = mkdtempSync(join(tmpdir(), 'pysandbox-client-json-out-'))
  const reply = { files: [returned('figures/1.png', PNG, 'image/png'), returned('../escape.txt')] }
  const url = await replying(t, reply)
  const ran = await cli(['run', script, '--url', url, '--json', '--out', join(base, 'out')])
  t.equal(ran.code, EXIT.failed, 'a file not saved: exit 1')
  t.same(JSON.parse(ran.stdout), { result: 'done', stdout: '', stderr: '', backend: 'nsjail', ...reply })
  t.equal(ran.stderr, `pysandbox: wrote ${join(base, 'out')}/figures/1.png (12 bytes, image/png)\npysandbox: did not save ../escape.txt: has an empty, "." or ".." part\n`)
  t.same(readFileSync(join(base, 'out/figures/1.png')), PNG)
  const good = await cli(['run', script, '--url', await replying(t, { files: [returned('a.txt')] }), '--json', '--out', join(base, 'good')])
  t.equal(good.code, EXIT.ok, good.stderr)
  t.equal(readFileSync(join(base, 'good/a.txt'), 'utf8'), 'x')
  const failed = await cli(['run', script, '--url', await answering(t, 422, JSON.stringify({ code: 'MAIN_RAISED', message: 'late', files: [returned('b.txt')] })), '--json', '--out', join(base, 'failed')])
  t.same([failed.code, failed.stderr, readdirSync(join(base, 'failed'))], [EXIT.failed, '', []], 'an error reply: not searched for files')
})

t.test('--request-timeout: no reply in time (none at all, or a body that stalls) gives up, exit 2; in time: as without it', async t => {
  const held: Array<() => void> = []
  const silent = await listen(t, (request, response) => {
    request.resume()
    held.push(() => response.destroy())
  })
  t.teardown(() => { for (const release of held) release() })
  const started = Date.now()
  const ran = await cli(['run', script, '--url', silent, '--request-timeout', '0.3'])
  const took = Date.now() - started
  t.same(ran, { code: EXIT.usage, stdout: '', stderr: 'pysandbox: no reply within 0.3 s (--request-timeout): gave up on the request, and the server stops the run\n' })
  t.ok(took >= 250 && took < 2000, `gave up after ${took} ms`)

  const stalls = await listen(t, (_request, response) => {
    response.setHeader('content-type', 'application/json')
    response.write('{"result": ')
    held.push(() => response.destroy())
  })
  t.same(await cli(['run', script, '--url', stalls, '--request-timeout', '0.3', '--json']), { code: EXIT.usage, stdout: '', stderr: 'pysandbox: no reply within 0.3 s (--request-timeout): gave up on the request, and the server stops the run\n' }, 'the headers came, the body stalled')

  const breaks = await listen(t, (_request, response) => {
    response.setHeader('content-type', 'application/json')
    response.write('{"result": ')
    setTimeout(() => response.destroy(), 50)
  })
  const broke = await cli(['run', script, '--url', breaks, '--request-timeout', '5'])
  t.equal(broke.code, EXIT.usage)
  t.match(broke.stderr, new RegExp(`^pysandbox: the reply from ${breaks} broke off: \\S`), 'a body cut short: not a timeout')

  const { url } = await recording(t)
  t.same(await cli(['run', script, '--url', url, '--request-timeout', '5']), { code: EXIT.ok, stdout: '"done"\n', stderr: '' }, 'a reply in time')
  const port = createServer().listen(0, '127.0.0.1')
  await once(port, 'listening')
  const closed = `http://127.0.0.1:${(port.address() as { port: number }).port}`
  port.close()
  await once(port, 'close')
  t.same(await cli(['run', script, '--url', closed, '--request-timeout', '5']), { code: EXIT.usage, stdout: '', stderr: `pysandbox: cannot reach ${closed}: connect ECONNREFUSED ${closed.slice('http://'.length)}\n` }, 'no server: not a timeout')
})

t.test('--request-timeout: the server stops a run whose client gave up (queued or running)', async t => {
  const held = new HeldRun()
  const fake = new FakeBackend('nsjail', { run: held.run })
  const url = await serve(t, fake, { CONCURRENCY: '1', QUEUE_SIZE: '2' })
  const running = cli(['run', script, '--url', url, '--request-timeout', '0.5'])
  const run = await held.started()
  const queued = await cli(['run', script, '--url', url, '--request-timeout', '0.2'])
  t.equal(queued.code, EXIT.usage, 'given up while queued')
  t.equal((await running).code, EXIT.usage, 'given up while running')
  // The server sees the connection close a moment after the client gives up.
  while (run.signal?.aborted !== true) await new Promise(resolve => setTimeout(resolve, 10))
  t.pass('the running one\'s run was aborted')
  held.finish()
  t.equal(fake.runs.length, 1, 'the queued one never ran')
})

t.test('Node\'s fetch waits at most FETCH_WAIT_MAX_S for headers and between chunks: said as no reply, exit 2', async t => {
  const real = globalThis.fetch
  t.teardown(() => { globalThis.fetch = real })
  const undici = (code: string, message: string): Error => Object.assign(new TypeError(code === 'UND_ERR_BODY_TIMEOUT' ? 'terminated' : 'fetch failed'), { cause: Object.assign(new Error(message), { code }) })
  const said = `pysandbox: no reply from http://127.0.0.1:9 within ${FETCH_WAIT_MAX_S} s, the longest Node's fetch waits; the server stops the run\n`
  globalThis.fetch = async () => { throw undici('UND_ERR_HEADERS_TIMEOUT', 'Headers Timeout Error') }
  t.same(await cli(['run', script, '--url', 'http://127.0.0.1:9']), { code: EXIT.usage, stdout: '', stderr: said }, 'the headers')
  globalThis.fetch = async () => ({ text: async () => { throw undici('UND_ERR_BODY_TIMEOUT', 'Body Timeout Error') } }) as unknown as Response
  t.same(await cli(['run', script, '--url', 'http://127.0.0.1:9']), { code: EXIT.usage, stdout: '', stderr: said }, 'the body')
  globalThis.fetch = async () => { throw undici('UND_ERR_SOCKET', 'other side closed') }
  t.same(await cli(['run', script, '--url', 'http://127.0.0.1:9']), { code: EXIT.usage, stdout: '', stderr: 'pysandbox: cannot reach http://127.0.0.1:9: other side closed\n' }, 'another reason')
})
