// The one place that starts a process: argv arrays, no shell, a process group of its own,
// byte-capped streaming, SIGTERM then SIGKILL, settled on 'close' (all output read). A process
// that cannot be started settles with spawnError, never an exception: out of descriptors
// (EMFILE, ENFILE), Node returns a child without pipes and reports 'error' on the next tick.
import { spawn } from 'node:child_process'
import { constants } from 'node:os'
import type { Readable, Writable } from 'node:stream'
import { CappedSink } from './sink.js'

export interface SpawnRequest {
  file: string
  args: readonly string[]
  env: Readonly<Record<string, string>>
  cwd?: string
  /** Written to the child's fd 4, then closed: the request travels here, never through argv. */
  input: string | Buffer
  /** Bytes kept of stdout and of stderr each; the rest is read and dropped. */
  outputLimit: number
  /** Bytes accepted on fd 3, the result channel; more kills the run. */
  channelLimit: number
  wallTimeMs: number
  killGraceMs: number
  /** Aborting kills the run the same way the wall timer does (server shutdown). */
  signal?: AbortSignal
}

export interface SpawnResult {
  exitCode: number | null
  /** The number of the signal that ended the process (its launcher's report undone: launch.ts). */
  signal: number | null
  stdout: Buffer
  stderr: Buffer
  stdoutTruncated: boolean
  stderrTruncated: boolean
  channel: Buffer
  channelOverflow: boolean
  timedOut: boolean
  aborted: boolean
  /** Set when the process could not be started at all (ENOENT, EACCES; EMFILE, ENFILE, EAGAIN:
   *  the host's lack of descriptors or processes, see launch.ts startFailure). */
  spawnError?: Error
  durationMs: number
}

/** How long to wait for 'close' after 'exit' before giving up on stray holders of the pipes. */
const DRAIN_AFTER_EXIT_MS = 1000

export function spawnCapped (request: SpawnRequest): Promise<SpawnResult> {
  const started = performance.now()
  return new Promise(resolve => {
    const child = spawn(request.file, request.args, {
      env: request.env,
      cwd: request.cwd,
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
      detached: true, // a process group of its own, killed as a whole
      shell: false
    })
    let timedOut = false
    let aborted = false
    let exited = false
    let settled = false
    let spawnError: Error | undefined
    let exitCode: number | null = null
    let exitSignal: number | null = null
    const timers: NodeJS.Timeout[] = []

    const killGroup = (signal: NodeJS.Signals): void => {
      if (exited || child.pid === undefined) return
      try {
        process.kill(-child.pid, signal)
      } catch {
        // The group is already gone: nothing left to kill.
      }
    }
    const terminate = (): void => {
      killGroup('SIGTERM')
      timers.push(setTimeout(() => killGroup('SIGKILL'), request.killGraceMs))
    }

    const stdout = new CappedSink(request.outputLimit)
    const stderr = new CappedSink(request.outputLimit)
    const channel = new CappedSink(request.channelLimit, () => killGroup('SIGKILL'))
    // No pipes at all when the spawn failed for lack of descriptors (EMFILE, ENFILE): Node gives
    // up before making them, and 'error' (then 'close') settles the run on the next tick.
    const [, out, err, chan, input] = (child.stdio as unknown as [null, Readable, Readable, Readable, Writable] | undefined) ?? []
    out?.on('data', (c: Buffer) => stdout.push(c))
    err?.on('data', (c: Buffer) => stderr.push(c))
    chan?.on('data', (c: Buffer) => channel.push(c))
    // A child that exits without reading its input makes the write fail with EPIPE: not our error.
    input?.on('error', () => {})
    input?.end(request.input)

    timers.push(setTimeout(() => {
      if (exited) return // finished in time; only stray holders of its pipes remain
      timedOut = true
      terminate()
    }, request.wallTimeMs))
    const onAbort = (): void => { aborted = true; terminate() }
    if (request.signal?.aborted === true) onAbort()
    request.signal?.addEventListener('abort', onAbort, { once: true })

    const settle = (): void => {
      if (settled) return
      settled = true
      for (const t of timers) clearTimeout(t)
      request.signal?.removeEventListener('abort', onAbort)
      // Every pipe closed, the input too: a child that never read it (or never started) holds
      // no descriptor of ours after this.
      for (const s of [out, err, chan, input]) s?.destroy()
      resolve({
        exitCode,
        signal: exitSignal,
        stdout: stdout.bytes(),
        stderr: stderr.bytes(),
        stdoutTruncated: stdout.truncated,
        stderrTruncated: stderr.truncated,
        channel: channel.bytes(),
        channelOverflow: channel.truncated,
        timedOut,
        aborted,
        spawnError,
        durationMs: Math.round(performance.now() - started)
      })
    }

    child.on('error', error => {
      spawnError = error
      settle()
    })
    child.on('exit', (code, signal) => {
      // Kill whatever the child left behind in its group, then wait for the pipes to close.
      killGroup('SIGKILL')
      exited = true
      exitCode = code
      exitSignal = signal === null ? null : constants.signals[signal]
      timers.push(setTimeout(settle, DRAIN_AFTER_EXIT_MS))
    })
    child.on('close', (code, signal) => {
      exitCode = code
      exitSignal = signal === null ? null : constants.signals[signal]
      settle()
    })
  })
}
