// Pages for people: the playground at / (public/: one HTML page, one script, one stylesheet)
// and the interactive API docs at /docs (Swagger UI over /openapi.json's document). Both are
// served from this process with no CDN, and work under helmet's strict Content-Security-Policy:
// no inline script or style of ours, and Swagger UI's page loads only its own files.
import { resolve } from 'node:path'
import type { FastifyPluginAsync } from 'fastify'
import fastifyStatic from '@fastify/static'
import swaggerUi from '@fastify/swagger-ui'
import { PROJECT_ROOT } from '../config.js'

export const PUBLIC_DIR = resolve(PROJECT_ROOT, 'public')

/**
 * Helmet's policy without `upgrade-insecure-requests`, which tells a browser to fetch the page's
 * own scripts and styles over HTTPS: a page served over plain HTTP from anything but localhost
 * (`make run` on a LAN host, a container's published port) would load none of them. Every
 * subresource is same-origin, so over HTTPS the directive changes nothing; the rest of the
 * policy (script-src 'self', no inline script, object-src 'none', ...) stays as it is.
 */
export function withoutUpgrade (policy: string): string {
  return policy.split(';').filter(d => d.trim() !== 'upgrade-insecure-requests').join(';')
}

/** The service's name in Swagger UI's top bar (a link to the playground), and its tab's icon:
 *  instead of the framework's logo and icon. */
const NAME_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="180" height="40" viewBox="0 0 180 40">' +
  '<text x="0" y="29" font-family="sans-serif" font-size="26" font-weight="700" fill="#ffffff">PySandbox</text></svg>'
const ICON_SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#1f4f8f"/>' +
  '<text x="16" y="22" text-anchor="middle" font-family="sans-serif" font-size="15" font-weight="700" fill="#ffffff">Py</text></svg>'

const pages: FastifyPluginAsync = async app => {
  // Pages are for anyone, keys or not, and never count against a rate limit.
  app.addHook('onRoute', route => { route.config = { ...route.config, public: true, rateLimit: false } })
  // Only this plugin's routes (the playground's files and the docs): the API keeps helmet's policy.
  app.addHook('onSend', async (_request, reply, payload) => {
    const policy = reply.getHeader('content-security-policy')
    if (typeof policy === 'string') reply.header('content-security-policy', withoutUpgrade(policy))
    return payload
  })

  // One route per file found at start (no wildcard route: GET /anything stays a 404, and a wrong
  // method on a page is a 405 with Allow).
  await app.register(fastifyStatic, {
    root: PUBLIC_DIR,
    prefix: '/',
    wildcard: false,
    index: 'index.html',
    decorateReply: false,
    schemaHide: true
  })

  await app.register(swaggerUi, {
    routePrefix: '/docs',
    logo: { type: 'image/svg+xml', content: Buffer.from(NAME_SVG), href: '../' },
    theme: { title: 'PySandbox API', favicon: [{ filename: 'favicon.svg', rel: 'icon', sizes: 'any', type: 'image/svg+xml', content: Buffer.from(ICON_SVG) }] },
    uiConfig: { deepLinking: true, displayRequestDuration: true, defaultModelsExpandDepth: 0 },
    // Swagger UI's page has no inline script or style: helmet's policy applies (less the upgrade).
    staticCSP: false
  })
}

export default pages
