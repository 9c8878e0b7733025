import { availableParallelism } from 'node:os'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { BACKEND_NAMES, ConfigError, ConfigSchema, PROJECT_ROOT, ceilingsOf, loadConfig, permittedBackends, problemsOf, requirement, tenantSharesOf, trustProxyOf } from '../../src/config.js'

const MiB = 1024 * 1024

/** Sets process.env variables for one test and restores them after it. */
function withProcessEnv (t: Test, vars: Record<string, string>): void {
  const saved = Object.fromEntries(Object.keys(vars).map(k => [k, process.env[k]]))
  Object.assign(process.env, vars)
  t.teardown(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })
}

t.test('PROJECT_ROOT is the directory above src/', async t => {
  t.equal(PROJECT_ROOT, resolve(fileURLToPath(new URL('.', import.meta.url)), '../..'))
})

t.test('loadConfig({}) gives the documented defaults', async t => {
  const config = loadConfig({})
  const documented: Record<string, unknown> = {
    PORT: 8080,
    HOST: '0.0.0.0',
    LOG_LEVEL: 'info',
    SANDBOX_BACKENDS: 'nsjail,unshare',
    SANDBOX_PYTHON: '/usr/bin/python3',
    SANDBOX_SITE_PACKAGES: resolve(PROJECT_ROOT, '.sandbox/site-packages'),
    NSJAIL_PATH: resolve(PROJECT_ROOT, '.sandbox/nsjail/nsjail/bin/nsjail'),
    SANDBOX_UID_BASE: 1_900_000_000,
    LIMIT_WALL_MS: 10_000,
    LIMIT_KILL_GRACE_MS: 500,
    LIMIT_CPU_S: 10,
    LIMIT_MEMORY_MB: 512,
    LIMIT_PROCESSES: 64,
    LIMIT_OPEN_FILES: 256,
    LIMIT_TMP_MB: 64,
    LIMIT_OUTPUT_BYTES: MiB,
    LIMIT_RESULT_BYTES: 8 * MiB,
    LIMIT_BODY_BYTES: 12 * MiB,
    LIMIT_FILES_IN: 100,
    LIMIT_FILE_IN_BYTES: 8 * MiB,
    LIMIT_FILES_IN_BYTES: 8 * MiB,
    LIMIT_FILES_OUT: 100,
    LIMIT_FILES_OUT_BYTES: 8 * MiB,
    CONCURRENCY: availableParallelism(),
    QUEUE_SIZE: 32 * availableParallelism(),
    QUEUE_TIMEOUT_MS: 30_000,
    QUEUE_EXPECTED_WAIT_MS: 5000,
    SHUTDOWN_GRACE_MS: 8000,
    REPLY_TIMEOUT_MS: 15_000,
    PROBE_INTERVAL_MS: 300_000,
    RATE_LIMIT_MAX: 3000,
    RATE_LIMIT_WINDOW_MS: 60_000,
    TRUST_PROXY: 'false'
  }
  for (const [key, value] of Object.entries(documented)) t.equal((config as Record<string, unknown>)[key], value, key)
  t.notOk('SANDBOX_BACKEND' in config, 'no backend is pinned by default')
  // Every other variable the schema knows gets its schema default too.
  for (const [key, schema] of Object.entries(ConfigSchema.properties)) {
    const fallback = (schema as { default?: unknown }).default
    if (fallback !== undefined) t.equal((config as Record<string, unknown>)[key], fallback, `${key} has its schema default`)
  }
})

t.test('loadConfig(env) reads only the env it is given, not process.env', async t => {
  withProcessEnv(t, { PORT: '4321', LIMIT_WALL_MS: '2000', SANDBOX_BACKENDS: 'direct' })
  const config = loadConfig({})
  t.equal(config.PORT, 8080)
  t.equal(config.LIMIT_WALL_MS, 10_000)
  t.equal(config.SANDBOX_BACKENDS, 'nsjail,unshare', 'a stray variable cannot permit direct')
})

t.test('loadConfig() without an argument reads process.env', async t => {
  withProcessEnv(t, { PORT: '4321', LIMIT_WALL_MS: '2000' })
  const config = loadConfig()
  t.equal(config.PORT, 4321)
  t.equal(config.LIMIT_WALL_MS, 2000)
})

t.test('the configuration is frozen', async t => {
  const config = loadConfig({})
  t.ok(Object.isFrozen(config))
  t.equal(Reflect.set(config, 'PORT', 1), false, 'assignment is refused')
  t.equal(config.PORT, 8080)
})

t.test('unknown variables are dropped; only schema keys remain', async t => {
  const config = loadConfig({ PATH: '/usr/bin', SECRET_TOKEN: 'hunter2', port: '1', PORT: '9000' })
  const known = Object.keys(ConfigSchema.properties)
  for (const key of Object.keys(config)) t.ok(known.includes(key), `${key} is a schema key`)
  t.notOk('SECRET_TOKEN' in config)
  t.notOk('PATH' in config)
  t.notOk('port' in config, 'names are case-sensitive')
  t.equal(config.PORT, 9000)
})

t.test('string values are coerced to the schema types', async t => {
  const table = [
    { env: { PORT: '3000' }, key: 'PORT', value: 3000 },
    { env: { PORT: '0' }, key: 'PORT', value: 0 },
    { env: { TRUST_PROXY: '1' }, key: 'TRUST_PROXY', value: '1' },
    { env: { TRUST_PROXY: 'false' }, key: 'TRUST_PROXY', value: 'false' },
    { env: { TRUST_PROXY: '10.0.0.1, 10.8.0.0/16,::1' }, key: 'TRUST_PROXY', value: '10.0.0.1, 10.8.0.0/16,::1' },
    { env: { RATE_LIMIT_MAX: '0' }, key: 'RATE_LIMIT_MAX', value: 0 },
    { env: { LIMIT_MEMORY_MB: '64' }, key: 'LIMIT_MEMORY_MB', value: 64 },
    { env: { QUEUE_SIZE: '0' }, key: 'QUEUE_SIZE', value: 0 },
    { env: { LOG_LEVEL: 'silent' }, key: 'LOG_LEVEL', value: 'silent' },
    { env: { SANDBOX_BACKEND: 'direct' }, key: 'SANDBOX_BACKEND', value: 'direct' },
    { env: { SANDBOX_BACKENDS: 'direct,nsjail' }, key: 'SANDBOX_BACKENDS', value: 'direct,nsjail' }
  ] as const
  for (const { env, key, value } of table) {
    t.equal(loadConfig(env)[key], value, `${JSON.stringify(env)}`)
  }
})

t.test('sent files must fit in the run\'s /tmp: a relation between two variables, named with both values', async t => {
  t.throws(() => loadConfig({ LIMIT_TMP_MB: '4' }), { message: 'LIMIT_FILES_IN_BYTES="8388608" must be at most LIMIT_TMP_MB in bytes (4194304): the files are written to the run\'s /tmp' })
  t.throws(() => loadConfig({ LIMIT_TMP_MB: '4', LIMIT_FILES_IN_BYTES: '4194305' }), { message: /^LIMIT_FILES_IN_BYTES="4194305" must be at most/ })
  t.equal(loadConfig({ LIMIT_TMP_MB: '4', LIMIT_FILES_IN_BYTES: '4194304' }).LIMIT_FILES_IN_BYTES, 4 * MiB, 'exactly the size of /tmp is allowed')
})

t.test('a ceiling of a request\'s limits is at least its default: a relation named with both values', async t => {
  t.throws(() => loadConfig({ LIMIT_MEMORY_MB: '512', LIMIT_MEMORY_MB_MAX: '256' }), { message: 'LIMIT_MEMORY_MB_MAX="256" must be at least LIMIT_MEMORY_MB (512): a ceiling below the default would refuse requests that ask for nothing' })
  t.throws(() => loadConfig({ LIMIT_WALL_MS: '20000', LIMIT_WALL_MS_MAX: '15000' }), { message: /^LIMIT_WALL_MS_MAX="15000" must be at least LIMIT_WALL_MS \(20000\)/ })
  t.equal(loadConfig({ LIMIT_PROCESSES: '32', LIMIT_PROCESSES_MAX: '32' }).LIMIT_PROCESSES_MAX, 32, 'equal to the default is allowed')
})

t.test('ceilingsOf: the *_MAX variables, else the limits themselves (raising is the operator\'s choice)', async t => {
  t.same(ceilingsOf(loadConfig({})), { wallMs: 10_000, cpuSeconds: 10, memoryMb: 512, processes: 64, outputBytes: MiB })
  t.same(ceilingsOf(loadConfig({ LIMIT_WALL_MS: '90000', LIMIT_CPU_S: '120' })), { wallMs: 90_000, cpuSeconds: 120, memoryMb: 512, processes: 64, outputBytes: MiB }, 'a limit is its own ceiling')
  t.same(ceilingsOf(loadConfig({ LIMIT_WALL_MS_MAX: '120000', LIMIT_CPU_S_MAX: '90', LIMIT_MEMORY_MB_MAX: '2048', LIMIT_PROCESSES_MAX: '128', LIMIT_OUTPUT_BYTES_MAX: String(4 * MiB) })),
    { wallMs: 120_000, cpuSeconds: 90, memoryMb: 2048, processes: 128, outputBytes: 4 * MiB })
})

t.test('tenantSharesOf: one caller\'s share, by default CONCURRENCY - 1 slots (at least 1) and the whole queue; never more than the whole', async t => {
  const table: Array<[Record<string, string>, { slots: number, queue: number }]> = [
    [{ CONCURRENCY: '4', QUEUE_SIZE: '8' }, { slots: 3, queue: 8 }],
    [{ CONCURRENCY: '1', QUEUE_SIZE: '0' }, { slots: 1, queue: 0 }],
    [{ CONCURRENCY: '2', QUEUE_SIZE: '5' }, { slots: 1, queue: 5 }],
    [{ CONCURRENCY: '4', QUEUE_SIZE: '8', TENANT_SLOTS: '2', TENANT_QUEUE: '0' }, { slots: 2, queue: 0 }],
    [{ CONCURRENCY: '4', QUEUE_SIZE: '8', TENANT_SLOTS: '4', TENANT_QUEUE: '8' }, { slots: 4, queue: 8 }],
    [{ CONCURRENCY: '2', QUEUE_SIZE: '3', TENANT_SLOTS: '16', TENANT_QUEUE: '100' }, { slots: 2, queue: 3 }]
  ]
  for (const [env, expected] of table) t.same(tenantSharesOf(loadConfig(env)), expected, JSON.stringify(env))
})

t.test('trustProxyOf: TRUST_PROXY as Fastify takes it', async t => {
  t.equal(trustProxyOf('false'), false)
  t.equal(trustProxyOf('1'), 1, 'a number of proxies')
  t.same(trustProxyOf('10.0.0.1, 10.8.0.0/16,::1'), ['10.0.0.1', '10.8.0.0/16', '::1'], 'addresses and CIDR ranges')
  t.match(trustProxyOf('true'), { problem: /would believe every X-Forwarded-For entry/ }, 'never true')
  t.match(trustProxyOf('0'), { problem: /must be false, a number of proxies from 1 to 9/ }, 'no proxy is false, not 0')
})

t.test('invalid values throw, naming the variable', async t => {
  const table: Array<Record<string, string>> = [
    { PORT: 'abc' },
    { PORT: '70000' },
    { PORT: '-1' },
    { PORT: '80.5' },
    { SANDBOX_BACKENDS: 'docker' },
    { SANDBOX_BACKENDS: 'nsjail,docker' },
    { SANDBOX_BACKENDS: 'nsjail, unshare' },
    { SANDBOX_BACKENDS: '' },
    { SANDBOX_BACKEND: 'docker' },
    { LIMIT_MEMORY_MB: '1' },
    { LIMIT_WALL_MS: '50' },
    { LIMIT_OUTPUT_BYTES: '10' },
    { LIMIT_BODY_BYTES: String(65 * MiB) },
    { LOG_LEVEL: 'verbose' },
    { TRUST_PROXY: 'yes' },
    { CONCURRENCY: '0' },
    { QUEUE_SIZE: '-1' },
    { RATE_LIMIT_MAX: '-5' },
    { RATE_LIMIT_WINDOW_MS: '10' }
  ]
  for (const env of table) {
    const [name] = Object.keys(env)
    t.throws(() => loadConfig(env), { message: new RegExp(String(name)) }, JSON.stringify(env))
  }
})

/** The ConfigError loadConfig(env) throws (a failed assertion if it throws anything else). */
function refusal (t: Test, env: Record<string, string>): ConfigError | undefined {
  try {
    loadConfig(env)
  } catch (error) {
    t.type(error, ConfigError, JSON.stringify(env))
    return error as ConfigError
  }
  t.fail(`${JSON.stringify(env)} was accepted`)
  return undefined
}

t.test('a bad value is one sentence: the variable, the value given and what is allowed', async t => {
  const table: Array<[Record<string, string>, string]> = [
    // enum (a union of literals)
    [{ SANDBOX_BACKEND: 'bogus' }, 'SANDBOX_BACKEND="bogus" is not allowed: one of nsjail, unshare, direct'],
    [{ SANDBOX_BACKEND: '' }, 'SANDBOX_BACKEND="" is not allowed: one of nsjail, unshare, direct'],
    [{ LOG_LEVEL: 'verbose' }, 'LOG_LEVEL="verbose" is not allowed: one of fatal, error, warn, info, debug, trace, silent'],
    // integer type
    [{ LIMIT_WALL_MS: 'abc' }, 'LIMIT_WALL_MS="abc" must be an integer between 100 and 600000'],
    [{ PORT: '80.5' }, 'PORT="80.5" must be an integer between 0 and 65535'],
    [{ PORT: '' }, 'PORT="" must be an integer between 0 and 65535'],
    // range: both ends, or the minimum alone
    [{ PORT: '70000' }, 'PORT="70000" must be an integer between 0 and 65535'],
    [{ PORT: '-1' }, 'PORT="-1" must be an integer between 0 and 65535'],
    [{ LIMIT_MEMORY_MB: '1' }, 'LIMIT_MEMORY_MB="1" must be an integer between 64 and 65536'],
    [{ RATE_LIMIT_WINDOW_MS: '10' }, 'RATE_LIMIT_WINDOW_MS="10" must be an integer of 1000 or more'],
    [{ PROBE_INTERVAL_MS: 'soon' }, 'PROBE_INTERVAL_MS="soon" must be an integer of 0 or more'],
    // pattern: the names it allows, comma-separated
    [{ SANDBOX_BACKENDS: 'docker' }, 'SANDBOX_BACKENDS="docker" must be one or more of nsjail, unshare, direct, separated by commas without spaces'],
    [{ SANDBOX_BACKENDS: 'nsjail, unshare' }, 'SANDBOX_BACKENDS="nsjail, unshare" must be one or more of nsjail, unshare, direct, separated by commas without spaces'],
    [{ SANDBOX_BACKENDS: '' }, 'SANDBOX_BACKENDS="" must be one or more of nsjail, unshare, direct, separated by commas without spaces'],
    // TRUST_PROXY's forms (a relation check: no schema keyword says them); never true
    [{ TRUST_PROXY: 'yes' }, 'TRUST_PROXY="yes" must be false, a number of proxies from 1 to 9, or addresses and CIDR ranges (/8 or narrower) separated by commas'],
    [{ TRUST_PROXY: '10' }, 'TRUST_PROXY="10" must be false, a number of proxies from 1 to 9, or addresses and CIDR ranges (/8 or narrower) separated by commas'],
    [{ TRUST_PROXY: 'true' }, 'TRUST_PROXY="true" would believe every X-Forwarded-For entry, and a client writes the first one: give the number of proxies in front of the server (Cloud Run: 1) or their addresses'],
    // boolean
    [{ WARM_SANDBOXES: '1' }, 'WARM_SANDBOXES="1" must be true or false'],
    // the value is quoted as JSON: a newline in it cannot break the one line
    [{ LOG_LEVEL: 'info\nwarn' }, 'LOG_LEVEL="info\\nwarn" is not allowed: one of fatal, error, warn, info, debug, trace, silent']
  ]
  for (const [env, line] of table) {
    const error = refusal(t, env)
    t.equal(error?.message, line, JSON.stringify(env))
    const [variable = '', value] = Object.entries(env)[0] ?? []
    t.same(error?.problems, [{ variable, value, line }], 'the problem, as data')
    t.notOk(error?.message.includes('\n'), 'one line')
  }
})

t.test('every problem at once, one line each, in the schema\'s order; no ajv wording', async t => {
  const error = refusal(t, {
    TRUST_PROXY: 'yes',
    SANDBOX_BACKEND: 'bogus',
    LIMIT_WALL_MS: 'abc',
    HOST: '127.0.0.1',
    PORT: '70000',
    SANDBOX_BACKENDS: 'docker',
    LIMIT_CPU_S: '5',
    QUEUE_SIZE: '-1'
  })
  const lines = [
    'PORT="70000" must be an integer between 0 and 65535',
    'SANDBOX_BACKENDS="docker" must be one or more of nsjail, unshare, direct, separated by commas without spaces',
    'SANDBOX_BACKEND="bogus" is not allowed: one of nsjail, unshare, direct',
    'LIMIT_WALL_MS="abc" must be an integer between 100 and 600000',
    'QUEUE_SIZE="-1" must be an integer between 0 and 10000',
    'TRUST_PROXY="yes" must be false, a number of proxies from 1 to 9, or addresses and CIDR ranges (/8 or narrower) separated by commas'
  ]
  t.equal(error?.message, lines.join('\n'))
  t.same(error?.problems.map(p => p.line), lines)
  t.same(error?.problems.map(p => p.variable), ['PORT', 'SANDBOX_BACKENDS', 'SANDBOX_BACKEND', 'LIMIT_WALL_MS', 'QUEUE_SIZE', 'TRUST_PROXY'])
  t.equal(error?.name, 'ConfigError')
  t.notMatch(error?.message ?? '', /env\/|constant|anyOf|must match pattern/, 'the sentences, not ajv\'s messages')
})

t.test('the sentences come from the schema: every constrained variable has one, and other shapes are described', async t => {
  for (const [name, schema] of Object.entries(ConfigSchema.properties)) {
    const constrained = schema.type !== 'string' || 'pattern' in schema
    if (constrained) t.ok(requirement(schema), `${name} has a sentence`)
    else t.equal(requirement(schema), undefined, `${name}: any string is allowed`)
  }
  const table: Array<[Parameters<typeof requirement>[0], ReturnType<typeof requirement>]> = [
    [{ type: 'integer' }, { allowed: 'an integer', choice: false }],
    [{ type: 'integer', maximum: 9 }, { allowed: 'an integer of 9 or less', choice: false }],
    [{ type: 'number', minimum: 0.5, maximum: 2 }, { allowed: 'a number between 0.5 and 2', choice: false }],
    [{ type: 'string', enum: ['a', 'b'] }, { allowed: 'one of a, b', choice: true }],
    [{ type: 'string', pattern: '^(a|b)$' }, { allowed: 'one of a, b', choice: true }],
    [{ type: 'string', pattern: '^(x-1|y)(,(x-1|y))*$' }, { allowed: 'one or more of x-1, y, separated by commas without spaces', choice: false }],
    [{ type: 'string', pattern: '^[a-z]+$' }, { allowed: 'text matching ^[a-z]+$', choice: false }],
    [{ const: 'only' }, { allowed: 'one of only', choice: true }],
    [{ type: 'string' }, undefined]
  ]
  for (const [schema, expected] of table) t.same(requirement(schema), expected, JSON.stringify(schema))
})

t.test('permittedBackends: always nsjail, unshare, direct order; direct only when listed or pinned; a pin overrides', async t => {
  const table: Array<{ env: Record<string, string>, expected: string[] }> = [
    { env: {}, expected: ['nsjail', 'unshare'] },
    { env: { SANDBOX_BACKENDS: 'nsjail,unshare' }, expected: ['nsjail', 'unshare'] },
    { env: { SANDBOX_BACKENDS: 'unshare,nsjail' }, expected: ['nsjail', 'unshare'] },
    { env: { SANDBOX_BACKENDS: 'unshare' }, expected: ['unshare'] },
    { env: { SANDBOX_BACKENDS: 'nsjail' }, expected: ['nsjail'] },
    { env: { SANDBOX_BACKENDS: 'direct' }, expected: ['direct'] },
    { env: { SANDBOX_BACKENDS: 'direct,nsjail' }, expected: ['nsjail', 'direct'] },
    { env: { SANDBOX_BACKENDS: 'direct,unshare,nsjail' }, expected: ['nsjail', 'unshare', 'direct'] },
    { env: { SANDBOX_BACKENDS: 'unshare,unshare' }, expected: ['unshare'] },
    { env: { SANDBOX_BACKEND: 'unshare' }, expected: ['unshare'] },
    { env: { SANDBOX_BACKEND: 'nsjail', SANDBOX_BACKENDS: 'unshare' }, expected: ['nsjail'] },
    { env: { SANDBOX_BACKEND: 'direct' }, expected: ['direct'] }
  ]
  for (const { env, expected } of table) {
    t.same(permittedBackends(loadConfig(env)), expected, JSON.stringify(env))
  }
})

t.test('direct is never permitted unless named', async t => {
  for (const listed of ['nsjail', 'unshare', 'nsjail,unshare', 'unshare,nsjail']) {
    for (const pin of [undefined, 'nsjail', 'unshare']) {
      const env: Record<string, string> = { SANDBOX_BACKENDS: listed }
      if (pin !== undefined) env.SANDBOX_BACKEND = pin
      t.notOk(permittedBackends(loadConfig(env)).includes('direct'), JSON.stringify(env))
    }
  }
  t.same([...BACKEND_NAMES], ['nsjail', 'unshare', 'direct'], 'strongest first')
})

t.test('a failure of a rule no sentence describes falls back to ajv\'s words, still naming the variable and its value', async t => {
  t.same(problemsOf([{ instancePath: '/HOST', keyword: 'minLength', message: 'must NOT have fewer than 1 characters' }], { HOST: '' }),
    [{ variable: 'HOST', value: '', line: 'HOST="" must NOT have fewer than 1 characters' }])
})

t.test('an error of env-schema\'s own (not a value\'s) is thrown as it is', async t => {
  for (const errors of [undefined, [{ instancePath: '', keyword: 'type', message: 'must be object' }]]) {
    const { loadConfig: load } = await t.mockImport<typeof import('../../src/config.js')>('../../src/config.js', {
      'env-schema': { default: () => { throw Object.assign(new Error('env-schema broke'), { errors }) } }
    })
    t.throws(() => load({}), /env-schema broke/, JSON.stringify(errors))
  }
})
