// The nsjail backend: the policy in nsjail/pysandbox.cfg plus per-host and per-run arguments.
// Its probe also picks the strongest memory "rung" the host allows: a cgroup v2 or v1 memory
// limit, else an address-space rlimit. Every rung must pass the same canary.
import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import { PROJECT_ROOT, type Config } from '../config.js'
import { memoryFeatures, perProcessMemoryWarning, type Limits, type ProbeReport, type RunOutcome, type RunRequest, type SandboxBackend } from './backend.js'
import { CHANNEL_ENVELOPE_BYTES, HARNESS_DIR, JAIL_HARNESS_DIR, JAIL_SITE_PACKAGES, harnessArgs, runLaunch, type Launch } from './launch.js'
import { PROBE_SLOT, probeBackend, type ProbeExpectations } from './probe.js'
import { discoverPython, type PythonRuntime } from './python-runtime.js'
import { WarmPool, type WarmStats } from './warm.js'

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
  /** Warm sandboxes (docs/warm.md): one zygote jail per slot; undefined: every run is cold. */
  warm?: { slots: number, recycleRuns: number }
  log?: (message: string) => void
  /** Hears what weakens the sandbox (memory bounded per process only). */
  warn?: (message: string) => void
}

export function nsjailOptions (config: Config, limits: Limits): NsjailOptions {
  return {
    nsjailPath: config.NSJAIL_PATH,
    python: config.SANDBOX_PYTHON,
    sitePackages: config.SANDBOX_SITE_PACKAGES,
    uidBase: config.SANDBOX_UID_BASE,
    limits,
    warm: config.WARM_SANDBOXES ? { slots: config.CONCURRENCY, recycleRuns: config.WARM_RECYCLE_RUNS } : undefined
  }
}

/** Memory the zygote's jail gets on top of LIMIT_MEMORY_MB besides the zygote's own (MiB). */
const ZYGOTE_MARGIN_MIB = 16
/** While the zygote's footprint is being measured. */
const MEASURING_ALLOWANCE_MIB = 512
/** Processes of a warm jail that are not the script's: the zygote. */
const ZYGOTE_PROCESSES = 1
/** A slot's successive warm jails alternate between the host uids of slot and slot + UID_SLOTS
 *  (CONCURRENCY's maximum), so the two that overlap during a hand-over never share RLIMIT_NPROC. */
const UID_SLOTS = 256
/** A warm jail's zygote runs as uid 0 of the jail, mapped to its run's host uid + this (above
 *  every run's and probe's uid), so no run shares a uid with it (docs/warm.md). */
const ZYGOTE_UID_OFFSET = 512
/** What the zygote keeps: dropping each run to the run's uid with an empty bounding set (SETUID,
 *  SETGID, SETPCAP) and killing what the run left (KILL). No run has any capability. */
const ZYGOTE_CAPS = ['CAP_SETUID', 'CAP_SETGID', 'CAP_SETPCAP', 'CAP_KILL']

/** Replace the value after `option`, if the option is there. */
function setOption (args: string[], option: string, value: (old: string) => string): void {
  const at = args.indexOf(option)
  if (at >= 0 && at + 1 < args.length) args[at + 1] = value(args[at + 1] ?? '')
}

export class NsjailBackend implements SandboxBackend {
  readonly name = 'nsjail'
  private runtime: PythonRuntime | undefined
  private rung: MemoryRung = 'rlimit'
  private pool: WarmPool | undefined
  /** Memory a warm jail gets on top of the run's limit: the zygote's measured footprint. */
  private zygoteAllowanceMiB = MEASURING_ALLOWANCE_MIB

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
      '--mount', `none:/tmp:tmpfs:size=${limits.tmpMiB * MiB},nr_inodes=${limits.tmpFiles},mode=1777`,
      '--mount', `none:/dev/shm:tmpfs:size=${limits.tmpMiB * MiB},nr_inodes=${limits.tmpFiles},mode=1777`,
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

  /** A warm jail: the cold run's arguments (so whatever changes those changes this too), with
   *  the zygote as the command, no jail time limit (the server times each run), the CPU limit
   *  set by the zygote per run, and the zygote's own memory and processes added to the cgroup.
   *  The zygote is uid 0 of the jail (another host uid, four capabilities); each run is 65534,
   *  mapped to the slot's uid as in a cold run. */
  warmLaunch (slot: number, rung: MemoryRung = this.rung, allowanceMiB = this.zygoteAllowanceMiB): Launch {
    const cold = this.launch(slot, rung)
    const { limits } = this.options
    const end = cold.args.indexOf('--')
    const args = cold.args.slice(0, end).filter((arg, i, all) => arg !== '--pass_fd' && all[i - 1] !== '--pass_fd')
    setOption(args, '--time_limit', () => '0')
    setOption(args, '--rlimit_cpu', () => 'inf')
    setOption(args, '--cgroup_mem_max', old => String(Number(old) + allowanceMiB * MiB))
    setOption(args, '--cgroup_pids_max', old => String(Number(old) + ZYGOTE_PROCESSES))
    const uid = this.outsideId(slot, process.getuid?.() ?? 0)
    const gid = this.outsideId(slot, process.getgid?.() ?? 0)
    // The first mapping is the identity the jail starts with: the zygote's.
    const userAt = args.indexOf('--user')
    args.splice(userAt, 0, '--user', `0:${uid + ZYGOTE_UID_OFFSET}:1`, '--group', `0:${gid + ZYGOTE_UID_OFFSET}:1`,
      ...ZYGOTE_CAPS.flatMap(cap => ['--cap', cap]))
    args.push('--', cold.args[end + 1] ?? '', '-I', '-u', '-B', `${JAIL_HARNESS_DIR}/zygote.py`,
      String(limits.cpuSeconds), String(limits.resultBytes), String(limits.outputBytes),
      String(limits.resultBytes + CHANNEL_ENVELOPE_BYTES), JAIL_SITE_PACKAGES)
    return { ...cold, args }
  }

  private newPool (rung: MemoryRung, allowanceMiB: number, recycleRuns: number): WarmPool {
    const { limits } = this.options
    return new WarmPool({
      launch: (slot, generation) => this.warmLaunch(slot + ((generation - 1) % 2) * UID_SLOTS, rung, allowanceMiB),
      limits,
      channelLimit: limits.resultBytes + CHANNEL_ENVELOPE_BYTES,
      recycleRuns,
      memoryByCgroup: rung !== 'rlimit',
      log: this.options.log
    })
  }

  /** The warm path's probe: measure a zygote, then run the same canaries through a warm jail
   *  sized by that measure. Passing, it (re)starts the serving pool; failing, runs go cold. */
  private async probeWarm (rung: MemoryRung, warm: { slots: number, recycleRuns: number }): Promise<Record<string, string | number | boolean>> {
    const measuring = this.newPool(rung, MEASURING_ALLOWANCE_MIB, 1)
    const zygote = await measuring.acquire(PROBE_SLOT)
    const anonMiB = Math.ceil((zygote?.anonKiB ?? 0) / 1024)
    const rssMiB = Math.ceil((zygote?.rssKiB ?? 0) / 1024)
    await measuring.close()
    let reason = zygote === undefined ? `the zygote did not start: ${measuring.lastFailure}` : ''
    const allowanceMiB = rung === 'rlimit' ? 0 : anonMiB + ZYGOTE_MARGIN_MIB
    if (reason === '') {
      const probing = this.newPool(rung, allowanceMiB, 1000)
      try {
        const report = await probeBackend(async request => await probing.run(request.slot, request) ??
          { ok: false, code: 'CRASHED', message: `no warm sandbox: ${probing.lastFailure}`, details: {}, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false, durationMs: 0 },
        this.options.limits, { ...NSJAIL_EXPECTATIONS, memoryPerRun: rung !== 'rlimit' })
        if (!report.ok) reason = report.reason ?? 'failed'
        if (report.inconclusive === true && this.pool !== undefined) {
          // A busy host, not a broken jail: the serving pool stays as it is.
          return { warm: 'zygote', warmReason: `latest re-probe of the warm path inconclusive: ${reason}` }
        }
      } finally {
        await probing.close()
      }
    }
    if (reason !== '') {
      await this.pool?.close()
      this.pool = undefined
      this.options.log?.(`warm sandboxes OFF, every run is cold: ${reason}`)
      return { warm: 'off', warmReason: reason }
    }
    if (this.pool === undefined) { // a re-probe that passes keeps the serving pool as it is
      this.zygoteAllowanceMiB = allowanceMiB
      const pool = this.pool = this.newPool(rung, allowanceMiB, warm.recycleRuns)
      // Started after the probe has returned, so they run with whatever launch() gives then.
      setImmediate(() => pool.prewarm(warm.slots))
    }
    const jailMiB = this.options.limits.memoryMiB + this.zygoteAllowanceMiB
    return {
      warm: 'zygote',
      zygotes: warm.slots,
      zygoteMemoryMiB: rssMiB,
      zygoteAnonMemoryMiB: anonMiB,
      warmJailMemoryMiB: rung === 'rlimit' ? this.options.limits.memoryMiB : jailMiB,
      // Per slot: its jail, and during a hand-over a successor holding only its zygote.
      warmPoolMemoryMiB: warm.slots * (rung === 'rlimit' ? this.options.limits.memoryMiB + rssMiB : jailMiB + this.zygoteAllowanceMiB),
      warmRecycleRuns: warm.recycleRuns
    }
  }

  warmStats (): WarmStats | undefined {
    return this.pool?.stats
  }

  async close (): Promise<void> {
    const pool = this.pool
    this.pool = undefined
    await pool?.close()
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
        request => this.runWith(request, rung), this.options.limits, { ...NSJAIL_EXPECTATIONS, memoryPerRun: rung !== 'rlimit' })
      // A canary that ran out of time says nothing about this rung: trying a weaker one would
      // let a busy host lower the memory limit's strength.
      if (report.inconclusive === true) return report
      if (report.ok) {
        this.rung = rung
        if (rung === 'rlimit') {
          this.options.warn?.(perProcessMemoryWarning('nsjail', reasons))
        }
        const warm = this.options.warm === undefined ? { warm: 'off' } : await this.probeWarm(rung, this.options.warm)
        return {
          ...report,
          features: {
            ...report.features,
            ...memoryFeatures(rung, reasons),
            python: this.runtime.version,
            ...warm
          }
        }
      }
      reasons.push(`${rung}: ${report.reason ?? 'failed'}`)
    }
    // The last rung (rlimits) carries the reason that matters; the cgroup rungs fail in most
    // containers for reasons of their own.
    return { ok: false, reason: [...reasons].reverse().join('; '), features: {} }
  }

  private async runWith (request: RunRequest, rung: MemoryRung): Promise<RunOutcome> {
    return await runLaunch(this.launch(request.slot, rung), request, this.options.limits, rung !== 'rlimit')
  }

  async run (request: RunRequest): Promise<RunOutcome> {
    const warm = await this.pool?.run(request.slot, request)
    return warm ?? await this.runWith(request, this.rung)
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
