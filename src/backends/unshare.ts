// The unshare backend: the same jail as nsjail's, built by util-linux (unshare, mount,
// pivot_root, setpriv, prlimit) in nsjail/unshare-jail.sh. No seccomp filter, rlimits only.
import { resolve } from 'node:path'
import { PROJECT_ROOT, type Config } from '../config.js'
import type { Limits, ProbeReport, RunRequest, RunOutcome, SandboxBackend } from './backend.js'
import { HARNESS_DIR, JAIL_HARNESS_DIR, JAIL_SITE_PACKAGES, SANDBOX_ENV, harnessArgs, runLaunch, type Launch } from './launch.js'
import { hint, probeBackend } from './probe.js'
import { discoverPython, type PythonRuntime } from './python-runtime.js'

export const UNSHARE_JAIL = resolve(PROJECT_ROOT, 'nsjail/unshare-jail.sh')
const MiB = 1024 * 1024
/** The util-linux tools the jail execs after pivot_root, bound into its root. */
const JAIL_TOOLS = ['/usr/bin/env', '/usr/bin/prlimit', '/usr/bin/setpriv', '/usr/bin/unshare']

export interface UnshareOptions {
  python: string
  sitePackages: string
  uidBase: number
  limits: Limits
}

export function unshareOptions (config: Config, limits: Limits): UnshareOptions {
  return { python: config.SANDBOX_PYTHON, sitePackages: config.SANDBOX_SITE_PACKAGES, uidBase: config.SANDBOX_UID_BASE, limits }
}

export class UnshareBackend implements SandboxBackend {
  readonly name = 'unshare'
  private runtime: PythonRuntime | undefined

  constructor (private readonly options: UnshareOptions) {}

  launch (slot: number): Launch {
    const runtime = this.runtime
    if (runtime === undefined) throw new Error('unshare backend used before its probe')
    const { limits } = this.options
    const binds = [
      ...runtime.readOnlyPaths.map(p => `${p}:${p}`),
      ...JAIL_TOOLS.map(p => `${p}:${p}`),
      ...(runtime.loader !== undefined ? [`${runtime.loader.source}:${runtime.loader.target}`] : []),
      `${this.options.sitePackages}:${JAIL_SITE_PACKAGES}`,
      `${HARNESS_DIR}:${JAIL_HARNESS_DIR}`
    ]
    const prlimits = [
      `--as=${limits.memoryMiB * MiB}`, `--cpu=${limits.cpuSeconds}:${limits.cpuSeconds + 1}`,
      `--nproc=${limits.processes}`, `--nofile=${limits.openFiles}`, `--fsize=${limits.tmpMiB * MiB}`,
      '--core=0', '--memlock=0', '--msgqueue=0'
    ]
    return {
      file: 'unshare',
      args: ['--mount', '--pid', '--net', '--ipc', '--uts', '--cgroup', '--fork', '--kill-child', '--',
        '/bin/sh', UNSHARE_JAIL, runtime.executable, ...harnessArgs(`${JAIL_HARNESS_DIR}/run.py`, limits)],
      env: {
        PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
        JAIL_BINDS: binds.join('\n'),
        JAIL_HIDE: runtime.hostSitePackages ?? '',
        JAIL_TMP_BYTES: String(limits.tmpMiB * MiB),
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
    const report = await probeBackend(request => this.run(request), this.options.limits, { isolated: true, seccomp: false })
    return report.ok ? { ...report, features: { ...report.features, memory: 'rlimit', python: this.runtime.version } } : report
  }

  async run (request: RunRequest): Promise<RunOutcome> {
    return await runLaunch(this.launch(request.slot), request, this.options.limits, false)
  }
}
