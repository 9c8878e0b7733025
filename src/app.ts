// The application: a Fastify instance with its plugins, routes and error handling, built from
// injected parts (configuration, the candidate backends, a logger). Tests drive it with
// inject() and fake backends; server.ts gives it a real logger and a port.
import { STATUS_CODES } from 'node:http'
import { randomUUID } from 'node:crypto'
import type { Socket } from 'node:net'
import Fastify, { type FastifyError, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import helmet from '@fastify/helmet'
import rateLimit from '@fastify/rate-limit'
import swagger from '@fastify/swagger'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { ErrorObject } from 'ajv'
import { permittedBackends, type Config } from './config.js'
import type { SandboxBackend } from './backends/backend.js'
import { limitsFrom } from './backends/backend.js'
import { DirectBackend, directOptions } from './backends/direct.js'
import { NsjailBackend, nsjailOptions } from './backends/nsjail.js'
import { UnshareBackend, unshareOptions } from './backends/unshare.js'
import {
  BUSY_RETRY_AFTER_S, ClientClosedError, ERROR_CODES, HeadersTooLargeError, InternalError, InvalidRequestError,
  MethodNotAllowedError, NotFoundError, PayloadTooLargeError, RateLimitedError, RequestTimeoutError, UnsupportedMediaTypeError
} from './errors.js'
import { parseJsonBody } from './json-body.js'
import sandbox from './plugins/sandbox.js'
import metrics, { metricsRoute } from './plugins/metrics.js'
import pages from './routes/pages.js'
import executeRoute from './routes/execute.js'
import healthRoutes from './routes/health.js'
import { ErrorReply } from './schemas.js'

export interface AppOptions {
  config: Config
  /** Candidate backends, strongest first; default: the real ones the configuration permits. */
  backends?: SandboxBackend[]
  logger?: FastifyServerOptions['logger']
}

/** The real backends the configuration permits, strongest first. `log` hears what a backend
 *  does between requests (a warm sandbox replaced, and why); `warn`, what weakens it (memory
 *  bounded per process only). */
export function createBackends (config: Config, log?: (message: string) => void, warn?: (message: string) => void): SandboxBackend[] {
  const limits = limitsFrom(config)
  const make = {
    nsjail: () => new NsjailBackend({ ...nsjailOptions(config, limits), log, warn }),
    unshare: () => new UnshareBackend({ ...unshareOptions(config, limits), warn }),
    direct: () => new DirectBackend(directOptions(config, limits))
  }
  return permittedBackends(config).map(name => make[name]())
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/
const REQUEST_TIMEOUT_CHECK_MS = 500
const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const

/** Validation errors in words a user can act on; unknown fields are named. */
function describeValidation (errors: ErrorObject[], dataVar: string): Error {
  // A typo is both an unknown field and a missing one: name the unknown field first.
  const first = errors.find(e => e.keyword === 'additionalProperties') ?? errors[0] as ErrorObject
  const where = `${dataVar}${first.instancePath.replaceAll('/', '.')}`
  const params = first.params as Record<string, unknown>
  const texts: Record<string, string> = {
    additionalProperties: `unknown field "${String(params.additionalProperty)}" in ${where}; the only field is "script"`,
    required: `${where} must have the field "${String(params.missingProperty)}"`,
    minLength: `${where} must not be empty`,
    type: `${where} must be ${String(params.type)}`
  }
  // Those four are every keyword the request schemas use; ajv's own words would do for another.
  /* c8 ignore next */
  return new InvalidRequestError(texts[first.keyword] ?? `${where} ${String(first.message)}`)
}

/** Any error thrown on the way (Fastify's, a plugin's, ours) as the reply the client gets. */
function toClientError (error: FastifyError, config: Config, contentType: string | undefined): FastifyError | undefined {
  if (error.validation !== undefined) return error // made by describeValidation
  if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new UnsupportedMediaTypeError(JSON.stringify(contentType ?? 'none'))
  if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new PayloadTooLargeError(config.LIMIT_BODY_BYTES)
  if ((ERROR_CODES as readonly string[]).includes(error.code)) return error
  if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) return new InvalidRequestError(error.message)
  return undefined
}

/** What Node refuses before a request reaches Fastify (a stalled body, oversized headers,
 *  malformed HTTP), answered in the service's error shape; then the connection is closed. */
function socketErrorHandler (config: Config): (error: Error & { code?: string }, socket: Socket) => void {
  return (error, socket) => {
    if (error.code === 'ECONNRESET' || socket.destroyed) return
    const reply: FastifyError = error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? new RequestTimeoutError(config.REQUEST_TIMEOUT_MS)
      : error.code === 'HPE_HEADER_OVERFLOW' ? new HeadersTooLargeError() : new InvalidRequestError('malformed HTTP request')
    const statusCode = reply.statusCode ?? 400
    const status = STATUS_CODES[statusCode] ?? ''
    const body = JSON.stringify({ statusCode, error: status, code: reply.code, message: reply.message })
    if (socket.writable) {
      socket.write(`HTTP/1.1 ${statusCode} ${status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
    }
    socket.destroy()
  }
}

export async function buildApp (options: AppOptions): Promise<FastifyInstance> {
  const { config } = options
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: config.LIMIT_BODY_BYTES,
    requestTimeout: config.REQUEST_TIMEOUT_MS,
    // Node enforces requestTimeout only when given at the server's creation (Fastify sets it
    // afterwards), and checks it every 30 s by default: measured, a stalled body was never
    // answered 408 without this.
    http: { requestTimeout: config.REQUEST_TIMEOUT_MS, connectionsCheckingInterval: REQUEST_TIMEOUT_CHECK_MS },
    clientErrorHandler: socketErrorHandler(config),
    trustProxy: config.TRUST_PROXY,
    return503OnClosing: true,
    requestIdHeader: false,
    genReqId: request => {
      const given = request.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: true } },
    schemaErrorFormatter: describeValidation
  }).withTypeProvider<TypeBoxTypeProvider>()

  app.addSchema(ErrorReply)
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
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  app.addHook('onSend', async (_request, reply) => { if (closing) reply.header('connection', 'close') })

  await app.register(helmet)
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'PySandbox',
        version: '0.1.0',
        description: 'Runs a Python script\'s main() in a sandbox (nsjail first, failing closed) and returns its JSON result and output.'
      }
    }
  })
  if (config.RATE_LIMIT_MAX > 0) {
    await app.register(rateLimit, {
      global: true,
      max: config.RATE_LIMIT_MAX,
      timeWindow: config.RATE_LIMIT_WINDOW_MS,
      errorResponseBuilder: (_request, context) => new RateLimitedError(context.max, `${config.RATE_LIMIT_WINDOW_MS} ms`, context.after)
    })
  }
  await app.register(sandbox, {
    backends: options.backends ?? createBackends(config, message => app.log.info(message), message => app.log.warn(message)),
    concurrency: config.CONCURRENCY,
    queueSize: config.QUEUE_SIZE,
    queueTimeoutMs: config.QUEUE_TIMEOUT_MS,
    probeIntervalMs: config.PROBE_INTERVAL_MS
  })
  await app.register(metrics)

  // Error and not-found handlers before the routes: child contexts inherit them when registered.
  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    if (error instanceof ClientClosedError) {
      // Nobody is left to answer, and nothing ran: logged, neither sent nor counted as an error reply.
      request.log.info({ code: error.code }, error.message)
      reply.hijack()
      reply.raw.destroy() // already closed: this only makes sure no socket is left waiting
      return
    }
    const clientError = toClientError(error, config, request.headers['content-type'])
    if (clientError === undefined) {
      request.log.error({ err: error }, 'internal error')
    }
    const shown = clientError ?? new InternalError(request.id)
    const statusCode = Number(shown.statusCode)
    if (shown.code === 'BUSY') reply.header('retry-after', BUSY_RETRY_AFTER_S)
    return await reply.code(statusCode).send({
      statusCode,
      error: String(STATUS_CODES[statusCode]),
      code: shown.code,
      message: shown.message,
      requestId: request.id
    })
  })

  app.setNotFoundHandler({
    preHandler: config.RATE_LIMIT_MAX > 0 ? app.rateLimit() : undefined
  }, async (request, reply) => {
    const path = new URL(request.url, 'http://localhost').pathname
    const allowed = HTTP_METHODS.filter(method => app.hasRoute({ url: path, method }))
    if (allowed.length > 0) {
      reply.header('allow', allowed.join(', '))
      throw new MethodNotAllowedError(request.method, path, allowed.join(', '))
    }
    throw new NotFoundError(request.method, path)
  })

  await app.register(executeRoute)
  await app.register(healthRoutes)
  await app.register(metricsRoute)
  await app.register(pages)
  app.get('/openapi.json', { schema: { hide: true }, config: { rateLimit: false } }, async () => app.swagger())

  return app
}
