// Clients generated from the served OpenAPI document, as its users make them, calling a real
// server: a Python client (openapi-python-client, pinned in test/clients/requirements.txt and
// installed under .sandbox/clients by `make test`) and a TypeScript one (openapi-typescript's
// types with openapi-fetch, pinned in package.json). Each makes a user's three calls (a success,
// MAIN_RAISED with its traceback, a 400 for a limit below its minimum); the TypeScript type-checks
// under strict tsc, with calls the types must refuse; the Python's typed models parse each reply.
// The README's "Use it from Python" and "Use it from TypeScript" are these steps.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { PROJECT_ROOT } from '../../src/config.js'
import { startServer } from '../helpers/server.js'

const run = promisify(execFile)
const PYTHON = process.env.SANDBOX_PYTHON ?? '/usr/bin/python3'
const GENERATOR = resolve(PROJECT_ROOT, '.sandbox/clients')
const BIN = resolve(PROJECT_ROOT, 'node_modules/.bin')

const uidBase = Number(process.env.SANDBOX_UID_BASE ?? 1_900_000_000)
const target = await startServer({ SANDBOX_BACKEND: 'nsjail', SANDBOX_UID_BASE: String(uidBase) })
t.teardown(target.close)

// Inside the project, so the generated TypeScript finds openapi-fetch in node_modules.
mkdirSync(resolve(PROJECT_ROOT, '.tap'), { recursive: true })
const dir = mkdtempSync(resolve(PROJECT_ROOT, '.tap/clients-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const documentFile = join(dir, 'openapi.json')
writeFileSync(documentFile, await (await fetch(new URL('openapi.json', `${target.url}/`))).text())
const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', PYSANDBOX_URL: target.url }

const SCRIPTS = {
  ok: 'def main():\n    print("hi")\n    return {"n": 42}\n',
  raises: 'def main():\n    return 1 / 0\n'
}
/** What each client must see, whatever its language. */
const EXPECTED = {
  ok: { result: { n: 42 }, stdout: 'hi\n', backend: 'nsjail' },
  raised: { status: 422, code: 'MAIN_RAISED', exception: 'ZeroDivisionError', traceback: /File "<script>", line 2, in main[\s\S]*ZeroDivisionError: division by zero/ },
  bad: { status: 400, code: 'INVALID_REQUEST', message: 'body.limits.memoryMb must be at least 64' },
  ready: { status: 'ready', backend: 'nsjail' }
}

const PYTHON_CALLS = `
import json
import os

from pysandbox_client import Client
from pysandbox_client.api.health import get_readiness
from pysandbox_client.api.sandbox import execute
from pysandbox_client.models import ErrorReply, ExecuteRequest, ExecuteResult, RunLimits

client = Client(base_url=os.environ["PYSANDBOX_URL"], raise_on_unexpected_status=True)
ok = execute.sync(client=client, body=ExecuteRequest(script=${JSON.stringify(SCRIPTS.ok)}))
assert isinstance(ok, ExecuteResult), ok
raised = execute.sync_detailed(client=client, body=ExecuteRequest(script=${JSON.stringify(SCRIPTS.raises)}))
assert isinstance(raised.parsed, ErrorReply), raised
bad = execute.sync_detailed(client=client, body=ExecuteRequest(script="x", limits=RunLimits(memory_mb=1)))
assert isinstance(bad.parsed, ErrorReply), bad
ready = get_readiness.sync(client=client)
print(json.dumps({
    "ok": {"result": ok.result, "stdout": ok.stdout, "backend": ok.backend.value},
    "raised": {"status": raised.status_code, "code": raised.parsed.code.value,
               "exception": raised.parsed.exception, "traceback": raised.parsed.traceback},
    "bad": {"status": bad.status_code, "code": bad.parsed.code.value, "message": bad.parsed.message},
    "ready": {"status": ready.status.value, "backend": ready.backend.value},
}))
`

const TYPESCRIPT_CALLS = `
import createClient from 'openapi-fetch'
import type { components, paths } from './schema.js'

type ErrorReply = components['schemas']['ErrorReply']
const client = createClient<paths>({ baseUrl: process.env.PYSANDBOX_URL })

const ok = await client.POST('/execute', { body: { script: ${JSON.stringify(SCRIPTS.ok)} } })
if (ok.data === undefined) throw new Error('no result')
const backend: components['schemas']['Backend'] = ok.data.backend
const raised = await client.POST('/execute', { body: { script: ${JSON.stringify(SCRIPTS.raises)} } })
const failure: ErrorReply | undefined = raised.error
const bad = await client.POST('/execute', { body: { script: 'x', limits: { memoryMb: 1 } } })
const ready = await client.GET('/readyz')

/** Never called: what the types must refuse (tsc fails on an @ts-expect-error that has no error). */
export async function refused (): Promise<void> {
  // @ts-expect-error a script is a string
  await client.POST('/execute', { body: { script: 1 } })
  // @ts-expect-error no such field (a literal of the request's type: openapi-fetch's generic
  // parameter itself lets excess fields through)
  const body: components['schemas']['ExecuteRequest'] = { script: 'x', code: 'y' }
  // @ts-expect-error no such error code
  const code: components['schemas']['ErrorCode'] = 'NOPE'
  // @ts-expect-error no such operation
  await client.GET('/execute')
  void code
  void body
}

console.log(JSON.stringify({
  ok: { result: ok.data.result, stdout: ok.data.stdout, backend },
  raised: { status: raised.response.status, code: failure?.code, exception: failure?.exception, traceback: failure?.traceback },
  bad: { status: bad.response.status, code: bad.error?.code, message: bad.error?.message },
  ready: { status: ready.data?.status, backend: ready.data?.backend }
}))
`

t.test('a Python client generated by openapi-python-client calls the server', async t => {
  const output = join(dir, 'pysandbox_client')
  const config = join(dir, 'generator.json')
  // No post hooks (they run ruff on the code): the code is as generated.
  writeFileSync(config, JSON.stringify({ post_hooks: [] }))
  await run(PYTHON, ['-m', 'openapi_python_client', 'generate', '--path', documentFile, '--output-path', output, '--meta', 'none', '--config', config],
    { env: { ...env, PYTHONPATH: GENERATOR } })
  const models = readdirSync(join(output, 'models')).filter(f => f.endsWith('.py') && f !== '__init__.py')
  t.ok(models.length <= 20, `a handful of models: ${models.length} (${models.join(', ')})`)
  t.comment(`Python client: ${models.length} models`)
  const { stdout } = await run(PYTHON, ['-c', PYTHON_CALLS], { env: { ...env, PYTHONPATH: `${dir}:${GENERATOR}` } })
  t.match(JSON.parse(stdout), EXPECTED)
})

t.test('a TypeScript client (openapi-typescript + openapi-fetch) type-checks and calls the server', async t => {
  await run(join(BIN, 'openapi-typescript'), [documentFile, '-o', join(dir, 'schema.d.ts')], { env })
  writeFileSync(join(dir, 'call.ts'), TYPESCRIPT_CALLS)
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }))
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', types: ['node'], skipLibCheck: false },
    files: ['call.ts', 'schema.d.ts']
  }))
  const checked = await run(join(BIN, 'tsc'), ['-p', dir], { env }).then(() => '', (error: { stdout: string }) => error.stdout)
  t.equal(checked, '', 'tsc --noEmit: no errors')
  const { stdout } = await run(join(BIN, 'tsx'), [join(dir, 'call.ts')], { env })
  t.match(JSON.parse(stdout), EXPECTED)
})
