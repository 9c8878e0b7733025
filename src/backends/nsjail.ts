// The nsjail backend: the policy in nsjail/pysandbox.cfg plus per-host and per-run arguments.
// Its probe also picks the strongest memory "rung" the host allows: a cgroup v2 or v1 memory
// limit, else an address-space rlimit. Every rung must pass the same canary.
import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import { PROJECT_ROOT, type Config } from '../config.js'
import type { Limits, ProbeReport, RunOutcome, RunRequest, SandboxBackend } from './backend.js'
import { HARNESS_DIR, JAIL_HARNESS_DIR, JAIL_SITE_PACKAGES, harnessArgs, runLaunch, type Launch } from './launch.js'
import { probeBackend, type ProbeExpectations } from './probe.js'
import { discoverPython, type PythonRuntime } from './python-runtime.js'

export const NSJAIL_POLICY = resolve(PROJECT_ROOT, 'nsjail/pysandbox.cfg')
const MiB = 1024 * 1024
const SANDBOX_UID = 65534

export type MemoryRung = 'cgroupv2' | 'cgroupv1' | 'rlimit'
const RUNGS: MemoryRung[] = ['cgroupv2', 'cgroupv1', 'rlimit']

export interface NsjailOptions {
  nsjailPath: string
  python: string
  sitePackages: string
  uidBase: number
  limits: Limits
  /** Test-only: the rungs to try (default: all, strongest first). */
  rungs?: MemoryRung[]
}

export function nsjailOptions (config: Config, limits: Limits): NsjailOptions {
  return {
    nsjailPath: config.NSJAIL_PATH,
    python: config.SANDBOX_PYTHON,
    sitePackages: config.SANDBOX_SITE_PACKAGES,
    uidBase: config.SANDBOX_UID_BASE,
    limits
  }
}

export class NsjailBackend implements SandboxBackend {
  readonly name = 'nsjail'
  private runtime: PythonRuntime | undefined
  private rung: MemoryRung = 'rlimit'

  constructor (private readonly options: NsjailOptions) {}

  /** The outside uid a slot runs as: its own when we are root, so RLIMIT_NPROC is per slot. */
  private outsideId (slot: number, own: number): number {
    return own === 0 ? this.options.uidBase + slot : own
  }

  launch (slot: number, rung: MemoryRung = this.rung): Launch {
    const runtime = this.runtime
    if (runtime === undefined) throw new Error('nsjail backend used before its probe')
    const { limits } = this.options
    const uid = this.outsideId(slot, process.getuid?.() ?? 0)
    const gid = this.outsideId(slot, process.getgid?.() ?? 0)
    const args = [
      '--config', NSJAIL_POLICY,
      '--pass_fd', '3', '--pass_fd', '4',
      '--user', `${SANDBOX_UID}:${uid}:1`,
      '--group', `${SANDBOX_UID}:${gid}:1`,
      '--time_limit', String(Math.ceil((limits.wallTimeMs + limits.killGraceMs) / 1000) + 1),
      // Private tmpfs mounts sized per run. nsjail's --mount takes no mount flags; nosuid and
      // nodev would add nothing: no_new_privs ignores setuid bits and no one holds CAP_MKNOD.
      '--mount', `none:/tmp:tmpfs:size=${limits.tmpMiB * MiB},mode=1777`,
      '--mount', `none:/dev/shm:tmpfs:size=${limits.tmpMiB * MiB},mode=1777`,
      '--rlimit_cpu', String(limits.cpuSeconds + 1),
      '--rlimit_fsize', String(limits.tmpMiB),
      '--rlimit_nofile', String(limits.openFiles),
      '--rlimit_nproc', String(limits.processes),
      ...this.memoryArgs(rung)
    ]
    for (const path of runtime.readOnlyPaths) args.push('--bindmount_ro', path)
    if (runtime.loader !== undefined) args.push('--bindmount_ro', `${runtime.loader.source}:${runtime.loader.target}`)
    if (runtime.hostSitePackages !== undefined) args.push('--mount', `none:${runtime.hostSitePackages}:tmpfs:size=4096,mode=555`)
    args.push(
      '--bindmount_ro', `${this.options.sitePackages}:${JAIL_SITE_PACKAGES}`,
      '--bindmount_ro', `${HARNESS_DIR}:${JAIL_HARNESS_DIR}`,
      '--', runtime.executable, ...harnessArgs(`${JAIL_HARNESS_DIR}/run.py`, limits)
    )
    return { file: this.options.nsjailPath, args, env: {} }
  }

  private memoryArgs (rung: MemoryRung): string[] {
    const { limits } = this.options
    const bytes = String(limits.memoryMiB * MiB)
    switch (rung) {
      case 'cgroupv2':
        return ['--use_cgroupv2', '--cgroup_mem_max', bytes, '--cgroup_mem_swap_max', '0',
          '--cgroup_pids_max', String(limits.processes), '--rlimit_as', 'inf']
      case 'cgroupv1':
        return ['--cgroup_mem_max', bytes, '--cgroup_pids_max', String(limits.processes), '--rlimit_as', 'inf']
      case 'rlimit':
        return ['--rlimit_as', String(limits.memoryMiB)]
    }
  }

  async probe (): Promise<ProbeReport> {
    try {
      this.runtime = await discoverPython(this.options.python)
    } catch (error) {
      return { ok: false, reason: (error as Error).message, features: {} }
    }
    const reasons: string[] = []
    for (const rung of this.options.rungs ?? RUNGS) {
      if (rung === 'cgroupv1') prepareCgroupV1()
      const report = await probeBackend(
        request => this.runWith(request, rung), this.options.limits, NSJAIL_EXPECTATIONS)
      if (report.ok) {
        this.rung = rung
        return { ...report, features: { ...report.features, memory: rung, python: this.runtime.version } }
      }
      reasons.push(`${rung}: ${report.reason ?? 'failed'}`)
    }
    return { ok: false, reason: reasons.join('; '), features: {} }
  }

  private async runWith (request: RunRequest, rung: MemoryRung): Promise<RunOutcome> {
    return await runLaunch(this.launch(request.slot, rung), request, this.options.limits, rung !== 'rlimit')
  }

  async run (request: RunRequest): Promise<RunOutcome> {
    return await this.runWith(request, this.rung)
  }
}

const NSJAIL_EXPECTATIONS: ProbeExpectations = {
  isolated: true,
  seccomp: true
}

/** nsjail's cgroup v1 mode needs its parent groups to exist; creating them is harmless if it fails. */
function prepareCgroupV1 (): void {
  for (const controller of ['memory', 'pids']) {
    try {
      mkdirSync(`/sys/fs/cgroup/${controller}/NSJAIL`, { recursive: true })
    } catch {
      // Not root, or no v1 hierarchy: the probe of this rung will fail and say why.
    }
  }
}
