// Sessions over HTTP against stand-in session sandboxes (the real jail: integration/sessions*.ts):
// ids, owners, what ends a session and how later calls are told, the limits per caller and per
// instance, one call at a time. The attacks first: another caller, a guessed or foreign id, a
// resumed session, a session that outlives its timers.
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { newKey } from '../../src/access/keys.js'
import type { RunOutcome } from '../../src/backends/backend.js'
import { SessionRegistry } from '../../src/sessions/registry.js'
import { build, openThenLeave, until } from '../helpers/app.js'
import { FakeBackend, FakeSessionBackend, HeldRun, failure, success, type FakeSession } from '../helpers/fake-backend.js'

const JSON_HEADERS = { 'content-type': 'application/json' }

async function open (app: FastifyInstance, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/sessions', headers })
}

async function call (app: FastifyInstance, id: string, body: unknown = { script: 'x = 1' }, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: `/sessions/${id}/execute`, payload: JSON.stringify(body), headers: { ...JSON_HEADERS, ...headers } })
}

async function sessionsApp (t: Test, env: Record<string, string> = {}, answer?: (call: Parameters<FakeSession['call']>[0], session: FakeSession) => Promise<RunOutcome>): Promise<{ app: FastifyInstance, backend: FakeSessionBackend }> {
  const backend = new FakeSessionBackend('nsjail', answer)
  const { app } = await build(t, { env: { INSTANCE_ID: 'alpha', SESSIONS_MAX: '4', SESSIONS_PER_CALLER: '2', ...env }, backends: [backend] })
  return { app, backend }
}

function idOf (reply: LightMyRequestResponse): string {
  return (reply.json() as { id: string }).id
}

t.test('POST /sessions: 201, an unguessable id that names its instance, and when it ends', async t => {
  const { app } = await sessionsApp(t, { SESSION_IDLE_MS: '60000', SESSION_LIFETIME_MS: '120000', SESSIONS_PER_CALLER: '1' })
  const before = Date.now()
  const reply = await open(app)
  t.equal(reply.statusCode, 201)
  const body = reply.json()
  t.match(body.id, /^alpha\.[A-Za-z0-9_-]{32}$/)
  t.same({ ...body, id: 'x', createdAt: 'x', expiresAt: 'x' }, { id: 'x', instance: 'alpha', backend: 'nsjail', createdAt: 'x', lastCallAt: null, expiresAt: 'x', idleTimeoutMs: 60000, lifetimeMs: 120000, calls: 0, running: false, memoryMiB: 0, memoryLimitMiB: 256 })
  t.ok(Date.parse(body.expiresAt) >= before + 60000 && Date.parse(body.expiresAt) <= Date.now() + 60000, 'idle timeout from now')
  t.equal((await app.inject({ method: 'POST', url: '/sessions', payload: '{}', headers: JSON_HEADERS })).statusCode, 429, 'a second for one caller is over SESSIONS_PER_CALLER (1)')
  t.equal((await app.inject({ method: 'GET', url: '/sessions' })).statusCode, 405, 'no list of sessions: nothing to enumerate')
})

t.test('POST /sessions takes no fields', async t => {
  const { app } = await sessionsApp(t)
  const reply = await app.inject({ method: 'POST', url: '/sessions', payload: '{"memoryMb": 4096}', headers: JSON_HEADERS })
  t.equal(reply.statusCode, 400)
  t.match(reply.json(), { code: 'INVALID_REQUEST', message: /takes no fields/ })
  t.equal((await app.inject({ method: 'POST', url: '/sessions', payload: '[]', headers: JSON_HEADERS })).statusCode, 400)
  t.equal((await app.inject({ method: 'POST', url: '/sessions', payload: '{}', headers: JSON_HEADERS })).statusCode, 201, 'allow: {}')
})

t.test('a call runs in the session\'s sandbox with the call\'s limits and the session\'s memory, and answers as /execute', async t => {
  const { app, backend } = await sessionsApp(t, { SESSION_MEMORY_MB: '300' }, async () => success({ n: 42 }, { stdout: 'hi\n' }))
  const id = idOf(await open(app))
  const reply = await call(app, id, { script: 'n', limits: { wallMs: 2000, cpuSeconds: 2 } })
  t.equal(reply.statusCode, 200)
  t.same(reply.json(), { result: { n: 42 }, stdout: 'hi\n', stderr: '', backend: 'nsjail' })
  t.match(reply.headers['server-timing'], /queue;dur=\d+, sandbox;dur=\d+/)
  const [sent] = backend.sessions[0]?.calls ?? []
  t.match(sent, { script: 'n', limits: { wallTimeMs: 2000, cpuSeconds: 2, memoryMiB: 300 } })
  t.equal(backend.runs.length, 0, 'never a stateless run')
  const described = (await app.inject({ method: 'GET', url: `/sessions/${id}` })).json()
  t.match(described, { calls: 1, running: false })
  t.ok(described.lastCallAt !== null)
})

t.test('memory and processes cannot be set per call: they are the session\'s', async t => {
  const { app } = await sessionsApp(t)
  const id = idOf(await open(app))
  for (const limits of [{ memoryMb: 256 }, { processes: 8 }]) {
    const reply = await call(app, id, { script: 'x', limits })
    t.equal(reply.statusCode, 400)
    t.match(reply.json().message, /cannot be set per call/)
  }
})

t.test('deny: another caller gets 404 for a session that exists, as for one that does not; allow: its owner', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-sessions-keys-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const alice = newKey('alice')
  const mallory = newKey('mallory')
  writeFileSync(join(dir, 'keys'), `${alice.line}\n${mallory.line} sessions=1\n`)
  const { app, backend } = await sessionsApp(t, { API_KEYS_FILE: join(dir, 'keys') })
  const asAlice = { authorization: `Bearer ${alice.key}` }
  const asMallory = { authorization: `Bearer ${mallory.key}` }
  const id = idOf(await open(app, asAlice))
  t.equal((await open(app)).statusCode, 401, 'no key, no session')
  for (const [method, url] of [['GET', `/sessions/${id}`], ['DELETE', `/sessions/${id}`], ['POST', `/sessions/${id}/execute`]] as const) {
    const body = (script: string): object => method === 'POST' ? { payload: JSON.stringify({ script }), headers: { ...JSON_HEADERS, ...asMallory } } : { headers: asMallory }
    const stolen = await app.inject({ method, url, ...body('secret') })
    t.equal(stolen.statusCode, 404, `${method} ${url} by another key`)
    t.equal(stolen.json().code, 'SESSION_NOT_FOUND')
    const unknown = await app.inject({ method, url: url.replace(id, `alpha.${'A'.repeat(32)}`), ...body('x') })
    t.same({ ...stolen.json(), requestId: '', message: '' }, { ...unknown.json(), requestId: '', message: '' }, 'the same reply as for an id that does not exist')
    t.notMatch(stolen.json().message, 'alice')
  }
  t.equal(backend.sessions[0]?.calls.length, 0, 'the other key ran nothing in it')
  t.equal(backend.sessions[0]?.closedWith, undefined, 'nor ended it')
  t.equal((await call(app, id, { script: 'x' }, asAlice)).statusCode, 200, 'its owner reaches it')
  t.equal((await open(app, asMallory)).statusCode, 201)
  t.match((await open(app, asMallory)).json(), { code: 'SESSIONS_LIMITED', message: /1 session\(s\) open/ }, 'a key\'s own sessions=')
})

t.test('an id of another instance: 404 naming both instances; a malformed or huge id: 404', async t => {
  const { app } = await sessionsApp(t)
  const reply = await call(app, `beta.${'B'.repeat(32)}`)
  t.equal(reply.statusCode, 404)
  t.match(reply.json().message, /lives on instance beta; this is instance alpha/)
  for (const id of ['x', 'alpha.', `alpha.${'A'.repeat(31)}`, encodeURIComponent('alpha.A/../../etc'), 'y'.repeat(90)]) {
    const reply = await app.inject({ method: 'GET', url: `/sessions/${id}` })
    t.equal(reply.statusCode, 404, id)
    t.ok(reply.json().message.length < 200, 'a long id is cut in the message')
  }
  t.equal((await app.inject({ method: 'GET', url: `/sessions/${'x'.repeat(200)}` })).statusCode, 414, 'over 100 characters: the router\'s bound')
})

t.test('DELETE ends the session: its sandbox closes; later calls get 410 and cannot resume it', async t => {
  const { app, backend } = await sessionsApp(t)
  const id = idOf(await open(app))
  const deleted = await app.inject({ method: 'DELETE', url: `/sessions/${id}` })
  t.equal(deleted.statusCode, 204)
  t.equal(backend.sessions[0]?.closedWith, 'it was deleted')
  for (const reply of [await call(app, id), await app.inject({ method: 'GET', url: `/sessions/${id}` }), await app.inject({ method: 'DELETE', url: `/sessions/${id}` })]) {
    t.equal(reply.statusCode, 410)
    t.match(reply.json(), { code: 'SESSION_ENDED', endedBy: 'CLOSED', message: /ended at .*: it was deleted; open a new one/ })
  }
  t.equal(backend.sessions[0]?.calls.length, 0)
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /^pysandbox_sessions 0$/m)
  t.match(metrics, /^pysandbox_sessions_limit 4$/m)
  t.match(metrics, /^pysandbox_sessions_ended_total\{reason="deleted"\} 1$/m)
})

t.test('a call that ends its session (a limit, a crash) says so; later calls get 410 with the code', async t => {
  const { app } = await sessionsApp(t, {}, async (_call, session) => {
    session.die({ code: 'MEMORY_LIMIT_EXCEEDED', message: 'the script used more than 512 MiB of memory' })
    return failure('MEMORY_LIMIT_EXCEEDED', 'the script used more than 512 MiB of memory')
  })
  const id = idOf(await open(app))
  const reply = await call(app, id)
  t.equal(reply.statusCode, 422)
  t.match(reply.json(), { code: 'MEMORY_LIMIT_EXCEEDED', sessionEnded: true })
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /^pysandbox_sessions_ended_total\{reason="MEMORY_LIMIT_EXCEEDED"\} 1$/m)
  const later = await call(app, id)
  t.equal(later.statusCode, 410)
  t.match(later.json(), { code: 'SESSION_ENDED', endedBy: 'MEMORY_LIMIT_EXCEEDED', message: /a call ended it: MEMORY_LIMIT_EXCEEDED/ })
})

t.test('a failing call that leaves the session alive does not say it ended', async t => {
  const { app } = await sessionsApp(t, {}, async () => failure('MAIN_RAISED', 'ValueError: no'))
  const id = idOf(await open(app))
  const reply = await call(app, id)
  t.equal(reply.statusCode, 422)
  t.equal(reply.json().sessionEnded, undefined)
  t.equal((await call(app, id)).statusCode, 422, 'and it goes on')
})

t.test('one call at a time: a second is 409 SESSION_BUSY with Retry-After; GET says running', async t => {
  let release!: () => void
  const { app, backend } = await sessionsApp(t, {}, async () => { await new Promise<void>(resolve => { release = resolve }); return success(1) })
  const id = idOf(await open(app))
  const first = call(app, id)
  await until(() => backend.sessions[0]?.calls.length === 1, 'the first call')
  const second = await call(app, id)
  t.equal(second.statusCode, 409)
  t.equal(second.json().code, 'SESSION_BUSY')
  t.equal(second.headers['retry-after'], '1')
  t.equal((await app.inject({ method: 'GET', url: `/sessions/${id}` })).json().running, true)
  release()
  t.equal((await first).statusCode, 200)
  const third = call(app, id)
  await until(() => backend.sessions[0]?.calls.length === 2, 'the third call')
  release()
  t.equal((await third).statusCode, 200, 'the next call runs once the first has answered')
})

t.test('idle and lifetime: a session ends on its own, and says why', async t => {
  const { app, backend } = await sessionsApp(t, { SESSION_IDLE_MS: '1000', SESSION_LIFETIME_MS: '60000' })
  const idle = idOf(await open(app))
  await until(() => backend.sessions[0]?.closedWith !== undefined, 'the idle timeout')
  t.match((await call(app, idle)).json(), { code: 'SESSION_ENDED', message: /no call for 1000 ms \(SESSION_IDLE_MS\)/ })

  const { app: app2, backend: backend2 } = await sessionsApp(t, { SESSION_IDLE_MS: '60000', SESSION_LIFETIME_MS: '1000' })
  const short = idOf(await open(app2))
  // Calls keep it from idling, never past its lifetime.
  const deadline = Date.now() + 3000
  while (backend2.sessions[0]?.closedWith === undefined && Date.now() < deadline) {
    await call(app2, short)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.match(backend2.sessions[0]?.closedWith, /lifetime of 1000 ms/)
  t.equal((await call(app2, short)).statusCode, 410)
})

t.test('a call resets the idle timer; a call waiting for a slot is not idle time', async t => {
  const { app, backend } = await sessionsApp(t, { SESSION_IDLE_MS: '1000' })
  const id = idOf(await open(app))
  for (let i = 0; i < 4; i++) {
    await new Promise(resolve => setTimeout(resolve, 400))
    t.equal((await call(app, id)).statusCode, 200, `call ${i + 1} (${(i + 1) * 400} ms in)`)
  }
  t.equal(backend.sessions[0]?.closedWith, undefined)
})

t.test('SESSIONS_MAX bounds the instance (503 SESSIONS_FULL); an ended session frees its place', async t => {
  const { app } = await sessionsApp(t, { SESSIONS_MAX: '2', SESSIONS_PER_CALLER: '5' })
  const a = idOf(await open(app))
  idOf(await open(app))
  const full = await open(app)
  t.equal(full.statusCode, 503)
  t.match(full.json(), { code: 'SESSIONS_FULL', message: /4|2 sessions open \(SESSIONS_MAX\)/ })
  await app.inject({ method: 'DELETE', url: `/sessions/${a}` })
  t.equal((await open(app)).statusCode, 201)
})

t.test('sessions off: SESSIONS_MAX 0, or a backend that hosts none, or none ready: 503 SESSIONS_UNAVAILABLE', async t => {
  const { app: off } = await sessionsApp(t, { SESSIONS_MAX: '0' })
  t.match((await open(off)).json(), { statusCode: 503, code: 'SESSIONS_UNAVAILABLE', message: /SESSIONS_MAX is 0/ })
  const { app: unshare } = await build(t, { backends: [new FakeBackend('unshare')] })
  t.match((await open(unshare)).json(), { statusCode: 503, code: 'SESSIONS_UNAVAILABLE', message: /its backend \(unshare\) hosts none: only nsjail does/ })
  const { app: none } = await build(t, { backends: [new FakeSessionBackend('nsjail', undefined, { probe: { ok: false, reason: 'no', features: {} } })] })
  t.match((await open(none)).json(), { statusCode: 503, code: 'SESSIONS_UNAVAILABLE', message: /no sandbox backend passes its probe/ })
})

t.test('while the server drains, no session opens (503 SHUTTING_DOWN) and calls are refused as /execute\'s', async t => {
  const { app } = await sessionsApp(t)
  const id = idOf(await open(app))
  const draining = app.sandbox.drain(1000)
  const refused = await open(app)
  t.equal(refused.statusCode, 503)
  t.match(refused.json(), { code: 'SHUTTING_DOWN', message: /opens no new sessions/ })
  t.equal(refused.headers['retry-after'], '1')
  t.match((await call(app, id)).json(), { statusCode: 503, code: 'SHUTTING_DOWN' })
  await draining
})

t.test('shutdown ends every session', async t => {
  const { app, backend } = await sessionsApp(t)
  await open(app)
  await app.close()
  t.equal(backend.sessions[0]?.closedWith, 'the server is shutting down')
})

t.test('a session opened while the server shuts down is closed at once', async t => {
  let opened!: () => void
  const backend = new FakeSessionBackend('nsjail')
  backend.gate = new Promise(resolve => { opened = resolve })
  const { app } = await build(t, { backends: [backend] })
  const pending = open(app)
  await until(() => backend.opening > 0, 'the open')
  const closing = app.close()
  await new Promise(resolve => setTimeout(resolve, 50)) // the close has begun: its preClose hooks ran
  opened()
  const refused = await pending
  t.match(refused.json(), { statusCode: 503, code: 'SHUTTING_DOWN', message: /shutting down/ }, refused.payload)
  await closing
  t.equal(backend.sessions[0]?.closedWith, 'the server is shutting down')
})

t.test('a session whose sandbox fails to start because the server shuts down is 503 SHUTTING_DOWN, not SESSIONS_UNAVAILABLE', async t => {
  let fail!: (error: Error) => void
  const backend = new FakeSessionBackend('nsjail')
  backend.gate = new Promise((_resolve, reject) => { fail = reject })
  const { app } = await build(t, { backends: [backend] })
  const pending = open(app)
  await until(() => backend.opening > 0, 'the open')
  const closing = app.close()
  await new Promise(resolve => setTimeout(resolve, 50)) // the close has begun: its preClose hooks ran
  fail(new Error('the jail was closed while it started'))
  t.match((await pending).json(), { statusCode: 503, code: 'SHUTTING_DOWN' })
  await closing
})

t.test('a call the server ended (DELETE, lifetime) is 410 SESSION_ENDED, not the script\'s failure; not counted as an execution', async t => {
  let release!: () => void
  const { app, backend } = await sessionsApp(t, {}, async (_call, session) => {
    await new Promise<void>(resolve => { release = resolve })
    return session.closedWith === undefined ? success(1) : failure('CRASHED', 'the session\'s sandbox ended before the call reported a status')
  })
  const id = idOf(await open(app))
  const pending = call(app, id)
  await until(() => backend.sessions[0]?.calls.length === 1, 'the call')
  t.equal((await app.inject({ method: 'DELETE', url: `/sessions/${id}` })).statusCode, 204)
  release()
  const reply = await pending
  t.equal(reply.statusCode, 410)
  t.match(reply.json(), { code: 'SESSION_ENDED', endedBy: 'CLOSED', message: /ended during this call at .*: it was deleted/ })
  t.notMatch((await app.inject({ method: 'GET', url: '/metrics' })).body, /pysandbox_executions_total\{[^}]*outcome="CRASHED"/)
})

t.test('a sandbox that cannot start is ours: 503 SESSIONS_UNAVAILABLE, logged, nothing opened', async t => {
  const backend = new FakeSessionBackend('nsjail')
  backend.openSession = async () => { throw new Error('the session\'s sandbox did not start: exited (1)') }
  const { app, logs } = await build(t, { backends: [backend] })
  const reply = await open(app)
  t.equal(reply.statusCode, 503)
  t.match(reply.json(), { code: 'SESSIONS_UNAVAILABLE', message: /could not be started right now: nothing was opened; retry later/ })
  t.ok(logs.some(line => line.msg === 'a session\'s sandbox did not start' && JSON.stringify(line).includes('exited (1)')), 'the cause in the log')
  t.equal(app.sessions.size, 0)
  t.equal((await open(app)).statusCode, 503, 'and it does not count against the caller')
})

t.test('deny: a session whose id never reached its caller (it left while the session opened) is ended, and does not hold the caller\'s place', async t => {
  const backend = new FakeSessionBackend('nsjail')
  const { app } = await build(t, { env: { SESSIONS_PER_CALLER: '1' }, backends: [backend] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  await openThenLeave(backend, async signal => await fetch(`http://127.0.0.1:${port}/sessions`, { method: 'POST', signal }))
  t.equal(backend.sessions[0]?.closedWith, 'its id never reached its caller')
  t.equal((await fetch(`http://127.0.0.1:${port}/sessions`, { method: 'POST' })).status, 201, 'allow: the caller opens another')
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /pysandbox_sessions_ended_total\{reason="abandoned"\} 1/)
})

t.test('deny: a key held below a session\'s memory or processes, or with sessions=0, opens none (403 SESSIONS_FORBIDDEN); allow: a key at or above them', async t => {
  // A session's jail has SESSION_MEMORY_MB and LIMIT_PROCESSES whoever opens it: a key whose own
  // ceilings are lower would get more in a session than in a run (an outside review: memoryMb=128
  // ran 150 MiB and 8 processes in a session, 422 in /execute).
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-sessions-ceilings-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const keys = { small: newKey('small'), few: newKey('few'), none: newKey('none'), ample: newKey('ample'), server: newKey('server') }
  writeFileSync(join(dir, 'keys'), [
    `${keys.small.line} memoryMb=128`, `${keys.few.line} processes=4`, `${keys.none.line} sessions=0`,
    `${keys.ample.line} memoryMb=256 processes=32`, keys.server.line
  ].join('\n') + '\n')
  const limits = { SESSION_MEMORY_MB: '256', LIMIT_MEMORY_MB: '128', LIMIT_MEMORY_MB_MAX: '512', LIMIT_PROCESSES: '32', LIMIT_PROCESSES_MAX: '64' }
  const { app, backend } = await sessionsApp(t, { API_KEYS_FILE: join(dir, 'keys'), ...limits })
  const as = (key: { key: string }): Record<string, string> => ({ authorization: `Bearer ${key.key}` })
  const expected = {
    small: /its API key's memoryMb ceiling \(128\) is below a session's memory \(SESSION_MEMORY_MB, 256\)/,
    few: /its API key's processes ceiling \(4\) is below a session's processes \(LIMIT_PROCESSES, 32\)/,
    none: /its share of sessions is 0/
  }
  for (const [name, message] of Object.entries(expected)) {
    const refused = await open(app, as(keys[name as keyof typeof expected]))
    t.equal(refused.statusCode, 403, name)
    t.match(refused.json(), { code: 'SESSIONS_FORBIDDEN', message }, name)
  }
  t.equal(backend.sessions.length, 0, 'nothing opened')
  t.equal((await open(app, as(keys.ample))).statusCode, 201, 'allow: a key whose ceilings are a session\'s')
  t.equal((await open(app, as(keys.server))).statusCode, 201, 'allow: a key with the server\'s ceilings')
  // The server's own ceiling below SESSION_MEMORY_MB is the operator's choice: no caller is held back.
  const { app: lower } = await sessionsApp(t, { ...limits, LIMIT_MEMORY_MB_MAX: '200' })
  t.equal((await open(lower)).statusCode, 201, 'allow: LIMIT_MEMORY_MB_MAX (200) below SESSION_MEMORY_MB (256)')
})

/** A listening app with one slot, the caller's whole share; `hold()` takes it with a run of
 *  the same caller until `release()`, so what that caller sends next waits for it. */
async function oneSlot (t: Test, env: Record<string, string>): Promise<{ app: FastifyInstance, backend: FakeSessionBackend, url: string, hold: () => Promise<{ release: () => Promise<void> }> }> {
  const held = new HeldRun()
  const backend = new FakeSessionBackend('nsjail', undefined, { run: held.run })
  const { app } = await build(t, { env: { CONCURRENCY: '1', QUEUE_SIZE: '4', TENANT_SLOTS: '1', TENANT_QUEUE: '4', ...env }, backends: [backend] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  const hold = async (): Promise<{ release: () => Promise<void> }> => {
    const running = fetch(`${url}/execute`, { method: 'POST', body: '{"script": "x"}', headers: JSON_HEADERS })
    await held.started(1)
    return { release: async () => { held.finish(); await running } }
  }
  return { app, backend, url, hold }
}

/** Sends `init` to `url`, and leaves once it waits for a slot (after `waitMs` more); resolves when
 *  the server has given the wait up, with the time it left. */
async function leaveWhileQueued (app: FastifyInstance, url: string, init: RequestInit, waitMs = 0): Promise<number> {
  const leaving = new AbortController()
  const request = fetch(url, { ...init, signal: leaving.signal }).catch(() => undefined)
  await until(() => app.sandbox.slots.queued > 0, 'the request waits for the slot')
  await new Promise(resolve => setTimeout(resolve, waitMs))
  const left = Date.now()
  leaving.abort()
  await request
  await until(() => app.sandbox.slots.queued === 0, 'the wait given up')
  return left
}

t.test('a refusal that needs no sandbox comes at once, not after a wait for a slot', async t => {
  const { app, hold } = await oneSlot(t, { SESSIONS_PER_CALLER: '0' })
  const { release } = await hold()
  const refused = await Promise.race([open(app), new Promise<undefined>(resolve => setTimeout(resolve, 2000))])
  t.match(refused?.json(), { statusCode: 403, code: 'SESSIONS_FORBIDDEN' }, 'answered while the slot is still taken')
  await release()
})

t.test('a caller that leaves while its open waits for a slot opens nothing (its slot wait is given up)', async t => {
  const { app, backend, url, hold } = await oneSlot(t, { SESSIONS_PER_CALLER: '1' })
  const { release } = await hold()
  await leaveWhileQueued(app, `${url}/sessions`, { method: 'POST' })
  await release()
  t.equal(backend.sessions.length, 0, 'no session was opened for a caller that left')
  t.equal((await fetch(`${url}/sessions`, { method: 'POST' })).status, 201, 'allow: the caller opens one')
})

t.test('a call given up while it waited for a slot ran nothing, and is not counted (calls, lastCallAt)', async t => {
  const { app, backend, url, hold } = await oneSlot(t, { SESSION_IDLE_MS: '5000' })
  const id = idOf(await open(app))
  const { release } = await hold()
  // Waiting is not idle time: the idle timer restarts when the wait ends.
  const abandonedAt = await leaveWhileQueued(app, `${url}/sessions/${id}/execute`, { method: 'POST', body: '{"script": "x = 1"}', headers: JSON_HEADERS }, 600)
  await release()
  t.equal(backend.sessions[0]?.calls.length, 0, 'the sandbox was never called')
  await until(() => !(app.sessions.get(id, { id: 'address:127.0.0.1', sessions: 1, ceilings: { memoryMb: 512, processes: 32 } }).running), 'the call over')
  const described = (await app.inject({ method: 'GET', url: `/sessions/${id}` })).json()
  t.match(described, { calls: 0, lastCallAt: null, running: false })
  t.ok(Date.parse(described.expiresAt) >= abandonedAt + 5000 - 100, `the idle timer restarted when the wait ended, and expiresAt says so (${described.expiresAt})`)
  t.equal((await call(app, id)).statusCode, 200, 'allow: the next call runs')
  t.match((await app.inject({ method: 'GET', url: `/sessions/${id}` })).json(), { calls: 1 })
})

t.test('opening a session takes an execution slot of the caller\'s share, like a run (it may import numpy and pandas)', async t => {
  const held = new HeldRun()
  const backend = new FakeSessionBackend('nsjail', undefined, { run: held.run })
  const { app } = await build(t, { env: { CONCURRENCY: '1', QUEUE_SIZE: '0', TENANT_SLOTS: '1' }, backends: [backend] })
  const running = app.inject({ method: 'POST', url: '/execute', payload: '{"script": "x"}', headers: JSON_HEADERS })
  await held.started(1)
  const refused = await open(app)
  t.equal(refused.statusCode, 429, 'its one slot is taken')
  t.equal(refused.json().code, 'CONCURRENCY_LIMITED')
  t.equal(backend.sessions.length, 0, 'nothing opened')
  held.finish()
  t.equal((await running).statusCode, 200)
  t.equal((await open(app)).statusCode, 201)
})

t.test('the registry: opens from one caller at once are counted while they open; ended sessions are remembered within a bound, oldest forgotten first', async t => {
  const backend = new FakeSessionBackend('nsjail')
  const registry = new SessionRegistry({ instance: 'r', max: 10, idleMs: 60_000, lifetimeMs: 60_000, memoryMiB: 256, processes: 32, memoryCeilingMb: 512, endedKept: 2, draining: () => false, backend: () => ({ name: 'nsjail', open: async () => await backend.openSession() }) })
  t.teardown(() => registry.closeAll('test over'))
  const caller = { id: 'key:a', sessions: 2, ceilings: { memoryMb: 512, processes: 32 } }
  let release!: () => void
  backend.gate = new Promise(resolve => { release = resolve })
  const both = [registry.create(caller), registry.create(caller)]
  await t.rejects(registry.create(caller), { code: 'SESSIONS_LIMITED' }, 'two opening count as two')
  release()
  const [a, b] = await Promise.all(both)
  backend.gate = undefined
  registry.delete(a?.id ?? '', caller)
  registry.delete(b?.id ?? '', caller)
  const c = await registry.create(caller)
  registry.delete(c.id, caller)
  t.throws(() => registry.get(c.id, caller), { code: 'SESSION_ENDED' })
  t.throws(() => registry.get(b?.id ?? '', caller), { code: 'SESSION_ENDED' })
  t.throws(() => registry.get(a?.id ?? '', caller), { code: 'SESSION_NOT_FOUND' }, 'the oldest ended one is forgotten past the bound')
})
