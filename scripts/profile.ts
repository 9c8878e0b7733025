// Where a warm run's CPU goes (not a test): one server with the real sandbox (warm on), hello
// requests one at a time and then at twice the slots, and the CPU each party used per request, as
// /proc counts it: this process (the HTTP server and its client), the zygotes themselves (relaying
// frames, the sweep, the clean-up check, forking the next child), the runs' processes (reaped by
// their zygote: the script's own work and its process's teardown), the rest of the host, and idle.
// Usage: npm run profile [-- --requests 300 --concurrency 1,4 --perf DIR]
//   --concurrency: the rows (default 1 and twice the slots); --gap MS: each client waits that long
//   between its requests (the server at rest, every run's clean-up done); --perf: also record each row with
//   `perf record -a -g` (Linux perf, as root) into DIR/c<concurrency>.data, for `perf report`.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { parseArgs } from 'node:util'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'

const { values } = parseArgs({ options: { requests: { type: 'string', default: '300' }, concurrency: { type: 'string' }, perf: { type: 'string' }, gap: { type: 'string', default: '0' } } })
const REQUESTS = Number(values.requests)
const gap = Number(values.gap)
const TICK_MS = 10 // USER_HZ is 100 on Linux

const HELLO = JSON.stringify({ script: 'def main():\n    print("Hello from main!")\n    return {"msg": "success", "value": 42}\n' })

/** Busy (user, nice, system, irq, softirq), idle (with iowait) and stolen ticks of the whole host. */
function host (): { busy: number, idle: number, steal: number } {
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number)
  return { busy: user + nice + system + irq + softirq, idle: idle + iowait, steal }
}

interface Counts { own: number, children: number, faults: number, childFaults: number }

/** utime + stime, and cutime + cstime (its reaped children), in ticks; minor page faults, its own
 *  and its reaped children's. */
function ticks (pid: number | 'self'): Counts {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number) // fields from the 3rd on
  return { own: (f[11] ?? 0) + (f[12] ?? 0), children: (f[13] ?? 0) + (f[14] ?? 0), faults: f[7] ?? 0, childFaults: f[8] ?? 0 }
}

/** The host pids of the zygotes. */
function zygotes (): number[] {
  const pids: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')
      const pidInJail = /^NSpid:.*\s(\d+)$/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'))?.[1]
      // Its children run the same command line: the zygote is pid 1 of its jail.
      if (argv[0]?.includes('python') === true && argv.some(arg => arg.endsWith('/zygote.py')) && pidInJail === '1') pids.push(Number(entry))
    } catch {} // gone meanwhile
  }
  return pids
}

async function post (url: URL, agent: Agent): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(HELLO) } }, response => {
      response.resume()
      response.on('end', () => response.statusCode === 200 ? resolve() : reject(new Error(`status ${String(response.statusCode)}`)))
    })
    req.on('error', reject)
    req.end(HELLO)
  })
}

interface Row { concurrency: number, p50: number, throughput: number, cpuMsPerRun: Record<string, number>, pageFaultsPerRun: Record<string, number> }

async function measure (url: URL, concurrency: number): Promise<Row> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency })
  await new Promise(resolve => setTimeout(resolve, 1000)) // the probe's own zygote has gone
  const pids = zygotes()
  const perf = values.perf === undefined ? undefined : spawn('perf', ['record', '-a', '-g', '-F', '999', '-o', `${values.perf}/c${concurrency}.data`], { stdio: 'ignore' })
  if (perf !== undefined) await new Promise(resolve => setTimeout(resolve, 500)) // perf is recording
  const before = { host: host(), self: ticks('self'), zygotes: pids.map(ticks) }
  const latencies: number[] = []
  let next = 0
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < REQUESTS) {
      const t0 = performance.now()
      await post(url, agent)
      latencies.push(performance.now() - t0)
      if (gap > 0) await new Promise(resolve => setTimeout(resolve, gap))
    }
  }))
  const elapsed = performance.now() - started
  const after = { host: host(), self: ticks('self'), zygotes: pids.map(ticks) }
  agent.destroy()
  if (perf !== undefined) {
    perf.kill('SIGINT')
    await once(perf, 'exit')
  }
  const perRun = (t: number): number => Math.round((t * TICK_MS / REQUESTS) * 100) / 100
  const sum = (list: Counts[], key: keyof Counts): number => list.reduce((a, z) => a + z[key], 0)
  const server = after.self.own - before.self.own
  const zygote = sum(after.zygotes, 'own') - sum(before.zygotes, 'own')
  const runs = sum(after.zygotes, 'children') - sum(before.zygotes, 'children')
  const busy = after.host.busy - before.host.busy
  latencies.sort((a, b) => a - b)
  return {
    concurrency,
    p50: Math.round((latencies[Math.floor(latencies.length / 2)] ?? NaN) * 10) / 10,
    throughput: Math.round(REQUESTS / (elapsed / 1000)),
    cpuMsPerRun: {
      'server and client (node)': perRun(server),
      'zygotes (relay, sweep, checks, fork)': perRun(zygote),
      'runs (script, exit and teardown)': perRun(runs),
      'rest of the host': perRun(busy - server - zygote - runs),
      'all busy': perRun(busy),
      idle: perRun(after.host.idle - before.host.idle),
      'stolen (by the hypervisor)': perRun(after.host.steal - before.host.steal)
    },
    pageFaultsPerRun: {
      zygotes: Math.round((sum(after.zygotes, 'faults') - sum(before.zygotes, 'faults')) / REQUESTS),
      runs: Math.round((sum(after.zygotes, 'childFaults') - sum(before.zygotes, 'childFaults')) / REQUESTS)
    }
  }
}

const settings = { ...process.env, RATE_LIMIT_MAX: '0', LOG_LEVEL: 'silent', SESSION_SPARES: '0' }
// One client measuring the server: every slot is its share (as in the benchmark).
const config = loadConfig({ ...settings, TENANT_SLOTS: String(loadConfig(settings).CONCURRENCY) })
const app = await buildApp({ config })
await app.listen({ port: 0, host: '127.0.0.1' })
try {
  if (app.sandbox.backend?.name !== 'nsjail') throw new Error('the profile needs the nsjail backend: see /readyz')
  const { port } = app.server.address() as { port: number }
  const url = new URL('/execute', `http://127.0.0.1:${port}`)
  if (values.perf !== undefined) mkdirSync(values.perf, { recursive: true })
  const warmup = new Agent({ keepAlive: true, maxSockets: 2 * config.CONCURRENCY })
  for (let i = 0; i < 4 * config.CONCURRENCY; i++) await post(url, warmup) // every zygote ready
  warmup.destroy()
  console.log(`${config.CONCURRENCY} slots, ${REQUESTS} hello requests per row; CPU in ms per request (10 ms ticks, summed over ${REQUESTS})`)
  const rows = values.concurrency?.split(',').map(Number) ?? [1, 2 * config.CONCURRENCY]
  for (const concurrency of rows) console.log(JSON.stringify(await measure(url, concurrency)))
} finally {
  await app.close()
}
