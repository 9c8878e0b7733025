// Choosing the backend at start, and re-probing it (the app with fake backends).
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { createBackends, nsjailOptions } from '../../src/backends/index.js'
import { limitsFrom, type ProbeReport, type RunOutcome, type RunRequest, type SandboxBackend } from '../../src/backends/backend.js'
import { loadConfig, type BackendName } from '../../src/config.js'
import { build, config, execute, until } from '../helpers/app.js'
import { FakeBackend, PASSING, failingProbe, success } from '../helpers/fake-backend.js'

async function readyz (app: FastifyInstance): Promise<{ statusCode: number, body: Record<string, unknown> }> {
  const reply = await app.inject({ method: 'GET', url: '/readyz' })
  return { statusCode: reply.statusCode, body: reply.json() }
}

t.test('the first passing backend serves; later ones are not probed', async t => {
  const nsjail = new FakeBackend('nsjail')
  const unshare = new FakeBackend('unshare')
  const direct = new FakeBackend('direct')
  const { app } = await build(t, { backends: [nsjail, unshare, direct] })
  t.equal((await execute(app)).json<{ backend: string }>().backend, 'nsjail')
  t.same([nsjail.probeCalls, unshare.probeCalls, direct.probeCalls], [1, 0, 0])
  t.same([nsjail.runs.length, unshare.runs.length, direct.runs.length], [1, 0, 0])
  const { statusCode, body } = await readyz(app)
  t.equal(statusCode, 200)
  t.same(body, { status: 'ready', backend: 'nsjail', auth: 'open', probes: [{ backend: 'nsjail', ok: true, features: PASSING.features }] })
  t.same(Object.keys(body), ['status', 'backend', 'auth', 'probes'], 'auth (open: no API keys) right after the backend')
})

t.test('a backend failing its probe is skipped for the next that passes', async t => {
  const nsjail = new FakeBackend('nsjail', { probe: failingProbe('nsjail: cannot create user namespace') })
  const unshare = new FakeBackend('unshare')
  const { app, logs } = await build(t, { backends: [nsjail, unshare] })
  const reply = await execute(app)
  t.equal(reply.statusCode, 200)
  t.equal(reply.json<{ backend: string }>().backend, 'unshare')
  t.equal(nsjail.runs.length, 0, 'the failed backend never runs a script')
  const { statusCode, body } = await readyz(app)
  t.equal(statusCode, 200)
  t.same(body, {
    status: 'ready',
    backend: 'unshare',
    auth: 'open',
    probes: [
      { backend: 'nsjail', ok: false, reason: 'nsjail: cannot create user namespace', features: {} },
      { backend: 'unshare', ok: true, features: PASSING.features }
    ]
  })
  t.ok(logs.some(l => l.level === 40 && /^serving with unshare: the stronger backends failed/.test(String(l.msg)) && l.backend === 'unshare'), 'the fallback to a weaker backend is logged as a warning')
})

t.test('no backend passing: /execute 503 SANDBOX_UNAVAILABLE, /readyz 503 with every reason, /healthz 200', async t => {
  const syncThrow: SandboxBackend = {
    name: 'direct',
    probe: () => { throw new Error('synchronous blow-up') },
    run: async () => success(1)
  }
  const backends = [
    new FakeBackend('nsjail', { probe: failingProbe('nsjail binary missing') }),
    new FakeBackend('unshare', { probe: async () => { throw new Error('asynchronous blow-up') } }),
    syncThrow
  ]
  const { app, logs } = await build(t, { backends })
  const reply = await execute(app)
  t.equal(reply.statusCode, 503)
  t.match(reply.json(), { statusCode: 503, error: 'Service Unavailable', code: 'SANDBOX_UNAVAILABLE', message: /nothing is executed/ })
  t.notOk(reply.headers['retry-after'], 'retrying will not help')
  t.same(backends.map(b => b instanceof FakeBackend ? b.runs.length : 0), [0, 0, 0])
  const { statusCode, body } = await readyz(app)
  t.equal(statusCode, 503)
  t.same(body, {
    status: 'unavailable',
    backend: null,
    auth: 'open',
    probes: [
      { backend: 'nsjail', ok: false, reason: 'nsjail binary missing', features: {} },
      { backend: 'unshare', ok: false, reason: 'probe threw: asynchronous blow-up', features: {} },
      { backend: 'direct', ok: false, reason: 'probe threw: synchronous blow-up', features: {} }
    ]
  })
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200)
  t.ok(logs.some(l => l.level === 50 && /NO SANDBOX BACKEND PASSED.*permitted: nsjail, unshare, direct/.test(String(l.msg))), 'logged as an error')
})

t.test('no backend permitted at all: 503, and the log says none was permitted', async t => {
  const { app, logs } = await build(t, { backends: [] })
  t.equal((await execute(app)).statusCode, 503)
  t.same((await readyz(app)).body, { status: 'unavailable', backend: null, auth: 'open', probes: [] })
  t.ok(logs.some(l => /permitted: none/.test(String(l.msg))))
})

t.test('a passing direct backend serves with a warning in /readyz, in every reply\'s backend, and in the log', async t => {
  const direct = new FakeBackend('direct', { probe: { ok: true, features: { isolation: 'NONE' } } })
  const { app, logs } = await build(t, { backends: [direct] })
  const { statusCode, body } = await readyz(app)
  t.equal(statusCode, 200)
  t.match(body, { status: 'ready', backend: 'direct', warning: /WITHOUT ISOLATION/ })
  t.equal((await execute(app)).json<{ backend: string }>().backend, 'direct')
  t.ok(logs.some(l => l.level === 40 && /DIRECT backend.*WITHOUT ISOLATION/.test(String(l.msg))), 'warned at start')
})

t.test('an isolating backend has no warning in /readyz', async t => {
  for (const name of ['nsjail', 'unshare'] as const) {
    const { app } = await build(t, { backends: [new FakeBackend(name)] })
    t.notOk('warning' in (await readyz(app)).body, name)
  }
})

t.test('createBackends: the permitted real backends by name, strongest first; direct only when permitted', async t => {
  const table: Array<{ env: Record<string, string>, names: BackendName[] }> = [
    { env: {}, names: ['nsjail', 'unshare'] },
    { env: { SANDBOX_BACKENDS: 'unshare,nsjail' }, names: ['nsjail', 'unshare'] },
    { env: { SANDBOX_BACKENDS: 'direct,unshare' }, names: ['unshare', 'direct'] },
    { env: { SANDBOX_BACKEND: 'unshare' }, names: ['unshare'] },
    { env: { SANDBOX_BACKEND: 'direct' }, names: ['direct'] }
  ]
  for (const { env, names } of table) {
    t.same(createBackends(loadConfig(env)).map(b => b.name), names, JSON.stringify(env))
  }
})

t.test('without injected backends the app probes the ones the configuration permits', async t => {
  // The real backend classes are replaced by recorders: unit tests probe no real sandbox.
  const probed: string[] = []
  const created: Array<{ name: string, options: { limits: { wallTimeMs: number } } }> = []
  const passing = new Set<string>()
  function recorder (name: BackendName): new (options: { limits: { wallTimeMs: number } }) => SandboxBackend {
    return class implements SandboxBackend {
      readonly name = name
      constructor (options: { limits: { wallTimeMs: number } }) { created.push({ name, options }) }
      async probe (): Promise<ProbeReport> {
        probed.push(name)
        return passing.has(name) ? PASSING : failingProbe(`${name} is not available here`)
      }

      async run (_request: RunRequest): Promise<RunOutcome> { return success(name) }
    }
  }
  const backends = await t.mockImport<typeof import('../../src/backends/index.js')>('../../src/backends/index.js', {
    '../../src/backends/nsjail/backend.js': { ...await import('../../src/backends/nsjail/backend.js'), NsjailBackend: recorder('nsjail') },
    '../../src/backends/unshare/backend.js': { ...await import('../../src/backends/unshare/backend.js'), UnshareBackend: recorder('unshare') },
    '../../src/backends/direct/backend.js': { ...await import('../../src/backends/direct/backend.js'), DirectBackend: recorder('direct') }
  })
  const mocked = await t.mockImport<typeof import('../../src/app.js')>('../../src/app.js', { '../../src/backends/index.js': backends })
  const table: Array<{ name: string, env: Record<string, string>, pass: BackendName[], created: BackendName[], probed: BackendName[], serving: BackendName | null }> = [
    { name: 'default: nsjail then unshare, never direct', env: {}, pass: ['direct'], created: ['nsjail', 'unshare'], probed: ['nsjail', 'unshare'], serving: null },
    { name: 'nsjail passing', env: {}, pass: ['nsjail', 'unshare'], created: ['nsjail', 'unshare'], probed: ['nsjail'], serving: 'nsjail' },
    { name: 'pinned unshare failing: refuses, nsjail not tried', env: { SANDBOX_BACKEND: 'unshare' }, pass: ['nsjail'], created: ['unshare'], probed: ['unshare'], serving: null },
    { name: 'pinned unshare passing', env: { SANDBOX_BACKEND: 'unshare' }, pass: ['unshare'], created: ['unshare'], probed: ['unshare'], serving: 'unshare' },
    { name: 'direct permitted and the only one passing', env: { SANDBOX_BACKENDS: 'direct,unshare,nsjail' }, pass: ['direct'], created: ['nsjail', 'unshare', 'direct'], probed: ['nsjail', 'unshare', 'direct'], serving: 'direct' }
  ]
  for (const row of table) {
    probed.length = 0
    created.length = 0
    passing.clear()
    for (const name of row.pass) passing.add(name)
    const app = await mocked.buildApp({ config: config({ LIMIT_WALL_MS: '1234', ...row.env }) })
    t.teardown(async () => { await app.close() })
    t.same(created.map(c => c.name), row.created, `${row.name}: created`)
    t.same(probed, row.probed, `${row.name}: probed`)
    t.ok(created.every(c => c.options.limits.wallTimeMs === 1234), `${row.name}: the configured limits reach the backend`)
    const reply = await execute(app)
    if (row.serving === null) {
      t.equal(reply.statusCode, 503, `${row.name}: refuses`)
      t.equal(reply.json<{ code: string }>().code, 'SANDBOX_UNAVAILABLE')
      t.equal((await readyz(app)).statusCode, 503)
    } else {
      t.equal(reply.statusCode, 200, `${row.name}: serves`)
      t.equal(reply.json<{ backend: string }>().backend, row.serving)
    }
  }
})

/** A probe that answers from a script of reports, then keeps giving the last one. */
function scripted (...reports: Array<ProbeReport | Error>): () => Promise<ProbeReport> {
  let next = 0
  return async () => {
    const report = reports[Math.min(next++, reports.length - 1)]
    if (report instanceof Error) throw report
    return report as ProbeReport
  }
}

t.test('a chosen backend failing its re-probe stops service until it passes again', async t => {
  let current: ProbeReport = PASSING
  const fake = new FakeBackend('nsjail', { probe: async () => current })
  const { app, logs } = await build(t, { env: { PROBE_INTERVAL_MS: '20' }, backends: [fake] })
  t.equal((await execute(app)).statusCode, 200, 'serving after the start-up probe')

  current = failingProbe('seccomp filter missing')
  await until(() => !app.sandbox.ready, 'the failed re-probe')
  const refused = await execute(app)
  t.equal(refused.statusCode, 503)
  t.equal(refused.json<{ code: string }>().code, 'SANDBOX_UNAVAILABLE')
  const down = await readyz(app)
  t.equal(down.statusCode, 503)
  t.same(down.body, {
    status: 'unavailable',
    backend: 'nsjail',
    auth: 'open',
    probes: [{ backend: 'nsjail', ok: false, reason: 'seccomp filter missing', features: {} }]
  }, 'readiness names the backend and the re-probe\'s reason')
  t.ok(logs.some(l => l.level === 50 && /FAILED ITS RE-PROBE/.test(String(l.msg))), 'the failure is logged as an error')
  t.equal(fake.runs.length, 1, 'nothing ran while the backend failed')

  current = PASSING
  await until(() => app.sandbox.ready, 'the passing re-probe')
  t.equal((await execute(app)).statusCode, 200, 'serving again')
  t.same((await readyz(app)).body, { status: 'ready', backend: 'nsjail', auth: 'open', probes: [{ backend: 'nsjail', ok: true, features: PASSING.features }] })
  t.ok(logs.some(l => l.level === 30 && /passes its probe again/.test(String(l.msg))), 'the recovery is logged')
})

t.test('a re-probe that throws counts as failed', async t => {
  const fake = new FakeBackend('unshare', { probe: scripted(PASSING, new Error('canary vanished')) })
  const { app } = await build(t, { env: { PROBE_INTERVAL_MS: '20' }, backends: [fake] })
  await until(() => !app.sandbox.ready, 'the failed re-probe')
  t.match((await readyz(app)).body, { status: 'unavailable', probes: [{ backend: 'unshare', ok: false, reason: 'probe threw: canary vanished' }] })
})

t.test('only the chosen backend is re-probed, and its entry replaces its start-up one', async t => {
  const nsjail = new FakeBackend('nsjail', { probe: failingProbe('no nsjail') })
  const unshare = new FakeBackend('unshare', { probe: scripted(PASSING, { ok: true, features: { reprobed: true } }) })
  const { app } = await build(t, { env: { PROBE_INTERVAL_MS: '20' }, backends: [nsjail, unshare] })
  await until(() => unshare.probeCalls >= 2, 'a re-probe')
  await new Promise(resolve => setTimeout(resolve, 10))
  t.equal(nsjail.probeCalls, 1, 'the failed candidate is not tried again')
  t.same((await readyz(app)).body, {
    status: 'ready',
    backend: 'unshare',
    auth: 'open',
    probes: [
      { backend: 'nsjail', ok: false, reason: 'no nsjail', features: {} },
      { backend: 'unshare', ok: true, features: { reprobed: true } }
    ]
  })
})

t.test('a slow re-probe is not overlapped by the next one', async t => {
  let release: (() => void) | undefined
  let calls = 0
  const fake = new FakeBackend('nsjail', {
    probe: async () => {
      calls++
      if (calls === 2) await new Promise<void>(resolve => { release = resolve })
      return PASSING
    }
  })
  const { app } = await build(t, { env: { PROBE_INTERVAL_MS: '10' }, backends: [fake] })
  await until(() => release !== undefined, 'the slow re-probe')
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(calls, 2, 'no re-probe started while one was running')
  release?.()
  await until(() => calls >= 3, 're-probing resumes')
  t.equal(app.sandbox.ready, true)
})

t.test('PROBE_INTERVAL_MS=0 probes only at start; without a backend there is nothing to re-probe', async t => {
  const fake = new FakeBackend('nsjail')
  await build(t, { env: { PROBE_INTERVAL_MS: '0' }, backends: [fake] })
  const failed = new FakeBackend('nsjail', { probe: failingProbe('down') })
  await build(t, { env: { PROBE_INTERVAL_MS: '10' }, backends: [failed] })
  await new Promise(resolve => setTimeout(resolve, 80))
  t.equal(fake.probeCalls, 1)
  t.equal(failed.probeCalls, 1)
})

t.test('no re-probe after close', async t => {
  const fake = new FakeBackend('nsjail')
  const app = await buildApp({ config: config({ PROBE_INTERVAL_MS: '10' }), backends: [fake] })
  await until(() => fake.probeCalls >= 2, 'a re-probe')
  await app.close()
  const calls = fake.probeCalls
  await new Promise(resolve => setTimeout(resolve, 60))
  t.equal(fake.probeCalls, calls)
})

t.test('nsjailOptions: session seats for SESSIONS_MAX sessions and their spares; none with SESSIONS_MAX 0', async t => {
  const on = loadConfig({ SESSIONS_MAX: '3', SESSION_SPARES: '2', SESSION_MEMORY_MB: '300', LIMIT_CPU_S: '5', LIMIT_CPU_S_MAX: '20', LIMIT_OUTPUT_BYTES_MAX: '4194304' })
  t.same(nsjailOptions(on, limitsFrom(on)).sessions, { memoryMiB: 300, seats: 5, spares: 2, spareIntervalMs: 10_000, ceilings: { cpuSeconds: 20, outputBytes: 4194304 } })
  const cold = loadConfig({ WARM_SANDBOXES: 'false', LIMIT_CPU_S: '5', LIMIT_CPU_S_MAX: '20' })
  t.same(nsjailOptions(cold, limitsFrom(cold)).sessions?.ceilings.cpuSeconds, 20, 'a session\'s ceilings with warm sandboxes off')
  const off = loadConfig({ SESSIONS_MAX: '0' })
  t.equal(nsjailOptions(off, limitsFrom(off)).sessions, undefined)
})
