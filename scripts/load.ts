// The load command (`npm run load`, `make load`): a bounded mix of scripts at high concurrency
// against a real server, checking that every reply is the reply to its own request (each request
// carries a nonce in `input` that its script returns or prints, and the files it sends and gets
// back carry it too), optionally while SIGKILLing
// nsjail processes and warm jails' zygotes among the server's descendants (`--kill N`), then that
// the server came back whole: alive and serving, its warm pool full, its RSS and descriptors
// within bounds. Prints a markdown report; exits 1 when an invariant fails.
// test/integration/load-faults.test.ts runs the same code for ~10 s.
//
// Usage: npm run load [-- --duration 120 --connections 64 --kill N]
//        npm run load -- --url URL [--key KEY | PYSANDBOX_KEY=KEY] [--pid PID --kill N]
// Without --url it starts its own server: node dist/server.js (build first; `make load` does).
import autocannon from 'autocannon'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs'
import type { IncomingHttpHeaders } from 'node:http'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { keygen } from '../src/access/keygen.js'
import { PROJECT_ROOT } from '../src/config.js'

/** A reply's body as the checks read it. */
type Body = Record<string, unknown>

export interface LoadClass {
  name: string
  /** Its share of the connections (hello and pandas are what users mostly send). */
  weight: number
  /** The request body, the nonce as `input`. */
  body: (nonce: string) => Body
  /** What a run of it must answer: 200, or the 422 with this code. */
  expected: 200 | string
  /** What else that reply must show (it carries its own nonce): undefined, or what is wrong. */
  check: (body: Body, nonce: string) => string | undefined
}

const NONCE = /nonce-[0-9a-f]{24}/g
export const newNonce = (): string => `nonce-${randomBytes(12).toString('hex')}`
const says = (body: Body, text: string, what: string): string | undefined => String(body.message).includes(text) ? undefined : `its message does not name ${what}`

export const CLASSES: readonly LoadClass[] = [
  {
    name: 'hello',
    weight: 4,
    body: nonce => ({ script: 'def main(nonce):\n    print(nonce)\n    return {"nonce": nonce}\n', input: nonce }),
    expected: 200,
    check: (body, nonce) => body.stdout === `${nonce}\n` ? undefined : 'its stdout is not its own'
  },
  {
    name: 'pandas',
    weight: 4,
    body: nonce => ({
      script: 'import pandas as pd\n\ndef main(nonce):\n    df = pd.DataFrame({"key": [nonce, "other", nonce], "value": [1, 2, 3]})\n' +
        '    return {"nonce": nonce, "total": int(df.groupby("key")["value"].sum()[nonce])}\n',
      input: nonce
    }),
    expected: 200,
    check: body => (body.result as Body).total === 4 ? undefined : 'its DataFrame sum is wrong'
  },
  {
    name: 'raising',
    weight: 2,
    body: nonce => ({ script: 'def main(nonce):\n    print(nonce, flush=True)\n    raise ValueError(nonce)\n', input: nonce }),
    expected: 'MAIN_RAISED',
    check: (body, nonce) => says(body, `ValueError: ${nonce}`, 'its own exception')
  },
  {
    name: 'time-limit',
    weight: 2,
    body: nonce => ({ script: 'import time\n\ndef main(nonce):\n    print(nonce, flush=True)\n    time.sleep(30)\n    return {"nonce": nonce}\n', input: nonce, limits: { wallMs: 300 } }),
    expected: 'TIME_LIMIT_EXCEEDED',
    check: body => says(body, '300 ms', 'its limit of 300 ms')
  },
  {
    // A memoryMb other than the default runs cold: this class keeps cold nsjail runs in the mix.
    name: 'memory-limit',
    weight: 2,
    body: nonce => ({
      script: 'def main(nonce):\n    print(nonce, flush=True)\n    block = bytearray(256 * 1024 * 1024)\n    block[::4096] = b"x" * len(block[::4096])\n    return {"nonce": nonce}\n',
      input: nonce,
      limits: { memoryMb: 64 }
    }),
    expected: 'MEMORY_LIMIT_EXCEEDED',
    check: body => says(body, '64 MiB', 'its limit of 64 MiB')
  },
  {
    // Data in, a file and a figure out: the returned files must be its own too.
    name: 'files',
    weight: 2,
    body: nonce => ({
      script: 'import pandas as pd\nimport matplotlib.pyplot as plt\n\ndef main(nonce):\n    df = pd.read_csv("in.csv")\n' +
        '    df.to_csv("output/out.csv", index=False)\n    plt.plot(df["value"])\n    plt.title(nonce)\n    return {"nonce": nonce, "rows": len(df)}\n',
      input: nonce,
      files: [{ path: 'in.csv', content: `key,value\n${nonce},1\n${nonce},2\n` }]
    }),
    expected: 200,
    check: (body, nonce) => {
      const files = body.files as Array<{ path: string, content: string }> | undefined
      const csv = files?.find(f => f.path === 'out.csv')
      return (body.result as Body).rows === 2 && csv?.content === `key,value\n${nonce},1\n${nonce},2\n` && files?.some(f => f.path.startsWith('figures/')) === true
        ? undefined
        : 'its returned files are not its own CSV and one figure'
    }
  },
  {
    name: 'output-flood',
    weight: 2,
    body: nonce => ({ script: 'import sys\n\ndef main(nonce):\n    print(nonce, flush=True)\n    for _ in range(64):\n        sys.stdout.write("." * 1024)\n    return {"nonce": nonce}\n', input: nonce, limits: { outputBytes: 4096 } }),
    expected: 200,
    check: (body, nonce) => body.stdoutTruncated === true && String(body.stdout).startsWith(`${nonce}\n`) && Buffer.byteLength(String(body.stdout)) <= 4096
      ? undefined
      : 'its stdout is not its own, truncated at 4096 bytes and flagged'
  }
]

/** What one reply says: `ok`, a retryable `refused`, `affected` by a fault (CRASHED, or the
 *  expected 422 with its output lost), `wrong` (another run's result, a mixed or missing nonce),
 *  or `unexpected` (anything else). */
export interface Verdict {
  /** Status and code, e.g. `422 MAIN_RAISED`: the report's columns. */
  label: string
  kind: 'ok' | 'refused' | 'affected' | 'wrong' | 'unexpected'
  detail?: string
}

/** Retryable refusals: each must carry Retry-After. */
const REFUSALS: Record<number, readonly string[]> = {
  503: ['BUSY', 'SHUTTING_DOWN', 'SANDBOX_UNAVAILABLE'],
  429: ['RATE_LIMITED', 'CONCURRENCY_LIMITED']
}

/** Judges one reply to a request of `cls` that carried `nonce`. */
export function judge (cls: LoadClass, nonce: string, status: number, text: string, retryAfter: boolean): Verdict {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return { label: `${status} (not JSON)`, kind: 'unexpected', detail: text.slice(0, 200) }
  }
  const body: Body = typeof parsed === 'object' && parsed !== null ? parsed as Body : {}
  const code = typeof body.code === 'string' ? body.code : undefined
  const label = code === undefined ? String(status) : `${status} ${code}`
  // Mixed: anything in the reply that is another request's nonce.
  const foreign = (text.match(NONCE) ?? []).find(n => n !== nonce)
  if (foreign !== undefined) return { label, kind: 'wrong', detail: `carries another request's nonce (${foreign})` }
  if (status === 200 && cls.expected !== 200) return { label, kind: 'unexpected', detail: `a 200 where ${cls.expected} was due: the limit was not enforced` }
  if (status === 200) {
    const result = body.result
    if (typeof result !== 'object' || result === null || (result as Body).nonce !== nonce) return { label, kind: 'wrong', detail: 'its result is not its own' }
    const problem = cls.check(body, nonce)
    return problem === undefined ? { label, kind: 'ok' } : { label, kind: 'wrong', detail: problem }
  }
  if (status === 422 && code === cls.expected) {
    if (!String(body.stdout).includes(nonce)) return { label, kind: 'affected', detail: 'its own nonce is missing from its stdout' }
    const problem = cls.check(body, nonce)
    return problem === undefined ? { label, kind: 'ok' } : { label, kind: 'unexpected', detail: problem }
  }
  if (status === 422 && code === 'CRASHED') return { label, kind: 'affected', detail: 'CRASHED' }
  if (code !== undefined && REFUSALS[status]?.includes(code) === true) {
    return retryAfter ? { label, kind: 'refused' } : { label, kind: 'unexpected', detail: 'a refusal without Retry-After' }
  }
  return { label, kind: 'unexpected', detail: `${label} where ${String(cls.expected)} was due: ${String(body.message ?? '').slice(0, 200)}` }
}

/** A caller's replies, and those that ran to their class's outcome. */
export interface TenantCount { name: string, replies: number, ran: number }

/** At most this many wrong or unexpected replies are quoted in the report. */
const MAX_SAMPLES = 20

/** One class's replies as they come. */
export class Tally {
  readonly kinds: Record<Verdict['kind'], number> = { ok: 0, refused: 0, affected: 0, wrong: 0, unexpected: 0 }
  readonly labels: Record<string, number> = {}
  /** Latency (ms) of the replies that were right. */
  readonly served: number[] = []

  constructor (readonly name: string, private readonly samples: string[]) {}

  add (verdict: Verdict, ms: number, tenant: TenantCount): void {
    this.kinds[verdict.kind]++
    this.labels[verdict.label] = (this.labels[verdict.label] ?? 0) + 1
    tenant.replies++
    tenant.ran += Number(verdict.kind === 'ok')
    if (verdict.kind === 'ok') this.served.push(ms)
    if ((verdict.kind === 'wrong' || verdict.kind === 'unexpected') && this.samples.length < MAX_SAMPLES) this.samples.push(`${this.name}: ${verdict.label}: ${String(verdict.detail)}`)
  }
}

/** `total` connections split by the classes' weights (largest remainder), at least one each. */
export function splitConnections (total: number, classes: readonly LoadClass[] = CLASSES): number[] {
  if (total < classes.length) throw new Error(`at least ${classes.length} connections: one per class`)
  const spare = total - classes.length
  const weights = classes.reduce((sum, c) => sum + c.weight, 0)
  const exact = classes.map(c => (spare * c.weight) / weights)
  const counts = exact.map(Math.floor)
  // The connections the floors left over go to the largest remainders.
  const left = spare - counts.reduce((a, b) => a + b, 0)
  const order = exact.map((x, i) => ({ i, remainder: x - Math.floor(x) })).sort((a, b) => b.remainder - a.remainder)
  const extra = new Set(order.slice(0, left).map(o => o.i))
  return counts.map((n, i) => n + 1 + Number(extra.has(i)))
}

/** Prometheus text as `name{labels}` (exactly as printed) → value. */
export function parseMetrics (text: string): Map<string, number> {
  const series = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const space = line.lastIndexOf(' ')
    series.set(line.slice(0, space), Number(line.slice(space + 1)))
  }
  return series
}

const SHED = 'pysandbox_shed_total{reason="'
/** pysandbox_shed_total by reason, from `after` less `before`. */
export function shedBetween (before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...after].filter(([series]) => series.startsWith(SHED)).map(([series, n]) => [series.slice(SHED.length, -2), n - Number(before.get(series))]))
}

export interface PoolState {
  /** The warm pool by state; undefined without warm sandboxes. */
  zygotes?: { starting: number, ready: number, running: number, cleaning: number }
  concurrency: number
  /** No zygote starting, and as many started (ready, running or cleaning) as slots. Successors
   *  (started early by recycling) count too, so a slot whose zygote died before it said ready
   *  (restarted only by a request after 5 s) can hide behind another slot's ready successor. */
  whole: boolean
  /** Whole, and nothing running or cleaning up. */
  idle: boolean
}

export function poolState (metrics: Map<string, number>): PoolState {
  const concurrency = Number(metrics.get('pysandbox_concurrency_limit'))
  if (!metrics.has('pysandbox_warm_sandboxes{state="ready"}')) return { concurrency, whole: true, idle: true }
  const state = (s: string): number => Number(metrics.get(`pysandbox_warm_sandboxes{state="${s}"}`))
  const zygotes = { starting: state('starting'), ready: state('ready'), running: state('running'), cleaning: state('cleaning') }
  const whole = zygotes.starting === 0 && zygotes.ready + zygotes.running + zygotes.cleaning >= concurrency
  return { zygotes, concurrency, whole, idle: whole && zygotes.ready >= concurrency && zygotes.running + zygotes.cleaning === 0 }
}

/** The backend a /readyz body names, and its warm sandboxes (with the reason when they are off). */
export function backendOf (readyz: unknown): string {
  const body = Object(readyz) as { backend?: unknown, probes?: Array<{ features?: Record<string, unknown> }> }
  const features = Object(body.probes?.at(-1)?.features) as Record<string, unknown>
  const reason = features.warmReason === undefined ? '' : ` (${String(features.warmReason)})`
  return `${String(body.backend)}${features.warm === undefined ? '' : `, warm ${String(features.warm)}${reason}`}`
}

/** One process as /proc shows it. */
export interface Proc { pid: number, ppid: number, comm: string, cmdline: string }

function readProc (pid: string): Proc | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses; it ends at the last `)`.
    const close = stat.lastIndexOf(')')
    return {
      pid: Number(pid),
      ppid: Number(stat.slice(close + 2).split(' ')[1]),
      comm: stat.slice(stat.indexOf('(') + 1, close),
      cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')
    }
  } catch {
    return undefined // gone (or going) while the table was read
  }
}

/** The host's processes, from /proc. */
export function processes (): Proc[] {
  return readdirSync('/proc').filter(name => /^\d+$/.test(name)).map(readProc).filter(p => p !== undefined)
}

/** A descendant of the server that a fault may SIGKILL. */
export interface Target {
  pid: number
  kind: 'nsjail (warm jail)' | 'nsjail (cold run)' | 'zygote'
  /** For an nsjail: its jailed child, whose pid names the jail's cgroups (NSJAIL.<pid>). */
  child?: number
}

/** The nsjail processes and the warm jails' zygotes (python running harness/zygote.py whose
 *  parent is nsjail) among `root`'s descendants in `procs`, found through the ppid chains. */
export function findTargets (root: number, procs: readonly Proc[]): Target[] {
  const children = new Map<number, Proc[]>()
  for (const p of procs) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p])
  const targets: Target[] = []
  const walk = (pid: number): void => {
    for (const p of children.get(pid) ?? []) {
      if (p.comm !== 'nsjail') {
        walk(p.pid) // not below a jail: a jail's own processes are never targets
        continue
      }
      const child = children.get(p.pid)?.[0]
      const warm = child?.cmdline.includes('zygote.py') === true
      targets.push({ pid: p.pid, kind: warm ? 'nsjail (warm jail)' : 'nsjail (cold run)', child: child?.pid })
      if (warm) targets.push({ pid: (child as Proc).pid, kind: 'zygote' })
    }
  }
  walk(root)
  return targets
}

/** Where nsjail puts a jail's cgroups (v1 controllers and v2), named after its jailed child. */
function jailCgroups (child: number): string[] {
  return ['memory/NSJAIL', 'pids/NSJAIL', 'cpu/NSJAIL', 'NSJAIL'].map(dir => `/sys/fs/cgroup/${dir}/NSJAIL.${child}`).filter(existsSync)
}

/** A loopback port free right now. */
async function freePort (): Promise<number> {
  const probe = createServer().listen(0, '127.0.0.1')
  await once(probe, 'listening')
  const { port } = probe.address() as { port: number }
  probe.close()
  return port
}

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** The tenants of the own server: more callers than slots, so the per-caller slot share (default
 *  CONCURRENCY - 1) and the shared queue's rule both act, as with real users. Each key's `rate`
 *  is far above what any host serves (a million requests per 60 s window): the rate limiter
 *  counts every request, as in production, but never throttles the run, which measures the
 *  sandboxes and the queue rather than a quota. */
export const TENANTS = ['load-a', 'load-b', 'load-c', 'load-d'] as const
const TENANT_RATE = 1_000_000

export interface OwnServer {
  url: string
  pid: number
  /** One per TENANTS. */
  keys: string[]
  logFile: string
  /** undefined while it runs; how it ended once it has exited. */
  exit: () => string | undefined
  /** SIGTERM (a graceful shutdown), SIGKILL after 20 s. */
  stop: () => Promise<void>
  /** Removes its directory (keys file and log). */
  remove: () => void
}

/** `node dist/server.js` on a free loopback port with `env` (the default configuration, plus
 *  whatever `env` sets) and an API keys file of TENANTS made with the keygen module; resolves
 *  once /readyz answers 200 and the warm pool (if any) is whole. */
export async function startServer (env: Record<string, string | undefined> = process.env): Promise<OwnServer> {
  const server = resolve(PROJECT_ROOT, 'dist/server.js')
  /* c8 ignore next -- the suite builds before it tests */
  if (!existsSync(server)) throw new Error(`${server} is missing: npm run build first (make load does)`)
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-load-'))
  const keys: string[] = []
  const lines: string[] = []
  for (const name of TENANTS) {
    let key = ''
    let said = ''
    keygen([name], { stdout: { write: text => { key += text } }, stderr: { write: text => { said += text } } })
    keys.push(key.trim())
    lines.push(`${String(said.trim().split('\n').at(-1))} rate=${TENANT_RATE}`)
  }
  const keysFile = join(dir, 'keys')
  writeFileSync(keysFile, `${lines.join('\n')}\n`, { mode: 0o600 })
  const logFile = join(dir, 'server.log')
  const log = openSync(logFile, 'w')
  const port = await freePort()
  const child = spawn(process.execPath, [server], {
    cwd: PROJECT_ROOT,
    env: { ...env, PORT: String(port), HOST: '127.0.0.1', API_KEYS_FILE: keysFile },
    stdio: ['ignore', log, log]
  })
  closeSync(log)
  let ended: string | undefined
  const exited = once(child, 'exit').then(([code, signal]) => { ended = `exit code ${String(code)}, signal ${String(signal)}` })
  const exit = (): string | undefined => ended
  const url = `http://127.0.0.1:${port}`
  const stop = async (): Promise<void> => {
    child.kill('SIGTERM')
    const timer = setTimeout(child.kill.bind(child), 20_000, 'SIGKILL')
    await exited
    clearTimeout(timer)
  }
  try {
    await until(async () => (await fetch(`${url}/readyz`)).status === 200, 90_000, 'the server to be ready', exit)
    await until(async () => poolState(parseMetrics(await (await fetch(`${url}/metrics`)).text())).whole, 60_000, 'the warm pool to be ready', exit)
  } catch (error) {
    await stop()
    throw new Error(`${(error as Error).message}; its log: ${logFile}`)
  }
  return { url, pid: child.pid as number, keys, logFile, exit, stop, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Polls `condition` (an error counts as false) every 250 ms until it holds; throws once the
 *  server has exited, or after `ms`. */
async function until (condition: () => Promise<boolean>, ms: number, what: string, exit: () => string | undefined): Promise<void> {
  const deadline = Date.now() + ms
  while (!await condition().catch(() => false)) {
    if (exit() !== undefined) throw new Error(`the server ended (${String(exit())}) while waiting for ${what}`)
    /* c8 ignore next -- a server that never gets ready (a probe that keeps failing): a 90 s test */
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(250)
  }
}

/** The invariants' bounds, each measured here (2 cores, a noisy VM) with a wide margin. */
export const BOUNDS = {
  /** A killed zygote's slot is whole again (a new jail imported numpy and pandas) within this.
   *  Measured here under load: 0.3-11 s (the import competes with the runs for 2 cores). The
   *  server's own bounds: a zygote killed before it said ready leaves its slot cold for 5 s
   *  until a request starts a new one, whose import may take up to 30 s before the server gives
   *  up on it (warm-pool.ts, zygote.ts); past both, the pool is stuck. */
  refillMs: 35_000,
  /** After the load: the pool whole and idle, descriptors back, within this (a refill begun at
   *  the last kill, at 80 % of the run, has until then). */
  settleMs: 40_000,
  /** RSS may grow by this much over the run (V8 keeps the heap it grew under load). */
  rssGrowthBytes: 128 * 1024 * 1024,
  /** Descriptors at the end at most this many above the start: a successor zygote per slot
   *  holds two pipes, and a few more (the keys file's watcher, a client socket closing). */
  fdGrowthPerSlot: 2,
  fdGrowth: 8,
  /** Each tenant (as many connections as the others, the same mix) has at least this fraction
   *  of the mean tenant's runs: none is starved. */
  fairShare: 0.25,
  /** A request not answered within this is a failure (the queue waits 30 s at most). */
  requestTimeoutS: 60
} as const

export interface LoadOptions {
  durationS: number
  connections: number
  kills: number
  /** A server started elsewhere; undefined: start one (startServer). */
  url?: string
  key?: string
  /** The server's pid, for --kill with --url. */
  pid?: number
  /** The own server's environment (default: this process's). */
  env?: Record<string, string | undefined>
  progress?: (line: string) => void
}

export interface ClassReport {
  name: string
  connections: number
  replies: number
  /** autocannon's latency of every reply (ms). */
  p50: number
  p99: number
  /** Latency of the replies that ran and were right (ms). */
  servedP50: number
  servedP99: number
  labels: Record<string, number>
  kinds: Record<Verdict['kind'], number>
  timeouts: number
  errors: number
}

export interface Kill extends Target {
  atMs: number
  /** ms from the kill to the first sample (fetched at least REFILL_MARGIN_MS later) where the pool was whole. */
  refillMs?: number
}

export interface LoadReport {
  url: string
  own: boolean
  /** What /readyz said at the start: the backend and its warm sandboxes. */
  backend: string
  durationS: number
  connections: number
  concurrency: number
  classes: ClassReport[]
  tenants: TenantCount[]
  kills: Kill[]
  killsAsked: number
  /** The hellos sent while waiting for the pool after the load (each must be ok). */
  hellos: Verdict[]
  start: { rss: number, fds: number }
  end: { rss: number, fds: number }
  /** The most descriptors the end may have. */
  fdBound: number
  /** ms after the load until the pool was whole and idle and descriptors back; undefined: never. */
  settledMs?: number
  pool: PoolState
  /** Requests the server refused to protect itself during the run (pysandbox_shed_total), by reason. */
  shed: Record<string, number>
  /** How the own server ended, if it did before it was stopped. */
  serverExit?: string
  /** Cgroups of SIGKILLed nsjail processes still on the host at the end (then removed). */
  leftCgroups: string[]
  samples: string[]
  failures: string[]
  /** The own server's log, kept when an invariant failed. */
  log?: string
}

/** A sample taken less than this after a kill may predate the server seeing the death. */
const REFILL_MARGIN_MS = 250

function percentile (values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return Math.round(Number(sorted[Math.max(0, Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length)))]))
}

/** What a GET /metrics that got no reply gives: the report says whether the server ended. */
const noAnswer = (): undefined => undefined

/** Runs the load (and the faults) and checks every invariant; throws only when it cannot run
 *  (no server), never for a failed invariant. The own server's log is kept when one failed. */
export async function runLoad (options: LoadOptions): Promise<LoadReport> {
  const own = options.url === undefined ? await startServer(options.env) : undefined
  let report: LoadReport
  try {
    report = await measure(options, own)
  } finally {
    await own?.stop() // its directory stays when measure() threw: the log may say why
  }
  report.failures.push(...afterStop(report))
  /* c8 ignore next -- reached only when an invariant failed */
  if (report.failures.length > 0) report.log = own?.logFile
  if (report.failures.length === 0) own?.remove()
  return report
}

async function measure (options: LoadOptions, own: OwnServer | undefined): Promise<LoadReport> {
  const progress = (line: string): void => { options.progress?.(line) }
  const url = own?.url ?? String(options.url)
  // The callers: the own server's tenants, or the one key given (or none).
  const json: Record<string, string> = { 'content-type': 'application/json' }
  const tenants: Array<{ name: string, headers: Record<string, string> }> = own === undefined
    ? [options.key === undefined ? { name: '(no key)', headers: json } : { name: '(--key)', headers: { ...json, authorization: `Bearer ${options.key}` } }]
    : TENANTS.map((name, i) => ({ name, headers: { ...json, authorization: `Bearer ${String(own.keys[i])}` } }))
  const counts = tenants.map(({ name }): TenantCount => ({ name, replies: 0, ran: 0 }))
  const countOf = new Map(tenants.map((t, i) => [String(t.headers.authorization), counts[i] as TenantCount]))
  const pid = own?.pid ?? options.pid
  if (options.kills > 0 && pid === undefined) throw new Error('--kill needs the server\'s pid: start it here (no --url), or give --pid')
  const samples: string[] = []
  const metrics = async (): Promise<Map<string, number> | undefined> => await fetch(`${url}/metrics`).then(async r => parseMetrics(await r.text()), noAnswer)
  const usage = (m: Map<string, number>): { rss: number, fds: number } => ({ rss: Number(m.get('process_resident_memory_bytes')), fds: Number(m.get('process_open_fds')) })
  const first = await metrics()
  if (first === undefined) throw new Error(`no server answers at ${url}`)
  const start = usage(first)
  const concurrency = poolState(first).concurrency
  const backend = backendOf(await fetch(`${url}/readyz`).then(async r => await r.json(), noAnswer))
  const began = performance.now()
  const elapsed = (): number => Math.round(performance.now() - began)

  // The pool, four times a second: each kill's refill ends at the first whole sample after it.
  const kills: Kill[] = []
  const observe = (m: Map<string, number>, fetched: number): void => {
    const state = poolState(m)
    for (const kill of kills) {
      if (kill.refillMs === undefined && state.whole && fetched >= kill.atMs + REFILL_MARGIN_MS) kill.refillMs = elapsed() - kill.atMs
    }
  }
  const polling = new AbortController()
  const poller = (async () => {
    while (!polling.signal.aborted) {
      const fetched = elapsed()
      const m = await metrics()
      if (m !== undefined) observe(m, fetched)
      await sleep(250)
    }
  })()

  // The faults: SIGKILL a random target at random moments within 10-80 % of the run, so that
  // each has time to refill before the end.
  const killOne = async (): Promise<void> => {
    for (let attempt = 0; attempt < 40; attempt++) {
      const targets = findTargets(pid as number, processes())
      const target = targets[Math.floor(Math.random() * targets.length)] as Target
      try {
        process.kill(target.pid, 'SIGKILL')
        kills.push({ ...target, atMs: elapsed() })
        progress(`${elapsed()} ms: SIGKILL ${target.kind} ${target.pid}`)
        return
        /* c8 ignore start -- no target this moment (no jail at all), or it exited between the listing and the signal: again; 40 times in vain, and the report says a kill is missing */
      } catch {
        await sleep(50)
      }
    }
  }
  /* c8 ignore stop */
  const durationMs = options.durationS * 1000
  const timers = Array.from({ length: options.kills }, () => setTimeout(killOne, durationMs * (0.1 + 0.7 * Math.random())))

  // One autocannon per class (per-class latencies); its connections go round the tenants.
  const split = splitConnections(options.connections)
  let connection = 0
  let answered = 0
  interface Context { nonce?: string, sentAt?: number, tenant?: TenantCount }
  const runs = CLASSES.map(async (cls, index): Promise<ClassReport> => {
    const tally = new Tally(cls.name, samples)
    const result = await new Promise<autocannon.Result>((resolve, reject) => {
      autocannon({
        url: `${url}/execute`,
        method: 'POST',
        connections: split[index],
        duration: options.durationS,
        timeout: BOUNDS.requestTimeoutS,
        setupClient: client => { client.setHeaders(tenants[connection++ % tenants.length]?.headers) },
        // With one request in flight per connection, its context is the request being answered:
        // setupRequest runs just before each request is sent, onResponse on its reply.
        requests: [{
          setupRequest: (request, context: Context) => {
            context.nonce = newNonce()
            context.sentAt = performance.now()
            context.tenant = countOf.get(String((request.headers as IncomingHttpHeaders).authorization))
            return { ...request, body: JSON.stringify(cls.body(context.nonce)) }
          },
          onResponse: (status, text, context: Context, headers) => {
            answered++
            const verdict = judge(cls, context.nonce as string, status, text, (headers as IncomingHttpHeaders)['retry-after'] !== undefined)
            tally.add(verdict, performance.now() - (context.sentAt as number), context.tenant as TenantCount)
          }
        }]
      }, (error: unknown, result) => {
        /* c8 ignore next -- autocannon refuses only options this code never makes */
        if (error !== null) return reject(error)
        resolve(result)
      })
    })
    return {
      name: cls.name,
      connections: split[index] as number,
      replies: Object.values(tally.kinds).reduce((a, b) => a + b, 0),
      p50: result.latency.p50,
      p99: result.latency.p99,
      servedP50: percentile(tally.served, 50),
      servedP99: percentile(tally.served, 99),
      labels: tally.labels,
      kinds: tally.kinds,
      timeouts: result.timeouts,
      errors: result.errors - result.timeouts
    }
  })
  const ticker = setInterval(() => progress(`${elapsed()} ms: ${answered} replies, ${kills.length} kills`), Math.min(10_000, durationMs / 2))
  const classes = await Promise.all(runs)
  clearInterval(ticker)
  for (const timer of timers) clearTimeout(timer)

  // After the load: a hello (the server still serves), then every 0.25 s the pool and the
  // descriptors, and another hello, until the pool is whole and idle and the descriptors back. A
  // slot whose zygote was killed before it said ready restarts only for a request (warm-pool.ts,
  // by design): the hellos stand for live traffic meanwhile.
  const loadEnd = elapsed()
  const fdBound = start.fds + BOUNDS.fdGrowth + BOUNDS.fdGrowthPerSlot * concurrency
  const hellos: Verdict[] = []
  let settledMs: number | undefined
  let last = first
  while (settledMs === undefined && elapsed() - loadEnd < BOUNDS.settleMs) {
    hellos.push(await hello(url, tenants[0]?.headers))
    await sleep(250)
    const fetched = elapsed()
    const m = await metrics()
    if (m !== undefined) last = m
    observe(last, fetched)
    if (poolState(last).idle && usage(last).fds <= fdBound) settledMs = elapsed() - loadEnd
  }
  polling.abort()
  await poller
  progress(`${elapsed()} ms: done`)

  const report: LoadReport = {
    url,
    own: own !== undefined,
    backend,
    durationS: options.durationS,
    connections: options.connections,
    concurrency,
    classes,
    tenants: counts,
    kills,
    killsAsked: options.kills,
    hellos,
    start,
    end: usage(last),
    fdBound,
    settledMs,
    pool: poolState(last),
    shed: shedBetween(first, last),
    serverExit: own?.exit(),
    leftCgroups: [],
    samples,
    failures: []
  }
  report.failures.push(...invariants(report))
  return report
}

/** One hello, judged like the load's replies. */
async function hello (url: string, headers: Record<string, string> | undefined): Promise<Verdict> {
  const cls = CLASSES[0] as LoadClass
  const nonce = newNonce()
  try {
    const response = await fetch(`${url}/execute`, { method: 'POST', headers, body: JSON.stringify(cls.body(nonce)) })
    return judge(cls, nonce, response.status, await response.text(), response.headers.has('retry-after'))
    /* c8 ignore next 3 -- the server stopped answering: the report says it exited */
  } catch (error) {
    return { label: 'no reply', kind: 'unexpected', detail: (error as Error).message }
  }
}

/** Once the own server has stopped, what the killed jails left on the host: a jail's processes
 *  must be gone (nsjail's child dies with it; a zygote exits when its input closes); the cgroups
 *  a SIGKILLed nsjail could not remove are removed here (the suite's soak test requires a host
 *  without them) and counted. */
export function afterStop (report: LoadReport): string[] {
  const failures: string[] = []
  for (const kill of report.kills) {
    if (kill.kind === 'zygote' || kill.child === undefined) continue
    const child = readProc(String(kill.child))
    if (child !== undefined && /(zygote|run)\.py/.test(child.cmdline)) failures.push(`the jailed process ${child.pid} of the killed ${kill.kind} ${kill.pid} outlived it`)
    for (const cgroup of jailCgroups(kill.child)) {
      report.leftCgroups.push(cgroup)
      try {
        rmdirSync(cgroup)
        /* c8 ignore next 3 -- a cgroup that still holds a process: the line above names it */
      } catch (error) {
        failures.push(`cannot remove ${cgroup}, left by the killed ${kill.kind} ${kill.pid}: ${(error as Error).message}`)
      }
    }
  }
  return failures
}

/** Every invariant the report must keep, as one sentence per failure. */
export function invariants (report: LoadReport): string[] {
  const failures: string[] = []
  const total = (kind: Verdict['kind']): number => report.classes.reduce((sum, c) => sum + c.kinds[kind], 0)
  if (total('wrong') > 0) failures.push(`${total('wrong')} replies were not their own request's (wrong or mixed results)`)
  if (total('unexpected') > 0) failures.push(`${total('unexpected')} replies were neither their class's outcome nor a retryable refusal`)
  if (total('affected') > report.kills.length) failures.push(`${total('affected')} replies were CRASHED or lost their output, more than the ${report.kills.length} kills can explain`)
  for (const c of report.classes) {
    if (c.kinds.ok === 0) failures.push(`${c.name}: no request ran to its expected outcome`)
    if (c.timeouts > 0) failures.push(`${c.name}: ${c.timeouts} requests had no reply within ${BOUNDS.requestTimeoutS} s`)
    if (c.errors > 0) failures.push(`${c.name}: ${c.errors} connection errors`)
  }
  const meanRan = report.tenants.reduce((sum, t) => sum + t.ran, 0) / report.tenants.length
  for (const t of report.tenants) {
    if (t.ran < BOUNDS.fairShare * meanRan) failures.push(`tenant ${t.name}: ${t.ran} of its ${t.replies} replies ran, under ${BOUNDS.fairShare} of the mean tenant's ${Math.round(meanRan)}: starved`)
  }
  if (report.kills.length < report.killsAsked) failures.push(`only ${report.kills.length} of ${report.killsAsked} kills found a target`)
  for (const kill of report.kills) {
    if (kill.refillMs === undefined || kill.refillMs > BOUNDS.refillMs) failures.push(`the pool was not whole within ${BOUNDS.refillMs} ms of the kill of ${kill.kind} ${kill.pid} (${kill.refillMs ?? 'never'} ms)`)
  }
  const badHellos = report.hellos.filter(v => v.kind !== 'ok')
  if (badHellos.length > 0) failures.push(`after the load, hellos got ${badHellos.map(v => `${v.label} (${String(v.detail)})`).join(', ')}`)
  if (report.serverExit !== undefined) failures.push(`the server ended (${report.serverExit})`)
  if (report.settledMs === undefined) {
    const z = report.pool.zygotes
    failures.push(`${BOUNDS.settleMs} ms after the load the pool was not whole and idle (${z === undefined ? 'no warm pool' : `ready ${z.ready}, starting ${z.starting}, running ${z.running}, cleaning ${z.cleaning}`}; CONCURRENCY ${report.concurrency}) or the descriptors not back (${report.end.fds}, at most ${report.fdBound})`)
  }
  if (report.end.rss > report.start.rss + BOUNDS.rssGrowthBytes) failures.push(`RSS grew by ${mib(report.end.rss - report.start.rss)} MiB, over ${mib(BOUNDS.rssGrowthBytes)} MiB`)
  return failures
}

const mib = (bytes: number): number => Math.round(bytes / 1024 / 1024)

/** The report as markdown. */
export function formatReport (report: LoadReport): string {
  const labels = [...new Set(report.classes.flatMap(c => Object.keys(c.labels)))].sort()
  const sum = (f: (c: ClassReport) => number): number => report.classes.reduce((s, c) => s + f(c), 0)
  const lines = [
    `${report.own ? 'own server' : report.url} (${report.backend}): CONCURRENCY ${report.concurrency}, ${report.connections} connections, ${report.durationS} s, ${report.killsAsked} kills asked`,
    '',
    '| class | conns | replies | p50 ms | p99 ms | served p50 ms | served p99 ms | replies by status and code |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...report.classes.map(c => `| ${c.name} | ${c.connections} | ${c.replies} | ${c.p50} | ${c.p99} | ${c.servedP50} | ${c.servedP99} | ${labels.filter(l => l in c.labels).map(l => `${l}: ${c.labels[l]}`).join(', ')} |`),
    '',
    `Replies: ${(['ok', 'refused', 'affected', 'wrong', 'unexpected'] as const).map(k => `${k} ${sum(c => c.kinds[k])}`).join(', ')}; served: ran to their class's outcome.`,
    `Tenants (replies that ran / replies): ${report.tenants.map(t => `${t.name} ${t.ran}/${t.replies}`).join(', ')}.`,
    `Shed by the server (pysandbox_shed_total): ${Object.entries(report.shed).map(([reason, n]) => `${reason} ${n}`).join(', ')}.`,
    `Server: RSS ${mib(report.start.rss)} → ${mib(report.end.rss)} MiB (bound +${mib(BOUNDS.rssGrowthBytes)}), open fds ${report.start.fds} → ${report.end.fds} (bound ${report.fdBound}); ` +
      `${report.serverExit === undefined ? 'never exited' : `ENDED (${report.serverExit})`}.`,
    `Pool after the load: ${report.settledMs === undefined ? `NOT whole and idle within ${BOUNDS.settleMs} ms` : `whole and idle ${report.settledMs} ms after the load ended`}` +
      `${report.pool.zygotes === undefined ? ' (no warm pool)' : ` (ready ${report.pool.zygotes.ready} for CONCURRENCY ${report.concurrency}: successors started early by recycling count too)`}` +
      `; ${report.hellos.length} hellos meanwhile, ${report.hellos.filter(v => v.kind === 'ok').length} right.`
  ]
  if (report.killsAsked > 0) {
    const byKind = new Map<string, number>()
    for (const k of report.kills) byKind.set(k.kind, (byKind.get(k.kind) ?? 0) + 1)
    const refills = report.kills.map(k => k.refillMs ?? NaN)
    lines.push(
      `Faults: ${report.kills.length} SIGKILLs (${[...byKind].map(([kind, n]) => `${kind} ${n}`).join(', ')}); ` +
      `affected replies ${sum(c => c.kinds.affected)} (CRASHED ${sum(c => c.labels['422 CRASHED'] ?? 0)}, the rest lost their output); ` +
      `pool whole again after (ms) ${refills.join(', ')} (max ${Math.max(...refills)}, bound ${BOUNDS.refillMs}); ` +
      `cgroups the SIGKILLed nsjail left on the host: ${report.leftCgroups.length} (removed).`)
  }
  if (report.samples.length > 0) lines.push('', 'Samples:', ...report.samples.map(s => `- ${s}`))
  lines.push('', report.failures.length === 0 ? 'All invariants held.' : `FAILED:\n${report.failures.map(f => `- ${f}`).join('\n')}`)
  if (report.log !== undefined) lines.push(`The server's log is kept: ${report.log}`)
  return lines.join('\n')
}

/* c8 ignore start -- the command line: `npm run load` runs it, the suite calls runLoad() */
if (process.argv[1]?.endsWith('load.ts') === true) {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '120' },
      connections: { type: 'string', default: '64' },
      kill: { type: 'string', default: '0' },
      url: { type: 'string' },
      key: { type: 'string' },
      pid: { type: 'string' }
    }
  })
  const number = (name: string, value: string | undefined, least: number): number => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < least) throw new Error(`--${name} must be a whole number of ${least} or more`)
    return n
  }
  // A key in the environment stays out of `ps` and the shell's history.
  const key = values.key ?? process.env.PYSANDBOX_KEY
  const report = await runLoad({
    durationS: number('duration', values.duration, 1),
    connections: number('connections', values.connections, CLASSES.length),
    kills: number('kill', values.kill, 0),
    ...(values.url === undefined ? {} : { url: values.url }),
    ...(key === undefined ? {} : { key }),
    ...(values.pid === undefined ? {} : { pid: number('pid', values.pid, 1) }),
    progress: line => process.stderr.write(`${line}\n`)
  })
  process.stdout.write(`${formatReport(report)}\n`)
  process.exitCode = report.failures.length === 0 ? 0 : 1
}
/* c8 ignore stop */
