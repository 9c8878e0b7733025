// Probing by doing: a canary script runs through the backend exactly as a user's would, and
// its report is checked against what the backend promises. A second canary breaks the memory
// limit to show the limit is real. A binary that merely exists proves nothing.
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { PROJECT_ROOT } from '../config.js'
import { MiB } from '../units.js'
import type { Limits, ProbeReport, RunOutcome, RunRequest } from './backend.js'
import { HARNESS_DIR, SANDBOX_ENV } from './launch.js'
import { PROBE_SLOT } from './uids.js'

export interface ProbeExpectations {
  /** Namespaces: unprivileged uid 65534, no capabilities, no network, read-only root, alone. */
  isolated: boolean
  /** A seccomp filter is installed. */
  seccomp: boolean
  /** The memory limit bounds a whole run (a cgroup rung): a third canary must show it. */
  memoryPerRun?: boolean
}

const ENETUNREACH = 101

/** Places of the server that no isolated script may see. */
function serverPaths (): string[] {
  return [...new Set([PROJECT_ROOT, process.cwd(), homedir(), '/proc/1/root/' + PROJECT_ROOT.slice(1)])]
}

// The canaries are Python files of harness/, read once. Each defines its parameters as constants
// with defaults at its top; a probe sends the file with one line appended that assigns them this
// run's values as JSON (numbers, strings and lists of them are Python literals as well), which the
// harness executes before it calls main().
const CANARY = readFileSync(join(HARNESS_DIR, 'canary.py'), 'utf8')
const MEMORY_CANARY = readFileSync(join(HARNESS_DIR, 'memory_canary.py'), 'utf8')
const SHARED_MEMORY_CANARY = readFileSync(join(HARNESS_DIR, 'shared_memory_canary.py'), 'utf8')

/** `source` with one line appended that assigns each named constant its value, as JSON. */
function withParameters (source: string, values: Record<string, number | string[]>): string {
  const names = Object.keys(values)
  return `${source.trimEnd()}\n${names.join(', ')} = ${names.map(name => JSON.stringify(values[name])).join(', ')}\n`
}

export function canaryScript (): string {
  return withParameters(CANARY, { SERVER_PATHS: serverPaths() })
}

export function memoryCanaryScript (limits: Limits): string {
  return withParameters(MEMORY_CANARY, { BLOCK_BYTES: (limits.memoryMiB + 64) * MiB })
}

interface CanaryFacts {
  uid: number
  gid: number
  /** The inheritable, permitted, effective and ambient sets. (The bounding set is empty under
   *  nsjail; under unshare it is full inside the run's own user namespace, and grants nothing
   *  there: no_new_privs, a non-zero uid and no file capabilities in the jail.) */
  caps: string[]
  noNewPrivs: string
  seccomp: string
  env: string[]
  loopback: number
  metadata: number
  interfaces: number
  rootWritable: boolean
  serverVisible: string[]
  pids: number[]
  nproc: number[]
  nofile: number[]
  fsize: number[]
  cpu: number[]
  numpy: string
  pandas: string
}

/** Every broken promise in the canary's report, in words; empty when all hold. */
export function checkFacts (facts: CanaryFacts, limits: Limits, expect: ProbeExpectations): string[] {
  const problems: string[] = []
  const want = (ok: boolean, problem: string): void => { if (!ok) problems.push(problem) }
  const envKeys = Object.keys(SANDBOX_ENV).sort()
  want(JSON.stringify(facts.env) === JSON.stringify(envKeys), `environment not clean: ${facts.env.join(',')}`)
  want(facts.nproc[0] === limits.processes, `process limit not active (RLIMIT_NPROC ${String(facts.nproc[0])})`)
  want(facts.nofile[0] === limits.openFiles, `open-file limit not active (RLIMIT_NOFILE ${String(facts.nofile[0])})`)
  want(facts.fsize[0] === limits.tmpMiB * MiB, `file-size limit not active (RLIMIT_FSIZE ${String(facts.fsize[0])})`)
  want(facts.cpu[0] === limits.cpuSeconds, `CPU limit not active (RLIMIT_CPU ${String(facts.cpu[0])})`)
  if (expect.isolated) {
    want(facts.uid === 65534 && facts.gid === 65534, `runs as uid ${facts.uid}, gid ${facts.gid}, not 65534`)
    want(facts.caps.length === 4 && facts.caps.every(set => /^0+$/.test(set)), `has capabilities (CapInh/Prm/Eff/Amb ${facts.caps.join('/')})`)
    want(facts.noNewPrivs === '1', 'no_new_privs is not set')
    want(facts.loopback === ENETUNREACH, `loopback reachable (route lookup gave errno ${facts.loopback})`)
    want(facts.metadata === ENETUNREACH, `metadata address routable (route lookup gave errno ${facts.metadata})`)
    want(facts.interfaces <= 1, `${facts.interfaces} network interfaces visible (only a loopback that is down is expected)`)
    want(!facts.rootWritable, 'the root file system is writable')
    want(facts.serverVisible.length === 0, `server paths visible: ${facts.serverVisible.join(', ')}`)
    want(facts.pids.length === 1, `other processes visible (pids ${facts.pids.join(',')})`)
  }
  if (expect.seccomp) want(facts.seccomp === '2', 'no seccomp filter')
  return problems
}

/** What a jail launcher's complaint usually means, in the words of the fix. */
const HINTS: Array<[RegExp, string]> = [
  [/mount mandatory point: '\/proc'|mount.*proc.*Operation not permitted/, '/proc is masked: run the container with --security-opt systempaths=unconfined (Kubernetes: procMount: Unmasked)'],
  [/sethostname|unshare failed: Operation not permitted|clone\(.*\) failed: Operation not permitted|CLONE_NEWUSER/, 'namespaces are refused: the container needs --cap-add SYS_ADMIN, or the host forbids user namespaces (gVisor / Cloud Run gen1 refuses them)'],
  [/[ug]id_map|setresuid|setgroups/, 'uid mapping refused: the container needs CAP_SETUID and CAP_SETGID, or SANDBOX_UID_BASE lies outside the container\'s uid map'],
  [/the unshare backend needs root/, 'run the server as root (it drops every sandbox to an unprivileged uid)']
]

export function hint (text: string): string {
  const found = HINTS.find(([pattern]) => pattern.test(text))
  return found === undefined ? '' : ` [hint: ${found[1]}]`
}

function describe (outcome: RunOutcome): string {
  if (outcome.ok) return 'succeeded'
  // Launcher log lines carry a [level][time][pid] prefix: noise in a reason.
  const stderr = outcome.stderr.replace(/\[[A-Z]\]\[[^\]]*\]\[\d+\] /g, '').slice(-500).trim()
  return `${outcome.code}: ${outcome.message}${stderr !== '' ? ` (stderr: ${stderr})` : ''}${hint(stderr)}`
}

/** Runs both canaries through `run`. */
export async function probeBackend (run: (request: RunRequest) => Promise<RunOutcome>, limits: Limits,
  expect: ProbeExpectations): Promise<ProbeReport> {
  let canary: RunOutcome
  try {
    canary = await run({ script: canaryScript(), slot: PROBE_SLOT })
  } catch (error) {
    // Out of descriptors or processes for the moment (launch.ts: BUSY): a busy host again, not a
    // broken sandbox; a failed verdict would refuse every run for a whole probe interval.
    const busy = (error as { code?: string }).code === 'BUSY'
    return { ok: false, ...(busy ? { inconclusive: true } : {}), reason: `${busy ? 'inconclusive, ' : ''}the canary could not start: ${(error as Error).message}`, features: {} }
  }
  // Out of wall or CPU time: any script on a busy host can be, so that proves nothing about the
  // sandbox. Every other failure is the sandbox's own.
  if (!canary.ok && canary.code === 'TIME_LIMIT_EXCEEDED') {
    return { ok: false, inconclusive: true, reason: `inconclusive, the canary ran out of time (a busy host?): ${describe(canary)}`, features: {} }
  }
  if (!canary.ok) return { ok: false, reason: `the canary failed: ${describe(canary)}`, features: {} }
  const facts = canary.result as CanaryFacts
  const problems = checkFacts(facts, limits, expect)
  if (problems.length > 0) return { ok: false, reason: problems.join('; '), features: {} }

  const memory = await run({ script: memoryCanaryScript(limits), slot: PROBE_SLOT })
  if (!memory.ok && memory.code === 'TIME_LIMIT_EXCEEDED') {
    return { ok: false, inconclusive: true, reason: `inconclusive, the memory canary ran out of time before reaching the limit (a busy host?): ${describe(memory)}`, features: {} }
  }
  if (memory.ok || memory.code !== 'MEMORY_LIMIT_EXCEEDED') {
    return { ok: false, reason: `memory limit not enforced: allocating ${limits.memoryMiB + 64} MiB ${describe(memory)}`, features: {} }
  }
  if (expect.memoryPerRun === true) {
    const shared = await run({ script: sharedMemoryCanaryScript(limits), slot: PROBE_SLOT })
    if (!shared.ok && shared.code === 'TIME_LIMIT_EXCEEDED') {
      return { ok: false, inconclusive: true, reason: `inconclusive, the shared-memory canary ran out of time (a busy host?): ${describe(shared)}`, features: {} }
    }
    const problem = sharedMemoryProblem(shared, limits)
    if (problem !== undefined) return { ok: false, reason: problem, features: {} }
  }
  return {
    ok: true,
    features: {
      uid: facts.uid,
      network: expect.isolated ? 'none' : 'host',
      filesystem: expect.isolated ? 'read-only minimal root, private /tmp' : 'host, scratch cwd',
      processes: expect.isolated ? 'own pid namespace' : 'host',
      seccomp: facts.seccomp === '2',
      environment: 'clean',
      numpy: facts.numpy,
      pandas: facts.pandas
    }
  }
}

/** Children (within the process limit) and each one's share: together 64 MiB over the limit. */
function sharedMemoryShares (limits: Pick<Limits, 'memoryMiB' | 'processes' | 'wallTimeMs'>): { children: number, shareMiB: number } {
  const children = Math.max(2, Math.min(4, limits.processes - 1))
  return { children, shareMiB: Math.ceil((limits.memoryMiB + 64) / children) }
}

/** The canary of a cgroup rung: children that each stay well inside RLIMIT_AS but together pass
 *  the memory limit. The cgroup must stop them (its OOM killer); RLIMIT_AS alone lets every one
 *  hold its share. Reports how many held their share at the same time, and why the others did not. */
export function sharedMemoryCanaryScript (limits: Limits): string {
  const { children, shareMiB } = sharedMemoryShares(limits)
  return withParameters(SHARED_MEMORY_CANARY, {
    CHILDREN: children,
    SHARE_BYTES: shareMiB * MiB,
    DEADLINE_SECONDS: Math.min(3000, limits.wallTimeMs / 2) / 1000
  })
}

interface SharedMemoryFacts {
  children: number
  together: number
  memoryErrors: number
  killed: number
}

/** Why the shared-memory canary's outcome does not show a bounded run; undefined when it does. */
export function sharedMemoryProblem (outcome: RunOutcome, limits: Pick<Limits, 'memoryMiB' | 'processes' | 'wallTimeMs'>): string | undefined {
  // The OOM killer may pick the run's first process as well: then the whole run ends.
  if (!outcome.ok) {
    return outcome.code === 'MEMORY_LIMIT_EXCEEDED' ? undefined : `the shared-memory canary failed: ${outcome.code}: ${outcome.message}`
  }
  const facts = outcome.result as SharedMemoryFacts
  const { shareMiB } = sharedMemoryShares(limits)
  if (facts.memoryErrors > 0) {
    return `the shared-memory canary proves nothing: ${facts.memoryErrors} of its children could not take ${shareMiB} MiB under RLIMIT_AS`
  }
  if (facts.killed === 0 || facts.together >= facts.children) {
    return `memory limit not enforced across processes: ${facts.together} children held ${shareMiB} MiB each at once ` +
      `(${facts.together * shareMiB} MiB, limit ${limits.memoryMiB} MiB)`
  }
  return undefined
}
