// The command-line client's logic (src/cli.ts is the executable): `pysandbox run SCRIPT` sends
// one script (with its input, its standard input and files for its working directory) to a
// PySandbox server and prints what came back. The script's stdout goes to stdout and its stderr
// to stderr, then the result as one line of JSON on stdout; with --json, only the whole reply
// body, as one line of JSON on stdout, whatever the reply. The files the script returned are
// saved under --out DIR (a new or empty directory), or only named on stderr. A server that needs
// an API key gets it as `Authorization: Bearer KEY`, from $PYSANDBOX_KEY or --key-file FILE, never
// from an argument (ps and the shell's history would show it); the key is never printed.
// --timeout, --cpu and --memory ask for limits of the run's own (`limits` in the body);
// --request-timeout bounds the whole HTTP request on this side (queue wait and run included).
// `pysandbox --version` prints package.json's version (src/version.ts reads it beside the module).
// Exit status: 0 success; 1 the server refused or the script failed (`CODE: message` on stderr),
// or a returned file was not saved; 2 no reply to use: a usage error, an unreadable file, an
// --out DIR that is not new or empty, no PySandbox server at the URL, or no reply within
// --request-timeout (or the 300 s Node's fetch waits for a reply's headers at most).
import { constants } from 'node:fs'
import { lstat, mkdir, open, readFile, readdir, realpath, type FileHandle } from 'node:fs/promises'
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path'
import { buffer } from 'node:stream/consumers'
import { parseArgs } from 'node:util'
import { VERSION } from './version.js'

export const DEFAULT_URL = 'http://localhost:8080'

/** The longest reply Node's fetch waits for: undici's headersTimeout (and bodyTimeout, between
 *  two chunks of the body), 300 s, which fetch() gives no way to change without undici's Agent. */
export const FETCH_WAIT_MAX_S = 300

export const USAGE = `usage: pysandbox run [SCRIPT | -] [--url URL] [--input JSON | --input @FILE]
         [--stdin FILE | --stdin -] [--file PATH[=NAME]]... [--out DIR] [--json]
         [--key-file FILE] [--timeout SECONDS] [--cpu SECONDS] [--memory MB]
         [--request-timeout SECONDS]
       pysandbox --version | --help

Runs SCRIPT (a Python file that defines main(); "-" or none: read standard input) on a
PySandbox server and prints its stdout to stdout, its stderr to stderr, then main()'s
return value as JSON on stdout (with --json: only the whole reply, as JSON on stdout).

  -u, --url URL          the server (default: $PYSANDBOX_URL, else ${DEFAULT_URL})
      --input JSON       call main(input) with this JSON value; @FILE: the JSON in FILE
      --stdin FILE       the script's standard input (UTF-8 text) from FILE; "-": from this
                         command's standard input (the script must then be a file)
      --file PATH[=NAME] put the local file PATH in the script's working directory as NAME
                         (default: PATH's base name); repeatable. NAME cannot hold "=", so
                         a PATH that does needs =NAME
      --out DIR          save the files the script returns (what it left under output/, its
                         open figures as figures/N.png) under DIR, which must be new (it is
                         made) or empty, else exit 2 before anything is sent; nothing is
                         overwritten and no link followed. Without it they are only listed
      --json             print the server's whole reply instead, success or error alike, as
                         one line of JSON on stdout (as sent; a key its message quotes is
                         hidden); returned files are then saved with --out, never listed
      --key-file FILE    the API key, for a server that needs one: the first line of FILE
                         (default: $PYSANDBOX_KEY). There is no --key: a key given as an
                         argument shows in ps and stays in the shell's history
      --timeout SECONDS  the run's wall-time limit (decimals allowed: 0.5)
      --cpu SECONDS      the run's CPU-time limit, in whole seconds
      --memory MB        the run's memory limit, in MB
                         (without them, the server's defaults; over its ceilings: refused)
      --request-timeout SECONDS
                         give up on the request after this long, its wait in the server's
                         queue included (decimals allowed, at most ${FETCH_WAIT_MAX_S}); the server then
                         stops the run. Default: none of ours, but Node's fetch waits at most
                         ${FETCH_WAIT_MAX_S} s for a reply to start, so no longer run can be waited for
  -V, --version          print "pysandbox VERSION"
  -h, --help             this help

exit status: 0 success; 1 the script failed or the server refused it (CODE: message on
stderr; UNAUTHORIZED: no key, or not one it takes), or a returned file was not saved;
2 a usage error, an unreadable file, an --out DIR that is not new or empty, no server
at the URL, or no reply within --request-timeout (or ${FETCH_WAIT_MAX_S} s)`

export interface Io {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean }
  stdout: NodeJS.WritableStream
  stderr: NodeJS.WritableStream
  env: Record<string, string | undefined>
}

export const EXIT = { ok: 0, failed: 1, usage: 2 } as const

interface Reply {
  result?: unknown
  stdout?: string
  stderr?: string
  stdoutTruncated?: boolean
  stderrTruncated?: boolean
  /** Untrusted: whatever the server sent. */
  files?: unknown
  filesLeftOut?: unknown
  code?: string
  message?: string
  traceback?: string
  requestId?: string
}

export class UsageError extends Error {}

/** What to run and with what; the URL is that of POST /execute. */
export interface Command {
  /** The script's file, or "-": standard input. */
  file: string
  url: URL
  /** --input: the JSON value given, or the file that holds it. */
  input?: { value: unknown } | { file: string }
  /** --stdin: the file, or "-": standard input. */
  stdin?: string
  /** --file: each local file and its name in the working directory. */
  files: Array<{ path: string, name: string }>
  /** --out: where returned files are saved. */
  out?: string
  /** The API key: $PYSANDBOX_KEY's value, or the file (--key-file) whose first line it is. */
  key?: { env: string } | { file: string }
  /** --timeout, --cpu, --memory: the body's `limits`, present only when one was given. */
  limits?: Limits
  /** --json: the reply body printed as it is, instead of what it holds. */
  json?: true
  /** --request-timeout: the whole request is given up after this many milliseconds. */
  requestTimeoutMs?: number
}

/** --help or --version: something to print instead of a run. */
export interface Show { show: 'help' | 'version' }

/** A run's own limits, as the body's `limits` names them; absent: the server's defaults. */
export interface Limits {
  wallMs?: number
  cpuSeconds?: number
  memoryMb?: number
}

/** A key as a Bearer token can carry it: printable ASCII, no space (RFC 6750's b64token is narrower). */
const KEY_CHARACTERS = /^[\x21-\x7e]+$/

const NO_KEY_OPTION = '--key is not taken: a key on the command line shows in ps and stays in the shell\'s history; ' +
  'set PYSANDBOX_KEY or use --key-file FILE'

/** Throws UsageError (naming where the key came from, never the key) unless `key` can be sent. */
function checkKey (key: string, from: string): string {
  if (key === '') throw new UsageError(`${from} is empty: give the key there (or no key at all for a server that needs none)`)
  if (!KEY_CHARACTERS.test(key)) throw new UsageError(`${from} holds whitespace, a control character or a character outside ASCII, which a key never does`)
  return key
}

/** The arguments. Throws UsageError. */
export function parseCommand (argv: string[], env: Io['env']): Show | Command {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        url: { type: 'string', short: 'u' },
        input: { type: 'string' },
        stdin: { type: 'string' },
        file: { type: 'string', multiple: true },
        out: { type: 'string' },
        'key-file': { type: 'string' },
        timeout: { type: 'string' },
        cpu: { type: 'string' },
        memory: { type: 'string' },
        json: { type: 'boolean' },
        'request-timeout': { type: 'string' },
        version: { type: 'boolean', short: 'V' },
        help: { type: 'boolean', short: 'h' }
      }
    })
  } catch (error) {
    // An option given after a --key VALUE is seen first: --key's own message comes first.
    if (keyOptionGiven(argv)) throw new UsageError(NO_KEY_OPTION)
    throw new UsageError((error as Error).message)
  }
  const { values, positionals } = parsed
  if (values.help === true) return { show: 'help' }
  if (values.version === true) return { show: 'version' }
  const [command, file = '-', ...extra] = positionals
  if (command !== 'run') throw new UsageError(command === undefined ? 'no command' : `unknown command "${command}"`)
  if (extra.length > 0) throw new UsageError(`one script at a time (got also ${extra.join(' ')})`)
  if (values.stdin === '-' && file === '-') throw new UsageError('--stdin - reads standard input, so the script must come from a file')
  const base = values.url ?? (env.PYSANDBOX_URL || DEFAULT_URL)
  let url: URL
  try {
    url = new URL('execute', base.endsWith('/') ? base : `${base}/`)
  } catch {
    throw new UsageError(`not a URL: ${base}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`not an http(s) URL: ${base}`)
  let key: Command['key']
  if (values['key-file'] !== undefined) {
    if (values['key-file'] === '') throw new UsageError('--key-file needs a file name')
    key = { file: values['key-file'] }
  } else if (env.PYSANDBOX_KEY !== undefined) {
    key = { env: checkKey(env.PYSANDBOX_KEY, 'PYSANDBOX_KEY') }
  }
  const limits: Limits = {
    ...(values.timeout === undefined ? {} : { wallMs: parseSeconds('--timeout', values.timeout) }),
    ...(values.cpu === undefined ? {} : { cpuSeconds: parseCount('--cpu', values.cpu, 'whole seconds') }),
    ...(values.memory === undefined ? {} : { memoryMb: parseCount('--memory', values.memory, 'megabytes') })
  }
  const requestTimeout = values['request-timeout']
  return {
    file,
    url,
    ...(values.input === undefined ? {} : { input: parseInput(values.input) }),
    ...(values.stdin === undefined ? {} : { stdin: values.stdin }),
    files: (values.file ?? []).map(parseFileOption),
    ...(values.out === undefined ? {} : { out: values.out }),
    ...(key === undefined ? {} : { key }),
    ...(Object.keys(limits).length === 0 ? {} : { limits }),
    ...(values.json === true ? { json: true } : {}),
    ...(requestTimeout === undefined ? {} : { requestTimeoutMs: parseSeconds('--request-timeout', requestTimeout, FETCH_WAIT_MAX_S) })
  }
}

/** --key or --key=VALUE among the options (not after "--", which ends them). */
function keyOptionGiven (argv: string[]): boolean {
  const end = argv.indexOf('--')
  return (end === -1 ? argv : argv.slice(0, end)).some(arg => arg === '--key' || arg.startsWith('--key='))
}

/** --timeout, --request-timeout: seconds, decimals allowed, above 0 (and at most `max`); in
 *  whole milliseconds. */
function parseSeconds (option: string, text: string, max = Number.POSITIVE_INFINITY): number {
  const ms = /^(\d+\.?\d*|\.\d+)$/.test(text) ? Math.round(Number(text) * 1000) : Number.NaN
  if (!Number.isSafeInteger(ms) || ms < 1 || ms > max * 1000) {
    const range = max === Number.POSITIVE_INFINITY ? 'at least 0.001' : `at least 0.001, at most ${max}`
    throw new UsageError(`${option} ${text}: give seconds, a number above 0 such as 2 or 0.5 (${range})`)
  }
  return ms
}

/** --cpu, --memory: a whole number above 0. */
function parseCount (option: string, text: string, unit: string): number {
  const count = /^\d+$/.test(text) ? Number(text) : Number.NaN
  if (!Number.isSafeInteger(count) || count < 1) throw new UsageError(`${option} ${text}: give ${unit}, a whole number above 0`)
  return count
}

function parseInput (text: string): { value: unknown } | { file: string } {
  // No JSON text starts with "@", so "@FILE" is never a JSON value.
  if (text.startsWith('@')) {
    if (text === '@') throw new UsageError('--input @FILE needs a file name')
    return { file: text.slice(1) }
  }
  try {
    return { value: JSON.parse(text) }
  } catch (error) {
    throw new UsageError(`--input is not JSON (${(error as Error).message}); --input @FILE reads it from a file`)
  }
}

/** PATH[=NAME], split at the last "=": a local path may hold "=" (then give NAME), a NAME not. */
function parseFileOption (option: string): { path: string, name: string } {
  const at = option.lastIndexOf('=')
  const path = at === -1 ? option : option.slice(0, at)
  const name = at === -1 ? basename(option) : option.slice(at + 1)
  if (path === '' || name === '') throw new UsageError(`--file ${option}: give PATH or PATH=NAME, neither empty`)
  return { path, name }
}

/** A local file's bytes; throws an Error saying which file could not be read. */
async function readLocal (path: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (error) {
    throw new Error(`cannot read ${path}: ${(error as Error).message}`)
  }
}

/** A file's bytes, or standard input's for "-" (with a hint on a terminal). */
async function readSource (io: Io, from: string, what: string): Promise<Buffer> {
  if (from !== '-') return await readLocal(from)
  if (io.stdin.isTTY === true) io.stderr.write(`pysandbox: reading ${what} from standard input (end it with Ctrl-D)\n`)
  try {
    return await buffer(io.stdin)
  } catch (error) {
    throw new Error(`cannot read standard input: ${(error as Error).message}`)
  }
}

/** UTF-8 exactly as it is (a byte order mark kept); throws on bytes that are not UTF-8. */
function strictUtf8 (bytes: Buffer): string {
  return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes)
}

/** The body of POST /execute: every file read; throws an Error (exit 2) for one that cannot be. */
async function requestBody (io: Io, command: Command): Promise<Record<string, unknown>> {
  // Text as an editor means it: a byte order mark dropped, bytes that are not UTF-8 replaced.
  const script = new TextDecoder().decode(await readSource(io, command.file, 'the script'))
  let input: { value: unknown } | undefined
  if (command.input !== undefined) input = 'value' in command.input ? command.input : { value: await inputFrom(command.input.file) }
  let stdin: string | undefined
  if (command.stdin !== undefined) {
    const bytes = await readSource(io, command.stdin, 'the script\'s standard input')
    try {
      stdin = strictUtf8(bytes)
    } catch {
      throw new Error(`--stdin ${command.stdin}: not UTF-8 text, as the script's standard input travels; send bytes with --file`)
    }
  }
  const files = []
  for (const { path, name } of command.files) files.push(fileEntry(name, await readLocal(path)))
  return {
    script,
    ...(input === undefined ? {} : { input: input.value }),
    ...(stdin === undefined ? {} : { stdin }),
    ...(files.length === 0 ? {} : { files }),
    ...(command.limits === undefined ? {} : { limits: command.limits })
  }
}

/** The key to send, if any: --key-file's first line (trimmed), or $PYSANDBOX_KEY's value.
 *  Throws an Error (exit 2) for a file that cannot be read or holds no key that can be sent. */
async function apiKey (command: Command): Promise<string | undefined> {
  if (command.key === undefined) return undefined
  if ('env' in command.key) return command.key.env
  const from = `the first line of --key-file ${command.key.file}`
  const line = (await firstLine(command.key.file)).trim()
  // Not the line itself: a key with notes after it would be printed.
  if (line.startsWith('#')) throw new UsageError(`${from} is a comment: the key goes alone on the first line`)
  return checkKey(line, from)
}

/** Longer than any key's line: a key file is read no further (it may be a device or a pipe that never ends). */
const KEY_LINE_MAX = 4096

/** A file's first line (without its newline), read no further than it and KEY_LINE_MAX bytes. */
async function firstLine (path: string): Promise<string> {
  const bytes = Buffer.alloc(KEY_LINE_MAX)
  let length = 0
  try {
    const handle = await open(path, 'r')
    try {
      while (length < KEY_LINE_MAX && !bytes.subarray(0, length).includes(0x0a)) {
        const { bytesRead } = await handle.read(bytes, length, KEY_LINE_MAX - length, null)
        if (bytesRead === 0) break
        length += bytesRead
      }
    } finally {
      await handle.close()
    }
  } catch (error) {
    throw new Error(`cannot read ${path}: ${(error as Error).message}`)
  }
  const end = bytes.subarray(0, length).indexOf(0x0a)
  if (end === -1 && length === KEY_LINE_MAX) throw new Error(`--key-file ${path}: its first line is over ${KEY_LINE_MAX} bytes, which no key is`)
  return new TextDecoder().decode(bytes.subarray(0, end === -1 ? length : end))
}

/** Where the key sent came from, for the hint after a 401. */
function keySource (command: Command): string | undefined {
  if (command.key === undefined) return undefined
  return 'env' in command.key ? 'PYSANDBOX_KEY' : `--key-file ${command.key.file}`
}

async function inputFrom (file: string): Promise<unknown> {
  const text = new TextDecoder().decode(await readLocal(file))
  try {
    return JSON.parse(text)
  } catch (error) {
    throw new Error(`--input @${file}: not JSON (${(error as Error).message})`)
  }
}

/** A file as it travels: its text when the bytes are UTF-8, else base64. */
function fileEntry (name: string, bytes: Buffer): { path: string, content: string, encoding: 'utf8' | 'base64' } {
  try {
    return { path: name, content: strictUtf8(bytes), encoding: 'utf8' }
  } catch {
    return { path: name, content: bytes.toString('base64'), encoding: 'base64' }
  }
}

// C0 and C1 controls and DEL (NUL among them), lone surrogates, and the marks that reorder text.
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]|\p{Cs}/gu
// eslint-disable-next-line no-control-regex
const NOT_IN_A_PATH = /[\u0000-\u001f\u007f-\u009f]|\p{Cs}/u

/** Text from the server made safe to print on a terminal: what could steer it escaped as \uNNNN. */
function printable (text: string): string {
  return text.replace(UNPRINTABLE, c => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** Why a returned file's path is no place under `root` (an absolute, real directory), or
 *  undefined when it is one: relative, no empty, "." or ".." part, no control character, well-formed
 *  Unicode. The server's rules for the paths it returns; the client checks them again (a server
 *  can be anything). */
export function returnedPathProblem (path: string, root: string): string | undefined {
  if (NOT_IN_A_PATH.test(path)) return 'holds a control character (NUL, newline, ...) or is not valid Unicode'
  if (isAbsolute(path)) return 'is absolute'
  const outside = relative(root, resolve(root, path)).split(sep)[0] === '..'
  if (outside || path.split('/').some(part => part === '' || part === '.' || part === '..')) return 'has an empty, "." or ".." part'
  return undefined
}

const CREATE_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW

/** Writes `bytes` at `path` under `root`, making its directories; refuses (a reason) to go
 *  through or replace anything already there but a real directory. Throws on other errors. */
async function saveFile (root: string, path: string, bytes: Buffer): Promise<string | undefined> {
  const parts = path.split('/')
  const name = parts.pop() as string
  let directory = root
  for (const part of parts) {
    directory = join(directory, part)
    await mkdir(directory).catch((error: NodeJS.ErrnoException) => { if (error.code !== 'EEXIST') throw error })
    // A link to a directory outside would pass for one with stat(): lstat() sees the link.
    if (!(await lstat(directory)).isDirectory()) return `${relative(root, directory)} is already there and is not a directory (a link is never followed)`
  }
  const target = join(directory, name)
  let handle: FileHandle
  try {
    // O_EXCL: nothing there is replaced, and a link there (even a dangling one) is an error, not followed.
    handle = await open(target, CREATE_NEW, 0o666)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    return (await lstat(target)).isSymbolicLink() ? 'a symbolic link is already there (never followed)' : 'it already exists (nothing is overwritten)'
  }
  try {
    await handle.writeFile(bytes)
  } finally {
    await handle.close()
  }
  return undefined
}

/** Reports the returned files and saves them under `out` when given; false when one was refused. */
async function returnedFiles (io: Io, reply: Reply, out: { dir: string, root: string } | undefined): Promise<boolean> {
  let allSaved = true
  const files: unknown[] = Array.isArray(reply.files) ? reply.files : []
  for (const [index, entry] of files.entries()) {
    const { path, content, encoding, mediaType } = Object(entry) as Record<string, unknown>
    const shown = typeof path === 'string' ? printable(path) : `files[${index}]`
    if (typeof path !== 'string' || typeof content !== 'string' || (encoding !== 'utf8' && encoding !== 'base64')) {
      io.stderr.write(`pysandbox: did not save ${shown}: not a file as PySandbox returns one (a path, and content in utf8 or base64)\n`)
      allSaved = false
      continue
    }
    const bytes = Buffer.from(content, encoding)
    if (out === undefined) {
      io.stderr.write(`pysandbox: returned ${shown} (${bytes.length} bytes); use --out DIR to save it\n`)
      continue
    }
    const where = printable(join(out.dir, path))
    let problem: string | undefined
    try {
      problem = returnedPathProblem(path, out.root) ?? await saveFile(out.root, path, bytes)
    } catch (error) {
      problem = `cannot write ${where}: ${(error as Error).message}`
    }
    if (problem === undefined) {
      io.stderr.write(`pysandbox: wrote ${where} (${bytes.length} bytes, ${typeof mediaType === 'string' ? printable(mediaType) : 'no media type'})\n`)
    } else {
      io.stderr.write(`pysandbox: did not save ${shown}: ${problem}\n`)
      allSaved = false
    }
  }
  for (const entry of Array.isArray(reply.filesLeftOut) ? reply.filesLeftOut as unknown[] : []) {
    const { path, reason } = Object(entry) as Record<string, unknown>
    io.stderr.write(`pysandbox: left out ${printable(String(path))}: ${printable(String(reason))}\n`)
  }
  return allSaved
}

/** --out DIR made (with its parents) and resolved, before anything runs; throws an Error (exit 2)
 *  unless it is empty. The files are the script's: in a directory already in use (a project, say)
 *  they could plant new files that mean something there (conftest.py, .envrc, .git/hooks/...),
 *  which no per-file check can tell. */
async function outputDirectory (dir: string): Promise<{ dir: string, root: string }> {
  let root: string
  let entries: string[]
  try {
    await mkdir(dir, { recursive: true })
    root = await realpath(dir)
    entries = await readdir(root)
  } catch (error) {
    throw new Error(`cannot make or read --out ${dir}: ${(error as Error).message}`)
  }
  if (entries.length > 0) throw new Error(`--out ${dir} is not empty: returned files are the script's, so they go to a new or empty directory`)
  return { dir, root }
}

/** Writes the script's output; a missing final newline gets one so the JSON starts its own line. */
function printOutput (io: Io, reply: Reply): void {
  if (reply.stdout) io.stdout.write(reply.stdout.endsWith('\n') ? reply.stdout : `${reply.stdout}\n`)
  if (reply.stderr) io.stderr.write(reply.stderr)
  if (reply.stdoutTruncated === true) io.stderr.write('pysandbox: stdout was truncated at the server\'s limit\n')
  if (reply.stderrTruncated === true) io.stderr.write('pysandbox: stderr was truncated at the server\'s limit\n')
}

// What a key looks like ("psk_" and 43 base64url characters), and what a cut one leaves: hidden in
// every message of ours, so a key given by mistake as a script, a file or a URL is never printed.
const KEY_LIKE = /psk_[A-Za-z0-9_-]{8,}/g

function withoutKeys (text: string): string {
  return text.replace(KEY_LIKE, 'psk_(hidden)')
}

/** What to do about a 401: where a key comes from, and whether the one sent was refused. */
function keyHint (sent: string | undefined): string {
  return sent === undefined
    ? 'no API key was sent: set PYSANDBOX_KEY or use --key-file FILE'
    : `the key from ${sent} was refused: set PYSANDBOX_KEY or use --key-file FILE with a key this server takes`
}

/** The reply body as --json prints it: as sent (main()'s result as the script's json.dumps wrote
 *  it: 1.0 stays 1.0), on one line (a raw line break in JSON text can only be whitespace between
 *  tokens: a proxy's pretty-printing), with whatever looks like a key hidden wherever it is (the
 *  server's message may quote the request; a key's characters need no escaping in JSON). */
function replyLine (text: string): string {
  return withoutKeys(text.replace(/[\r\n]+/g, ' '))
}

/** Says why no reply came (`failure`: what failed, before the reason); resolves to the exit status. */
function noReply (io: Io, url: URL, failure: string, thrown: unknown, signal: AbortSignal | undefined, ms: number | undefined): number {
  const error = thrown as Error & { cause?: Error & { code?: string } }
  if (signal?.aborted === true) {
    io.stderr.write(`pysandbox: no reply within ${(ms as number) / 1000} s (--request-timeout): gave up on the request, and the server stops the run\n`)
  } else if (error.cause?.code === 'UND_ERR_HEADERS_TIMEOUT' || error.cause?.code === 'UND_ERR_BODY_TIMEOUT') {
    io.stderr.write(`pysandbox: no reply from ${url.origin} within ${FETCH_WAIT_MAX_S} s, the longest Node's fetch waits; the server stops the run\n`)
  } else {
    // fetch() says "fetch failed" and puts the reason (ECONNREFUSED, ENOTFOUND) in `cause`.
    io.stderr.write(`pysandbox: ${failure}: ${error.cause?.message ?? error.message}\n`)
  }
  return EXIT.usage
}

/** Runs the command; resolves to the exit status. */
export async function main (argv: string[], io: Io): Promise<number> {
  let command: Command
  try {
    const args = parseCommand(argv, io.env)
    if ('show' in args) {
      io.stdout.write(args.show === 'version' ? `pysandbox ${VERSION}\n` : `${USAGE}\n`)
      return EXIT.ok
    }
    command = args
  } catch (error) {
    io.stderr.write(`pysandbox: ${withoutKeys((error as Error).message)}\n${USAGE}\n`)
    return EXIT.usage
  }
  const { url } = command

  let body: Record<string, unknown>
  let key: string | undefined
  let out: { dir: string, root: string } | undefined
  try {
    key = await apiKey(command)
    body = await requestBody(io, command)
    if (command.out !== undefined) out = await outputDirectory(command.out)
  } catch (error) {
    io.stderr.write(`pysandbox: ${withoutKeys((error as Error).message)}\n`)
    return EXIT.usage
  }

  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (key !== undefined) headers.authorization = `Bearer ${key}`
  // From the request's start to its reply's last byte; the server stops a run whose client left.
  const ms = command.requestTimeoutMs
  const signal = ms === undefined ? undefined : AbortSignal.timeout(ms)
  let response: Response
  try {
    response = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), signal: signal ?? null })
  } catch (error) {
    return noReply(io, url, `cannot reach ${url.origin}`, error, signal, ms)
  }

  let text: string
  let reply: Reply
  try {
    text = await response.text()
  } catch (error) {
    return noReply(io, url, `the reply from ${url.origin} broke off`, error, signal, ms)
  }
  try {
    reply = JSON.parse(text) as Reply
    if (typeof reply !== 'object' || reply === null || Array.isArray(reply)) throw new Error('not an object')
  } catch {
    io.stderr.write(`pysandbox: ${url.href} answered ${response.status} without a JSON object: is it a PySandbox server?\n`)
    return EXIT.usage
  }

  if (command.json === true) {
    const allSaved = !response.ok || out === undefined || await returnedFiles(io, reply, out)
    io.stdout.write(`${replyLine(text)}\n`)
    return response.ok && allSaved ? EXIT.ok : EXIT.failed
  }
  printOutput(io, reply)
  if (response.ok) {
    const allSaved = await returnedFiles(io, reply, out)
    io.stdout.write(`${JSON.stringify(reply.result)}\n`)
    return allSaved ? EXIT.ok : EXIT.failed
  }
  // The server's message may quote the request (a path, a field): a key put there is not printed.
  const lines = [withoutKeys(`${reply.code ?? `HTTP_${response.status}`}: ${reply.message ?? response.statusText}`)]
  if (reply.traceback !== undefined) lines.push(reply.traceback.trimEnd())
  if (response.status === 401) lines.push(keyHint(keySource(command)))
  if (reply.code === 'INTERNAL_ERROR' || reply.code === undefined) lines.push(`request id: ${reply.requestId ?? response.headers.get('x-request-id') ?? 'none'}`)
  const retry = response.headers.get('retry-after')
  if (retry !== null) lines.push(`retry after ${retry} s`)
  io.stderr.write(`${lines.join('\n')}\n`)
  return EXIT.failed
}
