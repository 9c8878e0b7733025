// The strict JSON scan (src/json-scan.ts): it accepts exactly what JSON.parse accepts (of valid
// UTF-8, no byte-order mark), applies the harness's value rules in the harness's words (checked
// against harness/run.py itself), bounds depth and the envelope, and finds the member's span.
import { spawnSync } from 'node:child_process'
import t from 'tap'
import fc from 'fast-check'
import { HARNESS_DIR } from '../../src/backends/launch.js'
import { SLICE_BYTES, nestsWithin, pythonRepr, scanJson, scanJsonInSlices, type JsonPath, type ScanOptions } from '../../src/json-scan.js'

const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** Whether JSON.parse accepts the bytes (as strict UTF-8, a byte-order mark kept). */
function parses (bytes: Uint8Array): boolean {
  try {
    JSON.parse(strict.decode(bytes))
    return true
  } catch {
    return false
  }
}

/** A text as a test's name: ASCII only (TAP reads U+2028 as the end of a line). */
const named = (text: string): string => JSON.stringify(text).replace(/[^\x20-\x7e]/g, c => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)

const scan = (text: string | Uint8Array, options = {}): ReturnType<typeof scanJson> =>
  scanJson(typeof text === 'string' ? Buffer.from(text) : text, options)

t.test('grammar: a table at the edges of JSON, each as JSON.parse judges it', async t => {
  const table: Array<[string, string | undefined]> = [
    ['0', undefined], ['-0', undefined], ['-12.5e+3', undefined], ['1E-2', undefined], ['  [ 1 , "a" , {} ]\n', undefined],
    ['{"a":{"b":[true,false,null]}}', undefined], ['"\\u00e9\\n\\/\\"\\\\\\b\\f\\r\\t"', undefined], ['"é😀"', undefined],
    ['', 'unexpected end of the text'], [' ', 'unexpected end of the text'], ['01', 'unexpected byte 0x31 at byte 1'],
    ['-', 'unexpected end of the text'], ['-a', 'unexpected byte 0x61 at byte 1'], ['1.', 'unexpected end of the text'], ['.5', 'unexpected byte 0x2e at byte 0'],
    ['1e', 'unexpected end of the text'], ['1e+', 'unexpected end of the text'], ['1.x', 'unexpected byte 0x78 at byte 2'], ['+1', 'unexpected byte 0x2b at byte 0'],
    ['[1,]', 'unexpected byte 0x5d at byte 3'], ['[,1]', 'unexpected byte 0x2c at byte 1'], ['{"a" 1}', 'unexpected byte 0x31 at byte 5'],
    ['{"a":1,}', 'unexpected byte 0x7d at byte 7'], ['{1:1}', 'unexpected byte 0x31 at byte 1'], ['{"a":1', 'unexpected end of the text'],
    ['[1 2]', 'unexpected byte 0x32 at byte 3'], ['[1}', 'unexpected byte 0x7d at byte 2'], ['{"a":1]', 'unexpected byte 0x5d at byte 6'],
    ['1 2', 'unexpected byte 0x32 at byte 2'], ['tru', 'unexpected end of the text'], ['nul!', 'unexpected byte 0x21 at byte 3'], ['NaN', 'unexpected byte 0x4e at byte 0'],
    ['"a', 'unexpected end of the text'], ['"\t"', 'unexpected byte 0x09 at byte 1'], ['"\\x"', 'unexpected byte 0x78 at byte 2'], ['"\\', 'unexpected end of the text'],
    ['"\\u12"', 'unexpected byte 0x22 at byte 5'], ['"\\u12', 'unexpected end of the text'], ['"\\u12g4"', 'unexpected byte 0x67 at byte 5'],
    ['"\\ud800\\u12"', 'unexpected byte 0x22 at byte 11'], ['\ufeff1', 'unexpected byte 0xef at byte 0'], ['[1]\u00a0', 'unexpected byte 0xc2 at byte 3']
  ]
  for (const [text, error] of table) {
    t.equal(scan(text).error, error, JSON.stringify(text))
    t.equal(parses(Buffer.from(text)), error === undefined, `${JSON.stringify(text)}: JSON.parse agrees`)
  }
  t.equal(scan(Buffer.from([0x22, 0xff, 0x22])).error, 'not valid UTF-8')
  t.equal(scan(Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22])).error, 'not valid UTF-8', 'a surrogate encoded in UTF-8')
})

/** Texts near JSON: valid ones, and the same with one character inserted, removed or replaced. */
const ALPHABET = [...'{}[]",:\\ 0123456789-+.eEtrufalsn\n\tu'].map(c => c)
const nearJson = fc.tuple(fc.json(), fc.nat(), fc.constantFrom(...ALPHABET), fc.constantFrom('insert', 'remove', 'replace', 'keep'))
  .map(([text, at, char, edit]) => {
    const i = at % (text.length + 1)
    if (edit === 'insert') return text.slice(0, i) + char + text.slice(i)
    if (edit === 'remove') return text.slice(0, i) + text.slice(i + 1)
    if (edit === 'replace') return text.slice(0, i) + char + text.slice(i + 1)
    return text
  })

t.test('property: the scan accepts exactly what JSON.parse accepts', async t => {
  const texts = fc.oneof(
    fc.json().map(text => Buffer.from(text)),
    nearJson.map(text => Buffer.from(text)),
    fc.string({ unit: 'binary' }).map(text => Buffer.from(text)),
    fc.string({ unit: fc.constantFrom(...ALPHABET) }).map(text => Buffer.from(text)),
    fc.uint8Array({ maxLength: 40 })
  )
  fc.assert(fc.property(texts, bytes => scan(bytes).error === undefined === parses(bytes)), { numRuns: 5000 })
  t.pass('5000 texts')
})

t.test('property: the member\'s span holds the member\'s value, whatever surrounds it', async t => {
  const envelope = fc.tuple(fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 4 }), fc.jsonValue(), fc.nat())
    .map(([others, result, at]) => {
      const entries = Object.entries(others).filter(([key]) => key !== 'result')
      entries.splice(at % (entries.length + 1), 0, ['result', result])
      return JSON.stringify(Object.fromEntries(entries), null, at % 3)
    })
  fc.assert(fc.property(envelope, text => {
    const { member, error } = scan(text, { member: 'result' })
    const bytes = Buffer.from(text)
    return error === undefined && member !== undefined &&
      JSON.stringify(JSON.parse(bytes.subarray(member.start, member.end).toString())) === JSON.stringify((JSON.parse(text) as { result: unknown }).result)
  }), { numRuns: 1000 })
  t.same(scan('[{"result":1}]', { member: 'result' }), {}, 'a member below the top level is none')
  t.same(scan('{"a":{"result":1}}', { member: 'result' }), {}, 'nor in a nested object')
  t.same(scan('{"r\\u0065sult": [1] }', { member: 'result' }).member, { start: 16, end: 19 }, 'an escaped key is the member too')
  t.equal(scan('{"result":1,"result":2}', { member: 'result' }).error, '"result" appears twice')
  t.equal(scan('{"result":1,"r\\u0065sult":2}', { member: 'result' }).error, '"result" appears twice', 'even escaped')
})

t.test('depth: at most maxDepth levels, without recursion', async t => {
  const nested = (depth: number, inner = ''): string => '['.repeat(depth) + inner + ']'.repeat(depth)
  const table: Array<{ text: string, max: number, within: boolean }> = [
    { text: '[]', max: 1, within: true },
    { text: '[[]]', max: 1, within: false },
    { text: '{"a":[{}]}', max: 3, within: true },
    { text: '{"a":[{}]}', max: 2, within: false },
    { text: '"[[[[[[[["', max: 0, within: true },
    { text: '["\\"[[[[", "\\\\"]', max: 1, within: true },
    { text: '["\\"", [[]]]', max: 2, within: false },
    { text: '["é[[", "😀"]', max: 1, within: true },
    { text: nested(1_000_000), max: 1_000_000, within: true },
    { text: nested(1_000), max: 999, within: false }
  ]
  for (const { text, max, within } of table) t.equal(nestsWithin(Buffer.from(text), max), within, `${text.slice(0, 30)} within ${max}`)
  t.equal(scan(nested(3), { maxDepth: 2 }).error, 'nested deeper than 2 levels at byte 2')
  t.equal(nestsWithin(Buffer.from('[1,]'), 5), false, 'and valid JSON')
  t.same(scan('{"a":' + nested(200, '{"b":[1,{"c":2}]}') + '}'), {}, 'the stacks grow past their first 64 levels')
})

t.test('the member\'s value is bounded: the scan stops soon past the bound', async t => {
  const bounded = (text: string, max: number): ReturnType<typeof scanJson> => scan(text, { member: 'result', maxMemberBytes: max })
  t.same(bounded('{"result":[0,0,0]}', 7), { member: { start: 10, end: 17 } }, 'allow: at the bound')
  t.same(bounded('{"result":[0,0,0]}', 6), { error: '"result" is longer than 6 bytes', memberTooLarge: true }, 'deny: past it, at its end')
  t.same(bounded('{"result":"abcdef"}', 7), { error: '"result" is longer than 7 bytes', memberTooLarge: true }, 'deny: a string')
  t.same(bounded(`{"result":[${'1,'.repeat(100)}"x", 1e999999, "\ud800"],"files":[]}`, 20), { error: '"result" is longer than 20 bytes', memberTooLarge: true }, 'deny: at the first comma past it, whatever follows')
  t.same(bounded('{"ok":[0,0,0,0,0,0,0,0],"result":1}', 2), { member: { start: 33, end: 34 } }, 'what is outside does not count')
})

t.test('the values outside the member are bounded', async t => {
  t.same(scan('{"ok":true,"result":[1,2,3,4,5,6,7,8,9],"x":[1]}', { member: 'result', maxValuesOutside: 5 }).error, undefined, 'five: the object, true, the list and its item, and... the member\'s value not counted')
  t.equal(scan('{"ok":true,"result":[],"x":[1,2]}', { member: 'result', maxValuesOutside: 4 }).error, 'more than 4 values outside "result"')
  t.equal(scan('[1,2,3]', { maxValuesOutside: 3 }).error, 'more than 3 values outside "undefined"', 'without a member, every value counts')
  t.same(scan('[0,{},[],0]', { maxValuesOutside: 5 }), {}, 'allow: short integers and empty containers count too')
  t.equal(scan('[0,{},[],0,0]', { maxValuesOutside: 5 }).error, 'more than 5 values outside "undefined"')
  t.equal(scan('[0,[]]', { maxDepth: 1 }).error, 'nested deeper than 1 levels at byte 3', 'and an empty container is a level')
  t.same(scan('[0,{}]', { maxDepth: 2 }), {})
})

t.test('the value rules, their words and where the value sits', async t => {
  const table: Array<[string, string | undefined]> = [
    ['"\\ud800"', 'result is a str with a lone surrogate, which is not valid Unicode'],
    ['["a", "\\udc00x"]', 'result[1] is a str with a lone surrogate, which is not valid Unicode'],
    ['{"a": ["\\ud800\\u0041"]}', 'result[\'a\'][0] is a str with a lone surrogate, which is not valid Unicode'],
    ['"\\ud83d\\ude00 \\uD83D\\uDE00"', undefined],
    ['{"\\ud800": 1}', 'result has a key \'\\ud800\' with a lone surrogate, which is not valid Unicode'],
    ['[{"k": {"\\udfff": 1}}]', 'result[0][\'k\'] has a key \'\\udfff\' with a lone surrogate, which is not valid Unicode'],
    ['9007199254740991', undefined], ['-9007199254740991', undefined], ['1234567890123456', undefined],
    ['9007199254740992', 'result is an int beyond ±(2**53 - 1), which JSON readers cannot hold exactly; return it as a str'],
    ['[-9007199254740992]', 'result[0] is an int beyond ±(2**53 - 1), which JSON readers cannot hold exactly; return it as a str'],
    ['{"big": 18446744073709551617}', 'result[\'big\'] is an int beyond ±(2**53 - 1), which JSON readers cannot hold exactly; return it as a str'],
    ['9007199254740992.0', undefined], ['1e300', undefined], ['1.7976931348623157e308', undefined], ['10e307', undefined], ['0.01e310', undefined],
    ['0e99999', undefined], ['0.000e400', undefined], ['1e-400', undefined], ['-0.0', undefined],
    ['1e400', 'result is 1e400, inf as a float, which is not JSON (NaN and Infinity are not numbers in JSON)'],
    ['[-1E400]', 'result[0] is -1E400, -inf as a float, which is not JSON (NaN and Infinity are not numbers in JSON)'],
    ['1.7976931348623159e308', 'result is 1.7976931348623159e308, inf as a float, which is not JSON (NaN and Infinity are not numbers in JSON)'],
    ['100e307', 'result is 100e307, inf as a float, which is not JSON (NaN and Infinity are not numbers in JSON)'],
    ['0.1e310', 'result is 0.1e310, inf as a float, which is not JSON (NaN and Infinity are not numbers in JSON)'],
    ['1e99999999999999999999', 'result is 1e99999999999999999999, inf as a float, which is not JSON (NaN and Infinity are not numbers in JSON)'],
    [`1${'0'.repeat(400)}.5`, `result is 1${'0'.repeat(39)}..., inf as a float, which is not JSON (NaN and Infinity are not numbers in JSON)`],
    ['[1e400, "\\ud800"]', 'result[0] is 1e400, inf as a float, which is not JSON (NaN and Infinity are not numbers in JSON)']
  ]
  t.same(scan('12345678901234567').unreadable, { message: 'value is an int beyond ±(2**53 - 1), which JSON readers cannot hold exactly; return it as a str', inMember: false }, 'at the end of the text')
  for (const [value, message] of table) {
    const { unreadable, error } = scan(`{"ok":true,"result":${value}}`, { member: 'result' })
    t.equal(error, undefined, `${value}: JSON all the same`)
    t.same(unreadable, message === undefined ? undefined : { message, inMember: true }, value)
  }
  t.same(scan('{"ok":true,"line":1e400,"result":1}', { member: 'result' }).unreadable,
    { message: 'value[\'line\'] is 1e400, inf as a float, which is not JSON (NaN and Infinity are not numbers in JSON)', inMember: false }, 'outside the member')
  t.same(scan('[0, "\\ud800"]').unreadable, { message: 'value[1] is a str with a lone surrogate, which is not valid Unicode', inMember: false }, 'without a member')
})

t.test('the harness\'s repr of keys', async t => {
  const table: Array<[string, string]> = [
    ['a', '\'a\''], ['it\'s', '"it\'s"'], ['both \' and "', '\'both \\\' and "\''], ['back\\slash', '\'back\\\\slash\''],
    ['\n\r\t', '\'\\n\\r\\t\''], ['\x00\x7f\x9f\xad', '\'\\x00\\x7f\\x9f\\xad\''], ['é ✓😀', '\'é ✓😀\''], ['\u2028\ud800', '\'\\u2028\\ud800\''],
    ['\u{e0001}', '\'\\U000e0001\''], ['x'.repeat(65), `'${'x'.repeat(60)}...'`]
  ]
  for (const [text, repr] of table) t.equal(pythonRepr(text), repr, named(text))
})

t.test('keys are told as the scan meets them, with where they sit', async t => {
  const seen: unknown[] = []
  const see = (start: number, end: number, path: JsonPath): void => {
    const at = Array.from({ length: path.depth }, (_, i) => path.isObject(i + 1) ? `${path.key(i + 1)}#${path.index(i + 1)}` : `[${path.index(i + 1)}]`)
    seen.push([start, end, at.join(' '), path.keyEscaped(path.depth), path.keyIs(path.depth, 'é'), path.keyIs(path.depth, 'ab'), path.keyIs(path.depth, 'a')])
  }
  scan('{"ab":[{"é":1},{"\\u00e9":2,"a":3}],"abc":0,"a\\u0062":1}', { onKey: see })
  t.same(seen, [
    [2, 4, 'ab#0', false, false, true, false],
    [9, 11, 'ab#0 [0] é#0', false, true, false, false],
    [18, 24, 'ab#0 [1] é#0', true, true, false, false],
    [29, 30, 'ab#0 [1] a#1', false, false, false, true],
    [37, 40, 'abc#1', false, false, false, false],
    [45, 52, 'ab#2', true, false, true, false]
  ])
})

t.test('property: the value rules are the harness\'s own (harness/run.py check_json, run with python3)', async t => {
  // A value the harness accepts, with one value it refuses (or a boundary it accepts) somewhere.
  const keyChars = fc.constantFrom('a', 'Z', '0', ' ', '\'', '"', '\\', '\n', '\t', '\x00', '\x7f', '\xa0', '\xad', 'é', '✓', '😀', '\u2028', '中')
  const key = fc.string({ unit: keyChars, maxLength: 6 })
  const safe = fc.oneof(fc.maxSafeInteger(), fc.double({ noNaN: true, noDefaultInfinity: true }).filter(d => !Number.isInteger(d)),
    fc.string({ unit: keyChars }), fc.boolean(), fc.constant(null))
  const odd = fc.constantFrom('"\\ud800"', '"x\\udc00"', '"\\ud800\\ud800"', '1e400', '-1e400', '1.7976931348623159e308', '100e307', '0.1e310',
    '9007199254740992', '-9007199254740992', '18446744073709551617', '{"\\ud800": 1}',
    '9007199254740991', '1.7976931348623157e308', '10e307', '0.01e310', '0e400', '1e-400', '"\\ud83d\\ude00"')
  const path = fc.array(fc.oneof(fc.nat(3), key), { maxLength: 4 })
  const texts = fc.tuple(path, odd, safe).map(([steps, value, filler]) => {
    let text: string = value
    for (const step of steps.reverse()) {
      text = typeof step === 'number'
        ? `[${[...Array(step).fill(JSON.stringify(filler)), text].join(',')}]`
        : `{${JSON.stringify(step)}:${text},${JSON.stringify(step + '~')}:${JSON.stringify(filler)}}`
    }
    return text
  })
  const samples = fc.sample(texts, { numRuns: 1500, seed: 14 })
  const python = spawnSync('python3', ['-I', '-c', `
import json, sys
sys.path.insert(0, ${JSON.stringify(HARNESS_DIR)})
import run
out = []
for text in json.load(sys.stdin):
    try:
        value = json.loads(text)
        run.check_json(value)
        "".join(run.to_json(value, [])).encode("utf-8")
        out.append(None)
    except run.NotJson as exc:
        out.append(str(exc))
    except UnicodeEncodeError as exc:
        out.append("encode: " + str(exc))
print(json.dumps(out))
`], { input: JSON.stringify(samples), maxBuffer: 64 * 1024 * 1024 })
  t.equal(python.status, 0, python.stderr.toString())
  const verdicts = JSON.parse(python.stdout.toString()) as Array<string | null>
  let refused = 0
  samples.forEach((text, i) => {
    const theirs = verdicts[i] ?? undefined
    const ours = scan(`{"ok":true,"result":${text}}`, { member: 'result' }).unreadable?.message
    if ((ours === undefined) !== (theirs === undefined)) {
      t.fail(`${named(text)}: ours ${named(String(ours))}, the harness's ${named(String(theirs))}`)
    } else if (theirs !== undefined && ours !== undefined) {
      refused++
      if (/lone surrogate, which|JSON readers cannot/.test(theirs)) t.equal(ours, theirs, named(text))
      else if (theirs.startsWith('encode: ')) t.match(ours, /has a key .* with a lone surrogate/, named(text))
      else t.equal(ours.split(' is ')[0], theirs.split(' is ')[0], `${named(text)}: same place`)
    }
  })
  t.ok(refused > 500 && refused < samples.length, `both refuse the same ${refused} of ${samples.length}`)
})

t.test('property: a scan in slices says what the whole scan says, keys told alike', async t => {
  const told = (): { keys: string[], options: ScanOptions } => {
    const keys: string[] = []
    return { keys, options: { onKey: (start, end, path) => { keys.push(`${start}-${end}@${path.depth}:${path.index(path.depth)}`) } } }
  }
  const options = fc.record({
    maxDepth: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
    member: fc.option(fc.constantFrom('result', 'a', ''), { nil: undefined }),
    maxValuesOutside: fc.option(fc.integer({ min: 1, max: 20 }), { nil: undefined }),
    maxMemberBytes: fc.option(fc.integer({ min: 1, max: 40 }), { nil: undefined })
  }, { requiredKeys: [] })
  const texts = fc.oneof(fc.json(), nearJson, fc.jsonValue().map(result => JSON.stringify({ ok: true, result, a: [0, {}, []] })))
  await fc.assert(fc.asyncProperty(texts, options, fc.integer({ min: 1, max: 16 }), async (text, chosen, slice) => {
    const bytes = Buffer.from(text)
    const whole = told()
    const sliced = told()
    const expected = scanJson(bytes, { ...chosen, ...whole.options })
    const actual = await scanJsonInSlices(bytes, { ...chosen, ...sliced.options }, slice)
    return JSON.stringify(actual) === JSON.stringify(expected) && whole.keys.join() === sliced.keys.join()
  }), { numRuns: 1500 })
  t.pass('1500 texts')
})

t.test('between slices the event loop runs: 8 MiB of [0,0,...] scanned while a timer keeps firing', async t => {
  const text = Buffer.from(`{"result":[${'0,'.repeat(4 * 1024 * 1024 - 8)}0]}`)
  let turns = 0
  const ticking = setInterval(() => { turns++ }, 0)
  const verdict = await scanJsonInSlices(text, { member: 'result' })
  clearInterval(ticking)
  t.same(verdict, { member: { start: 10, end: text.length - 1 } })
  t.ok(turns >= text.length / SLICE_BYTES / 4, `${turns} timer turns during ${Math.ceil(text.length / SLICE_BYTES)} slices`)
  t.same(await scanJsonInSlices(Buffer.from([0xff])), { error: 'not valid UTF-8' }, 'bytes that are not UTF-8: at once')
})
