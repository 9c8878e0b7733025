// GET /metrics: Prometheus text with executions by backend, outcome and API key, their latency,
// the queue, the running sandboxes, error replies by code and API key and each backend's probe;
// one registry per app. Without API keys the key label is "-".
import t, { type Test } from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { FastifyInstance, InjectOptions } from 'fastify'
import { buildApp } from '../../src/app.js'
import type { SandboxBackend } from '../../src/backends/backend.js'
import { newKey } from '../../src/access/keys.js'
import { PROJECT_ROOT, loadConfig } from '../../src/config.js'
import { FakeBackend, HeldRun, failingProbe, failure, success } from '../helpers/fake-backend.js'
import { seriesValue } from '../helpers/prometheus.js'

async function build (t: Test, env: Record<string, string> = {}, backends: SandboxBackend[] = [new FakeBackend('nsjail')]): Promise<FastifyInstance> {
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0', CONCURRENCY: '4', QUEUE_SIZE: '8', ...env }), backends })
  t.teardown(async () => { await app.close() })
  return app
}

const HELLO: InjectOptions = { method: 'POST', url: '/execute', headers: { 'content-type': 'application/json' }, payload: '{"script": "def main():\\n    return 42\\n"}' }

async function scrape (app: FastifyInstance): Promise<string> {
  const reply = await app.inject({ method: 'GET', url: '/metrics' })
  if (reply.statusCode !== 200) throw new Error(`/metrics answered ${reply.statusCode}`)
  return reply.body
}

const value = seriesValue

const METRICS = [
  'pysandbox_executions_total', 'pysandbox_execution_duration_seconds', 'pysandbox_queue_wait_seconds',
  'pysandbox_http_errors_total', 'pysandbox_queue_depth', 'pysandbox_running_sandboxes',
  'pysandbox_concurrency_limit', 'pysandbox_queue_limit', 'pysandbox_probe_ok', 'pysandbox_ready',
  'pysandbox_warm_runs_total', 'pysandbox_warm_sandboxes', 'pysandbox_http_request_duration_seconds',
  'pysandbox_shed_total', 'pysandbox_shutdown_total', 'pysandbox_shutting_down', 'pysandbox_sessions',
  'pysandbox_sessions_limit', 'pysandbox_sessions_ended_total'
]

t.test('GET /metrics is Prometheus text naming every metric, and the process metrics', async t => {
  const app = await build(t, { CONCURRENCY: '3', QUEUE_SIZE: '5' })
  const reply = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(reply.statusCode, 200)
  t.match(reply.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  t.ok(reply.headers['x-request-id'], 'X-Request-Id as on every reply')
  for (const name of METRICS) t.match(reply.body, new RegExp(`^# HELP ${name} \\S`, 'm'), `${name} is described`)
  t.match(reply.body, /^process_cpu_seconds_total \d/m)
  t.match(reply.body, /^nodejs_eventloop_lag_seconds \d/m)
  t.equal(value(reply.body, 'pysandbox_concurrency_limit'), 3)
  t.equal(value(reply.body, 'pysandbox_queue_limit'), 5)
  t.equal(value(reply.body, 'pysandbox_queue_depth'), 0)
  t.equal(value(reply.body, 'pysandbox_running_sandboxes'), 0)
})

t.test('executions are counted by backend and outcome, with their time in the sandbox', async t => {
  const outcomes = [success(1, { durationMs: 30 }), success(2, { durationMs: 70 }), failure('MAIN_RAISED', 'boom', {}, { durationMs: 1500 }), failure('TIME_LIMIT_EXCEEDED', 'slow', {}, { durationMs: 4000 })]
  let next = 0
  const app = await build(t, {}, [new FakeBackend('unshare', { run: async () => outcomes[next++] ?? success(0) })])
  for (let i = 0; i < outcomes.length; i++) await app.inject(HELLO)
  const text = await scrape(app)
  t.equal(value(text, 'pysandbox_executions_total{backend="unshare",outcome="ok",key="-"}'), 2)
  t.equal(value(text, 'pysandbox_executions_total{backend="unshare",outcome="MAIN_RAISED",key="-"}'), 1)
  t.equal(value(text, 'pysandbox_executions_total{backend="unshare",outcome="TIME_LIMIT_EXCEEDED",key="-"}'), 1)
  t.equal(value(text, 'pysandbox_execution_duration_seconds_count{backend="unshare",outcome="ok"}'), 2)
  t.equal(value(text, 'pysandbox_execution_duration_seconds_sum{backend="unshare",outcome="ok"}'), 0.1)
  t.equal(value(text, 'pysandbox_execution_duration_seconds_bucket{le="0.05",backend="unshare",outcome="ok"}'), 1)
  t.equal(value(text, 'pysandbox_execution_duration_seconds_bucket{le="2.5",backend="unshare",outcome="MAIN_RAISED"}'), 1)
  t.equal(value(text, 'pysandbox_execution_duration_seconds_count{backend="unshare",outcome="TIME_LIMIT_EXCEEDED"}'), 1)
  t.equal(value(text, 'pysandbox_execution_duration_seconds_sum{backend="unshare",outcome="TIME_LIMIT_EXCEEDED"}'), 4)
  t.equal(value(text, 'pysandbox_queue_wait_seconds_count'), 4)
})

t.test('error replies are counted by status and code; /readyz\'s 503 is no error reply', async t => {
  const app = await build(t, {}, [new FakeBackend('nsjail', { probe: failingProbe('no user namespaces') })])
  await app.inject(HELLO)
  await app.inject(HELLO)
  await app.inject({ ...HELLO, payload: '{' })
  await app.inject({ ...HELLO, headers: { 'content-type': 'text/plain' } })
  await app.inject({ method: 'GET', url: '/nope' })
  await app.inject({ method: 'DELETE', url: '/execute' })
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 503)
  const text = await scrape(app)
  t.equal(value(text, 'pysandbox_http_errors_total{status="503",code="SANDBOX_UNAVAILABLE",key="-"}'), 2)
  t.equal(value(text, 'pysandbox_http_errors_total{status="400",code="INVALID_JSON",key="-"}'), 1)
  t.equal(value(text, 'pysandbox_http_errors_total{status="415",code="UNSUPPORTED_MEDIA_TYPE",key="-"}'), 1)
  t.equal(value(text, 'pysandbox_http_errors_total{status="404",code="NOT_FOUND",key="-"}'), 1)
  t.equal(value(text, 'pysandbox_http_errors_total{status="405",code="METHOD_NOT_ALLOWED",key="-"}'), 1)
  t.notMatch(text, /pysandbox_http_errors_total\{status="503",code="(?!SANDBOX_UNAVAILABLE)/, 'nothing else at 503')
  t.notMatch(text, /^pysandbox_executions_total\{/m, 'nothing ran')
})

t.test('a 422 is counted both as an execution and as an error reply', async t => {
  const app = await build(t, {}, [new FakeBackend('nsjail', { run: failure('MISSING_MAIN', 'no main') })])
  t.equal((await app.inject(HELLO)).statusCode, 422)
  const text = await scrape(app)
  t.equal(value(text, 'pysandbox_executions_total{backend="nsjail",outcome="MISSING_MAIN",key="-"}'), 1)
  t.equal(value(text, 'pysandbox_http_errors_total{status="422",code="MISSING_MAIN",key="-"}'), 1)
})

t.test('with API keys, executions and error replies are labelled with the key\'s name; a request refused before its key was taken, with "-"', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-metrics-keys-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const alice = newKey('alice')
  writeFileSync(join(dir, 'keys'), `${alice.line}\n`)
  const app = await build(t, { API_KEYS_FILE: join(dir, 'keys') })
  const withKey = { ...HELLO, headers: { ...HELLO.headers, authorization: `Bearer ${alice.key}` } }
  t.equal((await app.inject(withKey)).statusCode, 200)
  t.equal((await app.inject({ ...withKey, payload: '{"script": "x", "code": 1}' })).statusCode, 400)
  t.equal((await app.inject(HELLO)).statusCode, 401)
  const text = await scrape(app)
  t.equal(value(text, 'pysandbox_executions_total{backend="nsjail",outcome="ok",key="alice"}'), 1)
  t.equal(value(text, 'pysandbox_http_errors_total{status="400",code="INVALID_REQUEST",key="alice"}'), 1)
  t.equal(value(text, 'pysandbox_http_errors_total{status="401",code="UNAUTHORIZED",key="-"}'), 1)
  t.notMatch(text, alice.key, 'never the key itself')
})

t.test('RATE_LIMITED is counted, and /metrics itself is never rate limited', async t => {
  const app = await build(t, { RATE_LIMIT_MAX: '1' })
  t.equal((await app.inject(HELLO)).statusCode, 200)
  t.equal((await app.inject(HELLO)).statusCode, 429)
  t.equal((await app.inject(HELLO)).statusCode, 429)
  for (let i = 0; i < 3; i++) await scrape(app)
  t.equal(value(await scrape(app), 'pysandbox_http_errors_total{status="429",code="RATE_LIMITED",key="-"}'), 2)
})

t.test('queue depth and running sandboxes are read at scrape time; BUSY is counted', async t => {
  const held = new HeldRun()
  // One caller may hold every slot and fill the queue (TENANT_SLOTS = CONCURRENCY, TENANT_QUEUE =
  // QUEUE_SIZE): this is about the server's queue, not a caller's share of it.
  const app = await build(t, { CONCURRENCY: '1', QUEUE_SIZE: '1', TENANT_SLOTS: '1', TENANT_QUEUE: '1' }, [new FakeBackend('nsjail', { run: held.run })])
  const running = app.inject(HELLO)
  await held.started()
  const queued = app.inject(HELLO)
  while (app.sandbox.slots.queued < 1) await new Promise(resolve => setImmediate(resolve))
  // From another caller, which holds nothing: the queue is full (its own share would be 429).
  t.equal((await app.inject({ ...HELLO, remoteAddress: '192.0.2.1' })).statusCode, 503)
  let text = await scrape(app)
  t.equal(value(text, 'pysandbox_running_sandboxes'), 1)
  t.equal(value(text, 'pysandbox_queue_depth'), 1)
  t.equal(value(text, 'pysandbox_http_errors_total{status="503",code="BUSY",key="-"}'), 1)
  held.finish()
  await running
  await held.started(2)
  held.finish()
  await queued
  text = await scrape(app)
  t.equal(value(text, 'pysandbox_running_sandboxes'), 0)
  t.equal(value(text, 'pysandbox_queue_depth'), 0)
  t.equal(value(text, 'pysandbox_executions_total{backend="nsjail",outcome="ok",key="-"}'), 2)
})

t.test('probe status: 1 or 0 per probed backend, and readiness with the chosen backend', async t => {
  const app = await build(t, {}, [new FakeBackend('nsjail', { probe: failingProbe('no') }), new FakeBackend('unshare')])
  const text = await scrape(app)
  t.equal(value(text, 'pysandbox_probe_ok{backend="nsjail"}'), 0)
  t.equal(value(text, 'pysandbox_probe_ok{backend="unshare"}'), 1)
  t.equal(value(text, 'pysandbox_ready{backend="unshare"}'), 1)

  const none = await build(t, {}, [new FakeBackend('nsjail', { probe: failingProbe('no') })])
  const refused = await scrape(none)
  t.equal(value(refused, 'pysandbox_probe_ok{backend="nsjail"}'), 0)
  t.equal(value(refused, 'pysandbox_ready{backend="none"}'), 0)
})

t.test('a failing re-probe turns pysandbox_ready to 0', async t => {
  let ok = true
  const app = await build(t, { PROBE_INTERVAL_MS: '20' }, [new FakeBackend('nsjail', { probe: async () => ok ? { ok, features: {} } : failingProbe('broke') })])
  t.equal(value(await scrape(app), 'pysandbox_ready{backend="nsjail"}'), 1)
  ok = false
  while (app.sandbox.ready) await new Promise(resolve => setTimeout(resolve, 10))
  const text = await scrape(app)
  t.equal(value(text, 'pysandbox_ready{backend="nsjail"}'), 0)
  t.equal(value(text, 'pysandbox_probe_ok{backend="nsjail"}'), 0)
})

t.test('the warm pool\'s runs and sandboxes are read from the backend at scrape time', async t => {
  const backend = new FakeBackend('nsjail')
  const bare = await scrape(await build(t, {}, [backend]))
  t.equal(value(bare, 'pysandbox_warm_runs_total{served="ready"}'), undefined, 'a backend without warm sandboxes reports none')
  const stats = {
    runs: { ready: 7, waited: 1, cold: 0 },
    zygotes: { starting: 1, ready: 2, running: 0, cleaning: 0, dead: 0 }
  }
  const warm = Object.assign(new FakeBackend('nsjail'), { warmStats: () => stats })
  const text = await scrape(await build(t, {}, [warm]))
  t.equal(value(text, 'pysandbox_warm_runs_total{served="ready"}'), 7)
  t.equal(value(text, 'pysandbox_warm_runs_total{served="waited"}'), 1)
  t.equal(value(text, 'pysandbox_warm_runs_total{served="cold"}'), 0)
  t.equal(value(text, 'pysandbox_warm_sandboxes{state="starting"}'), 1)
  t.equal(value(text, 'pysandbox_warm_sandboxes{state="ready"}'), 2)
  t.equal(value(text, 'pysandbox_warm_sandboxes{state="dead"}'), undefined, 'the dead are not counted')
})

t.test('each app counts on its own registry', async t => {
  const first = await build(t)
  const second = await build(t)
  await first.inject(HELLO)
  t.equal(value(await scrape(first), 'pysandbox_executions_total{backend="nsjail",outcome="ok",key="-"}'), 1)
  t.equal(value(await scrape(second), 'pysandbox_executions_total{backend="nsjail",outcome="ok",key="-"}'), undefined)
  t.not(first.metrics.registry, second.metrics.registry)
})

t.test('/metrics is not in the OpenAPI document', async t => {
  const app = await build(t)
  const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json<{ paths: Record<string, unknown> }>()
  t.notOk(doc.paths['/metrics'])
})

t.test('the README\'s Metrics section names every metric, and only those', async t => {
  const readme = readFileSync(resolve(PROJECT_ROOT, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## Metrics'), readme.indexOf('\n## ', readme.indexOf('## Metrics') + 1))
  const served = [...(await scrape(await build(t))).matchAll(/^# HELP (pysandbox_\w+)/gm)].map(m => m[1])
  t.same(served.sort(), [...METRICS].sort(), 'the metrics this test knows')
  const documented = [...section.matchAll(/`(pysandbox_\w+)`/g)].map(m => m[1])
  t.same([...new Set(documented)].sort(), [...METRICS].sort())
})
