// Chooses the sandbox backend at start by probing the permitted ones, strongest first, and
// decorates the app with `sandbox`. With no backend passing, the app still starts but refuses
// to execute: there is no silent fallback. `direct` is only ever a candidate when permitted.
import fp from 'fastify-plugin'
import type { FastifyBaseLogger } from 'fastify'
import type { BackendName } from '../config.js'
import type { ProbeReport, RunOutcome, RunRequest, SandboxBackend, ScriptRequest } from '../backends/backend.js'
import { ClientClosedError, SandboxUnavailableError, ShuttingDownError } from '../errors/errors.js'
import { Slots, type Share } from '../slots.js'

export type ProbeResult = ProbeReport & { backend: BackendName }

export interface Execution {
  outcome: RunOutcome
  backend: BackendName
  queuedMs: number
}

export interface Sandbox {
  /** The backend chosen at start (not ready while its probe is inconclusive), or undefined:
   *  then /execute refuses. */
  readonly backend: SandboxBackend | undefined
  /** True while the chosen backend passes its probe (at start, then every PROBE_INTERVAL_MS); a
   *  probe that could not conclude (a busy host) leaves it as the last conclusive one did. */
  readonly ready: boolean
  /** The start-up probes in order, the chosen backend's replaced by its latest re-probe. */
  readonly probes: readonly ProbeResult[]
  readonly slots: Slots
  /** True from the start of a shutdown: /readyz answers 503, new executions SHUTTING_DOWN. */
  readonly draining: boolean
  /** What shutdowns did: requests refused while draining, runs stopped when the grace ended. */
  readonly shutdownCounts: { refused: number, stopped: number }
  /** Starts a graceful shutdown: nothing new runs; what is running or queued has `graceMs` to
   *  finish, then is stopped and answered 503 SHUTTING_DOWN. Resolves when nothing is left. */
  drain: (graceMs: number) => Promise<void>
  /** Runs `script` in a slot within the caller's `share`; `signal` aborts when the client leaves:
   *  a run is stopped, a request still queued (or just granted a slot) is not run and throws
   *  ClientClosedError. `run` replaces the backend's run (a session's call holds a slot too). */
  execute: (request: ScriptRequest, signal: AbortSignal, share?: Share, run?: (request: RunRequest) => Promise<RunOutcome>) => Promise<Execution>
}

declare module 'fastify' {
  interface FastifyInstance {
    sandbox: Sandbox
  }
}

export interface SandboxPluginOptions {
  /** Permitted backends, strongest first (built from the configuration, or fakes in tests). */
  backends: SandboxBackend[]
  concurrency: number
  queueSize: number
  queueTimeoutMs: number
  /** Re-probe the chosen backend this often (an inconclusive one sooner); 0: never. */
  probeIntervalMs: number
  /** QUEUE_EXPECTED_WAIT_MS: a request that would wait longer is refused at once (0 or undefined: never). */
  queueExpectedWaitMs?: number
  /** How soon an inconclusive re-probe is retried, at most (default INCONCLUSIVE_RETRY_MS; tests shorten it). */
  inconclusiveRetryMs?: number
}

async function probeSafely (backend: SandboxBackend): Promise<ProbeResult> {
  try {
    return { backend: backend.name, ...await backend.probe() }
  } catch (error) {
    return { backend: backend.name, ok: false, reason: `probe threw: ${(error as Error).message}`, features: {} }
  }
}

/** Start-up probes of a candidate whose canary runs out of time (a busy host) before its probe
 *  counts as inconclusive: one slow canary must not cost a start. */
export const START_PROBE_ATTEMPTS = 3
/** A re-probe that could not conclude (a busy host) is tried again this soon, or at
 *  PROBE_INTERVAL_MS if that is shorter: the verdict it could not give is still owed. */
export const INCONCLUSIVE_RETRY_MS = 10_000

async function probeAtStart (candidate: SandboxBackend, log: FastifyBaseLogger): Promise<ProbeResult> {
  let report: ProbeResult
  let attempt = 0
  do {
    attempt++
    const started = performance.now()
    report = await probeSafely(candidate)
    const { ok, inconclusive, reason, features } = report
    log[inconclusive === true ? 'warn' : 'info']({ backend: candidate.name, ok, inconclusive, reason, features, attempt, ms: Math.round(performance.now() - started) }, 'sandbox probe')
  } while (report.inconclusive === true && attempt < START_PROBE_ATTEMPTS)
  return report
}

export interface Choice {
  /** The backend that serves; or, when not ready, the one whose probe could not conclude (its
   *  re-probes decide); undefined when every candidate failed. */
  backend: SandboxBackend | undefined
  ready: boolean
  probes: ProbeResult[]
}

/** Probes in order; the first that passes wins, and later ones are not probed. A probe that stays
 *  inconclusive ends the search unready: a busy host is no reason to fall back to a weaker
 *  backend, nor to serve unproven (fail closed). */
export async function chooseBackend (candidates: SandboxBackend[], log: FastifyBaseLogger): Promise<Choice> {
  const probes: ProbeResult[] = []
  for (const candidate of candidates) {
    const report = await probeAtStart(candidate, log)
    probes.push(report)
    if (report.ok || report.inconclusive === true) return { backend: candidate, ready: report.ok, probes }
  }
  return { backend: undefined, ready: false, probes }
}

export default fp<SandboxPluginOptions>(async function sandboxPlugin (app, options) {
  const { backend, probes, ready: readyAtStart } = await chooseBackend(options.backends, app.log)
  if (backend === undefined) {
    app.log.error({ probes }, `NO SANDBOX BACKEND PASSED ITS PROBE (permitted: ${options.backends.map(b => b.name).join(', ') || 'none'}): /execute answers 503 SANDBOX_UNAVAILABLE and nothing is executed`)
  } else if (!readyAtStart) {
    app.log.error({ probes }, `THE PROBE OF ${backend.name} WAS INCONCLUSIVE ${START_PROBE_ATTEMPTS} TIMES (its canary ran out of time: a busy host?): /execute answers 503 SANDBOX_UNAVAILABLE until a re-probe passes${options.probeIntervalMs > 0 ? '' : ' (never: PROBE_INTERVAL_MS is 0)'}`)
  } else if (backend.name === 'direct') {
    app.log.warn('serving with the DIRECT backend: scripts run WITHOUT ISOLATION, as the server\'s own user, with its network and file system. Never expose this to untrusted users.')
  } else if (probes.length > 1) {
    app.log.warn({ backend: backend.name, failed: probes.slice(0, -1) }, `serving with ${backend.name}: the stronger backends failed their probes (see /readyz)`)
  } else {
    app.log.info({ backend: backend.name }, 'sandbox backend chosen')
  }

  const slots = new Slots(options.concurrency, options.queueSize, options.queueTimeoutMs, options.queueExpectedWaitMs ?? 0)
  const inFlight = new Set<AbortController>()
  let draining = false
  /** Set when a shutdown's grace has ended: what still runs is stopped, and answered SHUTTING_DOWN. */
  let stopping = false
  const shutdownCounts = { refused: 0, stopped: 0 }
  /** Settles when nothing runs or waits (checked as each execution ends). */
  let idle: (() => void) | undefined

  let ready = readyAtStart
  let reprobe: NodeJS.Timeout | undefined
  let closed = false
  if (backend !== undefined && options.probeIntervalMs > 0) {
    const retryMs = Math.min(options.probeIntervalMs, options.inconclusiveRetryMs ?? INCONCLUSIVE_RETRY_MS)
    /** The latest probe that concluded: an inconclusive one leaves it, and readiness, standing. */
    let conclusive = readyAtStart ? probes.at(-1) : undefined
    // One re-probe at a time: the next is scheduled when the last has answered.
    const schedule = (ms: number): void => {
      reprobe = setTimeout(() => reprobeOnce(), ms) // it cannot reject: probeSafely catches
      reprobe.unref()
    }
    const reprobeOnce = async (): Promise<void> => {
      const result = await probeSafely(backend)
      if (closed) return
      if (result.inconclusive === true) {
        probes[probes.length - 1] = conclusive === undefined
          ? result
          : { ...conclusive, inconclusive: true, reason: [conclusive.reason, `latest re-probe: ${result.reason ?? 'inconclusive'}`].filter(Boolean).join('; ') }
        app.log.warn({ probe: result }, `sandbox backend ${backend.name}: re-probe inconclusive (its canary ran out of time: a busy host?), ${ready ? 'still serving' : 'still refusing'}; trying again in ${retryMs} ms`)
        schedule(retryMs)
        return
      }
      probes[probes.length - 1] = conclusive = result
      if (result.ok !== ready) app.log[result.ok ? 'info' : 'error']({ probe: result }, `sandbox backend ${backend.name} ${result.ok ? 'passes its probe again' : 'FAILED ITS RE-PROBE: refusing to execute until it passes'}`)
      ready = result.ok
      schedule(options.probeIntervalMs)
    }
    schedule(readyAtStart ? options.probeIntervalMs : retryMs)
  }

  async function execute (request: ScriptRequest, signal: AbortSignal, share?: Share, run?: (request: RunRequest) => Promise<RunOutcome>): Promise<Execution> {
    if (draining) {
      shutdownCounts.refused++
      throw new ShuttingDownError('it takes no new runs')
    }
    if (backend === undefined || !ready) throw new SandboxUnavailableError()
    const queuedAt = performance.now()
    // A client that leaves while queued gives up its place at once; one that left just as its
    // slot was granted gives the slot back unused: nobody would read the reply.
    const lease = await slots.acquire(share, signal)
    if (signal.aborted) {
      lease.release()
      throw new ClientClosedError()
    }
    const queuedMs = Math.round(performance.now() - queuedAt)
    const controller = new AbortController()
    const abort = (): void => controller.abort()
    signal.addEventListener('abort', abort, { once: true })
    inFlight.add(controller)
    try {
      const leased = { ...request, slot: lease.slot, signal: controller.signal }
      const outcome = await (run === undefined ? backend.run(leased) : run(leased))
      // Stopped by the shutdown, not by its script: whatever the sandbox said, the service's doing.
      if (stopping && controller.signal.aborted && !signal.aborted) {
        shutdownCounts.stopped++
        throw new ShuttingDownError(`the run was still going when the shutdown's grace ended, and was stopped after ${outcome.durationMs} ms`)
      }
      return { outcome, backend: backend.name, queuedMs }
    } finally {
      signal.removeEventListener('abort', abort)
      inFlight.delete(controller)
      lease.release()
      if (inFlight.size === 0 && slots.queued === 0) idle?.()
    }
  }

  /** Stop everything still running or waiting: a shutdown's grace is over (or the app closes). */
  function stopAll (): void {
    stopping = true
    slots.drain(() => {
      shutdownCounts.stopped++
      return new ShuttingDownError('the request was still waiting for a slot when the shutdown\'s grace ended')
    })
    for (const controller of inFlight) controller.abort()
  }

  async function drain (graceMs: number): Promise<void> {
    draining = true
    if (inFlight.size > 0 || slots.queued > 0) {
      let timer: NodeJS.Timeout | undefined
      await new Promise<void>(resolve => {
        idle = resolve
        timer = setTimeout(resolve, graceMs)
      })
      clearTimeout(timer)
    }
    if (inFlight.size > 0 || slots.queued > 0) {
      app.log.warn({ running: inFlight.size, queued: slots.queued }, `shutdown: the grace of ${graceMs} ms is over; stopping what still runs (answered 503 SHUTTING_DOWN)`)
      stopAll()
    }
  }

  app.decorate('sandbox', {
    backend,
    get ready () { return ready },
    probes,
    slots,
    get draining () { return draining },
    shutdownCounts,
    drain,
    execute
  } satisfies Sandbox)

  // On close (after drain() when the process got a signal): refuse the queue, kill every running
  // sandbox (the spawn wrapper escalates to SIGKILL); both are answered 503 SHUTTING_DOWN.
  app.addHook('preClose', async () => {
    closed = true
    draining = true
    clearTimeout(reprobe)
    stopAll()
  })
  app.addHook('onClose', async () => { await backend?.close?.() })
}, { name: 'sandbox', fastify: '5.x' })
