// The command-line client's logic (src/cli.ts is the executable): `pysandbox run SCRIPT` sends
// one script to a PySandbox server and prints what came back. The script's stdout goes to
// stdout and its stderr to stderr, then the result as one line of JSON on stdout.
// Exit status: 0 success; 1 the server refused or the script failed (`CODE: message` on stderr);
// 2 a usage error, an unreadable script, or no PySandbox server at the URL.
import { readFile } from 'node:fs/promises'
import { text } from 'node:stream/consumers'
import { parseArgs } from 'node:util'

export const DEFAULT_URL = 'http://localhost:8080'

export const USAGE = `usage: pysandbox run [SCRIPT | -] [--url URL]

Runs SCRIPT (a Python file that defines main(); "-" or none: read standard input) on a
PySandbox server and prints its stdout to stdout, its stderr to stderr, then main()'s
return value as JSON on stdout.

  -u, --url URL   the server (default: $PYSANDBOX_URL, else ${DEFAULT_URL})
  -h, --help      this help

exit status: 0 success; 1 the script failed or the server refused it (CODE: message on
stderr); 2 a usage error, an unreadable script, or no server at the URL`

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
  code?: string
  message?: string
  traceback?: string
  requestId?: string
}

export class UsageError extends Error {}

/** The arguments; the URL is that of POST /execute. Throws UsageError. */
export function parseCommand (argv: string[], env: Io['env']): { help: true } | { help: false, file: string, url: URL } {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { url: { type: 'string', short: 'u' }, help: { type: 'boolean', short: 'h' } }
    })
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  const { values, positionals } = parsed
  if (values.help === true) return { help: true }
  const [command, file = '-', ...extra] = positionals
  if (command !== 'run') throw new UsageError(command === undefined ? 'no command' : `unknown command "${command}"`)
  if (extra.length > 0) throw new UsageError(`one script at a time (got also ${extra.join(' ')})`)
  const base = values.url ?? (env.PYSANDBOX_URL || DEFAULT_URL)
  let url: URL
  try {
    url = new URL('execute', base.endsWith('/') ? base : `${base}/`)
  } catch {
    throw new UsageError(`not a URL: ${base}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`not an http(s) URL: ${base}`)
  return { help: false, file, url }
}

/** Writes the script's output; a missing final newline gets one so the JSON starts its own line. */
function printOutput (io: Io, reply: Reply): void {
  if (reply.stdout) io.stdout.write(reply.stdout.endsWith('\n') ? reply.stdout : `${reply.stdout}\n`)
  if (reply.stderr) io.stderr.write(reply.stderr)
  if (reply.stdoutTruncated === true) io.stderr.write('pysandbox: stdout was truncated at the server\'s limit\n')
  if (reply.stderrTruncated === true) io.stderr.write('pysandbox: stderr was truncated at the server\'s limit\n')
}

/** Runs the command; resolves to the exit status. */
export async function main (argv: string[], io: Io): Promise<number> {
  let file: string
  let url: URL
  try {
    const args = parseCommand(argv, io.env)
    if (args.help) {
      io.stdout.write(`${USAGE}\n`)
      return EXIT.ok
    }
    ({ file, url } = args)
  } catch (error) {
    io.stderr.write(`pysandbox: ${(error as Error).message}\n${USAGE}\n`)
    return EXIT.usage
  }

  let script: string
  try {
    if (file === '-' && io.stdin.isTTY === true) io.stderr.write('pysandbox: reading the script from standard input (end it with Ctrl-D)\n')
    script = file === '-' ? await text(io.stdin) : await readFile(file, 'utf8')
  } catch (error) {
    io.stderr.write(`pysandbox: cannot read ${file === '-' ? 'standard input' : file}: ${(error as Error).message}\n`)
    return EXIT.usage
  }

  let response: Response
  try {
    response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ script }) })
  } catch (error) {
    // fetch() says "fetch failed" and puts the reason (ECONNREFUSED, ENOTFOUND) in `cause`.
    const { cause } = error as Error & { cause?: Error }
    io.stderr.write(`pysandbox: cannot reach ${url.origin}: ${cause?.message ?? (error as Error).message}\n`)
    return EXIT.usage
  }

  let reply: Reply
  try {
    reply = await response.json() as Reply
  } catch {
    io.stderr.write(`pysandbox: ${url.href} answered ${response.status} without JSON: is it a PySandbox server?\n`)
    return EXIT.usage
  }

  printOutput(io, reply)
  if (response.ok) {
    io.stdout.write(`${JSON.stringify(reply.result)}\n`)
    return EXIT.ok
  }
  const lines = [`${reply.code ?? `HTTP_${response.status}`}: ${reply.message ?? response.statusText}`]
  if (reply.traceback !== undefined) lines.push(reply.traceback.trimEnd())
  if (reply.code === 'INTERNAL_ERROR' || reply.code === undefined) lines.push(`request id: ${reply.requestId ?? response.headers.get('x-request-id') ?? 'none'}`)
  const retry = response.headers.get('retry-after')
  if (retry !== null) lines.push(`retry after ${retry} s`)
  io.stderr.write(`${lines.join('\n')}\n`)
  return EXIT.failed
}
