// The service's errors, made once. Two families: the client's fault (4xx, a precise message)
// and ours (5xx: an opaque message and a request id; the details go to the log only). Each
// status is the one codes.ts gives its code.
import createError from '@fastify/error'
import { ERRORS, type ErrorCode } from './codes.js'

function define (code: ErrorCode, message: string): ReturnType<typeof createError> {
  return createError(code, message, ERRORS[code].status)
}

export const InvalidJsonError = define('INVALID_JSON', 'the body is not valid JSON: %s')
export const InvalidRequestError = define('INVALID_REQUEST', '%s')
export const UnauthorizedError = define('UNAUTHORIZED', '%s')
export const NotFoundError = define('NOT_FOUND', 'no route %s %s')
export const MethodNotAllowedError = define('METHOD_NOT_ALLOWED', 'method %s is not allowed on %s; allowed: %s')
export const PayloadTooLargeError = define('PAYLOAD_TOO_LARGE', 'the body is larger than the limit of %s bytes')
export const UnsupportedMediaTypeError = define('UNSUPPORTED_MEDIA_TYPE', 'content type %s is not supported; send application/json')
export const RateLimitedError = define('RATE_LIMITED', 'too many requests from this client: at most %s per %s; retry in %s')
export const ConcurrencyLimitedError = define('CONCURRENCY_LIMITED', 'this caller already has its share: %s running and %s waiting; retry when one has finished')
export const BusyError = define('BUSY', 'every execution slot is taken and the wait queue is full; retry later')
export const ExpectedWaitError = define('BUSY', 'every execution slot is taken and the wait for one would be about %s s, over the %s ms this server lets a request wait (QUEUE_EXPECTED_WAIT_MS); retry later')
export const ShuttingDownError = define('SHUTTING_DOWN', 'the server is shutting down: %s; retry (another instance answers)')
// Ours, not the script's: the host is short of descriptors, processes or memory to start a
// sandbox for the moment (backends/launch.ts); the errno goes to the log.
export const SandboxStartError = define('BUSY', 'the server cannot start a sandbox right now; nothing ran; retry later')
// Replies a client has not read hold server memory (plugins/connections.ts): the caller's own
// bound is its fault (429), the bound for all callers together is ours (503).
export const UnreadRepliesError = define('CONCURRENCY_LIMITED', 'this caller has %s bytes of replies it has not read, over the %s allowed (UNREAD_REPLY_BYTES_PER_CALLER); read them (or close those connections), then retry')
export const UnreadRepliesBusyError = define('BUSY', 'the server holds too many replies its clients have not read yet; nothing ran; retry later')
export const SandboxUnavailableError = define('SANDBOX_UNAVAILABLE', 'no permitted sandbox backend passed its probe: nothing is executed (see /readyz)')
export const CrossSiteError = define('CROSS_SITE_REQUEST', 'refused: a browser sent this request from another site\'s page (%s); this API serves no other site\'s pages')
export const SessionNotFoundError = define('SESSION_NOT_FOUND', '%s')
export const SessionEndedError = define('SESSION_ENDED', '%s')
export const SessionBusyError = define('SESSION_BUSY', 'session %s is running a call: a session runs one call at a time; retry when it has answered')
export const SessionsForbiddenError = define('SESSIONS_FORBIDDEN', 'this caller may open no session: %s')
export const SessionsLimitedError = define('SESSIONS_LIMITED', 'this caller already has %s session(s) open, its most (SESSIONS_PER_CALLER, or its key\'s sessions=); DELETE one first')
export const SessionsFullError = define('SESSIONS_FULL', 'this instance already has %s sessions open (SESSIONS_MAX); retry later')
export const SessionsUnavailableError = define('SESSIONS_UNAVAILABLE', 'this server opens no sessions: %s')
export const SessionStartError = define('SESSIONS_UNAVAILABLE', 'a session\'s sandbox could not be started right now: nothing was opened; retry later')
export const InternalError = define('INTERNAL_ERROR', 'internal error; quote the request id %s when reporting it')
// Refused by Node before routing (so outside the route's schema): a stalled body, huge headers.
export const RequestTimeoutError = define('REQUEST_TIMEOUT', 'the request was not received in full within REQUEST_TIMEOUT_MS (%s ms)')
export const HeadersTooLargeError = define('HEADERS_TOO_LARGE', 'the request headers are larger than 16 KiB')
// Its client left before its script got a slot: never sent (there is nobody to send it to), only
// logged; 499 as nginx logs a closed client. Not the script's failure, nor ours: not a reply code.
export const ClientClosedError = createError('CLIENT_CLOSED', 'the client closed the connection before its script ran', 499)

/** Seconds a client should wait after BUSY before retrying. */
export const BUSY_RETRY_AFTER_S = 1
