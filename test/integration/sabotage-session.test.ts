// Sabotage of a session jail's own protections (test/helpers/sessions.ts): a copy of harness/
// whose session.py has the freeze between calls, or the per-call CPU budget, switched off is bound
// into the jail in place of the real one; the attack of the matching deny test in
// session-jail.test.ts must then get through.
import t from 'tap'
import { ROOT, SESSIONS, cpuOverBudget, idleBusyProcess, sabotagedSessionBackend, sessionBackend } from '../helpers/sessions.js'

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
