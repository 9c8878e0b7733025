// What every sandbox backend is: a name, a probe that proves its isolation by running a
// canary, and run(), which executes one script and reports the outcome.
import type { BackendName, Config } from '../config.js'
import type { ScriptErrorCode } from '../errors/codes.js'
import type { InputFile, LeftOutFile, ReturnedFile } from '../files.js'

export type { ScriptErrorCode }

export interface RunOutput {
  stdout: string
  stderr: string
  stdoutTruncated: boolean
  stderrTruncated: boolean
  durationMs: number
}

export type RunOutcome =
  | ({
    ok: true
    /** main()'s value, parsed from resultJson when first read. */
    readonly result: unknown
    /** main()'s value as the JSON text the reply carries as it is (outcome.ts succeeded()). */
    resultJson: Buffer
    /** The files the script left under output/ and its open figures; absent when none. */
    files?: ReturnedFile[]
    /** Entries under output/ that did not come back (links, FIFOs, ...), and why. */
    filesLeftOut?: LeftOutFile[]
  } & RunOutput)
  | ({
    ok: false
    code: ScriptErrorCode
    message: string
    /** Exception type, the user's traceback, syntax error position: whatever helps debug. */
    details: Record<string, string | number>
  } & RunOutput)

/** What the caller asked to run: the script, and what it sent for it. */
export interface ScriptRequest {
  script: string
  /** main()'s one argument, when the caller sent `input` (JSON null included). */
  input?: { value: unknown }
  /** The script's standard input, when the caller sent `stdin`. */
  stdin?: string
  /** Files placed in the working directory before the script runs (paths checked). */
  files?: InputFile[]
  /** This run's limits (the request's within its ceilings); absent: the backend's defaults. */
  limits?: Limits
}

export interface RunRequest extends ScriptRequest {
  /** Execution slot (0 ≤ slot < CONCURRENCY): backends give each slot its own host uid. */
  slot: number
  signal?: AbortSignal
}

/** A passing probe may carry a reason too: why its latest re-probe was inconclusive. */
export type ProbeReport = ProbeReportFields & ({ ok: true, reason?: string } | { ok: false, reason: string })

interface ProbeReportFields {
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
  /** A new session's sandbox (docs/sessions.md): a jail of its own whose Python keeps its state
   *  between calls. Absent: this backend hosts no sessions. The caller (the session registry)
   *  keeps at most `sessions.max` open at once. */
  openSession?: () => Promise<SessionSandbox>
  /** Its session jails: open ones, spares started ahead, and those of them ready (the benchmark). */
  sessionStats?: () => { open: number, spares: number, ready: number }
}

/** One call in a session: what the caller sent, with the call's limits (wall, CPU and output per
 *  call; the session's memory and processes were fixed when it was opened). */
export interface SessionCall extends ScriptRequest {
  limits: Limits
}

/** Why a session's sandbox ended: CLOSED when the server ended it (deleted, idle, lifetime,
 *  shutdown), else how its process died (the script's code, or CRASHED). */
export interface SessionEnd {
  code: ScriptErrorCode | 'CLOSED'
  message: string
}

/** A session's sandbox: one jail, its own host uid, processes, /tmp and working directory, never
 *  shared. Calls never overlap (the registry sends one at a time). A call past its wall or CPU
 *  time, or one whose process dies, ends the whole sandbox: `ended` then settles with why. */
export interface SessionSandbox {
  /** Runs one call in the session's interpreter; resolves with its outcome (never rejects). */
  call: (request: SessionCall) => Promise<RunOutcome>
  /** Ends the jail and everything in it (idempotent); `ended` settles with CLOSED. */
  close: (reason: string) => void
  /** Settles once the jail is gone, with why. */
  readonly ended: Promise<SessionEnd>
  /** Anonymous memory of the session's processes after its last call (KiB). */
  readonly memoryKiB: number
}

export type WarmSandboxState = 'starting' | 'ready' | 'running' | 'cleaning' | 'dead'

/** How a backend's warm sandboxes served runs: by one that was ready, by one the run had to wait
 *  for while it imported numpy and pandas (a stall), or cold (none could be had); and how many
 *  there are by state, successors included. */
export interface WarmStats {
  runs: { ready: number, waited: number, cold: number }
  zygotes: Record<WarmSandboxState, number>
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
  /** Files a run may return (under output/ and figures), and their bytes. */
  filesOut: number
  filesOutBytes: number
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
    resultBytes: config.LIMIT_RESULT_BYTES,
    filesOut: config.LIMIT_FILES_OUT,
    filesOutBytes: config.LIMIT_FILES_OUT_BYTES
  }
}
