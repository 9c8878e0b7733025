// A graceful shutdown (the app with fake backends): what runs or waits gets the grace, nothing new
// starts, and whatever the grace cannot save is answered 503 SHUTTING_DOWN, never the script's fault.
import t from 'tap'
import { build, execute, until, within } from '../helpers/app.js'
import { FakeBackend, HeldRun, success } from '../helpers/fake-backend.js'
import { seriesValue } from '../helpers/prometheus.js'

async function metric (app: Awaited<ReturnType<typeof build>>['app'], series: string): Promise<number | undefined> {
  return seriesValue((await app.inject({ method: 'GET', url: '/metrics' })).body, series)
}

t.test('runs in flight and queued finish within the grace; new runs and /readyz get 503 at once', async t => {
  const held = new HeldRun()
  const { app } = await build(t, { env: { CONCURRENCY: '1', QUEUE_SIZE: '4' }, backends: [new FakeBackend('nsjail', { run: held.run })] })
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)
  const running = execute(app)
  await held.started(1)
  const queued = execute(app)
  await until(() => app.sandbox.slots.queued === 1, 'the second request to queue')

  const drained = app.sandbox.drain(10_000)
  t.equal(app.sandbox.draining, true)
  const ready = await app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503, '/readyz answers 503 at once: the platform stops sending')
  t.equal(ready.json<{ status: string }>().status, 'shutting-down')
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'the process is still alive')
  const refused = await execute(app)
  t.equal(refused.statusCode, 503)
  t.match(refused.json(), { code: 'SHUTTING_DOWN', message: /the server is shutting down: it takes no new runs; retry/ })
  t.equal(refused.headers['retry-after'], '1', 'retryable: another instance answers')
  t.equal(refused.headers.connection, 'close', 'replies while draining end their connection')

  held.finish(success('first'))
  t.equal((await running).statusCode, 200, 'the run in flight got its real result')
  await held.started(2)
  held.finish(success('second'))
  const second = await queued
  t.equal(second.statusCode, 200, 'so did the request that was queued')
  t.equal(second.json<{ result: string }>().result, 'second')
  await within(drained, 'drain() to resolve once nothing is left')
  t.equal(await metric(app, 'pysandbox_shutdown_total{what="refused"}'), 1)
  t.equal(await metric(app, 'pysandbox_shutdown_total{what="stopped"}'), 0)
  t.equal(await metric(app, 'pysandbox_shutting_down'), 1)
})

t.test('past the grace, what still runs or waits is stopped and answered 503 SHUTTING_DOWN, not a 422', async t => {
  const held = new HeldRun()
  const { app, logs } = await build(t, { env: { CONCURRENCY: '1', QUEUE_SIZE: '4' }, backends: [new FakeBackend('nsjail', { run: held.run })] })
  const running = execute(app)
  const request = await held.started(1)
  const queued = execute(app)
  await until(() => app.sandbox.slots.queued === 1, 'the second request to queue')
  const started = performance.now()
  await within(app.sandbox.drain(200), 'drain() to end with its grace')
  t.ok(performance.now() - started >= 190, 'the grace was given')
  t.equal(request.signal?.aborted, true, 'the run was stopped')
  for (const [reply, what] of [[await running, /the run was still going when the shutdown's grace ended/], [await queued, /still waiting for a slot when the shutdown's grace ended/]] as const) {
    t.equal(reply.statusCode, 503)
    t.match(reply.json(), { code: 'SHUTTING_DOWN', message: what })
    t.notOk('stdout' in reply.json(), 'nothing of the script: it is not to blame')
    t.equal(reply.headers['retry-after'], '1')
  }
  t.equal(held.requests.length, 1, 'the queued script never ran')
  t.equal(await metric(app, 'pysandbox_shutdown_total{what="stopped"}'), 2)
  t.ok(logs.some(l => l.level === 40 && /the grace of 200 ms is over/.test(String(l.msg))), 'the cut is logged')
})

t.test('drain() with nothing in flight resolves at once', async t => {
  const { app } = await build(t)
  const started = performance.now()
  await app.sandbox.drain(60_000)
  t.ok(performance.now() - started < 1000)
  t.equal((await execute(app)).json<{ code: string }>().code, 'SHUTTING_DOWN')
})

t.test('the access log: one line per request at info, health and readiness polls at debug', async t => {
  const { app, logs } = await build(t)
  await app.inject({ method: 'GET', url: '/healthz' })
  await app.inject({ method: 'GET', url: '/readyz' })
  await execute(app)
  await execute(app, { script: 'x', nope: 1 })
  const lines = logs.filter(l => l.msg === 'request')
  t.same(lines.map(l => l.route), ['/execute', '/execute'], 'polls are not at info (the test logger is at info)')
  t.match(lines[0], { level: 30, req: { method: 'POST', url: '/execute' }, status: 200, backend: 'nsjail', queuedMs: Number, sandboxMs: Number, durationMs: Number, reqId: String })
  t.match(lines[1], { status: 400, code: 'INVALID_REQUEST' })
  t.notOk('backend' in (lines[1] ?? {}), 'nothing ran')
})

t.test('every HTTP request is timed by route, status and code', async t => {
  const { app } = await build(t)
  await execute(app)
  await execute(app, { nope: 1 })
  await app.inject({ method: 'GET', url: '/nowhere' })
  t.equal(await metric(app, 'pysandbox_http_request_duration_seconds_count{route="/execute",status="200",code="-"}'), 1)
  t.equal(await metric(app, 'pysandbox_http_request_duration_seconds_count{route="/execute",status="400",code="INVALID_REQUEST"}'), 1)
  t.equal(await metric(app, 'pysandbox_http_request_duration_seconds_count{route="-",status="404",code="NOT_FOUND"}'), 1)
})

t.test('while the app closes, a request on an open connection gets the service\'s 503 SHUTTING_DOWN, not Fastify\'s bare one', async t => {
  const held = new HeldRun()
  const { app } = await build(t, { env: { CONCURRENCY: '1' }, backends: [new FakeBackend('nsjail', { run: held.run })] })
  const running = execute(app)
  await held.started(1)
  const closing = app.close()
  const refused = await execute(app)
  t.equal(refused.statusCode, 503)
  t.match(refused.json(), { code: 'SHUTTING_DOWN', requestId: String })
  t.equal(refused.headers['retry-after'], '1')
  t.equal(refused.headers.connection, 'close')
  await closing
  t.equal((await running).json<{ code: string }>().code, 'SHUTTING_DOWN')
})
