import { constants } from 'node:os'
import t from 'tap'
import type { Limits, RunOutcome } from '../../src/backends/backend.js'
import { undoExitStatusSignal } from '../../src/backends/nsjail/backend.js'
import { MAX_CHANNEL_DEPTH, interpret } from '../../src/backends/outcome.js'
import { nestsWithin } from '../../src/json-depth.js'
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

/** Interpreted as a run under nsjail, which reports its child's death by signal N as 128 + N. */
function run (overrides: Overrides, memoryByCgroup = false): RunOutcome {
  return interpret(undoExitStatusSignal(spawned(overrides)), { limits, memoryByCgroup })
}

/** The failure's code, message and details, or a marker that the run succeeded. */
function failure (outcome: RunOutcome): { code: string, message: string, details: Record<string, string | number> } {
  if (outcome.ok) throw new Error(`expected a failure, got success with ${JSON.stringify(outcome.result)}`)
  return { code: outcome.code, message: outcome.message, details: outcome.details }
}

t.test('a success message and exit 0 is a success carrying the result and the output', async t => {
  const results: unknown[] = [{ msg: 'success', value: 42 }, [1, 'two', null], 'text', 0, false, null]
  for (const result of results) {
    const outcome = run({ channel: channel({ ok: true, result }), stdoutTruncated: true, durationMs: 77 })
    t.same(outcome, {
      ok: true,
      result,
      stdout: 'printed\n',
      stderr: 'warned\n',
      stdoutTruncated: true,
      stderrTruncated: false,
      durationMs: 77
    }, JSON.stringify(result))
  }
})

t.test('a success message with a non-zero exit is not a success', async t => {
  const outcome = run({ channel: channel({ ok: true, result: 1 }), exitCode: 3 })
  t.match(failure(outcome), { code: 'CRASHED', details: { exitCode: 3 } })
})

t.test('every harness error code is passed through with its message and details', async t => {
  const codes = [
    'SYNTAX_ERROR', 'MISSING_MAIN', 'MAIN_NOT_CALLABLE', 'MAIN_RAISED',
    'RESULT_NOT_JSON', 'RESULT_TOO_LARGE', 'MEMORY_LIMIT_EXCEEDED', 'TIME_LIMIT_EXCEEDED'
  ]
  for (const code of codes) {
    for (const exitCode of [0, 1]) {
      const outcome = run({
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
  const outcome = run({ exitCode: 1, channel: channel({ ok: false, code: 'MISSING_MAIN', message: 'no main' }) })
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
      const outcome = run({ channel: bytes, exitCode })
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
    const outcome = run({ channel: Buffer.from(text), exitCode: 0 })
    t.match(failure(outcome), { code: 'CRASHED', message: /malformed result message/ }, name)
    t.doesNotThrow(() => JSON.stringify(outcome), `${name}: the outcome serializes`)
  }
})

t.test('a result nested as deep as the harness allows (200 levels, plus the envelope) comes back intact', async t => {
  for (const depth of [150, 200, MAX_CHANNEL_DEPTH - 1]) {
    const result: unknown = JSON.parse(nested(depth, '"leaf"'))
    const outcome = run({ channel: channel({ ok: true, result }), exitCode: 0 })
    t.same(outcome.ok ? outcome.result : outcome, result, `depth ${depth}`)
  }
})

t.test('nestsWithin counts brackets outside strings only, without recursion', async t => {
  const table: Array<{ text: string, max: number, within: boolean }> = [
    { text: '[]', max: 1, within: true },
    { text: '[[]]', max: 1, within: false },
    { text: '{"a":[{}]}', max: 3, within: true },
    { text: '{"a":[{}]}', max: 2, within: false },
    { text: '"[[[[[[[["', max: 0, within: true },
    { text: '["\\"[[[[", "\\\\"]', max: 1, within: true },
    { text: '["\\"", [[]]]', max: 2, within: false },
    { text: '["é[[", "😀"]', max: 1, within: true },
    { text: nested(1_000_000), max: 1_000_000, within: true }
  ]
  for (const { text, max, within } of table) t.equal(nestsWithin(Buffer.from(text), max), within, `${text.slice(0, 30)} within ${max}`)
})

t.test('channel overflow is RESULT_TOO_LARGE naming the limit, whatever else happened', async t => {
  const table: Overrides[] = [
    { exitCode: null, signal: 'SIGKILL' },
    { exitCode: 0, channel: channel({ ok: true, result: 1 }) },
    { exitCode: null, signal: 'SIGTERM', timedOut: true }
  ]
  for (const overrides of table) {
    const outcome = run({ ...overrides, channelOverflow: true })
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
      const outcome = run({ ...extra, ...overrides })
      t.match(failure(outcome), { code: 'TIME_LIMIT_EXCEEDED', message }, `${name}, ${JSON.stringify(extra.exitCode)}`)
    }
  }
})

t.test('SIGXCPU, from the launcher (128+24) or the process itself, is TIME_LIMIT_EXCEEDED naming the CPU limit', async t => {
  for (const overrides of [{ exitCode: 128 + 24 }, { exitCode: null, signal: 'SIGXCPU' as const }]) {
    const outcome = run(overrides, true)
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
    t.match(failure(run(overrides, memoryByCgroup)), { code, message }, name)
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
    t.same(failure(run(overrides)), {
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
    t.same(failure(run({ exitCode })), {
      code: 'CRASHED',
      message: `the script exited with status ${String(exitCode)} before returning a result`,
      details: { exitCode: expected }
    }, `exit ${String(exitCode)}`)
  }
})

t.test('a process that could not start throws its spawn error', async t => {
  const error = Object.assign(new Error('spawn nsjail ENOENT'), { code: 'ENOENT' })
  t.throws(() => run({ spawnError: error, exitCode: null }), error)
})

t.test('stdout and stderr with invalid UTF-8 are decoded leniently', async t => {
  const outcome = run({
    stdout: Buffer.concat([Buffer.from('ok '), Buffer.from([0xff]), Buffer.from(' é')]),
    stderr: Buffer.from([0xc3]), // a truncated two-byte sequence
    channel: channel({ ok: true, result: null })
  })
  t.equal(outcome.ok, true, 'bad output bytes do not fail the run')
  t.equal(outcome.stdout, 'ok \uFFFD é')
  t.equal(outcome.stderr, '\uFFFD')
})

t.test('returned files: checked as the harness keeps them, sized and typed by the server', async t => {
  const ok = (extra: Record<string, unknown>): RunOutcome => run({ channel: channel({ ok: true, result: 1, ...extra }) })
  const png = Buffer.from([0x89, 0x50, 0x4e, 0x47]).toString('base64')
  const good = ok({
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
  t.notOk('files' in ok({}) || 'filesLeftOut' in ok({}), 'none: neither field')
  t.notOk('files' in ok({ leftOut: [{ path: 'f', reason: 'a FIFO' }] }), 'only files left out: no files field')

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
    t.match(ok(extra), { ok: false, code: 'CRASHED', message: /malformed/ }, `deny: ${name}`)
  }
  t.match(ok({ files: Array.from({ length: 100 }, (_, i) => ({ path: `f${i}`, encoding: 'utf8', content: '' })) }), { ok: true }, 'allow: exactly LIMIT_FILES_OUT')
  t.match(ok({ files: [{ path: 'a', encoding: 'utf8', content: 'x'.repeat(8 * 1024 * 1024) }] }), { ok: true }, 'allow: exactly LIMIT_FILES_OUT_BYTES')
})

t.test('OUTPUT_TOO_LARGE carries the counts as details', async t => {
  const outcome = run({ channel: channel({ ok: false, code: 'OUTPUT_TOO_LARGE', message: 'the script left 2 files of 9 bytes', outputFiles: 2, outputBytes: 9 }) })
  t.match(outcome, { ok: false, code: 'OUTPUT_TOO_LARGE', details: { outputFiles: 2, outputBytes: 9 } })
})
