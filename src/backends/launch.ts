// What the isolating backends share: where things sit inside the sandbox, how the harness is
// started, and one run through the spawn wrapper.
import { resolve } from 'node:path'
import { PROJECT_ROOT } from '../config.js'
import { MiB } from '../units.js'
import type { Limits, RunOutcome, RunRequest, ScriptRequest } from './backend.js'
import { interpret } from './outcome.js'
import { spawnCapped, type SpawnResult } from './spawn.js'
import { SandboxStartError } from '../errors/errors.js'

export const HARNESS_DIR = resolve(PROJECT_ROOT, 'harness')
/** Paths inside the sandbox (harness/run.py knows the second one too). */
export const JAIL_HARNESS_DIR = '/sandbox/harness'
export const JAIL_SITE_PACKAGES = '/sandbox/site-packages'

/** Room on the result channel for the message around the result (traceback, error text). */
export const CHANNEL_ENVELOPE_BYTES = 256 * 1024

/** Room on the channel for one returned file's entry besides its content (its path, escaped). */
const FILE_ENTRY_BYTES = 8 * 1024

/** The most the result channel may carry: main()'s JSON, the envelope, and the returned files,
 *  whose text can double when escaped as JSON (base64 is 4/3 of the bytes). */
export function channelLimit (limits: Limits): number {
  return limits.resultBytes + CHANNEL_ENVELOPE_BYTES + 2 * limits.filesOutBytes + limits.filesOut * FILE_ENTRY_BYTES
}

/** The only environment a script sees, whatever the backend. */
export const SANDBOX_ENV: Readonly<Record<string, string>> = Object.freeze({
  PATH: '/usr/bin:/bin',
  HOME: '/tmp',
  TMPDIR: '/tmp',
  LANG: 'C.UTF-8',
  // Where the files to return go (harness/run.py makes it); matplotlib draws off-screen, and its
  // configuration (the font cache) is a directory the harness makes.
  OUTPUT_DIR: '/tmp/output',
  MPLBACKEND: 'Agg',
  MPLCONFIGDIR: '/tmp/.matplotlib',
  OPENBLAS_NUM_THREADS: '1',
  OMP_NUM_THREADS: '1',
  MKL_NUM_THREADS: '1',
  NUMEXPR_NUM_THREADS: '1',
  // One malloc arena: each extra one reserves 64 MiB of address space, which under an
  // RLIMIT_AS memory limit made starting a few threads fail now and then.
  MALLOC_ARENA_MAX: '1'
})

export interface Launch {
  file: string
  args: string[]
  env: Readonly<Record<string, string>>
  cwd?: string
}

/** How the interpreter runs the harness everywhere: isolated mode (no environment, no user site,
 *  no script directory on the path), unbuffered streams, no bytecode written. */
export const PYTHON_FLAGS = ['-I', '-u', '-B'] as const

/** The interpreter's arguments for one harness program and its parameters. */
export function pythonArgs (program: string, parameters: ReadonlyArray<string | number>): string[] {
  return [...PYTHON_FLAGS, program, ...parameters.map(String)]
}

/** run.py's arguments: its four parameters; `seccomp` for a launcher without a filter of its own
 *  (the harness installs the policy's). */
export function harnessArgs (harnessPath: string, limits: Limits, options: { seccomp?: boolean } = {}): string[] {
  return pythonArgs(harnessPath, [...(options.seccomp === true ? ['--seccomp'] : []),
    limits.cpuSeconds, limits.resultBytes, limits.filesOut, limits.filesOutBytes])
}

/** prlimit(1)'s options for the limits a launcher without rlimits of its own sets. */
export function prlimitArgs (limits: Limits): string[] {
  return [
    `--as=${limits.memoryMiB * MiB}`, `--cpu=${limits.cpuSeconds}:${limits.cpuSeconds + 1}`,
    `--nproc=${limits.processes}`, `--nofile=${limits.openFiles}`, `--fsize=${limits.tmpMiB * MiB}`, '--core=0'
  ]
}

/** The request as the harness reads it (harness/run.py parse_request): a header naming the byte
 *  lengths of the script, the input's JSON, stdin and the files (-1: not sent), and for a warm
 *  run its CPU seconds (a cold run's are an argument), then the four parts.
 *  The files part holds, for each file, `<path bytes> <content bytes>\n`, the path, the content. */
export function harnessRequest (request: ScriptRequest, cpuSeconds?: number): Buffer {
  const text = [request.script, request.input === undefined ? undefined : JSON.stringify(request.input.value), request.stdin]
  const parts = [...text.map(part => part === undefined ? undefined : Buffer.from(part, 'utf8')), filesPart(request)]
  const fields = [...parts.map(part => part?.length ?? -1), ...(cpuSeconds === undefined ? [] : [cpuSeconds])]
  const header = `PYSANDBOX-REQUEST ${fields.join(' ')}\n`
  return Buffer.concat([Buffer.from(header), ...parts.filter(part => part !== undefined)])
}

function filesPart ({ files }: ScriptRequest): Buffer | undefined {
  if (files === undefined) return undefined
  return Buffer.concat(files.flatMap(({ path, content }) => {
    const name = Buffer.from(path, 'utf8')
    return [Buffer.from(`${name.length} ${content.length}\n`), name, content]
  }))
}

/** What a failed system call says when the host, not the request, is short: of descriptors
 *  (EMFILE for this process, ENFILE for the host), of processes or threads (EAGAIN from fork),
 *  or of memory (ENOMEM from fork). */
const EXHAUSTED = new Set(['EMFILE', 'ENFILE', 'EAGAIN', 'ENOMEM'])

export function exhausted (error: unknown): boolean {
  return error instanceof Error && EXHAUSTED.has(String((error as NodeJS.ErrnoException).code))
}

/** `error` as the reply should tell it: a sandbox that could not be started (or prepared) for
 *  lack of descriptors, processes or memory is the service's doing, a retryable 503 BUSY, never
 *  a 500 nor the script's failure (the errno is its cause, logged by plugins/connections.ts).
 *  Any other error is returned as it is. */
export function startFailure (error: unknown): unknown {
  return exhausted(error) ? new SandboxStartError({ cause: error }) : error
}

/** `limits` are the run's (the request's, else the backend's); `normalise` undoes a launcher's
 *  quirks in reporting how its child ended, or tells the outcome itself when the launcher's own
 *  end says more than the child's. */
export async function runLaunch (launch: Launch, request: RunRequest, limits: Limits, memoryByCgroup: boolean,
  normalise: (spawned: SpawnResult) => SpawnResult | RunOutcome = spawned => spawned): Promise<RunOutcome> {
  let spawned: SpawnResult
  try {
    spawned = await spawnCapped({
      ...launch,
      input: harnessRequest(request),
      outputLimit: limits.outputBytes,
      channelLimit: channelLimit(limits),
      wallTimeMs: limits.wallTimeMs,
      killGraceMs: limits.killGraceMs,
      signal: request.signal
    })
  } catch (error) { // Node throws at once for what it does not report as 'error' (ENOMEM from fork)
    throw startFailure(error)
  }
  if (spawned.spawnError !== undefined) throw startFailure(spawned.spawnError)
  const normalised = normalise(spawned)
  return 'ok' in normalised ? normalised : interpret(normalised, { limits, memoryByCgroup })
}
