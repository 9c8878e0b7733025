// The command-line client's logic, in process: arguments, where the script comes from, what is
// printed where, and the exit status for every kind of reply. A fake backend serves over HTTP.
import t, { type Test } from 'tap'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { buildApp } from '../../src/app.js'
import type { RunOutcome } from '../../src/backends/backend.js'
import { loadConfig } from '../../src/config.js'
import { DEFAULT_URL, EXIT, USAGE, main, parseCommand } from '../../src/client.js'
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

t.test('--help prints the usage and exits 0', async t => {
  for (const flag of ['--help', '-h']) t.same(await cli([flag]), { code: EXIT.ok, stdout: `${USAGE}\n`, stderr: '' })
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
    t.match(parseCommand(['run'], env), { help: false, file: '-', url: new URL('http://localhost:8080/execute') }, `default URL with ${JSON.stringify(env)}`)
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

  const held = new HeldRun()
  const busyUrl = await serve(t, new FakeBackend('nsjail', { run: held.run }), { CONCURRENCY: '1', QUEUE_SIZE: '0' })
  const first = cli(['run', script, '--url', busyUrl])
  await held.started()
  const busy = await cli(['run', script, '--url', busyUrl])
  held.finish()
  t.equal((await first).code, EXIT.ok)
  t.equal(busy.code, EXIT.failed)
  t.equal(busy.stderr, 'BUSY: every execution slot is taken and the wait queue is full; retry later\nretry after 1 s\n')

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
  const html = await listen(t, (_request, response) => { response.end('<html>') })
  const ran = await cli(['run', script, '--url', html])
  t.equal(ran.code, EXIT.usage)
  t.equal(ran.stderr, `pysandbox: ${html}/execute answered 200 without JSON: is it a PySandbox server?\n`)
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
