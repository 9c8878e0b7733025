// The pages for people: the playground at / and Swagger UI at /docs, served from this process
// (no CDN) under helmet's strict Content-Security-Policy: no inline script or style anywhere.
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { withoutUpgrade } from '../../src/routes/pages.js'
import { FakeBackend } from '../helpers/fake-backend.js'

async function build (t: Test, env: Record<string, string> = {}): Promise<FastifyInstance> {
  const app = await buildApp({ config: loadConfig({ RATE_LIMIT_MAX: '0', ...env }), backends: [new FakeBackend('nsjail')] })
  t.teardown(async () => { await app.close() })
  return app
}

/** The Content-Security-Policy as directive → sources. */
function policy (header: unknown): Map<string, string[]> {
  if (typeof header !== 'string') throw new Error('no Content-Security-Policy header')
  return new Map(header.split(';').map(d => d.trim()).filter(Boolean).map(d => {
    const [name = '', ...sources] = d.split(/\s+/)
    return [name, sources]
  }))
}

/** Every <script> loads a file; no <style> element, no style="" or on*="" attribute. */
function assertNoInline (t: Test, html: string, where: string): void {
  const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)]
  t.ok(scripts.length > 0, `${where}: has scripts`)
  for (const [, attributes = '', body = ''] of scripts) {
    t.match(attributes, /\bsrc="[^"]+"/, `${where}: <script${attributes}> loads a file`)
    t.equal(body.trim(), '', `${where}: and has no inline code`)
  }
  t.notMatch(html, /<style\b/i, `${where}: no <style>`)
  t.notMatch(html, /\sstyle\s*=/i, `${where}: no style attribute`)
  t.notMatch(html, /\son[a-z]+\s*=/i, `${where}: no inline event handler`)
  t.notMatch(html, /(src|href)="(https?:)?\/\//i, `${where}: nothing from another origin`)
}

function assertStrictPolicy (t: Test, header: unknown, where: string): void {
  const csp = policy(header)
  t.same(csp.get('script-src'), ["'self'"], `${where}: scripts from this origin only`)
  t.same(csp.get('script-src-attr'), ["'none'"], `${where}: no inline event handlers`)
  t.same(csp.get('default-src'), ["'self'"], `${where}: default-src 'self'`)
  t.same(csp.get('object-src'), ["'none'"], `${where}: no plugins`)
  t.notOk(csp.has('upgrade-insecure-requests'), `${where}: its own files load over plain HTTP too`)
}

t.test('GET / is the playground: one page, its script and stylesheet, under a strict policy', async t => {
  const app = await build(t)
  const page = await app.inject({ method: 'GET', url: '/' })
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  assertStrictPolicy(t, page.headers['content-security-policy'], '/')
  assertNoInline(t, page.body, '/')
  t.match(page.body, /<textarea id="script"/)
  t.match(page.body, /<select id="examples"/)
  for (const id of ['result', 'stdout', 'stderr', 'error', 'backend', 'timing']) t.match(page.body, new RegExp(`id="${id}"`), `a pane for ${id}`)

  const script = await app.inject({ method: 'GET', url: '/playground.js' })
  t.equal(script.statusCode, 200)
  t.match(script.headers['content-type'], /javascript/)
  t.match(script.body, /fetch\('execute'/, 'runs scripts through POST /execute')
  t.match(script.body, /event\.key === 'Enter' && \(event\.ctrlKey \|\| event\.metaKey\)/, 'Ctrl+Enter runs')
  for (const example of ['hello', 'numpy', 'pandas', 'an error', 'infinite loop']) t.match(script.body, example, `an example: ${example}`)
  const style = await app.inject({ method: 'GET', url: '/playground.css' })
  t.equal(style.statusCode, 200)
  t.match(style.headers['content-type'], /^text\/css/)
})

t.test('the playground adds no catch-all route: other paths are 404, other methods 405', async t => {
  const app = await build(t)
  t.equal((await app.inject({ method: 'GET', url: '/nope.js' })).json<{ code: string }>().code, 'NOT_FOUND')
  const post = await app.inject({ method: 'POST', url: '/' })
  t.equal(post.statusCode, 405)
  t.equal(post.headers.allow, 'GET, HEAD')
})

t.test('GET /docs is Swagger UI over the same document, its files served here', async t => {
  const app = await build(t)
  const page = await app.inject({ method: 'GET', url: '/docs' })
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  assertStrictPolicy(t, page.headers['content-security-policy'], '/docs')
  assertNoInline(t, page.body, '/docs')
  const files = [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map(m => m[1] ?? '')
  t.ok(files.length >= 4, 'scripts, styles and icons')
  for (const file of files) {
    const reply = await app.inject({ method: 'GET', url: new URL(file, 'http://x/docs').pathname })
    t.equal(reply.statusCode, 200, `${file} is served`)
  }
  const initializer = await app.inject({ method: 'GET', url: '/docs/static/swagger-initializer.js' })
  t.match(initializer.body, /validatorUrl: null/, 'no call to an online validator')
  const doc = await app.inject({ method: 'GET', url: '/docs/json' })
  t.same(doc.json(), (await app.inject({ method: 'GET', url: '/openapi.json' })).json(), 'the document /openapi.json serves')
})

t.test('the API keeps helmet\'s policy whole; only the pages drop upgrade-insecure-requests', async t => {
  const app = await build(t)
  for (const url of ['/healthz', '/openapi.json', '/metrics']) {
    const csp = policy((await app.inject({ method: 'GET', url })).headers['content-security-policy'])
    t.ok(csp.has('upgrade-insecure-requests'), `${url}: upgrade-insecure-requests`)
  }
})

t.test('withoutUpgrade drops only upgrade-insecure-requests', async t => {
  t.equal(withoutUpgrade("default-src 'self';upgrade-insecure-requests;img-src 'self'"), "default-src 'self';img-src 'self'")
  t.equal(withoutUpgrade("default-src 'self'; upgrade-insecure-requests"), "default-src 'self'")
  t.equal(withoutUpgrade("default-src 'self'"), "default-src 'self'")
})
