// The HTTP layer over a real socket, where inject() cannot go: oversized headers, bodies
// announced larger than the limit, and a client that stops sending.
import t from 'tap'
import { connect } from 'node:net'
import { startServer, type Target } from '../helpers/server.js'

/** Sends raw bytes and returns the status line of the reply (or '' if the server hung up). */
async function raw (target: Target, request: string, holdOpenMs = 0): Promise<string> {
  const { hostname, port } = new URL(target.url)
  return await new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => {
      socket.write(request)
      if (holdOpenMs === 0) return
      setTimeout(() => socket.end(), holdOpenMs)
    })
    let reply = ''
    socket.on('data', chunk => { reply += chunk.toString() })
    socket.on('close', () => resolve(reply.split('\r\n')[0] ?? ''))
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
})

t.test('a body announced larger than the limit is refused before it is sent', async t => {
  const status = await raw(target, 'POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\nConnection: close\r\n\r\n{"script":', 3000)
  t.match(status, /^HTTP\/1\.1 413/)
})

t.test('a chunked body that grows past the limit is cut off with 413', async t => {
  const chunk = 'a'.repeat(65_536)
  let request = 'POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n'
  for (let i = 0; i < 20; i++) request += `${chunk.length.toString(16)}\r\n${chunk}\r\n`
  const status = await raw(target, request, 3000)
  t.match(status, /^HTTP\/1\.1 413/)
})

t.test('the server still answers after all of that', async t => {
  t.equal((await fetch(`${target.url}/healthz`)).status, 200)
})
