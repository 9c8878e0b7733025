// The claim on a server's sandbox uids (its real use, two server processes, is in
// test/integration/lifecycle.test.ts).
import t from 'tap'
import { UID_BASE_SPACING, claimUidBase, uidLockNames } from '../../src/backends/uid-lock.js'
import { UID_SPAN } from '../../src/backends/uids.js'

const BASE = 1_500_000_000

t.test('a claim excludes every overlapping span until it is released; spans far enough apart never clash', async t => {
  const first = await claimUidBase(BASE)
  if (!('release' in first)) return t.fail(first.problem)
  for (const other of [BASE, BASE + 1, BASE + UID_SPAN - 1, BASE - UID_SPAN + 1]) {
    t.match(await claimUidBase(other), { problem: new RegExp(`^SANDBOX_UID_BASE=${other}: another PySandbox server on this host uses some of the same sandbox uids.*${UID_BASE_SPACING} or more apart \\(for example ${other + UID_BASE_SPACING}\\)`) }, `base ${other - BASE >= 0 ? '+' : ''}${other - BASE} overlaps`)
  }
  for (const apart of [BASE + UID_BASE_SPACING, BASE - UID_BASE_SPACING]) {
    const claim = await claimUidBase(apart)
    t.ok('release' in claim, `base ${apart - BASE > 0 ? '+' : ''}${apart - BASE} does not`)
    if ('release' in claim) claim.release()
  }
  first.release()
  await new Promise(resolve => setImmediate(resolve))
  const again = await claimUidBase(BASE + 1)
  t.ok('release' in again, 'released: the uids can be claimed again')
  if ('release' in again) again.release()
})

t.test('the names: abstract sockets (nothing on disk), one per block of uids the span touches', async t => {
  const aligned = Math.ceil(BASE / UID_SPAN) * UID_SPAN
  t.equal(uidLockNames(aligned).length, 1, 'an aligned span is one block')
  t.equal(uidLockNames(aligned + 1).length, 2, 'any other touches two')
  for (const name of uidLockNames(BASE)) t.match(name, /^\0pysandbox-uids-/)
})
