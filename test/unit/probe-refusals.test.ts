// Probes that fail say why, and no backend serves after one: the direct backend with an
// interpreter that cannot run, the unshare backend without root or without an interpreter.
import t, { type Test } from 'tap'
import { limitsFrom } from '../../src/backends/backend.js'
import { DirectBackend } from '../../src/backends/direct/backend.js'
import { directOptions, nsjailOptions, unshareOptions } from '../../src/backends/index.js'
import { NsjailBackend } from '../../src/backends/nsjail/backend.js'
import { UnshareBackend } from '../../src/backends/unshare/backend.js'
import { loadConfig } from '../../src/config.js'

const config = loadConfig()
const limits = limitsFrom(config)

/** Makes process.getuid answer `uid` (undefined: a platform without it) for the rest of `t`. */
function pretendUid (t: Test, uid: number | undefined): void {
  const original = process.getuid
  process.getuid = uid === undefined ? undefined : () => uid
  t.teardown(() => { process.getuid = original })
}

t.test('direct: a canary that cannot start its interpreter fails the probe', async t => {
  const backend = new DirectBackend({ ...directOptions(config, limits), python: '/bin/false' })
  const report = await backend.probe()
  t.equal(report.ok, false)
  t.match(report.reason, /^the canary failed: /)
  t.same(report.features, {}, 'no features claimed, in particular not isolation NONE')
})

t.test('unshare: not root', async t => {
  for (const uid of [1000, undefined]) {
    t.test(`getuid ${String(uid)}`, async t => {
      pretendUid(t, uid)
      const report = await new UnshareBackend(unshareOptions(config, limits)).probe()
      t.equal(report.ok, false)
      t.match(report.reason, /needs root .*\[hint: run the server as root/)
    })
  }
})

t.test('unshare: an interpreter that cannot run fails the probe before any canary', async t => {
  pretendUid(t, 0)
  const backend = new UnshareBackend({ ...unshareOptions(config, limits), python: '/nonexistent/pysandbox/python3' })
  const report = await backend.probe()
  t.equal(report.ok, false)
  t.match(report.reason, /cannot run the sandbox interpreter \/nonexistent\/pysandbox\/python3/)
  t.throws(() => backend.launch(0), /used before its probe/, 'and it cannot launch')
})

t.test('unshare: every rung fails (the sandbox\'s packages are missing): not ok, the rlimit rung\'s reason first', { skip: process.getuid?.() !== 0 ? 'builds a jail: needs root' : false }, async t => {
  const backend = new UnshareBackend({ ...unshareOptions(config, limits), sitePackages: '/nonexistent-site-packages', rungs: ['cgroupv1', 'rlimit'] })
  const report = await backend.probe()
  t.equal(report.ok, false)
  t.match(report.reason, /^rlimit: the canary failed: CRASHED: [^]*nonexistent-site-packages[^]*; cgroupv1: the canary failed/)
  t.same(report.features, {})
  await backend.close()
})

t.test('nsjail: launching before a probe found the interpreter is refused', async t => {
  const backend = new NsjailBackend(nsjailOptions(config, limits))
  t.throws(() => backend.launch(0), /used before its probe/)
})
