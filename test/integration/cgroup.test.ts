// The unshare backend's slot cgroups on this host (root only): made with their limits on first
// use, reused, emptied after a run (stragglers killed; a group whose processes will not die is
// given up for a new one), removed on close. A version the host lacks must be refused, not faked.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readlinkSync, rmdirSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { once } from 'node:events'
import { SlotCgroups, type CgroupVersion } from '../../src/backends/unshare/cgroup.js'

const LIMITS = { memoryMiB: 64, processes: 8 }
const SLOT = 7
const AVAILABLE: Record<CgroupVersion, boolean> = {
  1: existsSync('/sys/fs/cgroup/memory/tasks') && existsSync('/sys/fs/cgroup/pids/tasks'),
  2: existsSync('/sys/fs/cgroup/cgroup.controllers')
}
const FREEZER = '/sys/fs/cgroup/freezer'

const read = (path: string): string => readFileSync(path, 'utf8').trim()

function sleeper (): ChildProcess {
  return spawn('sleep', ['60'], { stdio: 'ignore' })
}

async function exitSignal (child: ChildProcess): Promise<string | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.signalCode
  const [, signal] = await once(child, 'exit') as [number | null, string | null]
  return signal
}

if (process.getuid?.() !== 0) {
  t.pass('skipped: cgroups are made by root')
} else {
  for (const version of [1, 2] as const) {
    if (!AVAILABLE[version]) {
      t.test(`cgroup v${version}: absent on this host, refused`, async t => {
        const groups = new SlotCgroups(version, LIMITS)
        t.throws(() => groups.join(SLOT), version === 1 ? /no cgroup v1 hierarchy/ : /no cgroup v2 hierarchy/)
      })
      continue
    }
    t.test(`cgroup v${version}: a slot's group`, async t => {
      // Left by a server that is gone: of our pid namespace (swept), and of another (kept).
      const gone = spawn('true')
      await once(gone, 'exit')
      const namespace = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? ''
      const parents = version === 1 ? ['memory', 'pids'].map(c => `/sys/fs/cgroup/${c}/PYSANDBOX`) : ['/sys/fs/cgroup/pysandbox']
      const stale = parents.map(p => `${p}/unshare-${namespace}-${String(gone.pid)}-0-0`)
      const foreign = parents.map(p => `${p}/unshare-1-${String(gone.pid)}-0-0`)
      for (const dir of [...stale, ...foreign]) mkdirSync(dir, { recursive: true })
      t.teardown(() => { for (const dir of foreign) rmdirSync(dir) })

      const groups = new SlotCgroups(version, LIMITS)
      t.teardown(() => groups.remove())
      const procs = groups.join(SLOT)
      for (const dir of stale) t.notOk(existsSync(dir), `the group of a server that is gone is swept: ${dir}`)
      for (const dir of foreign) t.ok(existsSync(dir), `one of another pid namespace is kept: ${dir}`)
      const dirs = procs.map(p => dirname(p))
      t.equal(procs.length, version === 1 ? 2 : 1, 'memory and pids')
      for (const dir of dirs) t.match(dir, new RegExp(`/unshare-\\d+-${process.pid}-\\d+-${SLOT}$`), 'named by server and slot')

      await t.test('has the limits, swap included', async t => {
        const bytes = String(LIMITS.memoryMiB * 1024 * 1024)
        const files = version === 1
          ? { 'memory.limit_in_bytes': bytes, 'memory.memsw.limit_in_bytes': bytes, 'pids.max': String(LIMITS.processes) }
          : { 'memory.max': bytes, 'memory.swap.max': '0', 'pids.max': String(LIMITS.processes) }
        for (const [file, value] of Object.entries(files)) {
          const dir = dirs.find(d => existsSync(`${d}/${file}`))
          if (dir === undefined && file.includes('swap')) continue // swap not accounted on this kernel
          t.equal(dir === undefined ? undefined : read(`${dir}/${file}`), value, file)
        }
      })

      await t.test('is reused by the next run of the slot', async t => {
        t.same(groups.join(SLOT), procs)
      })

      await t.test('is empty after settle: a process left in it is killed', async t => {
        const child = sleeper()
        for (const p of procs) writeFileSync(p, String(child.pid))
        t.equal(read(procs[0] ?? ''), String(child.pid), 'the process is in the group')
        await groups.settle(SLOT)
        t.equal(await exitSignal(child), 'SIGKILL')
        for (const p of procs) t.equal(read(p), '', 'empty')
        t.same(groups.join(SLOT), procs, 'and kept')
      })

      await t.test('a process that cannot die makes the slot move to a new group', { skip: !existsSync(`${FREEZER}/tasks`) && 'no v1 freezer here' }, async t => {
        // A frozen task takes its SIGKILL only when thawed: as good as one in uninterruptible sleep.
        const freezer = `${FREEZER}/pysandbox-test-${process.pid}`
        mkdirSync(freezer)
        const child = sleeper()
        t.teardown(() => {
          writeFileSync(`${freezer}/freezer.state`, 'THAWED')
          return exitSignal(child).then(() => rmdirSync(freezer))
        })
        for (const p of [...procs, `${freezer}/cgroup.procs`]) writeFileSync(p, String(child.pid))
        writeFileSync(`${freezer}/freezer.state`, 'FROZEN')
        const started = performance.now()
        await groups.settle(SLOT)
        t.ok(performance.now() - started >= 1900, 'it waited for the process first')
        const next = groups.join(SLOT)
        t.not(next[0], procs[0], 'a new group')
        t.match(next[0], new RegExp(`-${SLOT}\\.1/cgroup\\.procs$`))
        t.equal(read(next[0] ?? ''), '', 'which is empty')
      })

      await t.test('is removed on close', async t => {
        groups.remove()
        for (const dir of dirs) t.notOk(existsSync(dir), dir)
      })
    })
  }
}
