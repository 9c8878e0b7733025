// Sabotage of a session jail's own protections (test/helpers/sessions.ts): a copy of harness/
// whose session.py has the freeze between calls, the per-call CPU budget, the idle watch or the
// parent's identity (uid 0 of the jail) switched off is bound into the jail in place of the real
// one; the attack of the matching deny test in session-jail.test.ts must then get through.
import t from 'tap'
import { ROOT, SESSIONS, cpuOverBudget, idleBusyProcess, idleThaw, nonDumpableChild, sabotagedSessionBackend, sessionBackend } from '../helpers/sessions.js'

const keepAlive = setInterval(() => {}, 1000)
t.teardown(() => clearInterval(keepAlive))

t.test('with the freeze sabotaged, a background process runs while the session is idle', ROOT, async t => {
  const backend = await sessionBackend({ ...SESSIONS, spares: 0 }, sabotagedSessionBackend('freeze'))
  t.teardown(async () => await backend.close())
  const session = await backend.openSession()
  const { breached, idleTicks } = await idleBusyProcess(session)
  t.equal(breached, true, `idle: ${idleTicks} ticks of CPU in 1 s`)
  session.close('test over')
})

t.test('with the CPU budget sabotaged, a busy loop runs until its wall time', ROOT, async t => {
  const backend = await sessionBackend({ ...SESSIONS, spares: 0 }, sabotagedSessionBackend('cpu'))
  t.teardown(async () => await backend.close())
  const session = await backend.openSession()
  const { breached, message, ms } = await cpuOverBudget(session)
  t.equal(breached, true, `${message} after ${Math.round(ms)} ms`)
})

t.test('with the idle watch sabotaged, processes thawed by a SIGCONT timer keep running while idle', ROOT, async t => {
  const backend = await sessionBackend({ ...SESSIONS, spares: 0 }, sabotagedSessionBackend('idle-watch'))
  t.teardown(async () => await backend.close())
  const session = await backend.openSession()
  const { breached, endedAfterMs, idleTicks } = await idleThaw(session)
  t.equal(breached, true, `ended after ${endedAfterMs?.toFixed(0) ?? 'never'} ms, ${idleTicks} ticks of CPU while idle`)
  session.close('test over')
})

t.test('with the parent 65534 as its kernel (no uid 0 mapping), a non-dumpable child\'s CPU goes uncounted', ROOT, async t => {
  const backend = await sessionBackend({ ...SESSIONS, spares: 0 }, sabotagedSessionBackend('identity'))
  t.teardown(async () => await backend.close())
  const session = await backend.openSession()
  const { breached, code, message, ms } = await nonDumpableChild(session)
  t.equal(breached, true, `${code ?? 'ok'}: ${message} after ${Math.round(ms)} ms`)
  session.close('test over')
})
