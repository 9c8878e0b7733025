// What each memory rung bounds, in /readyz's words and in the warning an operator gets.
import t from 'tap'
import { MEMORY_BOUND_PER_PROCESS, MEMORY_BOUND_PER_RUN, boundsWholeRun, memoryFeatures, perProcessMemoryWarning } from '../../src/backends/memory.js'

t.test('a cgroup rung bounds the whole run; the rlimit rung each process, with why no cgroup passed', async t => {
  t.same(memoryFeatures('cgroupv1', []), { memory: 'cgroupv1', memoryBound: MEMORY_BOUND_PER_RUN })
  t.same(memoryFeatures('rlimit', []), { memory: 'rlimit', memoryBound: MEMORY_BOUND_PER_PROCESS })
  t.same(memoryFeatures('rlimit', ['cgroupv2: a', 'cgroupv1: b']), { memory: 'rlimit', memoryBound: MEMORY_BOUND_PER_PROCESS, memoryCgroups: 'cgroupv2: a; cgroupv1: b' })
  t.ok(boundsWholeRun('cgroupv2'))
  t.notOk(boundsWholeRun('rlimit'))
})

t.test('the warning names the backend, and the cgroups\' failures when there were any', async t => {
  t.match(perProcessMemoryWarning('unshare', []), /^unshare: memory is bounded per process only \(RLIMIT_AS\).*are not bounded\. See README/)
  t.notMatch(perProcessMemoryWarning('unshare', []), /no memory cgroup passed/)
  t.match(perProcessMemoryWarning('nsjail', ['cgroupv1: x']), /; no memory cgroup passed \(cgroupv1: x\)\. See README/)
})
