// POST /mcp with a fake backend and the SDK's own client over a listening socket: what each
// outcome becomes as an MCP tool result, the service's refusals as tool errors, and the
// endpoint's own refusals (bad JSON, a wrong method) in the service's error shape.
import t, { type Test } from 'tap'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import { succeeded } from '../../src/backends/outcome.js'
import type { RunOutcome, RunRequest, SessionCall } from '../../src/backends/backend.js'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { openThenLeave } from '../helpers/app.js'
import { FakeBackend, FakeSessionBackend, HeldRun, failure, success, type FakeSession } from '../helpers/fake-backend.js'

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

t.test('run_python and the session tools, described, with their arguments', async t => {
  const { url } = await serve(t, success(1))
  const client = new Client({ name: 'pysandbox-test', version: '1' })
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  t.teardown(async () => { await client.close() })
  const { tools } = await client.listTools()
  t.same(tools.map(tool => tool.name), ['run_python', 'open_session', 'run_in_session', 'close_session'])
  t.match(tools[0], { description: /main\(\)/, inputSchema: { properties: { script: { type: 'string' }, input: {}, files: { type: 'array' } }, required: ['script'] } })
  t.match(tools[2], { description: /last line/, inputSchema: { properties: { session: { type: 'string' }, script: { type: 'string' }, input: {}, files: { type: 'array' } }, required: ['session', 'script'] } })
  t.match(tools[3], { inputSchema: { properties: { session: { type: 'string' } }, required: ['session'] } })
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

  for (const thrown of [new Error('spawn /usr/local/bin/nsjail ENOENT'), Object.assign(new Error('EACCES: /var/lib/x'), { code: 'EACCES' })]) {
    const broken = await call(t, (await serve(t, async () => { throw thrown })).url, { script: 'x' })
    t.equal(broken.isError, true)
    t.match(text(broken), { code: 'INTERNAL_ERROR', message: /^internal error; quote the request id / }, `${thrown.message}: ours, opaque (the details go to the log)`)
    t.notMatch(JSON.stringify(broken), /nsjail|\/var\/lib/)
  }
})

const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }
const toolCall = (id: number, args: Record<string, unknown>): Record<string, unknown> => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'run_python', arguments: args } })

t.test('deny: a JSON-RPC batch (it would run up to 100 scripts per request, past the rate limit) and unknown arguments, before the SDK; allow: one call', async t => {
  const { url, backend } = await serve(t, success(1))
  const batch = await fetch(url, { method: 'POST', headers: HEADERS, body: JSON.stringify([toolCall(1, { script: 'a' }), toolCall(2, { script: 'b' })]) })
  t.equal(batch.status, 400)
  t.match(await batch.json(), { code: 'INVALID_REQUEST', message: /batches are not taken/ })
  const unknown = Object.fromEntries(Array.from({ length: 50_000 }, (_, i) => [`k${i}`, i]))
  const started = performance.now()
  const extra = await fetch(url, { method: 'POST', headers: HEADERS, body: JSON.stringify(toolCall(3, { script: 'x', ...unknown })) })
  t.equal(extra.status, 400)
  t.match(await extra.json(), { code: 'INVALID_REQUEST', message: 'unknown field "k0" in params.arguments; the fields are "script", "input", "files"' })
  t.ok(performance.now() - started < 2000, 'refused before the SDK walks them')
  t.equal(backend.runs.length, 0, 'nothing ran')
  const one = await call(t, url, { script: 'x' })
  t.notOk(one.isError, 'a single call runs')
  t.equal(backend.runs.length, 1)
})

t.test('refusals a retry may cure carry retryAfterS; while draining, /mcp answers 503 SHUTTING_DOWN with Retry-After', async t => {
  const held = new HeldRun()
  const backend = new FakeBackend('nsjail', { run: held.run })
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0', HOST: '127.0.0.1', CONCURRENCY: '1', QUEUE_SIZE: '0' }), backends: [backend] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { held.finish(); await app.close() })
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/mcp`
  const running = call(t, url, { script: 'a' })
  await held.started(1)
  const limited = await call(t, url, { script: 'b' })
  t.match(text(limited), { code: 'CONCURRENCY_LIMITED', retryAfterS: 1 })
  held.finish()
  t.notOk((await running).isError)

  const draining = app.sandbox.drain(60_000)
  const refused = await fetch(url, { method: 'POST', headers: HEADERS, body: JSON.stringify(toolCall(1, { script: 'x' })) })
  t.equal(refused.status, 503)
  t.equal(refused.headers.get('retry-after'), '1')
  t.match(await refused.json(), { code: 'SHUTTING_DOWN' })
  await draining
})

t.test('the endpoint refuses bad JSON, a message that is not JSON-RPC, and other methods', async t => {
  const { url } = await serve(t, success(1))
  const notRpc = await fetch(url, { method: 'POST', headers: HEADERS, body: '{}' })
  t.equal(notRpc.status, 400, 'the SDK refuses it (and its transport error is logged)')
  const bad = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{"jsonrpc": "2.0", \xff' })
  t.equal(bad.status, 400)
  t.match(await bad.json(), { code: 'INVALID_JSON' })
  const get = await fetch(url)
  t.equal(get.status, 405)
  t.match(await get.json(), { code: 'METHOD_NOT_ALLOWED' })
})

t.test('sessions through MCP: open, run (state is the sandbox\'s), close; another caller\'s id is not found; errors carry their code', async t => {
  let answer: (call: SessionCall, session: FakeSession) => Promise<RunOutcome> = async () => success({ x: 42 })
  const backend = new FakeSessionBackend('nsjail', async (call, session) => await answer(call, session))
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0', HOST: '127.0.0.1', INSTANCE_ID: 'mcp', SESSIONS_PER_CALLER: '2' }), backends: [backend] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await app.close() })
  const client = new Client({ name: 'pysandbox-test', version: '1' })
  await client.connect(new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${(app.server.address() as { port: number }).port}/mcp`)))
  t.teardown(async () => { await client.close() })
  const tool = async (name: string, args: Record<string, unknown> = {}): Promise<CallToolResult> => await client.callTool({ name, arguments: args }) as CallToolResult

  const opened = text(await tool('open_session')) as { id: string, instance: string }
  t.match(opened, { id: /^mcp\.[A-Za-z0-9_-]{32}$/, instance: 'mcp', backend: 'nsjail' })
  const ran = await tool('run_in_session', { session: opened.id, script: 'x', input: 1 })
  t.notOk(ran.isError)
  t.same(text(ran), { result: { x: 42 }, stdout: '', stderr: '', backend: 'nsjail' })
  t.match(backend.sessions[0]?.calls[0], { script: 'x', input: { value: 1 } })

  t.notOk((await tool('run_in_session', { session: opened.id, script: 'open("a.txt").read()', files: [{ path: 'a.txt', content: 'a' }] })).isError)
  t.match(backend.sessions[0]?.calls[1], { files: [{ path: 'a.txt' }] })
  answer = async (_call, session) => {
    session.die({ code: 'TIME_LIMIT_EXCEEDED', message: 'the script ran longer than the wall-time limit of 10000 ms' })
    return failure('TIME_LIMIT_EXCEEDED', 'the script ran longer than the wall-time limit of 10000 ms')
  }
  const ending = await tool('run_in_session', { session: opened.id, script: 'while True: pass' })
  t.equal(ending.isError, true)
  t.match(text(ending), { code: 'TIME_LIMIT_EXCEEDED', sessionEnded: true })
  const after = await tool('run_in_session', { session: opened.id, script: 'x' })
  t.match(text(after), { code: 'SESSION_ENDED', endedBy: 'TIME_LIMIT_EXCEEDED' })

  const second = text(await tool('open_session')) as { id: string }
  t.same(text(await tool('close_session', { session: second.id })), { closed: second.id })
  t.match(text(await tool('close_session', { session: second.id })), { code: 'SESSION_ENDED' })
  t.match(text(await tool('run_in_session', { session: `mcp.${'Z'.repeat(32)}`, script: 'x' })), { code: 'SESSION_NOT_FOUND' })
  await t.rejects(tool('run_in_session', { session: second.id, script: 'x', limits: {} }), 'unknown arguments refused (400), as for run_python')
})

t.test('deny: a session opened by open_session whose reply never reached the client is ended', async t => {
  const backend = new FakeSessionBackend('nsjail')
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0', HOST: '127.0.0.1' }), backends: [backend] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await app.close() })
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/mcp`
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'open_session', arguments: {} } })
  await openThenLeave(backend, async signal => await fetch(url, { method: 'POST', headers: HEADERS, body, signal }))
  t.equal(backend.sessions[0]?.closedWith, 'its id never reached its caller')
})

t.test('open_session refused (the caller may have no session) is a tool error with its code', async t => {
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0', HOST: '127.0.0.1', SESSIONS_PER_CALLER: '0' }), backends: [new FakeSessionBackend('nsjail')] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await app.close() })
  const client = new Client({ name: 'pysandbox-test', version: '1' })
  await client.connect(new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${(app.server.address() as { port: number }).port}/mcp`)))
  t.teardown(async () => { await client.close() })
  const refused = await client.callTool({ name: 'open_session', arguments: {} }) as CallToolResult
  t.equal(refused.isError, true)
  t.match(text(refused), { code: 'SESSIONS_FORBIDDEN' })
})
