// The server's side of one warm jail: a long-lived nsjail (the same policy as a cold run, a
// per-slot uid) whose pid 1 is harness/zygote.py. The zygote has imported numpy and pandas; per
// run it forks a fresh child that runs the script, and relays the child's streams as frames on
// the jail's stdout (frames.ts, docs/warm.md). A zygote that misbehaves in any way (a malformed
// frame, a failed clean-up, a stop it does not honour, an early exit) is killed with its whole
// jail and replaced; it is never served twice. One that cannot even be started (no descriptors
// or processes left: EMFILE, ENFILE, EAGAIN) dies on the next tick like any other, never by an
// exception: it is made inside the 'exit' handler of the one it replaces (warm-pool.ts).
import type { Limits, RunOutcome, ScriptRequest, WarmSandboxState } from '../backend.js'
import { harnessRequest, type Launch } from '../launch.js'
import { crashed, interpret, outputOf } from '../outcome.js'
import { CappedSink } from '../sink.js'
import type { SpawnResult } from '../spawn.js'
import { JailProcess, relayedResult, type Relayed } from './jail-process.js'
import { FrameReader, READY, RESULT, STATUS, STDERR, STDOUT, parseReady, parseStatus, scriptFrame, stopFrame, type Frame } from './frames.js'

/** Longest a zygote may take to import numpy and pandas, or to clean up after a run. */
const START_TIMEOUT_MS = 30_000
const CLEANUP_TIMEOUT_MS = 5_000
/** How long a zygote has to report a stopped run's status; then the whole jail goes. */
const STOP_GRACE_MS = 2_000

export interface WarmRun extends ScriptRequest {
  signal?: AbortSignal
}

interface Pending extends Relayed {
  runId: number
  aborted: boolean
  finish: (result: SpawnResult | undefined) => void
}

export type ZygoteState = WarmSandboxState

/** One jail whose pid 1 is the zygote. */
export class Zygote {
  private readonly jail: JailProcess
  private current: ZygoteState = 'starting'
  private readonly frames = new FrameReader()
  private pending: Pending | undefined
  private nextRunId = 1
  private waiters: Array<(ready: boolean) => void> = []
  private timer: NodeJS.Timeout | undefined
  runs = 0
  /** The zygote's resident set after its imports, and its anonymous part, as it reported them. */
  rssKiB = 0
  anonKiB = 0
  /** Why it died, for the log. */
  reason = ''
  /** True once it has said ready: it did start (whatever happened later). */
  started = false
  /** Settles when the jail's process has exited (or never started). */
  readonly exited: Promise<void>

  constructor (launch: Launch, private readonly limits: Limits, private readonly channelLimit: number, private readonly onDeath: (zygote: Zygote) => void) {
    // Whichever way it fails to start, it dies on a later tick, once its pool holds it.
    this.jail = new JailProcess(launch, { data: chunk => this.receive(chunk), death: reason => this.die(reason) })
    this.exited = this.jail.exited
    // Cleared by die(), which also comes (on a later tick) to one that could not start.
    this.arm(START_TIMEOUT_MS, 'did not become ready in time')
  }

  get state (): ZygoteState {
    return this.current
  }

  /** Resolves true once the zygote can take a run, false if it died first. */
  async whenReady (): Promise<boolean> {
    if (this.current === 'ready') return true
    if (this.current === 'dead') return false
    return await new Promise(resolve => this.waiters.push(resolve))
  }

  private arm (ms: number, reason: string): void {
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.kill(reason), ms)
  }

  kill (reason: string): void {
    if (this.reason === '') this.reason = reason
    this.die(reason)
  }

  private die (reason: string): void {
    if (this.current === 'dead') return
    if (this.reason === '') this.reason = reason
    this.current = 'dead'
    clearTimeout(this.timer)
    // Dead to the pool from this moment; the jail and its processes go (jail-process.ts).
    this.jail.terminate()
    for (const waiter of this.waiters.splice(0)) waiter(false)
    this.pending?.finish(undefined)
    this.pending = undefined
    this.onDeath(this)
  }

  private receive (chunk: Buffer): void {
    this.frames.push(chunk)
    while (this.current !== 'dead') {
      const frame = this.frames.next()
      if (frame === undefined) return
      if ('malformed' in frame) return this.kill(frame.malformed)
      this.frame(frame)
    }
  }

  private frame ({ runId, stream, payload }: Frame): void {
    if (stream === READY) {
      if (this.current !== 'starting' && this.current !== 'cleaning') return this.kill('unexpected ready frame')
      const footprint = parseReady(payload)
      if (footprint === undefined) return this.kill('malformed ready frame')
      if (this.current === 'starting') {
        this.rssKiB = footprint.rssKiB
        this.anonKiB = footprint.anonKiB
        this.started = true
      }
      clearTimeout(this.timer)
      this.current = 'ready'
      for (const waiter of this.waiters.splice(0)) waiter(true)
      return
    }
    const pending = this.pending
    if (this.current !== 'running' || pending === undefined || runId !== pending.runId) return this.kill(`frame for run ${runId} out of turn`)
    switch (stream) {
      case STDOUT: pending.stdout.push(payload); break
      case STDERR: pending.stderr.push(payload); break
      case RESULT:
        pending.channel.push(payload)
        if (pending.channel.truncated) this.kill('result over its cap')
        break
      case STATUS: {
        const status = parseStatus(payload)
        if (status === undefined) return this.kill('malformed status frame')
        this.pending = undefined
        this.runs++
        this.current = 'cleaning'
        this.arm(CLEANUP_TIMEOUT_MS, 'clean-up after a run did not finish in time')
        pending.finish(relayedResult(pending, status))
        break
      }
      default:
        this.kill(`unknown stream ${stream}`)
    }
  }

  /** Ask the zygote to end the pending run; the status it then reports finishes the run. */
  private stop (pending: Pending, reason: string): void {
    /* c8 ignore next -- defensive: a run's timer and abort listener are removed when it finishes */
    if (this.current !== 'running' || this.pending !== pending) return
    this.jail.input?.write(stopFrame(pending.runId))
    this.arm(STOP_GRACE_MS, `${reason}, and the run was not stopped within ${STOP_GRACE_MS} ms`)
  }

  /** One run; the zygote must be ready. Resolves when the script's status is known. */
  async run (request: WarmRun, memoryByCgroup: boolean): Promise<RunOutcome> {
    if (this.current !== 'ready') throw new Error(`zygote not ready (${this.current})`)
    this.current = 'running'
    const runId = this.nextRunId++
    const limits = request.limits ?? this.limits
    const script = harnessRequest(request, limits.cpuSeconds)
    const started = performance.now()
    let settle!: (result: SpawnResult | undefined) => void
    const ended = new Promise<SpawnResult | undefined>(resolve => { settle = resolve })
    const pending: Pending = {
      runId,
      started,
      stdout: new CappedSink(limits.outputBytes),
      stderr: new CappedSink(limits.outputBytes),
      channel: new CappedSink(this.channelLimit),
      timedOut: false,
      aborted: false,
      finish: result => {
        clearTimeout(wall)
        request.signal?.removeEventListener('abort', onAbort)
        // The jail died before reporting a status: a timeout, an abort or a crash.
        settle(result ?? (pending.timedOut || pending.aborted || pending.channel.truncated ? relayedResult(pending) : undefined))
      }
    }
    this.pending = pending
    this.jail.input?.write(scriptFrame(runId, script)) // one that is ready has its pipes
    // Past the wall time, or when the client is gone: the zygote stops the run; if it does not
    // report within STOP_GRACE_MS, the whole jail goes and a new one comes. (A stop is sent after
    // its run's script frame, which the zygote must have read first.)
    const wall = setTimeout(() => { pending.timedOut = true; this.stop(pending, 'wall time expired') }, limits.wallTimeMs)
    const onAbort = (): void => { pending.aborted = true; this.stop(pending, 'run aborted') }
    if (request.signal?.aborted === true) onAbort()
    request.signal?.addEventListener('abort', onAbort, { once: true })
    const spawned = await ended
    if (spawned === undefined) {
      // What the script printed until then, and the true duration: the facts of the failure.
      return crashed('the sandbox ended before the script reported a status', { ...outputOf(relayedResult(pending)), durationMs: Math.round(performance.now() - started) })
    }
    return interpret(spawned, { limits, memoryByCgroup })
  }
}
