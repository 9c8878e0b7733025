// The load command's bounded form (scripts/load.ts, the same code `npm run load` runs): ~10 s of
// the mix at 16 connections against a real server of its own (node dist/server.js with the
// nsjail backend and its warm pool, four API keys), while four nsjail processes or zygotes among
// its descendants are SIGKILLed at random moments. Every reply must be its own request's, every
// fault must cost at most the run it hit (422 CRASHED or a retryable 503), the pool must refill
// and the server live on. First, the judge and the report on made-up replies.
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs'
import { dirname } from 'node:path'
import { BOUNDS, CLASSES, TENANTS, Tally, afterStop, backendOf, shedBetween, findTargets, formatReport, invariants, judge, newNonce, parseMetrics, poolState, runLoad, splitConnections, startServer, type ClassReport, type LoadClass, type LoadReport, type Proc, type TenantCount } from '../../scripts/load.js'
import { externalUrl } from '../helpers/server.js'

const byName = (name: string): LoadClass => CLASSES.find(c => c.name === name) as LoadClass

t.test('the judge: each reply is its own request\'s, its class\'s outcome, a retryable refusal, or a fault\'s', async t => {
  const mine = newNonce()
  const theirs = newNonce()
  const json = (body: unknown): string => JSON.stringify(body)
  const cases: Array<[string, string, number, string, boolean, string]> = [
    ['allow: hello, its own result and stdout', 'hello', 200, json({ result: { nonce: mine }, stdout: `${mine}\n` }), false, 'ok'],
    ['deny: hello, another run\'s result', 'hello', 200, json({ result: { nonce: theirs }, stdout: `${theirs}\n` }), false, 'wrong'],
    ['deny: hello, its result but another run\'s output mixed in', 'hello', 200, json({ result: { nonce: mine }, stdout: `${mine}\n${theirs}\n` }), false, 'wrong'],
    ['deny: hello, its result but not its stdout', 'hello', 200, json({ result: { nonce: mine }, stdout: '' }), false, 'wrong'],
    ['deny: hello, a result that is no object', 'hello', 200, json({ result: 42, stdout: `${mine}\n` }), false, 'wrong'],
    ['allow: pandas, its sum', 'pandas', 200, json({ result: { nonce: mine, total: 4 } }), false, 'ok'],
    ['deny: pandas, a wrong sum', 'pandas', 200, json({ result: { nonce: mine, total: 3 } }), false, 'wrong'],
    ['allow: output-flood, truncated and flagged', 'output-flood', 200, json({ result: { nonce: mine }, stdout: `${mine}\n...`, stdoutTruncated: true }), false, 'ok'],
    ['deny: output-flood, not flagged', 'output-flood', 200, json({ result: { nonce: mine }, stdout: `${mine}\n...` }), false, 'wrong'],
    ['allow: files, its own CSV and a figure', 'files', 200, json({ result: { nonce: mine, rows: 2 }, files: [{ path: 'figures/1.png', content: 'iVBO' }, { path: 'out.csv', content: `key,value\n${mine},1\n${mine},2\n` }] }), false, 'ok'],
    ['deny: files, no figure', 'files', 200, json({ result: { nonce: mine, rows: 2 }, files: [{ path: 'out.csv', content: `key,value\n${mine},1\n${mine},2\n` }] }), false, 'wrong'],
    ['deny: files, another run\'s CSV', 'files', 200, json({ result: { nonce: mine, rows: 2 }, files: [{ path: 'figures/1.png', content: 'iVBO' }, { path: 'out.csv', content: 'key,value\nx,1\nx,2\n' }] }), false, 'wrong'],
    ['deny: time-limit, a 200 (the limit not enforced)', 'time-limit', 200, json({ result: { nonce: mine } }), false, 'unexpected'],
    ['allow: raising, MAIN_RAISED with its nonce printed and raised', 'raising', 422, json({ code: 'MAIN_RAISED', message: `ValueError: ${mine}`, stdout: `${mine}\n` }), false, 'ok'],
    ['deny: raising, MAIN_RAISED with another exception', 'raising', 422, json({ code: 'MAIN_RAISED', message: 'KeyError: x', stdout: `${mine}\n` }), false, 'unexpected'],
    ['allow: time-limit, TIME_LIMIT_EXCEEDED naming 300 ms', 'time-limit', 422, json({ code: 'TIME_LIMIT_EXCEEDED', message: 'the wall-time limit of 300 ms', stdout: mine }), false, 'ok'],
    ['deny: time-limit, TIME_LIMIT_EXCEEDED naming another limit', 'time-limit', 422, json({ code: 'TIME_LIMIT_EXCEEDED', message: '10 s of CPU', stdout: mine }), false, 'unexpected'],
    ['allow: memory-limit, MEMORY_LIMIT_EXCEEDED naming 64 MiB', 'memory-limit', 422, json({ code: 'MEMORY_LIMIT_EXCEEDED', message: 'more than 64 MiB', stdout: mine }), false, 'ok'],
    ['deny: memory-limit, MEMORY_LIMIT_EXCEEDED naming another limit', 'memory-limit', 422, json({ code: 'MEMORY_LIMIT_EXCEEDED', message: 'more than 512 MiB', stdout: mine }), false, 'unexpected'],
    ['fault: raising, MAIN_RAISED with its output lost', 'raising', 422, json({ code: 'MAIN_RAISED', stdout: '' }), false, 'affected'],
    ['fault: hello, CRASHED', 'hello', 422, json({ code: 'CRASHED', stdout: '' }), false, 'affected'],
    ['deny: hello, CRASHED with another run\'s output', 'hello', 422, json({ code: 'CRASHED', stdout: theirs }), false, 'wrong'],
    ['deny: hello, MEMORY_LIMIT_EXCEEDED (a fault blamed on the script)', 'hello', 422, json({ code: 'MEMORY_LIMIT_EXCEEDED', message: 'm' }), false, 'unexpected'],
    ['allow: BUSY with Retry-After', 'pandas', 503, json({ code: 'BUSY' }), true, 'refused'],
    ['deny: BUSY without Retry-After', 'pandas', 503, json({ code: 'BUSY' }), false, 'unexpected'],
    ['allow: CONCURRENCY_LIMITED with Retry-After', 'hello', 429, json({ code: 'CONCURRENCY_LIMITED' }), true, 'refused'],
    ['deny: INTERNAL_ERROR', 'hello', 500, json({ code: 'INTERNAL_ERROR' }), false, 'unexpected'],
    ['deny: a body without a code', 'hello', 502, 'null', false, 'unexpected'],
    ['deny: a body that is not JSON', 'hello', 502, '<html>', false, 'unexpected']
  ]
  for (const [name, cls, status, body, retryAfter, kind] of cases) t.equal(judge(byName(cls), mine, status, body, retryAfter).kind, kind, name)
  t.equal(judge(byName('raising'), mine, 422, json({ code: 'MAIN_RAISED', stdout: mine }), false).label, '422 MAIN_RAISED', 'labelled by status and code')
})

t.test('a tally counts replies by kind, label and tenant, the latency of the right ones, and quotes the wrong ones', async t => {
  const samples: string[] = []
  const tally = new Tally('hello', samples)
  const tenant: TenantCount = { name: 'a', replies: 0, ran: 0 }
  tally.add({ label: '200', kind: 'ok' }, 5, tenant)
  tally.add({ label: '200', kind: 'wrong', detail: 'its result is not its own' }, 6, tenant)
  tally.add({ label: '503 BUSY', kind: 'refused' }, 1, tenant)
  t.same(tally.kinds, { ok: 1, refused: 1, affected: 0, wrong: 1, unexpected: 0 })
  t.same(tally.labels, { 200: 2, '503 BUSY': 1 })
  t.same(tally.served, [5])
  t.same(tenant, { name: 'a', replies: 3, ran: 1 })
  t.same(samples, ['hello: 200: its result is not its own'])
})

t.test('the faults\' targets: nsjail processes and warm jails\' zygotes below the server, nothing inside a jail or elsewhere', async t => {
  const proc = (pid: number, ppid: number, comm: string, cmdline = comm): Proc => ({ pid, ppid, comm, cmdline })
  const table = [
    proc(100, 1, 'node', 'node dist/server.js'),
    proc(101, 100, 'nsjail'), proc(102, 101, 'python3.11', 'python3 -I harness/zygote.py'), proc(103, 102, 'python3.11', 'python3 -I harness/zygote.py'),
    proc(104, 100, 'nsjail'), proc(105, 104, 'python3.11', 'python3 -I harness/run.py'),
    proc(106, 100, 'nsjail'),
    proc(107, 100, 'sh'), proc(108, 107, 'nsjail'),
    proc(200, 1, 'node'), proc(201, 200, 'nsjail'), proc(202, 201, 'python3.11', 'python3 -I harness/zygote.py')
  ]
  t.same(findTargets(100, table), [
    { pid: 101, kind: 'nsjail (warm jail)', child: 102 }, { pid: 102, kind: 'zygote' },
    { pid: 104, kind: 'nsjail (cold run)', child: 105 },
    { pid: 106, kind: 'nsjail (cold run)', child: undefined },
    { pid: 108, kind: 'nsjail (cold run)', child: undefined }
  ])
  t.same(findTargets(999, table), [], 'a process without descendants')
})

t.test('connections are split by weight, at least one per class', async t => {
  t.same(splitConnections(16), [3, 3, 2, 2, 2, 2, 2])
  t.same(splitConnections(7), [1, 1, 1, 1, 1, 1, 1])
  t.equal(splitConnections(64).reduce((a, b) => a + b, 0), 64)
  t.same(splitConnections(8), [2, 1, 1, 1, 1, 1, 1])
  t.throws(() => splitConnections(6), /at least 7 connections/)
})

t.test('the backend and its warm sandboxes, as /readyz names them', async t => {
  const readyz = (features: Record<string, unknown>): unknown => ({ backend: 'nsjail', probes: [{ backend: 'nsjail', features }] })
  t.equal(backendOf(readyz({ warm: 'zygote', zygotes: 2 })), 'nsjail, warm zygote')
  t.equal(backendOf(readyz({ warm: 'off', warmReason: 'the zygote did not start' })), 'nsjail, warm off (the zygote did not start)')
  t.equal(backendOf({ backend: 'unshare', probes: [{ features: {} }] }), 'unshare')
  t.equal(backendOf(undefined), 'undefined', 'no reply')
})

t.test('what the server shed during the run, by reason', async t => {
  const before = parseMetrics('pysandbox_shed_total{reason="queue_full"} 2\npysandbox_shed_total{reason="expected_wait"} 0\nother 1\n')
  const after = parseMetrics('pysandbox_shed_total{reason="queue_full"} 5\npysandbox_shed_total{reason="expected_wait"} 7\nother 9\n')
  t.same(shedBetween(before, after), { queue_full: 3, expected_wait: 7 })
})

t.test('the pool is whole with a started zygote per slot and none starting', async t => {
  const metrics = (ready: number, starting: number, running: number): Map<string, number> => parseMetrics(
    `# TYPE x gauge\npysandbox_concurrency_limit 2\npysandbox_warm_sandboxes{state="ready"} ${ready}\npysandbox_warm_sandboxes{state="starting"} ${starting}\npysandbox_warm_sandboxes{state="running"} ${running}\npysandbox_warm_sandboxes{state="cleaning"} 0\n`)
  t.match(poolState(metrics(2, 0, 0)), { whole: true, idle: true })
  t.match(poolState(metrics(1, 0, 1)), { whole: true, idle: false })
  t.match(poolState(metrics(3, 1, 0)), { whole: false, idle: false }, 'a zygote starting')
  t.match(poolState(metrics(1, 0, 0)), { whole: false }, 'a slot short')
  t.match(poolState(parseMetrics('pysandbox_concurrency_limit 2\n')), { whole: true, idle: true, concurrency: 2 }, 'no warm pool: nothing to refill')
})

t.test('every invariant that fails is named', async t => {
  const figures = { connections: 1, replies: 1, p50: 1, p99: 2, servedP50: 1, servedP99: 2, labels: { '422 CRASHED': 1 }, timeouts: 0, errors: 0 }
  const cls = (name: string, kinds: Partial<ClassReport['kinds']>, more: Partial<ClassReport> = {}): ClassReport =>
    ({ name, ...figures, kinds: { ok: 0, refused: 0, affected: 0, wrong: 0, unexpected: 0, ...kinds }, ...more })
  const report: LoadReport = {
    url: 'http://x',
    own: true,
    backend: 'nsjail, warm zygote',
    durationS: 1,
    connections: 7,
    concurrency: 2,
    classes: [cls('hello', { ok: 1, wrong: 1, unexpected: 1, affected: 3 }), cls('pandas', {}, { timeouts: 1, errors: 1 })],
    tenants: [{ name: 'a', replies: 10, ran: 10 }, { name: 'b', replies: 10, ran: 0 }],
    kills: [{ pid: 1, kind: 'zygote', atMs: 1 }, { pid: 2, kind: 'nsjail (warm jail)', atMs: 2, refillMs: BOUNDS.refillMs + 1 }],
    killsAsked: 3,
    hellos: [{ label: '200', kind: 'ok' }, { label: '422 CRASHED', kind: 'affected', detail: 'CRASHED' }],
    start: { rss: 0, fds: 10 },
    end: { rss: BOUNDS.rssGrowthBytes + 1024 * 1024, fds: 99 },
    fdBound: 20,
    pool: { concurrency: 2, whole: false, idle: false, zygotes: { starting: 1, ready: 1, running: 0, cleaning: 0 } },
    shed: { expected_wait: 3 },
    serverExit: 'SIGKILL',
    leftCgroups: [],
    samples: ['hello: 200: its result is not its own'],
    failures: []
  }
  report.failures.push(...invariants(report))
  for (const failure of [/1 replies were not their own/, /1 replies were neither/, /3 replies were CRASHED or lost their output, more than the 2 kills/,
    /pandas: no request ran/, /pandas: 1 requests had no reply/, /pandas: 1 connection errors/, /tenant b: 0 of its 10 replies ran/, /only 2 of 3 kills/,
    /not whole within \d+ ms of the kill of zygote 1 \(never ms\)/, /kill of nsjail \(warm jail\) 2/, /the server ended \(SIGKILL\)/,
    /after the load, hellos got 422 CRASHED \(CRASHED\)/, /the pool was not whole and idle \(ready 1, starting 1.* \(99, at most 20\)/, /RSS grew by 129 MiB/]) {
    t.ok(report.failures.some(f => failure.test(f)), `names: ${failure.source}`)
  }
  const text = formatReport(report)
  t.match(text, /\| hello \| 1 \| 1 \| 1 \| 2 \| 1 \| 2 \| 422 CRASHED: 1 \|/)
  t.match(text, /ENDED \(SIGKILL\)/)
  t.match(text, /Shed by the server \(pysandbox_shed_total\): expected_wait 3\./)
  t.match(text, /NOT whole and idle.*; 2 hellos meanwhile, 1 right/)
  t.match(text, /SIGKILLs \(zygote 1, nsjail \(warm jail\) 1\)/)
  t.match(text, /pool whole again after \(ms\) NaN, 35001 \(max NaN/)
  t.match(text, /Samples:\n- hello: 200/)
  t.match(text, /FAILED:\n- /)
  t.notMatch(text, /log is kept/)
  const quiet = formatReport({ ...report, own: false, killsAsked: 0, kills: [], samples: [], failures: [], settledMs: 5, serverExit: undefined, pool: { concurrency: 2, whole: true, idle: true }, log: '/tmp/x.log' })
  t.match(quiet, /^http:\/\/x \(nsjail, warm zygote\): CONCURRENCY 2/)
  t.match(quiet, /whole and idle 5 ms after the load ended \(no warm pool\)/)
  t.match(quiet, /All invariants held\./)
  t.match(quiet, /The server's log is kept: \/tmp\/x\.log/)
  t.notMatch(quiet, /Faults:/)
  const noPool = invariants({ ...report, pool: { concurrency: 2, whole: true, idle: true } })
  t.ok(noPool.some(f => /the pool was not whole and idle \(no warm pool; CONCURRENCY 2\)/.test(f)))
})

t.test('after the server stopped, a killed jail\'s process still there is a failure, and its cgroups are removed', async t => {
  // A stand-in for a jailed process that outlived its nsjail: its command line names run.py.
  const stray = spawn('/bin/sh', ['-c', 'sleep 30', 'run.py'], { stdio: 'ignore' })
  t.teardown(() => { stray.kill('SIGKILL') })
  const pid = stray.pid as number
  const cgroup = `/sys/fs/cgroup/pids/NSJAIL/NSJAIL.${pid}`
  // Where the host has cgroup v1's pids controller (the suite's host does), an empty cgroup in
  // nsjail's place stands for one a SIGKILLed nsjail left.
  const canMake = existsSync('/sys/fs/cgroup/pids/NSJAIL')
  if (canMake) mkdirSync(cgroup)
  const report = { kills: [{ pid: 1, kind: 'nsjail (cold run)', child: pid, atMs: 1 }, { pid: 2, kind: 'zygote', atMs: 1 }], leftCgroups: [] as string[] } as unknown as LoadReport
  const failures = afterStop(report)
  t.match(failures, [new RegExp(`the jailed process ${pid} of the killed nsjail \\(cold run\\) 1 outlived it`)])
  t.same(report.leftCgroups, canMake ? [cgroup] : [])
  t.notOk(existsSync(cgroup), 'removed')
  stray.kill('SIGKILL')
  await once(stray, 'exit')
  t.same(afterStop(report), [], 'once it is gone, nothing is left')
})

t.test('with --url: --kill needs the server\'s pid, and a server must answer', async t => {
  const url = 'http://127.0.0.1:9'
  await t.rejects(runLoad({ url, durationS: 1, connections: 7, kills: 1 }), /--kill needs the server's pid/)
  await t.rejects(runLoad({ url, key: 'psk_x', durationS: 1, connections: 7, kills: 1 }), /--kill needs the server's pid/)
  await t.rejects(runLoad({ url, durationS: 1, connections: 7, kills: 0 }), /no server answers at http:\/\/127\.0\.0\.1:9/)
})

t.test('a server of its own that cannot start is reported with its log', async t => {
  const error = await startServer({ ...process.env, LIMIT_WALL_MS: 'soon' }).catch((error: unknown) => error as Error)
  t.match(error, { message: /^the server ended \(exit code 78, signal null\) while waiting for the server to be ready; its log: \/.*server\.log$/ })
  const log = /its log: (\S+)$/.exec((error as Error).message)?.[1] ?? ''
  t.match(readFileSync(log, 'utf8'), /LIMIT_WALL_MS="soon" must be an integer/, 'which says why')
  rmSync(dirname(log), { recursive: true, force: true })
})

if (externalUrl !== undefined) {
  t.pass('skipped: SIGKILLs processes on the host the server runs on')
} else {
  t.test('10 s of the mix at 16 connections with 4 SIGKILLs: every reply its own, the pool refilled, the server alive', async t => {
    const started = performance.now()
    const report = await runLoad({
      durationS: 10,
      connections: 16,
      kills: 4,
      env: { ...process.env, SANDBOX_BACKEND: 'nsjail' },
      progress: line => t.comment(line)
    })
    t.comment(formatReport(report))
    t.same(report.failures, [], 'every invariant holds')
    t.equal(report.kills.length, 4, 'four processes were killed')
    t.same(report.tenants.map(tenant => tenant.name), TENANTS, 'each tenant sent requests')
    t.ok(report.classes.every(c => c.kinds.wrong === 0), 'no wrong or mixed result')
    t.comment(`${Math.round(performance.now() - started)} ms in all`)
  })
}
