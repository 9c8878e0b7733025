// nsjail's command line from one spec (src/backends/nsjail/jail-args.ts), and the warm pool's
// memory arithmetic: pure functions, checked without a jail.
import t from 'tap'
import type { Limits } from '../../src/backends/backend.js'
import { hostIds, jailArgs, warmPoolMemory, zygoteAllowanceMiB, type JailSpec } from '../../src/backends/nsjail/jail-args.js'

const MiB = 1024 * 1024
const limits: Limits = { wallTimeMs: 10_000, killGraceMs: 500, cpuSeconds: 10, memoryMiB: 512, processes: 64, openFiles: 256, tmpMiB: 64, tmpFiles: 16_384, outputBytes: MiB, resultBytes: 8 * MiB, filesOut: 100, filesOutBytes: 8 * MiB }
const runtime = { executable: '/usr/bin/python3.11', stdlib: '/usr/lib/python3.11', readOnlyPaths: ['/usr/bin/python3.11', '/usr/lib/python3.11'], loader: { source: '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', target: '/lib64/ld-linux-x86-64.so.2' }, hostSitePackages: '/usr/lib/python3.11/site-packages', version: '3.11.2' }

function spec (overrides: Partial<JailSpec> = {}): JailSpec {
  return {
    policy: '/app/nsjail/pysandbox.cfg',
    limits,
    rung: 'cgroupv1',
    runtime,
    binds: [{ source: '/app/.sandbox/site-packages', target: '/sandbox/site-packages' }],
    run: { uid: 1000, gid: 1001 },
    timeLimitS: 12,
    cpuLimit: 11,
    extra: { memoryMiB: 0, processes: 0 },
    passFds: [3, 4],
    command: ['/usr/bin/python3.11', 'run.py'],
    ...overrides
  }
}

/** The value after `option` (each occurrence). */
function values (args: string[], option: string): string[] {
  return args.flatMap((arg, i) => arg === option ? [args[i + 1] ?? ''] : [])
}

t.test('a cold jail: the policy first, the run as 65534 of the slot\'s ids, every limit, the command last', async t => {
  const args = jailArgs(spec())
  t.same(args.slice(0, 2), ['--config', '/app/nsjail/pysandbox.cfg'])
  t.same(values(args, '--pass_fd'), ['3', '4'])
  t.same(values(args, '--user'), ['65534:1000:1'])
  t.same(values(args, '--group'), ['65534:1001:1'])
  t.same(values(args, '--cap'), [])
  t.same(values(args, '--time_limit'), ['12'])
  t.same(values(args, '--rlimit_cpu'), ['11'])
  t.same(values(args, '--rlimit_fsize'), ['64'])
  t.same(values(args, '--rlimit_nofile'), ['256'])
  t.same(values(args, '--rlimit_nproc'), ['64'])
  t.same(values(args, '--cgroup_mem_max'), [String(512 * MiB)])
  t.same(values(args, '--cgroup_pids_max'), ['64'])
  t.same(values(args, '--mount'), [
    `none:/tmp:tmpfs:size=${64 * MiB},nr_inodes=16384,mode=1777`,
    `none:/dev/shm:tmpfs:size=${64 * MiB},nr_inodes=16384,mode=1777`,
    'none:/usr/lib/python3.11/site-packages:tmpfs:size=4096,mode=555'
  ], 'private /tmp and /dev/shm; the host\'s packages hidden')
  t.same(values(args, '--bindmount_ro'), ['/usr/bin/python3.11', '/usr/lib/python3.11',
    '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2:/lib64/ld-linux-x86-64.so.2', '/app/.sandbox/site-packages:/sandbox/site-packages'])
  t.same(args.slice(args.indexOf('--')), ['--', '/usr/bin/python3.11', 'run.py'])
})

t.test('a warm jail: the zygote\'s identity and capabilities first, its memory and process on top, no time limit', async t => {
  const args = jailArgs(spec({
    zygote: { uid: 1512, gid: 1513, caps: ['CAP_SETUID', 'CAP_KILL'] },
    timeLimitS: 0,
    cpuLimit: 'inf',
    extra: { memoryMiB: 100, processes: 1 },
    passFds: []
  }))
  t.same(values(args, '--pass_fd'), [])
  t.same(values(args, '--user'), ['0:1512:1', '65534:1000:1'], 'the first mapping is the identity the jail starts with')
  t.same(values(args, '--group'), ['0:1513:1', '65534:1001:1'])
  t.same(values(args, '--cap'), ['CAP_SETUID', 'CAP_KILL'])
  t.same(values(args, '--time_limit'), ['0'])
  t.same(values(args, '--rlimit_cpu'), ['inf'])
  t.same(values(args, '--cgroup_mem_max'), [String(612 * MiB)])
  t.same(values(args, '--cgroup_pids_max'), ['65'])
  t.same(values(args, '--rlimit_nproc'), ['64'], 'each uid\'s process limit stays the run\'s')
})

t.test('each memory rung: cgroup v2 with swap off, cgroup v1, or RLIMIT_AS alone (where extra memory has no place)', async t => {
  const v2 = jailArgs(spec({ rung: 'cgroupv2' }))
  t.ok(v2.includes('--use_cgroupv2'))
  t.same(values(v2, '--cgroup_mem_swap_max'), ['0'])
  t.same(values(v2, '--rlimit_as'), ['inf'])
  const v1 = jailArgs(spec({ rung: 'cgroupv1' }))
  t.notOk(v1.includes('--use_cgroupv2'))
  t.same(values(v1, '--rlimit_as'), ['inf'])
  const rlimit = jailArgs(spec({ rung: 'rlimit', extra: { memoryMiB: 100, processes: 1 } }))
  t.same(values(rlimit, '--rlimit_as'), ['512'])
  t.same(values(rlimit, '--cgroup_mem_max'), [])
  t.same(values(rlimit, '--cgroup_pids_max'), [])
})

t.test('without a loader to rename or host packages to hide, neither is mounted', async t => {
  const args = jailArgs(spec({ runtime: { ...runtime, loader: undefined, hostSitePackages: undefined } }))
  t.same(values(args, '--mount').length, 2)
  t.notOk(values(args, '--bindmount_ro').some(v => v.includes('ld-linux')))
})

t.test('the zygote\'s allowance: its anonymous memory rounded up, plus a margin; nothing under RLIMIT_AS', async t => {
  t.equal(zygoteAllowanceMiB('cgroupv1', 40 * 1024), 56)
  t.equal(zygoteAllowanceMiB('cgroupv2', 40 * 1024 + 1), 57)
  t.equal(zygoteAllowanceMiB('rlimit', 40 * 1024), 0)
})

t.test('the warm pool\'s memory: per jail, and per slot with a successor holding its zygote', async t => {
  t.same(warmPoolMemory({ rung: 'cgroupv1', memoryMiB: 512, allowanceMiB: 56, zygoteRssMiB: 90, slots: 2 }), { jailMiB: 568, poolMiB: 2 * (568 + 56) })
  t.same(warmPoolMemory({ rung: 'rlimit', memoryMiB: 512, allowanceMiB: 0, zygoteRssMiB: 90, slots: 2 }), { jailMiB: 512, poolMiB: 2 * (512 + 90) })
})

t.test('host ids: the slot\'s own as root (or without uids); an unprivileged server\'s own otherwise', async t => {
  t.same(hostIds(3, 1_900_000_000, { uid: 0, gid: 0 }), { uid: 1_900_000_003, gid: 1_900_000_003 })
  t.same(hostIds(3, 1_900_000_000, { uid: undefined, gid: undefined }), { uid: 1_900_000_003, gid: 1_900_000_003 })
  t.same(hostIds(3, 1_900_000_000, { uid: 1000, gid: 1001 }), { uid: 1000, gid: 1001 })
})
