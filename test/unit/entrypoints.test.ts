// The two entry points, with their effects on the world replaced: src/server.ts (listen, and
// the graceful close) and scripts/config-table.ts run as a script (it writes the README); and
// src/server.ts for real, refusing a bad configuration.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import * as fs from 'node:fs'
import { resolve } from 'node:path'
import t from 'tap'
import { README, withConfigTable } from '../../scripts/config-table.js'
import { LOG_REDACT, buildApp } from '../../src/app.js'
import * as configModule from '../../src/config.js'
import { PROJECT_ROOT, loadConfig } from '../../src/config.js'
import { FakeBackend } from '../helpers/fake-backend.js'

/** The uid claim, granted (its own test is test/integration/uid-base.test.ts). */
const UIDS_FREE = { '../../src/backends/uid-lock.js': { claimUidBase: async () => ({ release: () => {} }) } }

t.test('server: builds the app from the configuration, listens, and closes on a signal or an error', async t => {
  const config = loadConfig()
  const calls: unknown[][] = []
  let onClose: ((event: { signal?: string, err?: Error }) => Promise<void>) | undefined
  let graceOptions: unknown
  const app = {
    log: {
      info: (...args: unknown[]) => { calls.push(['info', ...args]) },
      error: (...args: unknown[]) => { calls.push(['error', ...args]) }
    },
    listen: async (options: unknown) => { calls.push(['listen', options]) },
    close: async () => { calls.push(['close']) },
    sandbox: { slots: { running: 1, queued: 2 }, drain: async (graceMs: number) => { calls.push(['drain', graceMs]) } }
  }
  let appOptions: { config: unknown, logger: { level: string } } | undefined
  await t.mockImport('../../src/server.js', {
    ...UIDS_FREE,
    '../../src/app.js': { buildApp: async (options: typeof appOptions) => { appOptions = options; return app } },
    'close-with-grace': {
      default: (options: unknown, handler: typeof onClose) => { graceOptions = options; onClose = handler }
    }
  })
  t.same(appOptions, { config, logger: { level: config.LOG_LEVEL } }, 'the level; buildApp adds the redaction')
  // The grace, then room to stop what still runs and close the warm jails.
  t.same(graceOptions, { delay: config.SHUTDOWN_GRACE_MS + config.LIMIT_KILL_GRACE_MS + 5000, skip: [] }, 'room for the grace and the close; SIGHUP closes without API keys')
  t.same(calls, [['listen', { port: config.PORT, host: config.HOST }]])

  calls.length = 0
  await onClose?.({ signal: 'SIGTERM' })
  t.same(calls, [
    ['info', { signal: 'SIGTERM', graceMs: config.SHUTDOWN_GRACE_MS, running: 1, queued: 2 }, 'shutting down: /readyz answers 503, new runs 503 SHUTTING_DOWN; runs in flight may finish'],
    ['drain', config.SHUTDOWN_GRACE_MS], ['close'], ['info', 'closed']
  ], 'a signal drains first: runs in flight get the grace')

  calls.length = 0
  const err = new Error('uncaught')
  await onClose?.({ err })
  t.same(calls, [['error', { err }, 'closing after an error'], ['close'], ['info', 'closed']], 'an uncaught error closes at once')
})

t.test('server: uids are claimed only by a root server that runs sandboxes under them', async t => {
  const claimed: number[] = []
  const claims = { '../../src/backends/uid-lock.js': { claimUidBase: async (base: number) => { claimed.push(base); return { release: () => {} } } } }
  const app = { log: {}, listen: async () => {}, close: async () => {} }
  for (const [env, root, expected] of [[{}, true, [1_900_000_000]], [{ SANDBOX_BACKEND: 'direct' }, true, []], [{}, false, []]] as const) {
    claimed.length = 0
    const config = loadConfig(env)
    t.intercept(process, 'getuid', { value: () => root ? 0 : 1000 })
    await t.mockImport('../../src/server.js', {
      ...claims,
      '../../src/config.js': { ...configModule, loadConfig: () => config },
      '../../src/app.js': { buildApp: async () => app },
      'close-with-grace': { default: () => {} }
    })
    t.same(claimed, expected, `${JSON.stringify(env)}, ${root ? 'root' : 'not root'}`)
  }
})

t.test('server: with API_KEYS_FILE, SIGHUP is left to the keys\' reload instead of closing', async t => {
  const config = loadConfig({ API_KEYS_FILE: '/run/secrets/pysandbox-keys', SHUTDOWN_GRACE_MS: '90000' })
  let graceOptions: unknown
  await t.mockImport('../../src/server.js', {
    ...UIDS_FREE,
    '../../src/config.js': { ...configModule, loadConfig: () => config },
    '../../src/app.js': { buildApp: async () => ({ log: {}, listen: async () => {}, close: async () => {} }) },
    'close-with-grace': { default: (options: unknown) => { graceOptions = options } }
  })
  t.same(graceOptions, { delay: 90_000 + config.LIMIT_KILL_GRACE_MS + 5000, skip: ['SIGHUP'] })
})

t.test('the server\'s logger, as buildApp makes it: never a script, a credential or a query string in the log', async t => {
  const lines: string[] = []
  const app = await buildApp({
    config: loadConfig({ RATE_LIMIT_MAX: '0' }),
    backends: [new FakeBackend('nsjail')],
    logger: { level: 'trace', stream: { write: (line: string) => { lines.push(line) } } }
  })
  t.teardown(async () => { await app.close() })
  for (const path of ['req.body', 'req.headers.authorization', 'req.headers.cookie']) t.ok(LOG_REDACT.includes(path), `${path} is redacted`)
  const reply = await app.inject({
    method: 'POST',
    url: '/execute?note=query-secret',
    headers: { 'content-type': 'application/json', authorization: 'Bearer header-secret', cookie: 'session=cookie-secret' },
    payload: JSON.stringify({ script: 'def main():\n    return "script-secret"\n' })
  })
  t.equal(reply.statusCode, 200)
  app.log.info({ req: { method: 'GET', url: '/x?key=logged-secret', headers: { authorization: 'Bearer logged-secret' } }, headers: { authorization: 'Bearer logged-secret' } }, 'a careless log call')
  const log = lines.join('')
  t.match(log, /"url":"\/execute\?\[redacted\]"/, 'the request is logged, its query string redacted')
  t.match(log, /"url":"\/x\?\[redacted\]".*"headers":\{"authorization":"\[Redacted\]"\}.*"msg":"a careless log call"/, 'and so is a log call given a request and headers')
  t.notMatch(log, /query-secret|header-secret|cookie-secret|logged-secret|script-secret/, 'nothing of the query, the headers or the script')
})

t.test('config-table run as a script writes the table into the README', async t => {
  const argv1 = process.argv[1]
  t.teardown(() => { process.argv[1] = argv1 as string })
  process.argv[1] = '/somewhere/scripts/config-table.ts'
  const written: Array<[unknown, unknown]> = []
  await t.mockImport('../../scripts/config-table.js', {
    'node:fs': t.createMock(fs, { writeFileSync: (path: unknown, text: unknown) => { written.push([path, text]) } })
  })
  t.same(written, [[README, withConfigTable(fs.readFileSync(README, 'utf8'))]])
})

t.test('server: a bad configuration stops the process with one sentence per problem on stderr, no stack, exit 78', async t => {
  /** `node --import tsx src/server.ts` with only PATH and `env` in its environment. */
  async function server (env: Record<string, string>): Promise<{ code: number | null, stdout: string, stderr: string }> {
    const child = spawn(process.execPath, [resolve(PROJECT_ROOT, 'dist/server.js')], {
      cwd: PROJECT_ROOT,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    const [code] = await once(child, 'close') as [number | null]
    clearTimeout(timer)
    return { code, stdout, stderr }
  }

  const bogus = await server({ SANDBOX_BACKEND: 'bogus' })
  t.equal(bogus.code, 78, 'EX_CONFIG')
  t.equal(bogus.stderr, 'SANDBOX_BACKEND="bogus" is not allowed: one of nsjail, unshare, direct\n')
  t.notMatch(bogus.stderr, /^ {4}at /m, 'no stack trace')
  t.equal(bogus.stdout, '', 'nothing started, nothing logged')

  const several = await server({ SANDBOX_BACKEND: 'bogus', LIMIT_WALL_MS: 'abc', TRUST_PROXY: 'yes' })
  t.equal(several.code, 78)
  t.equal(several.stderr, [
    'SANDBOX_BACKEND="bogus" is not allowed: one of nsjail, unshare, direct',
    'LIMIT_WALL_MS="abc" must be an integer between 100 and 600000',
    'TRUST_PROXY="yes" must be false, a number of proxies from 1 to 9, or addresses and CIDR ranges (/8 or narrower) separated by commas',
    ''
  ].join('\n'), 'every problem, one line each')
  t.notMatch(several.stderr, /^ {4}at /m, 'no stack trace')
})

t.test('server, in process: a ConfigError is written as its lines and ends with 78; any other error is thrown', async t => {
  const { ConfigError } = await import('../../src/config.js')
  const written: string[] = []
  const exits: Array<number | undefined> = []
  t.intercept(process.stderr, 'write', { value: (text: string) => { written.push(text); return true } })
  t.intercept(process, 'exit', { value: (code?: number) => { exits.push(code); throw new Error('exited') } })
  const problem = { variable: 'PORT', value: 'x', line: 'PORT="x" must be an integer between 0 and 65535' }
  await t.rejects(t.mockImport('../../src/server.js', {
    ...UIDS_FREE,
    '../../src/config.js': { ...configModule, ConfigError, loadConfig: () => { throw new ConfigError([problem]) } },
    '../../src/app.js': { buildApp: async () => { throw new Error('not reached') } }
  }), /exited/)
  t.same(written, ['PORT="x" must be an integer between 0 and 65535\n'])
  t.same(exits, [78])
  await t.rejects(t.mockImport('../../src/server.js', {
    ...UIDS_FREE,
    '../../src/config.js': { ...configModule, ConfigError, loadConfig: () => { throw new Error('a bug') } },
    '../../src/app.js': { buildApp: async () => { throw new Error('not reached') } }
  }), /a bug/, 'not a configuration problem: thrown as it is')

  // A keys file that cannot be used is found while the app is built: the same, one line and 78.
  written.length = 0
  exits.length = 0
  const keys = { variable: 'API_KEYS_FILE', value: '/nope', line: 'API_KEYS_FILE="/nope" cannot be used: ENOENT: no such file or directory, open \'/nope\'' }
  await t.rejects(t.mockImport('../../src/server.js', {
    ...UIDS_FREE,
    '../../src/app.js': { buildApp: async () => { throw new ConfigError([keys]) } }
  }), /exited/)
  t.same(written, [`${keys.line}\n`], 'the keys file\'s problem, as one line')
  t.same(exits, [78])
  await t.rejects(t.mockImport('../../src/server.js', {
    ...UIDS_FREE,
    '../../src/app.js': { buildApp: async () => { throw new Error('a bug while building') } }
  }), /a bug while building/, 'an error building the app that is no configuration problem: thrown as it is')
  written.length = 0
  exits.length = 0
  await t.rejects(t.mockImport('../../src/server.js', {
    '../../src/backends/uid-lock.js': { claimUidBase: async () => ({ problem: 'SANDBOX_UID_BASE=1900000000: another PySandbox server on this host uses some of the same sandbox uids' }) },
    '../../src/app.js': { buildApp: async () => { throw new Error('not reached') } }
  }), /exited/)
  t.same(written, ['SANDBOX_UID_BASE=1900000000: another PySandbox server on this host uses some of the same sandbox uids\n'], 'uids in use elsewhere: refused before anything starts')
  t.same(exits, [78])
})
