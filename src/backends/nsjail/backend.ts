// The nsjail backend: the policy in nsjail/pysandbox.cfg plus per-host and per-run arguments
// (jail-args.ts). Its probe also picks the strongest memory rung the host allows (memory.ts); every
// rung must pass the same canaries. With warm sandboxes on, runs go to the warm pool's zygotes
// (warm-pool.ts) and cold only when none can be had.
import { mkdirSync } from 'node:fs'
import { constants } from 'node:os'
import { resolve } from 'node:path'
import { PROJECT_ROOT } from '../../config.js'
import type { Limits, ProbeReport, RunOutcome, RunRequest, SandboxBackend, SessionSandbox, WarmStats } from '../backend.js'
import { channelLimit, HARNESS_DIR, JAIL_HARNESS_DIR, JAIL_SITE_PACKAGES, harnessArgs, pythonArgs, runLaunch, type Launch } from '../launch.js'
import { MEMORY_RUNGS, boundsWholeRun, memoryFeatures, perProcessMemoryWarning, type MemoryRung } from '../memory.js'
import { crashed, outputOf } from '../outcome.js'
import { probeBackend, type ProbeExpectations } from '../probe.js'
import { discoverPython, type PythonRuntime } from '../python-runtime.js'
import type { SpawnResult } from '../spawn.js'
import { MAX_SESSION_SEATS, PROBE_SLOT, SESSION_PARENT_UID_OFFSET, SESSION_UID_OFFSET, SUCCESSOR_UID_OFFSET, ZYGOTE_UID_OFFSET } from '../uids.js'
import { hostIds, jailArgs, warmPoolMemory, zygoteAllowanceMiB, type JailSpec } from './jail-args.js'
import { SessionJail } from './session-jail.js'
import { WarmPool } from './warm-pool.js'

export const NSJAIL_POLICY = resolve(PROJECT_ROOT, 'nsjail/pysandbox.cfg')

/** Without warm sandboxes nothing runs warm: no ceiling to stay under. */
const NO_WARM_CEILINGS = { cpuSeconds: 0, outputBytes: 0 }

export interface WarmOptions {
  slots: number
  recycleRuns: number
  /** The most CPU time and output a warm run may ask for: its zygote's own caps. */
  ceilings: Pick<Limits, 'cpuSeconds' | 'outputBytes'>
}

export interface SessionOptions {
  /** Each session's jail's memory (its cgroup, or RLIMIT_AS per process on the rlimit rung). */
  memoryMiB: number
  /** Seats (one host uid each): the most session jails at once, open ones and spares. */
  seats: number
  /** Session jails kept started and ready ahead of need. */
  spares: number
  /** A spare taken by an open is replaced at most once per this many ms: its import runs outside
   *  any slot (an outside review looped open/delete and spent a core on replacements). */
  spareIntervalMs: number
  /** The most CPU time and output a call may ask for (the jail's own caps, warm sandboxes or not). */
  ceilings: Pick<Limits, 'cpuSeconds' | 'outputBytes'>
}

export interface NsjailOptions {
  nsjailPath: string
  python: string
  sitePackages: string
  uidBase: number
  limits: Limits
  /** Test-only: the rungs to try (default: all, strongest first). */
  rungs?: MemoryRung[]
  /** Warm sandboxes (docs/warm.md): one zygote jail per slot; undefined: every run is cold. A
   *  warm run may ask for CPU time and output up to `ceilings` (its zygote's own caps; default:
   *  the limits); one asking for other memory or processes than the limits runs cold. */
  warm?: WarmOptions
  /** Sessions (docs/sessions.md): a jail of its own per session; undefined: no sessions. */
  sessions?: SessionOptions
  log?: (message: string) => void
  /** Hears what weakens the sandbox (memory bounded per process only). */
  warn?: (message: string) => void
}

/** How long openSession() waits for a seat while ended sessions' jails exit. */
const SEAT_WAIT_MS = 5000
/** How long close() waits for session jails to exit (nsjail gets SIGTERM, then SIGKILL after 1 s). */
const SESSIONS_CLOSE_MS = 3000
/** Warm-path probes whose canary runs out of time (a busy host) before warm sandboxes go off. */
const WARM_PROBE_ATTEMPTS = 3
/** While the zygote's footprint is being measured (MiB). */
const MEASURING_ALLOWANCE_MIB = 512
/** What the zygote keeps: dropping each run to the run's uid with an empty bounding set (SETUID,
 *  SETGID, SETPCAP) and killing what the run left (KILL). No run has any capability. */
const ZYGOTE_CAPS = ['CAP_SETUID', 'CAP_SETGID', 'CAP_SETPCAP', 'CAP_KILL'] as const
/** A session's parent keeps the same four, for the same reasons: dropping its kernel to 65534
 *  (SETUID, SETGID, SETPCAP; also its file-system ids while it reads the kernel's smaps_rollup),
 *  and stopping, continuing and killing the session's processes (KILL). */
const SESSION_PARENT_CAPS = ZYGOTE_CAPS
/** The descriptors a cold run gets: the result channel (3) and the script (4). */
const COLD_FDS = [3, 4] as const

const NSJAIL_EXPECTATIONS: ProbeExpectations = { isolated: true, seccomp: true }

/** nsjail reports a child killed by signal N as its own exit status 128 + N: the signal, then.
 *  nsjail itself ended by a signal that neither our timer, an abort nor the channel's cap sent was
 *  killed from outside (an operator, a fault): CRASHED, not the script's memory or CPU (a SIGKILL
 *  read as the cgroup's was once answered MEMORY_LIMIT_EXCEEDED; found by the load command). */
export function undoExitStatusSignal (spawned: SpawnResult): SpawnResult | RunOutcome {
  if (spawned.signal !== null && !spawned.timedOut && !spawned.aborted && !spawned.channelOverflow) {
    const name = Object.entries(constants.signals).find(([, n]) => n === spawned.signal)?.[0] ?? `signal ${spawned.signal}`
    return crashed(`the sandbox (nsjail) was killed by ${name} from outside before the script reported a status`, outputOf(spawned))
  }
  const code = spawned.exitCode
  if (spawned.signal !== null || code === null || code <= 128 || code >= 128 + 65) return spawned
  return { ...spawned, exitCode: null, signal: code - 128 }
}

export class NsjailBackend implements SandboxBackend {
  readonly name = 'nsjail'
  private runtime: PythonRuntime | undefined
  private rung: MemoryRung = 'rlimit'
  private pool: WarmPool | undefined
  /** Memory a warm jail gets on top of the run's limit: the zygote's measured footprint. */
  private zygoteAllowanceMiB = MEASURING_ALLOWANCE_MIB
  /** Session seats not held by a jail (a seat is free again only once its jail has exited). */
  private readonly freeSeats: number[]
  /** openSession() calls waiting for a seat to be freed. */
  private readonly seatWaiters: Array<() => void> = []
  private spares: SessionJail[] = []
  private readonly openSessions = new Set<SessionJail>()
  /** Sessions are served once a probe has passed, until close(). */
  private sessionsOn = false
  private spareCount = 0
  private spareIntervalMs = 0
  /** When the last replacement spare started, and the timer that starts the next one. */
  private lastReplacement = Number.NEGATIVE_INFINITY
  private replacementTimer: NodeJS.Timeout | undefined

  constructor (private readonly options: NsjailOptions) {
    const seats = options.sessions?.seats ?? 0
    if (seats > MAX_SESSION_SEATS) throw new Error(`at most ${MAX_SESSION_SEATS} session seats`)
    this.freeSeats = Array.from({ length: seats }, (_, seat) => seat)
  }

  /** What a cold run and a warm jail of a slot share. */
  private spec (slot: number, rung: MemoryRung, limits: Limits): Pick<JailSpec, 'policy' | 'limits' | 'rung' | 'runtime' | 'binds' | 'run'> {
    const runtime = this.runtime
    if (runtime === undefined) throw new Error('nsjail backend used before its probe')
    return {
      policy: NSJAIL_POLICY,
      limits,
      rung,
      runtime,
      binds: [{ source: this.options.sitePackages, target: JAIL_SITE_PACKAGES }, { source: HARNESS_DIR, target: JAIL_HARNESS_DIR }],
      run: hostIds(slot, this.options.uidBase, { uid: process.getuid?.(), gid: process.getgid?.() })
    }
  }

  /** The one place a jail's command line is made (tests override it to switch a protection off). */
  launchJail (spec: JailSpec): Launch {
    return { file: this.options.nsjailPath, args: jailArgs(spec), env: {} }
  }

  /** A cold run: nsjail times it (a little past the server's own timer), run.py runs the script. */
  launch (slot: number, rung: MemoryRung = this.rung, limits: Limits = this.options.limits): Launch {
    const shared = this.spec(slot, rung, limits)
    return this.launchJail({
      ...shared,
      timeLimitS: Math.ceil((limits.wallTimeMs + limits.killGraceMs) / 1000) + 1,
      cpuLimit: limits.cpuSeconds + 1,
      extra: { memoryMiB: 0, processes: 0 },
      passFds: COLD_FDS,
      command: [shared.runtime.executable, ...harnessArgs(`${JAIL_HARNESS_DIR}/run.py`, limits)]
    })
  }

  /** A warm jail: the zygote as the command, no jail time limit (the server times each run), the
   *  CPU limit set by the zygote per run, and the zygote's own memory and process added to the
   *  cgroup. The zygote is uid 0 of the jail (another host uid, four capabilities); each run is
   *  65534, mapped to the slot's uid as in a cold run. */
  warmLaunch (slot: number, rung: MemoryRung = this.rung, allowanceMiB = this.zygoteAllowanceMiB): Launch {
    const { limits } = this.options
    const { cpuSeconds, outputBytes } = this.warmCeilings
    const shared = this.spec(slot, rung, limits)
    return this.launchJail({
      ...shared,
      zygote: { uid: shared.run.uid + ZYGOTE_UID_OFFSET, gid: shared.run.gid + ZYGOTE_UID_OFFSET, caps: ZYGOTE_CAPS },
      timeLimitS: 0,
      cpuLimit: 'inf',
      extra: { memoryMiB: allowanceMiB, processes: 1 },
      passFds: [],
      command: [shared.runtime.executable, ...pythonArgs(`${JAIL_HARNESS_DIR}/zygote.py`, [
        cpuSeconds, limits.resultBytes, outputBytes, channelLimit(limits), limits.filesOut, limits.filesOutBytes,
        JAIL_SITE_PACKAGES
      ])]
    })
  }

  /** A session's jail: session.py as the command, the session's memory, no jail time limit (the
   *  server times each call, the parent each call's CPU), one more process (the parent), and the
   *  seat's own host uid. As a warm jail's zygote, the parent is uid 0 of the jail (a host uid of
   *  its own: the seat's + SESSION_PARENT_UID_OFFSET, four capabilities), so it sees every process
   *  of the jail in /proc and none can touch it; the kernel and every process of the user's code
   *  are 65534 of the jail, the seat's uid, with no capability, as a cold run. */
  sessionLaunch (seat: number, rung: MemoryRung = this.rung): Launch {
    const sessions = this.options.sessions
    if (sessions === undefined) throw new Error('sessions are off')
    const limits = { ...this.options.limits, memoryMiB: sessions.memoryMiB }
    const { cpuSeconds, outputBytes } = sessions.ceilings
    const shared = this.spec(SESSION_UID_OFFSET + seat, rung, limits)
    return this.launchJail({
      ...shared,
      zygote: { uid: shared.run.uid + SESSION_PARENT_UID_OFFSET, gid: shared.run.gid + SESSION_PARENT_UID_OFFSET, caps: SESSION_PARENT_CAPS },
      timeLimitS: 0,
      cpuLimit: 'inf',
      extra: { memoryMiB: 0, processes: 1 },
      passFds: [],
      command: [shared.runtime.executable, ...pythonArgs(`${JAIL_HARNESS_DIR}/session.py`, [
        cpuSeconds, limits.resultBytes, outputBytes, channelLimit(limits), limits.filesOut, limits.filesOutBytes,
        JAIL_SITE_PACKAGES
      ])]
    })
  }

  /** A new session jail on a free seat (undefined: none free); the seat returns when it exits. */
  private startSessionJail (): SessionJail | undefined {
    const seat = this.freeSeats.shift()
    if (seat === undefined) return undefined
    const jail = new SessionJail(this.sessionLaunch(seat), { channelLimit: channelLimit(this.options.limits), memoryByCgroup: boundsWholeRun(this.rung) })
    jail.exited.then(() => {
      this.openSessions.delete(jail)
      this.spares = this.spares.filter(spare => spare !== jail)
      this.freeSeats.push(seat)
      // An open waiting for a seat comes first (it starts the next spare behind it); else a spare
      // that found no free seat is started now, but not after a jail that never started (a broken
      // host would loop): the next open retries.
      const waiters = this.seatWaiters.splice(0)
      for (const waiter of waiters) waiter()
      if (waiters.length === 0 && jail.started) this.replenishSpares()
    }, () => {})
    return jail
  }

  /** A jail on a free seat, waiting for one to be freed: an ended session's seat returns only once
   *  its jail has exited (within nsjail's 1 s kill grace), and a session may be opened right after
   *  another ended. */
  private async sessionJailOnSeat (): Promise<SessionJail | undefined> {
    const deadline = Date.now() + SEAT_WAIT_MS
    let jail = this.startSessionJail()
    while (jail === undefined && this.sessionsOn && Date.now() < deadline) {
      let timer: NodeJS.Timeout | undefined
      await new Promise<void>(resolve => {
        this.seatWaiters.push(resolve)
        timer = setTimeout(resolve, deadline - Date.now())
      })
      clearTimeout(timer)
      // close() may have freed the seat: no jail starts after it.
      /* c8 ignore next -- close() while an open waits for a seat: a race no test can time */
      if (!this.sessionsOn) return undefined
      jail = this.startSessionJail()
    }
    return jail
  }

  /** Spares up to the configured number, started in the background: all at once after the probe
   *  (`initial`), else one replacement per `spareIntervalMs`. */
  private replenishSpares (initial = false): void {
    while (this.sessionsOn && this.spares.length < this.spareCount) {
      const wait = this.lastReplacement + this.spareIntervalMs - Date.now()
      if (!initial && wait > 0) {
        this.replacementTimer ??= setTimeout(() => {
          this.replacementTimer = undefined
          this.replenishSpares()
        }, wait).unref()
        return
      }
      const jail = this.startSessionJail()
      if (jail === undefined) return
      if (!initial) this.lastReplacement = Date.now()
      this.spares.push(jail)
      jail.whenReady().then(ready => {
        if (!ready && this.sessionsOn) this.options.log?.(`a spare session sandbox did not start: ${jail.reason}`)
      }, () => {})
    }
  }

  /** A session's sandbox: a ready spare when there is one (else one that is starting, else a new
   *  jail), waited for until it says ready; a replacement spare is started behind it. */
  async openSession (): Promise<SessionSandbox> {
    if (!this.sessionsOn) throw new Error('sessions are not available (no passing probe, or sessions off)')
    const spare = this.spares.find(jail => jail.state === 'ready') ?? this.spares.find(jail => jail.state === 'starting')
    let jail = spare
    if (jail !== undefined) this.spares = this.spares.filter(other => other !== jail)
    else jail = await this.sessionJailOnSeat()
    if (jail === undefined) throw new Error('no free session seat')
    this.openSessions.add(jail)
    setImmediate(() => this.replenishSpares())
    if (!await jail.whenReady()) throw new Error(`the session's sandbox did not start: ${jail.reason}`)
    return jail
  }

  sessionStats (): { open: number, spares: number, ready: number } {
    return { open: this.openSessions.size, spares: this.spares.length, ready: this.spares.filter(jail => jail.state === 'ready').length }
  }

  private newPool (rung: MemoryRung, allowanceMiB: number, recycleRuns: number): WarmPool {
    const { limits } = this.options
    return new WarmPool({
      // A slot's successive jails alternate between two uids: the two that overlap during a
      // hand-over never share RLIMIT_NPROC.
      launch: (slot, generation) => this.warmLaunch(slot + ((generation - 1) % 2) * SUCCESSOR_UID_OFFSET, rung, allowanceMiB),
      limits,
      channelLimit: channelLimit(limits),
      recycleRuns,
      memoryByCgroup: boundsWholeRun(rung),
      log: this.options.log
    })
  }

  /** The warm path's probe: measure a zygote, then run the same canaries through a warm jail
   *  sized by that measure. Passing, it (re)starts the serving pool; failing, runs go cold. */
  private async probeWarm (rung: MemoryRung, warm: WarmOptions): Promise<Record<string, string | number | boolean>> {
    const measuring = this.newPool(rung, MEASURING_ALLOWANCE_MIB, 1)
    const zygote = await measuring.acquire(PROBE_SLOT)
    const anonMiB = Math.ceil((zygote?.anonKiB ?? 0) / 1024)
    const rssMiB = Math.ceil((zygote?.rssKiB ?? 0) / 1024)
    await measuring.close()
    let reason = zygote === undefined ? `the zygote did not start: ${measuring.lastFailure}` : ''
    const allowanceMiB = zygoteAllowanceMiB(rung, zygote?.anonKiB ?? 0)
    if (reason === '') {
      const probing = this.newPool(rung, allowanceMiB, 1000)
      try {
        const probe = async (): Promise<ProbeReport> => await probeBackend(async request => await probing.run(request.slot, request) ?? crashed(`no warm sandbox: ${probing.lastFailure}`),
          this.options.limits, { ...NSJAIL_EXPECTATIONS, memoryPerRun: boundsWholeRun(rung) })
        let report = await probe()
        // A canary out of time (a busy host) says nothing about the jail: asked again before warm
        // sandboxes are turned off for a whole probe interval (seen once at start under load).
        /* c8 ignore next -- only a host too busy for a canary's time limit gets here: no test can make it so on cue */
        for (let attempt = 1; report.inconclusive === true && attempt < WARM_PROBE_ATTEMPTS; attempt++) report = await probe()
        if (!report.ok) reason = report.reason
        /* c8 ignore next 4 -- only a host too busy for a canary's time limit gets here: no test can make it so on cue */
        if (report.inconclusive === true && this.pool !== undefined) {
          // A busy host, not a broken jail: the serving pool stays as it is.
          return { warm: 'zygote', warmReason: `latest re-probe of the warm path inconclusive: ${reason}` }
        }
      } finally {
        await probing.close()
      }
    }
    if (reason !== '') {
      await this.pool?.close()
      this.pool = undefined
      this.options.log?.(`warm sandboxes OFF, every run is cold: ${reason}`)
      return { warm: 'off', warmReason: reason }
    }
    if (this.pool === undefined) { // a re-probe that passes keeps the serving pool as it is
      this.zygoteAllowanceMiB = allowanceMiB
      const pool = this.pool = this.newPool(rung, allowanceMiB, warm.recycleRuns)
      // Started after the probe has returned, so they run with whatever launch() gives then.
      setImmediate(() => pool.prewarm(warm.slots))
    }
    const memory = warmPoolMemory({ rung, memoryMiB: this.options.limits.memoryMiB, allowanceMiB: this.zygoteAllowanceMiB, zygoteRssMiB: rssMiB, slots: warm.slots })
    return {
      warm: 'zygote',
      zygotes: warm.slots,
      zygoteMemoryMiB: rssMiB,
      zygoteAnonMemoryMiB: anonMiB,
      warmJailMemoryMiB: memory.jailMiB,
      warmPoolMemoryMiB: memory.poolMiB,
      warmRecycleRuns: warm.recycleRuns
    }
  }

  warmStats (): WarmStats | undefined {
    return this.pool?.stats
  }

  async close (): Promise<void> {
    const pool = this.pool
    this.pool = undefined
    this.sessionsOn = false
    clearTimeout(this.replacementTimer)
    const jails = [...this.spares, ...this.openSessions]
    for (const jail of jails) jail.close('the server is shutting down')
    // The jails' processes are unref'd: a timer of our own keeps the process alive until they have
    // exited (without it, a server closing with sessions open could exit before their cgroups go).
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.all([pool?.close(), ...jails.map(async jail => await jail.exited)]),
      new Promise(resolve => { timer = setTimeout(resolve, SESSIONS_CLOSE_MS) })
    ])
    clearTimeout(timer)
  }

  async probe (): Promise<ProbeReport> {
    try {
      this.runtime = await discoverPython(this.options.python)
    } catch (error) {
      return { ok: false, reason: (error as Error).message, features: {} }
    }
    const reasons: string[] = []
    for (const rung of this.options.rungs ?? MEMORY_RUNGS) {
      if (rung === 'cgroupv1') prepareCgroupV1()
      const report = await probeBackend(
        request => this.runWith(request, rung), this.options.limits, { ...NSJAIL_EXPECTATIONS, memoryPerRun: boundsWholeRun(rung) })
      // A canary that ran out of time says nothing about this rung: trying a weaker one would
      // let a busy host lower the memory limit's strength.
      if (report.inconclusive === true) return report
      if (report.ok) {
        this.rung = rung
        if (!boundsWholeRun(rung)) this.options.warn?.(perProcessMemoryWarning('nsjail', reasons))
        const warm = this.options.warm === undefined ? { warm: 'off' } : await this.probeWarm(rung, this.options.warm)
        if (this.options.sessions !== undefined && !this.sessionsOn) {
          this.sessionsOn = true
          this.spareCount = this.options.sessions.spares
          this.spareIntervalMs = this.options.sessions.spareIntervalMs
          // Started after the probe has returned, so they run with whatever launch() gives then.
          setImmediate(() => this.replenishSpares(true))
        }
        return {
          ...report,
          features: {
            ...report.features,
            ...memoryFeatures(rung, reasons),
            python: this.runtime.version,
            ...warm
          }
        }
      }
      reasons.push(`${rung}: ${report.reason}`)
    }
    // The last rung (rlimits) carries the reason that matters; the cgroup rungs fail in most
    // containers for reasons of their own.
    return { ok: false, reason: [...reasons].reverse().join('; '), features: {} }
  }

  private async runWith (request: RunRequest, rung: MemoryRung): Promise<RunOutcome> {
    const limits = request.limits ?? this.options.limits
    return await runLaunch(this.launch(request.slot, rung, limits), request, limits, boundsWholeRun(rung), undoExitStatusSignal)
  }

  /** What a warm jail's zygote lets one run have at most. */
  private get warmCeilings (): Pick<Limits, 'cpuSeconds' | 'outputBytes'> {
    return this.options.warm?.ceilings ?? NO_WARM_CEILINGS
  }

  /** A warm jail is built for the default memory and processes, and its zygote caps CPU time and
   *  output: a run asking for other memory or processes, or more than those caps, runs cold. */
  private fitsWarm (limits: Limits | undefined): boolean {
    if (limits === undefined) return true
    const { memoryMiB, processes } = this.options.limits
    const { cpuSeconds, outputBytes } = this.warmCeilings
    return limits.memoryMiB === memoryMiB && limits.processes === processes && limits.cpuSeconds <= cpuSeconds && limits.outputBytes <= outputBytes
  }

  async run (request: RunRequest): Promise<RunOutcome> {
    const warm = this.fitsWarm(request.limits) ? await this.pool?.run(request.slot, request) : undefined
    return warm ?? await this.runWith(request, this.rung)
  }
}

/** nsjail's cgroup v1 mode needs its parent groups to exist; creating them is harmless if it fails. */
function prepareCgroupV1 (): void {
  for (const controller of ['memory', 'pids']) {
    try {
      mkdirSync(`/sys/fs/cgroup/${controller}/NSJAIL`, { recursive: true })
      /* c8 ignore next 3 -- host-dependent: fails only without root or a v1 hierarchy (the tests run as root on v1) */
    } catch {
      // Not root, or no v1 hierarchy: the probe of this rung will fail and say why.
    }
  }
}
