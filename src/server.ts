// The process: configuration, logger, listen, graceful close on SIGTERM/SIGINT (in-flight
// sandboxes are killed by the sandbox plugin's close hook). A bad configuration stops it before
// anything starts: one line per problem on stderr, no stack, exit status 78 (EX_CONFIG).
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, type Config } from './config.js'

let config: Config
try {
  config = loadConfig()
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  process.stderr.write(`${error.message}\n`)
  process.exit(78)
}
const app = await buildApp({
  config,
  logger: {
    level: config.LOG_LEVEL,
    // Never the script, its output or credentials in the logs.
    redact: ['req.headers.authorization', 'req.headers.cookie', 'req.body']
  }
})

closeWithGrace({ delay: config.LIMIT_WALL_MS + config.LIMIT_KILL_GRACE_MS + 2000 }, async ({ signal, err }) => {
  if (err !== undefined) app.log.error({ err }, 'closing after an error')
  else app.log.info({ signal }, 'closing')
  await app.close()
})

await app.listen({ port: config.PORT, host: config.HOST })
