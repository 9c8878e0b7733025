// The direct backend: a plain child process with rlimits, a clean environment and a scratch
// directory. NO ISOLATION: it runs as the server's own user and sees the network and the file
// system. It serves only when an operator permits it explicitly (see plugins/sandbox.ts).
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Config } from '../config.js'
import type { Limits, ProbeReport, RunOutcome, RunRequest, SandboxBackend } from './backend.js'
import { HARNESS_DIR, SANDBOX_ENV, harnessArgs, runLaunch } from './launch.js'
import { probeBackend } from './probe.js'

const MiB = 1024 * 1024

export interface DirectOptions {
  python: string
  sitePackages: string
  limits: Limits
}

export function directOptions (config: Config, limits: Limits): DirectOptions {
  return { python: config.SANDBOX_PYTHON, sitePackages: config.SANDBOX_SITE_PACKAGES, limits }
}

export class DirectBackend implements SandboxBackend {
  readonly name = 'direct'

  constructor (private readonly options: DirectOptions) {}

  async probe (): Promise<ProbeReport> {
    const report = await probeBackend(request => this.run(request), this.options.limits, { isolated: false, seccomp: false })
    return report.ok ? { ...report, features: { ...report.features, isolation: 'NONE', memory: 'rlimit' } } : report
  }

  async run (request: RunRequest): Promise<RunOutcome> {
    const { limits, python, sitePackages } = this.options
    const scratch = await mkdtemp(join(tmpdir(), 'pysandbox-direct-'))
    try {
      const env = { ...SANDBOX_ENV, HOME: scratch, TMPDIR: scratch, MPLCONFIGDIR: scratch }
      return await runLaunch({
        // env -i: the environment is exactly ours, whatever a spawn hook of the server adds.
        file: '/usr/bin/env',
        args: ['-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), 'prlimit', `--as=${limits.memoryMiB * MiB}`, `--cpu=${limits.cpuSeconds}:${limits.cpuSeconds + 1}`,
          `--nproc=${limits.processes}`, `--nofile=${limits.openFiles}`, `--fsize=${limits.tmpMiB * MiB}`, '--core=0',
          '--', python, ...harnessArgs(join(HARNESS_DIR, 'run.py'), limits), sitePackages],
        env: { PATH: '/usr/bin:/bin' },
        cwd: scratch
      }, request, limits, false)
    } finally {
      await rm(scratch, { recursive: true, force: true })
    }
  }
}
