// Sabotage: the non-destructive deny tests run against `direct`, which isolates nothing.
// Every one of them must report the breach there; a deny test that passes even without a
// sandbox proves nothing. (Bombs, kill(-1) and disk fills never run outside a sandbox.)
import t from 'tap'
import { GUARANTEES } from '../helpers/guarantees.js'
import { externalUrl, startServer, type Target } from '../helpers/server.js'

if (externalUrl !== undefined) {
  t.pass('skipped: needs a server of its own with the direct backend')
} else {
  let target: Target
  t.before(async () => { target = await startServer({ SANDBOX_BACKEND: 'direct' }) })
  t.teardown(async () => { await target.close() })

  for (const guarantee of GUARANTEES.filter(g => g.sabotageSafe)) {
    t.test(`without a sandbox the deny test catches the breach: ${guarantee.name}`, async t => {
      const attempt = await guarantee.deny(target)
      t.equal(attempt.breached, true, `breached under direct (${attempt.evidence})`)
      t.equal(await guarantee.allow(target), true, 'the allow twin works under direct too')
    })
  }
}
