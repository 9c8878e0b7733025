// The unshare backend: the same jail as nsjail's, built by util-linux (unshare, mount,
// pivot_root, setpriv, prlimit) in nsjail/unshare-jail.sh; the harness installs the policy's
// seccomp filter itself (harness/seccomp.py) before the script runs. Memory, like nsjail's, is
// bounded by the strongest rung the host allows: a cgroup v2 or v1 group per execution slot
// (cgroup.ts) that the jail joins first, else RLIMIT_AS alone. Every rung passes the same canaries.
import { constants } from 'node:os'
import { resolve } from 'node:path'
import { PROJECT_ROOT } from '../../config.js'
import { MiB } from '../../units.js'
import type { Limits, ProbeReport, RunRequest, RunOutcome, SandboxBackend } from '../backend.js'
import { HARNESS_DIR, JAIL_HARNESS_DIR, JAIL_SITE_PACKAGES, SANDBOX_ENV, harnessArgs, prlimitArgs, runLaunch, startFailure, type Launch } from '../launch.js'
import { MEMORY_RUNGS, boundsWholeRun, memoryFeatures, perProcessMemoryWarning, type MemoryRung } from '../memory.js'
import { hint, probeBackend } from '../probe.js'
import { discoverPython, type PythonRuntime } from '../python-runtime.js'
import type { SpawnResult } from '../spawn.js'
import { SlotCgroups } from './cgroup.js'

export const UNSHARE_JAIL = resolve(PROJECT_ROOT, 'nsjail/unshare-jail.sh')
/** The util-linux tools the jail execs after pivot_root, bound into its root. */
const JAIL_TOOLS = ['/usr/bin/env', '/usr/bin/prlimit', '/usr/bin/setpriv', '/usr/bin/unshare']
/** util-linux before 2.39 (Debian 12 has 2.38.1) cannot re-raise SIGKILL on itself when its child
 *  died of it: it exits 1 with this complaint instead (unshare.c, signal(SIGKILL) is EINVAL). */
const SIGKILL_COMPLAINT = Buffer.from('unshare: sigprocmask unblock failed: Invalid argument\n')

export interface UnshareOptions {
  python: string
  sitePackages: string
  uidBase: number
  limits: Limits
  /** Test-only: the memory rungs to try (default: all, strongest first). */
  rungs?: MemoryRung[]
  /** Hears what an operator must know: memory bounded per process only, a run that would not die. */
  warn?: (message: string) => void
}

/** A jail that died of SIGKILL reported as such, as newer util-linux and nsjail do: a memory
 *  cgroup's OOM kill or the hard CPU limit, then. A script that prints the complaint last and
 *  exits 1 only misreports its own run. */
export function undoSigkillQuirk (spawned: SpawnResult): SpawnResult {
  const { stderr } = spawned
  if (spawned.exitCode !== 1 || !stderr.subarray(-SIGKILL_COMPLAINT.length).equals(SIGKILL_COMPLAINT)) return spawned
  return { ...spawned, exitCode: null, signal: constants.signals.SIGKILL, stderr: stderr.subarray(0, stderr.length - SIGKILL_COMPLAINT.length) }
}

/** What the jail binds read-only, as `source:target`: the interpreter, the tools it execs, the
 *  dynamic loader at its usual name, the sandbox's packages and the harness. */
export function jailBinds (runtime: PythonRuntime, sitePackages: string): string[] {
  return [
    ...runtime.readOnlyPaths.map(p => `${p}:${p}`),
    ...JAIL_TOOLS.map(p => `${p}:${p}`),
    ...(runtime.loader !== undefined ? [`${runtime.loader.source}:${runtime.loader.target}`] : []),
    `${sitePackages}:${JAIL_SITE_PACKAGES}`,
    `${HARNESS_DIR}:${JAIL_HARNESS_DIR}`
  ]
}

export class UnshareBackend implements SandboxBackend {
  readonly name = 'unshare'
  private runtime: PythonRuntime | undefined
  private rung: MemoryRung = 'rlimit'
  /** The rung the last passing probe chose; undefined before the first. */
  private chosen: MemoryRung | undefined
  private readonly cgroups = new Map<MemoryRung, SlotCgroups>()

  constructor (private readonly options: UnshareOptions) {}

  /** The slot groups of a cgroup rung, made on first use; none for the rlimit rung. */
  private slotCgroups (rung: MemoryRung): SlotCgroups | undefined {
    if (rung === 'rlimit') return undefined
    let groups = this.cgroups.get(rung)
    if (groups === undefined) {
      groups = new SlotCgroups(rung === 'cgroupv2' ? 2 : 1, this.options.limits, this.options.warn)
      this.cgroups.set(rung, groups)
    }
    return groups
  }

  launch (slot: number, rung: MemoryRung = this.rung, limits: Limits = this.options.limits): Launch {
    const runtime = this.runtime
    if (runtime === undefined) throw new Error('unshare backend used before its probe')
    const cgroups = this.slotCgroups(rung)?.join(slot, limits) ?? []
    const binds = jailBinds(runtime, this.options.sitePackages)
    const prlimits = [...prlimitArgs(limits), '--memlock=0', '--msgqueue=0']
    return {
      file: 'unshare',
      args: ['--mount', '--pid', '--net', '--ipc', '--uts', '--fork', '--kill-child', '--',
        '/bin/sh', UNSHARE_JAIL, runtime.executable, ...harnessArgs(`${JAIL_HARNESS_DIR}/run.py`, limits, { seccomp: true })],
      env: {
        PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
        JAIL_CGROUPS: cgroups.join('\n'),
        JAIL_BINDS: binds.join('\n'),
        JAIL_HIDE: runtime.hostSitePackages ?? '',
        JAIL_TMP_BYTES: String(limits.tmpMiB * MiB),
        JAIL_TMP_FILES: String(limits.tmpFiles),
        JAIL_UID: String(this.options.uidBase + slot),
        JAIL_LIMITS: prlimits.join('\n'),
        JAIL_ENV: Object.entries(SANDBOX_ENV).map(([k, v]) => `${k}=${v}`).join('\n')
      }
    }
  }

  async probe (): Promise<ProbeReport> {
    if (process.getuid?.() !== 0) {
      return { ok: false, reason: 'the unshare backend needs root to build its jail (it then drops to an unprivileged uid)' + hint('the unshare backend needs root'), features: {} }
    }
    try {
      this.runtime = await discoverPython(this.options.python)
    } catch (error) {
      return { ok: false, reason: (error as Error).message, features: {} }
    }
    const failures: string[] = []
    for (const rung of this.options.rungs ?? MEMORY_RUNGS) {
      const report = await this.probeRung(rung)
      if (!report.ok) {
        // A busy host proves nothing about this rung: neither fall to a weaker one nor fail.
        if (report.inconclusive === true) return { ...report, reason: `${rung}: ${report.reason}` }
        failures.push(`${rung}: ${report.reason}`)
        continue
      }
      if (rung === 'rlimit' && this.chosen !== 'rlimit') {
        this.options.warn?.(perProcessMemoryWarning('unshare', failures))
      }
      this.rung = this.chosen = rung
      return {
        ...report,
        features: {
          ...report.features,
          ...memoryFeatures(rung, failures),
          python: this.runtime.version
        }
      }
    }
    // The last rung (rlimits) carries the reason that matters, as for nsjail.
    return { ok: false, reason: failures.reverse().join('; '), features: {} }
  }

  /** The canaries through one rung; a cgroup rung must also stop a run whose processes each stay
   *  under RLIMIT_AS but together pass the limit (the first canaries alone would pass on it). */
  private async probeRung (rung: MemoryRung): Promise<ProbeReport> {
    return await probeBackend(request => this.runWith(request, rung), this.options.limits,
      { isolated: true, seccomp: true, memoryPerRun: boundsWholeRun(rung) })
  }

  /** One run in the slot's cgroup (if the rung has one), which is empty again when this returns.
   *  A slot's group made (or its limits written) while this process is out of descriptors is
   *  the service's failure, as a spawn's is (launch.ts startFailure): 503 BUSY. */
  private async runWith (request: RunRequest, rung: MemoryRung): Promise<RunOutcome> {
    const limits = request.limits ?? this.options.limits
    let launch: Launch
    try {
      launch = this.launch(request.slot, rung, limits)
    } catch (error) {
      throw startFailure(error)
    }
    try {
      return await runLaunch(launch, request, limits, boundsWholeRun(rung), undoSigkillQuirk)
    } finally {
      await this.slotCgroups(rung)?.settle(request.slot)
    }
  }

  async run (request: RunRequest): Promise<RunOutcome> {
    return await this.runWith(request, this.rung)
  }

  async close (): Promise<void> {
    for (const groups of this.cgroups.values()) groups.remove()
  }
}
