// Opening a session and one call in it, as the routes and MCP's tools make them: each in an
// execution slot within the caller's share, like any run (opening without a spare ready imports
// numpy and pandas: CPU the slots must account for, found by an outside attack); a call with the
// call's limits and the session's own memory, one at a time.
import type { FastifyInstance } from 'fastify'
import { ClientClosedError } from '../errors/errors.js'
import type { ScriptRequest } from '../backends/backend.js'
import type { Tenant } from '../plugins/access.js'
import type { Execution } from '../plugins/sandbox.js'
import type { SessionInfo } from './registry.js'

/** Opens a session for `tenant` while holding a slot of its share; `signal`: its client left. A
 *  refusal that needs no sandbox (sessions off, not allowed, at the caller's or the instance's
 *  most) comes before the wait for a slot, not after it. */
export async function openSession (app: FastifyInstance, tenant: Tenant, signal: AbortSignal): Promise<SessionInfo> {
  app.sessions.admit(tenant)
  const lease = await app.sandbox.slots.acquire(tenant, signal)
  /* c8 ignore next 4 -- the caller left in the instant its slot was granted: no test can time it */
  if (signal.aborted) { // nobody would read the id
    lease.release()
    throw new ClientClosedError()
  }
  try {
    return await app.sessions.create(tenant)
  } finally {
    lease.release()
  }
}

export async function runInSession (app: FastifyInstance, id: string, tenant: Tenant, run: ScriptRequest, signal: AbortSignal): Promise<{ value: Execution, ended: boolean }> {
  // scriptRequest() always resolves the call's limits; the session's memory is its jail's.
  const limits = { ...(run.limits as NonNullable<ScriptRequest['limits']>), memoryMiB: app.sessions.memoryMiB }
  // A caller that leaves does not stop its call (the session's state must not be left halfway);
  // one still waiting for a slot gives it up.
  return await app.sessions.call(id, tenant, async call => await app.sandbox.execute(run, signal, tenant, async leased => await call({ ...leased, limits })))
}
