// POST /execute: validate, run in the chosen sandbox, reply with the result or a precise error.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorBody } from '../errors/replies.js'
import { REQUEST_EXAMPLES, executeResponses } from '../responses.js'
import { ExecuteBody } from '../schemas.js'

const execute: FastifyPluginAsyncTypebox = async app => {
  app.post('/execute', {
    schema: {
      summary: 'Run a Python script\'s main() in a sandbox',
      description: 'Runs `script` in a fresh sandbox, calls `main()` and returns its JSON return value with everything the script printed and the backend that ran it.',
      body: { ...ExecuteBody, examples: REQUEST_EXAMPLES },
      response: executeResponses
    }
  }, async (request, reply) => {
    // A client that goes away stops its run: no sandbox works for nobody.
    const gone = new AbortController()
    reply.raw.once('close', () => { if (!reply.raw.writableFinished) gone.abort() })

    const { outcome, backend, queuedMs } = await app.sandbox.execute(request.body.script, gone.signal)
    const { stdout, stderr, stdoutTruncated, stderrTruncated, durationMs } = outcome
    app.metrics.recordExecution({ backend, outcome: outcome.ok ? 'ok' : outcome.code, durationMs, queuedMs })
    request.log.info({
      outcome: outcome.ok ? 'ok' : outcome.code,
      backend,
      durationMs,
      queuedMs,
      scriptBytes: Buffer.byteLength(request.body.script),
      stdoutBytes: Buffer.byteLength(stdout),
      stderrBytes: Buffer.byteLength(stderr),
      stdoutTruncated,
      stderrTruncated
    }, 'execution')
    // The documented shape; truncation flags only when something was cut, timings in a header.
    const output = {
      stdout,
      stderr,
      backend,
      ...(stdoutTruncated ? { stdoutTruncated } : {}),
      ...(stderrTruncated ? { stderrTruncated } : {})
    }
    reply.header('server-timing', `queue;dur=${queuedMs}, sandbox;dur=${durationMs}`)
    if (outcome.ok) return { result: outcome.result, ...output }
    return await reply.code(422).send(errorBody(422, outcome.code, outcome.message, request.id, { ...outcome.details, ...output }))
  })
}

export default execute
