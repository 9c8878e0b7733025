// The application: a Fastify instance with its plugins, routes and error handling, built from
// injected parts (configuration, the candidate backends, a logger). Tests drive it with
// inject() and fake backends; server.ts gives it a real logger and a port.
import { randomUUID } from 'node:crypto'
import Fastify, { LogController, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import helmet from '@fastify/helmet'
import rateLimit from '@fastify/rate-limit'
import swagger from '@fastify/swagger'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Redis } from 'ioredis'
import { ceilingsOf, tenantSharesOf, trustProxyOf, type Config } from './config.js'
import { limitsFrom } from './backends/backend.js'
import access from './plugins/access.js'
import crossSite from './plugins/cross-site.js'
import { urlHoldsKey } from './access/keys.js'
import type { SandboxBackend } from './backends/backend.js'
import { createBackends } from './backends/index.js'
import { RateLimitedError } from './errors/errors.js'
import { describeValidation, socketErrorHandler } from './errors/replies.js'
import { parseJsonBody } from './json-body.js'
import errors from './plugins/errors.js'
import sandbox from './plugins/sandbox.js'
import metrics, { metricsRoute } from './plugins/metrics.js'
import accessLog from './plugins/access-log.js'
import connections from './plugins/connections.js'
import pages from './routes/pages.js'
import executeRoute from './routes/execute.js'
import mcpRoute from './routes/mcp.js'
import sessionRoutes from './routes/sessions.js'
import sessionsPlugin from './plugins/sessions.js'
import healthRoutes from './routes/health.js'
import { withRequestExamples } from './responses.js'
import { SCHEMAS } from './schemas.js'
import { VERSION } from './version.js'
import { MiB } from './units.js'

export interface AppOptions {
  config: Config
  /** Candidate backends, strongest first; default: the real ones the configuration permits. */
  backends?: SandboxBackend[]
  logger?: FastifyServerOptions['logger']
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/
/** How long a rate-limit count may wait for Redis before the request goes uncounted. */
const REDIS_TIMEOUT_MS = 500

/** TRUST_PROXY (validated by loadConfig) as Fastify takes it: a hop count trusts the connection's
 *  peer and the proxies before it, counted from the right-hand end of X-Forwarded-For. */
function trustProxy (value: string): boolean | string[] | ((address: string, hop: number) => boolean) {
  const trust = trustProxyOf(value)
  /* c8 ignore next -- loadConfig refuses such a value before an app is built */
  if (typeof trust === 'object' && 'problem' in trust) throw new Error(`TRUST_PROXY: ${trust.problem}`)
  return typeof trust === 'number' ? (_address, hop) => hop < trust : trust
}

/** The logger's view of a request: never its query string (where a careless client puts a key),
 *  its headers or its body. */
export const REQUEST_LOG_SERIALIZERS = {
  req: (request: { method?: string, url?: string, ip?: string, socket?: { remotePort?: number } }) => {
    const url = String(request.url)
    const query = url.indexOf('?')
    const path = query < 0 ? url : url.slice(0, query)
    return {
      method: request.method,
      // A key pasted into the path (refused 400 by the access plugin) is not logged either.
      url: urlHoldsKey(path) ? '[redacted: a credential in the path]' : query < 0 ? url : `${path}?[redacted]`,
      remoteAddress: request.ip,
      remotePort: request.socket?.remotePort
    }
  }
}
/** Never credentials or a script in the logs, whatever a log call is given. */
export const LOG_REDACT = ['req.headers.authorization', 'req.headers.cookie', 'req.body', 'headers.authorization']
const REQUEST_TIMEOUT_CHECK_MS = 500
/** How long the plugins may take to start: the sandbox plugin's start-up probe bounds itself
 *  (START_PROBE_ATTEMPTS tries, each canary and zygote with a timeout of its own) and takes ~5 s,
 *  but on a busy host more than Fastify's default of 10 s, which ended the process (measured:
 *  load 9 on 2 cores). This only catches a start that hangs. */
export const PLUGIN_TIMEOUT_MS = 300_000

export async function buildApp (options: AppOptions): Promise<FastifyInstance> {
  const { config } = options
  // The redaction always applies; a test may replace the request serializer (its sabotage does).
  const logger = typeof options.logger === 'object' ? { ...options.logger, redact: LOG_REDACT, serializers: { ...REQUEST_LOG_SERIALIZERS, ...options.logger.serializers } } : options.logger
  const app = Fastify({
    logger: logger ?? false,
    bodyLimit: config.LIMIT_BODY_BYTES,
    pluginTimeout: PLUGIN_TIMEOUT_MS,
    requestTimeout: config.REQUEST_TIMEOUT_MS,
    // Node enforces requestTimeout only when given at the server's creation (Fastify sets it
    // afterwards), and checks it every 30 s by default: measured, a stalled body was never
    // answered 408 without this.
    http: { requestTimeout: config.REQUEST_TIMEOUT_MS, connectionsCheckingInterval: REQUEST_TIMEOUT_CHECK_MS },
    clientErrorHandler: socketErrorHandler(config.REQUEST_TIMEOUT_MS),
    trustProxy: trustProxy(config.TRUST_PROXY),
    // While closing, requests on open connections are served as usual: the sandbox plugin refuses
    // new runs (503 SHUTTING_DOWN, in the service's error shape) and every reply closes its
    // connection; Fastify's own 503 would carry neither our shape nor Retry-After.
    return503OnClosing: false,
    // One line per request, after its reply (plugins/access-log.ts), instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    genReqId: request => {
      const given = request.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    // The first error only: unknown fields are named by the body parser before ajv runs
    // (json-body.ts), and collecting every error cost ~0.1 s for a body of 700,000 bad items.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
    schemaErrorFormatter: describeValidation
  }).withTypeProvider<TypeBoxTypeProvider>()

  for (const schema of SCHEMAS) app.addSchema(schema)
  // Strict JSON only: Fastify's built-in text/plain parser would let other bodies through.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => {
    try {
      done(null, parseJsonBody(body as Buffer))
    } catch (error) {
      done(error as Error, undefined)
    }
  })
  app.addHook('onRequest', async (request, reply) => { reply.header('x-request-id', request.id) })
  // While closing, every reply ends its connection: a keep-alive socket would hold close() open.
  app.addHook('onSend', async (_request, reply) => { if (app.sandbox.draining) reply.header('connection', 'close') })

  await app.register(helmet)
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'PySandbox',
        version: VERSION,
        description: 'Runs a Python script\'s main() in a sandbox (nsjail first, failing closed) and returns its JSON result and output.',
        license: { name: 'Apache-2.0', url: 'https://www.apache.org/licenses/LICENSE-2.0' }
      },
      // Relative: the server that serves this document (so /docs' "Try it out" calls it, wherever it runs).
      servers: [{ url: '/', description: 'This server' }],
      tags: [
        { name: 'sandbox', description: 'Run Python' },
        { name: 'sessions', description: 'A Python that keeps its state between calls' },
        { name: 'health', description: 'Liveness and readiness, for load balancers and orchestrators' }
      ],
      components: {
        securitySchemes: {
          apiKey: { type: 'http', scheme: 'bearer', description: 'An API key (`psk_...`), when the server has API_KEYS_FILE set; without it, none is needed' }
        }
      }
    },
    // Each named schema under its own name (SCHEMAS' $id), not def-0, def-1, ...
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => typeof json.$id === 'string' ? json.$id : `def-${i}` },
    transformObject: document => withRequestExamples('openapiObject' in document ? document.openapiObject : document.swaggerObject)
  })
  const shares = tenantSharesOf(config)
  const ceilings = ceilingsOf(config)
  await app.register(crossSite)
  await app.register(access, {
    keysFile: config.API_KEYS_FILE,
    defaults: { rate: config.RATE_LIMIT_MAX, ...shares, sessions: config.SESSIONS_PER_CALLER, ceilings },
    host: config.HOST,
    metricsOpen: config.METRICS_TOKEN_HASH === undefined
  })
  if (ceilings.wallMs > config.QUEUE_TIMEOUT_MS) {
    app.log.warn(`LIMIT_WALL_MS_MAX (${ceilings.wallMs} ms) is above QUEUE_TIMEOUT_MS (${config.QUEUE_TIMEOUT_MS} ms): a request queued behind one long run can time out BUSY`)
  }
  if (config.RATE_LIMIT_MAX > 0) {
    const redis = config.REDIS_URL === undefined
      ? undefined
      : new Redis(config.REDIS_URL, { connectTimeout: REDIS_TIMEOUT_MS, commandTimeout: REDIS_TIMEOUT_MS, maxRetriesPerRequest: 1, lazyConnect: false })
    if (redis !== undefined) {
      let down = false
      redis.on('error', error => {
        if (!down) app.log.error({ err: { message: error.message } }, 'Redis unreachable: rate limits are NOT counted until it is back')
        down = true
      })
      redis.on('ready', () => {
        if (down) app.log.info('Redis reachable again: rate limits are counted')
        down = false
      })
      app.addHook('onClose', async () => { redis.disconnect() })
    }
    await app.register(rateLimit, {
      global: true,
      // The caller: its API key, else its address (as TRUST_PROXY lets it be known).
      keyGenerator: request => request.tenant.id,
      max: request => request.tenant.rate,
      timeWindow: config.RATE_LIMIT_WINDOW_MS,
      // Health, docs, metrics and the playground's files never count (whatever order the
      // plugins' route hooks ran in).
      allowList: request => request.routeOptions.config.public === true,
      enableDraftSpec: true,
      ...(redis !== undefined ? { redis, nameSpace: 'pysandbox-rate:', skipOnError: true } : {}),
      errorResponseBuilder: (_request, context) => new RateLimitedError(context.max, `${config.RATE_LIMIT_WINDOW_MS} ms`, context.after)
    })
  }
  await app.register(sandbox, {
    backends: options.backends ?? createBackends(config, message => app.log.info(message), message => app.log.warn(message)),
    concurrency: config.CONCURRENCY,
    queueSize: config.QUEUE_SIZE,
    queueTimeoutMs: config.QUEUE_TIMEOUT_MS,
    queueExpectedWaitMs: config.QUEUE_EXPECTED_WAIT_MS,
    probeIntervalMs: config.PROBE_INTERVAL_MS
  })
  await app.register(sessionsPlugin, {
    instance: config.INSTANCE_ID,
    max: config.SESSIONS_MAX,
    idleMs: config.SESSION_IDLE_MS,
    lifetimeMs: config.SESSION_LIFETIME_MS,
    memoryMiB: config.SESSION_MEMORY_MB,
    processes: config.LIMIT_PROCESSES,
    memoryCeilingMb: ceilings.memoryMb
  })
  await app.register(accessLog)
  await app.register(metrics)
  await app.register(connections, {
    maxConnections: config.MAX_CONNECTIONS,
    concurrency: config.CONCURRENCY,
    replyTimeoutMs: config.REPLY_TIMEOUT_MS,
    unreadReplyBytes: config.UNREAD_REPLY_BYTES,
    unreadReplyBytesPerCaller: config.UNREAD_REPLY_BYTES_PER_CALLER
  })

  // The error layer before the routes: child contexts inherit its handlers.
  await app.register(errors, { bodyLimitBytes: config.LIMIT_BODY_BYTES, rateLimited: config.RATE_LIMIT_MAX > 0 })
  const requestLimits = {
    limits: { defaults: limitsFrom(config), ceilings },
    filesIn: {
      count: config.LIMIT_FILES_IN,
      fileBytes: config.LIMIT_FILE_IN_BYTES,
      totalBytes: config.LIMIT_FILES_IN_BYTES,
      tmpBytes: config.LIMIT_TMP_MB * MiB,
      tmpFiles: config.LIMIT_TMP_FILES
    }
  }
  await app.register(executeRoute, requestLimits)
  await app.register(mcpRoute, requestLimits)
  await app.register(sessionRoutes, requestLimits)
  await app.register(healthRoutes)
  await app.register(metricsRoute, { tokenHash: config.METRICS_TOKEN_HASH })
  await app.register(pages)
  app.get('/openapi.json', { schema: { hide: true }, config: { rateLimit: false, public: true } }, async () => app.swagger())

  return app
}
