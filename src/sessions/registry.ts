// The sessions this instance holds (docs/sessions.md): who opened each, when it ends, and that
// its calls come one at a time. A session is found only by its id and only by the caller that
// opened it: to anyone else it does not exist (404), whether it exists or not. One that ended is
// remembered for a while (its owner gets 410 and why); one that lives on another instance is
// named as such, so a misrouted call says what went wrong.
import { randomBytes } from 'node:crypto'
import type { BackendName } from '../config.js'
import type { SessionEnd, SessionSandbox } from '../backends/backend.js'
import { ShuttingDownError, SessionBusyError, SessionStartError, SessionEndedError, SessionNotFoundError, SessionsForbiddenError, SessionsFullError, SessionsLimitedError, SessionsUnavailableError } from '../errors/errors.js'

/** 24 random bytes: 192 bits, as base64url (32 characters). */
const ID_BYTES = 24
const ID = /^([a-z0-9][a-z0-9-]{0,31})\.([A-Za-z0-9_-]{32})$/
/** Ended sessions remembered for their owners, at most this many for at most this long. */
const ENDED_KEPT = 10_000
const ENDED_KEPT_MS = 24 * 3_600_000

/** Who asks: a tenant's id (its key, else its address), how many sessions it may hold, and the
 *  most memory and processes its key lets one run have (a session may not exceed them). */
export interface SessionCaller {
  readonly id: string
  readonly sessions: number
  readonly ceilings: { readonly memoryMb: number, readonly processes: number }
}

export interface SessionsOptions {
  instance: string
  max: number
  idleMs: number
  lifetimeMs: number
  memoryMiB: number
  /** LIMIT_PROCESSES: each session's processes. */
  processes: number
  /** LIMIT_MEMORY_MB_MAX, the server's own ceiling of a run's memory: a key whose ceiling is below
   *  it is held lower, and may open no session bigger than that. */
  memoryCeilingMb: number
  /** The backend that would host them, and how it opens one (undefined: it hosts none). */
  backend: () => { name: BackendName, open: (() => Promise<SessionSandbox>) | undefined } | undefined
  /** True from the start of a shutdown: no new session opens (503 SHUTTING_DOWN, as /execute). */
  draining: () => boolean
  /** Ended sessions remembered for their owners' 410 (default ENDED_KEPT; tests lower it). */
  endedKept?: number
  log?: (fields: Record<string, unknown>, message: string) => void
}

/** A session as GET /sessions/{id} describes it. */
export interface SessionInfo {
  id: string
  instance: string
  backend: BackendName
  createdAt: string
  lastCallAt: string | null
  expiresAt: string
  idleTimeoutMs: number
  lifetimeMs: number
  calls: number
  running: boolean
  memoryMiB: number
  memoryLimitMiB: number
}

interface Session {
  readonly id: string
  readonly owner: string
  readonly backend: BackendName
  readonly createdAt: number
  readonly sandbox: SessionSandbox
  lastCallAt: number | undefined
  /** When the idle timer was last armed: its expiry is this + SESSION_IDLE_MS. */
  idleFrom: number
  calls: number
  running: boolean
  idle: NodeJS.Timeout | undefined
  life: NodeJS.Timeout
  /** Why the server is ending it (idle, lifetime, deleted, shutdown), before its sandbox says so. */
  closing: string | undefined
}

interface Ended {
  owner: string
  at: number
  code: SessionEnd['code']
  message: string
}

export class SessionRegistry {
  private readonly open = new Map<string, Session>()
  private readonly ended = new Map<string, Ended>()
  /** Sessions being opened, counted against the limits before their sandbox exists. */
  private readonly opening = new Map<string, number>()
  private closed = false
  /** Sessions ended, by why: deleted, idle, lifetime, shutdown, or the code of the call that ended it. */
  readonly endedCounts: Record<string, number> = {}

  constructor (private readonly options: SessionsOptions) {}

  get size (): number {
    return this.open.size
  }

  get max (): number {
    return this.options.max
  }

  get instance (): string {
    return this.options.instance
  }

  /** SESSION_MEMORY_MB: every call of a session runs within it. */
  get memoryMiB (): number {
    return this.options.memoryMiB
  }

  private countOf (owner: string): number {
    let count = this.opening.get(owner) ?? 0
    for (const session of this.open.values()) if (session.owner === owner) count++
    return count
  }

  private get openingCount (): number {
    let count = 0
    for (const n of this.opening.values()) count += n
    return count
  }

  /** Throws why `caller` could not open a session now (draining, sessions off, not allowed, at its
   *  most, the instance full); returns the backend that opens it. Cheap: the route asks before
   *  it waits for a slot, and create() asks again once it has one. */
  admit (caller: SessionCaller): { name: BackendName, open: () => Promise<SessionSandbox> } {
    if (this.options.draining() || this.closed) throw new ShuttingDownError('it opens no new sessions')
    const backend = this.options.backend()
    if (this.options.max === 0 || backend?.open === undefined) {
      throw new SessionsUnavailableError(this.options.max === 0 ? 'SESSIONS_MAX is 0' : backend === undefined ? 'no sandbox backend passes its probe' : `its backend (${backend.name}) hosts none: only nsjail does`)
    }
    const { memoryMiB, processes, memoryCeilingMb } = this.options
    if (caller.sessions === 0) throw new SessionsForbiddenError('its share of sessions is 0 (its key\'s sessions=, else SESSIONS_PER_CALLER)')
    // A session's memory and processes are its jail's, the same for all callers: a key held below
    // them by its own ceilings would get more in a session than in a run (an outside review).
    if (caller.ceilings.memoryMb < Math.min(memoryMiB, memoryCeilingMb)) throw new SessionsForbiddenError(`its API key's memoryMb ceiling (${caller.ceilings.memoryMb}) is below a session's memory (SESSION_MEMORY_MB, ${memoryMiB})`)
    if (caller.ceilings.processes < processes) throw new SessionsForbiddenError(`its API key's processes ceiling (${caller.ceilings.processes}) is below a session's processes (LIMIT_PROCESSES, ${processes})`)
    if (this.countOf(caller.id) >= caller.sessions) throw new SessionsLimitedError(caller.sessions)
    if (this.open.size + this.openingCount >= this.options.max) throw new SessionsFullError(this.options.max)
    return { name: backend.name, open: backend.open }
  }

  /** Opens a session for `caller` (refused as admit() says). Its sandbox is a spare jail when one
   *  is ready (milliseconds), else a new one. */
  async create (caller: SessionCaller): Promise<SessionInfo> {
    const backend = this.admit(caller)
    this.opening.set(caller.id, (this.opening.get(caller.id) ?? 0) + 1)
    let sandbox: SessionSandbox
    try {
      sandbox = await backend.open()
    } catch (error) {
      // The server closed the jails while this one started: a shutdown, said as such.
      if (this.closed) throw new ShuttingDownError('it opens no new sessions')
      // Ours, not the caller's: a jail that would not start (the host short of something).
      this.options.log?.({ err: { message: (error as Error).message } }, 'a session\'s sandbox did not start')
      throw new SessionStartError()
    } finally {
      const left = (this.opening.get(caller.id) as number) - 1
      if (left === 0) this.opening.delete(caller.id)
      else this.opening.set(caller.id, left)
    }
    if (this.closed) {
      sandbox.close('the server is shutting down')
      throw new ShuttingDownError('it opens no new sessions')
    }
    const id = `${this.options.instance}.${randomBytes(ID_BYTES).toString('base64url')}`
    const now = Date.now()
    const session: Session = {
      id,
      owner: caller.id,
      backend: backend.name,
      createdAt: now,
      sandbox,
      lastCallAt: undefined,
      idleFrom: now,
      calls: 0,
      running: false,
      idle: undefined,
      life: setTimeout(() => this.end(session, 'lifetime', `it reached its lifetime of ${this.options.lifetimeMs} ms (SESSION_LIFETIME_MS)`), this.options.lifetimeMs).unref(),
      closing: undefined
    }
    this.armIdle(session)
    this.open.set(id, session)
    sandbox.ended.then(end => this.forget(session, end), () => {}) // `ended` never rejects
    this.options.log?.({ session: id, owner: caller.id }, 'session opened')
    return this.describe(session)
  }

  private armIdle (session: Session): void {
    clearTimeout(session.idle)
    session.idleFrom = Date.now()
    session.idle = setTimeout(() => this.end(session, 'idle', `it had no call for ${this.options.idleMs} ms (SESSION_IDLE_MS)`), this.options.idleMs).unref()
  }

  /** The caller's open session, or the refusal that says why there is none. */
  private find (id: string, caller: SessionCaller): Session {
    const session = this.open.get(id)
    if (session !== undefined && session.owner === caller.id) return session
    const ended = this.ended.get(id)
    if (session === undefined && ended !== undefined && ended.owner === caller.id) throw this.endedError(id, ended)
    const instance = ID.exec(id)?.[1]
    if (instance !== undefined && instance !== this.options.instance) {
      throw new SessionNotFoundError(`session ${id} is not on this instance: its id says it lives on instance ${instance}; this is instance ${this.options.instance}. A session lives on the instance that opened it: route its calls there (README "Sessions behind a load balancer")`)
    }
    throw new SessionNotFoundError(`no session ${id.length <= 80 ? id : `${id.slice(0, 80)}...`} for this caller on instance ${this.options.instance}`)
  }

  private endedError (id: string, ended: Ended, when = ''): Error {
    return Object.assign(new SessionEndedError(`session ${id} ended${when} at ${new Date(ended.at).toISOString()}: ${ended.message}; open a new one`), { details: { endedBy: ended.code } })
  }

  /** Ends a session whose opening reply never reached its caller (it left, the connection broke):
   *  nobody holds its id, and it would count against the caller's sessions until idle. */
  abandon (id: string): void {
    const session = this.open.get(id)
    if (session !== undefined) this.end(session, 'abandoned', 'its id never reached its caller')
  }

  describe (session: Session): SessionInfo {
    const { idleMs, lifetimeMs, memoryMiB, instance } = this.options
    const last = session.lastCallAt
    return {
      id: session.id,
      instance,
      backend: session.backend,
      createdAt: new Date(session.createdAt).toISOString(),
      lastCallAt: last === undefined ? null : new Date(last).toISOString(),
      expiresAt: new Date(Math.min(session.createdAt + lifetimeMs, session.idleFrom + idleMs)).toISOString(),
      idleTimeoutMs: idleMs,
      lifetimeMs,
      calls: session.calls,
      running: session.running,
      memoryMiB: Math.round(session.sandbox.memoryKiB / 1024),
      memoryLimitMiB: memoryMiB
    }
  }

  get (id: string, caller: SessionCaller): SessionInfo {
    return this.describe(this.find(id, caller))
  }

  /** Runs one call of the caller's session through `run` (which takes a slot and calls the
   *  sandbox); one at a time. `ended` in the result: this call ended the session. Only a call that
   *  reached the sandbox counts (`calls`, `lastCallAt`): one given up while it waited for a slot ran
   *  nothing. */
  async call<T> (id: string, caller: SessionCaller, run: (call: SessionSandbox['call']) => Promise<T>): Promise<{ value: T, ended: boolean }> {
    const session = this.find(id, caller)
    if (session.running) throw new SessionBusyError(id)
    session.running = true
    clearTimeout(session.idle) // a call is not idle time, however long it waits for a slot
    let reached = false
    try {
      const value = await run(async request => {
        reached = true
        return await session.sandbox.call(request)
      })
      // The server ended it while the call ran (DELETE, its lifetime): the call did not fail, the
      // session is gone, and that is said as for any later call (the shutdown is the slots' to say).
      if (session.closing !== undefined) throw this.endedError(id, { owner: session.owner, at: Date.now(), code: 'CLOSED', message: session.closing }, ' during this call')
      // A sandbox that died in the call settles `ended` with the call's outcome: let it land.
      await new Promise(resolve => setImmediate(resolve))
      return { value, ended: this.open.get(id) !== session }
    } finally {
      session.running = false
      if (reached) {
        session.calls++
        session.lastCallAt = Date.now()
      }
      if (this.open.has(id)) this.armIdle(session)
    }
  }

  /** Ends the caller's session (DELETE). */
  delete (id: string, caller: SessionCaller): void {
    this.end(this.find(id, caller), 'deleted', 'it was deleted')
  }

  /** The server ends a session: its sandbox is closed; `forget` follows when its jail is gone. */
  private end (session: Session, kind: 'deleted' | 'idle' | 'lifetime' | 'shutdown' | 'abandoned', why: string): void {
    // Called once, for an open session (found, or by its own timers): forget() below removes it
    // and clears its timers.
    session.closing = why
    // Gone from the owner's view at once: later calls are answered 410, never queued behind it.
    this.forget(session, { code: 'CLOSED', message: why }, kind)
    session.sandbox.close(why)
  }

  private forget (session: Session, end: SessionEnd, kind: string = end.code): void {
    if (this.open.get(session.id) !== session) return
    this.endedCounts[kind] = (this.endedCounts[kind] ?? 0) + 1
    this.open.delete(session.id)
    clearTimeout(session.idle)
    clearTimeout(session.life)
    const message = end.code === 'CLOSED' ? end.message : `a call ended it: ${end.code} (${end.message})`
    this.remember(session.id, { owner: session.owner, at: Date.now(), code: end.code, message })
    this.options.log?.({ session: session.id, owner: session.owner, endedBy: end.code, calls: session.calls }, `session ended: ${message}`)
  }

  private remember (id: string, ended: Ended): void {
    this.ended.set(id, ended)
    const old = Date.now() - ENDED_KEPT_MS
    for (const [key, value] of this.ended) {
      if (this.ended.size <= (this.options.endedKept ?? ENDED_KEPT) && value.at >= old) break
      this.ended.delete(key) // oldest first: a Map iterates in insertion order
    }
  }

  /** Ends every session (shutdown); nothing new opens. */
  closeAll (why: string): void {
    this.closed = true
    for (const session of [...this.open.values()]) this.end(session, 'shutdown', why)
  }
}
