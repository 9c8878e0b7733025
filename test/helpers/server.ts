// A real listening server for integration tests: the app built with the real backends and
// listening on a loopback port, or, with PYSANDBOX_URL set, a server started elsewhere (the
// container tests point the same suite at the Docker image).
import type { FastifyInstance } from 'fastify'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { buildApp } from '../../src/app.js'
import { loadConfig, PROJECT_ROOT } from '../../src/config.js'

/** Limits tighter than the defaults so limit tests end quickly; the container tests pass them too. */
export const TEST_LIMITS: Readonly<Record<string, string>> = Object.freeze({
  LIMIT_WALL_MS: '4000',
  LIMIT_CPU_S: '3',
  LIMIT_MEMORY_MB: '256',
  LIMIT_OUTPUT_BYTES: '65536',
  LIMIT_RESULT_BYTES: '1048576',
  LIMIT_TMP_MB: '16',
  LIMIT_TMP_FILES: '4096',
  LIMIT_PROCESSES: '32',
  LIMIT_WALL_MS_MAX: '60000',
  LIMIT_CPU_S_MAX: '60',
  LIMIT_MEMORY_MB_MAX: '512',
  LIMIT_PROCESSES_MAX: '64',
  LIMIT_OUTPUT_BYTES_MAX: '262144',
  RATE_LIMIT_MAX: '0',
  CONCURRENCY: '2',
  QUEUE_SIZE: '8',
  // One test client runs pairs of scripts at once (the cross-run deny tests): it must get both
  // slots, not the default share of one (found by the sabotage run: with one slot its pairs ran
  // one after the other, and the breach under direct went unseen).
  TENANT_SLOTS: '2'
})

/** A value in the server's environment that no script may ever read. */
export const SERVER_SECRET = process.env.PYSANDBOX_TEST_SECRET ?? 'pysandbox-test-secret-5b0c1e7a'
process.env.PYSANDBOX_TEST_SECRET = SERVER_SECRET

export interface Target {
  url: string
  /** Where the server's own code lives, as a script would name it. */
  serverRoot: string
  port: number
  close: () => Promise<void>
}

export const externalUrl = process.env.PYSANDBOX_URL

export async function startServer (env: Record<string, string> = {}): Promise<Target> {
  if (externalUrl !== undefined) {
    return { url: externalUrl, serverRoot: process.env.PYSANDBOX_SERVER_ROOT ?? '/app', port: Number(new URL(externalUrl).port), close: async () => {} }
  }
  const app: FastifyInstance = await buildApp({ config: loadConfig({ ...TEST_LIMITS, ...env }) })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  return { url: `http://127.0.0.1:${address.port}`, serverRoot: PROJECT_ROOT, port: address.port, close: async () => await app.close() }
}

export interface Reply {
  status: number
  headers: Headers
  body: Record<string, any>
}

export async function post (target: Target, script: string): Promise<Reply> {
  return await postBody(target, { script })
}

/** POST /execute with a whole body (script, input, stdin). */
export async function postBody (target: Target, body: Record<string, unknown>): Promise<Reply> {
  const response = await fetch(`${target.url}/execute`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body)
  })
  return { status: response.status, headers: response.headers, body: await response.json() as Record<string, any> }
}

export async function get (target: Target, path: string): Promise<Reply> {
  const response = await fetch(`${target.url}${path}`)
  return { status: response.status, headers: response.headers, body: await response.json() as Record<string, any> }
}

/** main() returning `expression`, after `setup` at top level. */
export function script (body: string, setup = ''): string {
  return `${setup}\ndef main():\n${body.split('\n').map(l => `    ${l}`).join('\n')}\n`
}

export const HELLO = 'def main():\n    print("Hello from main!")\n    return {"msg": "success", "value": 42}\n'

/** A loopback port free right now, for a server process a test starts itself. */
export async function freePort (): Promise<number> {
  const probe = createServer().listen(0, '127.0.0.1')
  await once(probe, 'listening')
  const { port } = probe.address() as { port: number }
  probe.close()
  return port
}

/** Polls `condition` (a throw counts as false) every 100 ms until it holds; fails after `ms`. */
export async function waitFor (condition: () => Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      if (await condition()) return
    } catch {}
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}
