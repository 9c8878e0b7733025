// POST /mcp with a fake backend and the SDK's own client over a listening socket: what each
// outcome becomes as an MCP tool result, the service's refusals as tool errors, and the
// endpoint's own refusals (bad JSON, a wrong method) in the service's error shape.
import t, { type Test } from 'tap'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import { succeeded } from '../../src/backends/outcome.js'
import type { RunOutcome, RunRequest } from '../../src/backends/backend.js'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { FakeBackend, failure, success } from '../helpers/fake-backend.js'

async function serve (t: Test, run: RunOutcome | ((request: RunRequest) => Promise<RunOutcome>)): Promise<{ url: string, backend: FakeBackend }> {
  const backend = new FakeBackend('nsjail', { run })
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0', HOST: '127.0.0.1' }), backends: [backend] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await app.close() })
  const address = app.server.address() as { port: number }
  return { url: `http://127.0.0.1:${address.port}/mcp`, backend }
}

async function call (t: Test, url: string, args: Record<string, unknown>): Promise<CallToolResult> {
  const client = new Client({ name: 'pysandbox-test', version: '1' })
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  t.teardown(async () => { await client.close() })
  return await client.callTool({ name: 'run_python', arguments: args }) as CallToolResult
}

const text = (result: CallToolResult): unknown => JSON.parse((result.content[0] as { text: string }).text)

t.test('run_python is the one tool, described, with its arguments', async t => {
  const { url } = await serve(t, success(1))
  const client = new Client({ name: 'pysandbox-test', version: '1' })
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  t.teardown(async () => { await client.close() })
  const { tools } = await client.listTools()
  t.same(tools.map(tool => tool.name), ['run_python'])
  t.match(tools[0], { description: /main\(\)/, inputSchema: { properties: { script: { type: 'string' }, input: {}, files: { type: 'array' } }, required: ['script'] } })
})

t.test('a success: the result, the output and the backend as JSON text; images as image content, other files in the text', async t => {
  const png = { path: 'figures/1.png', size: 3, mediaType: 'image/png', encoding: 'base64' as const, content: 'iVBO' }
  const csv = { path: 'out.csv', size: 4, mediaType: 'text/csv', encoding: 'utf8' as const, content: 'a,b\n' }
  const outcome = { ...succeeded(Buffer.from('{"n": 1.0}'), { stdout: 'x', stderr: 'y', stdoutTruncated: true, stderrTruncated: true, durationMs: 5 }), files: [png, csv], filesLeftOut: [{ path: 'link', reason: 'a symbolic link (not followed)' }] }
  const { url, backend } = await serve(t, outcome)
  const result = await call(t, url, { script: 'def main(x):\n    return x\n', input: null, files: [{ path: 'in.txt', content: 'hi' }] })
  t.notOk(result.isError)
  t.same(text(result), {
    result: { n: 1 },
    files: [csv],
    images: [{ path: 'figures/1.png', size: 3, mediaType: 'image/png' }],
    filesLeftOut: [{ path: 'link', reason: 'a symbolic link (not followed)' }],
    stdout: 'x',
    stderr: 'y',
    backend: 'nsjail',
    stdoutTruncated: true,
    stderrTruncated: true
  })
  t.same(result.content[1], { type: 'image', data: 'iVBO', mimeType: 'image/png' })
  const sent = backend.runs.at(-1)
  t.same(sent?.input, { value: null }, 'input null is main\'s argument, as in /execute')
  t.same(sent?.files?.map(file => file.path), ['in.txt'])

  const bare = await call(t, (await serve(t, success([1]))).url, { script: 'x' })
  t.same(text(bare), { result: [1], stdout: '', stderr: '', backend: 'nsjail' }, 'no files, no flags: not there')
})

t.test('a script\'s failure and the service\'s refusals are tool errors with their code; anything else is the SDK\'s', async t => {
  const raised = await call(t, (await serve(t, failure('MAIN_RAISED', 'ZeroDivisionError: division by zero', { exception: 'ZeroDivisionError', traceback: 'Traceback ...' }))).url, { script: 'x' })
  t.equal(raised.isError, true)
  t.same(text(raised), { code: 'MAIN_RAISED', message: 'ZeroDivisionError: division by zero', exception: 'ZeroDivisionError', traceback: 'Traceback ...', stdout: '', stderr: '', backend: 'nsjail' })

  const { url } = await serve(t, success(1))
  const badPath = await call(t, url, { script: 'x', files: [{ path: '../etc/passwd', content: '' }] })
  t.match(text(badPath), { code: 'INVALID_REQUEST', message: /not normalised/ }, 'a path out of the working directory')
  t.equal(badPath.isError, true)
  const empty = await call(t, url, { script: '' })
  t.match(empty, { isError: true, content: [{ text: /script/ }] }, 'arguments checked by the tool\'s schema')

  const broken = await call(t, (await serve(t, async () => { throw new Error('boom') })).url, { script: 'x' })
  t.match(broken, { isError: true, content: [{ text: /boom/ }] }, 'an unexpected error: the SDK\'s own error result')
  const odd = await call(t, (await serve(t, async () => { throw Object.assign(new Error('no such file'), { code: 'ENOENT' }) })).url, { script: 'x' })
  t.match(odd, { isError: true, content: [{ text: /no such file/ }] }, 'an error with a code that is not ours: the same')
})

t.test('the endpoint refuses bad JSON and other methods in the service\'s error shape', async t => {
  const { url } = await serve(t, success(1))
  const bad = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{"jsonrpc": "2.0", \xff' })
  t.equal(bad.status, 400)
  t.match(await bad.json(), { code: 'INVALID_JSON' })
  const get = await fetch(url)
  t.equal(get.status, 405)
  t.match(await get.json(), { code: 'METHOD_NOT_ALLOWED' })
})
