// MCP end to end: the official SDK's client over real HTTP against a real server with the
// nsjail backend and API keys (or the server at PYSANDBOX_URL, without keys): the tool runs a
// script in the sandbox, returns a chart as an image, reports a raised exception as a tool error
// with its traceback, keeps nothing between calls; without a key, or with a wrong one, nothing runs.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import { newKey } from '../../src/access/keys.js'
import { externalUrl, startServer } from '../helpers/server.js'

const uidBase = Number(process.env.SANDBOX_UID_BASE ?? 1_900_000_000)
const keys = mkdtempSync(join(tmpdir(), 'pysandbox-mcp-keys-'))
t.teardown(() => rmSync(keys, { recursive: true, force: true }))
const { line, key } = newKey('agent')
writeFileSync(join(keys, 'keys'), `${line}\n`)
const target = await startServer({ SANDBOX_BACKEND: 'nsjail', SANDBOX_UID_BASE: String(uidBase), API_KEYS_FILE: join(keys, 'keys') })
t.teardown(target.close)
const endpoint = new URL(`${target.url}/mcp`)
// The image's server (PYSANDBOX_URL) has no keys.
const headers: Record<string, string> = externalUrl === undefined ? { authorization: `Bearer ${key}` } : {}

async function connect (authorization: Record<string, string> = headers): Promise<Client> {
  const client = new Client({ name: 'pysandbox-test', version: '1' })
  await client.connect(new StreamableHTTPClientTransport(endpoint, { requestInit: { headers: authorization } }))
  t.teardown(async () => { await client.close() })
  return client
}

const runPython = async (client: Client, args: Record<string, unknown>): Promise<CallToolResult> =>
  await client.callTool({ name: 'run_python', arguments: args }) as CallToolResult
const text = (result: CallToolResult): Record<string, unknown> => JSON.parse((result.content[0] as { text: string }).text)

t.test('allow: run_python runs the script in the sandbox and returns its result and output', async t => {
  const client = await connect()
  const result = await runPython(client, { script: 'import pandas as pd\n\ndef main(data):\n    print("rows", len(data))\n    return pd.DataFrame(data).sum().to_dict()\n', input: [{ a: 1 }, { a: 2 }] })
  t.notOk(result.isError)
  t.same(text(result), { result: { a: 3 }, stdout: 'rows 2\n', stderr: '', backend: 'nsjail' })
})

t.test('a chart comes back as an image; a file under output/ in the text', async t => {
  const client = await connect()
  const result = await runPython(client, {
    script: 'import matplotlib.pyplot as plt\nimport pandas as pd\n\ndef main():\n    df = pd.read_csv("t.csv")\n    df.plot.bar(x="city", y="temp")\n    df.to_csv("output/copy.csv", index=False)\n    return len(df)\n',
    files: [{ path: 't.csv', content: 'city,temp\nOslo,3\nLima,19\n' }]
  })
  t.match(text(result), { result: 2, files: [{ path: 'copy.csv', mediaType: 'text/csv', content: 'city,temp\nOslo,3\nLima,19\n' }], images: [{ path: 'figures/1.png', mediaType: 'image/png' }] })
  const image = result.content[1] as { type: string, data: string, mimeType: string }
  t.equal(image.type, 'image')
  t.equal(image.mimeType, 'image/png')
  t.equal(Buffer.from(image.data, 'base64').subarray(0, 8).toString('hex'), '89504e470d0a1a0a', 'a PNG')
})

t.test('a raised exception is a tool error with its traceback; nothing is kept between calls', async t => {
  const client = await connect()
  const raised = await runPython(client, { script: 'def main():\n    return 1 / 0\n' })
  t.equal(raised.isError, true)
  t.match(text(raised), { code: 'MAIN_RAISED', exception: 'ZeroDivisionError', traceback: /line 2, in main/ })
  const first = await runPython(client, { script: 'import os\n\ndef main():\n    open("left.txt", "w").write("x")\n    open("/tmp/left", "w").write("x")\n    return os.getpid()\n' })
  t.notOk(first.isError)
  const second = await runPython(client, { script: 'import os\n\ndef main():\n    return [os.path.exists("left.txt"), os.path.exists("/tmp/left")]\n' })
  t.same(text(second).result, [false, false], 'the next call sees neither file')
})

t.test('deny: without a key, or with a wrong one, the client is refused and nothing runs', { skip: externalUrl !== undefined ? 'the server at PYSANDBOX_URL has no keys' : false }, async t => {
  await t.rejects(connect({}), /401/, 'no key')
  await t.rejects(connect({ authorization: `Bearer ${newKey('other').key}` }), /401/, 'a key this server does not know')
  const direct = await fetch(endpoint, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'run_python', arguments: { script: 'def main():\n    return 1\n' } } }) })
  t.equal(direct.status, 401)
  t.match(await direct.json(), { code: 'UNAUTHORIZED' })
})

t.test('allow: a session through MCP keeps its state between run_in_session calls and returns its chart; deny: another key cannot reach it', async t => {
  const client = await connect()
  const opened = text(await client.callTool({ name: 'open_session', arguments: {} }) as CallToolResult) as { id: string }
  t.match(opened.id, /^[a-z0-9-]+\.[A-Za-z0-9_-]{32}$/)
  const run = async (script: string): Promise<CallToolResult> => await client.callTool({ name: 'run_in_session', arguments: { session: opened.id, script } }) as CallToolResult
  t.same(text(await run('import pandas as pd\ndf = pd.DataFrame({"a": [1, 2, 3]})\nlen(df)')).result, 3)
  const chart = await run('import matplotlib.pyplot as plt\nplt.plot(df.a)\nint(df.a.sum())')
  t.same(text(chart).result, 6)
  t.match(chart.content[1], { type: 'image', mimeType: 'image/png' })
  if (externalUrl === undefined) {
    const other = newKey('other')
    writeFileSync(join(keys, 'keys'), `${line}\n${other.line}\n`)
    // The keys file is read again when it changes (polled every second).
    let stolen: CallToolResult | undefined
    for (let i = 0; i < 50 && (stolen === undefined || (stolen.content[0] as { text: string }).text.includes('UNAUTHORIZED')); i++) {
      await new Promise(resolve => setTimeout(resolve, 200))
      try {
        const intruder = await connect({ authorization: `Bearer ${other.key}` })
        stolen = await intruder.callTool({ name: 'run_in_session', arguments: { session: opened.id, script: 'df.to_dict()' } }) as CallToolResult
      } catch {
        stolen = undefined
      }
    }
    t.match(stolen === undefined ? {} : text(stolen), { code: 'SESSION_NOT_FOUND' }, 'another key: not found')
  }
  t.same(text(await client.callTool({ name: 'close_session', arguments: { session: opened.id } }) as CallToolResult), { closed: opened.id })
  t.match(text(await run('len(df)')), { code: 'SESSION_ENDED' })
})
