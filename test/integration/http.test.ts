// The HTTP layer over a real socket, where inject() cannot go: oversized headers, bodies
// announced larger than the limit, and a client that stops sending.
import t from 'tap'
import { connect } from 'node:net'
import { loadConfig } from '../../src/config.js'
import { externalUrl, post, startServer, type Target } from '../helpers/server.js'

/** Sends raw bytes (the parts `pauseMs` apart) and returns the whole reply (or '' if the server
 *  hung up). */
async function raw (target: Target, request: string | string[], holdOpenMs = 0, pauseMs = 0): Promise<string> {
  const { hostname, port } = new URL(target.url)
  const parts = typeof request === 'string' ? [request] : request
  return await new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => {
      parts.forEach((part, i) => setTimeout(() => { if (!socket.destroyed) socket.write(part) }, i * pauseMs))
      if (holdOpenMs === 0) return
      setTimeout(() => socket.end(), holdOpenMs)
    })
    let reply = ''
    socket.on('data', chunk => { reply += chunk.toString() })
    socket.on('close', () => resolve(reply))
    socket.on('error', reject)
    socket.setTimeout(20_000, () => { socket.destroy(); resolve('timeout') })
  })
}

let target: Target
t.before(async () => { target = await startServer({ SANDBOX_BACKEND: 'nsjail' }) })
t.teardown(async () => { await target.close() })

t.test('headers over 16 KiB get 431', async t => {
  const status = await raw(target, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)
  t.match(status, /^HTTP\/1\.1 431/)
  t.match(status, /\r\n\r\n\{"statusCode":431,"error":"Request Header Fields Too Large","code":"HEADERS_TOO_LARGE","message":/, 'in the service\'s error shape')
  const id = /\r\nX-Request-Id: ([0-9a-f-]{36})\r\n/.exec(status)?.[1]
  t.ok(id, 'a request id in the header')
  t.match(status, new RegExp(`"requestId":"${String(id)}"\\}$`), 'and the same in the body')
})

t.test('a body announced larger than the limit is refused before it is sent', async t => {
  const status = await raw(target, 'POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\nConnection: close\r\n\r\n{"script":', 3000)
  t.match(status, /^HTTP\/1\.1 413/)
})

t.test('a chunked body that grows past the limit is cut off with 413', async t => {
  const chunk = 'a'.repeat(65_536)
  let request = 'POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n'
  const chunks = Math.ceil(loadConfig({}).LIMIT_BODY_BYTES / chunk.length) + 4 // past the default limit
  for (let i = 0; i < chunks; i++) request += `${chunk.length.toString(16)}\r\n${chunk}\r\n`
  const status = await raw(target, request, 3000)
  t.match(status, /^HTTP\/1\.1 413/)
})

t.test('a client that stops sending its body gets 408 once REQUEST_TIMEOUT_MS has passed; a slow one in time is served', async t => {
  if (externalUrl !== undefined) return t.pass('skipped: needs a server of its own with REQUEST_TIMEOUT_MS=1500')
  const strict = await startServer({ SANDBOX_BACKEND: 'nsjail', REQUEST_TIMEOUT_MS: '1500' })
  t.teardown(strict.close)
  const body = JSON.stringify({ script: 'def main():\n    return 1\n' })
  const head = `POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`
  const started = performance.now()
  const stalled = await raw(strict, head + body.slice(0, 10), 15_000)
  const waited = performance.now() - started
  t.match(stalled, /^HTTP\/1\.1 408/, 'the stalled body')
  t.match(stalled, /"code":"REQUEST_TIMEOUT","message":"the request was not received in full within REQUEST_TIMEOUT_MS \(1500 ms\)"/)
  t.ok(waited < 10_000, `answered within seconds of the timeout, not at Node's 30 s check (${Math.round(waited)} ms)`)
  const slow = await raw(strict, [head, body.slice(0, 10), body.slice(10)], 5_000, 400)
  t.match(slow, /^HTTP\/1\.1 200/, 'a body sent in parts within the timeout')
  const long = await post(strict, 'import time\ndef main():\n    time.sleep(2.5)\n    return 1\n')
  t.equal(long.status, 200, 'a run longer than REQUEST_TIMEOUT_MS is not cut: the timeout covers receiving the request only')
})

t.test('malformed HTTP gets 400 INVALID_REQUEST in the service\'s error shape', async t => {
  const reply = await raw(target, 'NOT HTTP AT ALL\r\n\r\n')
  t.match(reply, /^HTTP\/1\.1 400/)
  t.match(reply, /"code":"INVALID_REQUEST","message":"malformed HTTP request"/)
})

t.test('the server still answers after all of that', async t => {
  t.equal((await fetch(`${target.url}/healthz`)).status, 200)
})
