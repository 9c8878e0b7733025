// Request ids, internal errors, headers and documents (the app with fake backends).
import t from 'tap'
import { UUID, build, execute } from '../helpers/app.js'
import { FakeBackend, failure, success } from '../helpers/fake-backend.js'

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

t.test('every error reply quotes its request id, the script\'s failures (422) included', async t => {
  const fake = new FakeBackend('nsjail', { run: failure('MAIN_RAISED', 'ZeroDivisionError: division by zero', { exception: 'ZeroDivisionError' }) })
  const { app } = await build(t, { backends: [fake] })
  const replies = [
    await execute(app, { script: 'def main(): 1/0' }, { 'x-request-id': 'req-422' }),
    await execute(app, { code: 'x' }, { 'x-request-id': 'req-400' }),
    await app.inject({ method: 'POST', url: '/execute', payload: 'x', headers: { 'content-type': 'text/plain', 'x-request-id': 'req-415' } }),
    await app.inject({ method: 'GET', url: '/execute', headers: { 'x-request-id': 'req-405' } }),
    await app.inject({ method: 'GET', url: '/nope', headers: { 'x-request-id': 'req-404' } })
  ]
  for (const reply of replies) {
    const body = reply.json<{ statusCode: number, requestId: string }>()
    t.equal(body.requestId, `req-${reply.statusCode}`, `${reply.statusCode}: the body quotes the id`)
    t.equal(reply.headers['x-request-id'], body.requestId, `${reply.statusCode}: as the header does`)
  }
  t.match(replies[0]?.json(), { code: 'MAIN_RAISED', exception: 'ZeroDivisionError', stdout: '', backend: 'nsjail' }, 'the 422 keeps its details and output')
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
  const entry = logs.find(l => l.msg === 'request')
  t.match(entry, { route: '/execute', status: 200, outcome: 'ok', backend: 'nsjail', scriptBytes: Buffer.byteLength(script), stdoutBytes: 13, stderrBytes: 13, queuedMs: Number, sandboxMs: Number, durationMs: Number })
  t.equal(logs.filter(l => l.reqId === entry?.reqId).length, 1, 'one line for the request: the access log with what ran')
  const all = JSON.stringify(logs)
  for (const marker of ['SCRIPT_MARKER', 'STDOUT_MARKER', 'STDERR_MARKER', 'RESULT_MARKER']) t.notOk(all.includes(marker), `${marker} not logged`)

  const failing = new FakeBackend('nsjail', { run: failure('MAIN_RAISED', 'ValueError: MESSAGE_MARKER') })
  const second = await build(t, { backends: [failing] })
  await execute(second.app)
  t.match(second.logs.find(l => l.msg === 'request'), { status: 422, code: 'MAIN_RAISED', outcome: 'MAIN_RAISED' })
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
  const doc = reply.json<{ openapi: string, info: { title: string }, paths: Record<string, Record<string, Record<string, unknown>>>, components: { schemas: Record<string, unknown> } }>()
  t.match(doc.openapi, /^3\./)
  t.equal(doc.info.title, 'PySandbox')
  const post = doc.paths['/execute']?.post
  t.ok(post, '/execute is documented')
  t.match(post, {
    requestBody: { content: { 'application/json': { schema: { $ref: '#/components/schemas/ExecuteRequest' } } } },
    responses: { 200: {}, '4XX': {}, '5XX': {} }
  })
  t.match(doc.components.schemas.ExecuteRequest, { required: ['script'], properties: { script: { type: 'string', minLength: 1 } } })
  t.ok(doc.paths['/healthz']?.get)
  t.ok(doc.paths['/readyz']?.get)
  t.notOk(doc.paths['/openapi.json'], 'the document itself is hidden')
})
