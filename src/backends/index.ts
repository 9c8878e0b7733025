// The real backends, made from the configuration: the one place that knows every backend.
// A new backend is a folder beside nsjail/, unshare/ and direct/ behind SandboxBackend
// (backend.ts), and a line here.
import { ceilingsOf, permittedBackends, type BackendName, type Config } from '../config.js'
import { limitsFrom, type Limits, type SandboxBackend } from './backend.js'
import { DirectBackend, type DirectOptions } from './direct/backend.js'
import { NsjailBackend, type NsjailOptions } from './nsjail/backend.js'
import { UnshareBackend, type UnshareOptions } from './unshare/backend.js'

export function nsjailOptions (config: Config, limits: Limits): NsjailOptions {
  const { cpuSeconds, outputBytes } = ceilingsOf(config)
  /** A long-lived jail's own caps: the most CPU time and output any run in it may ask for. */
  const jailCeilings = { cpuSeconds, outputBytes }
  return {
    nsjailPath: config.NSJAIL_PATH,
    python: config.SANDBOX_PYTHON,
    sitePackages: config.SANDBOX_SITE_PACKAGES,
    uidBase: config.SANDBOX_UID_BASE,
    limits,
    warm: config.WARM_SANDBOXES
      ? { slots: config.CONCURRENCY, recycleRuns: config.WARM_RECYCLE_RUNS, ceilings: jailCeilings }
      : undefined,
    // Seats for the sessions and their spares: each a host uid of its own (uids.ts). Their
    // ceilings are their own, warm sandboxes or not (an outside review found a session capped at
    // the defaults with warm off: its output cut unflagged, its CPU ended early).
    sessions: config.SESSIONS_MAX > 0
      ? { memoryMiB: config.SESSION_MEMORY_MB, seats: config.SESSIONS_MAX + config.SESSION_SPARES, spares: config.SESSION_SPARES, spareIntervalMs: config.SESSION_SPARE_INTERVAL_MS, ceilings: jailCeilings }
      : undefined
  }
}

export function unshareOptions (config: Config, limits: Limits): UnshareOptions {
  return { python: config.SANDBOX_PYTHON, sitePackages: config.SANDBOX_SITE_PACKAGES, uidBase: config.SANDBOX_UID_BASE, limits }
}

export function directOptions (config: Config, limits: Limits): DirectOptions {
  return { python: config.SANDBOX_PYTHON, sitePackages: config.SANDBOX_SITE_PACKAGES, limits }
}

/** The real backends the configuration permits, strongest first. `log` hears what a backend
 *  does between requests (a warm sandbox replaced, and why); `warn`, what weakens it (memory
 *  bounded per process only). */
export function createBackends (config: Config, log?: (message: string) => void, warn?: (message: string) => void): SandboxBackend[] {
  const limits = limitsFrom(config)
  const make: Record<BackendName, () => SandboxBackend> = {
    nsjail: () => new NsjailBackend({ ...nsjailOptions(config, limits), log, warn }),
    unshare: () => new UnshareBackend({ ...unshareOptions(config, limits), warn }),
    direct: () => new DirectBackend(directOptions(config, limits))
  }
  return permittedBackends(config).map(name => make[name]())
}
