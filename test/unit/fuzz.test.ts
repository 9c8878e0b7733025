// Property-based fuzzing of the request layer: whatever arrives (any JSON, any bytes, any
// content type, any method and path), the reply is a well-formed error or a success, never a
// 5xx other than BUSY/SANDBOX_UNAVAILABLE, and the server keeps answering.
import t from 'tap'
import fc from 'fast-check'
import { buildApp } from '../../src/app.js'
import type { SandboxBackend } from '../../src/backends/backend.js'
import { loadConfig } from '../../src/config.js'
import { success } from '../helpers/fake-backend.js'

const echo: SandboxBackend = {
  name: 'nsjail',
  probe: async () => ({ ok: true, features: {} }),
  run: async request => success(request.script.length)
}

const ALLOWED_5XX = new Set(['BUSY', 'SANDBOX_UNAVAILABLE'])

t.test('no input makes the server fail or stop answering', async t => {
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0', LIMIT_BODY_BYTES: '4096' }), backends: [echo] })
  t.teardown(async () => await app.close())

  const body = fc.oneof(
    fc.json(),
    fc.jsonValue().map(v => JSON.stringify({ script: v })),
    fc.dictionary(fc.string(), fc.jsonValue()).map(v => JSON.stringify(v)),
    fc.string(),
    fc.uint8Array({ maxLength: 8192 }).map(bytes => Buffer.from(bytes)),
    fc.nat({ max: 20_000 }).map(n => '['.repeat(n))
  )
  const contentType = fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data', '', 'application/json; charset=latin1')
  const method = fc.constantFrom('POST', 'POST', 'POST', 'GET', 'PUT', 'DELETE', 'PATCH')
  const url = fc.constantFrom('/execute', '/execute?x=1', '/readyz', '/nope', '/execute/', '//execute')

  await fc.assert(fc.asyncProperty(body, contentType, method, url, async (payload, type, verb, path) => {
    const reply = await app.inject({
      method: verb as 'POST',
      url: path,
      payload: verb === 'GET' ? undefined : payload,
      headers: type === '' ? {} : { 'content-type': type }
    })
    const parsed = reply.json()
    if (reply.statusCode >= 500) return ALLOWED_5XX.has(parsed.code)
    if (reply.statusCode >= 400) return typeof parsed.code === 'string' && typeof parsed.message === 'string' && parsed.statusCode === reply.statusCode
    return reply.statusCode === 200
  }), { numRuns: 1500 })

  const hello = await app.inject({ method: 'POST', url: '/execute', payload: { script: 'def main(): pass' } })
  t.equal(hello.statusCode, 200, 'still answering')
})
