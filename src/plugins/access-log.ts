// One access-log line per request, written when its reply has been sent: method, route, status,
// error code, the caller's key, duration, and for /execute the backend, queue wait and what ran.
// Health and readiness polls (every few seconds from every probe) are logged at debug level.
import fp from 'fastify-plugin'
import type { Tenant } from './access.js'

/** What /execute adds to its request's line (set by the route once the sandbox has answered). */
export type ExecutionFacts = Record<string, unknown> & { backend: string, queuedMs: number, sandboxMs: number, outcome: string }

declare module 'fastify' {
  interface FastifyRequest {
    /** The error code of the reply, when it is an error reply (set before it is serialized). */
    replyCode: string | undefined
    execution: ExecutionFacts | undefined
  }
}

/** Polled by platforms, not called by users: a line each would drown the log. */
const POLLS = new Set(['/healthz', '/readyz'])

export default fp(async function accessLog (app) {
  app.decorateRequest('replyCode', undefined)
  app.decorateRequest('execution', undefined)
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? '-'
    const level = POLLS.has(route) && reply.statusCode < 500 ? 'debug' : 'info'
    request.log[level]({
      req: request, // through the logger's serializer: method, the URL without its query string, the address
      route,
      status: reply.statusCode,
      code: request.replyCode,
      key: (request.tenant as Tenant | null)?.label, // none yet when refused before its key was read
      durationMs: Math.round(reply.elapsedTime),
      ...request.execution
    }, 'request')
  })
}, { name: 'access-log', fastify: '5.x' })
