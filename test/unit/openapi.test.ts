// The OpenAPI document is the contract: it must be valid OpenAPI 3, its examples must match its
// own schemas, and real replies of every status must match the schema it gives for that status.
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Ajv2020 as Ajv, type ValidateFunction } from 'ajv/dist/2020.js'
import { Validator } from '@seriousme/openapi-schema-validator'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { newKey } from '../../src/access/keys.js'
import { buildApp } from '../../src/app.js'
import type { SandboxBackend } from '../../src/backends/backend.js'
import { loadConfig } from '../../src/config.js'
import { ERROR_CODES } from '../../src/errors/codes.js'
import { FakeBackend, HeldRun, failingProbe, failure, success } from '../helpers/fake-backend.js'

interface Media { schema: Record<string, unknown>, examples?: Record<string, { value: unknown }> }
interface Response { description: string, headers?: Record<string, unknown>, content?: Record<string, Media> }
interface Document {
  openapi: string
  paths: Record<string, Record<string, { responses: Record<string, Response>, requestBody?: { content: Record<string, Media> }, security?: Array<Record<string, string[]>> }>>
  components?: { schemas?: Record<string, Record<string, unknown>>, securitySchemes?: Record<string, Record<string, unknown>> }
}

async function build (t: Test, env: Record<string, string> = {}, backends: SandboxBackend[] = [new FakeBackend('nsjail')]): Promise<FastifyInstance> {
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0', CONCURRENCY: '4', QUEUE_SIZE: '8', ...env }), backends })
  t.teardown(async () => { await app.close() })
  return app
}

async function documentOf (app: FastifyInstance): Promise<Document> {
  return (await app.inject({ method: 'GET', url: '/openapi.json' })).json<Document>()
}

function post (body: unknown): InjectOptions {
  return { method: 'POST', url: '/execute', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(body) }
}
const HELLO = { script: 'def main():\n    return 42\n' }

// OpenAPI 3.1 Schema Objects are JSON Schema 2020-12 (plus `example`, which Ajv does not know).
const ajv = new Ajv({ allErrors: true, strict: true })
ajv.addKeyword('example')

/** The response the document gives for a status of POST /execute: exact, then 4XX/5XX, then default. */
function documented (doc: Document, status: number): Response | undefined {
  const responses = doc.paths['/execute']?.post?.responses ?? {}
  return responses[String(status)] ?? responses[`${String(status)[0]}XX`] ?? responses.default
}

const validators = new Map<Media, ValidateFunction>()
/** The media's schema, with the document's named schemas (its references into them) beside it. */
function validatorFor (doc: Document, media: Media): ValidateFunction {
  let validate = validators.get(media)
  if (validate === undefined) {
    const local = JSON.parse(JSON.stringify(media.schema).replaceAll('"#/components/schemas/', '"#/$defs/'))
    const named = JSON.parse(JSON.stringify(doc.components?.schemas ?? {}).replaceAll('"#/components/schemas/', '"#/$defs/'))
    validate = ajv.compile({ ...local, $defs: named })
    validators.set(media, validate)
  }
  return validate
}

t.test('GET /openapi.json is a valid OpenAPI 3 document', async t => {
  const doc = await documentOf(await build(t))
  const result = await new Validator().validate(doc as unknown as Record<string, unknown>)
  t.same(result.errors, undefined, 'no validation errors')
  t.equal(result.valid, true)
  t.match(doc.openapi, /^3\.1\./)

  // The validator can fail: a response without its description is refused.
  const broken = structuredClone(doc) as unknown as { paths: { '/execute': { post: { responses: Record<string, { description?: string }> } } } }
  delete broken.paths['/execute'].post.responses['200']?.description
  t.equal((await new Validator().validate(broken as unknown as Record<string, unknown>)).valid, false, 'a broken copy is refused')
})

t.test('/execute documents every status with a description, examples and X-Request-Id', async t => {
  const doc = await documentOf(await build(t))
  const responses = doc.paths['/execute']?.post?.responses ?? {}
  t.same(Object.keys(responses).sort(), ['200', '400', '401', '413', '415', '422', '429', '4XX', '503', '5XX'].sort())
  for (const [status, response] of Object.entries(responses)) {
    t.notMatch(response.description, /^Default Response$/, `${status}: described`)
    t.ok(response.headers?.['x-request-id'], `${status}: X-Request-Id`)
    t.ok(Object.keys(response.content?.['application/json']?.examples ?? {}).length > 0, `${status}: examples`)
  }
  t.ok(responses['200']?.headers?.['server-timing'], '200: Server-Timing')
  t.ok(responses['503']?.headers?.['retry-after'], '503: Retry-After')
  t.ok(responses['429']?.headers?.['retry-after'], '429: Retry-After')
  t.ok(responses['401']?.headers?.['www-authenticate'], '401: WWW-Authenticate')
  for (const status of ['200', '429']) {
    for (const header of ['ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset']) t.ok(responses[status]?.headers?.[header], `${status}: ${header}`)
  }
  const codes = Object.values(responses).flatMap(r => Object.values(r.content?.['application/json']?.examples ?? {}))
    .map(e => (e.value as { code?: string }).code).filter(c => c !== undefined)
  for (const code of ['INVALID_JSON', 'INVALID_REQUEST', 'UNAUTHORIZED', 'NOT_FOUND', 'METHOD_NOT_ALLOWED', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE',
    'SYNTAX_ERROR', 'MISSING_MAIN', 'MAIN_NOT_CALLABLE', 'MAIN_RAISED', 'RESULT_NOT_JSON', 'RESULT_TOO_LARGE', 'TIME_LIMIT_EXCEEDED',
    'MEMORY_LIMIT_EXCEEDED', 'CRASHED', 'RATE_LIMITED', 'CONCURRENCY_LIMITED', 'BUSY', 'SANDBOX_UNAVAILABLE', 'INTERNAL_ERROR']) {
    t.ok(codes.includes(code), `an example of ${code}`)
  }
})

t.test('/execute takes a bearer API key, or none (a server without API_KEYS_FILE); the body may carry its limits', async t => {
  const doc = await documentOf(await build(t))
  const post = doc.paths['/execute']?.post
  t.same(post?.security, [{ apiKey: [] }, {}], 'the apiKey scheme, or no security at all')
  t.match(doc.components?.securitySchemes?.apiKey, { type: 'http', scheme: 'bearer', description: /API_KEYS_FILE/ })
  const body = post?.requestBody?.content['application/json']
  t.same(body?.schema, { $ref: '#/components/schemas/ExecuteRequest' })
  t.match(doc.components?.schemas?.ExecuteRequest, { properties: { limits: { $ref: '#/components/schemas/RunLimits' } } })
  t.match(doc.components?.schemas?.RunLimits, { type: 'object', additionalProperties: false, properties: { wallMs: { type: 'integer' }, cpuSeconds: { type: 'integer' }, memoryMb: { type: 'integer' }, processes: { type: 'integer' }, outputBytes: { type: 'integer' } } })
  t.ok(Object.values(body?.examples ?? {}).some(e => (e.value as { limits?: unknown }).limits !== undefined), 'an example request asks for its own limits')
  const invalid = post?.responses['400']?.content?.['application/json']?.examples?.INVALID_REQUEST?.value as { message: string } | undefined
  t.equal(invalid?.message, 'unknown field "code" in body; the fields are "script", "input", "stdin", "files", "limits"', 'the unknown-field example lists the fields, limits included')
})

t.test('every example in the document matches the schema beside it', async t => {
  const doc = await documentOf(await build(t))
  const post = doc.paths['/execute']?.post
  const medias: Array<[string, Media | undefined]> = [
    ['request body', post?.requestBody?.content['application/json']],
    ...Object.entries(post?.responses ?? {}).map(([status, r]): [string, Media | undefined] => [status, r.content?.['application/json']])
  ]
  for (const [where, media] of medias) {
    if (media === undefined) { t.fail(`${where}: no application/json content`); continue }
    const examples = Object.entries(media.examples ?? {})
    t.ok(examples.length > 0, `${where}: has examples`)
    for (const [name, example] of examples) {
      const validate = validatorFor(doc, media)
      t.ok(validate(example.value), `${where} ${name}: ${ajv.errorsText(validate.errors)}`)
      const status = (example.value as { statusCode?: number }).statusCode
      if (status !== undefined) t.equal(documented(doc, status), post?.responses[where], `${where} ${name}: statusCode ${status} belongs here`)
    }
  }
})

t.test('real replies of every status match the document\'s schema for that status', async t => {
  const held = new HeldRun()
  const keys = mkdtempSync(join(tmpdir(), 'pysandbox-openapi-keys-'))
  t.teardown(() => rmSync(keys, { recursive: true, force: true }))
  const keysFile = join(keys, 'keys')
  writeFileSync(keysFile, `${newKey('tester').line}\n`)
  const cases: Array<{ name: string, status: number, code?: string, app: () => Promise<FastifyInstance>, send: (app: FastifyInstance) => Promise<LightMyRequestResponse> }> = [
    { name: 'success', status: 200, app: async () => await build(t, {}, [new FakeBackend('nsjail', { run: success({ rows: [1, 2] }, { stdout: 'hi\n' }) })]), send: async app => await app.inject(post(HELLO)) },
    { name: 'success, truncated output', status: 200, app: async () => await build(t, {}, [new FakeBackend('nsjail', { run: success(null, { stdout: 'x', stdoutTruncated: true, stderrTruncated: true }) })]), send: async app => await app.inject(post(HELLO)) },
    { name: 'not JSON', status: 400, app: async () => await build(t), send: async app => await app.inject({ ...post(HELLO), payload: '{' }) },
    { name: 'unknown field', status: 400, app: async () => await build(t), send: async app => await app.inject(post({ code: 'x' })) },
    { name: 'wrong path', status: 404, app: async () => await build(t), send: async app => await app.inject({ method: 'GET', url: '/nope' }) },
    { name: 'wrong method', status: 405, app: async () => await build(t), send: async app => await app.inject({ method: 'GET', url: '/execute' }) },
    { name: 'body too large', status: 413, app: async () => await build(t, { LIMIT_BODY_BYTES: '1024' }), send: async app => await app.inject(post({ script: 'x'.repeat(2048) })) },
    { name: 'not JSON content', status: 415, app: async () => await build(t), send: async app => await app.inject({ method: 'POST', url: '/execute', headers: { 'content-type': 'text/plain' }, payload: 'x' }) },
    { name: 'main raised', status: 422, app: async () => await build(t, {}, [new FakeBackend('nsjail', { run: failure('MAIN_RAISED', 'ZeroDivisionError: division by zero', { exception: 'ZeroDivisionError', traceback: 'Traceback ...' }, { stderr: 'e' }) })]), send: async app => await app.inject(post(HELLO)) },
    { name: 'syntax error', status: 422, app: async () => await build(t, {}, [new FakeBackend('nsjail', { run: failure('SYNTAX_ERROR', 'line 1, column 10: invalid syntax', { line: 1, column: 10 }) })]), send: async app => await app.inject(post(HELLO)) },
    { name: 'crashed', status: 422, app: async () => await build(t, {}, [new FakeBackend('nsjail', { run: failure('CRASHED', 'killed', { signal: 'SIGSEGV' }, { stdoutTruncated: true }) })]), send: async app => await app.inject(post(HELLO)) },
    { name: 'a limit above its ceiling', status: 400, code: 'INVALID_REQUEST', app: async () => await build(t), send: async app => await app.inject(post({ ...HELLO, limits: { memoryMb: 1_000_000 } })) },
    { name: 'an unknown field in limits', status: 400, code: 'INVALID_REQUEST', app: async () => await build(t), send: async app => await app.inject(post({ ...HELLO, limits: { seconds: 1 } })) },
    { name: 'no API key', status: 401, code: 'UNAUTHORIZED', app: async () => await build(t, { API_KEYS_FILE: keysFile }), send: async app => await app.inject(post(HELLO)) },
    { name: 'a wrong API key', status: 401, code: 'UNAUTHORIZED', app: async () => await build(t, { API_KEYS_FILE: keysFile }), send: async app => await app.inject({ ...post(HELLO), headers: { 'content-type': 'application/json', authorization: `Bearer ${newKey('other').key}` } }) },
    { name: 'rate limited', status: 429, app: async () => await build(t, { RATE_LIMIT_MAX: '1' }), send: async app => { await app.inject(post(HELLO)); return await app.inject(post(HELLO)) } },
    {
      name: 'concurrency limited',
      status: 429,
      code: 'CONCURRENCY_LIMITED',
      // The caller's default share of CONCURRENCY 2: one slot, no place in the queue.
      app: async () => await build(t, { CONCURRENCY: '2', QUEUE_SIZE: '0' }, [new FakeBackend('nsjail', { run: held.run })]),
      send: async app => {
        const running = app.inject(post(HELLO))
        await held.started(held.requests.length + 1)
        const limited = await app.inject(post(HELLO))
        held.finish()
        await running
        return limited
      }
    },
    { name: 'no sandbox', status: 503, app: async () => await build(t, {}, [new FakeBackend('nsjail', { probe: failingProbe('no namespaces') })]), send: async app => await app.inject(post(HELLO)) },
    {
      name: 'busy',
      status: 503,
      code: 'BUSY',
      // One caller holds the slot and its place in the queue, a share as large as the whole
      // (TENANT_SLOTS, TENANT_QUEUE): the queue is full for another caller, which holds nothing.
      app: async () => await build(t, { CONCURRENCY: '1', QUEUE_SIZE: '1', TENANT_SLOTS: '1', TENANT_QUEUE: '1' }, [new FakeBackend('nsjail', { run: held.run })]),
      send: async app => {
        const before = held.requests.length
        const running = app.inject(post(HELLO))
        await held.started(before + 1)
        const queued = app.inject(post(HELLO))
        while (app.sandbox.slots.queued < 1) await new Promise(resolve => setImmediate(resolve))
        const busy = await app.inject({ ...post(HELLO), remoteAddress: '192.0.2.1' })
        held.finish()
        await running
        await held.started(before + 2)
        held.finish()
        await queued
        return busy
      }
    },
    { name: 'internal error', status: 500, app: async () => await build(t, {}, [new FakeBackend('nsjail', { run: async () => { throw new Error('boom') } })]), send: async app => await app.inject(post(HELLO)) }
  ]
  const doc = await documentOf(await build(t))
  for (const { name, status, code, app, send } of cases) {
    const reply = await send(await app())
    t.equal(reply.statusCode, status, `${name}: status`)
    if (code !== undefined) t.equal(reply.json<{ code: string }>().code, code, `${name}: code`)
    t.match(reply.headers['content-type'], /^application\/json/, `${name}: JSON`)
    const media = documented(doc, status)?.content?.['application/json']
    if (media === undefined) { t.fail(`${name}: status ${status} is not documented`); continue }
    const validate = validatorFor(doc, media)
    t.ok(validate(reply.json()), `${name}: ${reply.body} matches: ${ajv.errorsText(validate.errors)}`)
  }
})

t.test('a reply the document does not allow is caught (the check can fail)', async t => {
  const doc = await documentOf(await build(t))
  const success = validatorFor(doc, documented(doc, 200)?.content?.['application/json'] as Media)
  t.notOk(success({ result: 1, stdout: '', stderr: '' }), 'no backend')
  t.notOk(success({ result: 1, stdout: '', stderr: '', backend: 'docker' }), 'an unknown backend')
  const error = validatorFor(doc, documented(doc, 422)?.content?.['application/json'] as Media)
  t.notOk(error({ statusCode: 422, error: 'x', code: 'SOMETHING_NEW', message: 'x' }), 'an undocumented code')
})

t.test('the document is kind to client generators: named schemas, one error shape, operation ids', async t => {
  const doc = await documentOf(await build(t)) as Document & { info: { license?: { name: string } }, servers?: Array<{ url: string }>, tags?: Array<{ name: string }> }
  t.same(Object.keys(doc.components?.schemas ?? {}).sort(), ['Backend', 'Encoding', 'ErrorCode', 'ErrorReply', 'ExecuteRequest', 'ExecuteResult', 'FileIn', 'FileLeftOut', 'Health', 'Probe', 'Readiness', 'ReturnedFile', 'RunLimits', 'SessionInfo'], 'every schema named, none def-N')
  t.equal(doc.info.license?.name, 'Apache-2.0')
  t.equal((doc.components?.schemas?.ExecuteResult as { required: string[] }).required[0], 'result', 'result is written first: the route splices main()\'s JSON text in there (routes/execute.ts)')
  t.same(doc.servers, [{ url: '/', description: 'This server' }], 'relative: the server that serves the document')
  const operations = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ where: `${method} ${path}`, op: op as typeof op & { operationId?: string, tags?: string[] } })))
  t.same(operations.map(o => o.op.operationId).sort(), ['deleteSession', 'execute', 'executeInSession', 'getHealth', 'getReadiness', 'getSession', 'openSession'])
  for (const { where, op } of operations) {
    t.ok(op.tags?.every(tag => doc.tags?.some(declared => declared.name === tag)), `${where}: a declared tag`)
    t.ok(op.security !== undefined, `${where}: its security said`)
    for (const [status, response] of Object.entries(op.responses)) {
      // /readyz's 503 is its readiness (not ready), not an error.
      if (!/^[45]/.test(status) || (where === 'get /readyz' && status === '503')) continue
      t.same(response.content?.['application/json']?.schema, { $ref: '#/components/schemas/ErrorReply' }, `${where} ${status}: the one ErrorReply`)
    }
  }
  // One enum of every code, each explained; a union of literals would be a schema (and a generated class) per code.
  const code = doc.components?.schemas?.ErrorCode as { type: string, enum: string[], description: string }
  t.equal(code.type, 'string')
  t.same(code.enum, [...ERROR_CODES])
  for (const c of ERROR_CODES) t.match(code.description, `- ${c} (`, `${c} is explained`)
  t.notMatch(JSON.stringify(doc), /"(anyOf|oneOf)":\[\{"const"/, 'no union of literals anywhere')
  const examples = doc.paths['/execute']?.post?.requestBody?.content['application/json']?.examples as Record<string, { summary?: string }>
  t.ok(Object.keys(examples).length >= 5 && Object.entries(examples).every(([name, e]) => !/^example\d+$/.test(name) && (e.summary ?? '') !== ''), 'named request examples with summaries')
})
