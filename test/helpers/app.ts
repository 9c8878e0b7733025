// What the app's unit tests share: a quiet configuration, an app with fake backends and a captured
// log, and a POST /execute.
import type { Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { buildApp } from '../../src/app.js'
import type { SandboxBackend } from '../../src/backends/backend.js'
import { loadConfig } from '../../src/config.js'
import { FakeBackend, type FakeSessionBackend } from './fake-backend.js'

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** Quiet defaults for tests: rate limiting off unless a test turns it on. */
export function config (env: Record<string, string> = {}): ReturnType<typeof loadConfig> {
  return loadConfig({ RATE_LIMIT_MAX: '0', CONCURRENCY: '4', QUEUE_SIZE: '8', ...env })
}

export interface Built {
  app: FastifyInstance
  logs: Array<Record<string, unknown>>
}

export async function build (t: Test, options: { env?: Record<string, string>, backends?: SandboxBackend[] } = {}): Promise<Built> {
  const logs: Array<Record<string, unknown>> = []
  const app = await buildApp({
    config: config(options.env),
    backends: options.backends ?? [new FakeBackend('nsjail')],
    logger: { level: 'info', stream: { write: (line: string) => { logs.push(JSON.parse(line) as Record<string, unknown>) } } }
  })
  t.teardown(async () => { await app.close() })
  return { app, logs }
}

export async function execute (app: FastifyInstance, body: unknown = { script: 'def main():\n    return 42\n' }, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/execute', payload: JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } })
}

/** `promise`, or a rejection naming `what` after `ms`: a missing event fails the test instead of hanging it. */
export async function within<T> (promise: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms) })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

/** Waits for `condition`, failing after 5 s. */
export async function until (condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

/** A caller that leaves while its session opens: `send` (given the signal that aborts it) asks for
 *  one, the open is held until the caller has gone, then let finish; resolves once the backend's
 *  first session has been closed (as one whose id never reached its caller must be). */
export async function openThenLeave (backend: FakeSessionBackend, send: (signal: AbortSignal) => Promise<unknown>): Promise<void> {
  let release!: () => void
  backend.gate = new Promise(resolve => { release = resolve })
  const leaving = new AbortController()
  const request = send(leaving.signal).catch(() => undefined)
  await until(() => backend.opening > 0, 'the open')
  leaving.abort()
  await request
  await new Promise(resolve => setTimeout(resolve, 50))
  backend.gate = undefined
  release()
  await until(() => backend.sessions[0]?.closedWith !== undefined, 'the abandoned session to end')
}
