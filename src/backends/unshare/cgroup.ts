// A memory and pids cgroup per execution slot, for a launcher that makes none of its own (the
// unshare backend). The server (root) makes a slot's group the first time the slot runs and
// writes its limits then; every later run of the slot reuses it, and is emptied out of it when
// it ends. The jail joins it as its first act, so all of a run's processes, and the kernel
// memory they cause (socket and pipe buffers, page tables), count against one limit: RLIMIT_AS
// is per process and counts user memory only. Reused rather than made per run because a memory
// cgroup removed while pages stay charged to it (the page cache of the interpreter's files)
// lingers in the kernel as a dying cgroup.
import { closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, rmdirSync, writeSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { MiB } from '../../units.js'
import type { Limits } from '../backend.js'

export type CgroupVersion = 1 | 2

/** Where hosts mount cgroups: the v2 hierarchy itself, or one v1 hierarchy per controller below. */
const CGROUP_MOUNT = '/sys/fs/cgroup'
/** The parent of our groups: in each v1 hierarchy, and in v2 (which lets only a group without
 *  processes hand controllers to its children: the parent never holds one, the slots do). */
const V1_PARENT = 'PYSANDBOX'
const V2_PARENT = 'pysandbox'
const CONTROLLERS = ['memory', 'pids'] as const
/** How long a run's processes may take to die after it ended before its slot gets a new group. */
const SETTLE_TIMEOUT_MS = 2000
const SETTLE_POLL_MS = 10

export type CgroupLimits = Pick<Limits, 'memoryMiB' | 'processes'>

/** A slot's group: in v2 one directory, in v1 one per controller (memory first). */
type Group = [string, ...string[]]

export interface SlotCgroupsOptions {
  /** The cgroup mount; only tests change it (a fake hierarchy in a temporary directory). */
  root?: string
}

let instances = 0

/** Writes a control file that must exist: O_WRONLY without O_CREAT, so a missing controller is
 *  ENOENT, never a plain file that limits nothing. */
function write (path: string, value: string): void {
  const fd = openSync(path, constants.O_WRONLY)
  try {
    writeSync(fd, value)
  } finally {
    closeSync(fd)
  }
}

function words (path: string): string[] {
  return readFileSync(path, 'utf8').split(/\s+/).filter(w => w !== '')
}

/** mkdir that accepts an existing directory (another server, or an earlier probe, made it). */
function makeDir (path: string): void {
  try {
    mkdirSync(path)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
  }
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH'
  }
}

/** This process's pid namespace, by inode: a pid means something only within it. */
function pidNamespace (): string {
  return /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? '0'
}

/** Removes the empty groups of servers that are gone (a crash leaves them); best effort. Only
 *  those of our pid namespace: a server in another one may share the hierarchy (containers that
 *  share the host's cgroups), and its pids mean nothing here. */
function sweepStale (parent: string, namespace: string): void {
  const ours = new RegExp(`^unshare-${namespace}-(\\d+)-`)
  for (const name of readdirSync(parent)) {
    const pid = Number(ours.exec(name)?.[1])
    if (Number.isInteger(pid) && pid !== process.pid && !alive(pid)) {
      try {
        rmdirSync(`${parent}/${name}`)
      } catch {
        // Still populated, or removed by another server meanwhile: left for a later sweep.
      }
    }
  }
}

/** In v2 a group's children get only the controllers in its cgroup.subtree_control. */
function enableControllers (dir: string): void {
  const missing = CONTROLLERS.filter(c => !words(`${dir}/cgroup.subtree_control`).includes(c))
  if (missing.length === 0) return
  try {
    write(`${dir}/cgroup.subtree_control`, missing.map(c => `+${c}`).join(' '))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EBUSY') throw error
    throw new Error(`cannot enable ${missing.join(' and ')} for the children of ${dir}: it holds processes, and cgroup v2 ` +
      'hands controllers only from a group without processes (the root excepted); run the server with a delegated ' +
      'subtree whose processes sit in a leaf of it, or with the host\'s cgroup namespace')
  }
}

export class SlotCgroups {
  /** Named per server process (pid namespace and pid) and backend, so that two servers on a
   *  host (or two backends in one process) never share a group. */
  private readonly namespace = pidNamespace()
  /** The start of every group name this makes: `<prefix>-<slot>`, `.<n>` after a retired one. */
  readonly prefix = `unshare-${this.namespace}-${process.pid}-${instances++}`
  /** The cgroup mount: CGROUP_MOUNT but in tests. */
  private readonly root: string
  private readonly dirs = new Map<number, Group>()
  /** Slot → how many of its groups were given up on (processes that would not die). */
  private readonly retired = new Map<number, number>()
  private readonly leftovers: string[] = []
  /** The limits last written to each group. */
  private readonly written = new WeakMap<Group, CgroupLimits>()
  private swept = false

  constructor (readonly version: CgroupVersion, private readonly limits: CgroupLimits,
    private readonly log?: (message: string) => void, options: SlotCgroupsOptions = {}) {
    this.root = options.root ?? CGROUP_MOUNT
  }

  /** The cgroup.procs files a run in `slot` joins, under `limits` (a request's own, else the
   *  defaults); the group is made on first use, and its limits written whenever they change. */
  join (slot: number, limits: CgroupLimits = this.limits): string[] {
    const dirs = this.group(slot)
    const current = this.written.get(dirs)
    if (current === undefined || current.memoryMiB !== limits.memoryMiB || current.processes !== limits.processes) {
      this.written.delete(dirs) // until every value is written: a failure leaves it to be written again
      try {
        this.writeLimits(dirs, limits, current)
      } catch (error) {
        // A new group that cannot be completed is removed; it is made again on the next try.
        if (current === undefined) {
          this.removeGroups(dirs)
          this.dirs.delete(slot)
        }
        throw error
      }
      this.written.set(dirs, { memoryMiB: limits.memoryMiB, processes: limits.processes })
    }
    return dirs.map(dir => `${dir}/cgroup.procs`)
  }

  private writeLimits (dirs: Group, limits: CgroupLimits, current: CgroupLimits | undefined): void {
    const bytes = String(limits.memoryMiB * MiB)
    if (this.version === 2) {
      const [dir] = dirs
      write(`${dir}/memory.max`, bytes)
      write(`${dir}/pids.max`, String(limits.processes))
      return
    }
    const [memory, pids] = dirs as [string, string]
    // Memory + swap, so that swap does not extend the limit. The kernel keeps memory ≤ memsw:
    // raising, memsw goes first; lowering, memory does. Absent where swap is not accounted
    // (swapaccount=0): swapped-out pages then escape the limit, which matters only with swap on.
    const memsw = `${memory}/memory.memsw.limit_in_bytes`
    const order = current !== undefined && limits.memoryMiB > current.memoryMiB ? [memsw, `${memory}/memory.limit_in_bytes`] : [`${memory}/memory.limit_in_bytes`, memsw]
    for (const file of order) if (file !== memsw || existsSync(memsw)) write(file, bytes)
    write(`${pids}/pids.max`, String(limits.processes))
  }

  private group (slot: number): Group {
    let dirs = this.dirs.get(slot)
    if (dirs === undefined) {
      const generation = this.retired.get(slot) ?? 0
      const name = `${this.prefix}-${slot}${generation > 0 ? `.${generation}` : ''}`
      try {
        dirs = this.version === 2 ? this.makeV2(name) : this.makeV1(name)
      } catch (error) {
        this.removeGroups(this.version === 2 ? [`${this.root}/${V2_PARENT}/${name}`] : CONTROLLERS.map(c => `${this.root}/${c}/${V1_PARENT}/${name}`))
        throw error
      }
      this.dirs.set(slot, dirs)
    }
    return dirs
  }

  private makeV1 (name: string): Group {
    const roots = CONTROLLERS.map(c => `${this.root}/${c}`)
    // A cgroup v1 hierarchy has `tasks`; a v2 mount or a bare tmpfs in its place must not be
    // written to: there mkdir would make a v2 group, or a plain directory that limits nothing.
    const absent = roots.filter(root => !existsSync(`${root}/tasks`))
    if (absent.length > 0) throw new Error(`no cgroup v1 hierarchy at ${absent.join(', ')}`)
    const dirs = roots.map(root => `${root}/${V1_PARENT}/${name}`)
    for (const root of roots) {
      makeDir(`${root}/${V1_PARENT}`)
      if (!this.swept) sweepStale(`${root}/${V1_PARENT}`, this.namespace)
    }
    this.swept = true
    for (const dir of dirs) makeDir(dir)
    return dirs as Group
  }

  private makeV2 (name: string): Group {
    if (!existsSync(`${this.root}/cgroup.controllers`)) throw new Error(`no cgroup v2 hierarchy at ${this.root}`)
    const offered = words(`${this.root}/cgroup.controllers`)
    const missing = CONTROLLERS.filter(c => !offered.includes(c))
    if (missing.length > 0) {
      throw new Error(`the cgroup v2 hierarchy at ${this.root} offers no ${missing.join(' or ')} controller (bound to cgroup v1, or not delegated)`)
    }
    const parent = `${this.root}/${V2_PARENT}`
    enableControllers(this.root)
    makeDir(parent)
    if (!this.swept) sweepStale(parent, this.namespace)
    this.swept = true
    enableControllers(parent)
    const dir = `${parent}/${name}`
    makeDir(dir)
    // Absent where swap is not accounted: swapped-out pages then escape the limit (as under v1).
    if (existsSync(`${dir}/memory.swap.max`)) write(`${dir}/memory.swap.max`, '0')
    return [dir]
  }

  private members (dirs: string[]): number[] {
    return [...new Set(dirs.flatMap(dir => words(`${dir}/cgroup.procs`).map(Number)))]
  }

  /** After a run: none of its processes is left in the slot's group when this returns, so the
   *  next run starts alone under the whole limit. They normally are all gone already: unshare
   *  exits after its child, pid 1 of the run's pid namespace, whose end kills every other. After
   *  a wall-time kill of unshare they die a moment later; stragglers are killed. */
  async settle (slot: number): Promise<void> {
    const dirs = this.dirs.get(slot)
    if (dirs === undefined) return
    const deadline = performance.now() + SETTLE_TIMEOUT_MS
    for (;;) {
      let pids: number[]
      try {
        pids = this.members(dirs)
      } catch (error) {
        // The group is gone (removed from outside): the next run makes it again.
        this.dirs.delete(slot)
        this.log?.(`unshare: the cgroup of slot ${slot} could not be read (${(error as Error).message}); it will be made again`)
        return
      }
      if (pids.length === 0) return
      if (performance.now() > deadline) {
        // Unkillable for now (uninterruptible sleep): their memory stays bounded by that group,
        // and the slot moves on to a new one so the next run is not charged for them.
        this.dirs.delete(slot)
        this.retired.set(slot, (this.retired.get(slot) ?? 0) + 1)
        this.leftovers.push(...dirs)
        this.log?.(`unshare: processes ${pids.join(',')} of a run in slot ${slot} did not die within ${SETTLE_TIMEOUT_MS} ms; the slot gets a new cgroup`)
        return
      }
      this.kill(dirs, pids)
      await sleep(SETTLE_POLL_MS)
    }
  }

  private kill (dirs: Group, pids: number[]): void {
    const killFile = `${dirs[0]}/cgroup.kill`
    if (this.version === 2 && existsSync(killFile)) {
      try {
        write(killFile, '1') // the whole group at once (Linux 5.14+): no pid can be reused meanwhile
        return
      } catch {
        // Fall back to one pid at a time.
      }
    }
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // Already gone.
      }
    }
  }

  /** Removes every group this made (empty ones; a populated one stays for a later sweep). The
   *  parents stay: other servers may be using them. */
  remove (): void {
    this.removeGroups([...[...this.dirs.values()].flat(), ...this.leftovers])
    this.dirs.clear()
    this.leftovers.length = 0
  }

  private removeGroups (dirs: string[]): void {
    for (const dir of dirs) {
      try {
        rmdirSync(dir)
      } catch {
        // Populated still, never made, or already gone.
      }
    }
  }
}
