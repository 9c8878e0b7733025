// One call in a session, as POST /sessions/{id}/execute and MCP's run_in_session make it: the
// caller's session, one call at a time, in an execution slot like any run, with the call's
// limits and the session's own memory.
import type { FastifyInstance } from 'fastify'
import type { ScriptRequest } from '../backends/backend.js'
import type { Tenant } from '../plugins/access.js'
import type { Execution } from '../plugins/sandbox.js'

export async function runInSession (app: FastifyInstance, id: string, tenant: Tenant, run: ScriptRequest, signal: AbortSignal): Promise<{ value: Execution, ended: boolean }> {
  // scriptRequest() always resolves the call's limits; the session's memory is its jail's.
  const limits = { ...(run.limits as NonNullable<ScriptRequest['limits']>), memoryMiB: app.sessions.memoryMiB }
  // A caller that leaves does not stop its call (the session's state must not be left halfway);
  // one still waiting for a slot gives it up.
  return await app.sessions.call(id, tenant, async sandbox => await app.sandbox.execute(run, signal, tenant, async leased => await sandbox.call({ ...leased, limits })))
}
