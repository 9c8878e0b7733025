// The two entry points, with their effects on the world replaced: src/server.ts (listen, and
// the graceful close) and scripts/config-table.ts run as a script (it writes the README).
import * as fs from 'node:fs'
import t from 'tap'
import { README, withConfigTable } from '../../scripts/config-table.js'
import { loadConfig } from '../../src/config.js'

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
