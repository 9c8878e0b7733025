// Sessions (docs/sessions.md): POST /sessions opens one, POST /sessions/{id}/execute runs a
// script in it (the body of /execute; its globals, imports and files stay for the next call),
// GET describes it, DELETE ends it. Only the caller that opened a session reaches it.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { InvalidRequestError } from '../errors/errors.js'
import { sendExecution } from '../execution-reply.js'
import { sessionResponses } from '../responses.js'
import { ExecuteRequest, ref } from '../schemas.js'
import { scriptRequest, type RequestLimits } from '../script-request.js'
import { openSession, runInSession } from '../sessions/run.js'

const IdParams = Type.Object({ id: Type.String({ maxLength: 128, description: 'The session\'s id, as POST /sessions gave it' }) })
const secured: { tags: string[], security: Array<Record<string, string[]>> } = { tags: ['sessions'], security: [{ apiKey: [] }, {}] }
/** A session's memory and processes are its jail's, fixed when it was opened. */
const FIXED_LIMITS = { memoryMb: 'SESSION_MEMORY_MB', processes: 'LIMIT_PROCESSES' } as const

/** POST /sessions takes no body, or `{}`: its own parser, in a context of its own (the app's
 *  names /execute's fields in its refusals). */
const opening: FastifyPluginAsyncTypebox = async app => {
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: 1024 }, (_request, body, done) => {
    const text = String(body).trim()
    done(text === '' || /^\{\s*\}$/.test(text) ? null : new InvalidRequestError('POST /sessions takes no fields: send no body, or {}'), undefined)
  })
  app.post('/sessions', {
    schema: {
      operationId: 'openSession',
      summary: 'Open a session: a Python that keeps its state between calls',
      description: 'Opens a session in a sandbox of its own (its own uid, processes, memory and /tmp) and answers with its id. Send no body, or `{}`. The session ends when DELETEd, after SESSION_IDLE_MS without a call, or SESSION_LIFETIME_MS after it was opened.',
      response: sessionResponses.create,
      ...secured
    }
  }, async (request, reply) => {
    // A session whose id never reaches its caller is ended: nobody could call or delete it, and
    // it would hold one of the caller's sessions until idle (found by an outside attack).
    const held: { id?: string, lost?: boolean, sent?: boolean } = {}
    const gone = new AbortController() // a caller that leaves while it waits for a slot opens nothing
    reply.raw.once('finish', () => { held.sent = true })
    reply.raw.once('close', () => {
      if (held.sent === true) return
      held.lost = true
      gone.abort()
      /* c8 ignore next -- the connection broke between the 201's first and last byte: no test can time it */
      if (held.id !== undefined) app.sessions.abandon(held.id)
    })
    // Left before this handler ran (during an earlier hook): its 'close' has been and gone.
    /* c8 ignore next 4 -- a connection closed between the hooks and the handler: no test can time it */
    if (reply.raw.destroyed) {
      held.lost = true
      gone.abort()
    }
    const opened = await openSession(app, request.tenant, gone.signal)
    held.id = opened.id
    if (held.lost === true) app.sessions.abandon(opened.id)
    return await reply.code(201).send(opened)
  })
}

const sessions: FastifyPluginAsyncTypebox<RequestLimits> = async (app, options) => {
  await app.register(opening)

  app.get('/sessions/:id', {
    schema: { operationId: 'getSession', summary: 'Describe a session', params: IdParams, response: sessionResponses.get, ...secured }
  }, async request => app.sessions.get(request.params.id, request.tenant))

  app.delete('/sessions/:id', {
    schema: { operationId: 'deleteSession', summary: 'End a session: its processes, files and memory go', params: IdParams, response: sessionResponses.delete, ...secured }
  }, async (request, reply) => {
    app.sessions.delete(request.params.id, request.tenant)
    return await reply.code(204).send()
  })

  app.post('/sessions/:id/execute', {
    schema: {
      operationId: 'executeInSession',
      summary: 'Run a script in a session',
      description: 'Takes the body of /execute and answers as /execute does, in the session\'s interpreter: what earlier calls defined, imported and wrote is there. The result is `main()`\'s value (`main(input)` with `input`) when this call\'s script defines main, else the value of its last line when that is an expression (as a notebook cell), else null. Limits are per call (`wallMs`, `cpuSeconds`, `outputBytes`); `memoryMb` and `processes` are the session\'s, fixed when it opened (400 if sent). A call past its wall or CPU time, or whose process dies, ends the session (`sessionEnded: true`).',
      params: IdParams,
      body: ref(ExecuteRequest),
      response: sessionResponses.execute,
      ...secured
    },
    config: { runsScripts: true }
  }, async (request, reply) => {
    const gone = new AbortController()
    reply.raw.once('close', () => { if (!reply.raw.writableFinished) gone.abort() })
    for (const [field, variable] of Object.entries(FIXED_LIMITS)) {
      if (request.body.limits?.[field as keyof typeof FIXED_LIMITS] !== undefined) {
        throw new InvalidRequestError(`body.limits.${field} cannot be set per call: a session's is its own, fixed when it was opened (${variable})`)
      }
    }
    const run = scriptRequest(request.body, options, request.tenant)
    const { value, ended } = await runInSession(app, request.params.id, request.tenant, run, gone.signal)
    return sendExecution(app, request, reply, run, value, ended ? { sessionEnded: true } : {})
  })
}

export default sessions
