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
  /** The backend chosen at start, or undefined: then /execute refuses. */
  readonly backend: SandboxBackend | undefined
  /** True while the chosen backend passes its probe (at start, then every PROBE_INTERVAL_MS). */
  readonly ready: boolean
  /** The start-up probes in order, the chosen backend's replaced by its latest re-probe. */
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
  /** Re-probe the chosen backend this often; 0: never. */
  probeIntervalMs: number
}

async function probeSafely (backend: SandboxBackend): Promise<ProbeResult> {
  try {
    return { backend: backend.name, ...await backend.probe() }
  } catch (error) {
    return { backend: backend.name, ok: false, reason: `probe threw: ${(error as Error).message}`, features: {} }
  }
}

/** Probes in order; the first that passes wins. Later ones are not probed. */
export async function chooseBackend (candidates: SandboxBackend[], log: FastifyBaseLogger): Promise<{ backend: SandboxBackend | undefined, probes: ProbeResult[] }> {
  const probes: ProbeResult[] = []
  for (const candidate of candidates) {
    const started = performance.now()
    const report = await probeSafely(candidate)
    probes.push(report)
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
  } else if (probes.length > 1) {
    app.log.warn({ backend: backend.name, failed: probes.slice(0, -1) }, `serving with ${backend.name}: the stronger backends failed their probes (see /readyz)`)
  } else {
    app.log.info({ backend: backend.name }, 'sandbox backend chosen')
  }

  const slots = new Slots(options.concurrency, options.queueSize, options.queueTimeoutMs)
  const inFlight = new Set<AbortController>()

  let ready = backend !== undefined
  let reprobe: NodeJS.Timeout | undefined
  if (backend !== undefined && options.probeIntervalMs > 0) {
    let probing = false
    reprobe = setInterval(() => {
      if (probing) return
      probing = true
      probeSafely(backend).then(result => {
        probes[probes.length - 1] = result
        if (result.ok !== ready) app.log[result.ok ? 'info' : 'error']({ probe: result }, `sandbox backend ${backend.name} ${result.ok ? 'passes its probe again' : 'FAILED ITS RE-PROBE: refusing to execute until it passes'}`)
        ready = result.ok
      }).finally(() => { probing = false })
    }, options.probeIntervalMs)
    reprobe.unref()
  }

  async function execute (script: string, signal: AbortSignal): Promise<Execution> {
    if (backend === undefined || !ready) throw new SandboxUnavailableError()
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

  app.decorate('sandbox', {
    backend,
    get ready () { return ready },
    probes,
    slots,
    execute
  } satisfies Sandbox)

  // On close: refuse the queue, kill every running sandbox (the spawn wrapper escalates to SIGKILL).
  app.addHook('preClose', async () => {
    clearInterval(reprobe)
    slots.drain()
    for (const controller of inFlight) controller.abort()
  })
  app.addHook('onClose', async () => { await backend?.close?.() })
}, { name: 'sandbox', fastify: '5.x' })
