// Client connections cannot hurt the server process: their number stays below the descriptor
// limit (with descriptors kept for sandboxes), a reply that stops moving is cut, and the bytes of
// replies a client has not read are bounded per caller and in total.
//
// Descriptors. Node raises the soft RLIMIT_NOFILE to the hard one at start; idle connections up
// to it left no descriptor to start a sandbox with (a spawn failed with EMFILE). The cap on
// connections (server.maxConnections: more are closed as soon as they are accepted) keeps a
// reserve for everything else, counted on this machine (ls /proc/PID/fd of a server):
//  - fixed, RESERVE_FIXED = 64: an idle server holds 21 (unshare) to 25 (nsjail with 2 warm jails:
//    4 of those are the jails') descriptors: stdio, epoll and eventfds, libuv's signal pipes and
//    its spare descriptor for EMFILE, the listening socket, the log; a spawn holds 10 more for an
//    instant (both ends of its 4 pipes, and the pipe that reports a failed exec; spawns are
//    synchronous, one at a time); a re-probe, up to 8 (a warm jail being measured, then one
//    serving its canaries: 2 each, and a cold canary: 4). 25 + 10 + 8 = 43, and 21 spare (a Redis
//    connection, a keys file being read, DNS).
//  - per execution slot, RESERVE_PER_SLOT = 16: a cold run holds 4 (one end of each pipe), a
//    warm jail 2, and a slot has two jails during a hand-over: 8, twice over.
// A connection holds its socket and at most one file more: a static page's reply streams from
// its file, which stays open while the client does not read (pipelining is refused below, so a
// connection has one reply at a time). The cap is thus (limit - reserve) / 2.
//
// Unread replies. A reply counts from when it is sent until 'finish' (all of it handed to the
// kernel) or 'close'. A client that sends requests and never reads the replies held 24-34 MiB of
// server memory per ~20 MiB reply, without bound. Over UNREAD_REPLY_BYTES_PER_CALLER a caller's
// new runs are refused 429, over UNREAD_REPLY_BYTES everyone's are refused 503. A bound checked
// when a run is asked for, not when its reply is sent: replies of runs already admitted (within
// the caller's share of slots and queue) still count, and go past it by as much.
//
// Stalled replies. A large reply is handed to the socket REPLY_CHUNK_BYTES at a time (a string is
// not copied whole: each piece is made bytes when the socket takes it), so that its progress
// shows: a piece is asked for only once the ones before it left for the kernel. A reply that makes
// none for REPLY_TIMEOUT_MS (its client stopped reading, or reads less than a piece in that time)
// has its connection destroyed and its bytes freed. The clock starts when the reply is sent: a
// long run, or a keep-alive connection between requests, is never timed by it.
//
// Pipelining. Node parses every request a packet holds and starts each at once, whatever the
// replies before it are doing: one connection sending a thousand requests for a page held a
// thousand open files. A request that comes before the reply to the previous one on its
// connection was sent closes that connection, and the rest of its batch is not handled.
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { Readable, Transform, pipeline } from 'node:stream'
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { UnreadRepliesBusyError, UnreadRepliesError } from '../errors/errors.js'
import { callerAddress, type Tenant } from './access.js'

export interface ConnectionsOptions {
  /** MAX_CONNECTIONS; undefined: derived from the descriptor limit. */
  maxConnections: number | undefined
  /** Execution slots: each needs descriptors of its own, kept in reserve. */
  concurrency: number
  replyTimeoutMs: number
  unreadReplyBytes: number
  unreadReplyBytesPerCaller: number
  /** Where the descriptor limit is read (tests point it elsewhere). */
  limitsFile?: string
  /** At most one warning of a kind in this long (ms; tests shorten it). */
  warnIntervalMs?: number
}

/** Descriptors kept for the process itself, and for each execution slot (see above). */
export const RESERVE_FIXED = 64
export const RESERVE_PER_SLOT = 16
/** What one connection may hold: its socket and the file of a static page's reply. */
export const DESCRIPTORS_PER_CONNECTION = 2
/** Size of the pieces a large reply is handed to its socket in: its progress is seen piece by piece. */
export const REPLY_CHUNK_BYTES = 64 * 1024
/** At most one warning of a kind in this long: a flood must not flood the log too. */
export const WARN_INTERVAL_MS = 10_000

/** The soft limit on open files in /proc/<pid>/limits' text; undefined when absent or unlimited. */
export function softDescriptorLimit (limits: string): number | undefined {
  const soft = /^Max open files\s+(\d+)\s/m.exec(limits)?.[1]
  return soft === undefined ? undefined : Number(soft)
}

export interface ConnectionPlan {
  /** undefined: no cap (the limit could not be read). */
  maxConnections: number | undefined
  /** Descriptors kept for the process and its sandboxes. */
  reserve: number
  /** The soft RLIMIT_NOFILE, when known. */
  descriptorLimit: number | undefined
  /** Why the cap is what it is, for the start-up log. */
  reason: string
  /** Set when the cap leaves the sandboxes too few descriptors. */
  warning?: string
}

export function connectionPlan (configured: number | undefined, descriptorLimit: number | undefined, concurrency: number): ConnectionPlan {
  const reserve = RESERVE_FIXED + RESERVE_PER_SLOT * concurrency
  const reserveText = `${reserve} descriptors kept for the process and its sandboxes (${RESERVE_FIXED} + ${RESERVE_PER_SLOT} per slot x ${concurrency})`
  const room = descriptorLimit === undefined ? undefined : Math.floor((descriptorLimit - reserve) / DESCRIPTORS_PER_CONNECTION)
  if (configured !== undefined) {
    return {
      maxConnections: configured,
      reserve,
      descriptorLimit,
      reason: 'MAX_CONNECTIONS',
      ...(room !== undefined && configured > room
        ? { warning: `MAX_CONNECTIONS (${configured}) is over the ${room} connections the descriptor limit (${descriptorLimit}) allows with ${reserveText}: idle connections can leave a run no descriptor (it is then refused 503 BUSY)` }
        : {})
    }
  }
  if (room === undefined) {
    return { maxConnections: undefined, reserve, descriptorLimit, reason: 'the descriptor limit could not be read: connections are not capped', warning: 'the descriptor limit could not be read (/proc/self/limits): connections are not capped; set MAX_CONNECTIONS' }
  }
  return {
    maxConnections: Math.max(1, room),
    reserve,
    descriptorLimit,
    reason: `the descriptor limit (${descriptorLimit}) less ${reserveText}, halved (a connection may hold a file besides its socket)`,
    ...(room < 1 ? { warning: `the descriptor limit (${descriptorLimit}) leaves no room for connections after ${reserveText}: raise it (ulimit -n)` } : {})
  }
}

/** The bytes of replies sent and not yet handed to the kernel, by caller and in total. */
export class UnreadReplies {
  private readonly byCaller = new Map<string, number>()
  private all = 0

  get total (): number {
    return this.all
  }

  held (caller: string): number {
    return this.byCaller.get(caller) ?? 0
  }

  /** Counts `bytes` for `caller`; the function returned uncounts them, once however often it is called. */
  hold (caller: string, bytes: number): () => void {
    this.all += bytes
    this.byCaller.set(caller, this.held(caller) + bytes)
    let held = true
    return () => {
      if (!held) return
      held = false
      this.all -= bytes
      const left = this.held(caller) - bytes
      if (left > 0) this.byCaller.set(caller, left)
      else this.byCaller.delete(caller)
    }
  }
}

/** `body` handed out REPLY_CHUNK_BYTES at a time (a string's never between the two halves of a
 *  surrogate pair), each piece of a string made bytes only when it is asked for: the reply is held
 *  once, as it is. `progress` hears each piece asked for, which happens only once the previous ones
 *  have left for the kernel (the socket applies backpressure). */
function chunked (body: string | Buffer, progress: () => void): Readable {
  let offset = 0
  return new Readable({
    read () {
      progress()
      let end = Math.min(offset + REPLY_CHUNK_BYTES, body.length)
      if (typeof body === 'string' && end < body.length && isHighSurrogate(body.charCodeAt(end - 1))) end--
      this.push(end === offset ? null : typeof body === 'string' ? body.slice(offset, end) : body.subarray(offset, end))
      offset = end
    }
  })
}

function isHighSurrogate (code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff
}

/** `source` passed through; `progress` hears each piece that goes on (a file's, 64 KiB). */
function metered (source: NodeJS.ReadableStream, progress: () => void): Transform {
  const meter = new Transform({
    transform (chunk: Buffer, _encoding, done) {
      progress()
      done(null, chunk)
    }
  })
  // An error on either side destroys both: the file is closed whatever ends the reply.
  pipeline(source, meter, () => {})
  return meter
}

function isStream (payload: unknown): payload is NodeJS.ReadableStream {
  return typeof payload === 'object' && payload !== null && typeof (payload as { pipe?: unknown }).pipe === 'function'
}

/** Who a reply is held for: the caller, as the rate limit and the slot shares count it. */
function callerOf (request: FastifyRequest): string {
  // None yet when the request was refused before its key was read (a 401).
  return (request.tenant as Tenant | null)?.id ?? `address:${callerAddress(request.ip, request.socket.remoteAddress)}`
}

export default fp<ConnectionsOptions>(async function connections (app, options) {
  const log = app.log
  const lastWarned = new Map<string, number>()
  const suppressed = new Map<string, number>()
  /** A warning of this kind, unless one was logged in the last WARN_INTERVAL_MS (then counted). */
  const warnSometimes = (kind: string, facts: Record<string, unknown>, message: string): void => {
    const now = Date.now()
    if (now - (lastWarned.get(kind) ?? -Infinity) < (options.warnIntervalMs ?? WARN_INTERVAL_MS)) {
      suppressed.set(kind, (suppressed.get(kind) ?? 0) + 1)
      return
    }
    lastWarned.set(kind, now)
    const alike = suppressed.get(kind) ?? 0
    suppressed.delete(kind)
    log.warn({ ...facts, ...(alike > 0 ? { alikeSinceLastWarning: alike } : {}) }, message)
  }

  // 1. Connections stay below the descriptor limit, with a reserve for sandboxes.
  let limits: string | undefined
  try {
    limits = readFileSync(options.limitsFile ?? '/proc/self/limits', 'utf8')
  } catch {
    limits = undefined // no /proc: connectionPlan says what that means
  }
  const plan = connectionPlan(options.maxConnections, limits === undefined ? undefined : softDescriptorLimit(limits), options.concurrency)
  const server = app.server
  if (plan.maxConnections !== undefined) server.maxConnections = plan.maxConnections
  log.info({ maxConnections: plan.maxConnections ?? null, descriptorLimit: plan.descriptorLimit ?? null, descriptorReserve: plan.reserve },
    `client connections: at most ${plan.maxConnections ?? 'unlimited'} (${plan.reason}); more are closed as soon as they are accepted`)
  if (plan.warning !== undefined) log.warn(plan.warning)
  server.on('drop', (data?: { remoteAddress?: string }) => {
    warnSometimes('drop', { remoteAddress: data?.remoteAddress, maxConnections: plan.maxConnections }, `a connection was closed at once: ${String(plan.maxConnections)} are open (MAX_CONNECTIONS)`)
  })
  // libuv answers an accept() that fails with EMFILE by closing the pending connections with a
  // spare descriptor; when even that fails the server emits 'error', which would end the process.
  server.once('listening', () => {
    server.on('error', (error: NodeJS.ErrnoException) => {
      warnSometimes(`server-${String(error.code)}`, { err: { message: error.message, code: error.code } }, 'the server could not accept a connection; it keeps serving the ones it has')
    })
  })

  // 2. One request at a time per connection: pipelined requests would each hold a reply (and a
  // page's file) before the previous reply has left, however many a client sends in one packet.
  const answering = new WeakSet<Socket>()
  server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const socket = request.socket
    if (answering.has(socket)) {
      warnSometimes('pipelined', { remoteAddress: socket.remoteAddress }, 'a client sent a request before the reply to its previous one was sent (HTTP pipelining): its connection is closed')
      socket.destroy()
      return
    }
    answering.add(socket)
    const end = (): void => { answering.delete(socket) }
    response.once('finish', end)
    response.once('close', end)
  })
  // The rest of the batch is still parsed from the packet that brought it, and a request each is
  // emitted: those of a closed connection are not handled at all (no handler runs, no file opens).
  app.addHook('onRequest', async (request, reply) => {
    if (request.raw.socket.destroyed) reply.hijack()
  })

  // 3. Unread replies are bounded, per caller and in total, and a stalled one is cut.
  const unread = new UnreadReplies()
  app.addHook('onRequest', async request => {
    // The routes that run scripts (/execute, /mcp) say so in their config.
    if (request.routeOptions.config.runsScripts !== true) return
    const caller = callerOf(request)
    const held = unread.held(caller)
    if (held > options.unreadReplyBytesPerCaller) {
      app.metrics.recordShed('caller_unread_replies')
      throw new UnreadRepliesError(held, options.unreadReplyBytesPerCaller)
    }
    if (unread.total > options.unreadReplyBytes) {
      app.metrics.recordShed('unread_replies')
      warnSometimes('unread', { unreadReplyBytes: unread.total, limit: options.unreadReplyBytes }, 'runs refused 503 BUSY: the replies clients have not read are over UNREAD_REPLY_BYTES')
      throw new UnreadRepliesBusyError()
    }
  })

  app.addHook('onSend', async (request, reply: FastifyReply, payload) => {
    const response = reply.raw
    // Its client is gone already: nothing will be held.
    if (response.destroyed) return payload
    const head = request.method === 'HEAD'
    const text = typeof payload === 'string' || Buffer.isBuffer(payload)
    const bytes = typeof payload === 'string' ? Buffer.byteLength(payload) : Buffer.isBuffer(payload) ? payload.length : Number(reply.getHeader('content-length') ?? 0) || 0
    const release = unread.hold(callerOf(request), bytes)
    const stalled = setTimeout(() => {
      warnSometimes('stalled', { reqId: request.id, replyBytes: bytes, replyTimeoutMs: options.replyTimeoutMs },
        `a reply made no progress for ${options.replyTimeoutMs} ms (REPLY_TIMEOUT_MS; its client stopped reading): its connection is closed`)
      response.destroy()
    }, options.replyTimeoutMs)
    stalled.unref()
    const done = (): void => {
      clearTimeout(stalled)
      release()
    }
    response.once('finish', done)
    response.once('close', done)
    const progress = (): void => { stalled.refresh() }
    if (head) return payload
    if (isStream(payload)) return metered(payload, progress)
    if (!text || bytes <= REPLY_CHUNK_BYTES) return payload
    // A large reply goes out in pieces, its progress seen piece by piece. The length is set before
    // the stream is returned: Fastify sends a stream's headers as they are.
    reply.header('content-length', bytes)
    return chunked(payload, progress)
  })

  // A sandbox that could not start for lack of descriptors or processes is answered 503 BUSY
  // (backends/launch.ts): the operator needs to know why.
  app.addHook('onError', async (request, _reply, error) => {
    // SandboxStartError, the one BUSY with the errno as its cause (not `instanceof`: @fastify/error
    // compares by code, so every BUSY would match; found by the load command's log).
    if (error.code !== 'BUSY' || error.cause === undefined) return
    request.log.warn({ err: error.cause, maxConnections: plan.maxConnections, descriptorLimit: plan.descriptorLimit },
      'a sandbox could not be started (out of descriptors or processes): answered 503 BUSY')
  })
}, { name: 'connections', fastify: '5.x', dependencies: ['access', 'metrics'] })
