// What every sandbox backend is: a name, a probe that proves its isolation by running a
// canary, and run(), which executes one script and reports the outcome.
import type { BackendName, Config } from '../config.js'
import type { WarmStats } from './warm.js'

export type ScriptErrorCode =
  | 'SYNTAX_ERROR' | 'MISSING_MAIN' | 'MAIN_NOT_CALLABLE' | 'MAIN_RAISED'
  | 'RESULT_NOT_JSON' | 'RESULT_TOO_LARGE'
  | 'TIME_LIMIT_EXCEEDED' | 'MEMORY_LIMIT_EXCEEDED' | 'CRASHED'

export interface RunOutput {
  stdout: string
  stderr: string
  stdoutTruncated: boolean
  stderrTruncated: boolean
  durationMs: number
}

export type RunOutcome =
  | ({ ok: true, result: unknown } & RunOutput)
  | ({
    ok: false
    code: ScriptErrorCode
    message: string
    /** Exception type, the user's traceback, syntax error position: whatever helps debug. */
    details: Record<string, string | number>
  } & RunOutput)

export interface RunRequest {
  script: string
  /** Execution slot (0 ≤ slot < CONCURRENCY): backends give each slot its own host uid. */
  slot: number
  signal?: AbortSignal
}

export interface ProbeReport {
  ok: boolean
  /** Why the probe failed, in words an operator can act on. */
  reason?: string
  /** Set (with ok false) when the probe proved nothing either way: a canary ran out of wall or
   *  CPU time, which a busy host does to any script. A broken promise, a memory canary that was
   *  not stopped or a sandbox that could not start is conclusive (this stays unset). */
  inconclusive?: boolean
  /** The isolation features that are active, for /readyz and the start-up log. */
  features: Record<string, string | number | boolean>
}

export interface SandboxBackend {
  readonly name: BackendName
  probe: () => Promise<ProbeReport>
  run: (request: RunRequest) => Promise<RunOutcome>
  /** Ends whatever the backend keeps running between requests (warm sandboxes). */
  close?: () => Promise<void>
  /** How its warm sandboxes served runs, for /metrics; undefined when it has none. */
  warmStats?: () => WarmStats | undefined
}

/** What a backend's memory limit bounds, for /readyz's `memoryBound`: a cgroup bounds a whole run
 *  (every process, and the kernel memory they cause); RLIMIT_AS alone bounds each process. */
export const MEMORY_BOUND_PER_RUN = 'per run: all its processes together, and the kernel memory they cause'
export const MEMORY_BOUND_PER_PROCESS = 'per process: a run\'s total memory is not bounded'

/** /readyz's memory facts of the rung a probe chose; `cgroupFailures`: why the stronger rungs failed. */
export function memoryFeatures (rung: string, cgroupFailures: string[]): Record<string, string> {
  const perProcess = rung === 'rlimit'
  return {
    memory: rung,
    memoryBound: perProcess ? MEMORY_BOUND_PER_PROCESS : MEMORY_BOUND_PER_RUN,
    ...(perProcess && cgroupFailures.length > 0 ? { memoryCgroups: cgroupFailures.join('; ') } : {})
  }
}

/** The warning a backend gives when only RLIMIT_AS bounds memory. */
export function perProcessMemoryWarning (backend: string, cgroupFailures: string[]): string {
  return `${backend}: memory is bounded per process only (RLIMIT_AS): the processes of one run together, and the ` +
    `kernel memory they cause (socket buffers), are not bounded${cgroupFailures.length > 0 ? `; no memory cgroup passed (${cgroupFailures.join('; ')})` : ''}. See README, "Security model"`
}

/** The limits every backend enforces, taken once from the configuration. */
export interface Limits {
  wallTimeMs: number
  killGraceMs: number
  cpuSeconds: number
  memoryMiB: number
  processes: number
  openFiles: number
  tmpMiB: number
  tmpFiles: number
  outputBytes: number
  resultBytes: number
}

export function limitsFrom (config: Config): Limits {
  return {
    wallTimeMs: config.LIMIT_WALL_MS,
    killGraceMs: config.LIMIT_KILL_GRACE_MS,
    cpuSeconds: config.LIMIT_CPU_S,
    memoryMiB: config.LIMIT_MEMORY_MB,
    processes: config.LIMIT_PROCESSES,
    openFiles: config.LIMIT_OPEN_FILES,
    tmpMiB: config.LIMIT_TMP_MB,
    tmpFiles: config.LIMIT_TMP_FILES,
    outputBytes: config.LIMIT_OUTPUT_BYTES,
    resultBytes: config.LIMIT_RESULT_BYTES
  }
}
