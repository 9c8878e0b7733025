// Decorates the app with `sessions`, the registry of the sessions this instance holds
// (sessions/registry.ts), opened in the chosen backend's jails; every session ends when the
// server closes.
import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import { SessionRegistry } from '../sessions/registry.js'

declare module 'fastify' {
  interface FastifyInstance {
    sessions: SessionRegistry
  }
}

export interface SessionsPluginOptions {
  /** INSTANCE_ID; default: 8 random hex digits. */
  instance?: string
  max: number
  idleMs: number
  lifetimeMs: number
  memoryMiB: number
  /** LIMIT_PROCESSES: each session's processes. */
  processes: number
  /** LIMIT_MEMORY_MB_MAX: a key whose memory ceiling is below it is held lower. */
  memoryCeilingMb: number
}

export default fp<SessionsPluginOptions>(async function sessionsPlugin (app, options) {
  const registry = new SessionRegistry({
    ...options,
    instance: options.instance ?? randomBytes(4).toString('hex'),
    backend: () => {
      const { backend, ready } = app.sandbox
      if (backend === undefined || !ready) return undefined
      return { name: backend.name, open: backend.openSession?.bind(backend) }
    },
    draining: () => app.sandbox.draining,
    log: (fields, message) => app.log.info(fields, message)
  })
  app.decorate('sessions', registry)
  app.log.info({ instance: registry.instance, sessionsMax: options.max }, 'sessions: this instance is ' + registry.instance)
  // Before the backend closes its jails: the registry forgets them first, so nothing is answered from a dying one.
  app.addHook('preClose', async () => { registry.closeAll('the server is shutting down') })
}, { name: 'sessions', fastify: '5.x', dependencies: ['sandbox'] })
