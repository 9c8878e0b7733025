import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { PassThrough } from 'node:stream'
import t, { type Test } from 'tap'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { buildApp, createBackends } from '../../src/app.js'
import type { ProbeReport, RunOutcome, RunRequest, SandboxBackend, ScriptErrorCode } from '../../src/backends/backend.js'
import { loadConfig, type BackendName } from '../../src/config.js'
import { FakeBackend, HeldRun, PASSING, failingProbe, failure, success } from '../helpers/fake-backend.js'
import { seriesValue } from '../helpers/prometheus.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** Quiet defaults for tests: rate limiting off unless a test turns it on. */
function config (env: Record<string, string> = {}): ReturnType<typeof loadConfig> {
  return loadConfig({ RATE_LIMIT_MAX: '0', CONCURRENCY: '4', QUEUE_SIZE: '8', ...env })
}

interface Built {
  app: FastifyInstance
  logs: Array<Record<string, unknown>>
}

async function build (t: Test, options: { env?: Record<string, string>, backends?: SandboxBackend[] } = {}): Promise<Built> {
  const logs: Array<Record<string, unknown>> = []
  const app = await buildApp({
    config: config(options.env),
    backends: options.backends ?? [new FakeBackend('nsjail')],
    logger: { level: 'info', stream: { write: (line: string) => { logs.push(JSON.parse(line) as Record<string, unknown>) } } }
  })
  t.teardown(async () => { await app.close() })
  return { app, logs }
}

async function execute (app: FastifyInstance, body: unknown = { script: 'def main():\n    return 42\n' }, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/execute', payload: JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } })
}

// ---------------------------------------------------------------------------------------------
// Success and script errors

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

// ---------------------------------------------------------------------------------------------
// Client errors: every 4xx row of the API's error table

interface ClientErrorCase {
  name: string
  request: InjectOptions
  status: number
  code: string
  message: RegExp
  headers?: Record<string, string>
}

const json = { 'content-type': 'application/json' }
const clientErrors: ClientErrorCase[] = [
  { name: 'invalid JSON', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": ' }, status: 400, code: 'INVALID_JSON', message: /not valid JSON/ },
  { name: 'empty body', request: { method: 'POST', url: '/execute', headers: json, payload: '' }, status: 400, code: 'INVALID_JSON', message: /the body is empty/ },
  { name: 'a __proto__ key is an unknown field, not a prototype', request: { method: 'POST', url: '/execute', headers: json, payload: '{"__proto__": {"x": 1}, "script": "x"}' }, status: 400, code: 'INVALID_REQUEST', message: /unknown field "__proto__"/ },
  { name: 'script missing', request: { method: 'POST', url: '/execute', headers: json, payload: '{}' }, status: 400, code: 'INVALID_REQUEST', message: /^body must have the field "script"$/ },
  { name: 'script a number', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": 1}' }, status: 400, code: 'INVALID_REQUEST', message: /^body\.script must be string$/ },
  { name: 'script null', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": null}' }, status: 400, code: 'INVALID_REQUEST', message: /^body\.script must be string$/ },
  { name: 'script an empty string', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": ""}' }, status: 400, code: 'INVALID_REQUEST', message: /^body\.script must not be empty$/ },
  { name: 'an unknown field beside script', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": "x", "timeout": 5}' }, status: 400, code: 'INVALID_REQUEST', message: /unknown field "timeout"/ },
  { name: 'a typo: the unknown field is named, not only the missing one', request: { method: 'POST', url: '/execute', headers: json, payload: '{"scirpt": "x"}' }, status: 400, code: 'INVALID_REQUEST', message: /unknown field "scirpt"/ },
  { name: 'an array body', request: { method: 'POST', url: '/execute', headers: json, payload: '[{"script": "x"}]' }, status: 400, code: 'INVALID_REQUEST', message: /^body must be object$/ },
  { name: 'a string body', request: { method: 'POST', url: '/execute', headers: json, payload: '"x"' }, status: 400, code: 'INVALID_REQUEST', message: /^body must be object$/ },
  { name: 'a null body', request: { method: 'POST', url: '/execute', headers: json, payload: 'null' }, status: 400, code: 'INVALID_REQUEST', message: /^body must be object$/ },
  { name: 'no body and no content type', request: { method: 'POST', url: '/execute' }, status: 400, code: 'INVALID_REQUEST', message: /^body must be object$/ },
  { name: 'a body shorter than its Content-Length', request: { method: 'POST', url: '/execute', headers: { ...json, 'content-length': '3' }, payload: '{"script": "x"}' }, status: 400, code: 'INVALID_REQUEST', message: /Content-Length/ },
  { name: 'an unknown path', request: { method: 'GET', url: '/nope' }, status: 404, code: 'NOT_FOUND', message: /^no route GET \/nope$/ },
  { name: 'an unknown path with a query', request: { method: 'POST', url: '/run?x=1' }, status: 404, code: 'NOT_FOUND', message: /^no route POST \/run$/ },
  { name: 'GET /execute', request: { method: 'GET', url: '/execute' }, status: 405, code: 'METHOD_NOT_ALLOWED', message: /method GET is not allowed on \/execute; allowed: POST/, headers: { allow: 'POST' } },
  { name: 'PUT /execute with a query', request: { method: 'PUT', url: '/execute?x=1', headers: json, payload: '{}' }, status: 405, code: 'METHOD_NOT_ALLOWED', message: /on \/execute;/, headers: { allow: 'POST' } },
  { name: 'DELETE /healthz', request: { method: 'DELETE', url: '/healthz' }, status: 405, code: 'METHOD_NOT_ALLOWED', message: /allowed: GET, HEAD/, headers: { allow: 'GET, HEAD' } },
  { name: 'POST /readyz', request: { method: 'POST', url: '/readyz', headers: json, payload: '{}' }, status: 405, code: 'METHOD_NOT_ALLOWED', message: /readyz/, headers: { allow: 'GET, HEAD' } },
  { name: 'a body over LIMIT_BODY_BYTES', request: { method: 'POST', url: '/execute', headers: json, payload: JSON.stringify({ script: 'x'.repeat(2000) }) }, status: 413, code: 'PAYLOAD_TOO_LARGE', message: /limit of 1024 bytes/ },
  { name: 'text/plain', request: { method: 'POST', url: '/execute', headers: { 'content-type': 'text/plain' }, payload: '{"script": "x"}' }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: /content type "text\/plain" is not supported/ },
  { name: 'a form', request: { method: 'POST', url: '/execute', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'script=x' }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: /x-www-form-urlencoded/ },
  { name: 'a body without a content type', request: { method: 'POST', url: '/execute', payload: '{"script": "x"}' }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: /content type "none" is not supported/ }
]

t.test('client errors: status, code, message, Fastify\'s shape, a request id, and nothing executed', async t => {
  const fake = new FakeBackend('nsjail')
  const { app } = await build(t, { env: { LIMIT_BODY_BYTES: '1024' }, backends: [fake] })
  for (const { name, request, status, code, message, headers = {} } of clientErrors) {
    const reply = await app.inject(request)
    t.equal(reply.statusCode, status, `${name}: status`)
    const body = reply.json<Record<string, unknown>>()
    t.match(body, { statusCode: status, code, message }, `${name}: body`)
    t.equal(body.error, { 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed', 413: 'Payload Too Large', 415: 'Unsupported Media Type' }[status], `${name}: reason phrase`)
    t.equal(body.requestId, reply.headers['x-request-id'], `${name}: request id`)
    t.match(reply.headers['content-type'], /^application\/json/, `${name}: JSON`)
    for (const [header, value] of Object.entries(headers)) t.equal(reply.headers[header], value, `${name}: ${header}`)
  }
  t.equal(fake.runs.length, 0, 'no client error reached the sandbox')
})

t.test('413 is answered before a too-large body is read whole', async t => {
  const { app } = await build(t, { env: { LIMIT_BODY_BYTES: '1024' } })
  const body = new PassThrough()
  body.write('{"script": "')
  // The stream never ends: only a refusal based on Content-Length can answer.
  const reply = await app.inject({ method: 'POST', url: '/execute', headers: { ...json, 'content-length': String(10 * 1024 * 1024) }, payload: body })
  t.equal(reply.statusCode, 413)
  t.equal(reply.json<{ code: string }>().code, 'PAYLOAD_TOO_LARGE')
})

// ---------------------------------------------------------------------------------------------
// Choosing the backend

async function readyz (app: FastifyInstance): Promise<{ statusCode: number, body: Record<string, unknown> }> {
  const reply = await app.inject({ method: 'GET', url: '/readyz' })
  return { statusCode: reply.statusCode, body: reply.json() }
}

t.test('the first passing backend serves; later ones are not probed', async t => {
  const nsjail = new FakeBackend('nsjail')
  const unshare = new FakeBackend('unshare')
  const direct = new FakeBackend('direct')
  const { app } = await build(t, { backends: [nsjail, unshare, direct] })
  t.equal((await execute(app)).json<{ backend: string }>().backend, 'nsjail')
  t.same([nsjail.probeCalls, unshare.probeCalls, direct.probeCalls], [1, 0, 0])
  t.same([nsjail.runs.length, unshare.runs.length, direct.runs.length], [1, 0, 0])
  const { statusCode, body } = await readyz(app)
  t.equal(statusCode, 200)
  t.same(body, { status: 'ready', backend: 'nsjail', probes: [{ backend: 'nsjail', ok: true, features: PASSING.features }] })
})

t.test('a backend failing its probe is skipped for the next that passes', async t => {
  const nsjail = new FakeBackend('nsjail', { probe: failingProbe('nsjail: cannot create user namespace') })
  const unshare = new FakeBackend('unshare')
  const { app, logs } = await build(t, { backends: [nsjail, unshare] })
  const reply = await execute(app)
  t.equal(reply.statusCode, 200)
  t.equal(reply.json<{ backend: string }>().backend, 'unshare')
  t.equal(nsjail.runs.length, 0, 'the failed backend never runs a script')
  const { statusCode, body } = await readyz(app)
  t.equal(statusCode, 200)
  t.same(body, {
    status: 'ready',
    backend: 'unshare',
    probes: [
      { backend: 'nsjail', ok: false, reason: 'nsjail: cannot create user namespace', features: {} },
      { backend: 'unshare', ok: true, features: PASSING.features }
    ]
  })
  t.ok(logs.some(l => l.level === 40 && /^serving with unshare: the stronger backends failed/.test(String(l.msg)) && l.backend === 'unshare'), 'the fallback to a weaker backend is logged as a warning')
})

t.test('no backend passing: /execute 503 SANDBOX_UNAVAILABLE, /readyz 503 with every reason, /healthz 200', async t => {
  const syncThrow: SandboxBackend = {
    name: 'direct',
    probe: () => { throw new Error('synchronous blow-up') },
    run: async () => success(1)
  }
  const backends = [
    new FakeBackend('nsjail', { probe: failingProbe('nsjail binary missing') }),
    new FakeBackend('unshare', { probe: async () => { throw new Error('asynchronous blow-up') } }),
    syncThrow
  ]
  const { app, logs } = await build(t, { backends })
  const reply = await execute(app)
  t.equal(reply.statusCode, 503)
  t.match(reply.json(), { statusCode: 503, error: 'Service Unavailable', code: 'SANDBOX_UNAVAILABLE', message: /nothing is executed/ })
  t.notOk(reply.headers['retry-after'], 'retrying will not help')
  t.same(backends.map(b => b instanceof FakeBackend ? b.runs.length : 0), [0, 0, 0])
  const { statusCode, body } = await readyz(app)
  t.equal(statusCode, 503)
  t.same(body, {
    status: 'unavailable',
    backend: null,
    probes: [
      { backend: 'nsjail', ok: false, reason: 'nsjail binary missing', features: {} },
      { backend: 'unshare', ok: false, reason: 'probe threw: asynchronous blow-up', features: {} },
      { backend: 'direct', ok: false, reason: 'probe threw: synchronous blow-up', features: {} }
    ]
  })
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200)
  t.ok(logs.some(l => l.level === 50 && /NO SANDBOX BACKEND PASSED.*permitted: nsjail, unshare, direct/.test(String(l.msg))), 'logged as an error')
})

t.test('no backend permitted at all: 503, and the log says none was permitted', async t => {
  const { app, logs } = await build(t, { backends: [] })
  t.equal((await execute(app)).statusCode, 503)
  t.same((await readyz(app)).body, { status: 'unavailable', backend: null, probes: [] })
  t.ok(logs.some(l => /permitted: none/.test(String(l.msg))))
})

t.test('a passing direct backend serves with a warning in /readyz, in every reply\'s backend, and in the log', async t => {
  const direct = new FakeBackend('direct', { probe: { ok: true, features: { isolation: 'NONE' } } })
  const { app, logs } = await build(t, { backends: [direct] })
  const { statusCode, body } = await readyz(app)
  t.equal(statusCode, 200)
  t.match(body, { status: 'ready', backend: 'direct', warning: /WITHOUT ISOLATION/ })
  t.equal((await execute(app)).json<{ backend: string }>().backend, 'direct')
  t.ok(logs.some(l => l.level === 40 && /DIRECT backend.*WITHOUT ISOLATION/.test(String(l.msg))), 'warned at start')
})

t.test('an isolating backend has no warning in /readyz', async t => {
  for (const name of ['nsjail', 'unshare'] as const) {
    const { app } = await build(t, { backends: [new FakeBackend(name)] })
    t.notOk('warning' in (await readyz(app)).body, name)
  }
})

t.test('createBackends: the permitted real backends by name, strongest first; direct only when permitted', async t => {
  const table: Array<{ env: Record<string, string>, names: BackendName[] }> = [
    { env: {}, names: ['nsjail', 'unshare'] },
    { env: { SANDBOX_BACKENDS: 'unshare,nsjail' }, names: ['nsjail', 'unshare'] },
    { env: { SANDBOX_BACKENDS: 'direct,unshare' }, names: ['unshare', 'direct'] },
    { env: { SANDBOX_BACKEND: 'unshare' }, names: ['unshare'] },
    { env: { SANDBOX_BACKEND: 'direct' }, names: ['direct'] }
  ]
  for (const { env, names } of table) {
    t.same(createBackends(loadConfig(env)).map(b => b.name), names, JSON.stringify(env))
  }
})

t.test('without injected backends the app probes the ones the configuration permits', async t => {
  // The real backend classes are replaced by recorders: unit tests probe no real sandbox.
  const probed: string[] = []
  const created: Array<{ name: string, options: { limits: { wallTimeMs: number } } }> = []
  const passing = new Set<string>()
  function recorder (name: BackendName): new (options: { limits: { wallTimeMs: number } }) => SandboxBackend {
    return class implements SandboxBackend {
      readonly name = name
      constructor (options: { limits: { wallTimeMs: number } }) { created.push({ name, options }) }
      async probe (): Promise<ProbeReport> {
        probed.push(name)
        return passing.has(name) ? PASSING : failingProbe(`${name} is not available here`)
      }

      async run (_request: RunRequest): Promise<RunOutcome> { return success(name) }
    }
  }
  const mocked = await t.mockImport<typeof import('../../src/app.js')>('../../src/app.js', {
    '../../src/backends/nsjail.js': { ...await import('../../src/backends/nsjail.js'), NsjailBackend: recorder('nsjail') },
    '../../src/backends/unshare.js': { ...await import('../../src/backends/unshare.js'), UnshareBackend: recorder('unshare') },
    '../../src/backends/direct.js': { ...await import('../../src/backends/direct.js'), DirectBackend: recorder('direct') }
  })
  const table: Array<{ name: string, env: Record<string, string>, pass: BackendName[], created: BackendName[], probed: BackendName[], serving: BackendName | null }> = [
    { name: 'default: nsjail then unshare, never direct', env: {}, pass: ['direct'], created: ['nsjail', 'unshare'], probed: ['nsjail', 'unshare'], serving: null },
    { name: 'nsjail passing', env: {}, pass: ['nsjail', 'unshare'], created: ['nsjail', 'unshare'], probed: ['nsjail'], serving: 'nsjail' },
    { name: 'pinned unshare failing: refuses, nsjail not tried', env: { SANDBOX_BACKEND: 'unshare' }, pass: ['nsjail'], created: ['unshare'], probed: ['unshare'], serving: null },
    { name: 'pinned unshare passing', env: { SANDBOX_BACKEND: 'unshare' }, pass: ['unshare'], created: ['unshare'], probed: ['unshare'], serving: 'unshare' },
    { name: 'direct permitted and the only one passing', env: { SANDBOX_BACKENDS: 'direct,unshare,nsjail' }, pass: ['direct'], created: ['nsjail', 'unshare', 'direct'], probed: ['nsjail', 'unshare', 'direct'], serving: 'direct' }
  ]
  for (const row of table) {
    probed.length = 0
    created.length = 0
    passing.clear()
    for (const name of row.pass) passing.add(name)
    const app = await mocked.buildApp({ config: config({ LIMIT_WALL_MS: '1234', ...row.env }) })
    t.teardown(async () => { await app.close() })
    t.same(created.map(c => c.name), row.created, `${row.name}: created`)
    t.same(probed, row.probed, `${row.name}: probed`)
    t.ok(created.every(c => c.options.limits.wallTimeMs === 1234), `${row.name}: the configured limits reach the backend`)
    const reply = await execute(app)
    if (row.serving === null) {
      t.equal(reply.statusCode, 503, `${row.name}: refuses`)
      t.equal(reply.json<{ code: string }>().code, 'SANDBOX_UNAVAILABLE')
      t.equal((await readyz(app)).statusCode, 503)
    } else {
      t.equal(reply.statusCode, 200, `${row.name}: serves`)
      t.equal(reply.json<{ backend: string }>().backend, row.serving)
    }
  }
})

/** A probe that answers from a script of reports, then keeps giving the last one. */
function scripted (...reports: Array<ProbeReport | Error>): () => Promise<ProbeReport> {
  let next = 0
  return async () => {
    const report = reports[Math.min(next++, reports.length - 1)]
    if (report instanceof Error) throw report
    return report as ProbeReport
  }
}

/** `promise`, or a rejection naming `what` after `ms`: a missing event fails the test instead of hanging it. */
async function within<T> (promise: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms) })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

async function until (condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

t.test('a chosen backend failing its re-probe stops service until it passes again', async t => {
  let current: ProbeReport = PASSING
  const fake = new FakeBackend('nsjail', { probe: async () => current })
  const { app, logs } = await build(t, { env: { PROBE_INTERVAL_MS: '20' }, backends: [fake] })
  t.equal((await execute(app)).statusCode, 200, 'serving after the start-up probe')

  current = failingProbe('seccomp filter missing')
  await until(() => !app.sandbox.ready, 'the failed re-probe')
  const refused = await execute(app)
  t.equal(refused.statusCode, 503)
  t.equal(refused.json<{ code: string }>().code, 'SANDBOX_UNAVAILABLE')
  const down = await readyz(app)
  t.equal(down.statusCode, 503)
  t.same(down.body, {
    status: 'unavailable',
    backend: 'nsjail',
    probes: [{ backend: 'nsjail', ok: false, reason: 'seccomp filter missing', features: {} }]
  }, 'readiness names the backend and the re-probe\'s reason')
  t.ok(logs.some(l => l.level === 50 && /FAILED ITS RE-PROBE/.test(String(l.msg))), 'the failure is logged as an error')
  t.equal(fake.runs.length, 1, 'nothing ran while the backend failed')

  current = PASSING
  await until(() => app.sandbox.ready, 'the passing re-probe')
  t.equal((await execute(app)).statusCode, 200, 'serving again')
  t.same((await readyz(app)).body, { status: 'ready', backend: 'nsjail', probes: [{ backend: 'nsjail', ok: true, features: PASSING.features }] })
  t.ok(logs.some(l => l.level === 30 && /passes its probe again/.test(String(l.msg))), 'the recovery is logged')
})

t.test('a re-probe that throws counts as failed', async t => {
  const fake = new FakeBackend('unshare', { probe: scripted(PASSING, new Error('canary vanished')) })
  const { app } = await build(t, { env: { PROBE_INTERVAL_MS: '20' }, backends: [fake] })
  await until(() => !app.sandbox.ready, 'the failed re-probe')
  t.match((await readyz(app)).body, { status: 'unavailable', probes: [{ backend: 'unshare', ok: false, reason: 'probe threw: canary vanished' }] })
})

t.test('only the chosen backend is re-probed, and its entry replaces its start-up one', async t => {
  const nsjail = new FakeBackend('nsjail', { probe: failingProbe('no nsjail') })
  const unshare = new FakeBackend('unshare', { probe: scripted(PASSING, { ok: true, features: { reprobed: true } }) })
  const { app } = await build(t, { env: { PROBE_INTERVAL_MS: '20' }, backends: [nsjail, unshare] })
  await until(() => unshare.probeCalls >= 2, 'a re-probe')
  await new Promise(resolve => setTimeout(resolve, 10))
  t.equal(nsjail.probeCalls, 1, 'the failed candidate is not tried again')
  t.same((await readyz(app)).body, {
    status: 'ready',
    backend: 'unshare',
    probes: [
      { backend: 'nsjail', ok: false, reason: 'no nsjail', features: {} },
      { backend: 'unshare', ok: true, features: { reprobed: true } }
    ]
  })
})

t.test('a slow re-probe is not overlapped by the next one', async t => {
  let release: (() => void) | undefined
  let calls = 0
  const fake = new FakeBackend('nsjail', {
    probe: async () => {
      calls++
      if (calls === 2) await new Promise<void>(resolve => { release = resolve })
      return PASSING
    }
  })
  const { app } = await build(t, { env: { PROBE_INTERVAL_MS: '10' }, backends: [fake] })
  await until(() => release !== undefined, 'the slow re-probe')
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(calls, 2, 'no re-probe started while one was running')
  release?.()
  await until(() => calls >= 3, 're-probing resumes')
  t.equal(app.sandbox.ready, true)
})

t.test('PROBE_INTERVAL_MS=0 probes only at start; without a backend there is nothing to re-probe', async t => {
  const fake = new FakeBackend('nsjail')
  await build(t, { env: { PROBE_INTERVAL_MS: '0' }, backends: [fake] })
  const failed = new FakeBackend('nsjail', { probe: failingProbe('down') })
  await build(t, { env: { PROBE_INTERVAL_MS: '10' }, backends: [failed] })
  await new Promise(resolve => setTimeout(resolve, 80))
  t.equal(fake.probeCalls, 1)
  t.equal(failed.probeCalls, 1)
})

t.test('no re-probe after close', async t => {
  const fake = new FakeBackend('nsjail')
  const app = await buildApp({ config: config({ PROBE_INTERVAL_MS: '10' }), backends: [fake] })
  await until(() => fake.probeCalls >= 2, 'a re-probe')
  await app.close()
  const calls = fake.probeCalls
  await new Promise(resolve => setTimeout(resolve, 60))
  t.equal(fake.probeCalls, calls)
})

// ---------------------------------------------------------------------------------------------
// Limits: slots, queue, rate

t.test('BUSY 503 with Retry-After when every slot is taken and the queue is full', async t => {
  const held = new HeldRun()
  const fake = new FakeBackend('nsjail', { run: held.run })
  const { app } = await build(t, { env: { CONCURRENCY: '1', QUEUE_SIZE: '0' }, backends: [fake] })
  const first = execute(app)
  await held.started()
  const refused = await execute(app)
  t.equal(refused.statusCode, 503)
  t.equal(refused.headers['retry-after'], '1')
  t.match(refused.json(), { statusCode: 503, error: 'Service Unavailable', code: 'BUSY', message: /slot/, requestId: refused.headers['x-request-id'] })
  t.equal(fake.runs.length, 1, 'the refused request did not run')
  held.finish(success('first'))
  t.equal((await first).json<{ result: string }>().result, 'first')
  const later = execute(app)
  await held.started(2)
  held.finish()
  t.equal((await later).statusCode, 200, 'the slot was released')
})

t.test('a queued request runs when the slot is released; one beyond the queue is BUSY', async t => {
  const held = new HeldRun()
  const { app } = await build(t, { env: { CONCURRENCY: '1', QUEUE_SIZE: '1' }, backends: [new FakeBackend('nsjail', { run: held.run })] })
  const first = execute(app)
  await held.started()
  const queued = execute(app)
  await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(held.requests.length, 1, 'the second waits')
  const refused = await execute(app)
  t.equal(refused.json<{ code: string }>().code, 'BUSY')
  held.finish(success('first'))
  const second = await held.started(2)
  t.equal(second.slot, 0, 'it got the released slot')
  held.finish(success('second'))
  t.equal((await first).json<{ result: string }>().result, 'first')
  t.equal((await queued).json<{ result: string }>().result, 'second')
})

t.test('BUSY after QUEUE_TIMEOUT_MS in the queue', async t => {
  const held = new HeldRun()
  const { app } = await build(t, { env: { CONCURRENCY: '1', QUEUE_SIZE: '1', QUEUE_TIMEOUT_MS: '50' }, backends: [new FakeBackend('nsjail', { run: held.run })] })
  const first = execute(app)
  await held.started()
  const started = performance.now()
  const waited = await execute(app)
  t.equal(waited.statusCode, 503)
  t.equal(waited.json<{ code: string }>().code, 'BUSY')
  t.equal(waited.headers['retry-after'], '1')
  t.ok(performance.now() - started >= 45, 'after waiting')
  held.finish()
  await first
})

t.test('concurrent runs get distinct slots', async t => {
  const held = new HeldRun()
  const { app } = await build(t, { env: { CONCURRENCY: '2', QUEUE_SIZE: '0' }, backends: [new FakeBackend('nsjail', { run: held.run })] })
  const replies = [execute(app), execute(app)]
  await held.started(2)
  t.same(held.requests.map(r => r.slot).sort(), [0, 1])
  held.finish()
  for (const reply of await Promise.all(replies)) t.equal(reply.statusCode, 200)
})

t.test('RATE_LIMITED 429 with Retry-After beyond RATE_LIMIT_MAX; health, readiness and the docs are not limited', async t => {
  const fake = new FakeBackend('nsjail')
  const { app } = await build(t, { env: { RATE_LIMIT_MAX: '2' }, backends: [fake] })
  t.equal((await execute(app)).statusCode, 200)
  t.equal((await execute(app)).statusCode, 200)
  const limited = await execute(app)
  t.equal(limited.statusCode, 429)
  t.match(limited.json(), { statusCode: 429, error: 'Too Many Requests', code: 'RATE_LIMITED', message: /at most 2 per 60000 ms/, requestId: limited.headers['x-request-id'] })
  t.match(limited.headers['retry-after'], /^\d+$/)
  t.equal(fake.runs.length, 2, 'the limited request did not run')
  for (const url of ['/healthz', '/readyz', '/openapi.json']) {
    t.equal((await app.inject({ method: 'GET', url })).statusCode, 200, `${url} still answers`)
  }
})

t.test('unknown paths count against the rate limit too', async t => {
  const { app } = await build(t, { env: { RATE_LIMIT_MAX: '2' } })
  t.equal((await app.inject({ method: 'GET', url: '/a' })).statusCode, 404)
  t.equal((await app.inject({ method: 'GET', url: '/b' })).statusCode, 404)
  const limited = await app.inject({ method: 'GET', url: '/c' })
  t.equal(limited.statusCode, 429)
  t.equal(limited.json<{ code: string }>().code, 'RATE_LIMITED')
})

t.test('RATE_LIMIT_MAX=0 turns rate limiting off', async t => {
  const { app } = await build(t, { env: { RATE_LIMIT_MAX: '0' } })
  for (let i = 0; i < 5; i++) {
    const reply = await execute(app)
    t.equal(reply.statusCode, 200, `request ${i + 1}`)
    t.notOk(reply.headers['x-ratelimit-limit'], 'no rate-limit headers')
  }
  for (let i = 0; i < 5; i++) t.equal((await app.inject({ method: 'GET', url: '/nope' })).statusCode, 404)
})

// ---------------------------------------------------------------------------------------------
// Request ids, internal errors, headers, documents

t.test('x-request-id: a valid caller id is kept, anything else replaced by a uuid', async t => {
  const { app } = await build(t)
  const table: Array<{ given: string | undefined, kept: boolean }> = [
    { given: 'abc-123', kept: true },
    { given: 'A.b:c_D-9', kept: true },
    { given: 'x'.repeat(64), kept: true },
    { given: 'x'.repeat(65), kept: false },
    { given: 'a b', kept: false },
    { given: 'id;rm -rf', kept: false },
    { given: 'ünïcode', kept: false },
    { given: '', kept: false },
    { given: undefined, kept: false }
  ]
  for (const { given, kept } of table) {
    const headers = given === undefined ? {} : { 'x-request-id': given }
    for (const url of ['/healthz', '/nope']) {
      const reply = await app.inject({ method: 'GET', url, headers })
      const id = reply.headers['x-request-id']
      if (kept) t.equal(id, given, `${JSON.stringify(given)} kept on ${url}`)
      else t.match(id, UUID, `${JSON.stringify(given)} replaced on ${url}`)
      if (url === '/nope') t.equal(reply.json<{ requestId: string }>().requestId, id, 'the error body quotes the same id')
    }
  }
  const a = await app.inject({ method: 'GET', url: '/healthz' })
  const b = await app.inject({ method: 'GET', url: '/healthz' })
  t.not(a.headers['x-request-id'], b.headers['x-request-id'], 'generated ids differ')
})

t.test('INTERNAL_ERROR 500 when the backend throws: an opaque message with the request id; details only in the log', async t => {
  const fake = new FakeBackend('nsjail', { run: async () => { throw new Error('spawn /srv/secret/nsjail EACCES') } })
  const { app, logs } = await build(t, { env: { CONCURRENCY: '1', QUEUE_SIZE: '0' }, backends: [fake] })
  const reply = await execute(app, { script: 'x' }, { 'x-request-id': 'req-500' })
  t.equal(reply.statusCode, 500)
  t.same(reply.json(), {
    statusCode: 500,
    error: 'Internal Server Error',
    code: 'INTERNAL_ERROR',
    message: 'internal error; quote the request id req-500 when reporting it',
    requestId: 'req-500'
  })
  t.notOk(reply.body.includes('secret'), 'the thrown text does not reach the client')
  const logged = logs.find(l => l.msg === 'internal error')
  t.match(logged, { level: 50, reqId: 'req-500', err: { message: 'spawn /srv/secret/nsjail EACCES' } }, 'the real error is logged')
  fake.runs.length = 0
  t.equal((await execute(app)).statusCode, 500, 'the slot was released after the throw (CONCURRENCY 1, no queue)')
  t.equal(fake.runs.length, 1)
})

t.test('the log records each execution without the script or its output', async t => {
  const fake = new FakeBackend('nsjail', { run: success('RESULT_MARKER', { stdout: 'STDOUT_MARKER', stderr: 'STDERR_MARKER' }) })
  const { app, logs } = await build(t, { backends: [fake] })
  const script = 'def main():\n    return "SCRIPT_MARKER"\n'
  t.equal((await execute(app, { script })).statusCode, 200)
  const entry = logs.find(l => l.msg === 'execution')
  t.match(entry, { outcome: 'ok', backend: 'nsjail', scriptBytes: Buffer.byteLength(script), stdoutBytes: 13, stderrBytes: 13 })
  const all = JSON.stringify(logs)
  for (const marker of ['SCRIPT_MARKER', 'STDOUT_MARKER', 'STDERR_MARKER', 'RESULT_MARKER']) t.notOk(all.includes(marker), `${marker} not logged`)

  const failing = new FakeBackend('nsjail', { run: failure('MAIN_RAISED', 'ValueError: MESSAGE_MARKER') })
  const second = await build(t, { backends: [failing] })
  await execute(second.app)
  t.match(second.logs.find(l => l.msg === 'execution'), { outcome: 'MAIN_RAISED' })
})

t.test('helmet\'s security headers are set', async t => {
  const { app } = await build(t)
  for (const url of ['/healthz', '/nope']) {
    const reply = await app.inject({ method: 'GET', url })
    const table: Array<[string, string | RegExp]> = [
      ['x-content-type-options', 'nosniff'],
      ['x-frame-options', 'SAMEORIGIN'],
      ['content-security-policy', /default-src 'self'/],
      ['strict-transport-security', /max-age=\d+/],
      ['referrer-policy', 'no-referrer'],
      ['cross-origin-resource-policy', 'same-origin']
    ]
    for (const [header, value] of table) t.match(reply.headers[header], value, `${url}: ${header}`)
    t.notOk(reply.headers['x-powered-by'])
  }
})

t.test('GET /healthz answers 200 {status: ok}', async t => {
  const { app } = await build(t, { backends: [] })
  const reply = await app.inject({ method: 'GET', url: '/healthz' })
  t.equal(reply.statusCode, 200)
  t.same(reply.json(), { status: 'ok' })
})

t.test('GET /openapi.json is an OpenAPI 3 document generated from the route schemas', async t => {
  const { app } = await build(t)
  const reply = await app.inject({ method: 'GET', url: '/openapi.json' })
  t.equal(reply.statusCode, 200)
  const doc = reply.json<{ openapi: string, info: { title: string }, paths: Record<string, Record<string, Record<string, unknown>>> }>()
  t.match(doc.openapi, /^3\./)
  t.equal(doc.info.title, 'PySandbox')
  const post = doc.paths['/execute']?.post
  t.ok(post, '/execute is documented')
  t.match(post, {
    requestBody: { content: { 'application/json': { schema: { required: ['script'], properties: { script: { type: 'string', minLength: 1 } } } } } },
    responses: { 200: {}, '4XX': {}, '5XX': {} }
  })
  t.ok(doc.paths['/healthz']?.get)
  t.ok(doc.paths['/readyz']?.get)
  t.notOk(doc.paths['/openapi.json'], 'the document itself is hidden')
})

// ---------------------------------------------------------------------------------------------
// Shutdown and disconnects

t.test('app.close() aborts an in-flight run and refuses the queue', async t => {
  const held = new HeldRun()
  const fake = new FakeBackend('nsjail', { run: held.run })
  const app = await buildApp({ config: config({ CONCURRENCY: '1', QUEUE_SIZE: '1' }), backends: [fake] })
  const running = execute(app)
  const request = await held.started()
  const queued = execute(app)
  await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(request.signal?.aborted, false)
  await within(app.close(), 'close()')
  t.equal(request.signal?.aborted, true, 'the backend saw the abort')
  const ended = await running
  t.equal(ended.json<{ code: string }>().code, 'TIME_LIMIT_EXCEEDED', 'the run ended as the backend reported')
  t.equal(ended.headers.connection, 'close', 'a reply sent while closing ends its connection')
  const refused = await queued
  t.equal(refused.statusCode, 503)
  t.equal(refused.json<{ code: string }>().code, 'BUSY', 'the queued request was refused, not run')
  t.equal(held.requests.length, 1)
})

interface Sent {
  /** The reply's status, or -1 when the connection ended without one. */
  done: Promise<number>
  /** The client leaves: its socket is destroyed. */
  abort: () => void
}

/** `app` listening on a loopback port, and a client over real HTTP that can leave mid-request. */
async function overHttp (app: FastifyInstance): Promise<() => Sent> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  const body = JSON.stringify({ script: 'x' })
  return () => {
    const req = httpRequest({ port, host: '127.0.0.1', method: 'POST', path: '/execute', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } })
    const done = new Promise<number>(resolve => {
      req.on('response', res => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
      req.on('error', () => resolve(-1))
    })
    req.end(body)
    return { done, abort: () => req.destroy() }
  }
}

t.test('a client that disconnects stops its run; one that waits does not', async t => {
  const held = new HeldRun()
  const fake = new FakeBackend('nsjail', { run: held.run })
  const send = await overHttp((await build(t, { backends: [fake] })).app)

  const waiting = send()
  const first = await held.started(1)
  held.finish(success('kept'))
  t.equal(await waiting.done, 200)
  t.equal(first.signal?.aborted, false, 'a completed request is not aborted afterwards')

  const leaving = send()
  const second = await held.started(2)
  const aborted = new Promise<void>(resolve => second.signal?.addEventListener('abort', () => resolve(), { once: true }))
  leaving.abort()
  await within(aborted, 'the run to be aborted')
  t.equal(second.signal?.aborted, true, 'the run was stopped')
  t.equal(await leaving.done, -1)
})

t.test('a client that leaves while queued leaves the queue at once; its script never runs, and nothing counts it as a failure', async t => {
  const held = new HeldRun()
  const fake = new FakeBackend('nsjail', { run: held.run })
  const { app, logs } = await build(t, { env: { CONCURRENCY: '1', QUEUE_SIZE: '2' }, backends: [fake] })
  const send = await overHttp(app)

  const running = send()
  await held.started(1)
  const leaving = send()
  await until(() => app.sandbox.slots.queued === 1, 'the second request to queue')
  leaving.abort()
  await until(() => app.sandbox.slots.queued === 0, 'the queue to drop')
  t.equal(app.sandbox.slots.running, 1, 'the queue dropped while the first run still held the slot')
  t.equal(await leaving.done, -1)

  held.finish(success('first'))
  t.equal(await running.done, 200)
  await until(() => app.sandbox.slots.running === 0, 'the slot to be free')
  await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(fake.runs.length, 1, 'the backend never received the script of the client that left')

  const next = send()
  await held.started(2)
  held.finish()
  t.equal(await next.done, 200, 'the slot serves the next request')

  t.ok(logs.some(l => l.level === 30 && /closed the connection before its script ran/.test(String(l.msg))), 'the departure is logged')
  t.notOk(logs.some(l => l.msg === 'internal error'), 'not an internal error')
  t.equal(logs.filter(l => l.msg === 'execution').length, 2, 'only the scripts that ran are logged as executions')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.equal(seriesValue(metrics, 'pysandbox_executions_total{backend="nsjail",outcome="ok"}'), 2)
  t.notMatch(metrics, /pysandbox_executions_total\{[^}]*outcome="(?!ok")/, 'no failed execution is counted')
  t.notMatch(metrics, /pysandbox_http_errors_total\{/, 'no error reply is counted')
})

t.test('a client gone before its request queues, or just as its slot is granted, gets no run, and the slot goes back', async t => {
  const fake = new FakeBackend('nsjail')
  const { app } = await build(t, { env: { CONCURRENCY: '1', QUEUE_SIZE: '1' }, backends: [fake] })
  const { slots } = app.sandbox
  await t.rejects(app.sandbox.execute('x', AbortSignal.abort()), { code: 'CLIENT_CLOSED' }, 'gone before it queued')

  const lease = await slots.acquire()
  const client = new AbortController()
  const late = app.sandbox.execute('x', client.signal)
  await until(() => slots.queued === 1, 'the request to queue')
  lease.release() // grants the slot to the queued request...
  client.abort() // ...whose client leaves before execute() resumes
  await t.rejects(late, { code: 'CLIENT_CLOSED' }, 'gone as its slot was granted')
  t.equal(fake.runs.length, 0, 'nothing ran')
  t.equal(slots.running, 0, 'no slot is held')
  t.equal((await execute(app)).statusCode, 200, 'the one slot serves the next request')
})
