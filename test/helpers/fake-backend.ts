// A SandboxBackend that runs nothing: its probe report and run outcome are set by the test,
// and it records every call, so app tests can check which backend was probed and what it ran.
import type { BackendName } from '../../src/config.js'
import type { ProbeReport, RunOutcome, RunOutput, RunRequest, SandboxBackend, ScriptErrorCode, SessionCall, SessionEnd, SessionSandbox } from '../../src/backends/backend.js'
import { succeeded } from '../../src/backends/outcome.js'

export const PASSING: ProbeReport = Object.freeze({ ok: true, features: { network: 'none', uid: 65534 } })

export function failingProbe (reason: string): ProbeReport {
  return { ok: false, reason, features: {} }
}

const OUTPUT: RunOutput = { stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false, durationMs: 5 }

/** A success with main()'s value as JSON.stringify writes it. */
export function success (result: unknown, output: Partial<RunOutput> = {}): RunOutcome {
  return succeeded(Buffer.from(JSON.stringify(result)), { ...OUTPUT, ...output })
}

export function failure (code: ScriptErrorCode, message: string, details: Record<string, string | number> = {},
  output: Partial<RunOutput> = {}): RunOutcome {
  return { ok: false, code, message, details, ...OUTPUT, ...output }
}

export interface FakeBackendOptions {
  /** A report, or a function giving one (it may throw or reject: a probe that blows up). */
  probe?: ProbeReport | (() => Promise<ProbeReport>)
  /** An outcome, or a function giving one from the request (it may throw, or wait on the signal). */
  run?: RunOutcome | ((request: RunRequest) => Promise<RunOutcome>)
}

export class FakeBackend implements SandboxBackend {
  probeCalls = 0
  readonly runs: RunRequest[] = []
  private readonly options: FakeBackendOptions

  constructor (readonly name: BackendName, options: FakeBackendOptions = {}) {
    this.options = options
  }

  async probe (): Promise<ProbeReport> {
    this.probeCalls++
    const { probe = PASSING } = this.options
    return typeof probe === 'function' ? await probe() : probe
  }

  async run (request: RunRequest): Promise<RunOutcome> {
    this.runs.push(request)
    const { run = success({ msg: 'success', value: 42 }) } = this.options
    return typeof run === 'function' ? await run(request) : run
  }
}

/**
 * A run that stays open until the test lets it finish, or until its signal aborts (as the
 * real spawn wrapper does, it then finishes with TIME_LIMIT_EXCEEDED).
 */
export class HeldRun {
  private readonly startedWaiters: Array<(request: RunRequest) => void> = []
  private readonly finishers: Array<(outcome: RunOutcome) => void> = []
  readonly requests: RunRequest[] = []

  readonly run = async (request: RunRequest): Promise<RunOutcome> => {
    this.requests.push(request)
    for (const waiter of this.startedWaiters.splice(0)) waiter(request)
    return await new Promise<RunOutcome>(resolve => {
      this.finishers.push(resolve)
      request.signal?.addEventListener('abort', () => {
        resolve(failure('TIME_LIMIT_EXCEEDED', 'the run was stopped because the server is shutting down'))
      }, { once: true })
    })
  }

  /** Resolves once `count` runs have started in total. */
  async started (count = 1): Promise<RunRequest> {
    while (this.requests.length < count) {
      await new Promise<RunRequest>(resolve => this.startedWaiters.push(resolve))
    }
    return this.requests[count - 1] as RunRequest
  }

  /** Finishes every run still open with `outcome`. */
  finish (outcome: RunOutcome = success('released')): void {
    for (const finish of this.finishers.splice(0)) finish(outcome)
  }
}

/** A session's sandbox that runs nothing: each call answers `answer` (a function may wait or
 *  end the session, as a real call past its limits does). */
export class FakeSession implements SessionSandbox {
  readonly calls: SessionCall[] = []
  memoryKiB = 0
  closedWith: string | undefined
  readonly ended: Promise<SessionEnd>
  private settle!: (end: SessionEnd) => void

  constructor (private readonly answer: (call: SessionCall, session: FakeSession) => Promise<RunOutcome>) {
    this.ended = new Promise(resolve => { this.settle = resolve })
  }

  async call (request: SessionCall): Promise<RunOutcome> {
    this.calls.push(request)
    return await this.answer(request, this)
  }

  close (reason: string): void {
    this.closedWith ??= reason
    this.settle({ code: 'CLOSED', message: reason })
  }

  /** Its jail died: as a call past its limits ends a real one. */
  die (end: SessionEnd): void {
    this.settle(end)
  }
}

/** A backend that hosts sessions: every opened one is kept for the test to inspect. */
export class FakeSessionBackend extends FakeBackend {
  readonly sessions: FakeSession[] = []
  /** While set, opens wait for it (a sandbox still starting); `opening` counts those waiting. */
  gate: Promise<void> | undefined
  opening = 0

  constructor (name: BackendName = 'nsjail', private readonly answer: (call: SessionCall, session: FakeSession) => Promise<RunOutcome> = async () => success(42), options: FakeBackendOptions = {}) {
    super(name, options)
  }

  async openSession (): Promise<SessionSandbox> {
    this.opening++
    await this.gate
    this.opening--
    const session = new FakeSession(this.answer)
    this.sessions.push(session)
    return session
  }
}
