// How a run's outcome is answered, by /execute and by a session's call alike: metrics, the
// access log's fields, the timing header, and the 200 (main()'s JSON as the sandbox wrote it) or
// the 422 with the script's code and output.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ScriptRequest } from './backends/backend.js'
import { errorBody } from './errors/replies.js'
import type { Execution } from './plugins/sandbox.js'

/** How the 200 schema's serializer begins a reply whose result is null, and what replaces it. */
const RESULT_STAND_IN = '{"result":null'
const RESULT_OPENING = '{"result":'

/** `extra` joins a 422's body (a session's `sessionEnded`). */
export function sendExecution (app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, run: ScriptRequest, execution: Execution,
  extra: Record<string, unknown> = {}): FastifyReply {
  const { outcome, backend, queuedMs } = execution
  const { tenant } = request
  const { stdout, stderr, stdoutTruncated, stderrTruncated, durationMs } = outcome
  app.metrics.recordExecution({ backend, outcome: outcome.ok ? 'ok' : outcome.code, durationMs, queuedMs, key: tenant.label })
  // Joins the request's one access-log line (plugins/access-log.ts).
  request.execution = {
    outcome: outcome.ok ? 'ok' : outcome.code,
    limits: (request.body as { limits?: Record<string, number> }).limits,
    backend,
    sandboxMs: durationMs,
    queuedMs,
    scriptBytes: Buffer.byteLength(run.script),
    hasInput: run.input !== undefined,
    stdinBytes: run.stdin === undefined ? 0 : Buffer.byteLength(run.stdin),
    filesIn: run.files?.length ?? 0,
    filesInBytes: run.files?.reduce((sum, file) => sum + file.content.length, 0) ?? 0,
    filesOut: outcome.ok ? outcome.files?.length ?? 0 : 0,
    filesLeftOut: outcome.ok ? outcome.filesLeftOut?.length ?? 0 : 0,
    stdoutBytes: Buffer.byteLength(stdout),
    stderrBytes: Buffer.byteLength(stderr),
    stdoutTruncated,
    stderrTruncated
  }
  // The documented shape; truncation flags only when something was cut, timings in a header.
  const output = {
    stdout,
    stderr,
    backend,
    ...(stdoutTruncated ? { stdoutTruncated } : {}),
    ...(stderrTruncated ? { stderrTruncated } : {})
  }
  reply.header('server-timing', `queue;dur=${queuedMs}, sandbox;dur=${durationMs}`)
  if (outcome.ok) {
    const { resultJson, files: returned, filesLeftOut } = outcome
    // main()'s value goes out as the JSON text the sandbox wrote (checked by outcome.ts, never
    // parsed here: JSON.parse of 8 MiB of [{}] is 0.9 s of the event loop), so a float comes
    // back as Python wrote it (1.0, not 1). The rest is the route's 200 schema at work, with
    // null standing in for the result in its first place.
    const rest = reply.serializeInput({ result: null, ...(returned !== undefined ? { files: returned } : {}), ...(filesLeftOut !== undefined ? { filesLeftOut } : {}), ...output }, '200', 'application/json') as string
    // A string, not one Buffer: joining strings copies nothing now, and the connections plugin
    // hands a large reply to the socket 64 KiB at a time (two 20 MiB copies were ~45 ms of the
    // event loop per reply).
    // fast-json-stringify writes the required fields first, in `required` order: result is first
    // while it is ExecuteResult's first required field. A schema that changed that fails here,
    // loudly, never as a broken reply.
    /* c8 ignore next */
    if (!rest.startsWith(RESULT_STAND_IN)) throw new Error(`the 200 reply does not begin with ${RESULT_STAND_IN}: ExecuteResult's first required field must be result`)
    const body = RESULT_OPENING + resultJson.toString('utf8') + rest.slice(RESULT_STAND_IN.length)
    // The typed reply knows the schema's objects only; this is one of them, serialized. Not
    // awaited (awaiting a reply waits until it is written): a client that does not read would
    // keep this function's copies of the reply alive (plugins/connections.ts bounds the rest).
    reply.type('application/json; charset=utf-8').send(body as never)
    return reply
  }
  reply.code(422).send(errorBody(422, outcome.code, outcome.message, request.id, { ...outcome.details, ...output, ...extra }))
  return reply
}
