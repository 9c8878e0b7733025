// API keys against a real listening server with the nsjail backend: every rule a deny/allow
// pair, and the sabotage run: the same deny tests against the server with auth switched off
// (no API_KEYS_FILE, no METRICS_TOKEN_HASH, Fastify's own request serializer) must each report
// the breach. A breach is a script that ran (or /metrics that answered) for a caller without a
// valid key, or a key found in the log.
import t from 'tap'
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { hashKey, newKey } from '../../src/access/keys.js'
import { loadConfig } from '../../src/config.js'
import { TEST_LIMITS, externalUrl } from '../helpers/server.js'

const dir = mkdtempSync(join(tmpdir(), 'pysandbox-keys-'))
const keysFile = join(dir, 'keys')
const alice = newKey('alice')
const bob = newKey('bob')
const metricsToken = newKey('metrics')
writeFileSync(keysFile, `# test keys\n${alice.line}\n${bob.line} wallMs=2000\n`, { mode: 0o600 })

interface Server { url: string, app: FastifyInstance, log: () => string }

async function serve (env: Record<string, string>, sabotage = false): Promise<Server> {
  const lines: string[] = []
  const app = await buildApp({
    config: loadConfig({ ...TEST_LIMITS, SANDBOX_BACKEND: 'nsjail', CONCURRENCY: '1', ...env }),
    logger: {
      level: 'info',
      stream: { write: (line: string) => { lines.push(line) } },
      // The sabotage's logger prints the URL as Fastify does, query string and all.
      ...(sabotage ? { serializers: { req: (request: { method: string, url: string }) => ({ method: request.method, url: request.url }) } } : {})
    }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  return { url: `http://127.0.0.1:${port}`, app, log: () => lines.join('') }
}

const HELLO = { script: 'def main():\n    return "ran"\n' }

async function execute (server: Server, headers: Record<string, string> = {}, path = '/execute'): Promise<{ status: number, body: Record<string, any>, headers: Headers }> {
  const response = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(HELLO) })
  return { status: response.status, body: await response.json() as Record<string, any>, headers: response.headers }
}

const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` })

interface Attempt { breached: boolean, evidence: string }
const ran = (reply: { status: number, body: Record<string, any> }): Attempt =>
  ({ breached: reply.body.result === 'ran', evidence: `${reply.status} ${String(reply.body.code ?? reply.body.result)}` })

/** Each rule: what a caller without a valid key tries (deny), and what a caller with one does (allow). */
const RULES: Array<{ name: string, deny: (s: Server) => Promise<Attempt>, allow: (s: Server) => Promise<boolean> }> = [
  {
    name: 'no Authorization header runs nothing',
    deny: async s => ran(await execute(s)),
    allow: async s => (await execute(s, bearer(alice.key))).body.result === 'ran'
  },
  {
    name: 'a wrong key runs nothing',
    deny: async s => ran(await execute(s, bearer(newKey('mallory').key))),
    allow: async s => (await execute(s, bearer(bob.key))).body.result === 'ran'
  },
  {
    name: 'a valid key under another scheme (Basic, Token, bare) runs nothing',
    deny: async s => {
      const attempts = [`Basic ${Buffer.from(`${alice.key}:`).toString('base64')}`, `Token ${alice.key}`, alice.key, `Bearer ${alice.key} extra`, `Bearer  ${alice.key.slice(0, -1)}`]
      const replies = await Promise.all(attempts.map(async authorization => await execute(s, { authorization })))
      return { breached: replies.some(r => r.body.result === 'ran'), evidence: replies.map(r => r.status).join(',') }
    },
    allow: async s => (await execute(s, { authorization: `bearer ${alice.key}` })).body.result === 'ran'
  },
  {
    name: 'the keys file holds hashes: the hash itself is no key',
    deny: async s => ran(await execute(s, bearer(alice.line.split(':')[1] ?? ''))),
    allow: async s => (await execute(s, bearer(alice.key))).status === 200
  },
  {
    name: 'GET /metrics needs its own token, and an API key is not it',
    deny: async s => {
      const replies = await Promise.all([fetch(`${s.url}/metrics`), fetch(`${s.url}/metrics`, { headers: bearer(alice.key) })])
      return { breached: replies.some(r => r.status === 200), evidence: replies.map(r => r.status).join(',') }
    },
    allow: async s => (await fetch(`${s.url}/metrics`, { headers: bearer(metricsToken.key) })).status === 200
  },
  {
    name: 'a key sent in the header or the URL never reaches the log',
    deny: async s => {
      await execute(s, bearer(alice.key))
      await execute(s, {}, `/execute?api_key=${alice.key}`)
      await execute(s, {}, `/execute?q=${bob.key}`)
      await fetch(`${s.url}/${bob.key}`)
      await fetch(`${s.url}/healthz/%70${bob.key.slice(1)}`)
      const log = s.log()
      return { breached: log.includes(alice.key) || log.includes(bob.key), evidence: log.includes(alice.key) ? 'alice\'s key in the log' : 'bob\'s key in the log' }
    },
    allow: async s => s.log().includes('"key":"alice"') // the key's name is logged, as the execution's
  }
]

/** SIGHUP to this process (the server's), once its handling shows in the log: a signal arrives
 *  asynchronously, so "the next request" is the first after the reload. */
async function hangUp (server: Server): Promise<void> {
  const count = (): number => server.log().split('"why":"SIGHUP"').length
  const before = count()
  process.kill(process.pid, 'SIGHUP')
  const deadline = Date.now() + 5000
  while (count() === before && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
}

const protectedEnv = { API_KEYS_FILE: keysFile, METRICS_TOKEN_HASH: hashKey(metricsToken.key) }

if (externalUrl !== undefined) t.pass('skipped: needs servers of its own, with a keys file')
else {
  t.test('with API keys', async t => {
    const server = await serve(protectedEnv)
    t.teardown(async () => { await server.app.close() })

    for (const rule of RULES) {
      await t.test(rule.name, async t => {
        const attempt = await rule.deny(server)
        t.equal(attempt.breached, false, `deny (${attempt.evidence})`)
        t.equal(await rule.allow(server), true, 'allow')
      })
    }

    await t.test('401 in the service\'s error shape with WWW-Authenticate (RFC 6750)', async t => {
      const none = await execute(server)
      t.equal(none.status, 401)
      t.same(Object.keys(none.body), ['statusCode', 'error', 'code', 'message', 'requestId'])
      t.equal(none.body.code, 'UNAUTHORIZED')
      t.equal(none.headers.get('www-authenticate'), 'Bearer realm="pysandbox"')
      t.equal(none.headers.get('connection'), 'close', 'and the connection closes: a refused client cannot go on sending')
      const wrong = await execute(server, bearer('psk_wrong'))
      t.equal(wrong.headers.get('www-authenticate'), 'Bearer realm="pysandbox", error="invalid_token"')
      t.match(wrong.body.message, 'not valid')
    })

    await t.test('a key in the query string is refused 400 and runs nothing, even with a valid header', async t => {
      for (const query of [`api_key=${alice.key}`, `token=${alice.key}`, `x=${alice.key}`, 'access_token=abc', 'KEY=abc']) {
        const reply = await execute(server, bearer(alice.key), `/execute?${query}`)
        t.equal(reply.status, 400, query.slice(0, 20))
        t.match(reply.body.message, 'never accepted in the URL')
      }
      t.equal((await execute(server, bearer(alice.key), '/execute?verbose=1')).status, 200, 'allow: another query parameter')
      for (const path of [`/${alice.key}`, `/healthz/%70${alice.key.slice(1)}`]) {
        t.equal((await fetch(`${server.url}${path}`)).status, 400, 'a key in the path, raw or encoded, even on an open route')
      }
    })

    await t.test('health, readiness, the OpenAPI document, the docs and the playground stay open', async t => {
      for (const path of ['/healthz', '/readyz', '/openapi.json', '/docs/', '/', '/playground.js', '/playground.css']) {
        t.equal((await fetch(`${server.url}${path}`)).status, 200, path)
      }
      const ready = await (await fetch(`${server.url}/readyz`)).json() as { auth: string }
      t.equal(ready.auth, 'api-keys', '/readyz reports the auth mode')
      t.equal((await fetch(`${server.url}/nope`)).status, 401, 'an unknown path without a key: 401, as any path not open')
    })

    await t.test('a key\'s own ceilings apply to its requests and lower its defaults', async t => {
      const over = await fetch(`${server.url}/execute`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(bob.key) }, body: JSON.stringify({ ...HELLO, limits: { wallMs: 3000 } }) })
      t.equal(over.status, 400)
      t.match((await over.json() as { message: string }).message, 'body.limits.wallMs is 3000, above your API key\'s ceiling of 2000')
      const sleep = { script: 'import time\ndef main():\n    time.sleep(2.5)\n    return "ran"\n' }
      const bobs = await fetch(`${server.url}/execute`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(bob.key) }, body: JSON.stringify(sleep) })
      t.equal((await bobs.json() as { code: string }).code, 'TIME_LIMIT_EXCEEDED', 'deny: bob\'s default wall time is his ceiling, 2 s')
      const alices = await fetch(`${server.url}/execute`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(alice.key) }, body: JSON.stringify(sleep) })
      t.equal((await alices.json() as { result: string }).result, 'ran', 'allow: alice\'s is the server\'s, 4 s')
    })

    await t.test('metrics carry the key\'s name on executions and refusals', async t => {
      const text = await (await fetch(`${server.url}/metrics`, { headers: bearer(metricsToken.key) })).text()
      t.match(text, /pysandbox_executions_total\{backend="nsjail",outcome="ok",key="alice"\} \d+/)
      t.match(text, /pysandbox_http_errors_total\{status="401",code="UNAUTHORIZED",key="-"\} \d+/)
      t.match(text, /pysandbox_http_errors_total\{status="400",code="INVALID_REQUEST",key="bob"\} \d+/)
    })

    await t.test('revocation: a key removed from the file stops working at the next request after SIGHUP, or within the watch interval', async t => {
      t.equal((await execute(server, bearer(bob.key))).status, 200, 'bob runs')
      writeFileSync(keysFile, `${alice.line}\n`)
      await hangUp(server)
      t.equal((await execute(server, bearer(bob.key))).status, 401, 'deny: bob is revoked by SIGHUP')
      t.equal((await execute(server, bearer(alice.key))).status, 200, 'allow: alice stays')

      writeFileSync(keysFile, 'alice: not a hash\n')
      await hangUp(server)
      t.equal((await execute(server, bearer(alice.key))).status, 200, 'a file that cannot be used keeps the keys in force')
      t.match(server.log(), 'API keys NOT reloaded')
      t.notMatch(server.log(), 'not a hash', 'the bad line itself is not logged')

      writeFileSync(keysFile, `${bob.line}\n`) // no signal: the watch sees it
      const deadline = Date.now() + 5000
      while (Date.now() < deadline && (await execute(server, bearer(alice.key))).status !== 401) await new Promise(resolve => setTimeout(resolve, 200))
      t.equal((await execute(server, bearer(alice.key))).status, 401, 'deny: alice is revoked by the file watch')
      t.equal((await execute(server, bearer(bob.key))).status, 200, 'allow: bob is back')
      writeFileSync(keysFile, `${alice.line}\n${bob.line} wallMs=2000\n`)
    })
  })

  t.test('keys on with /metrics open, a keys file others can write, or one with no key: warnings', async t => {
    const server = await serve({ API_KEYS_FILE: keysFile })
    t.teardown(async () => { await server.app.close() })
    t.match(server.log(), '/metrics is open')
    t.notMatch(server.log(), 'writable by its group or by others', 'not for a file of mode 600')
    const empty = join(dir, 'empty')
    writeFileSync(empty, '# nobody yet\n', { mode: 0o666 })
    chmodSync(empty, 0o666)
    const none = await serve({ API_KEYS_FILE: empty, METRICS_TOKEN_HASH: hashKey(metricsToken.key) })
    t.teardown(async () => { await none.app.close() })
    t.match(none.log(), 'lists no key: every request to /execute is refused 401')
    t.match(none.log(), 'writable by its group or by others')
    t.notMatch(none.log(), '/metrics is open')
    t.equal((await execute(none, bearer(alice.key))).status, 401, 'fail closed: no key admits anyone')
  })

  t.test('a keys file that cannot be used stops the start, naming the line but never its content', async t => {
    const bad = join(dir, 'bad')
    writeFileSync(bad, `${alice.line}\nbob:${bob.key}\n`)
    await t.rejects(serve({ API_KEYS_FILE: bad }), { name: 'ConfigError', message: /line 2 \(bob\): the hash must be 64 lowercase hex digits/ })
    await t.rejects(serve({ API_KEYS_FILE: bad }), { message: /^((?!psk_).)*$/s })
    await t.rejects(serve({ API_KEYS_FILE: join(dir, 'absent') }), { name: 'ConfigError', message: /API_KEYS_FILE=.* cannot be used: ENOENT/ })
  })

  t.test('open (no API_KEYS_FILE): anyone runs, /readyz says so, and a non-loopback address is warned about', async t => {
    const open = await serve({ HOST: '0.0.0.0', LIMIT_WALL_MS_MAX: '40000' })
    t.teardown(async () => { await open.app.close() })
    t.equal((await execute(open)).body.result, 'ran')
    t.equal((await (await fetch(`${open.url}/readyz`)).json() as { auth: string }).auth, 'open')
    t.match(open.log(), 'NO API KEYS')
    t.match(open.log(), 'LIMIT_WALL_MS_MAX (40000 ms) is above QUEUE_TIMEOUT_MS (30000 ms)', 'a wall ceiling past the queue timeout is warned about')
    const local = await serve({ HOST: '127.0.0.1', LIMIT_WALL_MS_MAX: '4000' })
    t.teardown(async () => { await local.app.close() })
    t.notMatch(local.log(), 'NO API KEYS', 'no warning on loopback')
    t.notMatch(local.log(), 'QUEUE_TIMEOUT_MS', 'nor about the wall ceiling, by default')
  })

  t.test('sabotage: with auth switched off, every deny test reports the breach', async t => {
    const server = await serve({}, true)
    t.teardown(async () => { await server.app.close() })
    for (const rule of RULES) {
      const attempt = await rule.deny(server)
      t.equal(attempt.breached, true, `${rule.name}: breached (${attempt.evidence})`)
    }
  })
}
