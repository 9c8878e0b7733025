// The connections plugin (src/plugins/connections.ts), over real sockets: the cap on connections
// and its arithmetic, refused pipelining, the bounds on unread replies (per caller and in total),
// stalled replies cut while slow readers, long handlers and keep-alive connections are not, and the
// log of a sandbox that could not start. Most tests use a bare Fastify with stand-ins for the access
// and metrics plugins (short timeouts, callers named by a header); a few the whole app.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { once } from 'node:events'
import { request as httpRequest } from 'node:http'
import { connect, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import connections, { DESCRIPTORS_PER_CONNECTION, REPLY_CHUNK_BYTES, RESERVE_FIXED, RESERVE_PER_SLOT, UnreadReplies, connectionPlan, softDescriptorLimit, type ConnectionsOptions } from '../../src/plugins/connections.js'
import { SandboxStartError } from '../../src/errors/errors.js'
import { build, execute } from '../helpers/app.js'
import { FakeBackend } from '../helpers/fake-backend.js'
import { firstBytes } from '../helpers/http.js'

const MiB = 1024 * 1024
/** Bigger than what the kernel takes of a reply its client does not read (~4 MiB on loopback). */
const BIG = 12 * MiB

t.test('the soft descriptor limit is read from /proc/<pid>/limits', async t => {
  const line = (soft: string, hard: string): string => `Limit                     Soft Limit           Hard Limit           Units     \nMax open files            ${soft.padEnd(21)}${hard.padEnd(21)}files     \n`
  t.equal(softDescriptorLimit(line('1024', '524288')), 1024)
  t.equal(softDescriptorLimit(line('unlimited', 'unlimited')), undefined, 'unlimited: no number')
  t.equal(softDescriptorLimit('Max processes 10 10 processes\n'), undefined, 'no such line')
})

t.test('the cap: (limit - reserve) / 2 by default, MAX_CONNECTIONS when set; each doubtful case warns', async t => {
  t.equal(RESERVE_FIXED + RESERVE_PER_SLOT * 2, 96)
  t.equal(DESCRIPTORS_PER_CONNECTION, 2)
  const table: Array<{ configured?: number, limit?: number, concurrency: number, max: number | undefined, warns: RegExp | undefined }> = [
    { limit: 256, concurrency: 2, max: 80, warns: undefined },
    { limit: 1_048_576, concurrency: 8, max: (1_048_576 - 192) / 2, warns: undefined },
    { limit: 96, concurrency: 2, max: 1, warns: /leaves no room for connections after 96 descriptors/ },
    { limit: undefined, concurrency: 2, max: undefined, warns: /could not be read.*set MAX_CONNECTIONS/ },
    { configured: 50, limit: 256, concurrency: 2, max: 50, warns: undefined },
    { configured: 81, limit: 256, concurrency: 2, max: 81, warns: /MAX_CONNECTIONS \(81\) is over the 80 connections/ },
    { configured: 500, limit: undefined, concurrency: 2, max: 500, warns: undefined }
  ]
  for (const { configured, limit, concurrency, max, warns } of table) {
    const plan = connectionPlan(configured, limit, concurrency)
    const name = `MAX_CONNECTIONS ${String(configured)}, limit ${String(limit)}, ${concurrency} slots`
    t.equal(plan.maxConnections, max, name)
    if (warns === undefined) t.equal(plan.warning, undefined, `${name}: no warning`)
    else t.match(plan.warning, warns, `${name}: warns`)
  }
  t.match(connectionPlan(undefined, 256, 2).reason, 'the descriptor limit (256) less 96 descriptors kept for the process and its sandboxes (64 + 16 per slot x 2), halved')
})

t.test('unread bytes are counted per caller and in total, and uncounted once', async t => {
  const unread = new UnreadReplies()
  const a1 = unread.hold('a', 10)
  const a2 = unread.hold('a', 5)
  const b = unread.hold('b', 7)
  t.same([unread.held('a'), unread.held('b'), unread.total], [15, 7, 22])
  a1()
  a1()
  t.same([unread.held('a'), unread.total], [5, 12], 'released once, however often called')
  a2()
  b()
  t.same([unread.held('a'), unread.held('b'), unread.total], [0, 0, 0])
})

interface Bare {
  app: FastifyInstance
  port: number
  logs: Array<Record<string, any>>
  sheds: string[]
}

/** The plugin on a bare Fastify: the access stand-in names the caller by the x-caller header
 *  (none: no tenant), the metrics stand-in records the sheds. */
async function bare (t: Test, options: Partial<ConnectionsOptions>, routes: (app: FastifyInstance) => void = () => {}): Promise<Bare> {
  const logs: Array<Record<string, any>> = []
  const sheds: string[] = []
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { logs.push(JSON.parse(line) as Record<string, any>) } } } })
  await app.register(fp(async app => {
    app.decorateRequest('tenant', null as never)
    app.addHook('onRequest', async request => {
      const caller = request.headers['x-caller']
      if (typeof caller === 'string') request.tenant = { id: `key:${caller}` } as never
    })
  }, { name: 'access' }))
  await app.register(fp(async app => { app.decorate('metrics', { recordShed: (reason: string) => sheds.push(reason) } as never) }, { name: 'metrics' }))
  await app.register(connections, {
    maxConnections: undefined,
    concurrency: 2,
    replyTimeoutMs: 400,
    unreadReplyBytes: 4 * BIG,
    unreadReplyBytesPerCaller: BIG,
    ...options
  })
  // The routes that run scripts, as routes/execute.ts and routes/mcp.ts mark them.
  for (const url of ['/execute', '/mcp']) {
    app.post(url, { config: { runsScripts: true } }, async request => 'x'.repeat(Number((request.body as { bytes?: number } | undefined)?.bytes ?? 10)))
  }
  routes(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await app.close() })
  return { app, port: (app.server.address() as { port: number }).port, logs, sheds }
}

interface Reply { status: number, headers: Record<string, string | string[] | undefined>, body: Buffer, ms: number }

async function call (port: number, method: string, path: string, options: { caller?: string, json?: unknown, headers?: Record<string, string> } = {}): Promise<Reply> {
  const started = performance.now()
  return await new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...options.headers }
    if (options.caller !== undefined) headers['x-caller'] = options.caller
    if (options.json !== undefined) headers['content-type'] = 'application/json'
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false }, res => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), ms: performance.now() - started }))
    })
    req.on('error', reject)
    req.end(options.json === undefined ? undefined : JSON.stringify(options.json))
  })
}

/** Sends raw HTTP on a connection of its own, reads the first bytes of the reply, then stops. */
interface Unread { socket: Socket, status: number, head: string, /** Of the body, what came with the head. */ bodyBytes: number }
async function sendWithoutReading (port: number, raw: string): Promise<Unread> {
  const { socket, first } = await firstBytes(port, raw)
  const head = first.toString('latin1')
  return { socket, status: Number(head.slice(9, 12)), head, bodyBytes: first.length - head.indexOf('\r\n\r\n') - 4 }
}

const post = (bytes: number, caller: string): string => {
  const body = JSON.stringify({ bytes })
  return `POST /execute HTTP/1.1\r\nhost: x\r\nx-caller: ${caller}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`
}

/** Reads the rest of `unread`'s body (of `total` bytes) at `bytesPerSecond` at most, until all of
 *  it came or the connection closed: the bytes of the body that came. */
async function readAll (unread: Unread, total: number, bytesPerSecond = Infinity): Promise<number> {
  const { socket } = unread
  const read = { bytes: unread.bodyBytes }
  socket.on('data', (chunk: Buffer) => {
    read.bytes += chunk.length
    if (bytesPerSecond === Infinity) return
    socket.pause()
    setTimeout(() => socket.resume(), chunk.length / bytesPerSecond * 1000)
  })
  socket.resume()
  const closed = once(socket, 'close')
  while (read.bytes < total && !socket.destroyed) await Promise.race([closed, sleep(20)])
  return read.bytes
}

t.test('the whole app: the cap is set from the descriptor limit, or MAX_CONNECTIONS, and said at start', async t => {
  const { app, logs } = await build(t)
  const line = logs.find(l => typeof l.maxConnections === 'number')
  const limit = Number(line?.descriptorLimit)
  t.ok(limit > 0, 'the start-up line')
  t.equal(app.server.maxConnections, Math.floor((limit - (64 + 16 * 4)) / 2), 'CONCURRENCY 4: (limit - 128) / 2')
  t.match(line?.msg, /client connections: at most \d+ \(the descriptor limit \(\d+\) less 128 descriptors kept/)
  const set = await build(t, { env: { MAX_CONNECTIONS: '123' } })
  t.equal(set.app.server.maxConnections, 123)
  t.notOk(set.logs.some(l => l.level === 40 && /MAX_CONNECTIONS/.test(String(l.msg))), 'within the limit: no warning')
  const over = await build(t, { env: { MAX_CONNECTIONS: '1000000' } })
  t.ok(over.logs.some(l => l.level === 40 && /MAX_CONNECTIONS \(1000000\) is over/.test(String(l.msg))), 'over it: a warning')
})

t.test('without a readable limit, connections are not capped, and the log says so', async t => {
  const { app, logs } = await bare(t, { limitsFile: '/nonexistent/limits' })
  t.equal(app.server.maxConnections, undefined)
  t.ok(logs.some(l => l.level === 40 && /could not be read.*set MAX_CONNECTIONS/.test(String(l.msg))))
})

t.test('deny: a connection past the cap is closed at once; the warnings are rate-limited', async t => {
  const { port, logs } = await bare(t, { maxConnections: 1, warnIntervalMs: 300 })
  const first = connect(port, '127.0.0.1')
  await once(first, 'connect')
  t.teardown(() => first.destroy())
  const refused = async (): Promise<boolean> => {
    const socket = connect(port, '127.0.0.1')
    socket.on('error', () => {})
    await once(socket, 'close')
    return true
  }
  t.ok(await refused(), 'a second one is closed')
  t.ok(await refused(), 'and a third')
  const drops = (): Array<Record<string, any>> => logs.filter(l => /a connection was closed at once/.test(String(l.msg)))
  t.equal(drops().length, 1, 'one warning in the interval')
  await sleep(350)
  t.ok(await refused())
  t.equal(drops().length, 2, 'the next after it')
  t.equal(drops()[1]?.alikeSinceLastWarning, 1, 'counting the ones left out')
  first.destroy()
  await sleep(50)
  t.equal((await call(port, 'POST', '/execute')).status, 200, 'allow: once it closed, a connection is served')
})

t.test('a failed accept is logged, and the server keeps serving', async t => {
  const { app, port, logs } = await bare(t, {})
  app.server.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', syscall: 'accept' }))
  t.ok(logs.some(l => /could not accept a connection/.test(String(l.msg)) && l.err?.code === 'EMFILE'))
  t.equal((await call(port, 'POST', '/execute')).status, 200)
})

t.test('deny: a request sent before the previous reply was (pipelining) closes the connection; allow: one after another', async t => {
  let handled = 0
  const { port, logs } = await bare(t, {}, app => {
    app.get('/slow', async () => { handled++; await sleep(200); return 'slow' })
  })
  const socket = connect(port, '127.0.0.1')
  socket.on('error', () => {})
  await once(socket, 'connect')
  let received = ''
  socket.on('data', (chunk: Buffer) => { received += chunk.toString() })
  socket.write('GET /slow HTTP/1.1\r\nhost: x\r\n\r\nGET /slow HTTP/1.1\r\nhost: x\r\n\r\n')
  await once(socket, 'close')
  t.equal(received, '', 'closed before any reply')
  t.equal(handled, 0, 'neither request was handled')
  t.ok(logs.some(l => /HTTP pipelining/.test(String(l.msg))))

  const keepAlive = connect(port, '127.0.0.1')
  await once(keepAlive, 'connect')
  t.teardown(() => keepAlive.destroy())
  let text = ''
  keepAlive.on('data', (chunk: Buffer) => { text += chunk.toString() })
  for (let i = 1; i <= 3; i++) {
    keepAlive.write('GET /slow HTTP/1.1\r\nhost: x\r\n\r\n')
    while (text.split('\r\n\r\nslow').length - 1 < i) await sleep(10)
  }
  t.equal(text.split('HTTP/1.1 200').length - 1, 3, 'three replies in turn on one connection')
})

t.test('deny: a caller holding more than UNREAD_REPLY_BYTES_PER_CALLER of unread replies gets 429; another caller is served', async t => {
  const { port, sheds } = await bare(t, { unreadReplyBytesPerCaller: BIG - 1, replyTimeoutMs: 60_000 })
  const held = await sendWithoutReading(port, post(BIG, 'hog'))
  t.equal(held.status, 200)
  t.match(held.head, `content-length: ${BIG}`, 'the length of a large reply is sent')
  t.notMatch(held.head, /transfer-encoding/i)
  const refused = await call(port, 'POST', '/execute', { caller: 'hog', json: { bytes: 10 } })
  t.equal(refused.status, 429)
  t.match(JSON.parse(refused.body.toString()), { code: 'CONCURRENCY_LIMITED', message: `this caller has ${BIG} bytes of replies it has not read, over the ${BIG - 1} allowed (UNREAD_REPLY_BYTES_PER_CALLER); read them (or close those connections), then retry` })
  t.same(sheds, ['caller_unread_replies'])
  t.equal((await call(port, 'POST', '/execute', { caller: 'other', json: { bytes: 10 } })).status, 200, 'another caller is served')
  t.equal((await call(port, 'POST', '/mcp', { caller: 'hog', json: { bytes: 10 } })).status, 429, '/mcp too (it runs scripts)')
  t.equal((await call(port, 'GET', '/nope', { caller: 'hog' })).status, 404, 'only the routes that run scripts are refused')
  // Allow: once it reads, it is served again.
  t.equal(await readAll(held, BIG), BIG)
  await sleep(20)
  t.equal((await call(port, 'POST', '/execute', { caller: 'hog', json: { bytes: 10 } })).status, 200, 'allow: its replies read, the caller is served again')
  held.socket.destroy()
})

t.test('deny: all callers together over UNREAD_REPLY_BYTES: 503 BUSY for everyone', async t => {
  const { port, sheds, logs } = await bare(t, { unreadReplyBytes: BIG + 1, replyTimeoutMs: 60_000 })
  const one = await sendWithoutReading(port, post(BIG, 'a'))
  t.equal((await call(port, 'POST', '/execute', { caller: 'b', json: { bytes: 10 } })).status, 200, 'not over yet')
  const two = await sendWithoutReading(port, post(BIG, 'b'))
  t.equal(two.status, 200)
  const refused = await call(port, 'POST', '/execute', { caller: 'c', json: { bytes: 10 } })
  t.equal(refused.status, 503)
  t.match(JSON.parse(refused.body.toString()), { code: 'BUSY', message: 'the server holds too many replies its clients have not read yet; nothing ran; retry later' })
  t.same(sheds, ['unread_replies'])
  t.ok(logs.some(l => l.unreadReplyBytes === 2 * BIG && /UNREAD_REPLY_BYTES/.test(String(l.msg))), 'the log says how much')
  one.socket.destroy()
  two.socket.destroy()
  await sleep(50)
  t.equal((await call(port, 'POST', '/execute', { caller: 'c', json: { bytes: 10 } })).status, 200, 'allow: their connections closed, the bytes are freed')
})

t.test('deny: a reply that makes no progress for REPLY_TIMEOUT_MS is cut and its bytes freed', async t => {
  const { port, logs } = await bare(t, { unreadReplyBytesPerCaller: BIG - 1, replyTimeoutMs: 300 })
  const held = await sendWithoutReading(port, post(BIG, 'hog'))
  const started = performance.now()
  t.equal((await call(port, 'POST', '/execute', { caller: 'hog', json: { bytes: 10 } })).status, 429, 'held')
  await sleep(600)
  const bytes = await readAll(held, BIG)
  t.ok(bytes < BIG - 4 * MiB, `cut: ${(bytes / MiB).toFixed(1)} of ${BIG / MiB} MiB came (${Math.round(performance.now() - started)} ms)`)
  t.ok(logs.some(l => /made no progress for 300 ms/.test(String(l.msg)) && l.replyBytes === BIG))
  t.equal((await call(port, 'POST', '/execute', { caller: 'hog', json: { bytes: 10 } })).status, 200, 'its bytes are freed')
})

t.test('allow: slow readers that keep reading, handlers longer than REPLY_TIMEOUT_MS and idle keep-alive connections are not cut', async t => {
  const { port } = await bare(t, { replyTimeoutMs: 300 }, app => {
    app.get('/long', async () => { await sleep(700); return 'late' })
  })
  const slow = await sendWithoutReading(port, post(BIG, 'slow'))
  const started = performance.now()
  t.equal(await readAll(slow, BIG, 12 * MiB), BIG, `all of it came at ~12 MiB/s (${Math.round(performance.now() - started)} ms)`)
  t.ok(performance.now() - started > 600, 'slower than REPLY_TIMEOUT_MS')
  slow.socket.destroy()

  const long = await call(port, 'GET', '/long')
  t.equal(long.body.toString(), 'late', `a handler of ${Math.round(long.ms)} ms`)

  const keepAlive = connect(port, '127.0.0.1')
  await once(keepAlive, 'connect')
  t.teardown(() => keepAlive.destroy())
  let text = ''
  keepAlive.on('data', (chunk: Buffer) => { text += chunk.toString() })
  keepAlive.write(post(10, 'k'))
  while (!text.endsWith('x'.repeat(10))) await sleep(10)
  await sleep(700)
  keepAlive.write(post(10, 'k'))
  while (text.split('HTTP/1.1 200').length < 3) await sleep(10)
  t.notOk(keepAlive.destroyed, 'an idle keep-alive connection is kept past REPLY_TIMEOUT_MS')
})

t.test('what is sent: large strings and buffers in pieces (surrogate pairs whole), streams metered, the rest as it is', async t => {
  // A surrogate pair across the first piece's end: split there, it would come back as two U+FFFD.
  const emoji = `${'a'.repeat(REPLY_CHUNK_BYTES - 1)}😀${'b'.repeat(REPLY_CHUNK_BYTES)}`
  const buffer = Buffer.alloc(3 * REPLY_CHUNK_BYTES + 5, 7)
  const { port } = await bare(t, { replyTimeoutMs: 300 }, app => {
    app.get('/emoji', async (_request, reply) => await reply.type('text/plain; charset=utf-8').send(emoji))
    app.get('/buffer', async (_request, reply) => await reply.type('application/octet-stream').send(buffer))
    app.get('/small-buffer', async (_request, reply) => await reply.type('application/octet-stream').send(Buffer.from('tiny')))
    app.get('/stream', async (_request, reply) => {
      reply.header('content-length', 8 * REPLY_CHUNK_BYTES)
      return await reply.type('application/octet-stream').send(Readable.from(Array.from({ length: 8 }, () => Buffer.alloc(REPLY_CHUNK_BYTES, 1))))
    })
    app.get('/stream-unsized', async (_request, reply) => await reply.type('text/plain').send(Readable.from(['one ', 'two'])))
    app.get('/empty', async (_request, reply) => await reply.code(204).send())
    app.get('/big', async () => 'z'.repeat(BIG))
  })
  const got = await call(port, 'GET', '/emoji')
  t.equal(got.body.toString('utf8'), emoji, 'the pair is whole')
  t.equal(got.headers['content-length'], String(Buffer.byteLength(emoji)))
  t.same((await call(port, 'GET', '/buffer')).body, buffer)
  t.equal((await call(port, 'GET', '/small-buffer')).body.toString(), 'tiny')
  const stream = await call(port, 'GET', '/stream')
  t.equal(stream.body.length, 8 * REPLY_CHUNK_BYTES)
  t.equal((await call(port, 'GET', '/stream-unsized')).body.toString(), 'one two')
  t.equal((await call(port, 'GET', '/empty')).status, 204)
  const head = await call(port, 'HEAD', '/big')
  t.equal(head.status, 200)
  t.equal(head.body.length, 0, 'HEAD: headers only')
  // A stream whose client does not read is cut like any reply.
  const held = await sendWithoutReading(port, 'GET /big HTTP/1.1\r\nhost: x\r\n\r\n')
  await sleep(700)
  t.ok(await readAll(held, BIG) < BIG - 4 * MiB, 'a stalled large reply is cut')
})

t.test('a reply whose client left before it was sent holds nothing; one without a caller counts as its address', async t => {
  let left: () => void = () => {}
  const gone = new Promise<void>(resolve => { left = resolve })
  const { port } = await bare(t, { unreadReplyBytesPerCaller: MiB, replyTimeoutMs: 60_000 }, app => {
    app.get('/after-leaving', async request => {
      request.raw.socket.once('close', left)
      await gone
      await sleep(20)
      return 'y'.repeat(2 * MiB)
    })
  })
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  socket.write('GET /after-leaving HTTP/1.1\r\nhost: x\r\nx-caller: leaver\r\n\r\n')
  await sleep(50)
  socket.destroy()
  await gone
  await sleep(100)
  t.equal((await call(port, 'POST', '/execute', { caller: 'leaver', json: { bytes: 10 } })).status, 200, 'nothing was held for it')

  // No tenant (refused before the access plugin named it): held for its address, which then is refused.
  const body = JSON.stringify({ bytes: BIG })
  const anonymous = await sendWithoutReading(port, `POST /execute HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`)
  t.equal(anonymous.status, 200)
  const again = await call(port, 'POST', '/execute', { json: { bytes: 10 } })
  t.equal(again.status, 429, 'the same address, refused')
  anonymous.socket.destroy()
})

t.test('the whole app: a sandbox that cannot start for lack of descriptors is 503 BUSY with Retry-After, and the log says why', async t => {
  const emfile = Object.assign(new Error('spawn nsjail EMFILE'), { code: 'EMFILE' })
  const { app, logs } = await build(t, { backends: [new FakeBackend('nsjail', { run: async () => { throw new SandboxStartError({ cause: emfile }) } })] })
  const reply = await execute(app)
  t.equal(reply.statusCode, 503)
  t.equal(reply.headers['retry-after'], '1')
  t.match(reply.json(), { code: 'BUSY', message: 'the server cannot start a sandbox right now; nothing ran; retry later' })
  const line = logs.find(l => /a sandbox could not be started/.test(String(l.msg)))
  t.match(line, { level: 40, err: { message: 'spawn nsjail EMFILE', code: 'EMFILE' } })
  const other = await build(t, { backends: [new FakeBackend('nsjail', { run: async () => { throw new Error('boom') } })] })
  t.equal((await execute(other.app)).statusCode, 500, 'any other failure stays ours, opaque')
  t.notOk(other.logs.some(l => /a sandbox could not be started/.test(String(l.msg))))
})
