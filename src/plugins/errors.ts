// The error layer: whatever is thrown on the way (Fastify's validation, a plugin's refusal, a
// backend's failure) becomes one reply made by errorBody(), and an unknown route or method is
// answered in that shape too. Registered before the routes: child contexts inherit the handlers.
import fp from 'fastify-plugin'
import type { FastifyError } from 'fastify'
import type { ErrorCode } from '../errors/codes.js'
import { ClientClosedError, InternalError, MethodNotAllowedError, NotFoundError } from '../errors/errors.js'
import { clientError, errorBody, retryAfterOf } from '../errors/replies.js'

export interface ErrorsOptions {
  bodyLimitBytes: number
  /** Unknown paths count against the rate limit like any request. */
  rateLimited: boolean
}

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const

export default fp<ErrorsOptions>(async function errorsPlugin (app, options) {
  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    if (error instanceof ClientClosedError) {
      // Nobody is left to answer, and nothing ran: logged, neither sent nor counted as an error reply.
      request.log.info({ code: error.code }, error.message)
      reply.hijack()
      reply.raw.destroy() // already closed: this only makes sure no socket is left waiting
      return
    }
    const known = clientError(error, { bodyBytes: options.bodyLimitBytes }, request.headers['content-type'])
    if (known === undefined) request.log.error({ err: error }, 'internal error')
    const shown = known ?? new InternalError(request.id)
    const statusCode = Number(shown.statusCode)
    const retryAfter = retryAfterOf(shown)
    if (retryAfter !== undefined) reply.header('retry-after', retryAfter)
    // What a refusal carries besides its message (SESSION_ENDED's endedBy).
    const details = (shown as { details?: Record<string, unknown> }).details
    return await reply.code(statusCode).send(errorBody(statusCode, shown.code as ErrorCode, shown.message, request.id, details))
  })

  app.setNotFoundHandler({
    preHandler: options.rateLimited ? app.rateLimit() : undefined
  }, async (request, reply) => {
    const path = new URL(request.url, 'http://localhost').pathname
    const allowed = HTTP_METHODS.filter(method => app.hasRoute({ url: path, method }))
    if (allowed.length > 0) {
      reply.header('allow', allowed.join(', '))
      throw new MethodNotAllowedError(request.method, path, allowed.join(', '))
    }
    throw new NotFoundError(request.method, path)
  })
}, { name: 'errors', fastify: '5.x' })
