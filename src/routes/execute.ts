// POST /execute: validate, run in the chosen sandbox, reply with the result or a precise error.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { sendExecution } from '../execution-reply.js'
import { executeResponses } from '../responses.js'
import { ExecuteRequest, ref } from '../schemas.js'
import { scriptRequest, type RequestLimits } from '../script-request.js'

export type ExecuteOptions = RequestLimits

const execute: FastifyPluginAsyncTypebox<ExecuteOptions> = async (app, options) => {
  app.post('/execute', {
    schema: {
      operationId: 'execute',
      tags: ['sandbox'],
      summary: 'Run a Python script\'s main() in a sandbox',
      description: 'Runs `script` in a fresh sandbox, calls `main()` (or `main(input)`) and returns its JSON return value with everything the script printed, the files it left under `output/` and its open figures, and the backend that ran it.',
      body: ref(ExecuteRequest),
      response: executeResponses,
      // Needed only when the server has API keys (API_KEYS_FILE); `{}`: none needed otherwise.
      security: [{ apiKey: [] }, {}]
    },
    config: { runsScripts: true }
  }, async (request, reply) => {
    // A client that goes away stops its run: no sandbox works for nobody.
    const gone = new AbortController()
    reply.raw.once('close', () => { if (!reply.raw.writableFinished) gone.abort() })

    const run = scriptRequest(request.body, options, request.tenant)
    return sendExecution(app, request, reply, run, await app.sandbox.execute(run, gone.signal, request.tenant))
  })
}

export default execute
