// Fairness between callers, against real servers with the nsjail backend: rate limits keyed on
// the caller (its key, else the address the trusted proxies give), their headers, what never
// counts, the per-caller share of slots and queue, the two-tenant measurement (a flood from one
// key against another key's latency, in a server process of its own), and rate limits shared
// through a real redis-server that the test starts. Deny tests have their sabotage twins: with
// the protection off, the same attack gets through.
import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { newKey } from '../../src/access/keys.js'
import { ConfigSchema, PROJECT_ROOT, loadConfig } from '../../src/config.js'
import { UID_BASE_SPACING } from '../../src/backends/uid-lock.js'
import { HELLO, externalUrl, freePort, startServer, type Target } from '../helpers/server.js'

const dir = mkdtempSync(join(tmpdir(), 'pysandbox-fairness-'))

interface Reply { status: number, headers: Headers, body: Record<string, any>, ms: number }

async function send (url: string, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<Reply> {
  const started = performance.now()
  const response = await fetch(`${url}/execute`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  const parsed = await response.json() as Record<string, any>
  return { status: response.status, headers: response.headers, body: parsed, ms: performance.now() - started }
}

const hello = { script: HELLO }
const sleeping = (s: number): Record<string, unknown> => ({ script: `import time\ndef main():\n    time.sleep(${s})\n    return "slept"\n` })
const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN

async function serve (t: Test, env: Record<string, string>): Promise<Target> {
  const target = await startServer({ SANDBOX_BACKEND: 'nsjail', ...env })
  t.teardown(target.close)
  return target
}

if (externalUrl !== undefined) {
  t.pass('skipped: needs servers of its own')
} else {
  t.test('TRUST_PROXY counts hops from the right: a client cannot choose its address', async t => {
    // What the proxy sends: whatever the client wrote, then the address the proxy saw.
    const through = (written: string, seen: string): Record<string, string> => ({ 'x-forwarded-for': `${written}, ${seen}` })
    const attack = async (url: string): Promise<number[]> => {
      const statuses: number[] = []
      for (let i = 1; i <= 5; i++) statuses.push((await send(url, hello, through(`203.0.113.${i}`, '198.51.100.7'))).status)
      return statuses
    }
    const server = await serve(t, { TRUST_PROXY: '1', RATE_LIMIT_MAX: '3' })
    t.same(await attack(server.url), [200, 200, 200, 429, 429], 'deny: five made-up left-most entries are one client')
    t.equal((await send(server.url, hello, through('203.0.113.1', '198.51.100.8'))).status, 200, 'allow: another real client has its own quota')
    // Sabotage: trusting every hop (what TRUST_PROXY=true did) believes the client's own entry.
    const gullible = await serve(t, { TRUST_PROXY: '9', RATE_LIMIT_MAX: '3' })
    t.same(await attack(gullible.url), [200, 200, 200, 200, 200], 'sabotage: with every hop trusted, the limit is escaped')
  })

  t.test('rate limits: the draft-spec headers, Retry-After, and what never counts', async t => {
    const server = await serve(t, { RATE_LIMIT_MAX: '3' })
    for (let i = 0; i < 4; i++) {
      for (const path of ['/healthz', '/readyz', '/metrics', '/openapi.json', '/', '/playground.js', '/docs/']) {
        t.equal((await fetch(`${server.url}${path}`)).status, 200, `${path} is not limited`)
      }
    }
    const replies = [await send(server.url, hello), await send(server.url, hello), await send(server.url, hello), await send(server.url, hello)]
    t.same(replies.map(r => r.status), [200, 200, 200, 429], 'health, docs, metrics and static files did not count')
    t.same(replies.map(r => r.headers.get('ratelimit-remaining')), ['2', '1', '0', '0'])
    t.equal(replies[0]?.headers.get('ratelimit-limit'), '3')
    t.match(replies[0]?.headers.get('ratelimit-reset'), /^\d+$/)
    const refused = replies[3] as Reply
    t.equal(refused.body.code, 'RATE_LIMITED')
    t.match(refused.headers.get('retry-after'), /^\d+$/)
  })

  t.test('the default rate lets one app server send 20 hello requests a second', async t => {
    const server = await serve(t, { RATE_LIMIT_MAX: String(ConfigSchema.properties.RATE_LIMIT_MAX.default) })
    // Steady state: the warm sandboxes have imported pandas (a start takes a few seconds).
    await waitFor(async () => /pysandbox_warm_sandboxes\{state="ready"\} 2/.test(await (await fetch(`${server.url}/metrics`)).text()), 'the warm sandboxes', 60_000)
    const statuses = new Map<number | string, number>()
    const started = performance.now()
    const pending: Array<Promise<void>> = []
    for (let i = 0; i < 60; i++) {
      pending.push(send(server.url, hello).then(r => { const k = r.body.code ?? r.status; statuses.set(k, (statuses.get(k) ?? 0) + 1) }))
      await new Promise(resolve => setTimeout(resolve, started + (i + 1) * 50 - performance.now()))
    }
    await Promise.all(pending)
    t.same(Object.fromEntries(statuses), { 200: 60 }, `60 requests in 3 s, all answered: ${JSON.stringify(Object.fromEntries(statuses))}`)
  })

  t.test('one caller within its rate cannot hold every slot, nor keep another caller out of the queue (CONCURRENCY 2, QUEUE_SIZE 4)', async t => {
    const attack = async (url: string): Promise<{ own: number[], other: Reply, third: Reply }> => {
      const own = Array.from({ length: 6 }, async () => await send(url, sleeping(2), { 'x-forwarded-for': '1.1.1.1' }))
      await new Promise(resolve => setTimeout(resolve, 300))
      // Another address: a caller of its own (TRUST_PROXY 1, as behind a proxy).
      const other = await send(url, hello, { 'x-forwarded-for': '2.2.2.2' })
      // And a third caller, when the queue is full: it takes the place of the flood's newest waiter.
      const blocker = send(url, sleeping(2), { 'x-forwarded-for': '2.2.2.2' })
      const third = await send(url, hello, { 'x-forwarded-for': '3.3.3.3' })
      await blocker
      return { own: (await Promise.all(own)).map(r => r.status).sort(), other, third }
    }
    const fair = await serve(t, { CONCURRENCY: '2', QUEUE_SIZE: '4', TRUST_PROXY: '1', TENANT_SLOTS: '1' }) // the default for 2 slots
    const { own, other, third } = await attack(fair.url)
    t.same(own, [200, 200, 200, 200, 429, 429], 'the flood: 1 running (its share of slots), 4 waiting (the queue had room), then 1 refused CONCURRENCY_LIMITED, and 1 waiter displaced')
    t.equal(other.status, 200, 'deny: another caller is served')
    t.ok(other.ms < 1500, `at once, on the slot the flood cannot take (${Math.round(other.ms)} ms)`)
    t.equal(third.status, 200, `deny: a third caller finding the queue full takes a flood waiter's place (${Math.round(third.ms)} ms)`)
    // Sabotage: a share of slots as large as the whole: the flood holds both, the other waits a run.
    const whole = await serve(t, { CONCURRENCY: '2', QUEUE_SIZE: '4', TRUST_PROXY: '1', TENANT_SLOTS: '2' })
    const sabotaged = await attack(whole.url)
    t.ok(sabotaged.other.status !== 200 || sabotaged.other.ms > 1500, `sabotage: the other caller is refused or waits for a run (${sabotaged.other.status}, ${Math.round(sabotaged.other.ms)} ms)`)
  })

  t.test('two tenants: a flood from one key keeps the other key\'s p50 under 10x its idle value', async t => {
    const flood = newKey('flood')
    const victim = newKey('victim')
    const keysFile = join(dir, 'keys')
    writeFileSync(keysFile, `${flood.line}\n${victim.line}\n`)
    const measure = async (env: Record<string, string>): Promise<{ idle: number, flooded: number, refused: number, floodReplies: Record<string, number> }> => {
      const server = await serverProcess(t, { API_KEYS_FILE: keysFile, CONCURRENCY: '2', QUEUE_SIZE: '4', ...env })
      const asVictim = { authorization: `Bearer ${victim.key}` }
      for (let i = 0; i < 10; i++) await send(server.url, hello, asVictim) // warm
      const idle: number[] = []
      for (let i = 0; i < 40; i++) idle.push((await send(server.url, hello, asVictim)).ms)
      const floodState = { on: true }
      const floodReplies: Record<string, number> = {}
      // 8 clients sending 0.2 s CPU-bound runs back to back, retrying at once when refused.
      const busy = { script: 'import time\ndef main():\n    end = time.process_time() + 0.2\n    while time.process_time() < end:\n        pass\n' }
      const floods = Array.from({ length: 8 }, async () => {
        while (floodState.on) {
          const reply = await send(server.url, busy, { authorization: `Bearer ${flood.key}` })
          const key = String(reply.body.code ?? reply.status)
          floodReplies[key] = (floodReplies[key] ?? 0) + 1
          if (reply.status !== 200 && reply.status !== 422) await new Promise(resolve => setTimeout(resolve, 5))
        }
      })
      await new Promise(resolve => setTimeout(resolve, 1000))
      const flooded: number[] = []
      let refused = 0
      for (let i = 0; i < 40; i++) {
        const reply = await send(server.url, hello, asVictim)
        if (reply.status !== 200) refused++
        flooded.push(reply.ms)
      }
      floodState.on = false
      await Promise.all(floods)
      return { idle: median(idle), flooded: median(flooded), refused, floodReplies }
    }
    const fair = await measure({})
    t.comment(`two tenants, defaults (TENANT_SLOTS 1): victim p50 idle ${fair.idle.toFixed(1)} ms, under flood ${fair.flooded.toFixed(1)} ms (${(fair.flooded / fair.idle).toFixed(1)}x); flood replies ${JSON.stringify(fair.floodReplies)}`)
    t.equal(fair.refused, 0, 'the victim is never refused')
    t.ok(fair.flooded < 10 * fair.idle, `deny: p50 under flood ${fair.flooded.toFixed(1)} ms < 10 x idle ${fair.idle.toFixed(1)} ms`)
    // A second server beside the first (still up until the test ends): uids of its own, or the
    // first's claim on them refuses it (src/backends/uid-lock.ts).
    const whole = await measure({ TENANT_SLOTS: '2', SANDBOX_UID_BASE: String(Number(process.env.SANDBOX_UID_BASE ?? loadConfig({}).SANDBOX_UID_BASE) + UID_BASE_SPACING) })
    t.comment(`sabotage (shares as large as the whole): victim p50 idle ${whole.idle.toFixed(1)} ms, under flood ${whole.flooded.toFixed(1)} ms, ${whole.refused} of 40 refused`)
    t.ok(whole.refused > 0 || whole.flooded >= 10 * whole.idle, 'sabotage: without the shares the flood breaks the bound')
  })

  t.test('with REDIS_URL, instances share one count (a real redis-server); without, each counts for itself', async t => {
    const port = await freePort()
    const startRedis = (): ChildProcess => spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
    let redis = startRedis()
    t.teardown(() => { redis.kill('SIGKILL') })
    await waitFor(async () => await redisPing(port), 'redis-server to answer')
    const key = newKey('shared')
    const keysFile = join(dir, 'shared-keys')
    writeFileSync(keysFile, `${key.line}\n`)
    const env = { RATE_LIMIT_MAX: '3', API_KEYS_FILE: keysFile, WARM_SANDBOXES: 'false', CONCURRENCY: '1' }
    const asKey = { authorization: `Bearer ${key.key}` }
    const [a, b] = [await serve(t, { ...env, REDIS_URL: `redis://127.0.0.1:${port}` }), await serve(t, { ...env, REDIS_URL: `redis://127.0.0.1:${port}` })] as [Target, Target]
    const shared = [await send(a.url, hello, asKey), await send(b.url, hello, asKey), await send(a.url, hello, asKey), await send(b.url, hello, asKey)]
    t.same(shared.map(r => r.status), [200, 200, 200, 429], 'deny: the key\'s 3 per window hold across two instances')
    t.same(shared.map(r => r.headers.get('ratelimit-remaining')), ['2', '1', '0', '0'])
    const [c, d] = [await serve(t, env), await serve(t, env)] as [Target, Target]
    const apart = [await send(c.url, hello, asKey), await send(d.url, hello, asKey), await send(c.url, hello, asKey), await send(d.url, hello, asKey)]
    t.same(apart.map(r => r.status), [200, 200, 200, 200], 'sabotage: without Redis each instance allows 3')
    redis.kill('SIGKILL')
    await once(redis, 'exit')
    const down = await send(b.url, hello, { ...asKey })
    t.equal(down.status, 200, 'Redis down: the request is served, uncounted (the key was over its 3)')
    redis = startRedis()
    // Back (empty): the key's next 3 pass, then it is refused again, once the client has reconnected.
    await waitFor(async () => (await send(b.url, hello, asKey)).status === 429, 'counting again once Redis is back', 20_000)
    t.pass('Redis back: counted again, without a restart')
  })
}

async function waitFor (check: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  throw new Error(`timed out waiting for ${what}`)
}

async function redisPing (port: number): Promise<boolean> {
  const { Redis } = await import('ioredis')
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => {}) // refused while it starts: the caller tries again
  try {
    await client.connect()
    return await client.ping() === 'PONG'
  } finally {
    client.disconnect()
  }
}

/** The built server (dist/server.js) in a process of its own, so the test's clients do not share
 *  its event loop. */
async function serverProcess (t: Test, env: Record<string, string>): Promise<{ url: string, child: ChildProcess }> {
  const port = await freePort()
  const child = spawn(process.execPath, [resolve(PROJECT_ROOT, 'dist/server.js')], {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', SANDBOX_BACKEND: 'nsjail', ...env },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  t.teardown(async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM')
      await once(child, 'exit')
    }
  })
  const url = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${url}/readyz`)).status === 200, 'the server to be ready', 60_000)
  return { url, child }
}
