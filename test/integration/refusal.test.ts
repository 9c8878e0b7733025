// Failing closed, with real backends over real HTTP: when no permitted backend passes its probe,
// the service starts, /readyz says why, and /execute refuses. `direct` is never a silent fallback.
import t from 'tap'
import { HELLO, externalUrl, get, post, startServer } from '../helpers/server.js'

if (externalUrl !== undefined) {
  t.pass('skipped: needs servers of its own')
} else {
  const broken = { SANDBOX_PYTHON: '/nonexistent/python3' }

  t.test('no permitted backend passes: 503 SANDBOX_UNAVAILABLE, /readyz gives every reason', async t => {
    const target = await startServer(broken)
    t.teardown(target.close)
    const ready = await get(target, '/readyz')
    t.equal(ready.status, 503)
    t.equal(ready.body.backend, null)
    t.same(ready.body.probes.map((p: { backend: string }) => p.backend), ['nsjail', 'unshare'], 'direct is not even probed')
    for (const probe of ready.body.probes) t.match(probe.reason, /nonexistent/)
    const reply = await post(target, HELLO)
    t.equal(reply.status, 503)
    t.equal(reply.body.code, 'SANDBOX_UNAVAILABLE')
    t.equal((await get(target, '/healthz')).status, 200, 'the process itself is alive')
  })

  t.test('a pinned backend that fails its probe is not replaced by another', async t => {
    const target = await startServer({ SANDBOX_BACKEND: 'nsjail', SANDBOX_BACKENDS: 'nsjail,unshare,direct', NSJAIL_PATH: '/bin/false' })
    t.teardown(target.close)
    const ready = await get(target, '/readyz')
    t.equal(ready.status, 503)
    t.same(ready.body.probes.map((p: { backend: string }) => p.backend), ['nsjail'])
    t.equal((await post(target, HELLO)).body.code, 'SANDBOX_UNAVAILABLE')
  })

  t.test('direct serves only when permitted, and then says so everywhere', async t => {
    const target = await startServer({ SANDBOX_BACKENDS: 'direct' })
    t.teardown(target.close)
    const ready = await get(target, '/readyz')
    t.equal(ready.status, 200)
    t.equal(ready.body.backend, 'direct')
    t.match(ready.body.warning, /WITHOUT ISOLATION/)
    t.equal((await post(target, HELLO)).body.backend, 'direct')
  })
}
