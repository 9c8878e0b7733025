// The `pysandbox` command as users run it (`node dist/cli.js`, built by `npm run build`) against
// a real server with the nsjail backend (or the server at PYSANDBOX_URL): output on the right
// streams, the result as JSON, and the documented exit statuses.
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { PROJECT_ROOT } from '../../src/config.js'
import { HELLO, startServer } from '../helpers/server.js'

const CLI = resolve(PROJECT_ROOT, 'dist/cli.js')

interface Run { code: number | null, stdout: string, stderr: string }

async function pysandbox (args: string[], options: { stdin?: string, env?: Record<string, string> } = {}): Promise<Run> {
  const env = { ...process.env, ...options.env }
  if (options.env?.PYSANDBOX_URL === undefined) delete env.PYSANDBOX_URL
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  child.stdin.end(options.stdin ?? '')
  const [code] = await once(child, 'close') as [number | null]
  return { code, stdout, stderr }
}

/** A loopback port nothing listens on. */
async function closedPort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

const target = await startServer({ SANDBOX_BACKEND: 'nsjail' })
t.teardown(target.close)
const dir = mkdtempSync(join(tmpdir(), 'pysandbox-cli-'))
function file (name: string, text: string): string {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

t.test('success: the script\'s stdout, then its result as JSON on stdout; exit 0', async t => {
  const run = await pysandbox(['run', file('hello.py', HELLO), '--url', target.url])
  t.equal(run.code, 0, run.stderr)
  t.equal(run.stdout, 'Hello from main!\n{"msg":"success","value":42}\n')
  t.equal(run.stderr, '')
})

t.test('a failing script: its output, then CODE: message and the traceback on stderr; exit 1', async t => {
  const script = 'import sys\ndef main():\n    print("before")\n    print("warned", file=sys.stderr)\n    return {"a": 1}["b"]\n'
  const run = await pysandbox(['run', file('fails.py', script), '-u', target.url])
  t.equal(run.code, 1)
  t.equal(run.stdout, 'before\n', 'the script\'s stdout, no result')
  t.match(run.stderr, /^warned\nMAIN_RAISED: KeyError: 'b'\nTraceback \(most recent call last\):\n {2}File "<script>", line 5, in main\n/)
  t.notMatch(run.stderr, /harness|run\.py/, 'only the user\'s frames')
})

t.test('the script from standard input ("-", or no file); the URL from PYSANDBOX_URL', async t => {
  const script = 'import sys\ndef main():\n    print("to stderr", file=sys.stderr)\n    return [1, 2.5, None]\n'
  for (const args of [['run', '-'], ['run']]) {
    const run = await pysandbox(args, { stdin: script, env: { PYSANDBOX_URL: target.url } })
    t.equal(run.code, 0, `${args.join(' ')}: ${run.stderr}`)
    t.equal(run.stdout, '[1,2.5,null]\n')
    t.equal(run.stderr, 'to stderr\n')
  }
  const syntax = await pysandbox(['run', '--url', target.url], { stdin: 'def main(:\n' })
  t.equal(syntax.code, 1)
  t.equal(syntax.stderr, 'SYNTAX_ERROR: line 1, column 10: invalid syntax\n')
})

t.test('no server at the URL: a clear message and exit 2', async t => {
  const url = `http://127.0.0.1:${await closedPort()}`
  const run = await pysandbox(['run', file('hello2.py', HELLO), '--url', url])
  t.equal(run.code, 2)
  t.equal(run.stdout, '')
  t.equal(run.stderr, `pysandbox: cannot reach ${url}: connect ECONNREFUSED ${url.slice('http://'.length)}\n`)
})

t.test('usage errors exit 2 with the usage', async t => {
  const run = await pysandbox(['exec', 'x.py'])
  t.equal(run.code, 2)
  t.match(run.stderr, /^pysandbox: unknown command "exec"\nusage: pysandbox run/)
})
