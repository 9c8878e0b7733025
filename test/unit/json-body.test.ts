// The HTTP layer's strictness: odd request bodies get a precise 400, never a guess.
import t from 'tap'
import { buildApp } from '../../src/app.js'
import type { SandboxBackend } from '../../src/backends/backend.js'
import { loadConfig } from '../../src/config.js'
import { duplicateKey } from '../../src/json-body.js'

const echo: SandboxBackend = {
  name: 'nsjail',
  probe: async () => ({ ok: true, features: {} }),
  run: async request => ({ ok: true, result: request.script, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false, durationMs: 1 })
}

const CASES: Array<{ name: string, body: string | Buffer, status: number, code?: string, message?: RegExp, result?: string }> = [
  { name: 'duplicate keys are refused, not resolved', body: '{"script": "a", "script": "b"}', status: 400, code: 'INVALID_JSON', message: /"script" appears twice/ },
  { name: 'duplicates hidden behind escapes are found', body: '{"script": "a", "scr\\u0069pt": "b"}', status: 400, code: 'INVALID_JSON', message: /appears twice/ },
  { name: 'NaN is not JSON', body: '{"script": NaN}', status: 400, code: 'INVALID_JSON' },
  { name: 'a huge number in an unknown field names the field', body: '{"script": "a", "x": 1e999}', status: 400, code: 'INVALID_REQUEST', message: /unknown field "x"/ },
  { name: 'invalid UTF-8 is refused, not repaired', body: Buffer.concat([Buffer.from('{"script": "'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]), status: 400, code: 'INVALID_JSON', message: /UTF-8/ },
  { name: '100,000 nested brackets', body: '['.repeat(100_000), status: 400, code: 'INVALID_JSON' },
  { name: '100,000 nested, closed brackets', body: '['.repeat(100_000) + ']'.repeat(100_000), status: 400, code: 'INVALID_REQUEST' },
  { name: '__proto__ is an unknown field, not a prototype', body: '{"script": "a", "__proto__": {"x": 1}}', status: 400, code: 'INVALID_REQUEST', message: /"__proto__"/ },
  { name: 'a byte-order mark is allowed (RFC 8259)', body: '\ufeff{"script": "a"}', status: 200, result: 'a' },
  { name: 'keys repeated in different objects are fine', body: '{"script": "{\\"a\\": {\\"a\\": 1}}"}', status: 200, result: '{"a": {"a": 1}}' },
  { name: 'whitespace only is an empty body', body: '  \n ', status: 400, code: 'INVALID_JSON', message: /empty/ }
]

t.test('request bodies at the edge of JSON', async t => {
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0', LIMIT_BODY_BYTES: '4194304' }), backends: [echo] })
  t.teardown(async () => await app.close())
  for (const c of CASES) {
    const reply = await app.inject({ method: 'POST', url: '/execute', payload: c.body, headers: { 'content-type': 'application/json' } })
    t.equal(reply.statusCode, c.status, c.name)
    const body = reply.json()
    if (c.code !== undefined) t.equal(body.code, c.code, `${c.name}: ${String(body.message)}`)
    if (c.message !== undefined) t.match(body.message, c.message, c.name)
    if (c.result !== undefined) t.equal(body.result, c.result, c.name)
  }
})

t.test('duplicateKey looks at each object on its own', async t => {
  t.equal(duplicateKey('{"a": 1, "b": {"a": 2}}'), undefined)
  t.equal(duplicateKey('[{"a": 1}, {"a": 2}]'), undefined)
  t.equal(duplicateKey('{"a": ["a", "a"], "b": "a"}'), undefined)
  t.equal(duplicateKey('{"a": {"b": 1, "b": 2}}'), 'b')
  t.equal(duplicateKey('{"x\\"y": 1, "x\\"y": 2}'), 'x"y')
  t.equal(duplicateKey('{"a" : 1, "a"\n\t: 2}'), 'a', 'whitespace before the colon')
  t.equal(duplicateKey('"a"'), undefined, 'a string that ends the text')
})
