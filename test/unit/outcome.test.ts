import { constants } from 'node:os'
import t from 'tap'
import type { Limits, RunOutcome } from '../../src/backends/backend.js'
import { undoExitStatusSignal } from '../../src/backends/nsjail/backend.js'
import { MAX_CHANNEL_DEPTH, envelopeValues, interpret, succeeded } from '../../src/backends/outcome.js'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { FakeBackend } from '../helpers/fake-backend.js'
import { largestParse } from '../helpers/json-parses.js'
import type { SpawnResult } from '../../src/backends/spawn.js'

const limits: Limits = {
  wallTimeMs: 10_000,
  killGraceMs: 500,
  cpuSeconds: 10,
  memoryMiB: 512,
  processes: 64,
  openFiles: 256,
  tmpMiB: 64,
  tmpFiles: 1024,
  outputBytes: 1024 * 1024,
  resultBytes: 8 * 1024 * 1024,
  filesOut: 100,
  filesOutBytes: 8 * 1024 * 1024
}

/** A spawn result; a signal may be given by name. */
type Overrides = Omit<Partial<SpawnResult>, 'signal'> & { signal?: NodeJS.Signals | number | null }

function spawned ({ signal, ...overrides }: Overrides = {}): SpawnResult {
  return {
    exitCode: 0,
    stdout: Buffer.from('printed\n'),
    stderr: Buffer.from('warned\n'),
    stdoutTruncated: false,
    stderrTruncated: false,
    channel: Buffer.alloc(0),
    channelOverflow: false,
    timedOut: false,
    aborted: false,
    durationMs: 120,
    ...overrides,
    signal: typeof signal === 'string' ? constants.signals[signal] : signal ?? null
  }
}

const channel = (message: unknown): Buffer => Buffer.from(JSON.stringify(message))

/** Interpreted as a run under nsjail, which reports its child's death by signal N as its own
 *  exit status 128 + N; one given a signal, as a run whose launcher reports the signal itself
 *  (unshare, direct): under nsjail, a signal is nsjail's own. */
async function run (overrides: Overrides, memoryByCgroup = false): Promise<RunOutcome> {
  const result = spawned(overrides)
  const normalised = result.signal === null ? undoExitStatusSignal(result) : result
  return 'ok' in normalised ? normalised : await interpret(normalised, { limits, memoryByCgroup })
}

/** The failure's code, message and details, or a marker that the run succeeded. */
function failure (outcome: RunOutcome): { code: string, message: string, details: Record<string, string | number> } {
  if (outcome.ok) throw new Error(`expected a failure, got success with ${JSON.stringify(outcome.result)}`)
  return { code: outcome.code, message: outcome.message, details: outcome.details }
}

t.test('a success message and exit 0 is a success carrying the result and the output', async t => {
  const results: unknown[] = [{ msg: 'success', value: 42 }, [1, 'two', null], 'text', 0, false, null]
  for (const result of results) {
    const outcome = await run({ channel: channel({ ok: true, result }), stdoutTruncated: true, durationMs: 77 })
    t.same(outcome, {
      ok: true,
      result,
      resultJson: Buffer.from(JSON.stringify(result)),
      stdout: 'printed\n',
      stderr: 'warned\n',
      stdoutTruncated: true,
      stderrTruncated: false,
      durationMs: 77
    }, JSON.stringify(result))
  }
})

t.test('a success message with a non-zero exit is not a success', async t => {
  const outcome = await run({ channel: channel({ ok: true, result: 1 }), exitCode: 3 })
  t.match(failure(outcome), { code: 'CRASHED', details: { exitCode: 3 } })
})

t.test('every harness error code is passed through with its message and details', async t => {
  const codes = [
    'SYNTAX_ERROR', 'MISSING_MAIN', 'MAIN_NOT_CALLABLE', 'MAIN_RAISED',
    'RESULT_NOT_JSON', 'RESULT_TOO_LARGE', 'MEMORY_LIMIT_EXCEEDED', 'TIME_LIMIT_EXCEEDED'
  ]
  for (const code of codes) {
    for (const exitCode of [0, 1]) {
      const outcome = await run({
        exitCode,
        channel: channel({ ok: false, code, message: `text of ${code}`, exception: 'ValueError', traceback: 'Traceback ...', line: 3, column: 0 })
      })
      t.same(failure(outcome), {
        code,
        message: `text of ${code}`,
        details: { exception: 'ValueError', traceback: 'Traceback ...', line: 3, column: 0 }
      }, `${code}, exit ${exitCode}`)
      t.equal(outcome.stdout, 'printed\n', `${code}: the output travels with the error`)
      t.equal(outcome.stderr, 'warned\n')
    }
  }
})

t.test('a harness error without optional fields has empty details', async t => {
  const outcome = await run({ exitCode: 1, channel: channel({ ok: false, code: 'MISSING_MAIN', message: 'no main' }) })
  t.same(failure(outcome), { code: 'MISSING_MAIN', message: 'no main', details: {} })
})

t.test('a malformed result channel is CRASHED, never a success or the message\'s own words', async t => {
  const table: Array<{ name: string, bytes: Buffer }> = [
    { name: 'invalid JSON', bytes: Buffer.from('{"ok": true, "result": ') },
    { name: 'invalid UTF-8', bytes: Buffer.concat([Buffer.from('{"ok":true,"result":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]) },
    { name: 'JSON null', bytes: channel(null) },
    { name: 'a bare result', bytes: channel(42) },
    { name: 'success with an extra key', bytes: channel({ ok: true, result: 1, extra: 2 }) },
    { name: 'success without result', bytes: channel({ ok: true }) },
    { name: 'error with an extra key', bytes: channel({ ok: false, code: 'MAIN_RAISED', message: 'm', hacked: 'x' }) },
    { name: 'ok is a string', bytes: channel({ ok: 'true', result: 1 }) },
    { name: 'unknown code', bytes: channel({ ok: false, code: 'PWNED', message: 'm' }) },
    { name: 'code CRASHED is not the harness\'s to send', bytes: channel({ ok: false, code: 'CRASHED', message: 'm' }) },
    { name: 'message is a number', bytes: channel({ ok: false, code: 'MAIN_RAISED', message: 5 }) },
    { name: 'message missing', bytes: channel({ ok: false, code: 'MAIN_RAISED' }) },
    { name: 'message too long', bytes: channel({ ok: false, code: 'MAIN_RAISED', message: 'm'.repeat(65_537) }) },
    { name: 'exception too long', bytes: channel({ ok: false, code: 'MAIN_RAISED', message: 'm', exception: 'E'.repeat(1025) }) },
    { name: 'exception is a number', bytes: channel({ ok: false, code: 'MAIN_RAISED', message: 'm', exception: 1 }) },
    { name: 'traceback is an object', bytes: channel({ ok: false, code: 'MAIN_RAISED', message: 'm', traceback: {} }) },
    { name: 'line is not an integer', bytes: channel({ ok: false, code: 'SYNTAX_ERROR', message: 'm', line: 1.5 }) },
    { name: 'line is negative', bytes: channel({ ok: false, code: 'SYNTAX_ERROR', message: 'm', line: -1 }) },
    { name: 'column is a string', bytes: channel({ ok: false, code: 'SYNTAX_ERROR', message: 'm', column: '2' }) },
    { name: 'two messages', bytes: Buffer.concat([channel({ ok: true, result: 1 }), channel({ ok: true, result: 2 })]) }
  ]
  for (const { name, bytes } of table) {
    for (const exitCode of [0, 1]) {
      const outcome = await run({ channel: bytes, exitCode })
      const { code, message, details } = failure(outcome)
      t.equal(code, 'CRASHED', `${name}, exit ${exitCode}`)
      t.match(message, /malformed result message/, `${name}: says why`)
      t.same(details, {}, `${name}: nothing from the message leaks into details`)
    }
  }
})

/** `depth` nested lists around `inner`, as JSON text. */
const nested = (depth: number, inner = ''): string => '['.repeat(depth) + inner + ']'.repeat(depth)

t.test(`a channel nested deeper than MAX_CHANNEL_DEPTH (${MAX_CHANNEL_DEPTH}) is malformed, and the reply can be serialized`, async t => {
  const table: Array<{ name: string, text: string }> = [
    { name: '200,000 nested lists (a script writing on the channel itself)', text: `{"ok":true,"result":${nested(200_000)}}` },
    { name: 'one level past the bound, envelope included', text: `{"ok":true,"result":${nested(MAX_CHANNEL_DEPTH)}}` },
    { name: 'nested objects', text: `{"ok":true,"result":${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}}` },
    { name: 'deep nesting in an error message\'s extra field', text: `{"ok":false,"code":"MAIN_RAISED","message":"m","traceback":${nested(100_000)}}` }
  ]
  for (const { name, text } of table) {
    const outcome = await run({ channel: Buffer.from(text), exitCode: 0 })
    t.match(failure(outcome), { code: 'CRASHED', message: /malformed result message/ }, name)
    t.doesNotThrow(() => JSON.stringify(outcome), `${name}: the outcome serializes`)
  }
})

t.test('a result nested as deep as the harness allows (200 levels, plus the envelope) comes back intact', async t => {
  for (const depth of [150, 200, MAX_CHANNEL_DEPTH - 1]) {
    const result: unknown = JSON.parse(nested(depth, '"leaf"'))
    const outcome = await run({ channel: channel({ ok: true, result }), exitCode: 0 })
    t.same(outcome.ok ? outcome.result : outcome, result, `depth ${depth}`)
  }
})

t.test('channel overflow is RESULT_TOO_LARGE naming the limit, whatever else happened', async t => {
  const table: Overrides[] = [
    { exitCode: null, signal: 'SIGKILL' },
    { exitCode: 0, channel: channel({ ok: true, result: 1 }) },
    { exitCode: null, signal: 'SIGTERM', timedOut: true }
  ]
  for (const overrides of table) {
    const outcome = await run({ ...overrides, channelOverflow: true })
    t.match(failure(outcome), { code: 'RESULT_TOO_LARGE', message: String(limits.resultBytes) }, JSON.stringify(overrides))
  }
})

t.test('a wall timeout or an abort is TIME_LIMIT_EXCEEDED, even with a result on the channel', async t => {
  const table = [
    { name: 'timed out', overrides: { timedOut: true }, message: /wall-time limit of 10000 ms/ },
    { name: 'aborted', overrides: { aborted: true }, message: /shutting down/ }
  ]
  for (const { name, overrides, message } of table) {
    for (const extra of [{ exitCode: null, signal: 'SIGTERM' as const }, { exitCode: 0, channel: channel({ ok: true, result: 1 }) }]) {
      const outcome = await run({ ...extra, ...overrides })
      t.match(failure(outcome), { code: 'TIME_LIMIT_EXCEEDED', message }, `${name}, ${JSON.stringify(extra.exitCode)}`)
    }
  }
})

t.test('SIGXCPU, from the launcher (128+24) or the process itself, is TIME_LIMIT_EXCEEDED naming the CPU limit', async t => {
  for (const overrides of [{ exitCode: 128 + 24 }, { exitCode: null, signal: 'SIGXCPU' as const }]) {
    const outcome = await run(overrides, true)
    t.match(failure(outcome), { code: 'TIME_LIMIT_EXCEEDED', message: /10 s of CPU time/ }, JSON.stringify(overrides))
  }
})

t.test('SIGKILL nobody of ours sent: memory under a cgroup before the CPU budget is spent, else CPU time', async t => {
  const table = [
    { name: 'exit 137, cgroup, short run', overrides: { exitCode: 137, durationMs: 300 }, memoryByCgroup: true, code: 'MEMORY_LIMIT_EXCEEDED', message: /512 MiB of memory/ },
    { name: 'signal SIGKILL, cgroup, short run', overrides: { exitCode: null, signal: 'SIGKILL' as const, durationMs: 300 }, memoryByCgroup: true, code: 'MEMORY_LIMIT_EXCEEDED', message: /512 MiB/ },
    { name: 'exit 137, cgroup, CPU budget spent', overrides: { exitCode: 137, durationMs: 10_000 }, memoryByCgroup: true, code: 'TIME_LIMIT_EXCEEDED', message: /10 s of CPU time/ },
    { name: 'exit 137, no cgroup, short run', overrides: { exitCode: 137, durationMs: 300 }, memoryByCgroup: false, code: 'TIME_LIMIT_EXCEEDED', message: /10 s of CPU time/ },
    { name: 'signal SIGKILL, no cgroup', overrides: { exitCode: null, signal: 'SIGKILL' as const, durationMs: 11_000 }, memoryByCgroup: false, code: 'TIME_LIMIT_EXCEEDED', message: /CPU time/ }
  ]
  for (const { name, overrides, memoryByCgroup, code, message } of table) {
    t.match(failure(await run(overrides, memoryByCgroup)), { code, message }, name)
  }
})

t.test('death by another signal is CRASHED naming the signal', async t => {
  const table = [
    { name: 'exit 139', overrides: { exitCode: 139 }, signal: 'SIGSEGV' },
    { name: 'exit 134', overrides: { exitCode: 134 }, signal: 'SIGABRT' },
    { name: 'exit 129', overrides: { exitCode: 129 }, signal: 'SIGHUP' },
    { name: 'signal SIGSEGV', overrides: { exitCode: null, signal: 'SIGSEGV' as const }, signal: 'SIGSEGV' },
    { name: 'signal SIGTERM', overrides: { exitCode: null, signal: 'SIGTERM' as const }, signal: 'SIGTERM' },
    { name: 'exit 128+40, a real-time signal without a name', overrides: { exitCode: 168 }, signal: 'signal 40' }
  ]
  for (const { name, overrides, signal } of table) {
    t.same(failure(await run(overrides)), {
      code: 'CRASHED',
      message: `the script was killed by ${signal}`,
      details: { signal }
    }, name)
  }
})

t.test('an exit without a result message and without a signal is CRASHED with the exit code', async t => {
  const table = [
    { exitCode: 0, expected: 0 },
    { exitCode: 1, expected: 1 },
    { exitCode: 128, expected: 128 },
    { exitCode: 193, expected: 193 },
    { exitCode: 255, expected: 255 },
    { exitCode: null, expected: -1 }
  ]
  for (const { exitCode, expected } of table) {
    t.same(failure(await run({ exitCode })), {
      code: 'CRASHED',
      message: `the script exited with status ${String(exitCode)} before returning a result`,
      details: { exitCode: expected }
    }, `exit ${String(exitCode)}`)
  }
})

t.test('a process that could not start throws its spawn error', async t => {
  const error = Object.assign(new Error('spawn nsjail ENOENT'), { code: 'ENOENT' })
  await t.rejects(run({ spawnError: error, exitCode: null }), error)
})

t.test('stdout and stderr with invalid UTF-8 are decoded leniently', async t => {
  const outcome = await run({
    stdout: Buffer.concat([Buffer.from('ok '), Buffer.from([0xff]), Buffer.from(' é')]),
    stderr: Buffer.from([0xc3]), // a truncated two-byte sequence
    channel: channel({ ok: true, result: null })
  })
  t.equal(outcome.ok, true, 'bad output bytes do not fail the run')
  t.equal(outcome.stdout, 'ok \uFFFD é')
  t.equal(outcome.stderr, '\uFFFD')
})

t.test('returned files: checked as the harness keeps them, sized and typed by the server', async t => {
  const ok = async (extra: Record<string, unknown>): Promise<RunOutcome> => await run({ channel: channel({ ok: true, result: 1, ...extra }) })
  const png = Buffer.from([0x89, 0x50, 0x4e, 0x47]).toString('base64')
  const good = await ok({
    files: [{ path: 'report.txt', encoding: 'utf8', content: 'héllo' }, { path: 'figures/1.png', encoding: 'base64', content: png }],
    leftOut: [{ path: 'env', reason: 'a symbolic link (not followed)' }]
  })
  t.match(good, {
    ok: true,
    files: [
      { path: 'report.txt', size: 6, mediaType: 'text/plain', encoding: 'utf8', content: 'héllo' },
      { path: 'figures/1.png', size: 4, mediaType: 'image/png', encoding: 'base64', content: png }
    ],
    filesLeftOut: [{ path: 'env', reason: 'a symbolic link (not followed)' }]
  })
  t.notOk('files' in await ok({}) || 'filesLeftOut' in await ok({}), 'none: neither field')
  t.notOk('files' in await ok({ leftOut: [{ path: 'f', reason: 'a FIFO' }] }), 'only files left out: no files field')

  const forged: Array<[string, Record<string, unknown>]> = [
    ['a path that escapes', { files: [{ path: '../x', encoding: 'utf8', content: '' }] }],
    ['an absolute path', { files: [{ path: '/etc/passwd', encoding: 'utf8', content: '' }] }],
    ['a path twice', { files: [{ path: 'a', encoding: 'utf8', content: '' }, { path: 'a', encoding: 'utf8', content: '' }] }],
    ['a file where another needs a directory', { files: [{ path: 'f/1.png/a.txt', encoding: 'utf8', content: '' }, { path: 'f/1.png', encoding: 'utf8', content: '' }] }],
    ['bad base64', { files: [{ path: 'a', encoding: 'base64', content: 'abc' }] }],
    ['an unknown encoding', { files: [{ path: 'a', encoding: 'hex', content: '' }] }],
    ['more entries than LIMIT_FILES_OUT', { files: Array.from({ length: 101 }, (_, i) => ({ path: `f${i}`, encoding: 'utf8', content: '' })) }],
    ['files and left-out entries together over the count', { files: Array.from({ length: 60 }, (_, i) => ({ path: `f${i}`, encoding: 'utf8', content: '' })), leftOut: Array.from({ length: 41 }, (_, i) => ({ path: `l${i}`, reason: 'a FIFO' })) }],
    ['more bytes than LIMIT_FILES_OUT_BYTES', { files: [{ path: 'a', encoding: 'utf8', content: 'x'.repeat(8 * 1024 * 1024 + 1) }] }],
    ['an empty list', { files: [] }],
    ['an extra field', { files: [{ path: 'a', encoding: 'utf8', content: '', mediaType: 'text/html' }] }]
  ]
  for (const [name, extra] of forged) {
    t.match(await ok(extra), { ok: false, code: 'CRASHED', message: /malformed/ }, `deny: ${name}`)
  }
  t.match(await ok({ files: Array.from({ length: 100 }, (_, i) => ({ path: `f${i}`, encoding: 'utf8', content: '' })) }), { ok: true }, 'allow: exactly LIMIT_FILES_OUT')
  t.match(await ok({ files: [{ path: 'a', encoding: 'utf8', content: 'x'.repeat(8 * 1024 * 1024) }] }), { ok: true }, 'allow: exactly LIMIT_FILES_OUT_BYTES')
})

t.test('OUTPUT_TOO_LARGE carries the counts as details', async t => {
  const outcome = await run({ channel: channel({ ok: false, code: 'OUTPUT_TOO_LARGE', message: 'the script left 2 files of 9 bytes', outputFiles: 2, outputBytes: 9 }) })
  t.match(outcome, { ok: false, code: 'OUTPUT_TOO_LARGE', details: { outputFiles: 2, outputBytes: 9 } })
})

/** A success message around main()'s JSON text, as a script writing on the channel itself would. */
const written = (resultText: string, rest = ''): Buffer => Buffer.from(`{"ok":true,"result":${resultText}${rest}}`)

t.test('deny/allow: values the harness refuses are refused on the channel too, RESULT_NOT_JSON in its words', async t => {
  const deny: Array<[string, string]> = [
    ['"\\ud800"', 'result is a str with a lone surrogate, which is not valid Unicode'],
    ['{"a": ["x", "\\udc00"]}', 'result[\'a\'][1] is a str with a lone surrogate, which is not valid Unicode'],
    ['{"\\ud800": 1}', 'result has a key \'\\ud800\' with a lone surrogate, which is not valid Unicode'],
    ['[1e400]', 'result[0] is 1e400, inf as a float, which is not JSON (NaN and Infinity are not numbers in JSON)'],
    ['18446744073709551617', 'result is an int beyond ±(2**53 - 1), which JSON readers cannot hold exactly; return it as a str'],
    ['[-9007199254740992]', 'result[0] is an int beyond ±(2**53 - 1), which JSON readers cannot hold exactly; return it as a str']
  ]
  for (const [text, where] of deny) {
    t.same(failure(await run({ channel: written(text) })), { code: 'RESULT_NOT_JSON', message: `main() returned something that is not JSON: ${where}`, details: {} }, `deny: ${text}`)
  }
  const allow: Array<[string, unknown]> = [
    ['"\\ud83d\\ude00"', '😀'], ['[1.7976931348623157e308, 1e-400]', [1.7976931348623157e308, 0]],
    ['[9007199254740991, -9007199254740991]', [9007199254740991, -9007199254740991]], ['9007199254740992.0', 9007199254740992]
  ]
  for (const [text, value] of allow) t.match(await run({ channel: written(text) }), { ok: true, result: value }, `allow: ${text}`)
  t.match(failure(await run({ channel: written('"\\ud800"'), exitCode: 1 })), { code: 'CRASHED', details: { exitCode: 1 } }, 'a success with a non-zero exit is no success, whatever it holds')
})

t.test('a value the harness never writes outside the result makes the message malformed', async t => {
  const table = [
    '{"ok":false,"code":"SYNTAX_ERROR","message":"m","line":1e400}',
    '{"ok":false,"code":"MAIN_RAISED","message":"\\ud800"}',
    '{"ok":false,"code":"OUTPUT_TOO_LARGE","message":"m","outputFiles":18446744073709551617}',
    '{"ok":true,"result":1,"leftOut":[{"path":"\\udc00","reason":"a FIFO"}]}'
  ]
  for (const text of table) t.match(failure(await run({ channel: Buffer.from(text) })), { code: 'CRASHED', message: /malformed result message/ }, text)
})

t.test('deny/allow: main()\'s JSON over LIMIT_RESULT_BYTES is RESULT_TOO_LARGE, at it a success, the scan stopped soon past it', async t => {
  const tooLarge = { code: 'RESULT_TOO_LARGE', message: `main() returned more than ${limits.resultBytes} bytes of JSON`, details: {} }
  const string = `"${'x'.repeat(limits.resultBytes - 2)}"`
  t.match(await run({ channel: written(string) }), { ok: true }, 'allow: a string of exactly the limit')
  t.same(failure(await run({ channel: written(string.replace('"x', '"xx')) })), tooLarge, 'deny: one byte over')
  const zeros = `[${'0,'.repeat(limits.resultBytes / 2 - 1)}0]`
  t.match(await run({ channel: written(zeros.slice(0, -3) + ']') }), { ok: true }, 'allow: a list of exactly the limit')
  t.same(failure(await run({ channel: written(zeros) })), tooLarge, 'deny: one byte over')
  t.same(failure(await run({ channel: written(zeros + ' '.repeat(1000), '"x') })), tooLarge, 'deny: found before the rest is read')
  t.same(failure(await run({ channel: written(`[${zeros}, 1]`), exitCode: 1 })), tooLarge, 'whatever follows and however it ended')
})

t.test('the result travels as the text the sandbox wrote, parsed only when read', async t => {
  const text = '[1.0, 2.50, "é", {"a" : 1e2}]'
  const outcome = await run({ channel: written(text) })
  if (!outcome.ok) throw new Error('expected a success')
  t.equal(outcome.resultJson.toString(), text, 'its bytes, spaces and all')
  t.same(outcome.result, [1, 2.5, 'é', { a: 100 }])
  t.equal(outcome.result, outcome.result, 'parsed once')
  t.match(failure(await run({ channel: written('1', ',"result":2') })), { code: 'CRASHED', message: /malformed/ }, 'deny: "result" twice')
  t.match(failure(await run({ channel: Buffer.from('{"ok":true,"result":1,"r\\u0065sult":2}') })), { code: 'CRASHED', message: /malformed/ }, 'deny: twice, once escaped')
})

t.test('the channel costs a scan, never a parse of main()\'s value or of an envelope stuffed with values', async t => {
  const objects = `[${'{},'.repeat(limits.resultBytes / 3 - 1)}{}]` // 8 MiB of [{}]: 2.8 million objects
  const { value: outcomes, largest } = await largestParse(async () => [
    await run({ channel: written(objects) }),
    await run({ channel: Buffer.from(`{"ok":false,"code":"MAIN_RAISED","message":"m","traceback":${objects}}`) }),
    await run({ channel: written('1', `,"leftOut":[${'{},'.repeat(envelopeValues(limits))}{}]`) })
  ])
  t.match(outcomes, [{ ok: true }, { ok: false, code: 'CRASHED' }, { ok: false, code: 'CRASHED' }])
  t.ok(largest < 100, `the largest text parsed: ${largest} characters`)
  t.equal(envelopeValues(limits), 416, 'sixteen, and four per returned file')
})

t.test('the reply: main()\'s JSON as written, then the rest in the order and shape of the 200 schema', async t => {
  const outcome = succeeded(Buffer.from('{"a": 1.0, "b": [1e2]}'), {
    files: [{ path: 'a.txt', size: 1, mediaType: 'text/plain', encoding: 'utf8', content: 'x' }],
    filesLeftOut: [{ path: 'l', reason: 'a FIFO' }],
    stdout: 'out',
    stderr: 'err',
    stdoutTruncated: true,
    stderrTruncated: false,
    durationMs: 3
  })
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0' }), backends: [new FakeBackend('nsjail', { run: outcome })] })
  t.teardown(async () => await app.close())
  const reply = await app.inject({ method: 'POST', url: '/execute', payload: { script: 'x' } })
  t.equal(reply.statusCode, 200)
  t.equal(reply.headers['content-type'], 'application/json; charset=utf-8')
  // The schema's serializer writes the required fields first, then those present of the others:
  // the order replies have always had.
  t.equal(reply.body, '{"result":{"a": 1.0, "b": [1e2]},"stdout":"out","stderr":"err","backend":"nsjail",' +
    '"files":[{"path":"a.txt","size":1,"mediaType":"text/plain","encoding":"utf8","content":"x"}],"filesLeftOut":[{"path":"l","reason":"a FIFO"}],"stdoutTruncated":true}')
})

t.test('nsjail itself killed by a signal from outside (not our timer, an abort or the channel cap): CRASHED, never the script\'s memory or CPU', async t => {
  for (const memoryByCgroup of [true, false]) {
    const outcome = undoExitStatusSignal(spawned({ signal: 'SIGKILL', stdout: Buffer.from('partial') }))
    t.ok('ok' in outcome, 'an outcome, not a process to interpret')
    if (!('ok' in outcome)) continue
    t.match(failure(outcome), { code: 'CRASHED', message: 'the sandbox (nsjail) was killed by SIGKILL from outside before the script reported a status' })
    t.equal(outcome.stdout, 'partial', 'with what the script printed until then')
    // Allow: the same signal with our own reason for it is read as before.
    const timedOut = undoExitStatusSignal(spawned({ signal: 'SIGKILL', timedOut: true }))
    t.notOk('ok' in timedOut, `ours (the wall timer): interpreted as usual (memory by cgroup: ${String(memoryByCgroup)})`)
    t.match(failure(await run({ exitCode: 128 + 9 }, memoryByCgroup)), { code: memoryByCgroup ? 'MEMORY_LIMIT_EXCEEDED' : 'TIME_LIMIT_EXCEEDED' }, 'the child killed (nsjail\'s status 137): as before')
  }
  t.match(failure(undoExitStatusSignal(spawned({ signal: 99 })) as RunOutcome), { message: /killed by signal 99 from outside/ })
  for (const ours of [{ aborted: true }, { channelOverflow: true }]) t.notOk('ok' in undoExitStatusSignal(spawned({ signal: 'SIGKILL', ...ours })), `${Object.keys(ours)[0] ?? ''}: ours, interpreted as usual`)
})
