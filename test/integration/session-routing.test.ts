// Sessions behind a load balancer: two real servers (nsjail, INSTANCE_ID a and b) behind a real
// nginx running deploy/nginx/sessions.conf as shipped, with only its example addresses replaced.
// Every call to a session must reach the instance that holds it (its state is there), anything
// else goes round-robin; and the sabotage run: the same file with the routing taken out (plain
// round-robin) must lose sessions, so the routing test can fail.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join, resolve } from 'node:path'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import t, { type Test } from 'tap'
import { PROJECT_ROOT } from '../../src/config.js'
import { TEST_LIMITS, externalUrl, freePort, waitFor } from '../helpers/server.js'

/** Apart from each other and from every uid base the rest of the suite uses (UID_BASE_SPACING is 9728). */
const UID_BASES = { a: 1_840_000_000, b: 1_840_009_728 } as const
type Instance = keyof typeof UID_BASES
const INSTANCES: Instance[] = ['a', 'b']
/** The example addresses of deploy/nginx/sessions.conf: instance a's and instance b's. */
const EXAMPLE_ADDRESSES: Record<Instance, string> = { a: '10.0.0.11:8080', b: '10.0.0.12:8080' }
const CONFIG = resolve(PROJECT_ROOT, 'deploy/nginx/sessions.conf')
const SESSIONS = 6

const nginxBinary = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin', '/usr/local/nginx/sbin']
  .map(dir => join(dir, 'nginx')).find(path => existsSync(path))

/** The instance a session's id names: what comes before its first dot. */
const holderOf = (id: string): string => id.split('.')[0] ?? ''

interface Reply { status: number, body: Record<string, any> }

async function call (url: string, method: string, path: string, body?: unknown): Promise<Reply> {
  const response = await fetch(`${url}${path}`, {
    method,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  })
  const text = await response.text()
  return { status: response.status, body: text === '' ? {} : JSON.parse(text) as Record<string, any> }
}

/** Opens `SESSIONS` sessions through `proxy`; the ids of those opened (each failure is reported). */
async function open (t: Test, proxy: string): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < SESSIONS; i++) {
    const created = await call(proxy, 'POST', '/sessions', {})
    if (!t.equal(created.status, 201, `POST /sessions ${i} (${JSON.stringify(created.body)})`)) continue
    const id = String(created.body.id)
    t.equal(created.body.instance, holderOf(id), `${id}: the reply names the instance its id starts with`)
    ids.push(id)
  }
  return ids
}

/** Stops a child this file started: `signal`, then SIGKILL if it has not exited within `graceMs`. */
async function stop (child: ChildProcess, exited: Promise<unknown>, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited
  clearTimeout(timer)
}

/** dist/server.js as an instance of its own, ready (its sandbox probe passed). */
async function instance (t: Test, id: Instance): Promise<string> {
  const port = await freePort()
  const child = spawn(process.execPath, [resolve(PROJECT_ROOT, 'dist/server.js')], {
    env: {
      ...process.env,
      ...TEST_LIMITS,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      SANDBOX_BACKEND: 'nsjail',
      SANDBOX_UID_BASE: String(UID_BASES[id]),
      INSTANCE_ID: id,
      WARM_SANDBOXES: 'false',
      CONCURRENCY: '1',
      TENANT_SLOTS: '1',
      // Every call comes from this one caller: room for all its sessions on one instance.
      SESSIONS_MAX: String(SESSIONS),
      SESSIONS_PER_CALLER: String(SESSIONS),
      // The proxy appends the client's address to X-Forwarded-For, as in production.
      TRUST_PROXY: '1',
      SHUTDOWN_GRACE_MS: '1000'
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let log = ''
  for (const stream of [child.stdout, child.stderr]) stream?.on('data', (chunk: Buffer) => { log = `${log}${chunk.toString()}`.slice(-16_384) })
  const exited = once(child, 'exit')
  t.teardown(async () => {
    await stop(child, exited, 'SIGTERM', 10_000)
    if (!t.passing()) t.comment(`instance ${id}'s log (its end):\n${log}`)
  })
  const url = `http://127.0.0.1:${port}`
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`instance ${id} exited (${child.exitCode}): ${log}`)
    return (await fetch(`${url}/readyz`)).status === 200
  }, `instance ${id} to be ready`)
  return url
}

/** deploy/nginx/sessions.conf with `replacements` made in its directives (not its comments), each
 *  exactly as often as expected. */
function configWith (replacements: Array<{ from: string, to: string, times: number }>): string {
  const lines = readFileSync(CONFIG, 'utf8').split('\n')
  for (const { from, to, times } of replacements) {
    let found = 0
    for (const [i, line] of lines.entries()) {
      if (/^\s*#/.test(line) || !line.includes(from)) continue
      found += line.split(from).length - 1
      lines[i] = line.replaceAll(from, to)
    }
    if (found !== times) throw new Error(`${CONFIG}: "${from}" found ${found} times, expected ${times}: the test no longer matches the file`)
  }
  return lines.join('\n')
}

/** A real nginx of this test's own (prefix, pid, logs and temp files under a tmp dir), running `sessions`. */
async function nginx (t: Test, sessions: string, port: number): Promise<{ url: string, log: () => string }> {
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-nginx-'))
  for (const temp of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) {
    mkdirSync(join(dir, temp))
    chmodSync(join(dir, temp), 0o777) // nginx's workers run as nobody when started as root
  }
  writeFileSync(join(dir, 'sessions.conf'), sessions)
  writeFileSync(join(dir, 'nginx.conf'), [
    'daemon off;',
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log warn;`,
    'events { worker_connections 128; }',
    'http {',
    '    log_format routed \'$request_method $uri $status $upstream_addr\';',
    `    access_log ${dir}/access.log routed;`,
    ...['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(temp => `    ${temp === 'body' ? 'client_body' : temp}_temp_path ${dir}/${temp};`),
    `    include ${dir}/sessions.conf;`,
    '}',
    ''
  ].join('\n'))
  const child = spawn(nginxBinary as string, ['-p', `${dir}/`, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const exited = once(child, 'exit')
  t.teardown(async () => {
    await stop(child, exited, 'SIGTERM', 5000)
    rmSync(dir, { recursive: true, force: true })
  })
  const url = `http://127.0.0.1:${port}`
  const errors = (): string => `${stderr}${existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : ''}`
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${errors()}`)
    return (await fetch(`${url}/healthz`)).status === 200
  }, 'nginx to answer', 20_000).catch(error => { throw new Error(`${(error as Error).message}: ${errors()}`) })
  return { url, log: () => readFileSync(join(dir, 'access.log'), 'utf8') }
}

const MCP_CALLS = 6

/** Through `proxy`'s /mcp with the SDK's client: open_session, then MCP_CALLS run_in_session calls
 *  each reading the state the one before left and setting its own, then close_session. */
async function mcpSession (proxy: string): Promise<{ ok: number, lost: number, instance: string }> {
  const client = new Client({ name: 'pysandbox-routing-test', version: '1' })
  await client.connect(new StreamableHTTPClientTransport(new URL(`${proxy}/mcp`)))
  const text = (result: unknown): Record<string, any> => JSON.parse(((result as CallToolResult).content[0] as { text: string }).text) as Record<string, any>
  try {
    const opened = await client.callTool({ name: 'open_session', arguments: {} })
    const id = String(text(opened).id)
    let ok = 0
    let lost = 0
    for (let i = 0; i < MCP_CALLS; i++) {
      const script = `before = globals().get("step")\nstep = ${i}\nbefore`
      const reply = text(await client.callTool({ name: 'run_in_session', arguments: { session: id, script } }))
      if (reply.code === 'SESSION_NOT_FOUND') lost++
      else if (reply.result === (i === 0 ? null : i - 1)) ok++
    }
    await client.callTool({ name: 'close_session', arguments: { session: id } }) // misrouted (the sabotage): its instance ends it at exit
    return { ok, lost, instance: holderOf(id) }
  } finally {
    await client.close()
  }
}

/** A value of its own for each session, so one session's state is never taken for another's. */
const token = (i: number): string => `state-${i}-${Math.random().toString(36).slice(2)}`

if (externalUrl !== undefined) t.pass('skipped: needs two servers of its own (INSTANCE_ID a and b) and an nginx in front, not PYSANDBOX_URL')
else if (nginxBinary === undefined) t.plan(0, 'no nginx binary (apt-get install nginx-light; `make test` installs it)')
else {
  const urls = {} as Record<Instance, string>
  await Promise.all(INSTANCES.map(async id => { urls[id] = await instance(t, id) }))
  const proxied = async (t: Test, routing: boolean): Promise<{ url: string, log: () => string }> => {
    const port = await freePort()
    return await nginx(t, configWith([
      { from: EXAMPLE_ADDRESSES.a, to: new URL(urls.a).host, times: 3 },
      { from: EXAMPLE_ADDRESSES.b, to: new URL(urls.b).host, times: 3 },
      { from: 'listen 80;', to: `listen 127.0.0.1:${port};`, times: 1 },
      // The sabotage: every request round-robin, sessions' calls included.
      ...(routing ? [] : [{ from: 'proxy_pass http://$pysandbox_upstream;', to: 'proxy_pass http://pysandbox_all;', times: 1 }])
    ]), port)
  }

  t.test('through deploy/nginx/sessions.conf every call of a session reaches the instance that holds it', async t => {
    const proxy = await proxied(t, true)

    const ids = await open(t, proxy.url)
    if (ids.length < SESSIONS) return
    for (const id of ids) {
      t.match(id, /^[ab]\.[A-Za-z0-9_-]{32}$/, 'the id starts with its instance')
      t.equal((await call(urls[holderOf(id) as Instance], 'GET', `/sessions/${id}`)).body.instance, holderOf(id), 'and that instance holds it')
    }
    for (const id of INSTANCES) {
      t.ok(ids.filter(s => holderOf(s) === id).length >= 1, `POST /sessions goes round-robin: instance ${id} opened some (${ids.map(holderOf).join('')})`)
    }

    await t.test('the state set by one call is there at the next, for every session', async t => {
      for (const [i, id] of ids.entries()) {
        const value = token(i)
        const set = await call(proxy.url, 'POST', `/sessions/${id}/execute`, { script: `state = ${JSON.stringify(value)}\n` })
        t.equal(set.status, 200, `${id}: set (${JSON.stringify(set.body)})`)
        const read = await call(proxy.url, 'POST', `/sessions/${id}/execute`, { script: 'state\n' })
        t.equal(read.status, 200, `${id}: read (${JSON.stringify(read.body)})`)
        t.equal(read.body.result, value, `${id}: the state is there`)
      }
    })

    await t.test('GET through the proxy describes the session, from its own instance', async t => {
      for (const id of ids) {
        const described = await call(proxy.url, 'GET', `/sessions/${id}`)
        t.equal(described.status, 200, `GET ${id}`)
        t.equal(described.body.id, id, 'describes that session')
        t.equal(described.body.instance, holderOf(id), 'as held by the instance its id names')
      }
    })

    await t.test('straight to the other instance: 404 SESSION_NOT_FOUND naming both instances', async t => {
      for (const id of ids) {
        const holder = holderOf(id)
        const other = holder === 'a' ? 'b' : 'a'
        for (const [method, path, body] of [['POST', `/sessions/${id}/execute`, { script: 'state\n' }], ['GET', `/sessions/${id}`, undefined]] as const) {
          const reply = await call(urls[other], method, path, body)
          t.equal(reply.status, 404, `${method} ${id} on ${other}`)
          t.equal(reply.body.code, 'SESSION_NOT_FOUND', 'SESSION_NOT_FOUND')
          t.match(reply.body.message, new RegExp(`instance ${holder}\\b`), 'names the instance that holds it')
          t.match(reply.body.message, new RegExp(`instance ${other}\\b`), 'and the one asked')
        }
      }
    })

    await t.test('an id of an instance the proxy does not know goes round-robin, and is answered 404 naming it', async t => {
      const unknown = `zz9.${'A'.repeat(32)}`
      const reply = await call(proxy.url, 'POST', `/sessions/${unknown}/execute`, { script: '1\n' })
      t.equal(reply.status, 404, `POST /sessions/${unknown}/execute`)
      t.equal(reply.body.code, 'SESSION_NOT_FOUND', 'SESSION_NOT_FOUND')
      t.match(reply.body.message, /instance zz9\b/, 'naming the instance in the id')
    })

    await t.test('DELETE through the proxy ends the session; then the proxy route answers 410 SESSION_ENDED from its instance', async t => {
      for (const id of ids) {
        t.equal((await call(proxy.url, 'DELETE', `/sessions/${id}`)).status, 204, `DELETE ${id}`)
        // 410, not 404: only the instance that held it remembers that it ended, so this also
        // shows the call after DELETE was routed there.
        const after = await call(proxy.url, 'POST', `/sessions/${id}/execute`, { script: 'state\n' })
        t.equal(after.status, 410, `${id} after DELETE (${JSON.stringify(after.body)})`)
        t.equal(after.body.code, 'SESSION_ENDED', 'SESSION_ENDED')
      }
    })

    await t.test('MCP through the proxy: a caller\'s open_session and every run_in_session reach one instance', async t => {
      const { ok, lost, instance } = await mcpSession(proxy.url)
      t.equal(lost, 0, `run_in_session calls that reached the wrong instance (instance ${instance})`)
      t.equal(ok, MCP_CALLS, 'every call found the state of the one before')
    })

    await t.test('/execute goes round-robin over both instances', async t => {
      for (let i = 0; i < 4; i++) t.equal((await call(proxy.url, 'POST', '/execute', { script: 'def main():\n    return 1\n' })).body.result, 1, `/execute ${i}`)
      const reached = new Set(proxy.log().split('\n').filter(line => line.startsWith('POST /execute 200 ')).map(line => line.split(' ')[3]))
      t.same([...reached].sort(), INSTANCES.map(id => new URL(urls[id]).host).sort(), 'both instances ran some')
    })
  })

  t.test('sabotage: a plain round-robin proxy (the same file without the routing) loses sessions', async t => {
    const proxy = await proxied(t, false)
    const ids = await open(t, proxy.url)
    if (ids.length < SESSIONS) return
    let lost = 0
    let kept = 0
    for (const [i, id] of ids.entries()) {
      const value = token(i)
      for (const script of [`state = ${JSON.stringify(value)}\n`, 'state\n']) {
        const reply = await call(proxy.url, 'POST', `/sessions/${id}/execute`, { script })
        if (reply.status === 404 && reply.body.code === 'SESSION_NOT_FOUND') lost++
        else if (script === 'state\n' && reply.body.result === value) kept++
      }
    }
    t.ok(lost >= 1, `calls that reached the wrong instance: ${lost} of ${2 * SESSIONS}`)
    t.ok(kept < SESSIONS, `sessions whose state was there: ${kept} of ${SESSIONS} (the routing test above would fail)`)
    for (const id of ids) await call(urls[holderOf(id) as Instance], 'DELETE', `/sessions/${id}`)
    const mcp = await mcpSession(proxy.url)
    t.ok(mcp.lost >= 1, `MCP: run_in_session calls that reached the wrong instance: ${mcp.lost} of ${MCP_CALLS}`)
  })
}
