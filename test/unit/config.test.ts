import { availableParallelism } from 'node:os'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { BACKEND_NAMES, ConfigSchema, PROJECT_ROOT, loadConfig, permittedBackends } from '../../src/config.js'

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
    LIMIT_BODY_BYTES: MiB,
    CONCURRENCY: availableParallelism(),
    QUEUE_SIZE: 2 * availableParallelism(),
    QUEUE_TIMEOUT_MS: 30_000,
    PROBE_INTERVAL_MS: 300_000,
    RATE_LIMIT_MAX: 120,
    RATE_LIMIT_WINDOW_MS: 60_000,
    TRUST_PROXY: false
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
    { env: { TRUST_PROXY: 'true' }, key: 'TRUST_PROXY', value: true },
    { env: { TRUST_PROXY: 'false' }, key: 'TRUST_PROXY', value: false },
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
    { LIMIT_BODY_BYTES: String(17 * MiB) },
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
