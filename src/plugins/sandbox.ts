// Chooses the sandbox backend at start by probing the permitted ones, strongest first, and
// decorates the app with `sandbox`. With no backend passing, the app still starts but refuses
// to execute: there is no silent fallback. `direct` is only ever a candidate when permitted.
import fp from 'fastify-plugin'
import type { FastifyBaseLogger } from 'fastify'
import type { BackendName } from '../config.js'
import type { ProbeReport, RunOutcome, SandboxBackend } from '../backends/backend.js'
import { SandboxUnavailableError } from '../errors.js'
import { Slots } from '../slots.js'

export interface ProbeResult extends ProbeReport {
  backend: BackendName
}

export interface Execution {
  outcome: RunOutcome
  backend: BackendName
  queuedMs: number
}

export interface Sandbox {
  /** The backend that serves every request, or undefined: then /execute refuses. */
  readonly backend: SandboxBackend | undefined
  readonly probes: readonly ProbeResult[]
  readonly slots: Slots
  execute: (script: string, signal: AbortSignal) => Promise<Execution>
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
}

/** Probes in order; the first that passes wins. Later ones are not probed. */
export async function chooseBackend (candidates: SandboxBackend[], log: FastifyBaseLogger): Promise<{ backend: SandboxBackend | undefined, probes: ProbeResult[] }> {
  const probes: ProbeResult[] = []
  for (const candidate of candidates) {
    const started = performance.now()
    let report: ProbeReport
    try {
      report = await candidate.probe()
    } catch (error) {
      report = { ok: false, reason: `probe threw: ${(error as Error).message}`, features: {} }
    }
    probes.push({ backend: candidate.name, ...report })
    log.info({ backend: candidate.name, ok: report.ok, reason: report.reason, features: report.features, ms: Math.round(performance.now() - started) }, 'sandbox probe')
    if (report.ok) return { backend: candidate, probes }
  }
  return { backend: undefined, probes }
}

export default fp<SandboxPluginOptions>(async function sandboxPlugin (app, options) {
  const { backend, probes } = await chooseBackend(options.backends, app.log)
  if (backend === undefined) {
    app.log.error({ probes }, `NO SANDBOX BACKEND PASSED ITS PROBE (permitted: ${options.backends.map(b => b.name).join(', ') || 'none'}): /execute answers 503 SANDBOX_UNAVAILABLE and nothing is executed`)
  } else if (backend.name === 'direct') {
    app.log.warn('serving with the DIRECT backend: scripts run WITHOUT ISOLATION, as the server\'s own user, with its network and file system. Never expose this to untrusted users.')
  } else {
    app.log.info({ backend: backend.name }, 'sandbox backend chosen')
  }

  const slots = new Slots(options.concurrency, options.queueSize, options.queueTimeoutMs)
  const inFlight = new Set<AbortController>()

  async function execute (script: string, signal: AbortSignal): Promise<Execution> {
    if (backend === undefined) throw new SandboxUnavailableError()
    const queuedAt = performance.now()
    const lease = await slots.acquire()
    const queuedMs = Math.round(performance.now() - queuedAt)
    const controller = new AbortController()
    const abort = (): void => controller.abort()
    signal.addEventListener('abort', abort, { once: true })
    inFlight.add(controller)
    try {
      const outcome = await backend.run({ script, slot: lease.slot, signal: controller.signal })
      return { outcome, backend: backend.name, queuedMs }
    } finally {
      signal.removeEventListener('abort', abort)
      inFlight.delete(controller)
      lease.release()
    }
  }

  app.decorate('sandbox', { backend, probes, slots, execute } satisfies Sandbox)

  // On close: refuse the queue, kill every running sandbox (the spawn wrapper escalates to SIGKILL).
  app.addHook('preClose', async () => {
    slots.drain()
    for (const controller of inFlight) controller.abort()
  })
}, { name: 'sandbox', fastify: '5.x' })
