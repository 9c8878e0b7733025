// Prometheus metrics at GET /metrics: executions by outcome and backend, their latency, the
// queue and the running sandboxes, error replies by code, and each backend's probe. Every app
// has a registry of its own (tests build many apps in one process); the process metrics
// (CPU, memory, event loop, GC) are collected once per process and shared by every registry.
import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { BackendName } from '../config.js'
import { bearerToken, tokenMatches } from '../access/keys.js'
import { UnauthorizedError } from '../errors/errors.js'
import type { Tenant } from './access.js'

export interface ExecutionRecord {
  backend: BackendName
  /** 'ok', or the script error code (MAIN_RAISED, TIME_LIMIT_EXCEEDED, ...). */
  outcome: string
  /** Time in the sandbox. */
  durationMs: number
  /** Time waiting for an execution slot. */
  queuedMs: number
  /** The caller's API key name, or "-" without keys: a label bounded by the keys file. */
  key: string
}

export interface Metrics {
  readonly registry: Registry
  /** Counts one execution that reached a sandbox (the /execute route calls it once per run). */
  recordExecution: (record: ExecutionRecord) => void
  /** Counts one request refused for unread replies (the connections plugin); the slots count
   *  their own refusals. */
  recordShed: (reason: 'unread_replies' | 'caller_unread_replies') => void
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

/** Seconds: from a fast hello (~0.05 s) to past the default wall-time limit (10 s). */
const DURATION_BUCKETS = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
/** Seconds: from a health poll (~1 ms) to a long run. */
const HTTP_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
const QUEUE_BUCKETS = [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30]

let processRegistry: Registry | undefined
/** CPU, memory, event-loop lag, GC: one collector per process, however many apps it builds. */
function processMetrics (): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

/** An error reply's code, read from its body before it is serialized; undefined for any other body. */
function errorCode (payload: unknown): string | undefined {
  if (typeof payload === 'object' && payload !== null && 'code' in payload && typeof payload.code === 'string') return payload.code
  return undefined
}

export default fp(async function metricsPlugin (app) {
  const own = new Registry()
  const { sandbox } = app

  const executions = new Counter({
    name: 'pysandbox_executions_total',
    help: 'Scripts run in a sandbox, by backend, outcome (ok, or the script error code) and API key name ("-" without keys)',
    labelNames: ['backend', 'outcome', 'key'] as const,
    registers: [own]
  })
  const duration = new Histogram({
    name: 'pysandbox_execution_duration_seconds',
    help: 'Time a script spent in its sandbox, by backend and outcome (ok, or the script error code)',
    labelNames: ['backend', 'outcome'] as const,
    buckets: DURATION_BUCKETS,
    registers: [own]
  })
  const queueWait = new Histogram({
    name: 'pysandbox_queue_wait_seconds',
    help: 'Time a request waited for an execution slot',
    buckets: QUEUE_BUCKETS,
    registers: [own]
  })
  const errors = new Counter({
    name: 'pysandbox_http_errors_total',
    help: 'Error replies by status, code (BUSY, RATE_LIMITED, UNAUTHORIZED, INVALID_REQUEST, MAIN_RAISED, ...) and API key name ("-" without keys or before one was accepted)',
    labelNames: ['status', 'code', 'key'] as const,
    registers: [own]
  })
  const requests = new Histogram({
    name: 'pysandbox_http_request_duration_seconds',
    help: 'HTTP requests by route ("-" for no route), status and error code ("-" for none): from the first byte read to the last written to the socket',
    labelNames: ['route', 'status', 'code'] as const,
    buckets: HTTP_BUCKETS,
    registers: [own]
  })
  /** Shed by the connections plugin (unread replies); the slots count their own. */
  const shedHere = { unread_replies: 0, caller_unread_replies: 0 }
  new Counter({ // eslint-disable-line no-new -- it lives in its registry
    name: 'pysandbox_shed_total',
    help: 'Requests refused to protect the service, by reason: queue_full, expected_wait (QUEUE_EXPECTED_WAIT_MS), queue_timeout, caller_share (TENANT_SLOTS/TENANT_QUEUE), unread_replies, caller_unread_replies',
    labelNames: ['reason'] as const,
    registers: [own],
    collect () {
      this.reset()
      for (const [reason, n] of Object.entries({ ...sandbox.slots.shed, ...shedHere })) this.inc({ reason }, n)
    }
  })
  new Counter({ // eslint-disable-line no-new
    name: 'pysandbox_shutdown_total',
    help: 'What shutting down did: refused (a request answered 503 SHUTTING_DOWN while draining), stopped (a run or a wait still going when SHUTDOWN_GRACE_MS ended)',
    labelNames: ['what'] as const,
    registers: [own],
    collect () {
      this.reset()
      for (const [what, n] of Object.entries(sandbox.shutdownCounts)) this.inc({ what }, n)
    }
  })
  /** A gauge read at scrape time: `read` sets its value(s) on the gauge it is given. */
  function gauge (name: string, help: string, read: (gauge: Gauge) => void, labelNames: string[] = []): void {
    new Gauge({ name, help, labelNames, registers: [own], collect () { this.reset(); read(this) } }) // eslint-disable-line no-new -- it lives in its registry
  }
  gauge('pysandbox_shutting_down', '1 from SIGTERM until the process exits (draining: /readyz answers 503)', g => g.set(sandbox.draining ? 1 : 0))
  gauge('pysandbox_queue_depth', 'Requests waiting for an execution slot', g => g.set(sandbox.slots.queued))
  gauge('pysandbox_running_sandboxes', 'Sandboxes running now', g => g.set(sandbox.slots.running))
  gauge('pysandbox_concurrency_limit', 'Sandboxes that may run at once (CONCURRENCY)', g => g.set(sandbox.slots.size))
  gauge('pysandbox_queue_limit', 'Requests that may wait for a slot (QUEUE_SIZE); beyond, 503 BUSY', g => g.set(sandbox.slots.queueSize))
  gauge('pysandbox_probe_ok', 'Each probed backend\'s latest probe: 1 passed, 0 failed', g => {
    for (const probe of sandbox.probes) g.set({ backend: probe.backend }, probe.ok ? 1 : 0)
  }, ['backend'])
  gauge('pysandbox_ready', '1 while the chosen backend passes its probe and /execute runs scripts; 0 otherwise',
    g => g.set({ backend: sandbox.backend?.name ?? 'none' }, sandbox.ready ? 1 : 0), ['backend'])
  gauge('pysandbox_warm_sandboxes', 'Warm sandboxes (zygote jails) by state, successors included', g => {
    const zygotes = sandbox.backend?.warmStats?.()?.zygotes
    for (const [state, n] of Object.entries(zygotes ?? {})) if (state !== 'dead') g.set({ state }, n)
  }, ['state'])

  new Counter({ // eslint-disable-line no-new
    name: 'pysandbox_warm_runs_total',
    help: 'Runs of the warm pool by how they were served: ready (a warm sandbox was waiting), waited (for one still importing), cold (none could be had)',
    labelNames: ['served'] as const,
    registers: [own],
    collect () {
      this.reset()
      const runs = sandbox.backend?.warmStats?.()?.runs
      for (const [served, n] of Object.entries(runs ?? {})) this.inc({ served }, n)
    }
  })
  gauge('pysandbox_sessions', 'Sessions open on this instance', g => g.set(app.sessions.size))
  gauge('pysandbox_sessions_limit', 'Sessions that may be open at once (SESSIONS_MAX)', g => g.set(app.sessions.max))
  new Counter({ // eslint-disable-line no-new
    name: 'pysandbox_sessions_ended_total',
    help: 'Sessions ended, by reason: deleted, idle (SESSION_IDLE_MS), lifetime (SESSION_LIFETIME_MS), shutdown, abandoned (its id never reached its caller), or the code of the call that ended it (TIME_LIMIT_EXCEEDED, MEMORY_LIMIT_EXCEEDED, CRASHED)',
    labelNames: ['reason'] as const,
    registers: [own],
    collect () {
      this.reset()
      for (const [reason, n] of Object.entries(app.sessions.endedCounts)) this.inc({ reason }, n)
    }
  })
  const registry = Registry.merge([processMetrics(), own])

  app.decorate('metrics', {
    registry,
    recordExecution ({ backend, outcome, durationMs, queuedMs, key }) {
      executions.inc({ backend, outcome, key })
      duration.observe({ backend, outcome }, durationMs / 1000)
      queueWait.observe(queuedMs / 1000)
    },
    recordShed (reason) { shedHere[reason]++ }
  } satisfies Metrics)

  // Every error reply, from the error handler, the not-found handler or /execute's 422, is an
  // object with a `code` until it is serialized (/readyz's 503 has none: it is no error reply).
  app.addHook('preSerialization', async (request, reply, payload) => {
    const code = reply.statusCode >= 400 ? errorCode(payload) : undefined
    // A request refused before its key was checked has no tenant yet.
    if (code !== undefined) {
      request.replyCode = code
      errors.inc({ status: String(reply.statusCode), code, key: (request.tenant as Tenant | null)?.label ?? '-' })
    }
    return payload
  })
  app.addHook('onResponse', async (request, reply) => {
    requests.observe({ route: request.routeOptions.url ?? '-', status: String(reply.statusCode), code: request.replyCode ?? '-' }, reply.elapsedTime / 1000)
  })
}, { name: 'metrics', fastify: '5.x', dependencies: ['sandbox', 'sessions', 'access-log'] })

/** GET /metrics in the Prometheus text format; never rate limited (a scraper is no abuser), open
 *  or behind a token of its own (METRICS_TOKEN_HASH), whatever API keys say. */
export const metricsRoute: FastifyPluginAsync<{ tokenHash: string | undefined }> = async (app, { tokenHash }) => {
  app.get('/metrics', {
    schema: { hide: true },
    config: { rateLimit: false, public: true },
    onRequest: async (request, reply) => {
      if (tokenHash === undefined) return
      const token = bearerToken(request.headers.authorization)
      if (token !== undefined && tokenMatches(token, tokenHash)) return
      reply.header('www-authenticate', `Bearer realm="pysandbox-metrics"${token === undefined ? '' : ', error="invalid_token"'}`)
      throw new UnauthorizedError('/metrics needs its token (METRICS_TOKEN_HASH): send Authorization: Bearer <token>')
    }
  }, async (_request, reply) => {
    const { registry } = app.metrics
    return await reply.type(registry.contentType).send(await registry.metrics())
  })
}
