// The replies of POST /execute: a success, and each script error as a 422 (the app with fake backends).
import t from 'tap'
import { limitsFrom, type RunOutcome, type ScriptErrorCode } from '../../src/backends/backend.js'
import { build, config, execute } from '../helpers/app.js'
import { FakeBackend, failure, success } from '../helpers/fake-backend.js'

t.test('200: result, output and the backend name; the script reaches the backend unchanged', async t => {
  const results: unknown[] = [{ msg: 'success', value: 42 }, [1, 'two', null], 'text', '', 0, 3.5, false, null, { nested: { rows: [[1], [2]] } }]
  for (const result of results) {
    const fake = new FakeBackend('nsjail', { run: success(result, { stdout: 'Hello from main!\n', stderr: 'warn\n', durationMs: 33 }) })
    const { app } = await build(t, { backends: [fake] })
    const script = 'def main():\n    print("Hello from main!")\n    return 42\n'
    const reply = await execute(app, { script })
    t.equal(reply.statusCode, 200, JSON.stringify(result))
    t.same(reply.json(), { result, stdout: 'Hello from main!\n', stderr: 'warn\n', backend: 'nsjail' }, JSON.stringify(result))
    t.equal(fake.runs.length, 1)
    t.equal(fake.runs[0]?.script, script)
    t.equal(fake.runs[0]?.slot, 0)
    t.equal(fake.runs[0]?.signal?.aborted, false)
  }
})

t.test('truncation flags appear only for the stream that was cut', async t => {
  const table = [
    { flags: { stdoutTruncated: false, stderrTruncated: false }, shown: {} },
    { flags: { stdoutTruncated: true, stderrTruncated: false }, shown: { stdoutTruncated: true } },
    { flags: { stdoutTruncated: false, stderrTruncated: true }, shown: { stderrTruncated: true } },
    { flags: { stdoutTruncated: true, stderrTruncated: true }, shown: { stdoutTruncated: true, stderrTruncated: true } }
  ]
  for (const { flags, shown } of table) {
    for (const run of [success(1, flags), failure('MAIN_RAISED', 'boom', {}, flags)]) {
      const { app } = await build(t, { backends: [new FakeBackend('nsjail', { run })] })
      const body = (await execute(app)).json<Record<string, unknown>>()
      const present = Object.fromEntries(Object.entries(body).filter(([k]) => k.endsWith('Truncated')))
      t.same(present, shown, `${run.ok ? 'success' : 'failure'} ${JSON.stringify(flags)}`)
    }
  }
})

t.test('timings travel in the Server-Timing header, not in the body', async t => {
  const { app } = await build(t, { backends: [new FakeBackend('nsjail', { run: success(1, { durationMs: 33 }) })] })
  const reply = await execute(app)
  t.match(reply.headers['server-timing'], /^queue;dur=\d+, sandbox;dur=33$/)
  t.notOk('durationMs' in reply.json<Record<string, unknown>>())
})

t.test('application/json with a charset is accepted', async t => {
  const { app } = await build(t)
  const reply = await execute(app, { script: 'x' }, { 'content-type': 'application/json; charset=utf-8' })
  t.equal(reply.statusCode, 200)
})

t.test('a body of exactly LIMIT_BODY_BYTES is accepted', async t => {
  const { app } = await build(t, { env: { LIMIT_BODY_BYTES: '1024' } })
  const script = 'x'.repeat(1024 - JSON.stringify({ script: '' }).length)
  t.equal(JSON.stringify({ script }).length, 1024)
  const reply = await execute(app, { script })
  t.equal(reply.statusCode, 200)
})

t.test('fields the backend adds beyond the contract do not leak into the reply', async t => {
  const leaky: RunOutcome = Object.assign(success(1), { hostPath: '/srv/secret' })
  const leakyFailure = failure('MAIN_RAISED', 'boom', { exception: 'ValueError', hostPath: '/srv/secret' })
  for (const run of [leaky, leakyFailure]) {
    const { app } = await build(t, { backends: [new FakeBackend('nsjail', { run })] })
    const reply = await execute(app)
    t.notOk(reply.body.includes('/srv/secret'), `${reply.statusCode}: ${reply.body}`)
  }
})

t.test('422: a failing outcome becomes the error body with its details, output and backend', async t => {
  const table: Array<{ code: ScriptErrorCode, details: Record<string, string | number> }> = [
    { code: 'SYNTAX_ERROR', details: { line: 3, column: 7 } },
    { code: 'MISSING_MAIN', details: {} },
    { code: 'MAIN_NOT_CALLABLE', details: {} },
    { code: 'MAIN_RAISED', details: { exception: 'ZeroDivisionError', traceback: 'File "<script>", line 2, in main' } },
    { code: 'RESULT_NOT_JSON', details: {} },
    { code: 'RESULT_TOO_LARGE', details: {} },
    { code: 'TIME_LIMIT_EXCEEDED', details: {} },
    { code: 'MEMORY_LIMIT_EXCEEDED', details: {} },
    { code: 'CRASHED', details: { signal: 'SIGSEGV' } },
    { code: 'CRASHED', details: { exitCode: 3 } }
  ]
  for (const { code, details } of table) {
    const output = { stdout: 'partial\n', stderr: 'Traceback\n', stderrTruncated: true }
    const fake = new FakeBackend('unshare', { run: failure(code, `message for ${code}`, details, { ...output, durationMs: 12 }) })
    const { app } = await build(t, { backends: [fake] })
    const reply = await execute(app)
    t.equal(reply.statusCode, 422, code)
    t.match(reply.json(), {
      statusCode: 422,
      error: 'Unprocessable Entity',
      code,
      message: `message for ${code}`,
      ...details,
      ...output,
      backend: 'unshare'
    }, `${code} ${JSON.stringify(details)}`)
  }
})

t.test('input and stdin reach the backend as sent: input present (even null) or absent, stdin as text', async t => {
  const fake = new FakeBackend('nsjail')
  const { app } = await build(t, { backends: [fake] })
  const table: Array<{ body: Record<string, unknown>, input: unknown, stdin: unknown }> = [
    { body: { script: 'x' }, input: undefined, stdin: undefined },
    { body: { script: 'x', input: null }, input: { value: null }, stdin: undefined },
    { body: { script: 'x', input: { a: [1, 'b'] }, stdin: '' }, input: { value: { a: [1, 'b'] } }, stdin: '' },
    { body: { script: 'x', stdin: 'line\n' }, input: undefined, stdin: 'line\n' }
  ]
  for (const [i, { body, input, stdin }] of table.entries()) {
    t.equal((await execute(app, body)).statusCode, 200, JSON.stringify(body))
    t.same(fake.runs[i]?.input, input, `${JSON.stringify(body)}: input`)
    t.equal(fake.runs[i]?.stdin, stdin, `${JSON.stringify(body)}: stdin`)
  }
})

t.test('deny: input nested past its bound, or stdin that is not text: 400 naming the field, nothing run', async t => {
  const fake = new FakeBackend('nsjail')
  const { app } = await build(t, { backends: [fake] })
  const nested = (depth: number): unknown => depth === 0 ? 1 : [nested(depth - 1)]
  const deep = await execute(app, { script: 'x', input: nested(201) })
  t.equal(deep.statusCode, 400)
  t.match(deep.json(), { code: 'INVALID_REQUEST', message: 'body.input is nested deeper than 200 levels' })
  for (const stdin of [1, null, ['a'], { a: 1 }]) {
    const reply = await execute(app, { script: 'x', stdin })
    t.match(reply.json(), { statusCode: 400, code: 'INVALID_REQUEST', message: 'body.stdin must be string' }, JSON.stringify(stdin))
  }
  t.equal(fake.runs.length, 0)
  t.equal((await execute(app, { script: 'x', input: nested(200) })).statusCode, 200, 'allow: exactly 200 levels')
})

t.test('the run always gets its limits: the defaults when the body asks for none, what it asks for within the ceilings; over one, a 400 and nothing runs', async t => {
  const fake = new FakeBackend('nsjail')
  const env = { LIMIT_MEMORY_MB_MAX: '1024' }
  const { app } = await build(t, { env, backends: [fake] })
  const defaults = limitsFrom(config(env))
  t.equal((await execute(app, { script: 'x' })).statusCode, 200)
  t.same(fake.runs[0]?.limits, defaults, 'none asked: the defaults, whole')
  t.equal((await execute(app, { script: 'x', limits: { wallMs: 500, cpuSeconds: 2, memoryMb: 1024, processes: 8, outputBytes: 4096 } })).statusCode, 200)
  t.same(fake.runs[1]?.limits, { ...defaults, wallTimeMs: 500, cpuSeconds: 2, memoryMiB: 1024, processes: 8, outputBytes: 4096 }, 'each asked for, the rest the defaults')
  const over = await execute(app, { script: 'x', limits: { memoryMb: 1025 } })
  t.equal(over.statusCode, 400)
  t.match(over.json(), { code: 'INVALID_REQUEST', message: 'body.limits.memoryMb is 1025, above this server\'s ceiling (LIMIT_MEMORY_MB_MAX) of 1024' })
  t.equal(fake.runs.length, 2, 'the refused request did not run')
})

t.test('files reach the backend decoded; files returned and left out reach the reply; absent, neither field', async t => {
  const returned = [{ path: 'figures/1.png', size: 3, mediaType: 'image/png', encoding: 'base64' as const, content: 'AAEC' }]
  const filesLeftOut = [{ path: 'env', reason: 'a symbolic link (not followed)' }]
  const fake = new FakeBackend('nsjail', { run: { ...success(1), files: returned, filesLeftOut } as RunOutcome })
  const { app } = await build(t, { backends: [fake] })
  const reply = await execute(app, { script: 'x', files: [{ path: 'a.csv', content: 'a,b\n' }, { path: 'd/b.bin', content: 'AAE=', encoding: 'base64' }] })
  t.equal(reply.statusCode, 200)
  t.same(fake.runs[0]?.files, [{ path: 'a.csv', content: Buffer.from('a,b\n') }, { path: 'd/b.bin', content: Buffer.from([0, 1]) }])
  t.same(reply.json(), { result: 1, files: returned, filesLeftOut, stdout: '', stderr: '', backend: 'nsjail' })
  await execute(app, { script: 'x' })
  t.equal(fake.runs[1]?.files, undefined, 'no files field: none sent')
})

t.test('deny: a bad file is a 400 naming it, and nothing runs', async t => {
  const fake = new FakeBackend('nsjail')
  const { app } = await build(t, { backends: [fake] })
  const cases: Array<[unknown, RegExp]> = [
    [[{ path: '../x', content: '' }], /^body\.files\[0\]\.path "\.\.\/x" is not normalised/],
    [[{ path: 'x' }], /^body\.files\/0 must have the field "content"|content/],
    [[{ path: 'x', content: '', encoding: 'hex' }], /encoding/],
    [[{ path: 'x', content: '', mode: 'rwx' }], /mode/],
    ['x', /files/],
    [Array.from({ length: 101 }, (_, i) => ({ path: `f${i}`, content: '' })), /the limit is 100 \(LIMIT_FILES_IN\)/]
  ]
  for (const [files, message] of cases) {
    const reply = await execute(app, { script: 'x', files })
    t.equal(reply.statusCode, 400, JSON.stringify(files).slice(0, 60))
    t.match(reply.json(), { code: 'INVALID_REQUEST', message }, reply.json<{ message: string }>().message)
  }
  t.equal(fake.runs.length, 0)
})
