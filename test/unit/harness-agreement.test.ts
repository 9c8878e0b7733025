// What the Python harness and the TypeScript server must agree on, read from the harness's source:
// the error codes run.py writes on the result channel, and the zygote's frame protocol.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { ERRORS, ERROR_CODES, HARNESS_ERROR_CODES, REQUEST_ERROR_CODES, SCRIPT_ERROR_CODES, SERVICE_ERROR_CODES } from '../../src/errors/codes.js'
import * as errors from '../../src/errors/errors.js'
import { HARNESS_DIR } from '../../src/backends/launch.js'
import { READY, RESULT, STATUS, STDERR, STDOUT, STOP } from '../../src/backends/nsjail/frames.js'
import { MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_PATH_DEPTH, OUTPUT_DIR } from '../../src/files.js'

const source = (name: string): string => readFileSync(join(HARNESS_DIR, name), 'utf8')

/** The names in a Python tuple assignment such as `CODES = (A, B,\n C)`. */
function tupleNames (text: string, name: string): string[] {
  const match = new RegExp(`^${name} = \\(([^)]*)\\)`, 'm').exec(text)
  if (match === null) throw new Error(`no ${name} = (...) in the harness`)
  return (match[1] ?? '').split(',').map(s => s.trim()).filter(s => s !== '')
}

t.test('run.py reports exactly the harness codes of the one list, each a constant equal to its name', async t => {
  const run = source('run.py')
  const names = tupleNames(run, 'CODES')
  t.same([...names].sort(), [...HARNESS_ERROR_CODES].sort())
  for (const name of names) t.match(run, new RegExp(`^${name} = "${name}"`, 'm'), `${name} is "${name}"`)
  // Every code-like literal in run.py is one of them: no code sent that the list lacks (names of
  // environment variables aside).
  const literals = [...run.matchAll(/(?<!environ\.get\(|environ\[)"([A-Z][A-Z_]{4,})"/g)].map(m => m[1])
  t.same(literals.filter(code => !(HARNESS_ERROR_CODES as readonly string[]).includes(code ?? '')), [], 'no other code literal')
})

t.test('the one list: every code has a status of its family, and the families partition it', async t => {
  t.equal(new Set(ERROR_CODES).size, ERROR_CODES.length, 'no code twice')
  t.same(Object.keys(ERRORS).sort(), [...ERROR_CODES].sort(), 'every code has a status and a meaning')
  for (const code of REQUEST_ERROR_CODES) t.ok(ERRORS[code].status >= 400 && ERRORS[code].status < 500, `${code} is 4xx`)
  for (const code of SCRIPT_ERROR_CODES) t.equal(ERRORS[code].status, 422, `${code} is 422`)
  for (const code of SERVICE_ERROR_CODES) t.ok(ERRORS[code].status >= 500, `${code} is 5xx`)
})

t.test('every error class carries a code of the list and its status; only CLIENT_CLOSED (never sent) is outside it', async t => {
  for (const [name, ErrorClass] of Object.entries(errors)) {
    if (typeof ErrorClass !== 'function') continue
    const error = new (ErrorClass as new (...args: unknown[]) => { code: string, statusCode: number })('x', 'y', 'z')
    if (error.code === 'CLIENT_CLOSED') continue
    t.ok((ERROR_CODES as readonly string[]).includes(error.code), `${name}: ${error.code} is listed`)
    t.equal(error.statusCode, ERRORS[error.code as keyof typeof ERRORS].status, `${name}: status`)
  }
})

t.test('workdir.py keeps the path rules of src/files.ts for what it returns', async t => {
  const workdir = source('workdir.py')
  t.match(workdir, new RegExp(`^OUTPUT_DIR = "${OUTPUT_DIR}"$`, 'm'))
  t.match(workdir, new RegExp(`^MAX_PATH_BYTES = ${MAX_PATH_BYTES}$`, 'm'))
  t.match(workdir, new RegExp(`^MAX_NAME_BYTES = ${MAX_NAME_BYTES}$`, 'm'))
  t.match(workdir, new RegExp(`^MAX_PATH_DEPTH = ${MAX_PATH_DEPTH}$`, 'm'))
})

t.test('zygote.py speaks the frame protocol of frames.ts', async t => {
  const zygote = source('zygote.py')
  t.match(zygote, new RegExp(`^STDOUT, STDERR, RESULT, STATUS, READY = ${[STDOUT, STDERR, RESULT, STATUS, READY].join(', ')}$`, 'm'))
  t.match(zygote, new RegExp(`^STOP = 0x${STOP.toString(16).toUpperCase()}\\b`, 'm'))
  t.match(zygote, /^HEADER = struct\.Struct\(">IBI"\)$/m, 'run id u32, stream u8, length u32')
  t.match(zygote, /^REQUEST = struct\.Struct\(">II"\)$/m, 'run id u32, length u32')
})
