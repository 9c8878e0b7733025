// Warm sandboxes: per execution slot one long-lived nsjail (the same policy and arguments as a
// cold run, a per-slot uid) whose pid 1 is harness/zygote.py. The zygote has imported numpy and
// pandas; per run it forks a fresh child that runs the script, and relays the child's streams as
// frames on the jail's stdout (docs/warm.md). A zygote that misbehaves in any
// way (a malformed frame, a failed clean-up, a wall-time expiry, an early exit) is killed with
// its whole jail and replaced; it is never served twice.
import { spawn, type ChildProcess } from 'node:child_process'
import type { Readable, Writable } from 'node:stream'
import type { Limits, RunOutcome } from './backend.js'
import type { Launch } from './launch.js'
import { interpret } from './outcome.js'
import type { SpawnResult } from './spawn.js'

const STDOUT = 1
const STDERR = 2
const RESULT = 3
const STATUS = 4
const READY = 5
const HEADER_BYTES = 9
/** Longest a zygote may take to import numpy and pandas, or to clean up after a run. */
const START_TIMEOUT_MS = 30_000
const CLEANUP_TIMEOUT_MS = 5_000
/** A request frame with this length stops the run it names (wall time, client gone): the zygote
 *  kills it and cleans up as after any run, and the jail is kept (a new one costs an import). */
const STOP = 0xFFFFFFFF
/** How long a zygote has to report a stopped run's status; then the whole jail goes. */
const STOP_GRACE_MS = 2_000
/** How long nsjail has to tear its jail down after SIGTERM before its group gets SIGKILL. */
const KILL_GRACE_MS = 1000
/** After a zygote failed to start, requests in its slot run cold for this long. */
const RESTART_BACKOFF_MS = 5_000

export interface WarmRun {
  script: string
  signal?: AbortSignal
}

class Sink {
  private readonly chunks: Buffer[] = []
  size = 0
  truncated = false

  constructor (private readonly limit: number) {}

  push (chunk: Buffer): void {
    const room = this.limit - this.size
    if (chunk.length > room) {
      if (room > 0) this.chunks.push(chunk.subarray(0, room))
      this.size = this.limit
      this.truncated = true
      return
    }
    this.chunks.push(chunk)
    this.size += chunk.length
  }

  bytes (): Buffer {
    return Buffer.concat(this.chunks)
  }
}

interface Pending {
  runId: number
  started: number
  stdout: Sink
  stderr: Sink
  channel: Sink
  timedOut: boolean
  aborted: boolean
  finish: (result: SpawnResult | undefined) => void
}

export type ZygoteState = 'starting' | 'ready' | 'running' | 'cleaning' | 'dead'

/** One jail whose pid 1 is the zygote. */
export class Zygote {
  private readonly child: ChildProcess
  private readonly input: Writable
  private current: ZygoteState = 'starting'
  private buffer: Buffer = Buffer.alloc(0)
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
    this.child = spawn(launch.file, launch.args, {
      env: launch.env,
      stdio: ['pipe', 'pipe', 'ignore'],
      detached: true,
      shell: false
    })
    // An idle pool keeps no process alive: the jail exits by itself when its input closes.
    this.child.unref()
    for (const stream of [this.child.stdin, this.child.stdout] as unknown as Array<{ unref?: () => void } | null>) stream?.unref?.()
    this.exited = new Promise(resolve => {
      this.child.once('exit', () => resolve())
      this.child.once('error', () => resolve())
    })
    const [input, output] = [this.child.stdin as Writable, this.child.stdout as Readable]
    this.input = input
    input.on('error', () => this.die('its input closed'))
    output.on('data', (chunk: Buffer) => this.receive(chunk))
    this.child.on('error', error => this.die(`could not start: ${error.message}`))
    this.child.on('exit', (code, signal) => this.die(`exited (${signal ?? String(code)})`))
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
    this.terminate()
    this.child.stdout?.destroy()
    this.input.destroy()
    for (const waiter of this.waiters.splice(0)) waiter(false)
    this.pending?.finish(undefined)
    this.pending = undefined
    this.onDeath(this)
  }

  /** nsjail, on SIGTERM, SIGKILLs the jail's processes and removes its cgroups (a SIGKILL would
   *  leave those behind on the host); its process group gets SIGKILL if it lingers. The zygote
   *  is dead to the pool from the first moment either way. */
  private terminate (): void {
    const pid = this.child.pid
    if (pid === undefined || this.child.exitCode !== null || this.child.signalCode !== null) return
    const signal = (target: number, name: NodeJS.Signals): void => {
      try {
        process.kill(target, name)
      } catch {
        // Already gone.
      }
    }
    signal(pid, 'SIGTERM')
    const escalate = setTimeout(() => signal(-pid, 'SIGKILL'), KILL_GRACE_MS)
    escalate.unref()
    this.exited.then(() => clearTimeout(escalate), () => {})
  }

  private receive (chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
    while (this.buffer.length >= HEADER_BYTES && this.current !== 'dead') {
      const runId = this.buffer.readUInt32BE(0)
      const stream = this.buffer.readUInt8(4)
      const length = this.buffer.readUInt32BE(5)
      if (length > (1 << 20) + 16) return this.kill(`malformed frame (length ${length})`)
      if (this.buffer.length < HEADER_BYTES + length) return
      const payload = this.buffer.subarray(HEADER_BYTES, HEADER_BYTES + length)
      this.buffer = this.buffer.subarray(HEADER_BYTES + length)
      this.frame(runId, stream, payload)
    }
  }

  private frame (runId: number, stream: number, payload: Buffer): void {
    if (stream === READY) {
      if (this.current !== 'starting' && this.current !== 'cleaning') return this.kill('unexpected ready frame')
      const match = /^rss (\d+) anon (\d+)$/.exec(payload.toString('latin1'))
      if (match === null) return this.kill('malformed ready frame')
      if (this.current === 'starting') {
        this.rssKiB = Number(match[1])
        this.anonKiB = Number(match[2])
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
        const match = /^(exit|signal) (-?\d+)$/.exec(payload.toString('latin1'))
        if (match === null) return this.kill('malformed status frame')
        const n = Number(match[2])
        this.pending = undefined
        this.runs++
        this.current = 'cleaning'
        this.arm(CLEANUP_TIMEOUT_MS, 'clean-up after a run did not finish in time')
        // A signal is reported the way nsjail reports its child's: 128 + N.
        pending.finish(this.result(pending, match[1] === 'exit' ? n : 128 + n))
        break
      }
      default:
        this.kill(`unknown stream ${stream}`)
    }
  }

  private result (pending: Pending, exitCode: number | null): SpawnResult {
    return {
      exitCode,
      signal: null,
      stdout: pending.stdout.bytes(),
      stderr: pending.stderr.bytes(),
      stdoutTruncated: pending.stdout.truncated,
      stderrTruncated: pending.stderr.truncated,
      channel: pending.channel.bytes(),
      channelOverflow: pending.channel.truncated,
      timedOut: pending.timedOut,
      aborted: pending.aborted,
      durationMs: Math.round(performance.now() - pending.started)
    }
  }

  /** Ask the zygote to end the pending run; the status it then reports finishes the run. */
  private stop (pending: Pending, reason: string): void {
    if (this.current !== 'running' || this.pending !== pending) return
    const frame = Buffer.alloc(8)
    frame.writeUInt32BE(pending.runId, 0)
    frame.writeUInt32BE(STOP, 4)
    this.input.write(frame)
    this.arm(STOP_GRACE_MS, `${reason}, and the run was not stopped within ${STOP_GRACE_MS} ms`)
  }

  /** One run; the zygote must be ready. Resolves when the script's status is known. */
  async run (request: WarmRun, memoryByCgroup: boolean): Promise<RunOutcome> {
    if (this.current !== 'ready') throw new Error(`zygote not ready (${this.current})`)
    this.current = 'running'
    const runId = this.nextRunId++
    const script = Buffer.from(request.script, 'utf8')
    const { limits } = this
    const started = performance.now()
    let collected: Pending | undefined
    const spawned = await new Promise<SpawnResult | undefined>(resolve => {
      let settled = false
      const pending: Pending = collected = {
        runId,
        started,
        stdout: new Sink(limits.outputBytes),
        stderr: new Sink(limits.outputBytes),
        channel: new Sink(this.channelLimit),
        timedOut: false,
        aborted: false,
        finish: result => {
          if (settled) return
          settled = true
          clearTimeout(wall)
          request.signal?.removeEventListener('abort', onAbort)
          // The jail died before reporting a status: a timeout, an abort or a crash.
          resolve(result ?? (pending.timedOut || pending.aborted || pending.channel.truncated ? this.result(pending, null) : undefined))
        }
      }
      this.pending = pending
      // Past the wall time, or when the client is gone: the zygote stops the run; if it does not
      // report within STOP_GRACE_MS, the whole jail goes and a new one comes.
      const wall = setTimeout(() => { pending.timedOut = true; this.stop(pending, 'wall time expired') }, limits.wallTimeMs)
      const onAbort = (): void => { pending.aborted = true; this.stop(pending, 'run aborted') }
      if (request.signal?.aborted === true) onAbort()
      request.signal?.addEventListener('abort', onAbort, { once: true })
      const header = Buffer.alloc(8)
      header.writeUInt32BE(runId, 0)
      header.writeUInt32BE(script.length, 4)
      this.input.write(Buffer.concat([header, script]))
    })
    if (spawned === undefined) {
      // What the script printed until then, and the true duration: the facts of the failure.
      const output = collected === undefined ? undefined : this.result(collected, null)
      return {
        ok: false,
        code: 'CRASHED',
        message: 'the sandbox ended before the script reported a status',
        details: {},
        stdout: output?.stdout.toString('utf8') ?? '',
        stderr: output?.stderr.toString('utf8') ?? '',
        stdoutTruncated: output?.stdoutTruncated ?? false,
        stderrTruncated: output?.stderrTruncated ?? false,
        durationMs: Math.round(performance.now() - started)
      }
    }
    return interpret(spawned, { limits, memoryByCgroup })
  }
}

export interface WarmPoolOptions {
  /** The jail for a slot: the cold run's arguments with the zygote as the command. Successive
   *  zygotes of a slot (generation 1, 2, ...) overlap during a hand-over. */
  launch: (slot: number, generation: number) => Launch
  limits: Limits
  channelLimit: number
  recycleRuns: number
  memoryByCgroup: boolean
  log?: (message: string) => void
}

/** How runs were served: by a zygote that was ready, by one the run had to wait for while it
 *  imported numpy and pandas (a stall), or cold (no zygote could be had). */
export interface WarmStats {
  runs: { ready: number, waited: number, cold: number }
  /** Zygotes by state, successors included. */
  zygotes: Record<ZygoteState, number>
}

/** One serving zygote per slot, started ahead of need and replaced whenever it ends. A slot's
 *  successor starts importing once its zygote has served half of its runs, so recycling costs
 *  requests nothing; at most two zygotes per slot exist at once. */
export class WarmPool {
  private readonly serving = new Map<number, Zygote>()
  private readonly successors = new Map<number, Zygote>()
  private readonly generations = new Map<number, number>()
  private readonly failedAt = new Map<number, number>()
  private closed = false
  /** Why the last zygote ended, for the probe's report. */
  lastFailure = ''
  private readonly runs = { ready: 0, waited: 0, cold: 0 }

  constructor (private readonly options: WarmPoolOptions) {}

  get stats (): WarmStats {
    const zygotes: Record<ZygoteState, number> = { starting: 0, ready: 0, running: 0, cleaning: 0, dead: 0 }
    for (const z of [...this.serving.values(), ...this.successors.values()]) zygotes[z.state]++
    return { runs: { ...this.runs }, zygotes }
  }

  private create (slot: number): Zygote {
    const generation = (this.generations.get(slot) ?? 0) + 1
    this.generations.set(slot, generation)
    return new Zygote(this.options.launch(slot, generation), this.options.limits, this.options.channelLimit, dead => this.ended(slot, dead))
  }

  private ended (slot: number, dead: Zygote): void {
    this.options.log?.(`warm sandbox of slot ${slot} ended after ${dead.runs} runs: ${dead.reason}`)
    if (this.successors.get(slot) === dead) {
      this.successors.delete(slot)
      return
    }
    if (this.serving.get(slot) !== dead) return
    this.serving.delete(slot)
    this.lastFailure = dead.reason
    if (!dead.started) this.failedAt.set(slot, Date.now())
    if (this.closed || !dead.started) return // one that could not start waits for a request after the back-off
    const successor = this.successors.get(slot)
    this.successors.delete(slot)
    this.serving.set(slot, successor ?? this.create(slot))
  }

  private start (slot: number): Zygote {
    const zygote = this.create(slot)
    this.serving.set(slot, zygote)
    return zygote
  }

  /** Start a zygote for every slot that has none. */
  prewarm (slots: number): void {
    for (let slot = 0; slot < slots && !this.closed; slot++) if (!this.serving.has(slot)) this.start(slot)
  }

  /** A ready zygote for the slot, waiting for one that is starting; undefined: run cold. */
  async acquire (slot: number): Promise<Zygote | undefined> {
    if (this.closed) return undefined
    let zygote = this.serving.get(slot)
    if (zygote === undefined) {
      if (Date.now() - (this.failedAt.get(slot) ?? 0) < RESTART_BACKOFF_MS) return undefined
      zygote = this.start(slot)
    }
    return await zygote.whenReady() ? zygote : undefined
  }

  /** After a run: recycle a zygote that served its quota (its successor takes over), or start
   *  the successor once half the quota is served. */
  release (slot: number, zygote: Zygote): void {
    const { recycleRuns } = this.options
    if (zygote.runs >= recycleRuns) {
      zygote.kill(`recycled after ${zygote.runs} runs`)
    } else if (zygote.runs >= recycleRuns / 2 && this.serving.get(slot) === zygote && !this.successors.has(slot) && !this.closed) {
      this.successors.set(slot, this.create(slot))
    }
  }

  async run (slot: number, request: WarmRun): Promise<RunOutcome | undefined> {
    const before = this.serving.get(slot)
    const waited = before === undefined || before.state === 'starting'
    const zygote = await this.acquire(slot)
    if (zygote === undefined) {
      this.runs.cold++
      return undefined
    }
    try {
      const outcome = await zygote.run(request, this.options.memoryByCgroup)
      this.runs[waited ? 'waited' : 'ready']++
      return outcome
    } catch {
      this.runs.cold++
      return undefined // it was not ready after all: this run goes cold
    } finally {
      this.release(slot, zygote)
    }
  }

  /** Kill every zygote; resolves once their jails have exited (at most a few seconds). */
  async close (): Promise<void> {
    this.closed = true
    const zygotes = [...this.serving.values(), ...this.successors.values()]
    this.serving.clear()
    this.successors.clear()
    for (const zygote of zygotes) zygote.kill('pool closed')
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.all(zygotes.map(async z => await z.exited)),
      new Promise(resolve => { timer = setTimeout(resolve, 3000) })
    ])
    clearTimeout(timer)
  }
}
