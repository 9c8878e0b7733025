// Hostile script output and hostile request bodies cannot stall the server (issue 14), against a
// real server process (node dist/server.js, nsjail: run `npm run build` first), each attack with
// its allow twin, /healthz polled all the while:
// (1) two slots replying 8 MiB of `[{}]` (2.8 million objects) back to back, written on the result
//     channel by the scripts themselves: the reply is scanned, never parsed, and comes back whole;
// (2) values the harness refuses (a lone surrogate, 1e400, 2**64 + 1) written on the channel:
//     422 RESULT_NOT_JSON in the harness's own words; their allowed neighbours come back;
// (3) 1 MiB bodies of 96,331 unknown fields on four connections at once: refused 400 naming the
//     first, before anything parses them; the same keys as `input` run.
// The server is a process of its own (not test/helpers/server.ts's startServer, in this one), run
// without coverage (NODE_V8_COVERAGE is left out of its environment): V8's block counters make
// the scan 7 to 9 times slower (200-400 ms per 8 MiB, measured), and the latencies would be the
// instrumentation's. The polls run in a thread of their own, so that this process's handling of
// 8 MiB replies is not counted either.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { resolve } from 'node:path'
import { Worker } from 'node:worker_threads'
import { PROJECT_ROOT } from '../../src/config.js'
import { call, type Reply } from '../helpers/http.js'
import { externalUrl, freePort, waitFor } from '../helpers/server.js'

const MiB = 1024 * 1024
/** A /healthz poll must answer within this during an attack: the worst of all its polls, in one
 *  of at most ATTEMPTS attempts (see underAttack()). */
const HEALTH_BOUND_MS = 100
const POLL_EVERY_MS = 20

/** The server, on nsjail with two slots and LIMIT_RESULT_BYTES at its default of 8 MiB. */
async function serve (t: Test): Promise<number> {
  const port = await freePort()
  const { NODE_V8_COVERAGE: _coverage, ...env } = process.env
  const child = spawn(process.execPath, [resolve(PROJECT_ROOT, 'dist/server.js')], {
    // No spare session jail importing numpy while /healthz is timed (the warm sandboxes are waited
    // for below for the same reason): on 2 cores it pushed the worst poll past the bound.
    env: { ...env, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', SANDBOX_BACKEND: 'nsjail', RATE_LIMIT_MAX: '0', PROBE_INTERVAL_MS: '0', CONCURRENCY: '2', TENANT_SLOTS: '2', SESSION_SPARES: '0' },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    await once(child, 'exit')
    clearTimeout(killer)
  })
  const url = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${url}/readyz`)).status === 200, 'the server to be ready')
  await waitFor(async () => /pysandbox_warm_sandboxes\{state="ready"\} 2/.test(await (await fetch(`${url}/metrics`)).text()), 'the warm sandboxes')
  return port
}

/** The poller: a thread of its own, so that what this process does with the attack's replies
 *  (8 MiB each) is not counted as the server's latency. */
const POLLER = `
const { parentPort, workerData } = require('node:worker_threads')
const http = require('node:http')
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
let running = true
parentPort.on('message', () => { running = false })
const poll = () => new Promise(resolve => {
  const started = performance.now()
  const req = http.request({ host: '127.0.0.1', port: workerData.port, path: '/healthz', agent }, res => {
    res.resume()
    res.on('end', () => resolve(res.statusCode === 200 ? performance.now() - started : Infinity))
  })
  req.on('error', () => resolve(Infinity))
  req.end()
})
;(async () => {
  await poll() // the connection, made before the attack
  parentPort.postMessage('ready')
  const latencies = []
  while (running) {
    latencies.push(await poll())
    await new Promise(resolve => setTimeout(resolve, workerData.every))
  }
  agent.destroy()
  parentPort.postMessage(latencies)
})()
`

/** Polls /healthz over a keep-alive connection of its own every POLL_EVERY_MS while `attack` runs;
 *  the attack's result, and the polls' worst and median latencies. */
async function duringPolls<T> (port: number, attack: () => Promise<T>): Promise<{ result: T, worst: number, median: number, polls: number }> {
  const poller = new Worker(POLLER, { eval: true, workerData: { port, every: POLL_EVERY_MS } })
  try {
    const [ready] = await once(poller, 'message') as [unknown]
    if (ready !== 'ready') throw new Error('the poller did not start')
    const result = await attack()
    poller.postMessage('stop')
    const [latencies] = await once(poller, 'message') as [number[]]
    return { result, ...summary(latencies) }
  } finally {
    await poller.terminate()
  }
}

function summary (latencies: number[]): { worst: number, median: number, polls: number } {
  const sorted = [...latencies].sort((a, b) => a - b)
  return { worst: sorted.at(-1) ?? Infinity, median: sorted[Math.floor(sorted.length / 2)] ?? Infinity, polls: sorted.length }
}

/** Attempts at most, of each attack: see underAttack(). */
const ATTEMPTS = 3

/** The attack with /healthz polled throughout, `check`ed each time, up to ATTEMPTS times until the
 *  polls' worst is within HEALTH_BOUND_MS: a stall the server causes fails every attempt (before
 *  these protections, 0.5 s and more each time), a hiccup of this busy 2-core VM (120 ms seen
 *  with no attack to speak of) or a fresh server's first, unoptimised replies fail one. */
async function underAttack<T> (t: Test, port: number, what: string, attack: () => Promise<T>, check: (result: T) => void, minPolls = 10): Promise<void> {
  const attempts: Array<{ worst: number, median: number, polls: number }> = []
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const { result, ...polled } = await duringPolls(port, attack)
    check(result)
    attempts.push(polled)
    if (polled.polls >= minPolls && polled.worst < HEALTH_BOUND_MS) break
  }
  const shown = attempts.map(a => `worst ${Math.round(a.worst)} ms, median ${Math.round(a.median)} ms over ${a.polls} polls`).join('; ')
  t.ok(attempts.some(a => a.polls >= minPolls && a.worst < HEALTH_BOUND_MS), `deny: /healthz during ${what} within ${HEALTH_BOUND_MS} ms: ${shown}`)
}

const execute = async (port: number, body: string | Buffer): Promise<Reply> => await call(port, 'POST', '/execute', { body })

/** A script whose main() writes `bytes` on the result channel itself (the descriptor the harness
 *  moved it to, found in its frames) and exits 0, as a hostile script would. */
function writesOnChannel (bytes: string): string {
  return JSON.stringify({
    script: `import os, sys
def main():
    frame, fd = sys._getframe(), None
    while frame is not None and fd is None:
        fd = frame.f_locals.get("channel") if type(frame.f_locals.get("channel")) is int else None
        frame = frame.f_back
    data = memoryview(${bytes})
    while data:
        data = data[os.write(fd, data):]
    os._exit(0)
`
  })
}

/** A channel message as a Python expression of its bytes. */
const message = (text: string): string => `bytes.fromhex("${Buffer.from(text).toString('hex')}")`

if (externalUrl !== undefined) {
  t.pass('skipped: starts a server process of its own')
} else {
  t.test('hostile payloads', async t => {
    const port = await serve(t)

    await t.test('deny: two slots replying 8 MiB of [{}] back to back do not stall /healthz; allow: every reply comes back whole', async t => {
      const items = Math.floor((8 * MiB - 4) / 3) // the result `[{},...{}]` at LIMIT_RESULT_BYTES
      const attack = writesOnChannel(`b'{"ok":true,"result":[' + b'{},' * ${items - 1} + b'{}]}'`)
      await underAttack(t, port, 'six 8 MiB replies, two at a time', async () => {
        const replies: Reply[] = []
        for (let round = 0; round < 3; round++) replies.push(...await Promise.all([execute(port, attack), execute(port, attack)]))
        return replies
      }, replies => {
        for (const reply of replies) {
          t.equal(reply.status, 200, reply.body.slice(0, 200))
          t.ok(reply.body.startsWith('{"result":[{},{},') && reply.body.includes('{}],"stdout":""'), 'allow: the result as written, then the output')
          t.equal(reply.body.length, 3 * items + 1 + '{"result":,"stdout":"","stderr":"","backend":"nsjail"}'.length, `${reply.body.length} bytes in ${Math.round(reply.ms)} ms`)
        }
      })
    })

    await t.test('allow: the result is the harness\'s own JSON, carried as it wrote it', async t => {
      const reply = await execute(port, JSON.stringify({ script: 'def main():\n    return {"f": 1.0, "i": 2**53 - 1, "s": "é\\u2028", "l": [0.5, -0.0, 1e300]}\n' }))
      t.equal(reply.status, 200, reply.body)
      t.ok(reply.body.startsWith('{"result":{"f":1.0,"i":9007199254740991,"s":"é\u2028","l":[0.5,-0.0,1e+300]},'), reply.body)
      t.same(JSON.parse(reply.body).result, { f: 1, i: 9007199254740991, s: 'é\u2028', l: [0.5, -0, 1e300] })
    })

    await t.test('deny/allow: values the harness refuses are refused when the script writes them itself, in the harness\'s words', async t => {
      const prefix = 'main() returned something that is not JSON: '
      const pairs: Array<{ name: string, deny: string, harness: string, words: string, allow: string, value: unknown }> = [
        { name: 'a lone surrogate', deny: '{"ok":true,"result":["\\ud800"]}', harness: 'return ["\\ud800"]', words: 'result[0] is a str with a lone surrogate, which is not valid Unicode', allow: '{"ok":true,"result":["\\ud83d\\ude00"]}', value: ['😀'] },
        { name: 'an integer beyond 2**53 - 1', deny: '{"ok":true,"result":{"n":18446744073709551617}}', harness: 'return {"n": 2**64 + 1}', words: 'result[\'n\'] is an int beyond ±(2**53 - 1), which JSON readers cannot hold exactly; return it as a str', allow: '{"ok":true,"result":{"n":9007199254740991}}', value: { n: 9007199254740991 } },
        { name: 'a float beyond the largest', deny: '{"ok":true,"result":1e400}', harness: 'return float("inf")', words: 'result is 1e400, inf as a float, which is not JSON (NaN and Infinity are not numbers in JSON)', allow: '{"ok":true,"result":1.7976931348623157e308}', value: 1.7976931348623157e308 }
      ]
      await underAttack(t, port, 'the value checks, twice', async () => {
        for (const { name, deny, harness, words, allow, value } of [...pairs, ...pairs]) {
          const denied = await execute(port, writesOnChannel(message(deny)))
          t.equal(denied.status, 422, `deny: ${name}: ${denied.body.slice(0, 300)}`)
          t.match(JSON.parse(denied.body), { code: 'RESULT_NOT_JSON', message: prefix + words, backend: 'nsjail' }, `deny: ${name}`)
          const honest = JSON.parse((await execute(port, JSON.stringify({ script: `def main():\n    ${harness}\n` }))).body)
          t.equal(honest.code, 'RESULT_NOT_JSON', `the harness refuses ${name} too`)
          if (!name.startsWith('a float')) t.equal(honest.message, prefix + words, `${name}: the same words`)
          const allowed = await execute(port, writesOnChannel(message(allow)))
          t.equal(allowed.status, 200, `allow: ${allowed.body.slice(0, 300)}`)
          t.same(JSON.parse(allowed.body).result, value, `allow: next to ${name}`)
        }
      }, () => {}, 5)
    })

    await t.test('deny: four connections of 96,331 unknown fields do not stall /healthz; allow: the same keys as input run', async t => {
      const fields = Array.from({ length: 96_331 }, (_, i) => `"f${i}":0`).join(',')
      const unknown = Buffer.from(`{"script":"def main(x):\\n    return len(x)\\n",${fields}}`)
      t.ok(unknown.length > 0.98 * MiB && unknown.length < 1.02 * MiB, `${unknown.length} bytes`)
      await underAttack(t, port, 'four connections sending them for 3 s', async () => {
        const until = Date.now() + 3000
        const replies: Reply[] = []
        await Promise.all([0, 1, 2, 3].map(async () => {
          while (Date.now() < until) replies.push(await execute(port, unknown))
        }))
        return replies
      }, replies => {
        t.ok(replies.length >= 8, `${replies.length} bodies refused`)
        const statuses = new Set(replies.map(reply => `${reply.status} ${String(JSON.parse(reply.body).message)}`))
        t.same([...statuses], ['400 unknown field "f0" in body; the fields are "script", "input", "stdin", "files", "limits"'], 'each refused, naming the first')
      })
      const allowed = await execute(port, `{"script":"def main(x):\\n    return len(x)\\n","input":{${fields}}}`)
      t.equal(allowed.status, 200, allowed.body.slice(0, 300))
      t.equal(JSON.parse(allowed.body).result, 96_331, `allow: main() got all the keys (${Math.round(allowed.ms)} ms)`)
    })
  })
}
