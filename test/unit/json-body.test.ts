// The HTTP layer's strictness: odd request bodies get a precise 400, never a guess.
import t from 'tap'
import { buildApp } from '../../src/app.js'
import type { SandboxBackend } from '../../src/backends/backend.js'
import { loadConfig } from '../../src/config.js'
import { duplicateKey } from '../../src/json-body.js'
import { success } from '../helpers/fake-backend.js'
import { largestParse } from '../helpers/json-parses.js'

const echo: SandboxBackend = {
  name: 'nsjail',
  probe: async () => ({ ok: true, features: {} }),
  run: async request => success(request.script)
}

const CASES: Array<{ name: string, body: string | Buffer, status: number, code?: string, message?: RegExp, result?: string }> = [
  { name: 'duplicate keys are refused, not resolved', body: '{"script": "a", "script": "b"}', status: 400, code: 'INVALID_JSON', message: /"script" appears twice/ },
  { name: 'in input too, however deep', body: '{"script": "a", "input": [{"a": {"b": 1, "b": 2}}]}', status: 400, code: 'INVALID_JSON', message: /"b" appears twice/ },
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

const FIELDS = '"script", "input", "stdin", "files", "limits"'
const LIMITS = '"wallMs", "cpuSeconds", "memoryMb", "processes", "outputBytes"'
const FILE = '"path", "content", "encoding"'

t.test('an unknown field is refused before the body is parsed, in the validator\'s words and order', async t => {
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0' }), backends: [echo] })
  t.teardown(async () => await app.close())
  const table: Array<{ body: string, status: number, code: string, message: string }> = [
    { body: '{"script":"x","limits":{"zz":1},"files":[{"path":"a","content":"","yy":1}],"xx":1}', status: 400, code: 'INVALID_REQUEST', message: `unknown field "xx" in body; the fields are ${FIELDS}` },
    { body: '{"script":"x","limits":{"zz":1},"files":[{"path":"a","content":"","yy":1}]}', status: 400, code: 'INVALID_REQUEST', message: `unknown field "yy" in body.files.0; the fields are ${FILE}` },
    { body: '{"limits":{"zz":1},"script":"x","files":[{"path":"a","content":""},{"yy":1,"ww":2}]}', status: 400, code: 'INVALID_REQUEST', message: `unknown field "yy" in body.files.1; the fields are ${FILE}` },
    { body: '{"script":5,"limits":{"zz":1}}', status: 400, code: 'INVALID_REQUEST', message: `unknown field "zz" in body.limits; the fields are ${LIMITS}` },
    { body: '{"script":"x","files":[{"path":"a","content":"","limits":{"q":1}}]}', status: 400, code: 'INVALID_REQUEST', message: `unknown field "limits" in body.files.0; the fields are ${FILE}` },
    { body: '{"script":"x","\\u0078":1}', status: 400, code: 'INVALID_REQUEST', message: `unknown field "x" in body; the fields are ${FIELDS}` },
    { body: '{"script":"x","scrïpt":1}', status: 400, code: 'INVALID_REQUEST', message: `unknown field "scrïpt" in body; the fields are ${FIELDS}` },
    { body: '{"xx":1,"script":"a","script":"b"}', status: 400, code: 'INVALID_REQUEST', message: `unknown field "xx" in body; the fields are ${FIELDS}` },
    { body: '{"script":"a","script":"b","limits":{"zz":1}}', status: 400, code: 'INVALID_REQUEST', message: `unknown field "zz" in body.limits; the fields are ${LIMITS}` },
    { body: '{"xx":1,"script":"a",}', status: 400, code: 'INVALID_JSON', message: 'the body is not valid JSON' },
    // Fields of the same names elsewhere are no fields of those objects: the validator's to judge.
    { body: '{"script":"x","files":{"a":{"zz":1}}}', status: 400, code: 'INVALID_REQUEST', message: 'body.files must be array' },
    { body: '{"script":"x","limits":[{"zz":1}]}', status: 400, code: 'INVALID_REQUEST', message: 'body.limits must be object' },
    { body: '{"script":"x","files":[[{"zz":1}]]}', status: 400, code: 'INVALID_REQUEST', message: 'body.files.0 must be object' },
    { body: '[{"xx":1}]', status: 400, code: 'INVALID_REQUEST', message: 'body must be object' },
    { body: `{"script":"x","files":[${Array(10_001).fill('{"path":"a","content":""}').join(',')}]}`, status: 400, code: 'INVALID_REQUEST', message: 'body.files must NOT have more than 10000 items' },
    { body: '{"script":"x","input":{"zz":{"limits":{"q":1},"files":[{"w":1}]}}}', status: 200, code: '', message: '' }
  ]
  for (const { body, status, code, message } of table) {
    const reply = await app.inject({ method: 'POST', url: '/execute', payload: body, headers: { 'content-type': 'application/json' } })
    t.equal(reply.statusCode, status, body)
    if (status !== 200) t.match(reply.json(), { code, message: message.startsWith('the body') ? new RegExp(message) : message }, body)
  }
})

t.test('keys: duplicates are found in each object whatever the bytes spell, and many keys cost what their bytes do', async t => {
  t.equal(duplicateKey('{"é": 1, "\\u00e9": 2}'), 'é', 'two-byte UTF-8 against its escape')
  t.equal(duplicateKey('{"✓": 1, "\\u2713": 2}'), '✓', 'three bytes')
  t.equal(duplicateKey('{"😀": 1, "\\ud83d\\ude00": 2}'), '😀', 'four bytes')
  t.equal(duplicateKey('{"\\u00e9": 1, "é": 2}'), 'é', 'the escape first')
  t.equal(duplicateKey('{"k4uzx": 1, "kf2ad": 2}'), undefined, 'keys of the same hash are told apart')
  t.equal(duplicateKey('{"k4uzx": 1, "kf2ad": 2, "k4uzx": 3}'), 'k4uzx')
  const many = Array.from({ length: 50_000 }, (_, i) => `"k${i}":${i}`)
  t.equal(duplicateKey(`{${many.join(',')}}`), undefined, '50,000 keys, none twice')
  t.equal(duplicateKey(`{${many.join(',')},"k49999":0}`), 'k49999', 'the last one twice')
  t.equal(duplicateKey(`[{${many.join(',')}},{"k1":1,"k2":2},{"a":[{"k1":1}],"k1":1}]`), undefined, 'a big object, then small ones at its level')
})

t.test('deny/allow: a body of 96,331 unknown fields is refused before JSON.parse builds it; an input of as many keys runs', async t => {
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0' }), backends: [echo] })
  t.teardown(async () => await app.close())
  const fields = Array.from({ length: 96_331 }, (_, i) => `"f${i}":0`).join(',')
  const post = async (payload: string): Promise<{ status: number, body: Record<string, unknown>, parsed: number }> => {
    const { value: reply, largest } = await largestParse(async () => await app.inject({ method: 'POST', url: '/execute', payload, headers: { 'content-type': 'application/json' } }))
    return { status: reply.statusCode, body: reply.json(), parsed: largest }
  }
  const denied = await post(`{"script":"x",${fields}}`)
  t.match(denied, { status: 400, body: { code: 'INVALID_REQUEST', message: `unknown field "f0" in body; the fields are ${FIELDS}` } })
  t.ok(denied.parsed < 1000, `deny: the largest text parsed is ${denied.parsed} characters`)
  const allowed = await post(`{"script":"x","input":{${fields}}}`)
  t.equal(allowed.status, 200, 'allow: the same keys in input')
  t.ok(allowed.parsed > 1_000_000, 'the body was parsed')
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
