// The process: configuration, logger, listen, graceful shutdown on SIGTERM/SIGINT: /readyz and new
// runs answer 503 at once while runs in flight get SHUTDOWN_GRACE_MS to finish (then are stopped
// and answered 503 SHUTTING_DOWN), then the server closes. A bad configuration stops it before
// anything starts: one line per problem on stderr, no stack, exit status 78 (EX_CONFIG).
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, permittedBackends, type Config } from './config.js'
import { claimUidBase } from './backends/uid-lock.js'

let config: Config
try {
  config = loadConfig()
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  process.stderr.write(`${error.message}\n`)
  process.exit(78)
}
// As root, sandboxes run under host uids from SANDBOX_UID_BASE: no other server may use them.
if (process.getuid?.() === 0 && permittedBackends(config).some(name => name !== 'direct')) {
  const claim = await claimUidBase(config.SANDBOX_UID_BASE)
  if ('problem' in claim) {
    process.stderr.write(`${claim.problem}\n`)
    process.exit(78)
  }
}
let app: Awaited<ReturnType<typeof buildApp>>
try {
  // Never the script, its output or credentials in the logs (buildApp adds the redaction).
  app = await buildApp({ config, logger: { level: config.LOG_LEVEL } })
} catch (error) {
  if (!(error instanceof ConfigError)) throw error // a keys file that cannot be used, at start
  process.stderr.write(`${error.message}\n`)
  process.exit(78)
}

/** After the grace: stopping the runs left (SIGTERM, then SIGKILL after LIMIT_KILL_GRACE_MS) and
 *  closing the warm jails take this long at most; past it the process exits anyway. */
const CLOSE_MS = 5000
// With API keys, SIGHUP reloads their file (plugins/access.ts) instead of closing.
closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS + config.LIMIT_KILL_GRACE_MS + CLOSE_MS, skip: config.API_KEYS_FILE === undefined ? [] : ['SIGHUP'] }, async ({ signal, err }) => {
  if (err !== undefined) {
    app.log.error({ err }, 'closing after an error')
  } else {
    app.log.info({ signal, graceMs: config.SHUTDOWN_GRACE_MS, running: app.sandbox.slots.running, queued: app.sandbox.slots.queued }, 'shutting down: /readyz answers 503, new runs 503 SHUTTING_DOWN; runs in flight may finish')
    await app.sandbox.drain(config.SHUTDOWN_GRACE_MS)
  }
  await app.close()
  app.log.info('closed')
})

await app.listen({ port: config.PORT, host: config.HOST })
