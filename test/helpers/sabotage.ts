// Test-only sabotage of the nsjail backend: one protection switched off at a time, after a
// clean probe, to show that the tests covering that protection fail without it. Lives in the
// tests, never in the service: nothing in configuration can reach it.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Launch } from '../../src/backends/launch.js'
import { nsjailOptions } from '../../src/backends/index.js'
import { NSJAIL_POLICY, NsjailBackend } from '../../src/backends/nsjail/backend.js'
import type { JailSpec } from '../../src/backends/nsjail/jail-args.js'
import { limitsFrom } from '../../src/backends/backend.js'
import { loadConfig } from '../../src/config.js'
import { TEST_LIMITS } from './server.js'

export const PROTECTIONS = ['network', 'readonly', 'seccomp', 'limits', 'uid'] as const
export type Protection = typeof PROTECTIONS[number]

let withoutSeccomp: string | undefined
/** The policy file without its seccomp filter, written once per test process and removed at exit. */
function policyWithoutSeccomp (): string {
  if (withoutSeccomp !== undefined) return withoutSeccomp
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-sabotage-'))
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
  withoutSeccomp = join(dir, 'no-seccomp.cfg')
  writeFileSync(withoutSeccomp, readFileSync(NSJAIL_POLICY, 'utf8').split('\n').filter(l => !l.startsWith('seccomp_string:')).join('\n'))
  return withoutSeccomp
}

function dropOptions (args: string[], names: string[]): string[] {
  return args.filter((arg, i) => !names.includes(arg) && !names.includes(args[i - 1] ?? ''))
}

export function sabotageArgs (args: string[], protection: Protection): string[] {
  const [config, policy, ...rest] = args
  switch (protection) {
    case 'network': return [config ?? '', policy ?? '', '--disable_clone_newnet', ...rest]
    case 'readonly': return [config ?? '', policy ?? '', '--rw', ...rest]
    case 'seccomp': return [config ?? '', policyWithoutSeccomp(), ...rest]
    case 'limits': return dropOptions(args, ['--rlimit_nproc', '--rlimit_nofile', '--rlimit_fsize', '--cgroup_pids_max'])
    case 'uid': return args.map(a => a.replace(/^65534:/, '0:'))
  }
}

export class SabotagedNsjail extends NsjailBackend {
  private armed = false

  constructor (private readonly protection: Protection) {
    const config = loadConfig({ ...TEST_LIMITS })
    super(nsjailOptions(config, limitsFrom(config)))
  }

  override async probe (): ReturnType<NsjailBackend['probe']> {
    const report = await super.probe()
    this.armed = true // the probe ran clean; every run after it is sabotaged
    return report
  }

  override launchJail (spec: JailSpec): Launch {
    const launch = super.launchJail(spec)
    return this.armed ? { ...launch, args: sabotageArgs(launch.args, this.protection) } : launch
  }
}
