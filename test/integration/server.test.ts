// The process as operators run it: `node dist/server.js` reads PORT, serves, and on SIGTERM
// gives runs in flight SHUTDOWN_GRACE_MS, then stops the rest (503 SHUTTING_DOWN) and exits
// (the drain in detail, with runs that finish and a queue: test/integration/lifecycle.test.ts).
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { resolve } from 'node:path'
import { PROJECT_ROOT } from '../../src/config.js'
import { HELLO, TEST_LIMITS, externalUrl, freePort } from '../helpers/server.js'

async function waitReady (url: string, deadline: number): Promise<number> {
  for (;;) {
    try {
      const response = await fetch(`${url}/readyz`)
      if (response.status === 200 || Date.now() > deadline) return response.status
    } catch {
      if (Date.now() > deadline) throw new Error('server never answered')
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

if (externalUrl !== undefined) {
  t.pass('skipped: starts its own server process')
} else {
  t.test('SIGTERM closes gracefully: the run still going after the grace is stopped, answered 503, and the process exits', async t => {
    const port = await freePort()
    const server = spawn(process.execPath, [resolve(PROJECT_ROOT, 'dist/server.js')], {
      env: { ...process.env, ...TEST_LIMITS, LIMIT_WALL_MS: '30000', LIMIT_CPU_S: '30', SHUTDOWN_GRACE_MS: '1000', PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'inherit']
    })
    let log = ''
    server.stdout.on('data', (chunk: Buffer) => { log += chunk.toString() })
    const url = `http://127.0.0.1:${port}`
    t.equal(await waitReady(url, Date.now() + 30_000), 200, 'ready on PORT')

    const hello = await fetch(`${url}/execute`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ script: HELLO }) })
    t.equal(hello.status, 200)

    const marker = `pysandbox-sigterm-${Date.now()}`
    const long = fetch(`${url}/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ script: `import time\nMARK = "${marker}"\ndef main():\n    time.sleep(25)\n` })
    })
    await new Promise(resolve => setTimeout(resolve, 1500))
    const closedAt = Date.now()
    server.kill('SIGTERM')
    const reply = await long
    const body = await reply.json() as { code: string, message: string }
    t.equal(reply.status, 503, 'not a 422: the script is not to blame')
    t.equal(body.code, 'SHUTTING_DOWN')
    t.match(body.message, /still going when the shutdown's grace ended/)
    const [code] = await once(server, 'exit') as [number | null]
    t.equal(code, 0, 'exits cleanly')
    t.ok(Date.now() - closedAt < 10_000, 'well before the 25 s sleep would have ended')
    t.match(log, /"msg":"shutting down: \/readyz answers 503/)
    t.match(log, /"msg":"closed"/)
    t.notMatch(log, new RegExp(marker), 'the script never reaches the log')
  })
}
