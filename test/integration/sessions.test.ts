// Sessions over HTTP with the real nsjail backend: the README's three calls as written, state
// that persists, and the attacks of issue 16 as deny/allow pairs: another session's or a
// stateless run's files, processes and memory; a leftover process after the session; an ended
// session resumed; a session growing past its memory over many calls; idle sessions starving
// stateless runs. The last test runs the deny checks again with the sandbox shared between two
// sessions (sabotage): each must see the breach.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { execFileSync } from 'node:child_process'
import { buildApp } from '../../src/app.js'
import type { SandboxBackend, SessionSandbox } from '../../src/backends/backend.js'
import { PROJECT_ROOT, loadConfig } from '../../src/config.js'
import { SESSION_PARENT_UID_OFFSET, SESSION_UID_OFFSET } from '../../src/backends/uids.js'
import { HELLO, TEST_LIMITS, externalUrl, startServer, type Target } from '../helpers/server.js'

const UID_BASE = 1_850_000_000

interface Reply { status: number, body: Record<string, any> }

async function send (target: Target, method: string, path: string, body?: unknown): Promise<Reply> {
  const response = await fetch(`${target.url}${path}`, {
    method,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  })
  const text = await response.text()
  return { status: response.status, body: text === '' ? {} : JSON.parse(text) as Record<string, any> }
}

async function openSession (target: Target): Promise<string> {
  const reply = await send(target, 'POST', '/sessions')
  if (reply.status !== 201) throw new Error(`POST /sessions answered ${reply.status}: ${JSON.stringify(reply.body)}`)
  return reply.body.id as string
}

async function cell (target: Target, id: string, script: string, extra: Record<string, unknown> = {}): Promise<Reply> {
  return await send(target, 'POST', `/sessions/${id}/execute`, { script, ...extra })
}

/** The host processes of the session jails of a server with this uid base (ps -eo uid,...): the
 *  seats' (the user's code) and their parents'. */
function sessionProcesses (base: number): string[] {
  const lines = execFileSync('ps', ['-eo', 'uid=,pid=,args='], { encoding: 'utf8' }).split('\n')
  return lines.filter(line => {
    const seat = Number(line.trim().split(/\s+/)[0]) - base - SESSION_UID_OFFSET
    return (seat >= 0 && seat < 64) || (seat >= SESSION_PARENT_UID_OFFSET && seat < SESSION_PARENT_UID_OFFSET + 64)
  })
}

/** A process that sleeps, named by its arguments (the jail has no sleep or ps: Python does both). */
const SLEEPER = (tag: string): string => `import subprocess, sys\nsleeper = subprocess.Popen([sys.executable, "-c", "import os, time\\nif os.fork() == 0:\\n    time.sleep(600)\\ntime.sleep(600)", "${tag}"])`
const PROBE = 'import os\n' +
  'files = sorted(os.listdir("/tmp"))\n' +
  'procs = " ".join(open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace") for p in os.listdir("/proc") if p.isdigit())\n' +
  '{"files": files, "secret": "s3cr3t-of-a" in procs or any("s3cr3t" in f for f in files)}'

/** What one session can see of another (and of stateless runs): true when anything leaked. */
async function crossSessionBreach (target: Target): Promise<{ breached: boolean, evidence: string }> {
  const a = await openSession(target)
  const b = await openSession(target)
  try {
    const planted = await cell(target, a, `${SLEEPER('s3cr3t-of-a')}\nwritten = open("/tmp/s3cr3t-file", "w").write("x")\ngrid = bytearray(b"s3cr3t-mem" * 1000)\nsleeper.pid`)
    if (planted.status !== 200) throw new Error(`planting failed: ${JSON.stringify(planted.body)}`)
    const seen = await cell(target, b, PROBE)
    const stateless = await send(target, 'POST', '/execute', { script: `def main():\n${PROBE.split('\n').slice(0, -1).map(l => `    ${l}`).join('\n')}\n    return ${PROBE.split('\n').at(-1) ?? ''}\n` })
    const inB = seen.body.result as { secret: boolean, files: string[] }
    const inStateless = stateless.body.result as { secret: boolean, files: string[] }
    const globalsOfA = await cell(target, b, '"grid" in globals()')
    return {
      breached: inB.secret || inStateless.secret || globalsOfA.body.result === true,
      evidence: JSON.stringify({ b: inB, stateless: inStateless, globals: globalsOfA.body.result })
    }
  } finally {
    await send(target, 'DELETE', `/sessions/${a}`)
    await send(target, 'DELETE', `/sessions/${b}`)
  }
}

t.test('the README\'s three calls, as written', async t => {
  const target = await startServer({ SANDBOX_UID_BASE: String(UID_BASE) })
  t.teardown(async () => { await target.close() })
  const readme = readFileSync(join(PROJECT_ROOT, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('### Sessions: a Python that remembers'))
  const block = section.slice(section.indexOf('```sh') + 5, section.indexOf('```', section.indexOf('```sh') + 5))
  const calls = [...block.matchAll(/-d '(\{[\s\S]*?\})'\n# (\{.*\})\n/g)].map(([, body, shown]) => ({ body: JSON.parse(body ?? '') as Record<string, unknown>, shown: JSON.parse((shown ?? '').replace('"iVBORw0KGgo..."', '"x"')) as Record<string, any> }))
  t.equal(calls.length, 3, 'three calls in the README')
  const id = await openSession(target)
  for (const { body, shown } of calls) {
    const reply = await send(target, 'POST', `/sessions/${id}/execute`, body)
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
    t.same(reply.body.result, shown.result, 'the result the README shows')
    t.equal(reply.body.stdout, shown.stdout)
    t.same((reply.body.files ?? []).map((f: { path: string, mediaType: string }) => [f.path, f.mediaType]), (shown.files ?? []).map((f: { path: string, mediaType: string }) => [f.path, f.mediaType]))
  }
  t.equal((await send(target, 'DELETE', `/sessions/${id}`)).status, 204)
})

t.test('state persists between calls: globals, imports, functions, files; main() when defined; errors keep the state', async t => {
  const target = await startServer({ SANDBOX_UID_BASE: String(UID_BASE) })
  t.teardown(async () => { await target.close() })
  const id = await openSession(target)
  t.same((await cell(target, id, 'import numpy as np\nx = 41\ndef double(v):\n    return 2 * v\nwritten = open("kept.txt", "w").write("kept")')).body.result, null, 'a statement: null')
  t.same((await cell(target, id, 'x + 1')).body.result, 42)
  t.same((await cell(target, id, 'int(np.int64(double(x)))')).body.result, 82)
  t.same((await cell(target, id, 'open("kept.txt").read()')).body.result, 'kept')
  t.same((await cell(target, id, 'def main(n):\n    return n + x', { input: 1 })).body.result, 42, 'main(input) when the call defines main')
  const raised = await cell(target, id, 'x = 100\nraise ValueError("no")')
  t.equal(raised.status, 422)
  t.match(raised.body, { code: 'MAIN_RAISED', exception: 'ValueError' })
  t.equal(raised.body.sessionEnded, undefined)
  t.same((await cell(target, id, 'x')).body.result, 100, 'the state as the failing cell left it')
  t.match((await cell(target, id, 'import pandas as pd\npd.DataFrame({"a": [1]})')).body, { code: 'RESULT_NOT_JSON', message: /^the script's last line is something that is not JSON: .*to_dict/ })
  t.match((await cell(target, id, 'x', { input: 1 })).body, { code: 'MISSING_MAIN' })
  t.match((await send(target, 'GET', `/sessions/${id}`)).body, { calls: 9, running: false, backend: 'nsjail' })
  // The image's server is shared by the whole suite (one session per caller): give it back.
  t.equal((await send(target, 'DELETE', `/sessions/${id}`)).status, 204)
})

if (externalUrl !== undefined) {
  t.pass('skipped: the attacks below need servers of their own (small limits, uid ranges read on the host)')
} else {
  t.test('deny: a session sees nothing of another session\'s or a stateless run\'s files, processes or memory; allow: its own', async t => {
    const target = await startServer({ SANDBOX_UID_BASE: String(UID_BASE), SESSIONS_PER_CALLER: '2' })
    t.teardown(async () => { await target.close() })
    const attempt = await crossSessionBreach(target)
    t.equal(attempt.breached, false, attempt.evidence)
    const own = await openSession(target)
    await cell(target, own, `${SLEEPER('s3cr3t-of-a')}\nwritten = open("/tmp/s3cr3t-file", "w").write("x")`)
    t.match((await cell(target, own, PROBE)).body.result, { secret: true }, 'a session sees its own file and process')
  })

  t.test('deny: no process of a session outlives it (DELETE, idle timeout); allow: it lives while the session does', async t => {
    const base = UID_BASE + 20_000
    const target = await startServer({ SANDBOX_UID_BASE: String(base), SESSION_IDLE_MS: '1500', SESSION_SPARES: '0' })
    t.teardown(async () => { await target.close() })
    for (const end of ['delete', 'idle']) {
      const id = await openSession(target)
      t.equal((await cell(target, id, `${SLEEPER('sleeper-of-the-session')}\nNone`)).status, 200)
      t.ok(sessionProcesses(base).some(line => line.includes('sleeper-of-the-session')), `${end}: the sleeper lives while the session does (stopped between calls)`)
      if (end === 'delete') t.equal((await send(target, 'DELETE', `/sessions/${id}`)).status, 204)
      else await new Promise(resolve => setTimeout(resolve, 2500))
      const deadline = Date.now() + 5000
      while (sessionProcesses(base).length > 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 100))
      t.same(sessionProcesses(base), [], `${end}: nothing of the session is left on the host`)
      const resumed = await cell(target, id, '1')
      t.equal(resumed.status, 410, `${end}: it cannot be resumed`)
      t.equal(resumed.body.code, 'SESSION_ENDED')
    }
  })

  t.test('deny: a session cannot grow past SESSION_MEMORY_MB over many calls; it ends MEMORY_LIMIT_EXCEEDED and says so', async t => {
    const target = await startServer({ SANDBOX_UID_BASE: String(UID_BASE + 30_000), SESSION_MEMORY_MB: '256' })
    t.teardown(async () => { await target.close() })
    const id = await openSession(target)
    t.same((await cell(target, id, 'hoard = []')).body.result, null)
    let last: Reply | undefined
    for (let i = 0; i < 12; i++) {
      last = await cell(target, id, 'hoard.append(bytearray(32 << 20))\nlen(hoard)')
      if (last.status !== 200) break
    }
    t.equal(last?.status, 422, 'a call over the ceiling fails')
    t.match(last?.body, { code: 'MEMORY_LIMIT_EXCEEDED', sessionEnded: true })
    t.equal((await send(target, 'GET', `/sessions/${id}`)).status, 410)
    const after = await cell(target, id, 'len(hoard)')
    t.match(after.body, { code: 'SESSION_ENDED', endedBy: 'MEMORY_LIMIT_EXCEEDED' })
    const fresh = await openSession(target)
    t.same((await cell(target, fresh, '"hoard" in globals()')).body.result, false, 'allow: a new session, from nothing')
  })

  t.test('deny: idle sessions with busy background work do not starve stateless runs; allow: their work resumes at the next call', async t => {
    const target = await startServer({ SANDBOX_UID_BASE: String(UID_BASE + 40_000), SESSIONS_MAX: '3', SESSIONS_PER_CALLER: '3' })
    t.teardown(async () => { await target.close() })
    const ids = [await openSession(target), await openSession(target), await openSession(target)]
    const burner = 'import threading, time\nspins = [0]\ndef burn():\n    while True:\n        spins[0] += 1\nfor _ in range(2):\n    threading.Thread(target=burn, daemon=True).start()\ntime.sleep(0.2)\nspins[0] > 0'
    for (const id of ids) t.same((await cell(target, id, burner)).body.result, true, 'the burners run during the call')
    const before = await cell(target, ids[0] ?? '', 'spins[0]')
    await new Promise(resolve => setTimeout(resolve, 1000))
    const latencies: number[] = []
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now()
      t.equal((await send(target, 'POST', '/execute', { script: HELLO })).status, 200)
      latencies.push(performance.now() - t0)
    }
    latencies.sort((a, b) => a - b)
    const after = await cell(target, ids[0] ?? '', 'spins[0]')
    t.ok((after.body.result as number) - (before.body.result as number) < 50_000_000, `the burners barely ran while idle (${String(after.body.result)} vs ${String(before.body.result)} spins)`)
    t.ok((latencies[5] ?? Infinity) < 500, `stateless runs are not starved: hello p50 ${Math.round(latencies[5] ?? 0)} ms with three sessions of busy threads open`)
    const resumed = await cell(target, ids[0] ?? '', 'import time\na = spins[0]\ntime.sleep(0.3)\nspins[0] > a')
    t.same(resumed.body.result, true, 'allow: a call resumes them')
  })

  t.test('sabotage: with two sessions sharing one sandbox, the isolation deny test sees the breach', async t => {
    const app = await buildApp({ config: loadConfig({ ...TEST_LIMITS, SANDBOX_UID_BASE: String(UID_BASE + 50_000), SESSIONS_PER_CALLER: '2' }) })
    t.teardown(async () => { await app.close() })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = app.server.address() as { port: number }
    // The protection off: every session gets the first session's sandbox.
    const backend = app.sandbox.backend as SandboxBackend
    const open = backend.openSession?.bind(backend)
    let first: Promise<SessionSandbox> | undefined
    backend.openSession = async () => await (first ??= (open as () => Promise<SessionSandbox>)())
    const attempt = await crossSessionBreach({ url: `http://127.0.0.1:${port}`, serverRoot: PROJECT_ROOT, port, close: async () => {} })
    t.equal(attempt.breached, true, `breached when shared (${attempt.evidence})`)
  })
}
