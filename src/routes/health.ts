// Liveness and readiness: /healthz says the process answers; /readyz says whether scripts can
// run, with which backend and isolation, and why not when they cannot.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { reply as described } from '../responses.js'
import { ErrorReply, Health, Readiness } from '../schemas.js'

/** Neither needs a key, and only a malformed request is refused (in the one error shape). */
const open = { tags: ['health'], security: [] }
const malformed = described(ErrorReply, 'A malformed request (HEADERS_TOO_LARGE, REQUEST_TIMEOUT) or a wrong method')

const health: FastifyPluginAsyncTypebox = async app => {
  app.get('/healthz', {
    schema: { operationId: 'getHealth', summary: 'Liveness', ...open, response: { 200: described(Health, 'The process answers'), '4xx': malformed } },
    config: { rateLimit: false, public: true }
  }, async () => ({ status: 'ok' as const }))

  app.get('/readyz', {
    schema: {
      operationId: 'getReadiness',
      summary: 'Readiness: the chosen backend and every probe\'s result',
      ...open,
      response: {
        200: described(Readiness, 'Ready: scripts run, with the backend named'),
        '4xx': malformed,
        503: described(Readiness, 'Not ready: no permitted backend passes its probe, or the server is shutting down')
      }
    },
    config: { rateLimit: false, public: true }
  }, async (_request, reply) => {
    const { backend, probes, draining } = app.sandbox
    const ready = app.sandbox.ready && !draining
    const body: Readiness = {
      status: draining ? 'shutting-down' : ready ? 'ready' : 'unavailable',
      backend: backend?.name ?? null,
      auth: app.access.mode,
      probes: probes.map(p => ({ ...p }))
    }
    if (backend?.name === 'direct') body.warning = 'the direct backend runs scripts WITHOUT ISOLATION'
    return await reply.code(ready ? 200 : 503).send(body)
  })
}

export default health
