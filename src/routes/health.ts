// Liveness and readiness: /healthz says the process answers; /readyz says whether scripts can
// run, with which backend and isolation, and why not when they cannot.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { Readiness } from '../schemas.js'

const health: FastifyPluginAsyncTypebox = async app => {
  app.get('/healthz', {
    schema: { summary: 'Liveness', response: { 200: Type.Object({ status: Type.Literal('ok') }) } },
    config: { rateLimit: false, public: true }
  }, async () => ({ status: 'ok' as const }))

  app.get('/readyz', {
    schema: { summary: 'Readiness: the chosen backend and every probe\'s result', response: { 200: Readiness, 503: Readiness } },
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
