// The direct backend: a plain child process with rlimits, a clean environment and a scratch
// directory. NO ISOLATION: it runs as the server's own user and sees the network and the file
// system. It serves only when an operator permits it explicitly (see plugins/sandbox.ts).
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Limits, ProbeReport, RunOutcome, RunRequest, SandboxBackend } from '../backend.js'
import { HARNESS_DIR, SANDBOX_ENV, harnessArgs, prlimitArgs, runLaunch } from '../launch.js'
import { probeBackend } from '../probe.js'

export interface DirectOptions {
  python: string
  sitePackages: string
  limits: Limits
}

export class DirectBackend implements SandboxBackend {
  readonly name = 'direct'

  constructor (private readonly options: DirectOptions) {}

  async probe (): Promise<ProbeReport> {
    const report = await probeBackend(request => this.run(request), this.options.limits, { isolated: false, seccomp: false })
    return report.ok ? { ...report, features: { ...report.features, isolation: 'NONE', memory: 'rlimit' } } : report
  }

  async run (request: RunRequest): Promise<RunOutcome> {
    const { python, sitePackages } = this.options
    const limits = request.limits ?? this.options.limits
    const scratch = await mkdtemp(join(tmpdir(), 'pysandbox-direct-'))
    try {
      const env = { ...SANDBOX_ENV, HOME: scratch, TMPDIR: scratch, OUTPUT_DIR: join(scratch, 'output'), MPLCONFIGDIR: join(scratch, '.matplotlib') }
      return await runLaunch({
        // env -i: the environment is exactly ours, whatever a spawn hook of the server adds.
        file: '/usr/bin/env',
        args: ['-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), 'prlimit', ...prlimitArgs(limits),
          '--', python, ...harnessArgs(join(HARNESS_DIR, 'run.py'), limits), sitePackages],
        env: { PATH: '/usr/bin:/bin' },
        cwd: scratch
      }, request, limits, false)
    } finally {
      await rm(scratch, { recursive: true, force: true })
    }
  }
}
