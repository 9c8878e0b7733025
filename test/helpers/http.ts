// Plain HTTP from a test, below any client library: one request with its timing, and a request
// whose reply is read only as far as its first bytes (a client that stops reading).
import { once } from 'node:events'
import { request as httpRequest, type Agent, type IncomingHttpHeaders } from 'node:http'
import { connect, type Socket } from 'node:net'

export interface Reply { status: number, headers: IncomingHttpHeaders, body: string, ms: number }

/** One request over `agent` (a keep-alive connection made earlier) or a connection of its own. */
export async function call (port: number, method: string, path: string, options: { body?: string | Buffer, agent?: Agent, localAddress?: string } = {}): Promise<Reply> {
  const started = performance.now()
  return await new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      method,
      path,
      agent: options.agent ?? false,
      localAddress: options.localAddress,
      headers: options.body === undefined ? {} : { 'content-type': 'application/json' }
    }, res => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), ms: performance.now() - started }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

/** Sends raw HTTP on a connection of its own and reads the first bytes of the reply, then stops
 *  reading (the socket is paused). */
export async function firstBytes (port: number, raw: string, localAddress?: string): Promise<{ socket: Socket, first: Buffer }> {
  const socket = connect({ port, host: '127.0.0.1', localAddress })
  socket.on('error', () => {})
  await once(socket, 'connect')
  socket.write(raw)
  const first = await new Promise<Buffer>(resolve => {
    const onData = (chunk: Buffer): void => {
      socket.pause()
      socket.off('data', onData)
      resolve(chunk)
    }
    socket.on('data', onData)
  })
  return { socket, first }
}
