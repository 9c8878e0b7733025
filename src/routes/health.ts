// Liveness and readiness: /healthz says the process answers; /readyz says whether scripts can
// run, with which backend and isolation, and why not when they cannot.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { ErrorReply, Health, Readiness, ref } from '../schemas.js'

/** Neither needs a key, and only a malformed request is refused (in the one error shape). */
const open = { tags: ['health'], security: [] }
const malformed = ref(ErrorReply, { 'x-response-description': 'A malformed request (HEADERS_TOO_LARGE, REQUEST_TIMEOUT) or a wrong method' })

const health: FastifyPluginAsyncTypebox = async app => {
  app.get('/healthz', {
    schema: { operationId: 'getHealth', summary: 'Liveness', ...open, response: { 200: ref(Health, { 'x-response-description': 'The process answers' }), '4xx': malformed } },
    config: { rateLimit: false, public: true }
  }, async () => ({ status: 'ok' as const }))

  app.get('/readyz', {
    schema: {
      operationId: 'getReadiness',
      summary: 'Readiness: the chosen backend and every probe\'s result',
      ...open,
      response: {
        200: ref(Readiness, { 'x-response-description': 'Ready: scripts run, with the backend named' }),
        '4xx': malformed,
        503: ref(Readiness, { 'x-response-description': 'Not ready: no permitted backend passes its probe, or the server is shutting down' })
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
