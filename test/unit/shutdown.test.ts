// Shutdown and disconnects: runs stopped, the queue refused, nothing left behind (the app with fake backends).
import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { build, config, execute, until, within } from '../helpers/app.js'
import { FakeBackend, HeldRun, success } from '../helpers/fake-backend.js'
import { seriesValue } from '../helpers/prometheus.js'

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
  t.equal(ended.statusCode, 503)
  t.equal(ended.json<{ code: string }>().code, 'SHUTTING_DOWN', 'a run stopped by the close is the service\'s doing, whatever the backend reported')
  t.equal(ended.headers['retry-after'], '1', 'and retryable')
  t.equal(ended.headers.connection, 'close', 'a reply sent while closing ends its connection')
  const refused = await queued
  t.equal(refused.statusCode, 503)
  t.equal(refused.json<{ code: string }>().code, 'SHUTTING_DOWN', 'the queued request was refused, not run')
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
  t.equal(logs.filter(l => l.msg === 'request' && l.outcome !== undefined).length, 2, 'only the scripts that ran are logged as executions')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.equal(seriesValue(metrics, 'pysandbox_executions_total{backend="nsjail",outcome="ok",key="-"}'), 2, 'counted under key "-": no API keys')
  t.notMatch(metrics, /pysandbox_executions_total\{[^}]*outcome="(?!ok")/, 'no failed execution is counted')
  t.notMatch(metrics, /pysandbox_http_errors_total\{/, 'no error reply is counted')
})

t.test('a client gone before its request queues, or just as its slot is granted, gets no run, and the slot goes back', async t => {
  const fake = new FakeBackend('nsjail')
  const { app } = await build(t, { env: { CONCURRENCY: '1', QUEUE_SIZE: '1' }, backends: [fake] })
  const { slots } = app.sandbox
  await t.rejects(app.sandbox.execute({ script: 'x' }, AbortSignal.abort()), { code: 'CLIENT_CLOSED' }, 'gone before it queued')

  const lease = await slots.acquire()
  const client = new AbortController()
  const late = app.sandbox.execute({ script: 'x' }, client.signal)
  await until(() => slots.queued === 1, 'the request to queue')
  lease.release() // grants the slot to the queued request...
  client.abort() // ...whose client leaves before execute() resumes
  await t.rejects(late, { code: 'CLIENT_CLOSED' }, 'gone as its slot was granted')
  t.equal(fake.runs.length, 0, 'nothing ran')
  t.equal(slots.running, 0, 'no slot is held')
  t.equal((await execute(app)).statusCode, 200, 'the one slot serves the next request')
})
