// The two entry points, with their effects on the world replaced: src/server.ts (listen, and
// the graceful close) and scripts/config-table.ts run as a script (it writes the README); and
// src/server.ts for real, refusing a bad configuration.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import * as fs from 'node:fs'
import { resolve } from 'node:path'
import t from 'tap'
import { README, withConfigTable } from '../../scripts/config-table.js'
import { PROJECT_ROOT, loadConfig } from '../../src/config.js'

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
    close: async () => { calls.push(['close']) }
  }
  let appOptions: { logger: { level: string, redact: string[] } } | undefined
  await t.mockImport('../../src/server.js', {
    '../../src/app.js': { buildApp: async (options: typeof appOptions) => { appOptions = options; return app } },
    'close-with-grace': {
      default: (options: unknown, handler: typeof onClose) => { graceOptions = options; onClose = handler }
    }
  })
  t.equal(appOptions?.logger.level, config.LOG_LEVEL)
  t.ok(appOptions?.logger.redact.includes('req.body'), 'scripts never reach the log')
  t.same(graceOptions, { delay: config.LIMIT_WALL_MS + config.LIMIT_KILL_GRACE_MS + 2000 }, 'room for a running sandbox to end')
  t.same(calls, [['listen', { port: config.PORT, host: config.HOST }]])

  calls.length = 0
  await onClose?.({ signal: 'SIGTERM' })
  t.same(calls, [['info', { signal: 'SIGTERM' }, 'closing'], ['close']])

  calls.length = 0
  const err = new Error('uncaught')
  await onClose?.({ err })
  t.same(calls, [['error', { err }, 'closing after an error'], ['close']])
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
    'TRUST_PROXY="yes" must be true or false',
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
    '../../src/config.js': { ConfigError, loadConfig: () => { throw new ConfigError([problem]) } },
    '../../src/app.js': { buildApp: async () => { throw new Error('not reached') } }
  }), /exited/)
  t.same(written, ['PORT="x" must be an integer between 0 and 65535\n'])
  t.same(exits, [78])
  await t.rejects(t.mockImport('../../src/server.js', {
    '../../src/config.js': { ConfigError, loadConfig: () => { throw new Error('a bug') } },
    '../../src/app.js': { buildApp: async () => { throw new Error('not reached') } }
  }), /a bug/, 'not a configuration problem: thrown as it is')
})
