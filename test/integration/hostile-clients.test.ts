// Hostile clients cannot hurt the server process (issue 14), against real server processes
// (node dist/server.js: run `npm run build` first), each attack with its allow twin:
// (a) idle connections up to the descriptor limit, under `prlimit --nofile=256`, on nsjail and on
//     unshare: a run still succeeds, /healthz stays fast, the server serves again once they close;
//     with the cap off (MAX_CONNECTIONS above the limit) the process does run out of descriptors,
//     and still never exits: a run is then a retryable 503 BUSY, never a 500. One connection that
//     pipelines a thousand requests holds no more descriptors than one that does not.
// (b) clients that never read their ~20 MiB replies: the server's memory stays bounded, a caller
//     is refused 429 past UNREAD_REPLY_BYTES_PER_CALLER while another is served, everyone 503 past
//     UNREAD_REPLY_BYTES, stalled replies are cut after REPLY_TIMEOUT_MS (and their bytes freed),
//     while a slow reader that keeps reading and a run longer than REPLY_TIMEOUT_MS are not.
import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, readdirSync } from 'node:fs'
import { Agent } from 'node:http'
import { connect, type Socket } from 'node:net'
import { resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { PROJECT_ROOT } from '../../src/config.js'
import { call, firstBytes } from '../helpers/http.js'
import { externalUrl, freePort, waitFor } from '../helpers/server.js'

const MiB = 1024 * 1024
/** The servers' descriptor limit in (a): low enough to reach in a second. */
const NOFILE = 256
/** A health poll must answer within this while idle connections are held (a). */
const HEALTH_BOUND_MS = 100

interface Server {
  port: number
  child: ChildProcess
  /** The server's log lines, parsed. */
  log: Array<Record<string, any>>
  alive: () => boolean
  rssMiB: () => number
  fds: () => number
}

/** A server process of its own, under `prlimit --nofile=N:N` when `nofile` is given. */
async function serve (t: Test, env: Record<string, string>, nofile?: number): Promise<Server> {
  const port = await freePort()
  const server = [resolve(PROJECT_ROOT, 'dist/server.js')]
  const [file, args] = nofile === undefined ? [process.execPath, server] : ['prlimit', [`--nofile=${nofile}:${nofile}`, '--', process.execPath, ...server]]
  const child = spawn(file, args, {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info', RATE_LIMIT_MAX: '0', PROBE_INTERVAL_MS: '0', CONCURRENCY: '2', TENANT_SLOTS: '2', ...env },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  const log: Array<Record<string, any>> = []
  let rest = ''
  child.stdout?.on('data', (chunk: Buffer) => {
    const lines = (rest + chunk.toString()).split('\n')
    rest = lines.pop() ?? ''
    for (const line of lines) {
      try {
        log.push(JSON.parse(line) as Record<string, any>)
      } catch {}
    }
  })
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    await once(child, 'exit')
    clearTimeout(killer)
  })
  const pid = child.pid as number
  const url = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${url}/readyz`)).status === 200, 'the server to be ready')
  if (env.SANDBOX_BACKEND === 'nsjail') {
    await waitFor(async () => /pysandbox_warm_sandboxes\{state="ready"\} 2/.test(await (await fetch(`${url}/metrics`)).text()), 'the warm sandboxes')
  }
  return {
    port,
    child,
    log,
    alive: () => child.exitCode === null && child.signalCode === null,
    rssMiB: () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024,
    fds: () => readdirSync(`/proc/${pid}/fd`).length
  }
}

const run = (script: string): string => JSON.stringify({ script })
const HELLO = run('def main():\n    return "hello"\n')

/** Polls /healthz over a keep-alive connection of its own (made before any attack: a new one may
 *  be refused then) every 25 ms, until stopped. */
function healthPoller (port: number): { start: () => Promise<void>, worst: () => number, polls: () => number, mark: () => { worst: number, polls: number }, stop: () => Promise<void> } {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  let latencies: number[] = []
  const state = { running: false }
  let loop: Promise<void> | undefined
  return {
    start: async () => {
      await call(port, 'GET', '/healthz', { agent }) // the connection
      state.running = true
      loop = (async () => {
        while (state.running) {
          const reply = await call(port, 'GET', '/healthz', { agent })
          latencies.push(reply.status === 200 ? reply.ms : Infinity)
          await sleep(25)
        }
      })()
    },
    worst: () => Math.max(...latencies),
    polls: () => latencies.length,
    /** Starts a new window; the last one's worst and count. */
    mark: () => {
      const last = { worst: Math.max(...latencies), polls: latencies.length }
      latencies = []
      return last
    },
    stop: async () => {
      state.running = false
      await loop
      agent.destroy()
    }
  }
}

/** Opens idle connections until the server refuses (closes) some: those it kept. */
async function openUntilRefused (port: number): Promise<Socket[]> {
  const kept: Socket[] = []
  const attempt = async (): Promise<Socket | undefined> => {
    const socket = connect(port, '127.0.0.1')
    socket.on('error', () => {})
    return await new Promise(resolve => {
      socket.once('close', () => resolve(undefined))
      socket.once('connect', () => { setTimeout(() => resolve(socket.destroyed ? undefined : socket), 200) })
    })
  }
  for (;;) {
    const batch = await Promise.all(Array.from({ length: 16 }, attempt))
    for (const socket of batch) if (socket !== undefined) kept.push(socket)
    if (batch.some(socket => socket === undefined) || kept.length > 5000) return kept
  }
}

async function closeAll (sockets: Socket[]): Promise<void> {
  for (const socket of sockets) socket.destroy()
  await sleep(300)
}

const startupLine = (server: Server): Record<string, any> | undefined => server.log.find(line => typeof line.maxConnections === 'number' && line.descriptorLimit !== undefined)

/** A run in each slot before the attack: what a slot makes once (its cgroup under unshare) is made,
 *  so that the attack meets the spawns themselves; then the warm jails are ready again (nsjail). */
async function warmUp (server: Server, backend: string): Promise<void> {
  await Promise.all([call(server.port, 'POST', '/execute', { body: HELLO }), call(server.port, 'POST', '/execute', { body: HELLO })])
  if (backend === 'nsjail') {
    await waitFor(async () => /pysandbox_warm_sandboxes\{state="ready"\} 2/.test(await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text()), 'the warm sandboxes')
  }
}

if (externalUrl !== undefined) {
  t.pass('skipped: starts server processes of its own')
} else {
  for (const backend of ['nsjail', 'unshare'] as const) {
    // WARM_RECYCLE_RUNS 1: each warm run is followed by a new warm jail's spawn (nsjail).
    const env = { SANDBOX_BACKEND: backend, WARM_RECYCLE_RUNS: '1' }

    t.test(`${backend}: deny: idle connections up to the descriptor limit leave a run its descriptors (prlimit --nofile=${NOFILE})`, async t => {
      const server = await serve(t, env, NOFILE)
      await warmUp(server, backend)
      const cap = startupLine(server)?.maxConnections as number
      t.equal(cap, (NOFILE - (64 + 16 * 2)) / 2, 'the start-up log states the cap: (limit - reserve) / 2')
      const runs = new Agent({ keepAlive: true, maxSockets: 1 })
      t.teardown(() => runs.destroy())
      t.equal((await call(server.port, 'GET', '/healthz', { agent: runs })).status, 200, 'the run\'s connection, made first')
      const health = healthPoller(server.port)
      await health.start()

      const idle = await openUntilRefused(server.port)
      t.ok(idle.length >= cap - 8 && idle.length <= cap, `refused past the cap: ${idle.length} idle connections kept (cap ${cap}, with the run's and the poller's)`)
      t.ok(server.fds() < NOFILE - 32, `descriptors in use: ${server.fds()} of ${NOFILE}`)
      for (let i = 0; i < 3; i++) {
        const reply = await call(server.port, 'POST', '/execute', { body: HELLO, agent: runs })
        t.equal(reply.status, 200, `deny: run ${i + 1} succeeds while the connections are held (${reply.body.slice(0, 120)})`)
      }
      await sleep(500) // whatever the runs set off (a new warm jail) has happened
      t.ok(health.polls() >= 10, `${health.polls()} health polls`)
      t.ok(health.worst() < HEALTH_BOUND_MS, `/healthz worst ${Math.round(health.worst())} ms over ${health.polls()} polls (bound ${HEALTH_BOUND_MS} ms)`)
      await health.stop()
      t.ok(server.alive(), 'the server is alive')

      await closeAll(idle)
      const fresh = await call(server.port, 'POST', '/execute', { body: HELLO })
      t.equal(fresh.status, 200, 'allow: once they close, a new connection is served')
    })

    t.test(`${backend}: deny: with the cap off (MAX_CONNECTIONS over the limit), out of descriptors, the server never exits and a run is a retryable 503 BUSY, never a 500`, async t => {
      const server = await serve(t, { ...env, MAX_CONNECTIONS: '100000' }, NOFILE)
      await warmUp(server, backend)
      t.ok(server.log.some(line => line.level === 40 && /MAX_CONNECTIONS \(100000\) is over the 80 connections/.test(String(line.msg))), 'the start-up log warns')
      const runs = new Agent({ keepAlive: true, maxSockets: 1 })
      t.teardown(() => runs.destroy())
      t.equal((await call(server.port, 'GET', '/healthz', { agent: runs })).status, 200)
      const idle = await openUntilRefused(server.port)
      t.ok(idle.length > 150, `${idle.length} idle connections: up to the descriptor limit`)
      const statuses: string[] = []
      for (let i = 0; i < 3; i++) {
        const reply = await call(server.port, 'POST', '/execute', { body: HELLO, agent: runs })
        const body = JSON.parse(reply.body) as Record<string, any>
        statuses.push(reply.status === 200 ? '200' : `${reply.status} ${String(body.code)}`)
        if (reply.status !== 200) t.equal(reply.headers['retry-after'], '1', 'a refusal says when to retry')
      }
      t.ok(statuses.every(s => s === '200' || s === '503 BUSY'), `every run succeeded or was refused BUSY: ${statuses.join(', ')}`)
      await sleep(500)
      t.ok(server.alive(), 'the server is alive')
      // unshare: the run's own spawn failed; nsjail: the warm jail that replaces a used one did.
      const spawnFailed = backend === 'unshare'
        ? server.log.some(line => /a sandbox could not be started/.test(String(line.msg)) && /^spawn unshare EMFILE$/.test(String(line.err?.message)))
        : server.log.some(line => /could not start: spawn \S+nsjail EMFILE/.test(String(line.msg)))
      t.ok(spawnFailed, 'a spawn did fail for lack of descriptors, and the log says so')
      t.notOk(server.log.some(line => line.status === 500), 'no reply was a 500')

      await closeAll(idle)
      const fresh = await call(server.port, 'POST', '/execute', { body: HELLO })
      t.equal(fresh.status, 200, 'allow: once they close, the server serves again')
    })
  }

  t.test('deny: one connection pipelining 1000 requests holds no more descriptors than one (prlimit --nofile=256)', async t => {
    const server = await serve(t, { SANDBOX_BACKEND: 'unshare' }, NOFILE)
    const before = server.fds()
    const socket = connect(server.port, '127.0.0.1')
    socket.on('error', () => {})
    await once(socket, 'connect')
    socket.pause() // reads nothing: the replies queue
    // Swagger UI's bundle (1.4 MB): a reply that waits its turn keeps its file open.
    socket.write('GET /docs/static/swagger-ui-bundle.js HTTP/1.1\r\nhost: x\r\n\r\n'.repeat(1000))
    await sleep(1000)
    const during = server.fds()
    t.ok(during < before + 16, `descriptors: ${before} before, ${during} after the flood`)
    const reply = await call(server.port, 'POST', '/execute', { body: HELLO })
    t.equal(reply.status, 200, 'a run succeeds')
    t.ok(server.log.some(line => /HTTP pipelining/.test(String(line.msg))), 'the log says why the connection was closed')
    socket.destroy()
    // Allow: requests one after the other on one keep-alive connection are all served.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    t.teardown(() => agent.destroy())
    const statuses = []
    for (let i = 0; i < 20; i++) statuses.push((await call(server.port, 'GET', '/playground.js', { agent })).status)
    t.same(new Set(statuses), new Set([200]), 'allow: 20 requests in turn on one connection')
  })

  /** A POST /execute on a connection of its own that reads the first bytes of its reply, then
   *  stops reading. */
  interface Unread { socket: Socket, status: number, code: string | undefined, contentLength: number, bodyBytes: number }
  async function sendWithoutReading (port: number, body: string, localAddress: string): Promise<Unread> {
    const { socket, first } = await firstBytes(port, `POST /execute HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, localAddress)
    const text = first.toString('latin1')
    return {
      socket,
      status: Number(text.slice(9, 12)),
      code: /"code":"([A-Z_]+)"/.exec(text)?.[1],
      contentLength: Number(/content-length: (\d+)/i.exec(text)?.[1]),
      bodyBytes: first.length - (text.indexOf('\r\n\r\n') + 4)
    }
  }

  /** Reads the rest of `unread`'s reply at `bytesPerSecond` at most, until all of it came, its
   *  connection closed, or `timeoutMs` passed: the bytes of its body that came. */
  async function readRest (unread: Unread, bytesPerSecond: number, timeoutMs: number): Promise<{ bytes: number, ms: number }> {
    const { socket } = unread
    const started = performance.now()
    let bytes = unread.bodyBytes
    let closed = false
    socket.once('close', () => { closed = true })
    while (bytes < unread.contentLength && performance.now() - started < timeoutMs) {
      const chunk = socket.read() as Buffer | null
      if (chunk !== null) {
        bytes += chunk.length
        await sleep(chunk.length / bytesPerSecond * 1000)
        continue
      }
      if (closed || socket.destroyed) break
      await new Promise<void>(resolve => {
        const done = (): void => {
          clearTimeout(timer)
          socket.off('readable', done)
          socket.off('close', done)
          resolve()
        }
        const timer = setTimeout(done, 100)
        socket.on('readable', done)
        socket.on('close', done)
      })
    }
    socket.destroy()
    return { bytes, ms: performance.now() - started }
  }

  t.test('deny: clients that never read their ~20 MiB replies: bounded memory, 429 per caller, 503 for all, stalled replies cut', async t => {
    const limits = { perCaller: 48 * MiB, all: 64 * MiB, replyTimeoutMs: 5000 }
    const server = await serve(t, {
      SANDBOX_BACKEND: 'nsjail',
      REPLY_TIMEOUT_MS: String(limits.replyTimeoutMs),
      UNREAD_REPLY_BYTES_PER_CALLER: String(limits.perCaller),
      UNREAD_REPLY_BYTES: String(limits.all),
      LIMIT_OUTPUT_BYTES: String(MiB),
      LIMIT_RESULT_BYTES: String(8 * MiB)
    })
    // 1 MiB of stdout and of stderr that JSON escapes six-fold, and an 8 MiB result: ~20 MiB.
    const big = run("import sys\ndef main():\n    sys.stdout.write('\\x01' * 1048576)\n    sys.stderr.write('\\x01' * 1048576)\n    return 'x' * (8388608 - 64)\n")
    const [attacker, other, third] = ['127.0.0.1', '127.0.0.2', '127.0.0.3']

    // The baseline: the most the server held while making (and sending) two of those replies.
    let peak = server.rssMiB()
    const samples: number[] = []
    const sampler = setInterval(() => { const rss = server.rssMiB(); samples.push(Math.round(rss)); peak = Math.max(peak, rss) }, 100)
    t.teardown(() => clearInterval(sampler))
    let replyBytes = 0
    for (let i = 0; i < 2; i++) {
      const warm = await call(server.port, 'POST', '/execute', { body: big, localAddress: other })
      t.equal(warm.status, 200)
      replyBytes = Buffer.byteLength(warm.body)
    }
    t.ok(replyBytes > 19 * MiB && replyBytes < 21 * MiB, `a reply is ${(replyBytes / MiB).toFixed(1)} MiB`)
    await sleep(500)
    const baseline = peak
    const health = healthPoller(server.port)
    await health.start()

    // One caller asks for 12: 3 replies held (60 MiB > 48 MiB), then refused.
    const held: Unread[] = []
    for (let i = 0; i < 12; i++) held.push(await sendWithoutReading(server.port, big, attacker))
    t.same(held.map(u => u.status), [200, 200, 200, ...Array<number>(9).fill(429)], 'the caller is refused once it holds more than UNREAD_REPLY_BYTES_PER_CALLER')
    t.same(new Set(held.slice(3).map(u => u.code)), new Set(['CONCURRENCY_LIMITED']))
    const served = await call(server.port, 'POST', '/execute', { body: HELLO, localAddress: other })
    t.equal(served.status, 200, `deny: another caller is served while the first one's replies are held (${Math.round(served.ms)} ms)`)

    // A third caller within its own bound pushes the total over UNREAD_REPLY_BYTES: everyone gets 503.
    const thirds = [await sendWithoutReading(server.port, big, third), await sendWithoutReading(server.port, big, third)]
    const lastSent = performance.now()
    t.same(thirds.map(u => u.status), [200, 503], 'all callers together over UNREAD_REPLY_BYTES: 503')
    t.equal(thirds[1]?.code, 'BUSY')
    const busy = await call(server.port, 'POST', '/execute', { body: HELLO, localAddress: other })
    t.equal(busy.status, 503, 'for every caller')
    t.equal(busy.headers['retry-after'], '1')
    const making = health.mark()
    t.ok(making.worst < 2000, `/healthz worst ${Math.round(making.worst)} ms over ${making.polls} polls while the 5 admitted replies were made ` +
      '(each blocks the event loop for its channel scan and serialization, as it does for a client that reads: not a bound of the connection layer; this one is loose)')

    // From here on no reply is made: the attack is only held, and refused.
    let refusals = { caller: 9, all: 2 }
    const holdUntil = performance.now() + 1500
    while (performance.now() < holdUntil) {
      const [mine, theirs] = await Promise.all([sendWithoutReading(server.port, HELLO, attacker), call(server.port, 'POST', '/execute', { body: HELLO, localAddress: other })])
      t.equal(mine.code, 'CONCURRENCY_LIMITED', 'the caller is still refused')
      t.equal(theirs.status, 503, 'and every caller while all together are over')
      mine.socket.destroy()
      refusals = { caller: refusals.caller + 1, all: refusals.all + 1 }
      await sleep(100)
    }
    const holding = health.mark()
    t.ok(holding.polls >= 20, `${holding.polls} health polls`)
    t.ok(holding.worst < HEALTH_BOUND_MS, `/healthz worst ${Math.round(holding.worst)} ms over ${holding.polls} polls while the replies are held and callers refused (bound ${HEALTH_BOUND_MS} ms)`)
    // The bound: twice UNREAD_REPLY_BYTES (a held reply's bytes, and as much again for what making
    // it left to the garbage collector and what the route keeps of it until it is sent), and
    // 100 MiB. Without the bounds, these 12 requests grew it by ~500 MiB (24 held replies' worth).
    const bound = 2 * limits.all / MiB + 100
    t.comment(`RSS samples (MiB, every 100 ms): ${samples.join(' ')}`)
    t.ok(peak - baseline < bound, `RSS ${Math.round(baseline)} MiB before, peak ${Math.round(peak)} MiB with ${(4 * replyBytes / MiB).toFixed(0)} MiB of replies held: ${Math.round(peak - baseline)} MiB more (bound ${bound} MiB)`)

    // Nothing moves for REPLY_TIMEOUT_MS: the stalled replies are cut and their bytes freed.
    await sleep(limits.replyTimeoutMs + 1500 - (performance.now() - lastSent))
    for (const unread of [...held.slice(0, 3), thirds[0] as Unread]) {
      const { bytes } = await readRest(unread, 1024 * MiB, 5000)
      t.ok(bytes < unread.contentLength, `a stalled reply was cut: ${(bytes / MiB).toFixed(1)} of ${(unread.contentLength / MiB).toFixed(1)} MiB came, then the connection closed`)
    }
    t.ok(server.log.some(line => /made no progress for 5000 ms/.test(String(line.msg))), 'the log says why')
    const again = await call(server.port, 'POST', '/execute', { body: HELLO, localAddress: attacker })
    t.equal(again.status, 200, 'allow: once its replies were cut, the caller is served again')
    const metrics = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text()
    t.match(metrics, new RegExp(`pysandbox_shed_total\\{reason="caller_unread_replies"\\} ${refusals.caller}\\n`), `the refusals are counted: ${refusals.caller} of the caller's`)
    t.match(metrics, new RegExp(`pysandbox_shed_total\\{reason="unread_replies"\\} ${refusals.all}\\n`), `and ${refusals.all} for all`)
    await health.stop()
    t.ok(server.alive())
  })

  t.test('allow: a slow reader that keeps reading, and a run longer than REPLY_TIMEOUT_MS, are not cut', async t => {
    const server = await serve(t, { SANDBOX_BACKEND: 'nsjail', REPLY_TIMEOUT_MS: '1000' })
    const big = run("def main():\n    return 'x' * (8388608 - 64)\n")
    // ~3 MiB/s: the 8 MiB reply takes about 3 s to read, three times REPLY_TIMEOUT_MS.
    const slow = await sendWithoutReading(server.port, big, '127.0.0.1')
    t.equal(slow.status, 200)
    const { bytes, ms } = await readRest(slow, 3 * MiB, 15_000)
    t.equal(bytes, slow.contentLength, `all of it came: ${(bytes / MiB).toFixed(1)} MiB in ${Math.round(ms)} ms`)
    t.ok(ms > 1500, 'slower than REPLY_TIMEOUT_MS')

    const long = await call(server.port, 'POST', '/execute', { body: run('import time\ndef main():\n    time.sleep(2.5)\n    return "late"\n') })
    t.equal(long.status, 200, `a 2.5 s run is answered (${Math.round(long.ms)} ms)`)
    t.match(JSON.parse(long.body), { result: 'late' })
  })
}
