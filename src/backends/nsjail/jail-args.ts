// nsjail's command line for one jail, cold or warm, from one plain description. The policy file
// (nsjail/pysandbox.cfg) holds everything fixed; this adds what depends on the host, the slot and
// the limits. One function for both kinds of jail, so they cannot drift apart.
import { MiB } from '../../units.js'
import type { Limits } from '../backend.js'
import type { MemoryRung } from '../memory.js'
import type { PythonRuntime } from '../python-runtime.js'

/** The uid and gid every run has inside its jail. */
export const SANDBOX_UID = 65534

export interface JailSpec {
  policy: string
  limits: Limits
  rung: MemoryRung
  runtime: PythonRuntime
  /** Host directories bound read-only at other paths (the sandbox's packages, the harness). */
  binds: Array<{ source: string, target: string }>
  /** The host uid and gid the run's 65534 maps to. */
  run: { uid: number, gid: number }
  /** A warm jail starts as its zygote: uid 0 of the jail mapped to these host ids, with these
   *  capabilities (the zygote drops each run to `run`). Absent: the jail starts as the run. */
  zygote?: { uid: number, gid: number, caps: readonly string[] }
  /** nsjail's own wall-time limit (s); 0: none (the server times each run). */
  timeLimitS: number
  /** RLIMIT_CPU (s), or 'inf' when the command sets each run's. */
  cpuLimit: number | 'inf'
  /** What the jail's cgroup gets on top of the run's limits: its zygote's memory and process. */
  extra: { memoryMiB: number, processes: number }
  /** Descriptors passed into the jail (the result channel, the script). */
  passFds: readonly number[]
  command: readonly string[]
}

/** The host uid and gid a slot's runs map to: the slot's own when the server is root (uid 0 or a
 *  platform without uids), so RLIMIT_NPROC is per slot; else the server's own, the only one it has. */
export function hostIds (slot: number, uidBase: number, own: { uid: number | undefined, gid: number | undefined }): { uid: number, gid: number } {
  const id = (mine: number | undefined): number => mine === 0 || mine === undefined ? uidBase + slot : mine
  return { uid: id(own.uid), gid: id(own.gid) }
}

export function jailArgs (spec: JailSpec): string[] {
  const { limits, runtime } = spec
  const tmpfs = `size=${limits.tmpMiB * MiB},nr_inodes=${limits.tmpFiles},mode=1777`
  const args = [
    '--config', spec.policy,
    ...spec.passFds.flatMap(fd => ['--pass_fd', String(fd)]),
    // The first mapping is the identity the jail starts with.
    ...(spec.zygote === undefined
      ? []
      : ['--user', `0:${spec.zygote.uid}:1`, '--group', `0:${spec.zygote.gid}:1`, ...spec.zygote.caps.flatMap(cap => ['--cap', cap])]),
    '--user', `${SANDBOX_UID}:${spec.run.uid}:1`,
    '--group', `${SANDBOX_UID}:${spec.run.gid}:1`,
    '--time_limit', String(spec.timeLimitS),
    // Private tmpfs mounts sized per run. nsjail's --mount takes no mount flags; nosuid and
    // nodev would add nothing: no_new_privs ignores setuid bits and no one holds CAP_MKNOD.
    '--mount', `none:/tmp:tmpfs:${tmpfs}`,
    '--mount', `none:/dev/shm:tmpfs:${tmpfs}`,
    '--rlimit_cpu', String(spec.cpuLimit),
    '--rlimit_fsize', String(limits.tmpMiB),
    '--rlimit_nofile', String(limits.openFiles),
    '--rlimit_nproc', String(limits.processes),
    ...memoryArgs(spec.rung, limits, spec.extra)
  ]
  for (const path of runtime.readOnlyPaths) args.push('--bindmount_ro', path)
  if (runtime.loader !== undefined) args.push('--bindmount_ro', `${runtime.loader.source}:${runtime.loader.target}`)
  // The host's own packages inside the standard library: hidden under an empty read-only tmpfs.
  if (runtime.hostSitePackages !== undefined) args.push('--mount', `none:${runtime.hostSitePackages}:tmpfs:size=4096,mode=555`)
  for (const { source, target } of spec.binds) args.push('--bindmount_ro', `${source}:${target}`)
  args.push('--', ...spec.command)
  return args
}

/** A cgroup rung bounds the whole jail (the run plus `extra`); the rlimit rung each process. */
function memoryArgs (rung: MemoryRung, limits: Limits, extra: JailSpec['extra']): string[] {
  const bytes = String((limits.memoryMiB + extra.memoryMiB) * MiB)
  const pids = String(limits.processes + extra.processes)
  switch (rung) {
    case 'cgroupv2':
      return ['--use_cgroupv2', '--cgroup_mem_max', bytes, '--cgroup_mem_swap_max', '0', '--cgroup_pids_max', pids, '--rlimit_as', 'inf']
    case 'cgroupv1':
      return ['--cgroup_mem_max', bytes, '--cgroup_pids_max', pids, '--rlimit_as', 'inf']
    case 'rlimit':
      return ['--rlimit_as', String(limits.memoryMiB)]
  }
}

/** Memory a warm jail gets on top of LIMIT_MEMORY_MB besides the zygote's anonymous memory (MiB). */
const ZYGOTE_MARGIN_MIB = 16

/** The memory a warm jail's cgroup adds for its zygote: the anonymous memory it reported after
 *  its imports (what a memory cgroup charges; its file pages are shared), plus a margin. The
 *  rlimit rung bounds each process by itself: nothing to add. */
export function zygoteAllowanceMiB (rung: MemoryRung, zygoteAnonKiB: number): number {
  return rung === 'rlimit' ? 0 : Math.ceil(zygoteAnonKiB / 1024) + ZYGOTE_MARGIN_MIB
}

/** What the warm pool holds at most, for /readyz: per jail, and for the pool, where each slot may
 *  hold its jail and, during a hand-over, a successor holding only its zygote. */
export function warmPoolMemory (options: { rung: MemoryRung, memoryMiB: number, allowanceMiB: number, zygoteRssMiB: number, slots: number }):
{ jailMiB: number, poolMiB: number } {
  const { rung, memoryMiB, allowanceMiB, zygoteRssMiB, slots } = options
  if (rung === 'rlimit') return { jailMiB: memoryMiB, poolMiB: slots * (memoryMiB + zygoteRssMiB) }
  const jailMiB = memoryMiB + allowanceMiB
  return { jailMiB, poolMiB: slots * (jailMiB + allowanceMiB) }
}
