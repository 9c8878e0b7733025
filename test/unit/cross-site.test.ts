// Cross-site request forgery: what a browser sends from another site's page is refused before
// anything runs or opens; what the server's own pages, a typed URL and non-browser clients send
// passes. The attack an outside review found: a page's body-less POST /sessions (a "simple"
// request, no preflight) held its visitor's only session place in open mode.
import t from 'tap'
import { build } from '../helpers/app.js'
import { FakeBackend, FakeSessionBackend } from '../helpers/fake-backend.js'

const HOST = 'localhost:8080'
const EXECUTE = { method: 'POST', url: '/execute', payload: '{"script": "def main():\\n    return 1\\n"}' } as const

t.test('deny: POST /sessions and /execute from another site\'s page (Sec-Fetch-Site, or a foreign Origin): 403 CROSS_SITE_REQUEST, nothing opened or run', async t => {
  const backend = new FakeSessionBackend('nsjail')
  const { app } = await build(t, { env: { SESSIONS_PER_CALLER: '1' }, backends: [backend] })
  const attacks: Array<Record<string, string>> = [
    { 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' },
    { 'sec-fetch-site': 'same-site', origin: 'http://evil.localhost:8080' },
    { origin: 'https://evil.example' }, // a browser without Sec-Fetch-*
    { origin: 'null' }, // a sandboxed frame, a file:// page
    { origin: 'https://evil.example', 'x-forwarded-host': 'pysandbox.example' } // a proxy's host is not the page's
  ]
  for (const headers of attacks) {
    const opened = await app.inject({ method: 'POST', url: '/sessions', headers: { host: HOST, ...headers } })
    t.equal(opened.statusCode, 403, JSON.stringify(headers))
    t.match(opened.json(), { code: 'CROSS_SITE_REQUEST', message: /another site's page/ })
    // JSON, which a page could send only after a preflight the API never answers: the 403 shows
    // the plugin, not the content type, refused it.
    const ran = await app.inject({ ...EXECUTE, headers: { host: HOST, 'content-type': 'application/json', ...headers } })
    t.equal(ran.statusCode, 403, `/execute ${JSON.stringify(headers)}`)
  }
  t.equal(backend.sessions.length, 0, 'no session opened')
  t.equal(backend.runs.length, 0, 'nothing ran')
  t.equal((await app.inject({ method: 'POST', url: '/sessions', headers: { host: HOST } })).statusCode, 201, 'the caller\'s place is free')
})

t.test('allow: the server\'s own pages, a typed URL, a matching Origin, clients that are not browsers, and reads', async t => {
  const { app } = await build(t, { backends: [new FakeBackend('nsjail')] })
  const allowed: Array<Record<string, string>> = [
    {}, // curl, SDKs
    { 'sec-fetch-site': 'same-origin', origin: `http://${HOST}` }, // the playground, /docs
    { 'sec-fetch-site': 'none' }, // typed or bookmarked
    { origin: `http://${HOST}` }, // a browser without Sec-Fetch-*, same origin
    { origin: 'http://pysandbox.example:8080', 'x-forwarded-host': 'pysandbox.example:8080' } // behind a proxy that rewrote Host
  ]
  for (const headers of allowed) {
    const ran = await app.inject({ ...EXECUTE, headers: { host: HOST, 'content-type': 'application/json', ...headers } })
    t.equal(ran.statusCode, 200, JSON.stringify(headers))
  }
  const read = await app.inject({ method: 'GET', url: '/healthz', headers: { host: HOST, 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' } })
  t.equal(read.statusCode, 200, 'a cross-site GET reads nothing it could not (no CORS): served')
})
