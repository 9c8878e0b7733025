// POST /mcp: the Model Context Protocol over Streamable HTTP (the official SDK), stateless: a
// server and a transport per request, so nothing of one call outlives it. The SDK's web-standard
// transport answers with a Response that goes out as an ordinary Fastify reply: the access log,
// the bounds on unread replies and the shutdown's Connection: close apply as to /execute. Tools:
// run_python, a script (with input and files) run exactly as POST /execute runs it, in the same
// sandbox, slots, queue and limits, under the same keys and rate limits (the access and
// rate-limit hooks run before this route, as for /execute); open_session, run_in_session and
// close_session, PySandbox's sessions (routes/sessions.ts) under the same rules. The reply is MCP's: the result, stdout and stderr as
// JSON text, returned images as image content, a failure as isError with its code.
import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import { z } from 'zod'
import type { RunOutcome, ScriptRequest } from '../backends/backend.js'
import type { Execution } from '../plugins/sandbox.js'
import type { BackendName } from '../config.js'
import { isErrorCode } from '../errors/codes.js'
import { InternalError, InvalidJsonError, InvalidRequestError, ShuttingDownError } from '../errors/errors.js'
import { retryAfterOf } from '../errors/replies.js'
import { scriptRequest, type RequestLimits } from '../script-request.js'
import { openSession, runInSession } from '../sessions/run.js'
import { VERSION } from '../version.js'

/** Returned files shown to the model as images; the others travel in the JSON text. */
const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp'])

const utf8 = new TextDecoder('utf-8', { fatal: true })
/** What a tools/call's arguments may hold: run_python's, and the session's id. */
const ARGUMENTS = new Set(['script', 'input', 'files', 'session'])
/* c8 ignore next -- closing an MCP server only drops its handlers: it does not fail */
const ignore = (): void => {}

const DESCRIPTION = 'Runs a Python 3 script in a sandbox (no network; numpy, pandas and matplotlib installed) ' +
  'and returns the JSON value its main() returns, with everything it printed. The script must define main(); ' +
  'with `input`, main(input) is called. `files` are placed in its working directory; what it leaves under ' +
  'output/ and the figures it leaves open come back (images as images). Each call starts from nothing: ' +
  'to keep variables, imports and files between calls, use open_session and run_in_session.'

const SESSION_DESCRIPTION = 'Runs Python 3 in a session opened by open_session: variables, imports, functions and files ' +
  'of earlier calls are there (a notebook\'s kernel). The result is main()\'s value when this script defines main ' +
  '(main(input) with `input`), else the value of its last line when that is an expression, else null; with it come ' +
  'everything printed, files written under output/ and open figures (images as images). A call past its time or ' +
  'memory ends the session (sessionEnded).'

/** What the model reads: the reply of POST /execute, as JSON text, and images beside it. */
function toolResult (outcome: RunOutcome, backend: BackendName, sessionEnded = false): CallToolResult {
  const output = {
    stdout: outcome.stdout,
    stderr: outcome.stderr,
    backend,
    ...(outcome.stdoutTruncated ? { stdoutTruncated: true } : {}),
    ...(outcome.stderrTruncated ? { stderrTruncated: true } : {})
  }
  if (!outcome.ok) {
    return { isError: true, content: [{ type: 'text', text: JSON.stringify({ code: outcome.code, message: outcome.message, ...outcome.details, ...output, ...(sessionEnded ? { sessionEnded } : {}) }) }] }
  }
  const files = outcome.files ?? []
  const images = files.filter(file => IMAGE_TYPES.has(file.mediaType) && file.encoding === 'base64')
  const others = files.filter(file => !images.includes(file))
  const rest = JSON.stringify({
    ...(others.length > 0 ? { files: others } : {}),
    ...(images.length > 0 ? { images: images.map(({ path, size, mediaType }) => ({ path, size, mediaType })) } : {}),
    ...(outcome.filesLeftOut !== undefined ? { filesLeftOut: outcome.filesLeftOut } : {}),
    ...output
  })
  return {
    content: [
      // main()'s JSON text as the sandbox wrote it (checked, never parsed here: as /execute does).
      { type: 'text', text: `{"result":${outcome.resultJson.toString('utf8')},${rest.slice(1)}` },
      ...images.map(file => ({ type: 'image' as const, data: file.content, mimeType: file.mediaType }))
    ]
  }
}

/** A refusal of the service's (a bad path, BUSY, SHUTTING_DOWN, ...) as the tool's error, with
 *  when to retry; anything else is ours: logged, and answered as /execute answers it (500). */
function refusal (error: unknown, log: FastifyBaseLogger, requestId: string): CallToolResult {
  const { code, message, details } = error as { code?: string, message: string, details?: Record<string, unknown> }
  if (code === undefined || !isErrorCode(code)) {
    log.error({ err: error }, 'internal error')
    return { isError: true, content: [{ type: 'text', text: JSON.stringify({ code: 'INTERNAL_ERROR', message: new InternalError(requestId).message }) }] }
  }
  const retryAfterS = retryAfterOf(error as { code: string })
  const retry = retryAfterS === undefined ? {} : { retryAfterS }
  return { isError: true, content: [{ type: 'text', text: JSON.stringify({ code, message, ...details, ...retry }) }] }
}

const mcp: FastifyPluginAsync<RequestLimits> = async (app, options) => {
  // JSON-RPC bodies: strict JSON (valid UTF-8), without /execute's field checks (json-body.ts).
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => {
    try {
      done(null, JSON.parse(utf8.decode(body as Buffer)))
    } catch (error) {
      done(new InvalidJsonError((error as Error).message), undefined)
    }
  })

  app.post('/mcp', { schema: { hide: true }, config: { runsScripts: true } }, async (request, reply) => {
    // One message per request. A JSON-RPC batch (dropped from MCP in 2025-06-18; the SDK takes up
    // to 100) would run that many scripts past the rate limit and hold all their replies at once.
    if (Array.isArray(request.body)) throw new InvalidRequestError('JSON-RPC batches are not taken: send one message per request')
    // Unknown arguments refused before the SDK's schema walks them (900,000 of them: 10 s).
    const args = (request.body as { params?: { arguments?: unknown } } | null)?.params?.arguments
    if (typeof args === 'object' && args !== null) {
      for (const name in args) {
        if (!ARGUMENTS.has(name)) throw new InvalidRequestError(`unknown field "${name}" in params.arguments; the fields are ${[...ARGUMENTS].map(field => `"${field}"`).join(', ')}`)
      }
    }
    // As /execute: 503 with Retry-After, so a client or balancer retries elsewhere.
    if (app.sandbox.draining) throw new ShuttingDownError('it takes no new runs')
    const { tenant } = request
    const server = new McpServer({ name: 'pysandbox', version: VERSION })
    /** Sessions opened by this request: ended if its reply is never delivered. */
    const openedHere: string[] = []
    /** A run's outcome, counted and logged as /execute's, as the tool's result. */
    const answered = ({ script, files }: ScriptRequest, { outcome, backend, queuedMs }: Execution, sessionEnded = false): CallToolResult => {
      const code = outcome.ok ? 'ok' : outcome.code
      app.metrics.recordExecution({ backend, outcome: code, durationMs: outcome.durationMs, queuedMs, key: tenant.label })
      request.execution = { outcome: code, backend, sandboxMs: outcome.durationMs, queuedMs, scriptBytes: Buffer.byteLength(script), filesIn: files?.length ?? 0 }
      return toolResult(outcome, backend, sessionEnded)
    }
    const scriptArguments = {
      input: z.unknown().optional().describe('Any JSON value: main(input) is called with it'),
      files: z.array(z.object({
        path: z.string().min(1).describe('Relative path in the working directory'),
        content: z.string(),
        encoding: z.enum(['utf8', 'base64']).optional()
      }).strict()).max(options.filesIn.count).optional().describe('Files placed in the working directory before the script runs')
    }
    const session = z.string().min(1).max(128).describe('The session\'s id, as open_session gave it')
    server.registerTool('run_python', {
      title: 'Run Python',
      description: DESCRIPTION,
      inputSchema: { script: z.string().min(1).describe('Python 3 source that defines a function main()'), ...scriptArguments },
      annotations: { readOnlyHint: true, openWorldHint: false }
    }, async ({ script, input, files }, extra) => {
      try {
        const run = scriptRequest({ script, ...(input !== undefined ? { input } : {}), ...(files !== undefined ? { files } : {}) }, options, tenant)
        return answered(run, await app.sandbox.execute(run, extra.signal, tenant))
      } catch (error) {
        return refusal(error, request.log, request.id)
      }
    })
    server.registerTool('open_session', {
      title: 'Open a Python session',
      description: 'Opens a session: a Python in a sandbox of its own that keeps its variables, imports and files between run_in_session calls. Returns its id (and when it ends if not called: SESSION_IDLE_MS). End it with close_session when done.',
      inputSchema: {},
      annotations: { readOnlyHint: false, openWorldHint: false }
    }, async (_args, extra) => {
      try {
        const opened = await openSession(app, tenant, extra.signal)
        openedHere.push(opened.id)
        if (reply.raw.destroyed) app.sessions.abandon(opened.id) // its client left while it opened
        return { content: [{ type: 'text', text: JSON.stringify(opened) }] }
      } catch (error) {
        return refusal(error, request.log, request.id)
      }
    })
    server.registerTool('run_in_session', {
      title: 'Run Python in a session',
      description: SESSION_DESCRIPTION,
      inputSchema: { session, script: z.string().min(1).describe('Python 3 source: a cell'), ...scriptArguments },
      annotations: { readOnlyHint: false, openWorldHint: false }
    }, async ({ session: id, script, input, files }, extra) => {
      try {
        const run = scriptRequest({ script, ...(input !== undefined ? { input } : {}), ...(files !== undefined ? { files } : {}) }, options, tenant)
        const { value, ended } = await runInSession(app, id, tenant, run, extra.signal)
        return answered(run, value, ended)
      } catch (error) {
        return refusal(error, request.log, request.id)
      }
    })
    server.registerTool('close_session', {
      title: 'Close a Python session',
      description: 'Ends a session: its processes, variables and files are gone.',
      inputSchema: { session },
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false }
    }, async ({ session: id }) => {
      try {
        app.sessions.delete(id, tenant)
        return { content: [{ type: 'text', text: JSON.stringify({ closed: id }) }] }
      } catch (error) {
        return refusal(error, request.log, request.id)
      }
    })
    // Stateless: no MCP session id (state lives in PySandbox's sessions, named in each call); one
    // JSON reply per request (no SSE stream to hold open).
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true })
    transport.onerror = error => { request.log.error({ err: error }, 'MCP transport error') }
    await server.connect(transport)
    // A client that goes away stops its run: closing the server aborts the tool call's signal. A
    // session it opened whose id never reached it is ended (as POST /sessions does).
    let sent = false
    reply.raw.once('finish', () => { sent = true })
    reply.raw.once('close', () => {
      server.close().catch(ignore)
      /* c8 ignore next -- the connection broke while the reply was written: no test can time it (a client gone while it opened is handled in open_session) */
      if (!sent) for (const id of openedHere) app.sessions.abandon(id)
    })
    // Node joins a request's repeated headers into one (set-cookie aside, which a request does not send).
    const headers = new Headers()
    for (const [name, value] of Object.entries(request.headers)) headers.set(name, String(value))
    const response = await transport.handleRequest(new Request(new URL(request.url, 'http://mcp.invalid'), { method: 'POST', headers }), { parsedBody: request.body })
    reply.code(response.status)
    response.headers.forEach((value, name) => { reply.header(name, value) })
    // Not awaited: a client that does not read would keep this function's copy alive
    // (plugins/connections.ts bounds the rest, as for /execute).
    reply.send(await response.text())
    return reply
  })
}

export default mcp
