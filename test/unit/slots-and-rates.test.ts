// Limits: execution slots, the queue, the rate limit (the app with fake backends).
import t from 'tap'
import { build, execute } from '../helpers/app.js'
import { FakeBackend, HeldRun, success } from '../helpers/fake-backend.js'

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
