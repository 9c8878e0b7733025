// Every code an error reply can carry, in one list: the TypeScript types, the OpenAPI enum, the
// result channel's schema and the harness's codes (checked by test/unit/harness-agreement.test.ts)
// all come from here. A new code is added here first.

/** The request's fault (4xx): nothing ran. */
export const REQUEST_ERROR_CODES = [
  'INVALID_JSON', 'INVALID_REQUEST', 'UNAUTHORIZED', 'NOT_FOUND', 'METHOD_NOT_ALLOWED', 'REQUEST_TIMEOUT',
  'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'RATE_LIMITED', 'CONCURRENCY_LIMITED', 'HEADERS_TOO_LARGE',
  'CROSS_SITE_REQUEST', 'SESSION_NOT_FOUND', 'SESSION_ENDED', 'SESSION_BUSY', 'SESSIONS_FORBIDDEN', 'SESSIONS_LIMITED'
] as const

/** What harness/run.py reports on the result channel (its CODES). */
export const HARNESS_ERROR_CODES = [
  'SYNTAX_ERROR', 'MISSING_MAIN', 'MAIN_NOT_CALLABLE', 'MAIN_SIGNATURE', 'MAIN_RAISED',
  'RESULT_NOT_JSON', 'RESULT_TOO_LARGE', 'OUTPUT_TOO_LARGE', 'TIME_LIMIT_EXCEEDED', 'MEMORY_LIMIT_EXCEEDED'
] as const

/** The script ran and failed (422): the harness's codes, and a run that ended without a report. */
export const SCRIPT_ERROR_CODES = [...HARNESS_ERROR_CODES, 'CRASHED'] as const

/** Ours (5xx): the script is not to blame. */
export const SERVICE_ERROR_CODES = ['BUSY', 'SHUTTING_DOWN', 'SANDBOX_UNAVAILABLE', 'SESSIONS_FULL', 'SESSIONS_UNAVAILABLE', 'INTERNAL_ERROR'] as const

export const ERROR_CODES = [...REQUEST_ERROR_CODES, ...SCRIPT_ERROR_CODES, ...SERVICE_ERROR_CODES] as const

export type RequestErrorCode = typeof REQUEST_ERROR_CODES[number]
export type ScriptErrorCode = typeof SCRIPT_ERROR_CODES[number]
export type ErrorCode = typeof ERROR_CODES[number]

/** Each code's status and meaning, for the OpenAPI document. */
export const ERRORS: Readonly<Record<ErrorCode, { status: number, meaning: string }>> = {
  INVALID_JSON: { status: 400, meaning: 'the body is not valid JSON (or has a duplicate key, or invalid UTF-8)' },
  INVALID_REQUEST: { status: 400, meaning: 'the body is JSON but not a valid request; the message names the field' },
  UNAUTHORIZED: { status: 401, meaning: 'API keys are required (API_KEYS_FILE) and the request has no valid `Authorization: Bearer <key>`; nothing ran' },
  NOT_FOUND: { status: 404, meaning: 'no such route' },
  METHOD_NOT_ALLOWED: { status: 405, meaning: 'the route exists for other methods (listed in Allow)' },
  REQUEST_TIMEOUT: { status: 408, meaning: 'the request was not received in full within REQUEST_TIMEOUT_MS' },
  PAYLOAD_TOO_LARGE: { status: 413, meaning: 'the body is larger than LIMIT_BODY_BYTES' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, meaning: 'the content type is not application/json' },
  RATE_LIMITED: { status: 429, meaning: 'too many requests from this caller (its API key, else its address) in the window; retry after Retry-After' },
  CONCURRENCY_LIMITED: { status: 429, meaning: 'this caller already has its share of running and waiting executions (TENANT_SLOTS, TENANT_QUEUE), or more bytes of replies it has not read than UNREAD_REPLY_BYTES_PER_CALLER; retry after Retry-After' },
  HEADERS_TOO_LARGE: { status: 431, meaning: 'the request headers are larger than 16 KiB' },
  CROSS_SITE_REQUEST: { status: 403, meaning: 'a browser sent this request from another site\'s page (its Sec-Fetch-Site, or an Origin other than this server\'s): this API serves no other site\'s pages; nothing ran' },
  SESSION_NOT_FOUND: { status: 404, meaning: 'no session with this id on this instance for this caller (another caller\'s session is not found either); when the id names another instance, the message says which: route a session\'s calls to the instance that opened it' },
  SESSION_ENDED: { status: 410, meaning: 'the session has ended (deleted, idle for SESSION_IDLE_MS, past SESSION_LIFETIME_MS, or a call ended it: `endedBy` gives the code) and cannot be resumed; open a new one' },
  SESSION_BUSY: { status: 409, meaning: 'a call of this session is still running: a session runs one call at a time; retry after Retry-After' },
  SESSIONS_FORBIDDEN: { status: 403, meaning: 'this caller may open no session: its share of sessions is 0 (SESSIONS_PER_CALLER, or its key\'s `sessions=`), or its key\'s `memoryMb` or `processes` ceiling is below a session\'s (SESSION_MEMORY_MB, LIMIT_PROCESSES); a retry does not help' },
  SESSIONS_LIMITED: { status: 429, meaning: 'this caller (its API key, else its address) already has SESSIONS_PER_CALLER sessions open (a key may have its own: `sessions=`); end one first' },
  SYNTAX_ERROR: { status: 422, meaning: 'the script does not compile (line and column given)' },
  MISSING_MAIN: { status: 422, meaning: 'the script defines no main' },
  MAIN_NOT_CALLABLE: { status: 422, meaning: 'main is not a function' },
  MAIN_SIGNATURE: { status: 422, meaning: 'input was sent, and main cannot take it as its one argument (the signature is given)' },
  MAIN_RAISED: { status: 422, meaning: 'the script raised (exception and traceback given)' },
  RESULT_NOT_JSON: { status: 422, meaning: 'main() returned something that is not JSON' },
  RESULT_TOO_LARGE: { status: 422, meaning: 'main() returned more than LIMIT_RESULT_BYTES of JSON' },
  OUTPUT_TOO_LARGE: { status: 422, meaning: 'the script left more files (figures included) or bytes under output/ than LIMIT_FILES_OUT or LIMIT_FILES_OUT_BYTES (outputFiles and outputBytes given)' },
  TIME_LIMIT_EXCEEDED: { status: 422, meaning: 'the script ran past LIMIT_WALL_MS or used LIMIT_CPU_S of CPU' },
  MEMORY_LIMIT_EXCEEDED: { status: 422, meaning: 'the script used more than LIMIT_MEMORY_MB' },
  CRASHED: { status: 422, meaning: 'the script\'s process ended without a result (a signal or an exit)' },
  BUSY: { status: 503, meaning: 'every execution slot is taken and the queue is full (or the expected wait is over QUEUE_EXPECTED_WAIT_MS, or the server holds too many unread replies); nothing ran; retry after Retry-After' },
  SHUTTING_DOWN: { status: 503, meaning: 'the server is shutting down (a rollout or a scale-in): nothing new is run, and a run still going when SHUTDOWN_GRACE_MS ended was stopped; not the script\'s fault; retry after Retry-After (another instance answers)' },
  SANDBOX_UNAVAILABLE: { status: 503, meaning: 'no permitted sandbox backend passes its probe; nothing is executed' },
  SESSIONS_FULL: { status: 503, meaning: 'this instance already has SESSIONS_MAX sessions open; retry later, or on another instance' },
  SESSIONS_UNAVAILABLE: { status: 503, meaning: 'this server opens no sessions: SESSIONS_MAX is 0, or its backend hosts none (only nsjail does); or a session\'s sandbox could not be started right now' },
  INTERNAL_ERROR: { status: 500, meaning: 'our fault; quote the request id' }
}

export function isErrorCode (code: string): code is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(code)
}
