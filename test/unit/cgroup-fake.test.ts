// The unshare backend's slot cgroups on a fake cgroup file system (a temporary directory): the
// paths a host of the other cgroup version, a broken hierarchy, a group removed from outside or
// processes that will not die take, which the integration test cannot reach on its one host.
// The fake does what the kernel would on mkdir: a group's control files are made beforehand
// (SlotCgroups opens them without O_CREAT, so a missing one is a missing controller), a group
// whose files are still there is "populated" (rmdir fails), and a killed child is taken out of
// the cgroup.procs files it is listed in.
import * as fs from 'node:fs'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { SlotCgroups, type CgroupVersion } from '../../src/backends/unshare/cgroup.js'

const LIMITS = { memoryMiB: 64, processes: 8 }
const BYTES = String(LIMITS.memoryMiB * 1024 * 1024)
const SLOT = 3
const NAMESPACE = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? ''
/** A pid no process can have: kill(2) answers ESRCH. */
const NO_PID = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1

const read = (path: string): string => readFileSync(path, 'utf8').trim()

interface GroupFiles {
  /** memory.swap.max (v2) or memory.memsw.limit_in_bytes (v1): absent without swap accounting. */
  swap?: boolean
  /** v2 only: a file (Linux 5.14+), absent, or a directory (any write fails). */
  kill?: 'file' | 'absent' | 'unwritable'
}

/** A fake cgroup mount, removed afterwards. */
function scratch (t: Test): string {
  const root = mkdtempSync(join(tmpdir(), 'pysandbox-cgroup-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  return root
}

function files (dir: string, names: string[]): void {
  mkdirSync(dir, { recursive: true })
  for (const name of names) writeFileSync(`${dir}/${name}`, '')
}

/** A v2 hierarchy at `root` offering `controllers`, with our parent group. */
function hierarchyV2 (root: string, controllers = 'cpuset cpu io memory hugetlb pids'): void {
  writeFileSync(`${root}/cgroup.controllers`, controllers)
  files(root, ['cgroup.subtree_control'])
  files(`${root}/pysandbox`, ['cgroup.subtree_control'])
}

/** The v2 group `name` as mkdir in a cgroupfs makes it; its directory. */
function groupV2 (root: string, name: string, { swap = true, kill = 'file' }: GroupFiles = {}): string {
  const dir = `${root}/pysandbox/${name}`
  files(dir, ['memory.max', 'pids.max', 'cgroup.procs', ...swap ? ['memory.swap.max'] : [], ...kill === 'file' ? ['cgroup.kill'] : []])
  if (kill === 'unwritable') mkdirSync(`${dir}/cgroup.kill`)
  return dir
}

/** v1 hierarchies of memory and pids at `root`. */
function hierarchyV1 (root: string, controllers = ['memory', 'pids']): void {
  for (const c of controllers) files(`${root}/${c}`, ['tasks'])
}

/** The v1 groups `name`: their directories, memory first. */
function groupV1 (root: string, name: string, { swap = true }: GroupFiles = {}): string[] {
  const memory = `${root}/memory/PYSANDBOX/${name}`
  const pids = `${root}/pids/PYSANDBOX/${name}`
  files(memory, ['memory.limit_in_bytes', 'cgroup.procs', ...swap ? ['memory.memsw.limit_in_bytes'] : []])
  files(pids, ['pids.max', 'cgroup.procs'])
  return [memory, pids]
}

/** A group made ready for rmdir, as the kernel allows once its processes are gone. */
function emptied (dir: string): void {
  for (const name of readdirSync(dir)) rmSync(`${dir}/${name}`, { recursive: true })
}

interface Fake {
  root: string
  groups: SlotCgroups
  logged: string[]
}

function fake (t: Test, version: CgroupVersion): Fake {
  const root = scratch(t)
  const logged: string[] = []
  const groups = new SlotCgroups(version, LIMITS, m => logged.push(m), { root })
  if (version === 2) hierarchyV2(root)
  else hierarchyV1(root)
  return { root, groups, logged }
}

/** A real process to be killed, listed in the fake `procs` files until it dies (as the kernel
 *  would take it out); killed in teardown if it is still there. */
function straggler (t: Test, procs: string[], others: number[] = []): ChildProcess {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' })
  t.teardown(() => { child.kill('SIGKILL') })
  for (const p of procs) writeFileSync(p, [child.pid, ...others].join('\n') + '\n')
  child.on('exit', () => { for (const p of procs) writeFileSync(p, '') })
  return child
}

async function exitSignal (child: ChildProcess): Promise<string | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.signalCode
  const [, signal] = await once(child, 'exit') as [number | null, string | null]
  return signal
}

t.test('v2: a slot\'s group gets its limits, the controllers enabled above it', async t => {
  const { root, groups } = fake(t, 2)
  const dir = groupV2(root, `${groups.prefix}-${SLOT}`)
  const procs = groups.join(SLOT)
  t.same(procs, [`${dir}/cgroup.procs`])
  t.equal(read(`${dir}/memory.max`), BYTES)
  t.equal(read(`${dir}/memory.swap.max`), '0', 'no swap')
  t.equal(read(`${dir}/pids.max`), String(LIMITS.processes))
  t.equal(read(`${root}/cgroup.subtree_control`), '+memory +pids', 'the root hands memory and pids down')
  t.equal(read(`${root}/pysandbox/cgroup.subtree_control`), '+memory +pids', 'and so does our parent')

  writeFileSync(`${dir}/memory.max`, 'max')
  t.same(groups.join(SLOT), procs, 'reused by the next run')
  t.equal(read(`${dir}/memory.max`), 'max', 'and not made again')
})

t.test('v2: without swap accounting, and with controllers already enabled', async t => {
  const { root, groups } = fake(t, 2)
  writeFileSync(`${root}/cgroup.subtree_control`, 'cpu memory pids')
  // (A write to the fake overwrites the start of the file: the one before is shorter.)
  writeFileSync(`${root}/pysandbox/cgroup.subtree_control`, 'pids')
  const dir = groupV2(root, `${groups.prefix}-${SLOT}`, { swap: false })
  groups.join(SLOT)
  t.equal(read(`${dir}/memory.max`), BYTES)
  t.notOk(existsSync(`${dir}/memory.swap.max`), 'no swap limit made up')
  t.equal(read(`${dir}/pids.max`), String(LIMITS.processes))
  t.equal(read(`${root}/cgroup.subtree_control`), 'cpu memory pids', 'the root left as it was')
  t.equal(read(`${root}/pysandbox/cgroup.subtree_control`), '+memory', 'only the missing one enabled')
})

t.test('v2: a host without the hierarchy or its controllers is refused', async t => {
  const root = scratch(t)
  const groups = new SlotCgroups(2, LIMITS, undefined, { root })
  t.throws(() => groups.join(SLOT), { message: `no cgroup v2 hierarchy at ${root}` })
  for (const [offered, missing] of [['cpu io', 'memory or pids'], ['cpu memory', 'pids'], ['pids', 'memory']] as const) {
    writeFileSync(`${root}/cgroup.controllers`, `${offered}\n`)
    t.throws(() => groups.join(SLOT), { message: `the cgroup v2 hierarchy at ${root} offers no ${missing} controller (bound to cgroup v1, or not delegated)` }, offered)
  }
  t.notOk(existsSync(`${root}/pysandbox`), 'nothing made')

  hierarchyV2(root)
  const dir = groupV2(root, `${groups.prefix}-${SLOT}`)
  t.same(groups.join(SLOT), [`${dir}/cgroup.procs`], 'allowed once the controllers are there')
})

t.test('v2: a group that cannot be completed is removed', async t => {
  const { root, groups } = fake(t, 2)
  // mkdir makes a plain directory here: no memory.max in it, as under a parent without memory.
  t.throws(() => groups.join(SLOT), { code: 'ENOENT', message: /memory\.max/ })
  t.same(readdirSync(`${root}/pysandbox`), ['cgroup.subtree_control'], 'the half-made group is gone')
  const dir = groupV2(root, `${groups.prefix}-${SLOT}`)
  t.same(groups.join(SLOT), [`${dir}/cgroup.procs`], 'and made on the next try')
})

t.test('v2: a parent that holds processes cannot hand down controllers', async t => {
  // Only a real cgroupfs answers EBUSY (and a plain file any other error): the write is failed here.
  for (const [code, expected] of [
    ['EBUSY', { message: /^cannot enable memory and pids for the children of .*\/pysandbox: it holds processes, and cgroup v2 hands controllers only from a group without processes \(the root excepted\); run the server with a delegated subtree/ }],
    ['EACCES', { code: 'EACCES' }]
  ] as const) {
    const { SlotCgroups } = await t.mockImport<typeof import('../../src/backends/unshare/cgroup.js')>('../../src/backends/unshare/cgroup.js', {
      'node:fs': t.createMock(fs, {
        openSync: (path: fs.PathLike, flags: fs.OpenMode, mode?: fs.Mode | null): number => {
          if (String(path).endsWith('/pysandbox/cgroup.subtree_control')) throw Object.assign(new Error(`${code}: failed`), { code })
          return fs.openSync(path, flags, mode)
        }
      })
    })
    const root = scratch(t)
    hierarchyV2(root)
    const groups = new SlotCgroups(2, LIMITS, undefined, { root })
    groupV2(root, `${groups.prefix}-${SLOT}`)
    t.throws(() => groups.join(SLOT), expected, code)
    t.equal(read(`${root}/cgroup.subtree_control`), '+memory +pids', 'the root (no such constraint) was written')
  }
})

t.test('v1: a slot\'s groups get their limits, swap included where accounted', async t => {
  for (const swap of [true, false]) {
    const { root, groups } = fake(t, 1)
    const [memory, pids] = groupV1(root, `${groups.prefix}-${SLOT}`, { swap })
    t.same(groups.join(SLOT), [`${memory}/cgroup.procs`, `${pids}/cgroup.procs`])
    t.equal(read(`${memory}/memory.limit_in_bytes`), BYTES)
    if (swap) t.equal(read(`${memory}/memory.memsw.limit_in_bytes`), BYTES, 'memory + swap')
    else t.notOk(existsSync(`${memory}/memory.memsw.limit_in_bytes`), 'no memsw limit made up')
    t.equal(read(`${pids}/pids.max`), String(LIMITS.processes))
  }
})

t.test('v1: a host without the hierarchies is refused', async t => {
  const root = scratch(t)
  const groups = new SlotCgroups(1, LIMITS, undefined, { root })
  t.throws(() => groups.join(SLOT), { message: `no cgroup v1 hierarchy at ${root}/memory, ${root}/pids` })
  hierarchyV1(root, ['memory'])
  t.throws(() => groups.join(SLOT), { message: `no cgroup v1 hierarchy at ${root}/pids` }, 'pids on cgroup v2: refused too')
  t.notOk(existsSync(`${root}/memory/PYSANDBOX`), 'nothing made')
})

t.test('v1: groups that cannot be completed are removed', async t => {
  const { root, groups } = fake(t, 1)
  t.throws(() => groups.join(SLOT), { code: 'ENOENT', message: /memory\.limit_in_bytes/ })
  for (const c of ['memory', 'pids']) t.same(readdirSync(`${root}/${c}/PYSANDBOX`), [], `${c}: the half-made group is gone`)
})

t.test('v1: a parent that is no directory fails the join, and what was made is removed', async t => {
  const { root, groups } = fake(t, 1)
  groupV1(root, `${groups.prefix}-1`)
  groups.join(1)
  const parent = `${root}/pids/PYSANDBOX`
  rmSync(parent, { recursive: true })
  writeFileSync(parent, '')
  t.throws(() => groups.join(2), { code: 'ENOTDIR' })
  t.notOk(existsSync(`${root}/memory/PYSANDBOX/${groups.prefix}-2`), 'the memory group made first is gone')
})

t.test('a run with limits of its own: written before it joins, the defaults again after; unchanged limits are not written again', async t => {
  for (const version of [1, 2] as const) {
    const { root, groups } = fake(t, version)
    const name = `${groups.prefix}-${SLOT}`
    const [memory, pids = memory] = version === 1 ? groupV1(root, name) : [groupV2(root, name)]
    const files = version === 1
      ? { memory: [`${memory}/memory.limit_in_bytes`, `${memory}/memory.memsw.limit_in_bytes`], pids: `${pids}/pids.max` }
      : { memory: [`${memory}/memory.max`], pids: `${pids}/pids.max` }
    const limits = (): { memory: string[], pids: string } => ({ memory: files.memory.map(read), pids: read(files.pids) })
    const expected = (memoryMiB: number, processes: number): { memory: string[], pids: string } => ({ memory: files.memory.map(() => String(memoryMiB * 1024 * 1024)), pids: String(processes) })
    /** Empties the limit files: what is written afterwards shows, what is not stays empty. */
    const clear = (): void => { for (const file of [...files.memory, files.pids]) writeFileSync(file, '') }
    const unwritten = { memory: files.memory.map(() => ''), pids: '' }

    const procs = groups.join(SLOT)
    t.same(limits(), expected(LIMITS.memoryMiB, LIMITS.processes), `v${version}: the defaults`)
    clear()
    t.same(groups.join(SLOT, { ...LIMITS }), procs)
    t.same(limits(), unwritten, `v${version}: the same limits: not written again`)

    t.same(groups.join(SLOT, { memoryMiB: 128, processes: 16 }), procs, `v${version}: the same group`)
    t.same(limits(), expected(128, 16), `v${version}: a request's own limits`)
    clear()
    groups.join(SLOT, { memoryMiB: 128, processes: 16 })
    t.same(limits(), unwritten, `v${version}: asked for again: not written again`)
    groups.join(SLOT)
    t.same(limits(), expected(LIMITS.memoryMiB, LIMITS.processes), `v${version}: the defaults again for the next run`)
  }
})

t.test('v1: memory + swap is raised before memory, and lowered after it (the kernel keeps memory at most memsw)', async t => {
  const opened: string[] = []
  const { SlotCgroups } = await t.mockImport<typeof import('../../src/backends/unshare/cgroup.js')>('../../src/backends/unshare/cgroup.js', {
    'node:fs': t.createMock(fs, {
      openSync: (path: fs.PathLike, flags: fs.OpenMode, mode?: fs.Mode | null): number => {
        opened.push(String(path))
        return fs.openSync(path, flags, mode)
      }
    })
  })
  const root = scratch(t)
  hierarchyV1(root)
  const groups = new SlotCgroups(1, LIMITS, undefined, { root })
  const [memory = ''] = groupV1(root, `${groups.prefix}-${SLOT}`)
  const written = (): string[] => opened.splice(0).filter(path => path.startsWith(`${memory}/`)).map(path => path.slice(memory.length + 1))
  groups.join(SLOT)
  t.same(written(), ['memory.limit_in_bytes', 'memory.memsw.limit_in_bytes'], 'a new group (both unlimited): memory first')
  groups.join(SLOT, { memoryMiB: 128, processes: LIMITS.processes })
  t.same(written(), ['memory.memsw.limit_in_bytes', 'memory.limit_in_bytes'], 'raised: memsw first')
  groups.join(SLOT)
  t.same(written(), ['memory.limit_in_bytes', 'memory.memsw.limit_in_bytes'], 'lowered: memory first')
})

t.test('a group whose new limits cannot be written is kept, the run refused, and the limits written on the next try', async t => {
  let failing = false
  const { SlotCgroups } = await t.mockImport<typeof import('../../src/backends/unshare/cgroup.js')>('../../src/backends/unshare/cgroup.js', {
    'node:fs': t.createMock(fs, {
      openSync: (path: fs.PathLike, flags: fs.OpenMode, mode?: fs.Mode | null): number => {
        if (failing && String(path).endsWith('/pids.max')) throw Object.assign(new Error('EBUSY: failed'), { code: 'EBUSY' })
        return fs.openSync(path, flags, mode)
      }
    })
  })
  const root = scratch(t)
  hierarchyV2(root)
  const groups = new SlotCgroups(2, LIMITS, undefined, { root })
  const dir = groupV2(root, `${groups.prefix}-${SLOT}`)
  const procs = groups.join(SLOT)
  failing = true
  t.throws(() => groups.join(SLOT, { memoryMiB: 128, processes: 16 }), { code: 'EBUSY' })
  t.ok(existsSync(dir), 'the group is kept: it was complete')
  failing = false
  writeFileSync(`${dir}/pids.max`, '')
  t.same(groups.join(SLOT), procs, 'the same group')
  t.equal(read(`${dir}/pids.max`), String(LIMITS.processes), 'its limits written again, though they are the defaults it had: a failed write leaves them unknown')
})

t.test('the name of a server whose pid namespace cannot be told', async t => {
  const { SlotCgroups } = await t.mockImport<typeof import('../../src/backends/unshare/cgroup.js')>('../../src/backends/unshare/cgroup.js', {
    'node:fs': t.createMock(fs, { readlinkSync: () => 'pid' })
  })
  t.match(new SlotCgroups(2, LIMITS).prefix, new RegExp(`^unshare-0-${process.pid}-0$`))
})

t.test('sweep: the groups of servers that are gone, of our pid namespace, once', async t => {
  const live = spawn('sleep', ['30'], { stdio: 'ignore' })
  t.teardown(() => { live.kill('SIGKILL') })
  for (const version of [1, 2] as const) {
    const { root, groups } = fake(t, version)
    const parents = version === 1 ? ['memory', 'pids'].map(c => `${root}/${c}/PYSANDBOX`) : [`${root}/pysandbox`]
    const at = (name: string): string[] => parents.map(p => `${p}/${name}`)
    const gone = at(`unshare-${NAMESPACE}-${NO_PID}-0-0`)
    const kept = {
      'a populated one': at(`unshare-${NAMESPACE}-${NO_PID}-1-0`),
      'one of a live server': at(`unshare-${NAMESPACE}-${String(live.pid)}-0-0`),
      'one of this process': at(`unshare-${NAMESPACE}-${process.pid}-999-0`),
      'one of another pid namespace': at(`unshare-1-${NO_PID}-0-0`),
      'one not ours': at('user.slice')
    }
    for (const dir of [...gone, ...Object.values(kept).flat()]) mkdirSync(dir, { recursive: true })
    for (const dir of kept['a populated one']) writeFileSync(`${dir}/cgroup.procs`, '')
    const group = (slot: number): void => { version === 1 ? groupV1(root, `${groups.prefix}-${slot}`) : groupV2(root, `${groups.prefix}-${slot}`) }
    group(SLOT)
    groups.join(SLOT)
    for (const dir of gone) t.notOk(existsSync(dir), `v${version}: swept ${dir}`)
    for (const [what, dirs] of Object.entries(kept)) for (const dir of dirs) t.ok(existsSync(dir), `v${version}: kept ${what}`)

    const later = at(`unshare-${NAMESPACE}-${NO_PID}-2-0`)
    for (const dir of later) mkdirSync(dir)
    group(SLOT + 1)
    groups.join(SLOT + 1)
    for (const dir of later) t.ok(existsSync(dir), `v${version}: swept only when the first group is made`)
  }
})

t.test('settle: nothing to wait for', async t => {
  const { root, groups, logged } = fake(t, 2)
  await groups.settle(SLOT)
  const dir = groupV2(root, `${groups.prefix}-${SLOT}`)
  const procs = groups.join(SLOT)
  const started = performance.now()
  await groups.settle(SLOT)
  t.ok(performance.now() - started < 1000, 'an empty group: at once')
  t.equal(read(`${dir}/cgroup.kill`), '', 'nobody killed')
  t.same(groups.join(SLOT), procs, 'the group kept')
  t.same(logged, [])
})

t.test('settle: a group removed from outside is made again', async t => {
  for (const log of [true, false]) {
    const root = scratch(t)
    hierarchyV2(root)
    const logged: string[] = []
    const groups = new SlotCgroups(2, LIMITS, log ? m => logged.push(m) : undefined, { root })
    const dir = groupV2(root, `${groups.prefix}-${SLOT}`)
    const procs = groups.join(SLOT)
    rmSync(dir, { recursive: true })
    await groups.settle(SLOT)
    if (log) t.match(logged, [/^unshare: the cgroup of slot 3 could not be read \(ENOENT.*cgroup\.procs'\); it will be made again$/])
    groupV2(root, `${groups.prefix}-${SLOT}`)
    t.same(groups.join(SLOT), procs, 'the same group')
    t.equal(read(`${dir}/memory.max`), BYTES, 'made again, limits written')
  }
})

t.test('settle: stragglers are killed one by one where there is no cgroup.kill', async t => {
  for (const [version, kill] of [[1, 'absent'], [2, 'absent'], [2, 'unwritable']] as const) {
    const { root, groups, logged } = fake(t, version)
    const name = `${groups.prefix}-${SLOT}`
    if (version === 1) groupV1(root, name)
    else groupV2(root, name, { kill })
    const procs = groups.join(SLOT)
    const child = straggler(t, procs, [NO_PID])
    await groups.settle(SLOT)
    t.equal(await exitSignal(child), 'SIGKILL', `v${version}, cgroup.kill ${kill}: killed`)
    t.same(groups.join(SLOT), procs, 'the group kept')
    t.same(logged, [])
  }
})

t.test('settle: processes that will not die make the slot move to a new group', async t => {
  const { root, groups, logged } = fake(t, 2)
  const first = groupV2(root, `${groups.prefix}-${SLOT}`)
  const procs = groups.join(SLOT)
  // cgroup.kill is written, and the fake takes nobody out of the group: as if in uninterruptible sleep.
  const child = straggler(t, procs)
  const started = performance.now()
  await groups.settle(SLOT)
  t.ok(performance.now() - started >= 1900, 'it waited for them first')
  t.equal(read(`${first}/cgroup.kill`), '1', 'the group was killed at once')
  t.equal(child.signalCode, null, 'not pid by pid')
  t.same(logged, [`unshare: processes ${String(child.pid)} of a run in slot 3 did not die within 2000 ms; the slot gets a new cgroup`])

  const second = groupV2(root, `${groups.prefix}-${SLOT}.1`)
  t.same(groups.join(SLOT), [`${second}/cgroup.procs`], 'a new group')
  t.equal(read(`${second}/memory.max`), BYTES, 'with the limits')

  await t.test('both removed on close, once their processes are gone', async t => {
    child.kill('SIGKILL')
    await exitSignal(child)
    for (const dir of [first, second]) emptied(dir)
    groups.remove()
    for (const dir of [first, second]) t.notOk(existsSync(dir), dir)
  })
})

t.test('remove: every group made, a populated one skipped', async t => {
  for (const version of [1, 2] as const) {
    const { root, groups } = fake(t, version)
    const dirs = [1, 2].map(slot => {
      const name = `${groups.prefix}-${slot}`
      return version === 1 ? groupV1(root, name) : [groupV2(root, name)]
    })
    for (const slot of [1, 2]) groups.join(slot)
    const [done, populated] = dirs as [string[], string[]]
    for (const dir of done) emptied(dir)
    for (const dir of populated) for (const name of readdirSync(dir)) if (name !== 'cgroup.procs') unlinkSync(`${dir}/${name}`)
    t.doesNotThrow(() => groups.remove(), `v${version}`)
    for (const dir of done) t.notOk(existsSync(dir), `removed: ${dir}`)
    for (const dir of populated) t.ok(existsSync(dir), `left for a later sweep: ${dir}`)
    t.doesNotThrow(() => groups.remove(), 'a second close finds nothing to do')
  }
})
