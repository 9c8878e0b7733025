// The server's side of one session's jail (docs/sessions.md): a long-lived nsjail whose pid 1 is
// harness/session.py, relaying the calls of one persistent interpreter (the kernel) as frames
// (frames.ts). Calls go one at a time; each is timed here (wall) and in the jail (CPU), and its
// outcome is interpreted as a run's is, so codes and shapes match /execute. The jail is written
// by a process that shared a machine with user code: every frame is checked, and anything
// unexpected ends the jail, and with it the session.
import type { RunOutcome, SessionCall, SessionEnd, SessionSandbox } from '../backend.js'
import { harnessRequest, type Launch } from '../launch.js'
import { crashed, interpret, outputOf } from '../outcome.js'
import { CappedSink } from '../sink.js'
import type { SpawnResult } from '../spawn.js'
import { JailProcess, relayedResult, type Relayed } from './jail-process.js'
import { FrameReader, MEMORY, READY, RESULT, STATUS, STDERR, STDOUT, parseMemory, parseReady, parseStatus, scriptFrame, type Frame } from './frames.js'

/** Longest a session's jail may take to import numpy and pandas and say ready. */
export const SESSION_START_TIMEOUT_MS = 30_000

/** What harness/session.py's parent means by the exit statuses it ends the jail with of its own
 *  accord (nsjail exits with its pid 1's status), said with the jail's end. */
const PARENT_EXITS: ReadonlyMap<string, string> = new Map([
  ['exited (66)', 'a process of the session would not stop between calls'],
  ['exited (68)', 'a call went over its CPU time'],
  ['exited (72)', 'a process of the session ran while the session was idle'],
  ['exited (73)', 'the session\'s parent did not start as uid 0 of its jail']
])

/** The jail's death, with what the parent meant by its status when it said something. */
export function explainedDeath (reason: string): string {
  const meaning = PARENT_EXITS.get(reason)
  return meaning === undefined ? reason : `${reason}: ${meaning}`
}

export type SessionJailState = 'starting' | 'ready' | 'running' | 'dead'

interface Pending extends Relayed {
  callId: number
  finish: (result: SpawnResult | undefined) => void
}

export interface SessionJailOptions {
  /** The result channel's cap (launch.ts channelLimit). */
  channelLimit: number
  /** True when a cgroup bounds the jail's memory (its breach is a SIGKILL). */
  memoryByCgroup: boolean
  /** Default SESSION_START_TIMEOUT_MS (tests shorten it). */
  startTimeoutMs?: number
}

export class SessionJail implements SessionSandbox {
  private readonly jail: JailProcess
  private current: SessionJailState = 'starting'
  private readonly frames = new FrameReader()
  private pending: Pending | undefined
  private nextCallId = 1
  private waiters: Array<(ready: boolean) => void> = []
  private timer: NodeJS.Timeout | undefined
  /** Set by close(): the end is CLOSED whatever happens next. */
  private closing = false
  /** A call owns the session's end: it is pending, or its final status came (its code is the end's). */
  private callEnds = false
  private end: SessionEnd | undefined
  private settleEnded!: (end: SessionEnd) => void
  memoryKiB = 0
  /** The call whose MEMORY frame is still to come (it follows its STATUS). */
  private memoryDue: number | undefined
  /** The jail's resident set and anonymous memory when it said ready (KiB). */
  rssKiB = 0
  anonKiB = 0
  calls = 0
  /** Why the jail died, for the log. */
  reason = ''
  /** True once it has said ready: it did start (whatever happened later). */
  started = false
  readonly ended: Promise<SessionEnd>
  /** Settles when the jail's process has exited (or never started): its uid is free again. */
  readonly exited: Promise<void>

  constructor (launch: Launch, private readonly options: SessionJailOptions) {
    this.ended = new Promise(resolve => { this.settleEnded = resolve })
    this.jail = new JailProcess(launch, { data: chunk => this.receive(chunk), death: reason => this.die(explainedDeath(reason)) })
    this.exited = this.jail.exited
    // Cleared by die(), which also comes (on a later tick) to one that could not start.
    this.timer = setTimeout(() => this.kill('did not become ready in time'), options.startTimeoutMs ?? SESSION_START_TIMEOUT_MS)
  }

  get state (): SessionJailState {
    return this.current
  }

  /** Resolves true once the jail can take a call, false if it died first. */
  async whenReady (): Promise<boolean> {
    if (this.current !== 'starting') return this.current !== 'dead'
    return await new Promise(resolve => this.waiters.push(resolve))
  }

  close (reason: string): void {
    this.closing = true
    this.endWith({ code: 'CLOSED', message: reason })
    this.kill(reason)
  }

  kill (reason: string): void {
    if (this.reason === '') this.reason = reason
    this.die(reason)
  }

  /** The first end said is the session's; `ended` settles with it at once, so nothing is answered
   *  from a jail that is going (`exited` says when its processes are gone). */
  private endWith (end: SessionEnd): void {
    if (this.end !== undefined) return
    this.end = end
    this.settleEnded(end)
  }

  private die (reason: string): void {
    if (this.current === 'dead') return
    if (this.reason === '') this.reason = reason
    this.current = 'dead'
    clearTimeout(this.timer)
    this.jail.terminate()
    for (const waiter of this.waiters.splice(0)) waiter(false)
    const pending = this.pending
    this.pending = undefined
    if (pending !== undefined) pending.finish(undefined) // the call then says how the session ended
    else if (!this.callEnds) this.endWith({ code: 'CRASHED', message: `the session's sandbox ended: ${this.reason}` })
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

  private frame ({ runId: callId, stream, payload }: Frame): void {
    if (stream === READY) {
      if (this.current !== 'starting') return this.kill('unexpected ready frame')
      const footprint = parseReady(payload)
      if (footprint === undefined) return this.kill('malformed ready frame')
      this.rssKiB = footprint.rssKiB
      this.anonKiB = this.memoryKiB = footprint.anonKiB
      this.started = true
      clearTimeout(this.timer)
      this.current = 'ready'
      for (const waiter of this.waiters.splice(0)) waiter(true)
      return
    }
    if (stream === MEMORY && callId === this.memoryDue) {
      // The session's memory after the call that just answered (measured once it is frozen).
      const anon = parseMemory(payload)
      if (anon === undefined) return this.kill('malformed memory frame')
      this.memoryKiB = anon
      this.memoryDue = undefined
      return
    }
    const pending = this.pending
    if (this.current !== 'running' || pending === undefined || callId !== pending.callId) return this.kill(`frame for call ${callId} out of turn`)
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
        // `exit 0` after a whole result: the call has answered and the session goes on; its MEMORY
        // frame follows, off the reply's path (the jail is frozen first). Anything else: the
        // kernel died, and the jail ends after it; this call's outcome is the session's end.
        if (status.exitCode === 0 && pending.channel.bytes().length > 0) {
          this.pending = undefined
          this.current = 'ready'
          this.calls++
          this.memoryDue = callId
          return pending.finish(relayedResult(pending, status))
        }
        this.pending = undefined
        this.callEnds = true
        pending.finish(relayedResult(pending, status))
        this.kill('its interpreter ended')
        break
      }
      default:
        this.kill(`unknown stream ${stream}`)
    }
  }

  /** One call, once ready; never overlapping another (throws). Resolves with its outcome, never
   *  rejects: a session that has ended answers CRASHED. */
  async call (request: SessionCall): Promise<RunOutcome> {
    if (this.current === 'running') throw new Error('a session call is already running')
    if (this.current === 'starting') throw new Error('the session\'s sandbox is not ready yet')
    if (this.current !== 'ready') {
      return crashed(`the session has ended: ${this.reason}`)
    }
    const { limits } = request
    this.current = 'running'
    const callId = this.nextCallId++
    const started = performance.now()
    let settle!: (result: SpawnResult | undefined) => void
    const done = new Promise<SpawnResult | undefined>(resolve => { settle = resolve })
    const pending: Pending = {
      callId,
      started,
      stdout: new CappedSink(limits.outputBytes),
      stderr: new CappedSink(limits.outputBytes),
      channel: new CappedSink(this.options.channelLimit),
      timedOut: false,
      finish: result => {
        clearTimeout(wall)
        settle(result ?? (pending.timedOut || pending.channel.truncated ? relayedResult(pending) : undefined))
      }
    }
    this.pending = pending
    // A call past its wall time ends the whole jail: its interpreter's state is the session's.
    const wall = setTimeout(() => { pending.timedOut = true; this.kill('wall time expired') }, limits.wallTimeMs)
    this.jail.input?.write(scriptFrame(callId, harnessRequest(request, limits.cpuSeconds)))
    const spawned = await done
    const outcome = spawned === undefined
      ? crashed(`the session's sandbox ended before the call reported a status: ${this.reason}`, { ...outputOf(relayedResult(pending)), durationMs: Math.round(performance.now() - started) })
      : await interpret(spawned, { limits, memoryByCgroup: this.options.memoryByCgroup })
    if (this.state === 'dead') {
      this.endWith(outcome.ok
        /* c8 ignore next -- defensive: a call that ended its jail has no success to report */
        ? { code: 'CRASHED', message: `the session's sandbox ended: ${this.reason}` }
        : { code: outcome.code, message: outcome.message })
    }
    return outcome
  }
}
