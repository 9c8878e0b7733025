// Limits: execution slots, the queue, each caller's share of them, the rate limit (the app with
// fake backends). Without API keys a caller is its client address: light-my-request's default
// (127.0.0.1) unless a test sends from another.
import t from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { build, execute } from '../helpers/app.js'
import { FakeBackend, HeldRun, success } from '../helpers/fake-backend.js'

/** The tests of the global slots and queue give one caller a share as large as the whole
 *  (TENANT_SLOTS = CONCURRENCY, TENANT_QUEUE = QUEUE_SIZE), so the per-caller share (by default
 *  one slot less and half the queue) is not what refuses their requests. */
function whole (concurrency: number, queueSize: number): Record<string, string> {
  const sizes = { CONCURRENCY: String(concurrency), QUEUE_SIZE: String(queueSize) }
  return { ...sizes, TENANT_SLOTS: sizes.CONCURRENCY, TENANT_QUEUE: sizes.QUEUE_SIZE }
}

const HELLO = 'def main():\n    return 42\n'

/** POST /execute from another client address: another caller, holding nothing yet. */
async function executeFrom (app: FastifyInstance, remoteAddress: string, script = HELLO): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/execute', remoteAddress, payload: JSON.stringify({ script }), headers: { 'content-type': 'application/json' } })
}

t.test('BUSY 503 with Retry-After when every slot is taken and the queue is full', async t => {
  const held = new HeldRun()
  const fake = new FakeBackend('nsjail', { run: held.run })
  const { app } = await build(t, { env: whole(1, 0), backends: [fake] })
  const first = execute(app)
  await held.started()
  // Another caller, which holds nothing: the server is full, not its share.
  const refused = await executeFrom(app, '192.0.2.1')
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
  const { app } = await build(t, { env: whole(1, 1), backends: [new FakeBackend('nsjail', { run: held.run })] })
  const first = execute(app)
  await held.started()
  const queued = execute(app)
  await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(held.requests.length, 1, 'the second waits')
  // Another caller, which holds nothing: the queue is full, not its share of it.
  const refused = await executeFrom(app, '192.0.2.1')
  t.equal(refused.statusCode, 503)
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
  const { app } = await build(t, { env: { ...whole(1, 1), QUEUE_TIMEOUT_MS: '50' }, backends: [new FakeBackend('nsjail', { run: held.run })] })
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
  const { app } = await build(t, { env: whole(2, 0), backends: [new FakeBackend('nsjail', { run: held.run })] })
  const replies = [execute(app), execute(app)]
  await held.started(2)
  t.same(held.requests.map(r => r.slot).sort(), [0, 1])
  held.finish()
  for (const reply of await Promise.all(replies)) t.equal(reply.statusCode, 200)
})

t.test('each caller\'s share (by default CONCURRENCY - 1 slots, half the queue): beyond it, 429 CONCURRENCY_LIMITED with Retry-After; another caller runs, and takes a full queue\'s place from it', async t => {
  const held = new HeldRun()
  const fake = new FakeBackend('nsjail', { run: held.run })
  // A share of 2 slots of 3, and 2 places of the queue of 4.
  const { app } = await build(t, { env: { CONCURRENCY: '3', QUEUE_SIZE: '4' }, backends: [fake] })
  const running = [execute(app), execute(app)]
  await held.started(2)
  // The queue is anyone's while it has room: the first caller fills it.
  const waiting = [execute(app), execute(app), execute(app), execute(app)]
  await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(held.requests.length, 2, 'its share of the slots: 2 of 3, though one is free')
  t.equal(app.sandbox.slots.queued, 4, 'the whole queue')
  const limited = await execute(app)
  t.equal(limited.statusCode, 429)
  t.equal(limited.headers['retry-after'], '1')
  t.match(limited.json(), { statusCode: 429, error: 'Too Many Requests', code: 'CONCURRENCY_LIMITED', message: /\b2 running and 4 waiting\b/, requestId: limited.headers['x-request-id'] })
  t.equal(held.requests.length, 2, 'the refused request did not run')

  const other = executeFrom(app, '192.0.2.1')
  await held.started(3)
  t.equal(app.sandbox.slots.running, 3, 'another caller takes the free slot at once')

  // A third caller finds no slot and the queue full: it takes the place of the first caller's
  // newest waiter, which is beyond the first caller's share of the queue.
  const THIRD = 'def main():\n    return 3\n'
  const third = executeFrom(app, '192.0.2.2', THIRD)
  const displaced = await waiting[3]
  t.equal(displaced?.statusCode, 429, 'the newest waiter of the caller beyond its share is refused')
  t.equal(displaced?.json<{ code: string }>().code, 'CONCURRENCY_LIMITED')
  t.equal(displaced?.headers['retry-after'], '1')
  t.equal(app.sandbox.slots.queued, 4, 'the third caller waits in its place')

  held.finish(success('first round'))
  await held.started(6)
  t.same(held.requests.slice(3).map(r => r.script), [THIRD, HELLO, HELLO], 'the freed slots: the third caller (holding none) first, then the first caller, within its share')
  t.same((await Promise.all([other, ...running])).map(reply => reply.statusCode), [200, 200, 200])
  held.finish(success('second round'))
  await held.started(7)
  held.finish(success('last'))
  t.same((await Promise.all([third, ...waiting.slice(0, 3)])).map(reply => reply.statusCode), [200, 200, 200, 200], 'the third caller and the first caller\'s waiters still in the queue all ran')
  t.equal(app.sandbox.slots.running + app.sandbox.slots.queued, 0)
})

t.test('RATE_LIMITED 429 with Retry-After beyond RATE_LIMIT_MAX; health, readiness and the docs are not limited', async t => {
  const fake = new FakeBackend('nsjail')
  const { app } = await build(t, { env: { RATE_LIMIT_MAX: '2' }, backends: [fake] })
  const allowed = await execute(app)
  t.equal(allowed.statusCode, 200)
  t.match(allowed.headers, { 'ratelimit-limit': '2', 'ratelimit-remaining': '1', 'ratelimit-reset': /^\d+$/ }, 'the RateLimit-* headers (the IETF draft\'s names)')
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
    t.notOk(reply.headers['ratelimit-limit'] ?? reply.headers['x-ratelimit-limit'], 'no rate-limit headers')
  }
  for (let i = 0; i < 5; i++) t.equal((await app.inject({ method: 'GET', url: '/nope' })).statusCode, 404)
})
