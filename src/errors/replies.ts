// Every error reply's body is made by errorBody(), whoever refuses: the error handler, the
// not-found handler, the route's 422 for a script's failure, and Node's socket-level refusals.
import { randomUUID } from 'node:crypto'
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyError, FastifyInstance } from 'fastify'
import type { ErrorObject } from 'ajv'
import { ExecuteRequest, FileIn, RunLimits } from '../schemas.js'
import { isErrorCode, type ErrorCode } from './codes.js'
import { BUSY_RETRY_AFTER_S, HeadersTooLargeError, InvalidRequestError, PayloadTooLargeError, RequestTimeoutError, UnsupportedMediaTypeError } from './errors.js'

export interface ErrorBody {
  statusCode: number
  error: string
  code: ErrorCode
  message: string
  requestId: string
  [detail: string]: unknown
}

/** The one shape of an error reply: Fastify's fields, our code, the request id, then whatever
 *  helps (a script's output and details). */
export function errorBody (statusCode: number, code: ErrorCode, message: string, requestId: string,
  extra: Record<string, unknown> = {}): ErrorBody {
  return { statusCode, error: String(STATUS_CODES[statusCode]), code, message, requestId, ...extra }
}

/** The fields of the request body's objects, for the message naming an unknown one. */
const fieldsOf = (schema: { properties: object }): string => Object.keys(schema.properties).map(name => `"${name}"`).join(', ')
const EXECUTE_FIELDS = fieldsOf(ExecuteRequest)
const LIMITS_FIELDS = fieldsOf(RunLimits)
const FILE_FIELDS = fieldsOf(FileIn)

/** The objects that refuse unknown fields: the body, its `limits`, and each of its `files`. */
function fieldsAt (path: string): string {
  if (path === '') return EXECUTE_FIELDS
  return path === '/limits' ? LIMITS_FIELDS : FILE_FIELDS
}

/** The refusal of an unknown field `name` of the object at `instancePath` of the body ('',
 *  '/limits', '/files/0'), made by the validator and, before it, by the body parser. */
export function unknownField (name: string, instancePath: string, dataVar = 'body'): FastifyError {
  return new InvalidRequestError(`unknown field "${name}" in ${dataVar}${instancePath.replaceAll('/', '.')}; the fields are ${fieldsAt(instancePath)}`)
}

/** Validation errors in words a user can act on; unknown fields are named. */
export function describeValidation (errors: ErrorObject[], dataVar: string): Error {
  // The validator stops at its first error (allErrors off: app.ts).
  const first = errors[0] as ErrorObject
  const where = `${dataVar}${first.instancePath.replaceAll('/', '.')}`
  const params = first.params as Record<string, unknown>
  // Unknown fields are named by the body parser before the validator runs (json-body.ts): kept
  // for a schema object the parser does not know yet.
  /* c8 ignore next */
  if (first.keyword === 'additionalProperties') return unknownField(String(params.additionalProperty), first.instancePath, dataVar)
  const texts: Record<string, string> = {
    required: `${where} must have the field "${String(params.missingProperty)}"`,
    minLength: `${where} must not be empty`,
    minimum: `${where} must be at least ${String(params.limit)}`,
    type: `${where} must be ${String(params.type)}`
  }
  // Any other keyword (files' maxItems) in ajv's own words.
  return new InvalidRequestError(texts[first.keyword] ?? `${where} ${String(first.message)}`)
}

/** Any error thrown on the way (Fastify's, a plugin's, ours) as the client's error it is, or
 *  undefined when it is ours (a 500). */
export function clientError (error: FastifyError, limits: { bodyBytes: number }, contentType: string | undefined): FastifyError | undefined {
  if (error.validation !== undefined) return error // made by describeValidation
  if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new UnsupportedMediaTypeError(JSON.stringify(contentType ?? 'none'))
  if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new PayloadTooLargeError(limits.bodyBytes)
  if (isErrorCode(error.code)) return error
  if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) return new InvalidRequestError(error.message)
  return undefined
}

/** What Node refuses before a request reaches Fastify (a stalled body, oversized headers,
 *  malformed HTTP), answered in the service's error shape with a request id of its own, which is
 *  logged (Fastify calls this with the instance as `this`); then the connection is closed. */
export function socketErrorHandler (requestTimeoutMs: number): (this: FastifyInstance, error: Error & { code?: string }, socket: Socket) => void {
  return function (error, socket) {
    if (error.code === 'ECONNRESET' || socket.destroyed) return
    const reply: FastifyError = error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? new RequestTimeoutError(requestTimeoutMs)
      : error.code === 'HPE_HEADER_OVERFLOW' ? new HeadersTooLargeError() : new InvalidRequestError('malformed HTTP request')
    const statusCode = reply.statusCode as number // each of the three has its own
    const requestId = randomUUID()
    this.log.info({ requestId, code: reply.code, statusCode }, reply.message)
    const body = JSON.stringify(errorBody(statusCode, reply.code as ErrorCode, reply.message, requestId))
    if (socket.writable) {
      socket.write(`HTTP/1.1 ${statusCode} ${String(STATUS_CODES[statusCode])}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `X-Request-Id: ${requestId}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
    }
    socket.destroy()
  }
}

/** The seconds to wait before a retry of a refusal that a retry may cure (BUSY,
 *  CONCURRENCY_LIMITED, SHUTTING_DOWN, SESSION_BUSY: its own estimate, else BUSY_RETRY_AFTER_S); undefined for any
 *  other error. The Retry-After header of /execute, the retryAfterS of an MCP tool error. */
export function retryAfterOf (error: { code?: string, retryAfterS?: number }): number | undefined {
  if (error.code !== 'BUSY' && error.code !== 'CONCURRENCY_LIMITED' && error.code !== 'SHUTTING_DOWN' && error.code !== 'SESSION_BUSY') return undefined
  return error.retryAfterS ?? BUSY_RETRY_AFTER_S
}
