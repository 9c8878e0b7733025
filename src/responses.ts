// The replies of POST /execute by status, as the route's response schemas: each a reference to
// its shape in schemas.ts (every error status to the one ErrorReply), with what it means, its
// headers and real examples (captured from the nsjail backend), so the OpenAPI document and the
// /docs page show every error class.
import { ErrorReply, ExecuteRequest, ExecuteResult, SessionInfo, ref } from './schemas.js'

type Example<T> = Record<string, { summary: string, value: T }>

const REQUEST_ID = { 'x-request-id': { type: 'string', description: 'The request id (the caller\'s X-Request-Id when it is 1-64 characters of [A-Za-z0-9._:-])' } }
const SERVER_TIMING = { 'server-timing': { type: 'string', description: 'queue;dur=<ms waiting for a slot>, sandbox;dur=<ms in the sandbox>' } }
const RETRY_AFTER = { 'retry-after': { type: 'string', description: 'Seconds to wait before retrying' } }

const RATE_LIMIT_HEADERS = {
  'ratelimit-limit': { type: 'string', description: 'Requests this caller may send per window (when rate limiting is on)' },
  'ratelimit-remaining': { type: 'string', description: 'Requests left in this window' },
  'ratelimit-reset': { type: 'string', description: 'Seconds until the window ends' }
}

const id = '3f1e9a4c-6b2d-4c1e-9f0a-2d7b8c5e1a90'
const ran = { stdout: '', stderr: '', backend: 'nsjail', requestId: id } as const

/** A reply of one status: what it means, its headers, and a reference to its shape with examples
 *  (in this form, as @fastify/swagger keeps nothing written beside a $ref). */
export function reply<T> (shape: Parameters<typeof ref>[0], description: string, examples: Example<T> = {}, headers: Record<string, unknown> = {}) {
  const media = { schema: ref(shape), ...(Object.keys(examples).length > 0 ? { examples } : {}) }
  return { description, ...(Object.keys(headers).length > 0 ? { headers } : {}), content: { 'application/json': media } }
}

/** ErrorReply for one status, with its description, headers and examples. */
function errorReply (description: string, examples: Example<ErrorReply>, headers: Record<string, unknown> = {}) {
  return reply(ErrorReply, description, examples, { ...REQUEST_ID, ...headers })
}

/** Named examples of the request body, which the docs page's "Try it out" offers. */
export const REQUEST_EXAMPLES: Example<ExecuteRequest> = {
  hello: { summary: 'Hello: a dict, and a line on stdout', value: { script: 'def main():\n    print("Hello from main!")\n    return {"msg": "success", "value": 42}\n' } },
  pandas: { summary: 'A pandas group-by', value: { script: 'import pandas as pd\ndef main():\n    df = pd.DataFrame({"city": ["Oslo", "Lima", "Oslo"], "temp": [3, 19, 5]})\n    return df.groupby("city")["temp"].mean().to_dict()\n' } },
  raises: { summary: 'main() raises: 422 MAIN_RAISED with the traceback', value: { script: 'def main():\n    return 1 / 0\n' } },
  input: { summary: 'input: main(input) gets a JSON value', value: { script: 'def main(data):\n    return {"total": sum(data["values"])}\n', input: { values: [1, 2, 3] } } },
  stdin: { summary: 'stdin: what input() reads', value: { script: 'def main():\n    name = input()\n    return f"Hello, {name}!"\n', stdin: 'Ada\n' } },
  files: {
    summary: 'A CSV in; a chart and a CSV out',
    value: {
      script: 'import pandas as pd\nimport matplotlib.pyplot as plt\n\ndef main():\n    df = pd.read_csv("sales.csv")\n    df.plot.bar(x="month", y="units")\n    df.describe().to_csv("output/summary.csv")\n    return {"total": int(df["units"].sum())}\n',
      files: [{ path: 'sales.csv', content: 'month,units\nJan,3\nFeb,5\nMar,4\n' }]
    }
  },
  limits: { summary: 'Limits of its own: 422 TIME_LIMIT_EXCEEDED after 0.5 s', value: { script: 'import time\ndef main():\n    time.sleep(1)\n    return "done"\n', limits: { wallMs: 500 } } }
}

/** The document with REQUEST_EXAMPLES beside the request body's schema: a route's body schema
 *  can only be a reference to ExecuteRequest (@fastify/swagger keeps nothing beside a $ref). */
export function withRequestExamples<T extends { paths?: unknown }> (document: T): T {
  const paths = document.paths as Record<string, Record<string, { requestBody?: { content?: Record<string, { examples?: unknown }> } }>>
  for (const path of ['/execute', '/sessions/{id}/execute']) {
    const media = paths[path]?.post?.requestBody?.content?.['application/json']
    if (media !== undefined) media.examples = REQUEST_EXAMPLES
  }
  return document
}

export const executeResponses = {
  200: reply<ExecuteResult>(ExecuteResult, 'main() returned JSON: its value, everything the script printed, and the backend that ran it',
    {
      hello: { summary: 'A dict, and a line on stdout', value: { result: { msg: 'success', value: 42 }, stdout: 'Hello from main!\n', stderr: '', backend: 'nsjail' } },
      pandas: { summary: 'A pandas group-by as a dict', value: { result: { Lima: 19, Oslo: 4 }, stdout: '', stderr: '', backend: 'nsjail' } },
      files: {
        summary: 'A file left under output/ and an open figure come back',
        value: {
          result: { total: 12 },
          files: [
            { path: 'figures/1.png', size: 14203, mediaType: 'image/png', encoding: 'base64', content: 'iVBORw0KGgoAAAANSUhEUgAAAoAAAAHgCAYAAAA10dzk...' },
            { path: 'summary.csv', size: 158, mediaType: 'text/csv', encoding: 'utf8', content: ',units\ncount,3.0\nmean,4.0\n...' }
          ],
          filesLeftOut: [{ path: 'env', reason: 'a symbolic link (not followed)' }],
          stdout: '',
          stderr: '',
          backend: 'nsjail'
        }
      },
      truncated: { summary: 'Output over LIMIT_OUTPUT_BYTES is cut and flagged', value: { result: null, stdout: 'xxxxxxxx...', stderr: '', stdoutTruncated: true, backend: 'nsjail' } }
    }, { ...REQUEST_ID, ...SERVER_TIMING, ...RATE_LIMIT_HEADERS }),
  400: errorReply('The body is not JSON, or not a valid request (an unknown field, a file path that is not a relative normalised path, a file over its limits: the message names it)', {
    INVALID_JSON: { summary: 'The body is not JSON', value: { statusCode: 400, error: 'Bad Request', code: 'INVALID_JSON', message: 'the body is not valid JSON: Body is not valid JSON but content-type is set to \'application/json\'', requestId: id } },
    INVALID_REQUEST: { summary: 'An unknown field', value: { statusCode: 400, error: 'Bad Request', code: 'INVALID_REQUEST', message: 'unknown field "code" in body; the fields are "script", "input", "stdin", "files", "limits"', requestId: id } },
    missing: { summary: 'No script', value: { statusCode: 400, error: 'Bad Request', code: 'INVALID_REQUEST', message: 'body must have the field "script"', requestId: id } },
    path: { summary: 'A file path that leaves the working directory', value: { statusCode: 400, error: 'Bad Request', code: 'INVALID_REQUEST', message: 'body.files[0].path "../etc/passwd" is not normalised (an empty, "." or ".." part)', requestId: id } },
    limit: { summary: 'A limit above its ceiling', value: { statusCode: 400, error: 'Bad Request', code: 'INVALID_REQUEST', message: 'body.limits.memoryMb is 4096, above this server\'s ceiling (LIMIT_MEMORY_MB_MAX) of 512', requestId: id } }
  }),
  401: errorReply('API keys are on (API_KEYS_FILE) and the request has no valid `Authorization: Bearer <key>`; nothing ran', {
    missing: { summary: 'No key', value: { statusCode: 401, error: 'Unauthorized', code: 'UNAUTHORIZED', message: 'this server needs an API key: send Authorization: Bearer <key>', requestId: id } },
    UNAUTHORIZED: { summary: 'A wrong or revoked key', value: { statusCode: 401, error: 'Unauthorized', code: 'UNAUTHORIZED', message: 'the API key is not valid (unknown or revoked)', requestId: id } }
  }, { 'www-authenticate': { type: 'string', description: 'Bearer realm="pysandbox" (RFC 6750), with error="invalid_token" for a wrong key' } }),
  413: errorReply('The body is over LIMIT_BODY_BYTES; refused before it is read whole', {
    PAYLOAD_TOO_LARGE: { summary: 'Over 12 MiB', value: { statusCode: 413, error: 'Payload Too Large', code: 'PAYLOAD_TOO_LARGE', message: 'the body is larger than the limit of 12582912 bytes', requestId: id } }
  }),
  415: errorReply('The content type is not application/json', {
    UNSUPPORTED_MEDIA_TYPE: { summary: 'text/plain', value: { statusCode: 415, error: 'Unsupported Media Type', code: 'UNSUPPORTED_MEDIA_TYPE', message: 'content type "text/plain" is not supported; send application/json', requestId: id } }
  }),
  422: errorReply('The script ran and failed: it does not compile, has no callable main(), raised, returned something that is not JSON or too much, left too many files, or a limit ended it. stdout, stderr and backend are always present', {
    SYNTAX_ERROR: { summary: 'The script does not compile', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'SYNTAX_ERROR', message: 'line 1, column 10: invalid syntax', ...ran, line: 1, column: 10 } },
    MISSING_MAIN: { summary: 'No main()', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'MISSING_MAIN', message: 'the script defines no function main()', ...ran } },
    MAIN_NOT_CALLABLE: { summary: 'main is not a function', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'MAIN_NOT_CALLABLE', message: 'main is a int, not a function', ...ran } },
    MAIN_SIGNATURE: { summary: 'input sent, but main() takes none', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'MAIN_SIGNATURE', message: 'main() cannot be called with the input as its one argument: main() takes 0 positional arguments but 1 was given', ...ran, signature: 'main()' } },
    MAIN_RAISED: { summary: 'main() raised', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'MAIN_RAISED', message: 'ZeroDivisionError: division by zero', ...ran, exception: 'ZeroDivisionError', traceback: 'Traceback (most recent call last):\n  File "<script>", line 2, in main\n    return 1 / 0\n           ~~^~~\nZeroDivisionError: division by zero\n' } },
    RESULT_NOT_JSON: { summary: 'A numpy scalar is not JSON', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'RESULT_NOT_JSON', message: 'main() returned something that is not JSON: result[\'total\'] is a numpy.int64, which is not JSON; convert it with x.item() (or int(x), float(x), bool(x))', ...ran } },
    RESULT_TOO_LARGE: { summary: 'Over LIMIT_RESULT_BYTES', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'RESULT_TOO_LARGE', message: 'main() returned 9437207 bytes of JSON; the limit is 8388608', ...ran } },
    OUTPUT_TOO_LARGE: { summary: 'Too many files under output/', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'OUTPUT_TOO_LARGE', message: 'the script left more than 100 files under output/ (figures included); the limits are 100 files (LIMIT_FILES_OUT) and 8388608 bytes (LIMIT_FILES_OUT_BYTES)', ...ran, outputFiles: 101, outputBytes: 0 } },
    TIME_LIMIT_EXCEEDED: { summary: 'An infinite loop', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'TIME_LIMIT_EXCEEDED', message: 'the script ran longer than the wall-time limit of 10000 ms', ...ran } },
    MEMORY_LIMIT_EXCEEDED: { summary: 'A 1 GiB bytearray', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'MEMORY_LIMIT_EXCEEDED', message: 'the script used more than 512 MiB of memory', ...ran } },
    CRASHED: { summary: 'Killed by a signal', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'CRASHED', message: 'the script was killed by SIGSEGV', ...ran, signal: 'SIGSEGV' } },
    exited: { summary: 'Exited without a result', value: { statusCode: 422, error: 'Unprocessable Entity', code: 'CRASHED', message: 'the script exited with status 3 before returning a result', ...ran, exitCode: 3 } }
  }, SERVER_TIMING),
  429: errorReply('This caller (its API key, else its address) sent more than its rate in the window, or already has its share of running and waiting executions', {
    RATE_LIMITED: { summary: 'Too many requests', value: { statusCode: 429, error: 'Too Many Requests', code: 'RATE_LIMITED', message: 'too many requests from this client: at most 3000 per 60000 ms; retry in 12 seconds', requestId: id } },
    CONCURRENCY_LIMITED: { summary: 'Its share of slots and queue is taken', value: { statusCode: 429, error: 'Too Many Requests', code: 'CONCURRENCY_LIMITED', message: 'this caller already has its share: 1 running and 2 waiting; retry when one has finished', requestId: id } }
  }, { ...RETRY_AFTER, ...RATE_LIMIT_HEADERS }),
  503: errorReply('Not the script\'s doing: every slot is taken and the queue is full (or the wait would be long), the server is shutting down, or no permitted backend passes its probe. Retry after Retry-After', {
    BUSY: { summary: 'Every slot and the queue are full', value: { statusCode: 503, error: 'Service Unavailable', code: 'BUSY', message: 'every execution slot is taken and the wait queue is full; retry later', requestId: id } },
    SHUTTING_DOWN: { summary: 'A rollout or scale-in: another instance answers a retry', value: { statusCode: 503, error: 'Service Unavailable', code: 'SHUTTING_DOWN', message: 'the server is shutting down: it takes no new runs; retry (another instance answers)', requestId: id } },
    SANDBOX_UNAVAILABLE: { summary: 'No backend passes its probe', value: { statusCode: 503, error: 'Service Unavailable', code: 'SANDBOX_UNAVAILABLE', message: 'no permitted sandbox backend passed its probe: nothing is executed (see /readyz)', requestId: id } }
  }, RETRY_AFTER),
  '4xx': errorReply('Another client error, in the same shape (a wrong path or method elsewhere)', {
    NOT_FOUND: { summary: 'A wrong path', value: { statusCode: 404, error: 'Not Found', code: 'NOT_FOUND', message: 'no route GET /nope', requestId: id } },
    METHOD_NOT_ALLOWED: { summary: 'A wrong method (with Allow)', value: { statusCode: 405, error: 'Method Not Allowed', code: 'METHOD_NOT_ALLOWED', message: 'method GET is not allowed on /execute; allowed: POST', requestId: id } }
  }),
  '5xx': errorReply('Our fault: an opaque message with the request id; the details are in the log only', {
    INTERNAL_ERROR: { summary: 'An internal error', value: { statusCode: 500, error: 'Internal Server Error', code: 'INTERNAL_ERROR', message: `internal error; quote the request id ${id} when reporting it`, requestId: id } }
  })
}

const sessionId = 'a1b2c3d4.Qm9vdGggYm9vdGggYm9vdGggYm9vdGgg'
const session = {
  id: sessionId,
  instance: 'a1b2c3d4',
  backend: 'nsjail',
  createdAt: '2026-11-30T15:00:00.000Z',
  lastCallAt: null,
  expiresAt: '2026-11-30T15:10:00.000Z',
  idleTimeoutMs: 600000,
  lifetimeMs: 3600000,
  calls: 0,
  running: false,
  memoryMiB: 0,
  memoryLimitMiB: 256
} as const

const missing = errorReply('No such session for this caller on this instance (another caller\'s session is not found either); an id of another instance is named as such', {
  SESSION_NOT_FOUND: { summary: 'Unknown, or another caller\'s', value: { statusCode: 404, error: 'Not Found', code: 'SESSION_NOT_FOUND', message: `no session ${sessionId} for this caller on instance a1b2c3d4`, requestId: id } },
  elsewhere: { summary: 'Routed to the wrong instance', value: { statusCode: 404, error: 'Not Found', code: 'SESSION_NOT_FOUND', message: `session ${sessionId} is not on this instance: its id says it lives on instance a1b2c3d4; this is instance e5f6a7b8. A session lives on the instance that opened it: route its calls there (README "Sessions behind a load balancer")`, requestId: id } }
})
const gone = errorReply('The session has ended (deleted, idle, past its lifetime, or a call ended it) and cannot be resumed', {
  SESSION_ENDED: { summary: 'Idle too long', value: { statusCode: 410, error: 'Gone', code: 'SESSION_ENDED', message: `session ${sessionId} ended at 2026-11-30T15:10:00.000Z: it had no call for 600000 ms (SESSION_IDLE_MS); open a new one`, requestId: id, endedBy: 'CLOSED' } }
})
const sessionsRefused = {
  403: errorReply('This caller may open no session: its share is 0, or its key\'s ceilings are below a session\'s memory or processes', {
    SESSIONS_FORBIDDEN: { summary: 'A key held below a session', value: { statusCode: 403, error: 'Forbidden', code: 'SESSIONS_FORBIDDEN', message: 'this caller may open no session: its API key\'s memoryMb ceiling (128) is below a session\'s memory (SESSION_MEMORY_MB, 256)', requestId: id } }
  }),
  429: errorReply('This caller already has its most sessions open (or sent more than its rate)', {
    SESSIONS_LIMITED: { summary: 'Its sessions are all open', value: { statusCode: 429, error: 'Too Many Requests', code: 'SESSIONS_LIMITED', message: 'this caller already has 1 session(s) open, its most (SESSIONS_PER_CALLER, or its key\'s sessions=); DELETE one first', requestId: id } }
  }, RATE_LIMIT_HEADERS),
  503: errorReply('Not the caller\'s doing: this instance has SESSIONS_MAX open, opens none, or is shutting down', {
    SESSIONS_FULL: { summary: 'The instance is full', value: { statusCode: 503, error: 'Service Unavailable', code: 'SESSIONS_FULL', message: 'this instance already has 2 sessions open (SESSIONS_MAX); retry later', requestId: id } },
    SESSIONS_UNAVAILABLE: { summary: 'Sessions are off', value: { statusCode: 503, error: 'Service Unavailable', code: 'SESSIONS_UNAVAILABLE', message: 'this server opens no sessions: SESSIONS_MAX is 0', requestId: id } }
  })
}

export const sessionResponses = {
  create: { 201: reply(SessionInfo, 'Opened: its id, the instance that holds it, and when it ends', { opened: { summary: 'A new session', value: session } }, REQUEST_ID), 401: executeResponses[401], ...sessionsRefused, '4xx': executeResponses['4xx'], '5xx': executeResponses['5xx'] },
  get: { 200: reply(SessionInfo, 'The session', { described: { summary: 'After three calls', value: { ...session, calls: 3, lastCallAt: '2026-11-30T15:01:00.000Z', expiresAt: '2026-11-30T15:11:00.000Z', memoryMiB: 61 } } }, REQUEST_ID), 401: executeResponses[401], 404: missing, 410: gone, '4xx': executeResponses['4xx'], '5xx': executeResponses['5xx'] },
  delete: { 204: { description: 'Ended: its processes, files and memory are gone' }, 401: executeResponses[401], 404: missing, 410: gone, '4xx': executeResponses['4xx'], '5xx': executeResponses['5xx'] },
  execute: {
    ...executeResponses,
    404: missing,
    409: errorReply('A call of this session is still running: one at a time', {
      SESSION_BUSY: { summary: 'Two calls at once', value: { statusCode: 409, error: 'Conflict', code: 'SESSION_BUSY', message: `session ${sessionId} is running a call: a session runs one call at a time; retry when it has answered`, requestId: id } }
    }, RETRY_AFTER),
    410: gone
  }
}
