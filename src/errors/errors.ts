// The service's errors, made once. Two families: the client's fault (4xx, a precise message)
// and ours (5xx: an opaque message and a request id; the details go to the log only).
import createError from '@fastify/error'

export const InvalidJsonError = createError('INVALID_JSON', 'the body is not valid JSON: %s', 400)
export const InvalidRequestError = createError('INVALID_REQUEST', '%s', 400)
export const NotFoundError = createError('NOT_FOUND', 'no route %s %s', 404)
export const MethodNotAllowedError = createError('METHOD_NOT_ALLOWED', 'method %s is not allowed on %s; allowed: %s', 405)
export const PayloadTooLargeError = createError('PAYLOAD_TOO_LARGE', 'the body is larger than the limit of %s bytes', 413)
export const UnsupportedMediaTypeError = createError('UNSUPPORTED_MEDIA_TYPE', 'content type %s is not supported; send application/json', 415)
export const RateLimitedError = createError('RATE_LIMITED', 'too many requests from this client: at most %s per %s; retry in %s', 429)
export const BusyError = createError('BUSY', 'every execution slot is taken and the wait queue is full; retry later', 503)
export const SandboxUnavailableError = createError('SANDBOX_UNAVAILABLE', 'no permitted sandbox backend passed its probe: nothing is executed (see /readyz)', 503)
export const InternalError = createError('INTERNAL_ERROR', 'internal error; quote the request id %s when reporting it', 500)
// Refused by Node before routing (so outside the route's schema): a stalled body, huge headers.
export const RequestTimeoutError = createError('REQUEST_TIMEOUT', 'the request was not received in full within REQUEST_TIMEOUT_MS (%s ms)', 408)
export const HeadersTooLargeError = createError('HEADERS_TOO_LARGE', 'the request headers are larger than 16 KiB', 431)
// Its client left before its script got a slot: never sent (there is nobody to send it to), only
// logged; 499 as nginx logs a closed client. Not the script's failure, nor ours.
export const ClientClosedError = createError('CLIENT_CLOSED', 'the client closed the connection before its script ran', 499)

/** Error codes a reply can carry (the route's response schema enumerates them). */
export const ERROR_CODES = [
  'INVALID_JSON', 'INVALID_REQUEST', 'NOT_FOUND', 'METHOD_NOT_ALLOWED', 'PAYLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE', 'SYNTAX_ERROR', 'MISSING_MAIN', 'MAIN_NOT_CALLABLE', 'MAIN_RAISED',
  'RESULT_NOT_JSON', 'RESULT_TOO_LARGE', 'TIME_LIMIT_EXCEEDED', 'MEMORY_LIMIT_EXCEEDED', 'CRASHED',
  'RATE_LIMITED', 'BUSY', 'SANDBOX_UNAVAILABLE', 'INTERNAL_ERROR'
] as const

/** Seconds a client should wait after BUSY before retrying. */
export const BUSY_RETRY_AFTER_S = 1
