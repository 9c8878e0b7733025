// The server's side of a session's jail (src/backends/nsjail/session-jail.ts) against a small
// Python stand-in for harness/session.py that speaks the frame protocol well or badly. Whatever the
// jail does wrong, the call in flight resolves (never rejects), the jail is killed, and `ended`
// says why. (The real session jail, in a real nsjail: test/integration/session-jail.test.ts.)
import { join } from 'node:path'
import t, { type Test } from 'tap'
import type { Limits } from '../../src/backends/backend.js'
import { PROJECT_ROOT } from '../../src/config.js'
import { SessionJail, explainedDeath } from '../../src/backends/nsjail/session-jail.js'
import { SMALL_LIMITS } from '../helpers/small-limits.js'

// Jails are unref'd (an idle one keeps no process alive): keep the test process up meanwhile.
const keepAlive = setInterval(() => {}, 1000)
t.teardown(() => clearInterval(keepAlive))

const FAKE_SESSION = join(PROJECT_ROOT, 'test/fixtures/fake_session.py')
const LIMITS: Limits = SMALL_LIMITS

function jail (t: Test, mode: string, startTimeoutMs?: number): SessionJail {
  const session = new SessionJail({ file: '/usr/bin/python3', args: [FAKE_SESSION, mode], env: {} },
    { channelLimit: 1024, memoryByCgroup: true, ...(startTimeoutMs !== undefined ? { startTimeoutMs } : {}) })
  t.teardown(() => session.close('test over'))
  return session
}

async function call (session: SessionJail, limits: Partial<Limits> = {}): ReturnType<SessionJail['call']> {
  if (session.state === 'starting') await session.whenReady()
  return await session.call({ script: 'x', limits: { ...LIMITS, ...limits } })
}

t.test('a well-behaved session jail serves calls and reports its memory', async t => {
  const session = jail(t, 'ok')
  await t.rejects(session.call({ script: 'x', limits: LIMITS }), /not ready yet/, 'no call before ready')
  t.equal(await session.whenReady(), true)
  t.equal(await session.whenReady(), true, 'ready stays ready')
  t.match(session, { rssKiB: 2048, anonKiB: 1024, memoryKiB: 1024 })
  t.match(await call(session), { ok: true, result: 7, stdout: 'printed', stderr: 'warned' })
  t.equal(session.memoryKiB, 4096)
  t.match(await call(session), { ok: true, result: 7 })
  await t.rejects(Promise.all([call(session), call(session)]), /already running/, 'calls never overlap')
  session.close('bye')
  session.close('twice')
  t.same(await session.ended, { code: 'CLOSED', message: 'bye' })
  t.match(await call(session), { ok: false, code: 'CRASHED', message: 'the session has ended: bye' })
  t.equal(await session.whenReady(), false)
})

for (const [mode, reason] of [
  ['unknown-stream', /unknown stream 9/],
  ['huge-frame', /malformed frame \(length 1073741824\)/],
  ['wrong-call', /frame for call 2 out of turn/],
  ['malformed-status', /malformed status frame/],
  ['dies', /exited \(1\)/]
] as const) {
  t.test(`a session jail that misbehaves (${mode}) fails its call as CRASHED and ends`, async t => {
    const session = jail(t, mode)
    t.match(await call(session), { ok: false, code: 'CRASHED', message: /the session's sandbox ended before the call reported a status/, stdout: 'printed' })
    t.match(await session.ended, { code: 'CRASHED' })
    t.match(session.reason, reason)
  })
}

for (const [mode, reason] of [
  ['after-status', /frame for call 1 out of turn/],
  ['malformed-memory', /malformed memory frame/]
] as const) {
  t.test(`a session jail that misbehaves after a call answered (${mode}): the call stands, the jail ends CRASHED`, async t => {
    const session = jail(t, mode)
    t.match(await call(session), { ok: true, stdout: 'printed' })
    t.match(await session.ended, { code: 'CRASHED' })
    t.match(session.reason, reason)
  })
}

t.test('a kernel killed by the memory cgroup: MEMORY_LIMIT_EXCEEDED, and the session ends so', async t => {
  const session = jail(t, 'kernel-killed')
  t.match(await call(session), { ok: false, code: 'MEMORY_LIMIT_EXCEEDED' })
  t.match(await session.ended, { code: 'MEMORY_LIMIT_EXCEEDED' })
})

t.test('a kernel that exited 0 without a result: CRASHED', async t => {
  const session = jail(t, 'kernel-exit-0')
  t.match(await call(session), { ok: false, code: 'CRASHED', message: /status 0 before returning a result/ })
  t.match(await session.ended, { code: 'CRASHED' })
})

t.test('a call past its wall time ends the jail: TIME_LIMIT_EXCEEDED', async t => {
  const session = jail(t, 'hang')
  t.match(await call(session, { wallTimeMs: 300 }), { ok: false, code: 'TIME_LIMIT_EXCEEDED', stdout: 'printed' })
  t.match(await session.ended, { code: 'TIME_LIMIT_EXCEEDED' })
})

t.test('a result over its cap ends the jail: RESULT_TOO_LARGE', async t => {
  const session = jail(t, 'over-cap')
  t.match(await call(session), { ok: false, code: 'RESULT_TOO_LARGE' })
  t.match(await session.ended, { code: 'RESULT_TOO_LARGE' })
})

t.test('closed during a call: the call resolves CRASHED, the end is CLOSED', async t => {
  const session = jail(t, 'hang')
  const pending = call(session)
  setTimeout(() => session.close('deleted'), 200)
  t.match(await pending, { ok: false, code: 'CRASHED', message: /deleted/ })
  t.same(await session.ended, { code: 'CLOSED', message: 'deleted' })
})

for (const [mode, reason] of [
  ['malformed-ready', /malformed ready frame/],
  ['ready-twice', /unexpected ready frame/],
  ['no-ready', /did not become ready in time/]
] as const) {
  t.test(`a session jail that fails to start (${mode}) ends CRASHED`, async t => {
    const session = jail(t, mode, 500)
    await session.whenReady() // ready-twice did say ready, once
    t.match(await session.ended, { code: 'CRASHED', message: reason })
  })
}

t.test('a frame while idle, or a jail that dies idle, ends the session CRASHED', async t => {
  const idle = jail(t, 'frame-while-idle')
  t.match(await idle.ended, { code: 'CRASHED', message: /frame for call 0 out of turn/ })
  const dies = jail(t, 'dies-idle')
  t.match(await call(dies), { ok: true })
  t.match(await dies.ended, { code: 'CRASHED', message: /exited \(0\)/ })
  const thawed = jail(t, 'ran-while-idle')
  t.match(await call(thawed), { ok: true })
  t.match(await thawed.ended, { code: 'CRASHED', message: 'the session\'s sandbox ended: exited (72): a process of the session ran while the session was idle' })
})

t.test('the parent\'s own exit statuses are named with the jail\'s end; others are said as they are', async t => {
  t.equal(explainedDeath('exited (66)'), 'exited (66): a process of the session would not stop between calls')
  t.equal(explainedDeath('exited (73)'), 'exited (73): the session\'s parent did not start as uid 0 of its jail')
  t.equal(explainedDeath('exited (1)'), 'exited (1)')
  t.equal(explainedDeath('exited (SIGKILL)'), 'exited (SIGKILL)')
})

t.test('a launcher that cannot be started ends the session CRASHED', async t => {
  const session = new SessionJail({ file: '/nonexistent/nsjail', args: [], env: {} }, { channelLimit: 1024, memoryByCgroup: false })
  t.equal(await session.whenReady(), false)
  t.match(await session.ended, { code: 'CRASHED', message: /could not start/ })
})
