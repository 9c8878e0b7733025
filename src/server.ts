// The process: configuration, logger, listen, graceful close on SIGTERM/SIGINT (in-flight
// sandboxes are killed by the sandbox plugin's close hook). A bad configuration stops it before
// anything starts: one line per problem on stderr, no stack, exit status 78 (EX_CONFIG).
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, ceilingsOf, loadConfig, type Config } from './config.js'

let config: Config
try {
  config = loadConfig()
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  process.stderr.write(`${error.message}\n`)
  process.exit(78)
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

// With API keys, SIGHUP reloads their file (plugins/access.ts) instead of closing.
closeWithGrace({ delay: ceilingsOf(config).wallMs + config.LIMIT_KILL_GRACE_MS + 2000, skip: config.API_KEYS_FILE === undefined ? [] : ['SIGHUP'] }, async ({ signal, err }) => {
  if (err !== undefined) app.log.error({ err }, 'closing after an error')
  else app.log.info({ signal }, 'closing')
  await app.close()
})

await app.listen({ port: config.PORT, host: config.HOST })
