// The benchmark (not a test): starts the server with the real sandbox, warm sandboxes on and then
// off (two servers in sequence), and reports latency percentiles and throughput for each request
// below at concurrency 1 and at twice the slot count, next to the bare interpreter doing the same
// (start-up, import pandas, the chart) as a baseline, as ratios so figures compare across
// machines. Writes bench-report.json.
// Usage: npm run bench [-- --requests 30]
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'node:http'
import { parseArgs } from 'node:util'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'

const { values } = parseArgs({ options: { requests: { type: 'string', default: '60' }, out: { type: 'string', default: 'bench-report.json' } } })
const REQUESTS = Number(values.requests)

/** A CSV of about 1 MiB, for the upload row. */
function csv (bytes: number): string {
  const rows = ['g,v']
  for (let i = 0, size = 4; size < bytes; i++) {
    const row = `${i % 10},${i}`
    rows.push(row)
    size += row.length + 1
  }
  return `${rows.join('\n')}\n`
}

/** The chart of the chart row, and of its bare baseline: a line plot with a title, as PNG. */
const CHART = 'plt.plot([1, 3, 2, 5, 4])\nplt.title("bench")'

const BODIES: Record<string, Record<string, unknown>> = {
  hello: { script: 'def main():\n    print("Hello from main!")\n    return {"msg": "success", "value": 42}\n' },
  numpy: { script: 'import numpy as np\ndef main():\n    a = np.arange(10000, dtype=float).reshape(100, 100)\n    return float((a @ a.T).trace())\n' },
  pandas: { script: 'import pandas as pd\ndef main():\n    df = pd.DataFrame({"g": [i % 10 for i in range(1000)], "v": range(1000)})\n    return {str(k): int(v) for k, v in df.groupby("g")["v"].sum().items()}\n' },
  input: { script: 'def main(data):\n    return sum(data["values"])\n', input: { values: Array.from({ length: 1000 }, (_, i) => i) } },
  'csv upload (1 MiB)': {
    script: 'import pandas as pd\ndef main():\n    return {str(k): int(v) for k, v in pd.read_csv("data.csv").groupby("g")["v"].sum().items()}\n',
    files: [{ path: 'data.csv', content: csv(1024 * 1024) }]
  },
  'matplotlib chart (PNG returned)': { script: `import matplotlib.pyplot as plt\ndef main():\n    ${CHART.replaceAll('\n', '\n    ')}\n    return 1\n` }
}

function percentile (sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
}

interface Figures { p50: number, p95: number, p99: number, throughput: number, requests: number }

function summarize (latencies: number[], elapsedMs: number): Figures {
  const sorted = [...latencies].sort((a, b) => a - b)
  const round = (n: number): number => Math.round(n * 10) / 10
  return { p50: round(percentile(sorted, 50)), p95: round(percentile(sorted, 95)), p99: round(percentile(sorted, 99)), throughput: round(latencies.length / (elapsedMs / 1000)), requests: latencies.length }
}

/** One POST on a kept-alive connection (node:http: less client overhead than fetch); its reply
 *  body, which must come with `status`. */
async function execute (url: URL, agent: Agent, body: string, status = 200, method = 'POST'): Promise<string> {
  return await new Promise<string>((resolve, reject) => {
    const req = request(url, { method, agent, headers: body === '' ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, response => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => {
        if (response.statusCode === status) resolve(Buffer.concat(chunks).toString())
        else reject(new Error(`benchmark request failed: ${Buffer.concat(chunks).toString()}`))
      })
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function load (url: string, request: Record<string, unknown>, concurrency: number, requests: number, path = '/execute'): Promise<Figures> {
  const latencies: number[] = []
  let next = 0
  const body = JSON.stringify(request)
  const target = new URL(path, url)
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency })
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < requests) {
      const t0 = performance.now()
      await execute(target, agent, body)
      latencies.push(performance.now() - t0)
    }
  }))
  const elapsed = performance.now() - started
  agent.destroy()
  return summarize(latencies, elapsed)
}

function bare (python: string, args: string[], runs: number, env: Record<string, string> = {}): Figures {
  const latencies: number[] = []
  const started = performance.now()
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now()
    const run = spawnSync(python, args, { env: { PATH: '/usr/bin:/bin', OPENBLAS_NUM_THREADS: '1', ...env } })
    if (run.status !== 0) throw new Error(`baseline failed: ${run.stderr.toString()}`)
    latencies.push(performance.now() - t0)
  }
  return summarize(latencies, performance.now() - started)
}

const config = loadConfig({ ...process.env, RATE_LIMIT_MAX: '0', LOG_LEVEL: 'silent' })
const site = `import sys; sys.path.append(${JSON.stringify(config.SANDBOX_SITE_PACKAGES)})`
// matplotlib's own configuration directory, kept across the baseline's runs: its font cache is
// built by the first run only, as on a machine where matplotlib has run before.
const mplConfig = mkdtempSync(join(tmpdir(), 'pysandbox-bench-mpl-'))
bare(config.SANDBOX_PYTHON, ['-c', `${site}; import matplotlib.pyplot`], 1, { MPLCONFIGDIR: mplConfig })
const baselines = {
  'python -c pass': bare(config.SANDBOX_PYTHON, ['-c', 'pass'], REQUESTS),
  'python -c "import pandas"': bare(config.SANDBOX_PYTHON, ['-c', `${site}; import pandas`], REQUESTS),
  'python -c <the chart, saved as PNG>': bare(config.SANDBOX_PYTHON, ['-c', `${site}\nimport io\nimport matplotlib.pyplot as plt\n${CHART}\nplt.gcf().savefig(io.BytesIO(), format="png")`],
    Math.min(REQUESTS, 20), { MPLCONFIGDIR: mplConfig, MPLBACKEND: 'Agg' })
}
rmSync(mplConfig, { recursive: true, force: true })
const heavy = 2 * config.CONCURRENCY

/** Opening sessions, one at a time, each once the backend's spare jail is ready again (so each
 *  open is what a caller gets from a server at rest; SESSION_SPARE_INTERVAL_MS is 0 here, or each
 *  open would wait for the throttled replacement), then ended. */
async function sessionOpens (url: string, app: Awaited<ReturnType<typeof buildApp>>, opens: number): Promise<Figures> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const latencies: number[] = []
  const started = performance.now()
  for (let i = 0; i < opens; i++) {
    const deadline = Date.now() + 60_000
    while ((app.sandbox.backend?.sessionStats?.()?.ready ?? 1) < 1 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
    const t0 = performance.now()
    const { id } = JSON.parse(await execute(new URL('/sessions', url), agent, '', 201)) as { id: string }
    latencies.push(performance.now() - t0)
    await execute(new URL(`/sessions/${id}`, url), agent, '', 204, 'DELETE')
  }
  agent.destroy()
  return summarize(latencies, performance.now() - started)
}

interface Measured { backend: string, memoryRung: unknown, warm: unknown, warmRuns: unknown, results: Record<string, Record<string, Figures>> }

/** One server (warm sandboxes on or off), every script at concurrency 1 and at twice the slots. */
async function measure (warm: boolean): Promise<Measured> {
  // One client measuring the server's capacity: every slot is its share (TENANT_SLOTS's default
  // keeps one slot for other callers; README "Running it exposed").
  const app = await buildApp({ config: loadConfig({ ...process.env, RATE_LIMIT_MAX: '0', LOG_LEVEL: 'silent', WARM_SANDBOXES: String(warm), TENANT_SLOTS: String(config.CONCURRENCY), SESSION_SPARE_INTERVAL_MS: '0' }) })
  await app.listen({ port: 0, host: '127.0.0.1' })
  try {
    const { port } = app.server.address() as { port: number }
    const url = `http://127.0.0.1:${port}`
    const backend = app.sandbox.backend?.name ?? 'none'
    if (backend === 'none') throw new Error('no sandbox backend passed its probe: see /readyz')
    const features = app.sandbox.probes.at(-1)?.features ?? {}
    await load(url, BODIES.hello ?? {}, heavy, 2 * heavy) // every slot once: its warm sandbox is up
    const results: Record<string, Record<string, Figures>> = {}
    for (const [name, body] of Object.entries(BODIES)) {
      await load(url, body, 1, 2) // warm the page cache
      results[name] = {
        'concurrency 1': await load(url, body, 1, REQUESTS),
        [`concurrency ${heavy}`]: await load(url, body, heavy, REQUESTS)
      }
    }
    if (warm) {
      // Sessions (docs/sessions.md): opening one (a spare jail ready), and calls in one session.
      results['session: open (a spare ready)'] = { 'concurrency 1': await sessionOpens(url, app, Math.min(REQUESTS, 10)) }
      const agent = new Agent({ keepAlive: true, maxSockets: 1 })
      const { id } = JSON.parse(await execute(new URL('/sessions', url), agent, '', 201)) as { id: string }
      for (const name of ['hello', 'pandas']) {
        await load(url, BODIES[name] ?? {}, 1, 2, `/sessions/${id}/execute`)
        results[`session: a call, ${name}`] = { 'concurrency 1': await load(url, BODIES[name] ?? {}, 1, REQUESTS, `/sessions/${id}/execute`) }
      }
      await execute(new URL(`/sessions/${id}`, url), agent, '', 204, 'DELETE')
      agent.destroy()
    }
    return { backend, memoryRung: features.memory, warm: features.warm, warmRuns: app.sandbox.backend?.warmStats?.()?.runs, results }
  } finally {
    await app.close()
  }
}

const runs = { 'warm on': await measure(true), 'warm off': await measure(false) }

const ratio = (a: number | undefined, b: number | undefined): number => Math.round(((a ?? NaN) / (b ?? NaN)) * 100) / 100
const c1 = 'concurrency 1'
const cHeavy = `concurrency ${heavy}`
const ratios: Record<string, number> = {}
for (const [label, run] of Object.entries(runs)) {
  ratios[`${label}: hello p50 / bare python p50`] = ratio(run.results.hello?.[c1]?.p50, baselines['python -c pass'].p50)
  ratios[`${label}: pandas p50 / bare import pandas p50`] = ratio(run.results.pandas?.[c1]?.p50, baselines['python -c "import pandas"'].p50)
  ratios[`${label}: chart p50 / bare chart p50`] = ratio(run.results['matplotlib chart (PNG returned)']?.[c1]?.p50, baselines['python -c <the chart, saved as PNG>'].p50)
}
ratios['session call, hello p50 / stateless warm hello p50'] = ratio(runs['warm on'].results['session: a call, hello']?.[c1]?.p50, runs['warm on'].results.hello?.[c1]?.p50)
ratios['session open p50 / bare import pandas p50'] = ratio(runs['warm on'].results['session: open (a spare ready)']?.[c1]?.p50, baselines['python -c "import pandas"'].p50)
ratios[`pandas throughput at ${heavy} clients, warm on / warm off`] = ratio(runs['warm on'].results.pandas?.[cHeavy]?.throughput, runs['warm off'].results.pandas?.[cHeavy]?.throughput)
ratios['pandas p50 at concurrency 1, warm off / warm on'] = ratio(runs['warm off'].results.pandas?.[c1]?.p50, runs['warm on'].results.pandas?.[c1]?.p50)

const report = {
  date: new Date().toISOString(),
  slots: config.CONCURRENCY,
  requestsPerRow: REQUESTS,
  baselines,
  runs,
  ratios
}
writeFileSync(values.out, JSON.stringify(report, null, 2) + '\n')

console.log(`${config.CONCURRENCY} slots, ${REQUESTS} requests per row (ms; throughput in requests/s)`)
for (const [label, run] of Object.entries(runs)) {
  console.log(`\n${label}: backend ${run.backend}, memory ${String(run.memoryRung)}, warm ${String(run.warm)}${run.warmRuns === undefined ? '' : `, warm pool served ${JSON.stringify(run.warmRuns)}`}`)
  console.log('| what | p50 | p95 | p99 | throughput |\n| --- | --- | --- | --- | --- |')
  for (const [name, f] of Object.entries(baselines)) console.log(`| bare ${name} | ${f.p50} | ${f.p95} | ${f.p99} | ${f.throughput} |`)
  for (const [name, rows] of Object.entries(run.results)) {
    for (const [row, f] of Object.entries(rows)) console.log(`| ${name}, ${row} | ${f.p50} | ${f.p95} | ${f.p99} | ${f.throughput} |`)
  }
}
console.log('')
for (const [name, value] of Object.entries(ratios)) console.log(`${name}: ${value}`)
console.log(`report written to ${values.out}`)
