// Client errors: every 4xx row of the README's error table, and nothing executed (the app with fake backends).
import { PassThrough } from 'node:stream'
import t from 'tap'
import type { InjectOptions } from 'fastify'
import { build } from '../helpers/app.js'
import { FakeBackend } from '../helpers/fake-backend.js'

interface ClientErrorCase {
  name: string
  request: InjectOptions
  status: number
  code: string
  message: RegExp
  headers?: Record<string, string>
}

const json = { 'content-type': 'application/json' }
const clientErrors: ClientErrorCase[] = [
  { name: 'invalid JSON', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": ' }, status: 400, code: 'INVALID_JSON', message: /not valid JSON/ },
  { name: 'empty body', request: { method: 'POST', url: '/execute', headers: json, payload: '' }, status: 400, code: 'INVALID_JSON', message: /the body is empty/ },
  { name: 'a __proto__ key is an unknown field, not a prototype', request: { method: 'POST', url: '/execute', headers: json, payload: '{"__proto__": {"x": 1}, "script": "x"}' }, status: 400, code: 'INVALID_REQUEST', message: /unknown field "__proto__"/ },
  { name: 'script missing', request: { method: 'POST', url: '/execute', headers: json, payload: '{}' }, status: 400, code: 'INVALID_REQUEST', message: /^body must have the field "script"$/ },
  { name: 'script a number', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": 1}' }, status: 400, code: 'INVALID_REQUEST', message: /^body\.script must be string$/ },
  { name: 'script null', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": null}' }, status: 400, code: 'INVALID_REQUEST', message: /^body\.script must be string$/ },
  { name: 'script an empty string', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": ""}' }, status: 400, code: 'INVALID_REQUEST', message: /^body\.script must not be empty$/ },
  { name: 'an unknown field beside script', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": "x", "timeout": 5}' }, status: 400, code: 'INVALID_REQUEST', message: /unknown field "timeout"/ },
  { name: 'an unknown field is named with the body\'s fields', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": "x", "code": "y"}' }, status: 400, code: 'INVALID_REQUEST', message: /^unknown field "code" in body; the fields are "script", "input", "stdin", "files", "limits"$/ },
  { name: 'an unknown field in limits is named with the limits\' fields', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": "x", "limits": {"timeout": 5}}' }, status: 400, code: 'INVALID_REQUEST', message: /^unknown field "timeout" in body\.limits; the fields are "wallMs", "cpuSeconds", "memoryMb", "processes", "outputBytes"$/ },
  { name: 'an unknown field in a file is named with a file\'s fields', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": "x", "files": [{"path": "a", "content": "", "mode": 1}]}' }, status: 400, code: 'INVALID_REQUEST', message: /^unknown field "mode" in body\.files\.0; the fields are "path", "content", "encoding"$/ },
  { name: 'a limit below its minimum', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": "x", "limits": {"wallMs": 5}}' }, status: 400, code: 'INVALID_REQUEST', message: /^body\.limits\.wallMs must be at least 100$/ },
  { name: 'a limit above the server\'s ceiling names the ceiling', request: { method: 'POST', url: '/execute', headers: json, payload: '{"script": "x", "limits": {"memoryMb": 1000000}}' }, status: 400, code: 'INVALID_REQUEST', message: /^body\.limits\.memoryMb is 1000000, above this server's ceiling \(LIMIT_MEMORY_MB_MAX\) of \d+$/ },
  { name: 'a typo: the unknown field is named, not only the missing one', request: { method: 'POST', url: '/execute', headers: json, payload: '{"scirpt": "x"}' }, status: 400, code: 'INVALID_REQUEST', message: /unknown field "scirpt"/ },
  { name: 'an array body', request: { method: 'POST', url: '/execute', headers: json, payload: '[{"script": "x"}]' }, status: 400, code: 'INVALID_REQUEST', message: /^body must be object$/ },
  { name: 'a string body', request: { method: 'POST', url: '/execute', headers: json, payload: '"x"' }, status: 400, code: 'INVALID_REQUEST', message: /^body must be object$/ },
  { name: 'a null body', request: { method: 'POST', url: '/execute', headers: json, payload: 'null' }, status: 400, code: 'INVALID_REQUEST', message: /^body must be object$/ },
  { name: 'no body and no content type', request: { method: 'POST', url: '/execute' }, status: 400, code: 'INVALID_REQUEST', message: /^body must be object$/ },
  { name: 'a body shorter than its Content-Length', request: { method: 'POST', url: '/execute', headers: { ...json, 'content-length': '3' }, payload: '{"script": "x"}' }, status: 400, code: 'INVALID_REQUEST', message: /Content-Length/ },
  { name: 'an unknown path', request: { method: 'GET', url: '/nope' }, status: 404, code: 'NOT_FOUND', message: /^no route GET \/nope$/ },
  { name: 'an unknown path with a query', request: { method: 'POST', url: '/run?x=1' }, status: 404, code: 'NOT_FOUND', message: /^no route POST \/run$/ },
  { name: 'GET /execute', request: { method: 'GET', url: '/execute' }, status: 405, code: 'METHOD_NOT_ALLOWED', message: /method GET is not allowed on \/execute; allowed: POST/, headers: { allow: 'POST' } },
  { name: 'PUT /execute with a query', request: { method: 'PUT', url: '/execute?x=1', headers: json, payload: '{}' }, status: 405, code: 'METHOD_NOT_ALLOWED', message: /on \/execute;/, headers: { allow: 'POST' } },
  { name: 'DELETE /healthz', request: { method: 'DELETE', url: '/healthz' }, status: 405, code: 'METHOD_NOT_ALLOWED', message: /allowed: GET, HEAD/, headers: { allow: 'GET, HEAD' } },
  { name: 'POST /readyz', request: { method: 'POST', url: '/readyz', headers: json, payload: '{}' }, status: 405, code: 'METHOD_NOT_ALLOWED', message: /readyz/, headers: { allow: 'GET, HEAD' } },
  { name: 'a body over LIMIT_BODY_BYTES', request: { method: 'POST', url: '/execute', headers: json, payload: JSON.stringify({ script: 'x'.repeat(2000) }) }, status: 413, code: 'PAYLOAD_TOO_LARGE', message: /limit of 1024 bytes/ },
  { name: 'text/plain', request: { method: 'POST', url: '/execute', headers: { 'content-type': 'text/plain' }, payload: '{"script": "x"}' }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: /content type "text\/plain" is not supported/ },
  { name: 'a form', request: { method: 'POST', url: '/execute', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'script=x' }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: /x-www-form-urlencoded/ },
  { name: 'a body without a content type', request: { method: 'POST', url: '/execute', payload: '{"script": "x"}' }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: /content type "none" is not supported/ }
]

t.test('client errors: status, code, message, Fastify\'s shape, a request id, and nothing executed', async t => {
  const fake = new FakeBackend('nsjail')
  const { app } = await build(t, { env: { LIMIT_BODY_BYTES: '1024' }, backends: [fake] })
  for (const { name, request, status, code, message, headers = {} } of clientErrors) {
    const reply = await app.inject(request)
    t.equal(reply.statusCode, status, `${name}: status`)
    const body = reply.json<Record<string, unknown>>()
    t.match(body, { statusCode: status, code, message }, `${name}: body`)
    t.equal(body.error, { 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed', 413: 'Payload Too Large', 415: 'Unsupported Media Type' }[status], `${name}: reason phrase`)
    t.equal(body.requestId, reply.headers['x-request-id'], `${name}: request id`)
    t.match(reply.headers['content-type'], /^application\/json/, `${name}: JSON`)
    for (const [header, value] of Object.entries(headers)) t.equal(reply.headers[header], value, `${name}: ${header}`)
  }
  t.equal(fake.runs.length, 0, 'no client error reached the sandbox')
})

t.test('413 is answered before a too-large body is read whole', async t => {
  const { app } = await build(t, { env: { LIMIT_BODY_BYTES: '1024' } })
  const body = new PassThrough()
  body.write('{"script": "')
  // The stream never ends: only a refusal based on Content-Length can answer.
  const reply = await app.inject({ method: 'POST', url: '/execute', headers: { ...json, 'content-length': String(10 * 1024 * 1024) }, payload: body })
  t.equal(reply.statusCode, 413)
  t.equal(reply.json<{ code: string }>().code, 'PAYLOAD_TOO_LARGE')
})
